//! flix-kernels: devices, tensors and every numeric op of FLix, on the CPU and on CUDA.
//!
//! Each op has a plain-loop f64 reference (one per op: [`ops::reference`] for the transformer ops,
//! [`flix::cpu_ref`] for the FLix ops), a CPU path and a CUDA launcher; launchers check shapes,
//! dtypes and devices before they touch memory, and every op returns [`Result`].
//!
//! A packed batch is bound to a device once, as a [`DeviceBatch`] ([`batch`]): its token ids,
//! positions and sequence starts are checked and, on CUDA, uploaded there, and the embedding,
//! RoPE and attention ops read the uploaded copies in every layer.

pub mod batch;
pub mod cuda;
pub mod device;
pub mod error;
pub mod flix;
pub mod ops;
pub mod profile;
pub mod tensor;
pub mod tolerance;

pub use batch::{DeviceBatch, PackedTokens};
pub use device::Device;
pub use error::{KernelError, Result};
pub use tensor::{DType, Storage, Tensor};
pub use tolerance::Tolerance;
