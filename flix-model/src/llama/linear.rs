//! A linear layer y = x Wᵀ (+ b), W in PyTorch's [out, in] layout, with optional FLix adapters.
//!
//! Every projection of the model goes through this one type. With adapters, forward and backward
//! are the FLix ops' `linear_forward` / `linear_backward` (DESIGN §4), which need the batch's
//! device plan; without, a plain GEMM.

use flix_kernels::flix::{add_bias, linear_backward, linear_forward, DevicePlan, Write};
use flix_kernels::ops::elementwise::sum_rows_into;
use flix_kernels::ops::{matmul, Trans};
use flix_kernels::{DType, Tensor};

use super::param::Param;
use crate::adapters::Adapter;
use crate::error::{ModelError, Result};
use crate::weights::TensorSource;

pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
    pub adapter: Option<Adapter>,
}

/// What `forward` keeps for `backward` beyond the input itself: the adapters' low-rank
/// activations H `[T, R]`.
#[derive(Default)]
pub struct LinearSaved {
    h: Option<Tensor>,
}

impl Linear {
    /// Loads `{prefix}.weight` (`[out, in]`) and, with `bias`, `{prefix}.bias` (`[out]`).
    pub fn load(
        ck: &dyn TensorSource,
        prefix: &str,
        out_dim: usize,
        in_dim: usize,
        bias: bool,
        device: &flix_kernels::Device,
        dtype: DType,
    ) -> Result<Self> {
        Ok(Self {
            weight: Param::load(
                ck,
                &format!("{prefix}.weight"),
                &[out_dim, in_dim],
                device,
                dtype,
            )?,
            bias: if bias {
                Some(Param::load(
                    ck,
                    &format!("{prefix}.bias"),
                    &[out_dim],
                    device,
                    dtype,
                )?)
            } else {
                None
            },
            adapter: None,
        })
    }

    pub fn out_dim(&self) -> usize {
        self.weight.value.shape()[0]
    }
    pub fn in_dim(&self) -> usize {
        self.weight.value.shape()[1]
    }

    fn plan_for<'p>(&self, plan: Option<&'p DevicePlan>) -> Result<&'p DevicePlan> {
        plan.ok_or_else(|| {
            ModelError::Batch(format!(
                "{} has adapters but no batch plan was given",
                self.weight.name
            ))
        })
    }

    /// y = x Wᵀ + b (+ the adapters' update) for x [T, in].
    pub fn forward(&self, plan: Option<&DevicePlan>, x: &Tensor) -> Result<(Tensor, LinearSaved)> {
        let t = x.shape().first().copied().unwrap_or(0);
        let mut y = Tensor::zeros(x.device(), x.dtype(), &[t, self.out_dim()])?;
        let bias = self.bias.as_ref().map(|b| &b.value);
        match &self.adapter {
            Some(ad) => {
                let plan = self.plan_for(plan)?;
                let rank = plan.plan().total_rank();
                let mut h = Tensor::zeros(x.device(), x.dtype(), &[t, rank])?;
                linear_forward(
                    plan,
                    &self.weight.value,
                    bias,
                    &ad.layers,
                    x,
                    &mut y,
                    &mut h,
                )?;
                Ok((y, LinearSaved { h: Some(h) }))
            }
            None => {
                matmul(x, Trans::N, &self.weight.value, Trans::T, &mut y, 1.0, 0.0)?;
                if let Some(b) = bias {
                    add_bias(b, &mut y)?;
                }
                Ok((y, LinearSaved::default()))
            }
        }
    }

    /// From dY: dX += dY W (+ the adapters' part); adds adapter gradients, and dW = dYᵀ x,
    /// db = Σ_rows dY when the base weights are trainable.
    pub fn backward(
        &mut self,
        plan: Option<&DevicePlan>,
        x: &Tensor,
        saved: &LinearSaved,
        dy: &Tensor,
        dx: &mut Tensor,
    ) -> Result<()> {
        match (&mut self.adapter, &saved.h) {
            (Some(ad), Some(h)) => {
                let plan = plan.ok_or_else(|| {
                    ModelError::Batch(format!(
                        "{}: backward needs the batch plan",
                        self.weight.name
                    ))
                })?;
                linear_backward(
                    plan,
                    &self.weight.value,
                    &ad.layers,
                    x,
                    h,
                    dy,
                    dx,
                    Write::Accumulate,
                    &mut ad.grads,
                )?;
            }
            (None, None) => matmul(dy, Trans::N, &self.weight.value, Trans::N, dx, 1.0, 1.0)?,
            _ => {
                return Err(ModelError::Invalid(format!(
                    "{}: adapters were attached or removed between forward and backward",
                    self.weight.name
                )))
            }
        }
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
