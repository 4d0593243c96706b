//! Launchers of `transformer_attention.cu`: causal GQA attention over packed segments, forward
//! and backward, with the shape's softmax scale and sliding window (the decode step over
//! per-sequence KV caches is `attention_decode.rs`).
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
/// Positions per work unit of the tensor-core kernels (ATT_POS_TILE). In the forward and dQ
/// such a tile of P query positions holds P·G packed (position, query head) rows of each KV
/// head's group, which blocks of BLOCK_ROWS take; in dK/dV it is the keys of one block (two past
/// head_dim 128, see `dkdv_blocks_per_tile`).
const POS_TILE: usize = 64;
/// Packed rows per block of the tensor-core forward and dQ, 16 per warp (ATT_BLOCK_ROWS).
const BLOCK_ROWS: usize = 16 * WARPS;
const WARPS: usize = THREADS as usize / 32;
// A tile of P positions has P·G rows per KV head and gets G blocks (grid (tiles, H)).
const _: () = assert!(POS_TILE <= BLOCK_ROWS);
/// Keys per chunk of the forward kernels and the tensor-core dQ (ATT_BK).
const FORWARD_KEYS: usize = 32;
/// Whether the tensor-core dK/dV takes its split layout at `head_dim` (att_dkdv_wide): past 128
/// a warp's 16 keys x head_dim of dK and dV would not fit in registers, so two warps share each
/// 16 keys (alternate 16-column blocks), a block holds 32 keys and streams query chunks of 16 rows
/// instead of 32. The kernel for the limit 256 is the one taken exactly then.
fn dkdv_wide(head_dim: usize) -> bool {
    head_dim > 128
}

/// Keys per block of the tensor-core dK/dV (att_dkdv_block_keys): 16 per warp, or per warp pair.
fn dkdv_block_keys(head_dim: usize) -> usize {
    if dkdv_wide(head_dim) {
        8 * WARPS
    } else {
        16 * WARPS
    }
}

/// Query rows per chunk the tensor-core dK/dV streams (att_dkdv_chunk).
fn dkdv_chunk(head_dim: usize) -> usize {
    if dkdv_wide(head_dim) {
        16
    } else {
        32
    }
}

/// Blocks per position tile and KV head of the tensor-core dK/dV (att_dkdv_blocks_per_tile):
/// its grid is (tiles, kv_heads · this).
fn dkdv_blocks_per_tile(head_dim: usize) -> usize {
    POS_TILE / dkdv_block_keys(head_dim)
}

/// The head-dim limits the tiled kernels are compiled for (ATT_TILED_ENTRIES): the launcher
/// takes the smallest that holds head_dim, since the limit sizes each thread's accumulators.
const HEAD_DIM_LIMITS: [usize; 3] = [64, 128, 256];
pub(super) const THREADS: u32 = 128;
/// Dynamic shared memory a kernel may use without raising its limit.
const DEFAULT_SHARED_BYTES: usize = 48 * 1024;

/// The entry-name part `hd64`, `hd128` or `hd256` for `head_dim`, or an error past the largest.
pub(super) fn head_dim_limit(op: &'static str, shape: AttentionShape) -> Result<String> {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    Forward,
    BackwardDq,
    BackwardDkDv,
    /// The tensor-core kernels (bf16, head_dim a multiple of 16), all over tiles of POS_TILE
    /// positions: the forward and dQ over packed rows, dK/dV over blocks of keys.
    ForwardMma,
    BackwardDqMma,
    BackwardDkDvMma,
    /// The decode kernel, taking `group` query heads per KV head at once.
    Decode {
        group: usize,
    },
}

impl Layout {
    /// Whether the kernel works on tiles of POS_TILE positions (the tensor-core ones); the
    /// others take the 16-row tiles.
    fn position_tiles(self) -> bool {
        matches!(
            self,
            Layout::ForwardMma | Layout::BackwardDqMma | Layout::BackwardDkDvMma
        )
    }

    /// Blocks per tile and KV head of a dK/dV kernel: its grid is (tiles, kv_heads · this).
    fn dkdv_blocks_per_tile(self, head_dim: usize) -> usize {
        match self {
            Layout::BackwardDkDvMma => dkdv_blocks_per_tile(head_dim),
            _ => 1,
        }
    }
}

/// Whether attention runs on the tensor cores: bf16 operands, and head_dim a multiple of the
/// 16-wide wmma fragments. f32 (and other head dims) take the FMA kernels.
fn on_tensor_cores(dtype: DType, head_dim: usize) -> bool {
    dtype == DType::BF16 && head_dim.is_multiple_of(16)
}

/// One kernel the launcher takes: its entry name and its shared-memory layout.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Kernel {
    entry: String,
    layout: Layout,
}

/// The forward and the two backward kernels (dQ; dK and dV) for a dtype and shape: the
/// tensor-core ones where `on_tensor_cores`, else the FMA ones, at the smallest head-dim limit
/// that holds head_dim (an error past the largest).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Kernels {
    forward: Kernel,
    dq: Kernel,
    dkdv: Kernel,
}

fn kernels(op: &'static str, dtype: DType, shape: AttentionShape) -> Result<Kernels> {
    let limit = head_dim_limit(op, shape)?;
    let kernel = |entry: String, layout| Kernel { entry, layout };
    Ok(if on_tensor_cores(dtype, shape.head_dim) {
        Kernels {
            forward: kernel(
                format!("attention_forward_mma_{limit}_bf16"),
                Layout::ForwardMma,
            ),
            dq: kernel(
                format!("attention_bwd_dq_mma_{limit}_bf16"),
                Layout::BackwardDqMma,
            ),
            dkdv: kernel(
                format!("attention_bwd_dkdv_mma_{limit}_bf16"),
                Layout::BackwardDkDvMma,
            ),
        }
    } else {
        let sfx = suffix(dtype);
        Kernels {
            forward: kernel(format!("attention_forward_{limit}_{sfx}"), Layout::Forward),
            dq: kernel(
                format!("attention_bwd_dq_{limit}_{sfx}"),
                Layout::BackwardDq,
            ),
            dkdv: kernel(
                format!("attention_bwd_dkdv_{limit}_{sfx}"),
                Layout::BackwardDkDv,
            ),
        }
    })
}

/// Bytes of dynamic shared memory of each kernel at `head_dim`, as `att_forward_shared_floats`,
/// `att_bwd_dq_shared_floats`, `att_bwd_dkdv_shared_floats` and the tensor-core kernels'
/// `att_forward_mma_layout`, `att_bwd_dq_mma_layout` and `att_bwd_dkdv_mma_layout` in the kernel
/// source lay them out; each kernel stops with a launch error if given less.
fn shared_bytes(layout: Layout, head_dim: usize) -> usize {
    // The FMA kernels: f32 rows padded to head_dim + 1 floats.
    let row = head_dim + 1;
    let floats = |n: usize| 4 * n;
    // The tensor-core kernels: arrays on 128-byte boundaries; Q, K, V, dO as bf16 rows of
    // head_dim + 8, the streamed ones in two stages; S and dP as f32 rows of keys + 4; P and dS
    // as bf16 rows of keys + 8 (the forward and dQ: 16 rows per warp, over 32-key chunks; dK/dV:
    // 16 keys per warp, over query chunks).
    let aligned = |bytes: usize| bytes.div_ceil(128) * 128;
    let bf16_rows = |rows: usize| aligned(rows * 2 * (head_dim + 8));
    let warp_f32_scores = |keys: usize| aligned(WARPS * TILE * 4 * (keys + 4));
    let warp_bf16_scores = |keys: usize| aligned(WARPS * TILE * 2 * (keys + 8));
    match layout {
        Layout::Forward => {
            floats((TILE + 2 * FORWARD_KEYS) * row + TILE * (FORWARD_KEYS + 1) + 3 * TILE)
        }
        Layout::BackwardDq => floats(4 * TILE * row + TILE * (TILE + 1)),
        Layout::BackwardDkDv => floats(4 * TILE * row + 2 * TILE * (TILE + 1) + 2 * TILE),
        // Q of the block's packed rows; K and V chunks x 2 stages; per warp an f32 scratch of
        // 16 rows of keys + 4 (S, the rescale, the output) and P.
        Layout::ForwardMma => {
            bf16_rows(BLOCK_ROWS)
                + 4 * bf16_rows(FORWARD_KEYS)
                + warp_f32_scores(FORWARD_KEYS)
                + warp_bf16_scores(FORWARD_KEYS)
        }
        // Q and dO of the block's packed rows; K and V chunks x 2 stages; per warp S and dP in
        // f32 (S's also the output scratch) and dS.
        Layout::BackwardDqMma => {
            2 * bf16_rows(BLOCK_ROWS)
                + 4 * bf16_rows(FORWARD_KEYS)
                + 2 * warp_f32_scores(FORWARD_KEYS)
                + warp_bf16_scores(FORWARD_KEYS)
        }
        // K and V of the block's keys; Q and dO chunks x 2 stages; per warp Sᵀ and dPᵀ in f32
        // (Sᵀ's also the output scratch), Pᵀ and dSᵀ; lse and D of a chunk x 2 stages.
        Layout::BackwardDkDvMma => {
            let chunk = dkdv_chunk(head_dim);
            2 * bf16_rows(dkdv_block_keys(head_dim))
                + 4 * bf16_rows(chunk)
                + 2 * warp_f32_scores(chunk)
                + 2 * warp_bf16_scores(chunk)
                + 4 * aligned(4 * chunk)
        }
        // att_decode_shared_floats: the group's Q rows and accumulators; K and V chunks; scores;
        // row max, sum and rescale factor per head.
        Layout::Decode { group } => {
            floats(2 * group * head_dim + 2 * FORWARD_KEYS * row + group * FORWARD_KEYS + 3 * group)
        }
    }
}

/// A launch of `grid` blocks of the attention kernel `f` with the shared memory of `layout`,
/// raising the kernel's dynamic shared-memory limit past the default where it needs more (every
/// kernel at head dims above 128, the tensor-core forward from 128, its dQ and dK/dV from 64); an
/// error naming both sizes if the device allows less.
pub(super) fn launch_config(
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

/// Work tiles `{segment, start, end}` on the device, and how many.
struct CudaTiles {
    list: CudaSlice<i32>,
    count: usize,
}

impl CudaTiles {
    fn upload(
        backend: &CudaBackend,
        op: &'static str,
        starts: &[usize],
        size: usize,
    ) -> Result<Self> {
        let list = tiles(op, starts, size)?;
        Ok(Self {
            count: list.len() / 3,
            list: upload(backend, &list)?,
        })
    }
}

/// A batch's segment starts and the kernels' query tiles over them, on the device: uploaded
/// once per batch ([`crate::batch::SegmentStarts`]) and read by every layer's forward and
/// backward. Two tilings, neither depending on the shape's heads: 16 rows (the FMA kernels) and
/// POS_TILE positions (the tensor-core kernels: the forward and dQ cut each tile's rows of a KV
/// head's group into blocks themselves, dK/dV each tile's keys).
pub(crate) struct CudaSegments {
    starts: CudaSlice<i32>,
    tiles: CudaTiles,
    position_tiles: CudaTiles,
}

impl CudaSegments {
    pub(crate) fn upload(backend: &CudaBackend, starts: &[usize]) -> Result<Self> {
        const OP: &str = "SegmentStarts::new";
        Ok(Self {
            starts: upload(backend, &starts_i32(OP, starts)?)?,
            tiles: CudaTiles::upload(backend, OP, starts, TILE)?,
            position_tiles: CudaTiles::upload(backend, OP, starts, POS_TILE)?,
        })
    }

    /// The tiles the kernel with `layout` works on.
    fn tiles_for(&self, layout: Layout) -> &CudaTiles {
        if layout.position_tiles() {
            &self.position_tiles
        } else {
            &self.tiles
        }
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
    let Kernels {
        forward: kernel, ..
    } = kernels(op, dtype, shape)?;
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
    let tiles = q_segments.tiles_for(kernel.layout);
    if tiles.count == 0 || heads == 0 {
        return Ok((out, lse));
    }
    let (qs, ks, tiles_dev) = (&q_segments.starts, kv_starts, &tiles.list);
    let (h_i, hkv_i, hd_i) = (
        to_i32(op, "heads", heads)?,
        to_i32(op, "kv_heads", kv_heads)?,
        to_i32(op, "head_dim", head_dim)?,
    );
    let f = backend.function(&kernels_cu::TRANSFORMER_ATTENTION, &kernel.entry)?;
    // Grid (tiles, H) for both families: a block per (16-row tile, head), or per (position
    // tile, KV head, a block of the group's packed rows).
    let config = launch_config(
        backend,
        op,
        &f,
        (tiles.count, heads),
        kernel.layout,
        head_dim,
    )?;
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
        // latter; the starts were checked to rise within the row counts, the tiles (the ones
        // the kernel's layout takes) lie inside them, head_dim is within the kernel's limit,
        // and the shared memory is the kernel's layout for head_dim.
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
    let Kernels {
        dq: dq_kernel,
        dkdv: dkdv_kernel,
        ..
    } = kernels(OP, dtype, shape)?;
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
    let (dq_tiles, dkdv_tiles) = (
        segments.tiles_for(dq_kernel.layout),
        segments.tiles_for(dkdv_kernel.layout),
    );
    // Both tilings are empty exactly when the batch has no tokens.
    if dkdv_tiles.count == 0 || heads == 0 {
        return Ok((dq, dk, dv));
    }
    let starts_dev = &segments.starts;
    let mut d_dev = workspace::<f32>(backend, t * heads)?;
    let (h_i, hkv_i, hd_i) = (
        to_i32(OP, "heads", heads)?,
        to_i32(OP, "kv_heads", kv_heads)?,
        to_i32(OP, "head_dim", head_dim)?,
    );
    let source = &kernels_cu::TRANSFORMER_ATTENTION;
    let dot = backend.function(source, &format!("attention_bwd_dot_{}", suffix(dtype)))?;
    let f_dq = backend.function(source, &dq_kernel.entry)?;
    let f_dkdv = backend.function(source, &dkdv_kernel.entry)?;
    let dq_config = launch_config(
        backend,
        OP,
        &f_dq,
        (dq_tiles.count, heads),
        dq_kernel.layout,
        head_dim,
    )?;
    let dkdv_config = launch_config(
        backend,
        OP,
        &f_dkdv,
        (
            dkdv_tiles.count,
            kv_heads * dkdv_kernel.layout.dkdv_blocks_per_tile(head_dim),
        ),
        dkdv_kernel.layout,
        head_dim,
    )?;

    let mut a = Args::new(backend);
    let (qp, kp, vp) = (
        a.read(OP, "Q", q)?,
        a.read(OP, "K", k)?,
        a.read(OP, "V", v)?,
    );
    let (op_, gp) = (a.read(OP, "O", out)?, a.read(OP, "dO", dout)?);
    let (lp, sp) = (a.read(OP, "lse", lse)?, a.slice(starts_dev));
    let (dq_tp, dkdv_tp) = (a.slice(&dq_tiles.list), a.slice(&dkdv_tiles.list));
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
        .arg(&dq_tp)
        .arg(&h_i)
        .arg(&hkv_i)
        .arg(&hd_i)
        .arg(&scale)
        .arg(&window);
    // SAFETY: matches attention_bwd_dq_hd*_* and attention_bwd_dq_mma_hd*_bf16 (const T* x4, const float* x2, T*, const int*, const
    // AttTile*, int x3, float, int); grid (query tiles, heads) over the tiles its layout takes,
    // the kernel's shared memory.
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
        .arg(&dkdv_tp)
        .arg(&h_i)
        .arg(&hkv_i)
        .arg(&hd_i)
        .arg(&scale)
        .arg(&window);
    // SAFETY: matches attention_bwd_dkdv_hd*_* and attention_bwd_dkdv_mma_hd*_bf16 (const T* x4, const float* x2, T*, T*, const int*,
    // const AttTile*, int x3, float, int); grid (key tiles, kv_heads · blocks per tile), key
    // tiles = the layout's query tiles, the kernel's shared memory.
    unsafe { b.launch(dkdv_config) }?;
    drop(a);
    Ok((dq, dk, dv))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUTS: [Layout; 6] = [
        Layout::Forward,
        Layout::BackwardDq,
        Layout::BackwardDkDv,
        Layout::ForwardMma,
        Layout::BackwardDqMma,
        Layout::BackwardDkDvMma,
    ];

    /// The FMA kernels stay within the default 48 KB up to head dim 128 (no attribute to raise);
    /// every kernel fits the H200's 227 KB per block at head dim 256, and two blocks fit a
    /// multiprocessor (228 KB, 1 KB of it reserved per block) at head dim 128 for all, at 256 for
    /// all but the packed-row dQ (Q and dO of 64 rows and two K/V stages: one block).
    #[test]
    fn shared_memory_fits_the_limits_at_every_head_dim() {
        let two_fit = |bytes: usize| 2 * (bytes + 1024) <= 228 * 1024;
        for layout in LAYOUTS {
            assert!(shared_bytes(layout, 256) <= 227 * 1024, "{layout:?}");
            assert!(two_fit(shared_bytes(layout, 128)), "{layout:?}");
            let one_block_at_256 = layout == Layout::BackwardDqMma;
            assert_eq!(
                two_fit(shared_bytes(layout, 256)),
                !one_block_at_256,
                "{layout:?}"
            );
            assert!(shared_bytes(layout, 64) < shared_bytes(layout, 256));
        }
        for layout in [Layout::Forward, Layout::BackwardDq, Layout::BackwardDkDv] {
            assert!(
                shared_bytes(layout, 128) <= DEFAULT_SHARED_BYTES,
                "{layout:?}"
            );
        }
    }

    /// The tensor-core dK/dV's blocks tile a position tile's keys exactly: one block of 64 keys
    /// up to head_dim 128, two of 32 past it; the FMA dK/dV takes one block per 16-row tile.
    #[test]
    fn dkdv_blocks_cover_a_position_tile() {
        for hd in [16, 64, 128, 144, 256] {
            let blocks = Layout::BackwardDkDvMma.dkdv_blocks_per_tile(hd);
            assert_eq!(blocks * dkdv_block_keys(hd), POS_TILE, "{hd}");
            assert_eq!(blocks, if hd > 128 { 2 } else { 1 }, "{hd}");
        }
        assert_eq!(Layout::BackwardDkDv.dkdv_blocks_per_tile(256), 1);
    }

    #[test]
    fn bf16_at_multiples_of_16_takes_the_tensor_cores_and_everything_else_the_fma_kernels() {
        let entries = |dtype, hd| {
            let k = kernels("test", dtype, AttentionShape::new(4, 2, hd)).unwrap();
            (
                [k.forward.entry, k.dq.entry, k.dkdv.entry],
                [k.forward.layout, k.dq.layout, k.dkdv.layout],
            )
        };
        let mma = [
            Layout::ForwardMma,
            Layout::BackwardDqMma,
            Layout::BackwardDkDvMma,
        ];
        let fma = [Layout::Forward, Layout::BackwardDq, Layout::BackwardDkDv];
        assert_eq!(
            entries(DType::BF16, 128),
            (
                [
                    "attention_forward_mma_hd128_bf16".to_string(),
                    "attention_bwd_dq_mma_hd128_bf16".to_string(),
                    "attention_bwd_dkdv_mma_hd128_bf16".to_string(),
                ],
                mma
            )
        );
        // 48 is a multiple of 16 under the limit 64.
        assert_eq!(
            entries(DType::BF16, 48).0[1],
            "attention_bwd_dq_mma_hd64_bf16"
        );
        assert_eq!(entries(DType::BF16, 256).1, mma);
        // Not a multiple of 16: the FMA kernels, in bf16.
        assert_eq!(
            entries(DType::BF16, 100),
            (
                [
                    "attention_forward_hd128_bf16".to_string(),
                    "attention_bwd_dq_hd128_bf16".to_string(),
                    "attention_bwd_dkdv_hd128_bf16".to_string(),
                ],
                fma
            )
        );
        // f32 never takes the tensor cores.
        assert_eq!(
            entries(DType::F32, 128),
            (
                [
                    "attention_forward_hd128_f32".to_string(),
                    "attention_bwd_dq_hd128_f32".to_string(),
                    "attention_bwd_dkdv_hd128_f32".to_string(),
                ],
                fma
            )
        );
        let err = kernels("test", DType::BF16, AttentionShape::new(2, 1, 272)).unwrap_err();
        assert!(err.to_string().contains("272"), "{err}");
    }

    /// `shared_bytes` against the kernel source's own layout functions, and the tensor-core
    /// dK/dV's blocks per tile against `att_dkdv_blocks_per_tile`, compiled for the host with the
    /// emulation shim (kernels-cu/emulate); skips without g++.
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
        std::printf("%d %d %d %d %d %d %d %d %d\n", 4 * att_forward_shared_floats(hd),
                    4 * att_bwd_dq_shared_floats(hd), 4 * att_bwd_dkdv_shared_floats(hd),
                    att_forward_mma_layout(hd, nullptr, nullptr),
                    att_bwd_dq_mma_layout(hd, nullptr, nullptr),
                    att_bwd_dkdv_mma_layout(hd, nullptr, nullptr),
                    4 * att_decode_shared_floats(hd, 1), 4 * att_decode_shared_floats(hd, 8),
                    att_dkdv_blocks_per_tile(hd));
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
                let decode = [1, 8].map(|group| Layout::Decode { group });
                let sizes: Vec<String> = LAYOUTS
                    .iter()
                    .chain(&decode)
                    .map(|&l| shared_bytes(l, hd).to_string())
                    .collect();
                let blocks = Layout::BackwardDkDvMma.dkdv_blocks_per_tile(hd);
                format!("{} {blocks}\n", sizes.join(" "))
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
