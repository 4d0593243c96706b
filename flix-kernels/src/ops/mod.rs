//! The transformer's ops, one file each, each with its CPU path and its CUDA launcher.

pub mod cast;
pub mod matmul;

pub use cast::cast;
pub use matmul::{gemm_f32, matmul, Trans};
