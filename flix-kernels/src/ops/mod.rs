//! The transformer's ops, one file each, each with its CPU path and its CUDA launcher.

pub mod adamw;
pub mod attention;
mod attention_decode;
pub mod cast;
pub mod cross_entropy;
pub(crate) mod cuda;
pub mod elementwise;
pub mod embedding;
pub mod grad_norm;
pub mod matmul;
#[cfg(test)]
pub(crate) mod oracle;
pub mod reference;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;

pub use cast::cast;
pub use matmul::{gemm_f32, matmul, Trans};
