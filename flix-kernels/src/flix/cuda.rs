//! CUDA launchers of the FLix ops (kernels in `kernels-cu/flix_forward.cu` and
//! `flix_backward.cu`, work decomposition documented at the top of each).
//!
//! `flix/mod.rs` has already checked every shape, dtype and device (adapters and gradients f32,
//! activations f32 or bf16, all on the plan's device) before calling here; the launchers add the
//! kernels' own limits ([`params::check_limits`]: K <= 8, sizes within i32 and the grid) and then
//! launch. Nothing here synchronizes: work is queued on the backend's one stream. The f32
//! kernels read the f32 adapters; the bf16 (tensor-core) kernels read the layer's bf16 working
//! copy, made current (a cast of each master whose stamp changed) before the launch.
//!
//! - [`CudaPlan`]: the plan's arrays, uploaded once per batch by `DevicePlan::new`.
//! - `forward.rs`: shrink, expand, add_bias. `backward.rs`: dH and dB, dX, dA.
//! - `params.rs`: the device-independent part (param struct, limits, tiling), tested on the CPU.

mod backward;
mod forward;
pub mod params;

pub use backward::backward;
pub use forward::{add_bias, expand, shrink};

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, SyncOnDrop};
use flix_core::BatchPlan;

use super::working_copy::{CurrentCopies, TypeCopies};
use super::LayerAdapters;
pub(crate) use crate::cuda::launch::to_i32;
use crate::cuda::launch::upload;
use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use crate::{DType, Storage, Tensor};
use half::bf16;
use params::FlixTypesParam;

/// The plan's arrays on the device, uploaded once per batch by [`super::DevicePlan::new`] and
/// shared by every op of every layer of that batch.
pub struct CudaPlan {
    /// S x K value ids, -1 absent.
    slots: CudaSlice<i32>,
    /// The kernels' own tiles of [`params::TILE_M`] tokens: `[segment, start, end]` u32 triples.
    tiles: CudaSlice<u32>,
    num_tiles: usize,
    /// Where the weight-gradient kernels write their sums ([`params::run_flushes`]): per tile
    /// `[slot, ends, direct]`, and the CSR of each global value's partial slots.
    flush: CudaSlice<i32>,
    flush_value_ptr: CudaSlice<i32>,
    flush_value_slots: CudaSlice<i32>,
    /// Runs + 1 offsets into the partial slots (host side: the workspace groups).
    run_start: Vec<usize>,
}

impl CudaPlan {
    /// Uploads the plan's arrays (and the kernels' token tiles). Rejects plans the kernels cannot
    /// take (more than [`params::MAX_TYPES`] feature types) here, before any op runs.
    pub fn upload(backend: &CudaBackend, plan: &BatchPlan) -> Result<Self> {
        params::check_types("DevicePlan::new", plan)?;
        let tiles = params::tiles(plan.segment_starts(), params::TILE_M);
        let flushes =
            params::run_flushes(plan.slots(), plan.num_types(), plan.value_base(), &tiles);
        Ok(Self {
            slots: upload(backend, plan.slots())?,
            num_tiles: tiles.len() / 3,
            tiles: upload(backend, &tiles)?,
            flush: upload(backend, &flushes.per_tile)?,
            flush_value_ptr: upload(backend, &flushes.value_ptr)?,
            flush_value_slots: upload(backend, &flushes.value_slots)?,
            run_start: flushes.run_start,
        })
    }
}

/// The bf16 working copies of `ad`'s adapters, current, when the kernels about to run take bf16
/// `activations` (the tensor-core kernels read the adapters in bf16); `None` for f32 activations
/// (the FMA kernels read the f32 masters). Held until the launches that read them are queued.
fn adapter_copies<'a>(
    ad: &'a LayerAdapters,
    activations: &Tensor,
) -> Result<Option<CurrentCopies<'a>>> {
    match activations.dtype() {
        DType::BF16 => Ok(Some(ad.current_copies(DType::BF16)?)),
        DType::F32 => Ok(None),
    }
}

/// The kernel parameter struct for `ad`, with the device addresses of every type's A and B:
/// the f32 masters, or the bf16 working copies when `copies` are given (bf16 activations).
/// The returned guards must live until the launches that read the adapters are queued.
fn adapter_params<'a>(
    op: &'static str,
    stream: &'a CudaStream,
    plan: &BatchPlan,
    ad: &'a LayerAdapters,
    copies: Option<&'a [TypeCopies]>,
) -> Result<(FlixTypesParam, Vec<SyncOnDrop<'a>>)> {
    let scales: Vec<f32> = ad.types.iter().map(|t| t.scale).collect();
    let mut p = FlixTypesParam::new(op, plan, &scales)?;
    let mut guards = Vec::with_capacity(2 * ad.types.len());
    for (k, t) in ad.types.iter().enumerate() {
        let ((a, ga), (b, gb)) = match copies {
            None => (
                f32_slice(op, "adapter A", &t.a)?.device_ptr(stream),
                f32_slice(op, "adapter B", &t.b)?.device_ptr(stream),
            ),
            Some(copies) => {
                let c = copies.get(k);
                let a = c.and_then(|c| c.a.as_ref()).map(|w| &w.tensor);
                let b = c.and_then(|c| c.b.as_ref()).map(|w| &w.tensor);
                (
                    bf16_slice(op, "adapter A's bf16 copy", a)?.device_ptr(stream),
                    bf16_slice(op, "adapter B's bf16 copy", b)?.device_ptr(stream),
                )
            }
        };
        p.a[k] = a;
        p.b[k] = b;
        guards.push(ga);
        guards.push(gb);
    }
    Ok((p, guards))
}

/// The bf16 slice of a working copy (made by `LayerAdapters::current_copies`: a missing or
/// non-bf16 one is a bug there).
fn bf16_slice<'a>(
    op: &'static str,
    what: &'static str,
    t: Option<&'a Tensor>,
) -> Result<&'a CudaSlice<bf16>> {
    match t.map(Tensor::storage) {
        Some(Storage::CudaBf16(s)) => Ok(s),
        _ => Err(KernelError::Invalid {
            op,
            message: format!("{what} must be a bf16 CUDA tensor, found {t:?}"),
        }),
    }
}

fn f32_slice<'a>(
    op: &'static str,
    what: &'static str,
    t: &'a Tensor,
) -> Result<&'a CudaSlice<f32>> {
    match t.storage() {
        Storage::CudaF32(s) => Ok(s),
        _ => Err(not_cuda_f32(op, what, t)),
    }
}

fn f32_slice_mut<'a>(
    op: &'static str,
    what: &'static str,
    t: &'a mut Tensor,
) -> Result<&'a mut CudaSlice<f32>> {
    let err = not_cuda_f32(op, what, t);
    match t.storage_mut() {
        Storage::CudaF32(s) => Ok(s),
        _ => Err(err),
    }
}

fn not_cuda_f32(op: &'static str, what: &'static str, t: &Tensor) -> KernelError {
    KernelError::Invalid {
        op,
        message: format!("{what} must be an f32 CUDA tensor, found {t:?}"),
    }
}

/// Two activations that must share a dtype did not (the checks upstream make this a bug).
fn dtype_mismatch(op: &'static str, what: &str, tensors: &[&Tensor]) -> KernelError {
    KernelError::Invalid {
        op,
        message: format!("{what}: CUDA activations of one dtype expected, found {tensors:?}"),
    }
}

fn grid(op: &'static str, x: usize, y: usize, z: usize) -> Result<cudarc::driver::LaunchConfig> {
    let dim = |what, n: usize| {
        u32::try_from(n).map_err(|_| KernelError::Invalid {
            op,
            message: format!("grid {what} dimension {n} is too large"),
        })
    };
    Ok(cudarc::driver::LaunchConfig {
        grid_dim: (dim("x", x)?, dim("y", y)?, dim("z", z)?),
        block_dim: (params::THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}
