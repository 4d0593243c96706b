//! Preconditions of the FLix ops, checked once before any device or host memory is touched.
//! Every error names the op, the argument, and the shape (or dtype, or device) expected and found.

use super::{AdapterGrads, DevicePlan, LayerAdapters};
use crate::error::{KernelError, Result};
use crate::{DType, Tensor};

/// The layer widths, read from the adapters and checked against every type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dims {
    pub d_in: usize,
    pub d_out: usize,
}

pub(crate) fn on_plan_device(
    op: &'static str,
    what: &'static str,
    plan: &DevicePlan,
    t: &Tensor,
) -> Result<()> {
    if !t.device().same(plan.device()) {
        return Err(KernelError::WrongDevice {
            op,
            what,
            expected: plan.device().to_string(),
            found: t.device().to_string(),
        });
    }
    Ok(())
}

/// K types in plan order, `a` `[V_k, r_k, d_in]`, `b` `[V_k, d_out, r_k]`, f32, on the plan's
/// device, one d_in and d_out for all types.
pub(crate) fn adapters(op: &'static str, plan: &DevicePlan, ad: &LayerAdapters) -> Result<Dims> {
    let types = plan.plan().types();
    if ad.types.len() != types.len() {
        return Err(KernelError::Invalid {
            op,
            message: format!(
                "the adapters have {} feature types but the plan has {}",
                ad.types.len(),
                types.len()
            ),
        });
    }
    let first = &ad.types[0];
    let dims = Dims {
        d_in: first.a.shape().get(2).copied().unwrap_or(0),
        d_out: first.b.shape().get(1).copied().unwrap_or(0),
    };
    for (k, (t, shape)) in ad.types.iter().zip(types).enumerate() {
        let want_a = [shape.num_values, shape.rank, dims.d_in];
        let want_b = [shape.num_values, dims.d_out, shape.rank];
        for (what, tensor, want) in [("adapter A", &t.a, want_a), ("adapter B", &t.b, want_b)] {
            if tensor.shape() != want {
                return Err(KernelError::Invalid {
                    op,
                    message: format!(
                        "{what} of feature type {k} has shape {:?}, expected {want:?} \
                         ([values, rank, d_in] for A, [values, d_out, rank] for B; the plan says \
                         {} values of rank {}, type 0 says d_in {} and d_out {})",
                        tensor.shape(),
                        shape.num_values,
                        shape.rank,
                        dims.d_in,
                        dims.d_out
                    ),
                });
            }
            tensor.expect_dtype(op, what, DType::F32)?;
            on_plan_device(op, what, plan, tensor)?;
        }
    }
    Ok(dims)
}

/// An activation: the given shape, the given dtype, on the plan's device.
pub(crate) fn activation(
    op: &'static str,
    what: &'static str,
    plan: &DevicePlan,
    t: &Tensor,
    shape: &[usize],
    dtype: DType,
) -> Result<()> {
    t.expect_shape(op, what, shape)?;
    t.expect_dtype(op, what, dtype)?;
    on_plan_device(op, what, plan, t)
}

pub(crate) fn shrink(
    plan: &DevicePlan,
    ad: &LayerAdapters,
    x: &Tensor,
    h: &Tensor,
) -> Result<Dims> {
    const OP: &str = "flix::shrink";
    let dims = adapters(OP, plan, ad)?;
    let (t, r) = (plan.plan().num_tokens(), plan.plan().total_rank());
    activation(OP, "X", plan, x, &[t, dims.d_in], x.dtype())?;
    activation(OP, "H", plan, h, &[t, r], x.dtype())?;
    Ok(dims)
}

pub(crate) fn expand(
    plan: &DevicePlan,
    ad: &LayerAdapters,
    h: &Tensor,
    y: &Tensor,
) -> Result<Dims> {
    const OP: &str = "flix::expand";
    let dims = adapters(OP, plan, ad)?;
    let (t, r) = (plan.plan().num_tokens(), plan.plan().total_rank());
    activation(OP, "H", plan, h, &[t, r], h.dtype())?;
    activation(OP, "Y", plan, y, &[t, dims.d_out], h.dtype())?;
    Ok(dims)
}

pub(crate) fn backward(
    plan: &DevicePlan,
    ad: &LayerAdapters,
    x: &Tensor,
    h: &Tensor,
    dy: &Tensor,
    dx: Option<&Tensor>,
    grads: &AdapterGrads,
) -> Result<Dims> {
    const OP: &str = "flix::backward";
    let dims = adapters(OP, plan, ad)?;
    let (t, r) = (plan.plan().num_tokens(), plan.plan().total_rank());
    activation(OP, "X", plan, x, &[t, dims.d_in], x.dtype())?;
    activation(OP, "H", plan, h, &[t, r], x.dtype())?;
    activation(OP, "dY", plan, dy, &[t, dims.d_out], x.dtype())?;
    if let Some(dx) = dx {
        activation(OP, "dX", plan, dx, &[t, dims.d_in], x.dtype())?;
    }
    grads_match(OP, plan, ad, grads)?;
    Ok(dims)
}

/// `grads.da[k]` shaped like `ad.types[k].a`, `grads.db[k]` like `.b`, f32, on the plan's device.
pub(crate) fn grads_match(
    op: &'static str,
    plan: &DevicePlan,
    ad: &LayerAdapters,
    grads: &AdapterGrads,
) -> Result<()> {
    if grads.da.len() != ad.types.len() || grads.db.len() != ad.types.len() {
        return Err(KernelError::Invalid {
            op,
            message: format!(
                "gradients hold {} dA and {} dB tensors for {} feature types",
                grads.da.len(),
                grads.db.len(),
                ad.types.len()
            ),
        });
    }
    for (k, t) in ad.types.iter().enumerate() {
        let pairs = [
            ("gradient dA", &grads.da[k], &t.a),
            ("gradient dB", &grads.db[k], &t.b),
        ];
        for (what, g, want) in pairs {
            if g.shape() != want.shape() {
                return Err(KernelError::Invalid {
                    op,
                    message: format!(
                        "{what} of feature type {k} has shape {:?}, expected {:?} (the \
                         adapter's shape)",
                        g.shape(),
                        want.shape()
                    ),
                });
            }
            g.expect_dtype(op, what, DType::F32)?;
            on_plan_device(op, what, plan, g)?;
        }
    }
    Ok(())
}
