//! CUDA launchers of the FLix ops. OWNED BY THE CUDA HELPER: the bodies below are placeholders
//! that return "CUDA launcher not written yet"; the signatures are the contract with
//! `flix/mod.rs`, which has already checked every shape, dtype and device before calling here
//! (see the module docs of `flix` for the contract: adapters f32, activations f32 or bf16).

use flix_core::BatchPlan;

use super::{AdapterGrads, DevicePlan, LayerAdapters, Write};
use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use crate::Tensor;

fn not_written(op: &'static str) -> KernelError {
    KernelError::Invalid {
        op,
        message: "CUDA launcher not written yet".into(),
    }
}

/// The plan's arrays on the device (segment starts, slots, tiles, users CSR, column offsets),
/// uploaded once per batch by [`DevicePlan::new`].
pub struct CudaPlan {
    _placeholder: (),
}

impl CudaPlan {
    /// PLACEHOLDER: uploads nothing yet.
    pub fn upload(_backend: &CudaBackend, _plan: &BatchPlan) -> Result<Self> {
        Ok(Self { _placeholder: () })
    }
}

/// PLACEHOLDER. H = shrink(X); `h` overwritten.
pub fn shrink(
    _backend: &CudaBackend,
    _plan: &DevicePlan,
    _ad: &LayerAdapters,
    _x: &Tensor,
    _h: &mut Tensor,
) -> Result<()> {
    Err(not_written("flix::shrink"))
}

/// PLACEHOLDER. Y (= or +=) expand(H).
pub fn expand(
    _backend: &CudaBackend,
    _plan: &DevicePlan,
    _ad: &LayerAdapters,
    _h: &Tensor,
    _y: &mut Tensor,
    _write: Write,
) -> Result<()> {
    Err(not_written("flix::expand"))
}

/// PLACEHOLDER. dA, dB added into `grads`; dX written or added when given.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    _backend: &CudaBackend,
    _plan: &DevicePlan,
    _ad: &LayerAdapters,
    _x: &Tensor,
    _h: &Tensor,
    _dy: &Tensor,
    _dx: Option<&mut Tensor>,
    _dx_write: Write,
    _grads: &mut AdapterGrads,
) -> Result<()> {
    Err(not_written("flix::backward"))
}

/// PLACEHOLDER. Y[t, o] += bias[o]; `y` `[T, d_out]` f32 or bf16, `bias` `[d_out]` of the same
/// dtype (checked by the caller).
pub fn add_bias(_backend: &CudaBackend, _bias: &Tensor, _y: &mut Tensor) -> Result<()> {
    Err(not_written("flix::add_bias"))
}
