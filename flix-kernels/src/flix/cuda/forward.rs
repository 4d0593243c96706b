//! Launchers of the forward kernels (`kernels-cu/flix_forward.cu`): shrink (partials over a split
//! d_in, then the finish kernel that sums, scales and masks), expand, add_bias.

use cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};

use super::params::{self, FlixTypesParam, Split};
use super::{adapter_copies, adapter_params, dtype_mismatch, grid, to_i32, CudaPlan};
use crate::cuda::CudaBackend;
use crate::error::Result;
use crate::flix::{DevicePlan, LayerAdapters, Write};
use crate::{Storage, Tensor};

/// H = shrink(X), `h` `[T, R]` overwritten.
pub fn shrink(
    backend: &CudaBackend,
    plan: &DevicePlan,
    ad: &LayerAdapters,
    x: &Tensor,
    h: &mut Tensor,
) -> Result<()> {
    const OP: &str = "flix::shrink";
    let p = plan.plan();
    let d_in = x.shape()[1];
    params::check_limits(OP, p, d_in, 0)?;
    let cplan = plan.cuda_plan()?;
    if cplan.num_tiles == 0 {
        return Ok(()); // no tokens: H is [0, R]
    }
    let copies = adapter_copies(ad, x)?;
    let (param, _guards) = adapter_params(
        OP,
        backend.stream(),
        p,
        ad,
        copies.as_deref().map(Vec::as_slice),
    )?;
    let t = p.num_tokens();
    let source = &kernels_cu::FLIX_FORWARD;
    let mismatch = dtype_mismatch(OP, "X and H", &[x, h]);
    match (x.storage(), h.storage_mut()) {
        (Storage::CudaF32(x), Storage::CudaF32(h)) => {
            let entries = ("flix_shrink_f32", "flix_shrink_finish_f32");
            narrow(backend, cplan, &param, x, d_in, t, h, source, entries)
        }
        (Storage::CudaBf16(x), Storage::CudaBf16(h)) => {
            let entries = ("flix_shrink_bf16", "flix_shrink_finish_bf16");
            narrow(backend, cplan, &param, x, d_in, t, h, source, entries)
        }
        _ => Err(mismatch),
    }
}

/// The kernel pair of shrink: `partial` writes f32 partials of `out[t, c] = Σ_i
/// input[t, i] A_c[i]` over a split of d_in, then `finish` sums them in order, scales and zeroes
/// absent types into `out` `[T, R]`.
#[allow(clippy::too_many_arguments)]
pub(super) fn narrow<T: DeviceRepr, O: DeviceRepr>(
    backend: &CudaBackend,
    cplan: &CudaPlan,
    param: &FlixTypesParam,
    input: &CudaSlice<T>,
    d: usize,
    num_tokens: usize,
    out: &mut CudaSlice<O>,
    source: &kernels_cu::Source,
    (partial, finish): (&str, &str),
) -> Result<()> {
    const OP: &str = "flix::shrink";
    let stream = backend.stream();
    let r = param.total_rank as usize;
    let col_blocks = r.div_ceil(params::NARROW_COLS);
    let Split { nsplit, split_len } =
        params::split_long_dim(d, cplan.num_tiles * col_blocks, params::target_blocks());
    // SAFETY: the partial kernel writes every (split, token, column) that the finish kernel
    // reads: every token lies in exactly one tile and every column < R in one column block.
    let mut part = unsafe { stream.alloc::<f32>(nsplit * num_tokens * r) }?;
    let (d_i, t_i, split_i, nsplit_i) = (
        to_i32(OP, "long dimension", d)?,
        to_i32(OP, "T", num_tokens)?,
        to_i32(OP, "split length", split_len)?,
        to_i32(OP, "split count", nsplit)?,
    );
    let f = backend.function(source, partial)?;
    // SAFETY: argument list matches `flix_shrink_*`.
    unsafe {
        stream
            .launch_builder(&f)
            .arg(input)
            .arg(&d_i)
            .arg(param)
            .arg(&cplan.slots)
            .arg(&cplan.tiles)
            .arg(&mut part)
            .arg(&t_i)
            .arg(&split_i)
            .launch(grid(OP, cplan.num_tiles * col_blocks, 1, nsplit)?)?;
    }
    let f = backend.function(source, finish)?;
    // SAFETY: argument list matches `flix_shrink_finish_*`.
    unsafe {
        stream
            .launch_builder(&f)
            .arg(&part)
            .arg(&nsplit_i)
            .arg(&t_i)
            .arg(param)
            .arg(&cplan.slots)
            .arg(&cplan.tiles)
            .arg(out)
            .launch(grid(OP, cplan.num_tiles, 1, 1)?)?;
    }
    Ok(())
}

/// Y (= or +=) expand(H).
pub fn expand(
    backend: &CudaBackend,
    plan: &DevicePlan,
    ad: &LayerAdapters,
    h: &Tensor,
    y: &mut Tensor,
    write: Write,
) -> Result<()> {
    const OP: &str = "flix::expand";
    let p = plan.plan();
    let d_out = y.shape()[1];
    params::check_limits(OP, p, 0, d_out)?;
    let cplan = plan.cuda_plan()?;
    if cplan.num_tiles == 0 || d_out == 0 {
        return Ok(());
    }
    let copies = adapter_copies(ad, h)?;
    let (param, _guards) = adapter_params(
        OP,
        backend.stream(),
        p,
        ad,
        copies.as_deref().map(Vec::as_slice),
    )?;
    let mismatch = dtype_mismatch(OP, "H and Y", &[h, y]);
    match (h.storage(), y.storage_mut()) {
        (Storage::CudaF32(h), Storage::CudaF32(y)) => {
            let entry = (&kernels_cu::FLIX_FORWARD, "flix_expand_f32");
            wide(backend, cplan, &param, h, d_out, y, write, entry)
        }
        (Storage::CudaBf16(h), Storage::CudaBf16(y)) => {
            let entry = (&kernels_cu::FLIX_FORWARD, "flix_expand_bf16");
            wide(backend, cplan, &param, h, d_out, y, write, entry)
        }
        _ => Err(mismatch),
    }
}

/// Runs `entry`: `out[t, n] (= or +=) Σ_c lowrank[t, c] W_c[n]` over tiles x blocks of
/// [`params::WIDE_COLS`] columns.
/// Shared by expand (`flix_expand_*`, W = B) and dX (`flix_dx_*`, W = s_k A).
#[allow(clippy::too_many_arguments)]
pub(super) fn wide<L: DeviceRepr, T: DeviceRepr>(
    backend: &CudaBackend,
    cplan: &CudaPlan,
    param: &FlixTypesParam,
    lowrank: &CudaSlice<L>,
    n: usize,
    out: &mut CudaSlice<T>,
    write: Write,
    (source, entry): (&kernels_cu::Source, &str),
) -> Result<()> {
    const OP: &str = "flix::expand";
    let f = backend.function(source, entry)?;
    let n_i = to_i32(OP, "output width", n)?;
    let accumulate: i32 = (write == Write::Accumulate).into();
    // SAFETY: argument list matches `flix_expand_*` / `flix_dx_*`.
    unsafe {
        backend
            .stream()
            .launch_builder(&f)
            .arg(lowrank)
            .arg(&n_i)
            .arg(param)
            .arg(&cplan.slots)
            .arg(&cplan.tiles)
            .arg(out)
            .arg(&accumulate)
            .launch(grid(OP, cplan.num_tiles, n.div_ceil(params::WIDE_COLS), 1)?)?;
    }
    Ok(())
}

/// Y[t, o] += bias[o]; `y` `[T, d_out]`, `bias` `[d_out]`, same dtype (checked by the caller).
pub fn add_bias(backend: &CudaBackend, bias: &Tensor, y: &mut Tensor) -> Result<()> {
    const OP: &str = "flix::add_bias";
    let d_out = bias.numel();
    let n = y.numel();
    if n == 0 || d_out == 0 {
        return Ok(());
    }
    let (n_i, d_i) = (n as i64, to_i32(OP, "d_out", d_out)?);
    let blocks = n.div_ceil(params::THREADS as usize).min(65_535);
    let cfg = grid(OP, blocks, 1, 1)?;
    let stream = backend.stream();
    let mismatch = dtype_mismatch(OP, "bias and Y", &[bias, y]);
    match (bias.storage(), y.storage_mut()) {
        (Storage::CudaF32(b), Storage::CudaF32(y)) => {
            let f = backend.function(&kernels_cu::FLIX_FORWARD, "flix_add_bias_f32")?;
            // SAFETY: matches `flix_add_bias_f32(float* y, const float* bias, long long n, int)`.
            unsafe {
                stream
                    .launch_builder(&f)
                    .arg(y)
                    .arg(b)
                    .arg(&n_i)
                    .arg(&d_i)
                    .launch(cfg)?;
            }
        }
        (Storage::CudaBf16(b), Storage::CudaBf16(y)) => {
            let f = backend.function(&kernels_cu::FLIX_FORWARD, "flix_add_bias_bf16")?;
            // SAFETY: matches `flix_add_bias_bf16(bf16* y, const bf16* bias, long long n, int)`.
            unsafe {
                stream
                    .launch_builder(&f)
                    .arg(y)
                    .arg(b)
                    .arg(&n_i)
                    .arg(&d_i)
                    .launch(cfg)?;
            }
        }
        _ => return Err(mismatch),
    }
    Ok(())
}
