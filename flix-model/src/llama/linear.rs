//! A linear layer y = x Wᵀ (+ b), W in PyTorch's [out, in] layout, forward and backward.
//!
//! Every projection of the model goes through this one type, so that FLix adapters attach in a
//! single place: `forward` and `backward` take the batch plan the adapters need.

use flix_core::BatchPlan;
use flix_kernels::ops::{matmul, Trans};
use flix_kernels::Tensor;

use super::param::Param;
use crate::error::{ModelError, Result};
use crate::weights::Checkpoint;

pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
}

/// What `forward` keeps for `backward` beyond the input itself.
#[derive(Default)]
pub struct LinearSaved {}

impl Linear {
    /// Loads `{prefix}.weight` ([out, in]) and, with `bias`, `{prefix}.bias` ([out]).
    pub fn load(
        ck: &Checkpoint,
        prefix: &str,
        out_dim: usize,
        in_dim: usize,
        bias: bool,
        device: &flix_kernels::Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: Param::load(ck, &format!("{prefix}.weight"), &[out_dim, in_dim], device)?,
            bias: if bias {
                Some(Param::load(
                    ck,
                    &format!("{prefix}.bias"),
                    &[out_dim],
                    device,
                )?)
            } else {
                None
            },
        })
    }

    pub fn out_dim(&self) -> usize {
        self.weight.value.shape()[0]
    }
    pub fn in_dim(&self) -> usize {
        self.weight.value.shape()[1]
    }

    /// y = x Wᵀ + b for x [T, in].
    pub fn forward(&self, _plan: Option<&BatchPlan>, x: &Tensor) -> Result<(Tensor, LinearSaved)> {
        let t = x.shape().first().copied().unwrap_or(0);
        let mut y = Tensor::zeros(x.device(), x.dtype(), &[t, self.out_dim()])?;
        matmul(x, Trans::N, &self.weight.value, Trans::T, &mut y, 1.0, 0.0)?;
        if let Some(b) = &self.bias {
            add_row_vector(&mut y, &b.value)?;
        }
        Ok((y, LinearSaved::default()))
    }

    /// From dY: dX += dY W; and, when trainable, dW += dYᵀ x, db += Σ_rows dY.
    pub fn backward(
        &mut self,
        _plan: Option<&BatchPlan>,
        x: &Tensor,
        _saved: &LinearSaved,
        dy: &Tensor,
        dx: &mut Tensor,
    ) -> Result<()> {
        matmul(dy, Trans::N, &self.weight.value, Trans::N, dx, 1.0, 1.0)?;
        if let Some(dw) = self.weight.grad.as_mut() {
            matmul(dy, Trans::T, x, Trans::N, dw, 1.0, 1.0)?;
        }
        if let Some(db) = self.bias.as_mut().and_then(|b| b.grad.as_mut()) {
            sum_rows_into(db, dy)?;
        }
        Ok(())
    }

    pub fn params_mut(&mut self) -> impl Iterator<Item = &mut Param> {
        std::iter::once(&mut self.weight).chain(self.bias.as_mut())
    }
}

/// y[t, :] += b for every row. CPU only for now.
fn add_row_vector(y: &mut Tensor, b: &Tensor) -> Result<()> {
    const OP: &str = "add_row_vector";
    let n = b.numel();
    if y.shape().last() != Some(&n) {
        return Err(ModelError::Invalid(format!(
            "{OP}: bias of {n} for rows {:?}",
            y.shape()
        )));
    }
    let b = b.cpu_data(OP)?;
    for row in y.cpu_data_mut(OP)?.chunks_mut(n) {
        for (a, c) in row.iter_mut().zip(b) {
            *a += c;
        }
    }
    Ok(())
}

/// db += Σ_t dy[t, :]. CPU only for now.
fn sum_rows_into(db: &mut Tensor, dy: &Tensor) -> Result<()> {
    const OP: &str = "sum_rows_into";
    let n = db.numel();
    let dy = dy.cpu_data(OP)?;
    let mut acc = vec![0.0f64; n];
    for row in dy.chunks(n) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += *v as f64;
        }
    }
    for (d, a) in db.cpu_data_mut(OP)?.iter_mut().zip(acc) {
        *d += a as f32;
    }
    Ok(())
}
