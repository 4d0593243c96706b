//! Launchers of `transformer_attention.cu`: causal GQA attention over packed segments, forward
//! (also the cached decode step) and backward, with the shape's softmax scale and sliding window.
//! Shapes and segment starts are checked by the op functions in `ops/attention.rs`; here: one
//! device, one dtype, head_dim within the kernels' limit, then the launches.

use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use super::Args;
use super::{blocks, grid_stride, same_device_and_dtype, suffix, tiles, to_i32, upload, workspace};
use crate::batch::SegmentStarts;
use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use crate::ops::attention::AttentionShape;
use crate::{DType, Device, Tensor};

/// Rows per tile (ATT_TILE and ATT_BK_BWD in the kernel source).
const TILE: usize = 16;
/// Keys per chunk of the forward kernel (ATT_BK).
const FORWARD_KEYS: usize = 32;
/// The head-dim limits the tiled kernels are compiled for (ATT_TILED_ENTRIES): the launcher
/// takes the smallest that holds head_dim, since the limit sizes each thread's accumulators.
const HEAD_DIM_LIMITS: [usize; 3] = [64, 128, 256];
const THREADS: u32 = 128;
/// Dynamic shared memory a kernel may use without raising its limit.
const DEFAULT_SHARED_BYTES: usize = 48 * 1024;

/// The entry-name part `hd64`, `hd128` or `hd256` for `head_dim`, or an error past the largest.
fn head_dim_limit(op: &'static str, shape: AttentionShape) -> Result<String> {
    match HEAD_DIM_LIMITS.iter().find(|&&l| shape.head_dim <= l) {
        Some(limit) => Ok(format!("hd{limit}")),
        None => Err(KernelError::Invalid {
            op,
            message: format!(
                "head_dim {} is more than the CUDA kernels' limit of {}",
                shape.head_dim,
                HEAD_DIM_LIMITS[HEAD_DIM_LIMITS.len() - 1]
            ),
        }),
    }
}

/// The kernels' `window` argument: the window in keys, `i32::MAX` for none (a window longer than
/// any segment masks nothing, so clamping changes nothing).
fn window_arg(shape: AttentionShape) -> i32 {
    shape
        .window
        .map_or(i32::MAX, |w| w.min(i32::MAX as usize) as i32)
}

/// Which kernel's shared-memory layout to size.
#[derive(Clone, Copy, Debug)]
enum Layout {
    Forward,
    /// The tensor-core forward (bf16, head_dim a multiple of 16).
    ForwardMma,
    BackwardDq,
    BackwardDkDv,
}

/// Whether the forward runs on the tensor cores: bf16 operands, and head_dim a multiple of the
/// 16-wide wmma fragments.
fn forward_on_tensor_cores(dtype: DType, head_dim: usize) -> bool {
    dtype == DType::BF16 && head_dim.is_multiple_of(16)
}

/// Bytes of dynamic shared memory of each kernel at `head_dim`, as `att_forward_shared_floats`,
/// `att_forward_mma_layout`, `att_bwd_dq_shared_floats` and `att_bwd_dkdv_shared_floats` in the
/// kernel source lay them out; each kernel stops with a launch error if given less.
fn shared_bytes(layout: Layout, head_dim: usize) -> usize {
    // The FMA kernels: f32 rows padded to head_dim + 1 floats.
    let row = head_dim + 1;
    let floats = |n: usize| 4 * n;
    match layout {
        Layout::Forward => {
            floats((TILE + 2 * FORWARD_KEYS) * row + TILE * (FORWARD_KEYS + 1) + 3 * TILE)
        }
        Layout::BackwardDq => floats(4 * TILE * row + TILE * (TILE + 1)),
        Layout::BackwardDkDv => floats(4 * TILE * row + 2 * TILE * (TILE + 1) + 2 * TILE),
        Layout::ForwardMma => {
            // Arrays on 128-byte boundaries: Q, K, V as bf16 rows of head_dim + 8; S (f32, rows
            // of keys + 4); P (bf16, keys + 8); the P·V scratch (f32, head_dim + 4); row state.
            let aligned = |bytes: usize| bytes.div_ceil(128) * 128;
            let bf16_row = 2 * (head_dim + 8);
            aligned(TILE * bf16_row)
                + 2 * aligned(FORWARD_KEYS * bf16_row)
                + aligned(TILE * 4 * (FORWARD_KEYS + 4))
                + aligned(TILE * 2 * (FORWARD_KEYS + 8))
                + aligned(TILE * 4 * (head_dim + 4))
                + aligned(3 * TILE * 4)
        }
    }
}

/// A launch of `grid` blocks of the attention kernel `f` with the shared memory of `layout`,
/// raising the kernel's dynamic shared-memory limit past the default where it needs more (head
/// dims above 128); an error naming both sizes if the device allows less.
fn launch_config(
    backend: &CudaBackend,
    op: &'static str,
    f: &CudaFunction,
    grid: (usize, usize),
    layout: Layout,
    head_dim: usize,
) -> Result<LaunchConfig> {
    let bytes = shared_bytes(layout, head_dim);
    if bytes > DEFAULT_SHARED_BYTES {
        let max = backend
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        if bytes > max.max(0) as usize {
            return Err(KernelError::Invalid {
                op,
                message: format!(
                    "head_dim {head_dim} needs {bytes} bytes of shared memory per block; this \
                     device allows {max}"
                ),
            });
        }
        // The attribute is set through the driver, which wants the kernel's context current.
        backend.context().bind_to_thread()?;
        f.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )?;
    }
    let mut config = blocks(op, grid, THREADS)?;
    config.shared_mem_bytes = bytes as u32;
    Ok(config)
}

fn starts_i32(op: &'static str, starts: &[usize]) -> Result<Vec<i32>> {
    starts
        .iter()
        .map(|&s| to_i32(op, "segment start", s))
        .collect()
}

/// A batch's segment starts and the kernels' query tiles over them, on the device: uploaded
/// once per batch ([`crate::batch::SegmentStarts`]) and read by every layer's forward and
/// backward.
pub(crate) struct CudaSegments {
    starts: CudaSlice<i32>,
    tiles: CudaSlice<i32>,
    num_tiles: usize,
}

impl CudaSegments {
    pub(crate) fn upload(backend: &CudaBackend, starts: &[usize]) -> Result<Self> {
        const OP: &str = "SegmentStarts::new";
        let tile_list = tiles(OP, starts, TILE)?;
        Ok(Self {
            starts: upload(backend, &starts_i32(OP, starts)?)?,
            num_tiles: tile_list.len() / 3,
            tiles: upload(backend, &tile_list)?,
        })
    }
}

/// O and lse for queries of `q_segments` against keys `kv_starts` (the queries' own starts
/// for self-attention); the query tiles are those of `q_segments`.
fn forward(
    backend: &Arc<CudaBackend>,
    op: &'static str,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    q_segments: &CudaSegments,
    kv_starts: &CudaSlice<i32>,
    shape: AttentionShape,
) -> Result<(Tensor, Tensor)> {
    let dtype = same_device_and_dtype(op, backend, &[("Q", q), ("K", k), ("V", v)])?;
    let limit = head_dim_limit(op, shape)?;
    let tq = q.shape()[0];
    let AttentionShape {
        heads,
        kv_heads,
        head_dim,
        scale,
        ..
    } = shape;
    let window = window_arg(shape);
    let device = Device::Cuda(backend.clone());
    let mut out = Tensor::zeros(&device, dtype, &[tq, heads * head_dim])?;
    let mut lse = Tensor::zeros(&device, DType::F32, &[tq * heads])?;
    let num_tiles = q_segments.num_tiles;
    if num_tiles == 0 || heads == 0 {
        return Ok((out, lse));
    }
    let (qs, ks, tiles_dev) = (&q_segments.starts, kv_starts, &q_segments.tiles);
    let (h_i, hkv_i, hd_i) = (
        to_i32(op, "heads", heads)?,
        to_i32(op, "kv_heads", kv_heads)?,
        to_i32(op, "head_dim", head_dim)?,
    );
    let (entry, layout) = if forward_on_tensor_cores(dtype, head_dim) {
        (
            format!("attention_forward_mma_{limit}_bf16"),
            Layout::ForwardMma,
        )
    } else {
        (
            format!("attention_forward_{limit}_{}", suffix(dtype)),
            Layout::Forward,
        )
    };
    let f = backend.function(&kernels_cu::TRANSFORMER_ATTENTION, &entry)?;
    let config = launch_config(backend, op, &f, (num_tiles, heads), layout, head_dim)?;
    {
        let mut a = Args::new(backend);
        let (qp, kp, vp) = (
            a.read(op, "Q", q)?,
            a.read(op, "K", k)?,
            a.read(op, "V", v)?,
        );
        let op_ = a.write(op, "O", &mut out)?;
        let lp = a.write(op, "lse", &mut lse)?;
        let (qsp, ksp, tp) = (a.slice(qs), a.slice(ks), a.slice(tiles_dev));
        let mut b = backend.stream().launch_builder(&f);
        b.arg(&qp)
            .arg(&kp)
            .arg(&vp)
            .arg(&op_)
            .arg(&lp)
            .arg(&qsp)
            .arg(&ksp)
            .arg(&tp)
            .arg(&h_i)
            .arg(&hkv_i)
            .arg(&hd_i)
            .arg(&scale)
            .arg(&window);
        // SAFETY: matches attention_forward_hd*_* and attention_forward_mma_hd*_bf16 (const T*
        // x3, T*, float*, const int* x2, const AttTile*, int x3, float, int), T bf16 for the
        // latter; the starts were checked to rise within the row counts,
        // the tiles lie inside them, head_dim is within the kernel's limit, and the shared memory
        // is the kernel's layout for head_dim.
        unsafe { b.launch(config) }?;
    }
    Ok((out, lse))
}

/// Returns (O, lse) like the CPU path; lse stays on the device for the backward.
pub fn attention_forward(
    backend: &Arc<CudaBackend>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &SegmentStarts,
    shape: AttentionShape,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "attention_forward";
    let segments = segments.cuda(OP, &Device::Cuda(backend.clone()))?;
    forward(backend, OP, (q, k, v), segments, &segments.starts, shape)
}

/// The decode step against a KV cache.
pub fn attention_cached_forward(
    backend: &Arc<CudaBackend>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    q_starts: &[usize],
    kv_starts: &[usize],
    shape: AttentionShape,
) -> Result<Tensor> {
    const OP: &str = "attention_cached_forward";
    // The decode step's queries and cache lengths change every step: uploaded here.
    let q_segments = CudaSegments::upload(backend, q_starts)?;
    let kv_starts = upload(backend, &starts_i32(OP, kv_starts)?)?;
    Ok(forward(backend, OP, (q, k, v), &q_segments, &kv_starts, shape)?.0)
}

/// Returns (dQ, dK, dV).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    backend: &Arc<CudaBackend>,
    dout: &Tensor,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    segments: &SegmentStarts,
    shape: AttentionShape,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "attention_backward";
    let segments = segments.cuda(OP, &Device::Cuda(backend.clone()))?;
    super::on_device(OP, "lse", lse, &Device::Cuda(backend.clone()))?;
    let dtype = same_device_and_dtype(
        OP,
        backend,
        &[("Q", q), ("K", k), ("V", v), ("O", out), ("dO", dout)],
    )?;
    let limit = head_dim_limit(OP, shape)?;
    let AttentionShape {
        heads,
        kv_heads,
        head_dim,
        scale,
        ..
    } = shape;
    let window = window_arg(shape);
    let t = q.shape()[0];
    let device = Device::Cuda(backend.clone());
    let mut dq = Tensor::zeros(&device, dtype, &[t, heads * head_dim])?;
    let mut dk = Tensor::zeros(&device, dtype, &[t, kv_heads * head_dim])?;
    let mut dv = Tensor::zeros(&device, dtype, &[t, kv_heads * head_dim])?;
    let num_tiles = segments.num_tiles;
    if num_tiles == 0 || heads == 0 {
        return Ok((dq, dk, dv));
    }
    let (starts_dev, tiles_dev) = (&segments.starts, &segments.tiles);
    let mut d_dev = workspace::<f32>(backend, t * heads)?;
    let (h_i, hkv_i, hd_i) = (
        to_i32(OP, "heads", heads)?,
        to_i32(OP, "kv_heads", kv_heads)?,
        to_i32(OP, "head_dim", head_dim)?,
    );
    let sfx = suffix(dtype);
    let source = &kernels_cu::TRANSFORMER_ATTENTION;
    let dot = backend.function(source, &format!("attention_bwd_dot_{sfx}"))?;
    let f_dq = backend.function(source, &format!("attention_bwd_dq_{limit}_{sfx}"))?;
    let f_dkdv = backend.function(source, &format!("attention_bwd_dkdv_{limit}_{sfx}"))?;
    let dq_config = launch_config(
        backend,
        OP,
        &f_dq,
        (num_tiles, heads),
        Layout::BackwardDq,
        head_dim,
    )?;
    let dkdv_config = launch_config(
        backend,
        OP,
        &f_dkdv,
        (num_tiles, kv_heads),
        Layout::BackwardDkDv,
        head_dim,
    )?;

    let mut a = Args::new(backend);
    let (qp, kp, vp) = (
        a.read(OP, "Q", q)?,
        a.read(OP, "K", k)?,
        a.read(OP, "V", v)?,
    );
    let (op_, gp) = (a.read(OP, "O", out)?, a.read(OP, "dO", dout)?);
    let (lp, sp, tp) = (
        a.read(OP, "lse", lse)?,
        a.slice(starts_dev),
        a.slice(tiles_dev),
    );
    let dp = a.slice_mut(&mut d_dev);
    let (dqp, dkp, dvp) = (
        a.write(OP, "dQ", &mut dq)?,
        a.write(OP, "dK", &mut dk)?,
        a.write(OP, "dV", &mut dv)?,
    );
    let rows = (t * heads) as i64;
    let mut b = backend.stream().launch_builder(&dot);
    b.arg(&gp).arg(&op_).arg(&dp).arg(&hd_i).arg(&rows);
    // SAFETY: matches attention_bwd_dot_*(const T*, const T*, float*, int, long long);
    // dO and O hold t · heads · head_dim elements, D t · heads.
    unsafe { b.launch(grid_stride(t * heads)) }?;

    let mut b = backend.stream().launch_builder(&f_dq);
    b.arg(&qp)
        .arg(&kp)
        .arg(&vp)
        .arg(&gp)
        .arg(&lp)
        .arg(&dp)
        .arg(&dqp)
        .arg(&sp)
        .arg(&tp)
        .arg(&h_i)
        .arg(&hkv_i)
        .arg(&hd_i)
        .arg(&scale)
        .arg(&window);
    // SAFETY: matches attention_bwd_dq_hd*_*(const T* x4, const float* x2, T*, const int*, const
    // AttTile*, int x3, float, int); grid (query tiles, heads), the kernel's shared memory.
    unsafe { b.launch(dq_config) }?;

    let mut b = backend.stream().launch_builder(&f_dkdv);
    b.arg(&qp)
        .arg(&kp)
        .arg(&vp)
        .arg(&gp)
        .arg(&lp)
        .arg(&dp)
        .arg(&dkp)
        .arg(&dvp)
        .arg(&sp)
        .arg(&tp)
        .arg(&h_i)
        .arg(&hkv_i)
        .arg(&hd_i)
        .arg(&scale)
        .arg(&window);
    // SAFETY: matches attention_bwd_dkdv_hd*_*(const T* x4, const float* x2, T*, T*, const int*,
    // const AttTile*, int x3, float, int); grid (key tiles, kv_heads), key tiles = query tiles,
    // the kernel's shared memory.
    unsafe { b.launch(dkdv_config) }?;
    drop(a);
    Ok((dq, dk, dv))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Head dims up to 128 stay within the default 48 KB (no attribute to raise, as before head
    /// dim 256 was supported); 256 fits the H200's 227 KB per block with room for two blocks
    /// per multiprocessor.
    const LAYOUTS: [Layout; 4] = [
        Layout::Forward,
        Layout::ForwardMma,
        Layout::BackwardDq,
        Layout::BackwardDkDv,
    ];

    #[test]
    fn shared_memory_fits_the_limits_at_every_head_dim() {
        for layout in LAYOUTS {
            assert!(shared_bytes(layout, 128) <= DEFAULT_SHARED_BYTES);
            assert!(2 * shared_bytes(layout, 256) <= 227 * 1024);
            assert!(shared_bytes(layout, 64) < shared_bytes(layout, 256));
        }
    }

    /// `shared_bytes` against the kernel source's own layout functions, compiled for the host
    /// with the emulation shim (kernels-cu/emulate); skips without g++.
    #[test]
    fn shared_bytes_match_the_kernel_source() {
        let dir = std::env::temp_dir().join(format!("flix_att_shared_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let emulate = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernels-cu/emulate");
        let program = dir.join("sizes.cpp");
        std::fs::write(
            &program,
            r#"#include "cuda_shim.h"
#include "../transformer_common.cuh"
#include "../transformer_attention.cu"
#include <cstdio>
int main() {
    for (int hd : {1, 20, 64, 100, 128, 200, 256})
        std::printf("%d %d %d %d\n", 4 * att_forward_shared_floats(hd),
                    att_forward_mma_layout(hd, nullptr, nullptr), 4 * att_bwd_dq_shared_floats(hd),
                    4 * att_bwd_dkdv_shared_floats(hd));
}
"#,
        )
        .unwrap();
        let binary = dir.join("sizes");
        let built = std::process::Command::new("g++")
            .args(["-std=c++20", "-pthread", "-I", emulate])
            .arg(&program)
            .arg("-o")
            .arg(&binary)
            .status();
        if !matches!(built, Ok(s) if s.success()) {
            eprintln!("SKIPPED shared_bytes_match_the_kernel_source: no g++ ({built:?})");
            return;
        }
        let out = std::process::Command::new(&binary).output().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let printed = String::from_utf8(out.stdout).unwrap();
        let want: String = [1, 20, 64, 100, 128, 200, 256]
            .iter()
            .map(|&hd| {
                let [f, f_mma, dq, dkdv] = LAYOUTS.map(|l| shared_bytes(l, hd));
                format!("{f} {f_mma} {dq} {dkdv}\n")
            })
            .collect();
        assert_eq!(printed, want);
    }

    #[test]
    fn the_smallest_head_dim_limit_is_taken_and_past_256_is_an_error() {
        let limit = |hd| head_dim_limit("test", AttentionShape::new(2, 1, hd));
        assert_eq!(limit(1).unwrap(), "hd64");
        assert_eq!(limit(64).unwrap(), "hd64");
        assert_eq!(limit(65).unwrap(), "hd128");
        assert_eq!(limit(256).unwrap(), "hd256");
        let err = limit(257).unwrap_err().to_string();
        assert!(err.contains("257") && err.contains("256"), "{err}");
    }

    #[test]
    fn no_window_and_windows_past_i32_mask_nothing() {
        let mut shape = AttentionShape::new(2, 1, 8);
        assert_eq!(window_arg(shape), i32::MAX);
        shape.window = Some(usize::MAX);
        assert_eq!(window_arg(shape), i32::MAX);
        shape.window = Some(7);
        assert_eq!(window_arg(shape), 7);
    }
}
