//! CUDA plumbing: the backend (context, stream, cuBLAS, module cache) and NVRTC compilation.
//! Op launchers live next to their CPU versions, one file per op.

pub mod backend;
pub mod nvrtc;

pub use backend::{driver_available, CudaBackend};
