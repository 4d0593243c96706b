//! CUDA launchers of the transformer ops (kernels in `kernels-cu/transformer_*.cu`, work
//! decomposition documented at the top of each). The op functions in `ops/*.rs` check what the
//! CPU path also needs (shapes against each other, ids and targets in range); the launchers here
//! add the device-side preconditions (every tensor on the same CUDA device, activations of one
//! dtype, f32 where the kernels want the master copy, the kernels' own limits), each with an
//! error naming the tensors, and then queue the kernels on the backend's one stream.
//!
//! Kernels take raw device addresses (`u64`), so one launcher serves f32 and bf16; the shared
//! launch plumbing (`Args`, the checks, grids, uploads) is `crate::cuda::launch`.

pub mod attention;
pub mod attention_decode;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod optim;
pub mod rmsnorm;

pub(crate) use crate::cuda::launch::{
    blocks, elem_bytes, grid_stride, on_device, same_device_and_dtype, suffix, tiles, to_i32,
    upload, workspace, Args,
};
