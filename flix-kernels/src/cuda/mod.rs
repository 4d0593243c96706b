//! CUDA plumbing: the backend (context, stream, cuBLAS, module cache), NVRTC compilation and
//! the launch helpers every launcher shares ([`launch`]). Op launchers live next to their CPU
//! versions, one file per op.

pub mod backend;
pub(crate) mod launch;
pub mod nvrtc;

pub use backend::{driver_available, CudaBackend};
