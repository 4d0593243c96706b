//! The FLix ops (DESIGN §1, §4): the low-rank update of a mixed-feature batch, and the adapted
//! linear layer built on it.
//!
//! For a validated [`BatchPlan`] with K feature types, the adapters of one linear layer, the
//! packed activations X `[T, d_in]` and outputs Y `[T, d_out]`, with f = the value of type k in
//! token t's segment (skipped where absent or dropped) and s_k the type's scale:
//!
//! ```text
//! shrink    H[t, off_k + j] = s_k Σ_i X[t, i] A_{k,f}[j, i]          (0 where absent)
//! expand    Y[t, o] (= or +=) Σ_k Σ_j H[t, off_k + j] B_{k,f}[o, j]
//! backward  dH_k[t, j] = Σ_o dY[t, o] B_{k,f}[o, j]
//!           dB_{k,v} += Σ_{t : f = v} dY[t]ᵀ H_k[t]                 (H already carries s_k)
//!           dA_{k,v} += s_k Σ_{t : f = v} dH_k[t]ᵀ X[t]
//!           dX (= or +=) Σ_k s_k dH_k A_{k,f}
//! ```
//!
//! and the adapted linear layer ([`linear_forward`], [`linear_backward`]):
//! `Y = X Wᵀ (+ bias) + expand(shrink(X))`, computed as expand into Y first and the base GEMM
//! accumulating on top (beta = 1), so Y is written once and read once.
//!
//! Contract of every op (checked by the launchers in `check.rs` before any memory is touched):
//! - all tensors live on the plan's device;
//! - adapters: exactly K types in plan order; type k has `a` `[V_k, r_k, d_in]` and `b`
//!   `[V_k, d_out, r_k]` (PEFT's `lora_A`/`lora_B` layout, one matrix per value), **f32** on every
//!   device (they are the master copy). With bf16 activations the CUDA kernels read a bf16 working
//!   copy instead, which [`LayerAdapters`] keeps and the launchers refresh from the masters
//!   whenever a master's [`Tensor::stamp`] changed (an optimizer step writes it in the same pass,
//!   so training pays no separate cast); f32 activations (and the CPU) read the masters;
//! - activations X, H, Y, dY, dX share one dtype: f32 (CPU, CUDA) or bf16 (CUDA only); H is
//!   `[T, R]` with R = Σ_k r_k, type k in columns `col_offsets[k]..col_offsets[k + 1]`;
//! - gradients are f32, shaped like `a` and `b`, and are **accumulated** (+=), so micro-batches
//!   add up; start a step with [`AdapterGrads::zeros`] or [`AdapterGrads::zero`];
//! - the linear layer's frozen `w` `[d_out, d_in]` and `bias` `[d_out]` are in the activations'
//!   dtype;
//! - reductions are deterministic: same inputs, same bits.
//!
//! A layer's step, on any device (here the CPU; sizes are tiny):
//!
//! ```
//! use flix_core::{BatchPlan, SegmentSpec, TypeShape, ABSENT};
//! use flix_kernels::flix::{self, AdapterGrads, DevicePlan, LayerAdapters, TypeAdapter, Write};
//! use flix_kernels::{DType, Device, Tensor};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::Cpu;
//! let (d_in, d_out) = (8, 6);
//! // Two feature types (say lang with 3 values, task with 2), ranks 4 and 2.
//! let types = [TypeShape { rank: 4, num_values: 3 }, TypeShape { rank: 2, num_values: 2 }];
//! // Two examples: 5 tokens of (lang 2, task 0), 3 tokens of lang 0 with the task dropped.
//! let segments = [
//!     SegmentSpec { len: 5, slots: vec![2, 0] },
//!     SegmentSpec { len: 3, slots: vec![0, ABSENT] },
//! ];
//! let plan = DevicePlan::new(&device, BatchPlan::new(&types, &segments)?)?;
//! let (t, r) = (plan.plan().num_tokens(), plan.plan().total_rank());
//!
//! let zeros = |shape: &[usize]| Tensor::zeros(&device, DType::F32, shape);
//! let adapters = LayerAdapters::new(vec![
//!     TypeAdapter { scale: 2.0, a: zeros(&[3, 4, d_in])?, b: zeros(&[3, d_out, 4])? },
//!     TypeAdapter { scale: 1.0, a: zeros(&[2, 2, d_in])?, b: zeros(&[2, d_out, 2])? },
//! ]);
//! let (w, x) = (zeros(&[d_out, d_in])?, zeros(&[t, d_in])?);
//! let (mut y, mut h) = (zeros(&[t, d_out])?, zeros(&[t, r])?);
//! flix::linear_forward(&plan, &w, None, &adapters, &x, &mut y, &mut h)?;
//!
//! let (dy, mut dx) = (zeros(&[t, d_out])?, zeros(&[t, d_in])?);
//! let mut grads = AdapterGrads::zeros(&adapters)?;
//! flix::linear_backward(&plan, &w, &adapters, &x, &h, &dy, &mut dx, Write::Overwrite, &mut grads)?;
//! # Ok(())
//! # }
//! ```
//!
//! Each op has three implementations: `cpu_ref` (plain loops in f64, the oracle), `cpu` (the fast
//! CPU path, used for `Device::Cpu`) and `cuda` (the launchers of the `kernels-cu` kernels).

mod check;
pub mod cpu;
pub mod cpu_ref;
pub mod cuda;
mod linear;
mod working_copy;

pub use linear::{add_bias, linear_backward, linear_forward};
pub use working_copy::OptimizerTensors;

use flix_core::BatchPlan;

use crate::error::{KernelError, Result};
use crate::{DType, Device, Tensor};

/// The adapters of one feature type for one linear layer: one (A, B) pair per value.
pub struct TypeAdapter {
    /// s_k = alpha_k / r_k.
    pub scale: f32,
    /// `[V, r, d_in]`, f32.
    pub a: Tensor,
    /// `[V, d_out, r]`, f32.
    pub b: Tensor,
}

/// All K feature types of one linear layer, in the plan's type order, and (on CUDA, once a
/// launch with bf16 activations asked for it) a bf16 working copy of every A and B that the
/// tensor-core kernels read. The copy follows the f32 masters by their stamps
/// ([`Tensor::stamp`]): it is refreshed before a launch whenever a master changed, and an
/// optimizer step writes it in the same pass as the update
/// ([`LayerAdapters::optimizer_tensors_mut`], [`LayerAdapters::copy_written_by_optimizer`]).
/// Build with [`LayerAdapters::new`].
pub struct LayerAdapters {
    pub types: Vec<TypeAdapter>,
    copies: working_copy::AdapterCopies,
}

/// Gradients of one layer's adapters: `da[k]` shaped like `types[k].a`, `db[k]` like
/// `types[k].b`, f32. Ops add into them.
pub struct AdapterGrads {
    pub da: Vec<Tensor>,
    pub db: Vec<Tensor>,
}

impl AdapterGrads {
    /// Zero gradients shaped like `adapters`, on the adapters' device.
    pub fn zeros(adapters: &LayerAdapters) -> Result<Self> {
        let mut da = Vec::with_capacity(adapters.types.len());
        let mut db = Vec::with_capacity(adapters.types.len());
        for t in &adapters.types {
            da.push(Tensor::zeros(t.a.device(), DType::F32, t.a.shape())?);
            db.push(Tensor::zeros(t.b.device(), DType::F32, t.b.shape())?);
        }
        Ok(Self { da, db })
    }

    /// Sets every gradient to zero (start of an optimizer step).
    pub fn zero(&mut self) -> Result<()> {
        for g in self.da.iter_mut().chain(self.db.iter_mut()) {
            *g = Tensor::zeros(g.device(), DType::F32, g.shape())?;
        }
        Ok(())
    }
}

/// Whether an op overwrites its output or adds to what it already holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Overwrite,
    Accumulate,
}

/// A validated [`BatchPlan`] bound to a device; on CUDA its arrays are uploaded once here, so
/// every op of every layer of the batch reuses them.
pub struct DevicePlan {
    device: Device,
    plan: BatchPlan,
    cuda: Option<cuda::CudaPlan>,
}

impl DevicePlan {
    pub fn new(device: &Device, plan: BatchPlan) -> Result<Self> {
        let cuda = match device {
            Device::Cpu => None,
            Device::Cuda(backend) => Some(cuda::CudaPlan::upload(backend, &plan)?),
        };
        Ok(Self {
            device: device.clone(),
            plan,
            cuda,
        })
    }
    pub fn plan(&self) -> &BatchPlan {
        &self.plan
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// The uploaded plan arrays; an error on a CPU plan (a bug in dispatch, not a user error).
    pub fn cuda_plan(&self) -> Result<&cuda::CudaPlan> {
        self.cuda.as_ref().ok_or_else(|| KernelError::Invalid {
            op: "DevicePlan::cuda_plan",
            message: format!("the plan lives on {}, not on CUDA", self.device),
        })
    }
}

/// H = shrink(X): `x` `[T, d_in]`, `h` `[T, R]` (overwritten).
pub fn shrink(plan: &DevicePlan, ad: &LayerAdapters, x: &Tensor, h: &mut Tensor) -> Result<()> {
    let _profile = crate::profile::scope("flix_shrink", plan.device());
    check::shrink(plan, ad, x, h)?;
    match plan.device() {
        Device::Cpu => cpu::shrink(plan.plan(), ad, x, h),
        Device::Cuda(backend) => cuda::shrink(backend, plan, ad, x, h),
    }
}

/// Y (= or +=) expand(H): `h` `[T, R]`, `y` `[T, d_out]`.
pub fn expand(
    plan: &DevicePlan,
    ad: &LayerAdapters,
    h: &Tensor,
    y: &mut Tensor,
    write: Write,
) -> Result<()> {
    let _profile = crate::profile::scope("flix_expand", plan.device());
    check::expand(plan, ad, h, y)?;
    match plan.device() {
        Device::Cpu => cpu::expand(plan.plan(), ad, h, y, write),
        Device::Cuda(backend) => cuda::expand(backend, plan, ad, h, y, write),
    }
}

/// The backward of shrink then expand, from the saved `x` `[T, d_in]` and `h` `[T, R]` and the
/// incoming `dy` `[T, d_out]`: adds dA and dB into `grads`, and writes or adds dX into `dx`
/// `[T, d_in]` when given (`dx_write` says which).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    plan: &DevicePlan,
    ad: &LayerAdapters,
    x: &Tensor,
    h: &Tensor,
    dy: &Tensor,
    dx: Option<&mut Tensor>,
    dx_write: Write,
    grads: &mut AdapterGrads,
) -> Result<()> {
    let _profile = crate::profile::scope("flix_backward", plan.device());
    check::backward(plan, ad, x, h, dy, dx.as_deref(), grads)?;
    match plan.device() {
        Device::Cpu => cpu::backward(plan.plan(), ad, x, h, dy, dx, dx_write, grads),
        Device::Cuda(backend) => cuda::backward(backend, plan, ad, x, h, dy, dx, dx_write, grads),
    }
}
