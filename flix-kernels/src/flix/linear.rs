//! The adapted linear layer as one call: Y = X Wᵀ (+ bias) + Σ_k s_k B_{k,f} A_{k,f} X.
//!
//! Forward writes the adapter update into Y first and lets the base GEMM accumulate on top
//! (beta = 1), so Y is written by the adapter op and read once by the GEMM, never re-read for a
//! separate add. Backward does the same for dX: the adapter part first, then dX += dY W.
//! W is frozen, so there is no dW; the adapters' gradients are added into `grads`.

use super::{check, cuda, AdapterGrads, DevicePlan, LayerAdapters, Write};
use crate::error::Result;
use crate::ops::{matmul, Trans};
use crate::{Device, Tensor};

fn check_weight(
    op: &'static str,
    plan: &DevicePlan,
    w: &Tensor,
    bias: Option<&Tensor>,
    dims: check::Dims,
    x: &Tensor,
) -> Result<()> {
    check::activation(op, "W", plan, w, &[dims.d_out, dims.d_in], x.dtype())?;
    if let Some(bias) = bias {
        check::activation(op, "bias", plan, bias, &[dims.d_out], x.dtype())?;
    }
    Ok(())
}

/// Forward of the adapted layer. `w` `[d_out, d_in]` and `bias` `[d_out]` in the activations'
/// dtype; `x` `[T, d_in]`; `y` `[T, d_out]` is overwritten; `h` `[T, R]` receives the low-rank
/// activations, which [`linear_backward`] needs.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(
    plan: &DevicePlan,
    w: &Tensor,
    bias: Option<&Tensor>,
    ad: &LayerAdapters,
    x: &Tensor,
    y: &mut Tensor,
    h: &mut Tensor,
) -> Result<()> {
    const OP: &str = "flix::linear_forward";
    let dims = check::shrink(plan, ad, x, h)?;
    check::activation(
        OP,
        "Y",
        plan,
        y,
        &[plan.plan().num_tokens(), dims.d_out],
        x.dtype(),
    )?;
    check_weight(OP, plan, w, bias, dims, x)?;
    super::shrink(plan, ad, x, h)?;
    super::expand(plan, ad, h, y, Write::Overwrite)?;
    matmul(x, Trans::N, w, Trans::T, y, 1.0, 1.0)?;
    if let Some(bias) = bias {
        add_bias(bias, y)?;
    }
    Ok(())
}

/// Backward of the adapted layer from the saved `x` and `h` and the incoming `dy` `[T, d_out]`:
/// adds dA, dB into `grads` and writes (or, with [`Write::Accumulate`], adds) dX `[T, d_in]`,
/// e.g. to sum the input gradients of q, k and v projections that share one input.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    plan: &DevicePlan,
    w: &Tensor,
    ad: &LayerAdapters,
    x: &Tensor,
    h: &Tensor,
    dy: &Tensor,
    dx: &mut Tensor,
    dx_write: Write,
    grads: &mut AdapterGrads,
) -> Result<()> {
    const OP: &str = "flix::linear_backward";
    let dims = check::backward(plan, ad, x, h, dy, Some(dx), grads)?;
    check_weight(OP, plan, w, None, dims, x)?;
    super::backward(plan, ad, x, h, dy, Some(dx), dx_write, grads)?;
    matmul(dy, Trans::N, w, Trans::N, dx, 1.0, 1.0)
}

/// `Y[t, o] += bias[o]` for `y` `[T, d_out]` and `bias` `[d_out]` on one device, same dtype.
pub fn add_bias(bias: &Tensor, y: &mut Tensor) -> Result<()> {
    const OP: &str = "flix::add_bias";
    let d_out = y.shape().last().copied().unwrap_or(0);
    if y.shape().len() != 2 {
        return Err(crate::KernelError::Invalid {
            op: OP,
            message: format!("Y must be 2-D, found shape {:?}", y.shape()),
        });
    }
    bias.expect_shape(OP, "bias", &[d_out])?;
    bias.expect_dtype(OP, "bias", y.dtype())?;
    if !bias.device().same(y.device()) {
        return Err(crate::KernelError::WrongDevice {
            op: OP,
            what: "bias",
            expected: y.device().to_string(),
            found: bias.device().to_string(),
        });
    }
    match y.device().clone() {
        Device::Cpu => {
            let bias = bias.cpu_data(OP)?;
            for row in y.cpu_data_mut(OP)?.chunks_mut(d_out.max(1)) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            Ok(())
        }
        Device::Cuda(backend) => cuda::add_bias(&backend, bias, y),
    }
}
