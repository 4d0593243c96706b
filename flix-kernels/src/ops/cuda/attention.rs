//! Launchers of `transformer_attention.cu`: causal GQA attention over packed segments, forward
//! (also the cached decode step) and backward. Shapes and segment starts are checked by the op
//! functions in `ops/attention.rs`; here: one device, one dtype, head_dim within the kernels'
//! limit, then the launches.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::Args;
use super::{blocks, grid_stride, same_device_and_dtype, suffix, tiles, to_i32, upload, workspace};
use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use crate::ops::attention::AttentionShape;
use crate::{Device, Tensor};

/// Rows per tile (ATT_TILE and ATT_BK_BWD in the kernel source).
const TILE: usize = 16;
/// Largest head_dim the kernels hold in shared memory (ATT_HD).
const MAX_HEAD_DIM: usize = 128;
const THREADS: u32 = 128;

fn check_head_dim(op: &'static str, shape: AttentionShape) -> Result<()> {
    if shape.head_dim > MAX_HEAD_DIM {
        return Err(KernelError::Invalid {
            op,
            message: format!(
                "head_dim {} is more than the CUDA kernels' limit of {MAX_HEAD_DIM}",
                shape.head_dim
            ),
        });
    }
    let default_scale = 1.0 / (shape.head_dim as f32).sqrt();
    if shape.window.is_some() || shape.scale != default_scale {
        return Err(KernelError::Invalid {
            op,
            message: format!(
                "{shape:?}: the CUDA kernels support neither a sliding window nor a scale other \
                 than 1/sqrt(head_dim) yet"
            ),
        });
    }
    Ok(())
}

fn starts_i32(op: &'static str, starts: &[usize]) -> Result<Vec<i32>> {
    starts
        .iter()
        .map(|&s| to_i32(op, "segment start", s))
        .collect()
}

/// O and lse for queries `q_starts` against keys `kv_starts` (equal for self-attention).
fn forward(
    backend: &Arc<CudaBackend>,
    op: &'static str,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    q_starts: &[usize],
    kv_starts: &[usize],
    shape: AttentionShape,
) -> Result<(Tensor, CudaSlice<f32>)> {
    let dtype = same_device_and_dtype(op, backend, &[("Q", q), ("K", k), ("V", v)])?;
    check_head_dim(op, shape)?;
    let tq = q.shape()[0];
    let AttentionShape {
        heads,
        kv_heads,
        head_dim,
        ..
    } = shape;
    let mut out = Tensor::zeros(
        &Device::Cuda(backend.clone()),
        dtype,
        &[tq, heads * head_dim],
    )?;
    let mut lse = workspace::<f32>(backend, tq * heads)?;
    let tile_list = tiles(op, q_starts, TILE)?;
    let num_tiles = tile_list.len() / 3;
    if num_tiles == 0 || heads == 0 {
        return Ok((out, lse));
    }
    let (qs, ks) = (
        upload(backend, &starts_i32(op, q_starts)?)?,
        upload(backend, &starts_i32(op, kv_starts)?)?,
    );
    let tiles_dev = upload(backend, &tile_list)?;
    let (h_i, hkv_i, hd_i) = (
        to_i32(op, "heads", heads)?,
        to_i32(op, "kv_heads", kv_heads)?,
        to_i32(op, "head_dim", head_dim)?,
    );
    let scale = 1.0 / (head_dim as f32).sqrt();
    let f = backend.function(
        &kernels_cu::TRANSFORMER_ATTENTION,
        &format!("attention_forward_{}", suffix(dtype)),
    )?;
    {
        let mut a = Args::new(backend);
        let (qp, kp, vp) = (
            a.read(op, "Q", q)?,
            a.read(op, "K", k)?,
            a.read(op, "V", v)?,
        );
        let op_ = a.write(op, "O", &mut out)?;
        let lp = a.slice_mut(&mut lse);
        let (qsp, ksp, tp) = (a.slice(&qs), a.slice(&ks), a.slice(&tiles_dev));
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
            .arg(&scale);
        // SAFETY: matches attention_forward_*(const T* x3, T*, float*, const int* x2, const
        // AttTile*, int x3, float); the starts were checked to rise within the row counts, the
        // tiles lie inside them, head_dim <= ATT_HD.
        unsafe { b.launch(blocks(op, (num_tiles, heads), THREADS)?) }?;
    }
    Ok((out, lse))
}

/// Returns (O, lse) like the CPU path.
pub fn attention_forward(
    backend: &Arc<CudaBackend>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    starts: &[usize],
    shape: AttentionShape,
) -> Result<(Tensor, Vec<f32>)> {
    const OP: &str = "attention_forward";
    let (out, lse) = forward(backend, OP, (q, k, v), starts, starts, shape)?;
    let mut host = backend.stream().clone_dtoh(&lse)?;
    host.truncate(q.shape()[0] * shape.heads);
    Ok((out, host))
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
    Ok(forward(backend, OP, (q, k, v), q_starts, kv_starts, shape)?.0)
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
    lse: &[f32],
    starts: &[usize],
    shape: AttentionShape,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "attention_backward";
    let dtype = same_device_and_dtype(
        OP,
        backend,
        &[("Q", q), ("K", k), ("V", v), ("O", out), ("dO", dout)],
    )?;
    check_head_dim(OP, shape)?;
    let AttentionShape {
        heads,
        kv_heads,
        head_dim,
        ..
    } = shape;
    let t = q.shape()[0];
    let device = Device::Cuda(backend.clone());
    let mut dq = Tensor::zeros(&device, dtype, &[t, heads * head_dim])?;
    let mut dk = Tensor::zeros(&device, dtype, &[t, kv_heads * head_dim])?;
    let mut dv = Tensor::zeros(&device, dtype, &[t, kv_heads * head_dim])?;
    let tile_list = tiles(OP, starts, TILE)?;
    let num_tiles = tile_list.len() / 3;
    if num_tiles == 0 || heads == 0 {
        return Ok((dq, dk, dv));
    }
    let starts_dev = upload(backend, &starts_i32(OP, starts)?)?;
    let tiles_dev = upload(backend, &tile_list)?;
    let lse_dev = upload(backend, lse)?;
    let mut d_dev = workspace::<f32>(backend, t * heads)?;
    let (h_i, hkv_i, hd_i) = (
        to_i32(OP, "heads", heads)?,
        to_i32(OP, "kv_heads", kv_heads)?,
        to_i32(OP, "head_dim", head_dim)?,
    );
    let scale = 1.0 / (head_dim as f32).sqrt();
    let sfx = suffix(dtype);
    let source = &kernels_cu::TRANSFORMER_ATTENTION;
    let dot = backend.function(source, &format!("attention_bwd_dot_{sfx}"))?;
    let f_dq = backend.function(source, &format!("attention_bwd_dq_{sfx}"))?;
    let f_dkdv = backend.function(source, &format!("attention_bwd_dkdv_{sfx}"))?;

    let mut a = Args::new(backend);
    let (qp, kp, vp) = (
        a.read(OP, "Q", q)?,
        a.read(OP, "K", k)?,
        a.read(OP, "V", v)?,
    );
    let (op_, gp) = (a.read(OP, "O", out)?, a.read(OP, "dO", dout)?);
    let (lp, sp, tp) = (a.slice(&lse_dev), a.slice(&starts_dev), a.slice(&tiles_dev));
    let dp = a.slice_mut(&mut d_dev);
    let (dqp, dkp, dvp) = (
        a.write(OP, "dQ", &mut dq)?,
        a.write(OP, "dK", &mut dk)?,
        a.write(OP, "dV", &mut dv)?,
    );
    let rows = (t * heads) as i64;
    let mut b = backend.stream().launch_builder(&dot);
    b.arg(&gp)
        .arg(&op_)
        .arg(&dp)
        .arg(&h_i)
        .arg(&hd_i)
        .arg(&rows);
    // SAFETY: matches attention_bwd_dot_*(const T*, const T*, float*, int, int, long long);
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
        .arg(&scale);
    // SAFETY: matches attention_bwd_dq_*(const T* x4, const float* x2, T*, const int*, const
    // AttTile*, int x3, float); grid (query tiles, heads).
    unsafe { b.launch(blocks(OP, (num_tiles, heads), THREADS)?) }?;

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
        .arg(&scale);
    // SAFETY: matches attention_bwd_dkdv_*(const T* x4, const float* x2, T*, T*, const int*,
    // const AttTile*, int x3, float); grid (key tiles, kv_heads), key tiles = query tiles.
    unsafe { b.launch(blocks(OP, (num_tiles, kv_heads), THREADS)?) }?;
    drop(a);
    Ok((dq, dk, dv))
}
