//! Launchers of the backward kernels (`kernels-cu/flix_backward.cu`): dH (f32, through the
//! shrink kernel pair with B in place of A), dX (through the expand kernel with s_k A), and the
//! weight gradients as per-segment f32 partials reduced in the plan's CSR order.

use cudarc::driver::{CudaSlice, DeviceRepr, PushKernelArg};

use super::forward::{narrow, wide};
use super::params::{self, FlixTypesParam};
use super::{adapter_params, dtype_mismatch, f32_slice_mut, grid, to_i32, CudaPlan};
use crate::cuda::CudaBackend;
use crate::error::Result;
use crate::flix::{AdapterGrads, DevicePlan, LayerAdapters, Write};
use crate::{Storage, Tensor};

const OP: &str = "flix::backward";

/// dA and dB added into `grads`; dX written or added when given.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    backend: &CudaBackend,
    plan: &DevicePlan,
    ad: &LayerAdapters,
    x: &Tensor,
    h: &Tensor,
    dy: &Tensor,
    dx: Option<&mut Tensor>,
    dx_write: Write,
    grads: &mut AdapterGrads,
) -> Result<()> {
    let p = plan.plan();
    let (d_in, d_out) = (x.shape()[1], dy.shape()[1]);
    params::check_limits(OP, p, d_in, d_out)?;
    let cplan = plan.cuda_plan()?;
    if cplan.num_tiles == 0 {
        return Ok(()); // no tokens: nothing to add, dX is [0, d_in]
    }
    let stream = backend.stream();
    let (param, guards) = adapter_params(OP, stream, p, ad)?;
    let (t, r) = (p.num_tokens(), p.total_rank());
    let source = &kernels_cu::FLIX_BACKWARD;

    // dH [T, R] in f32: it feeds both dX and dA, and is small (T x R).
    // SAFETY: the finish kernel writes every element (every token is in one tile).
    let mut dh = unsafe { stream.alloc::<f32>(t * r) }?;
    let mismatch = dtype_mismatch(OP, "X, H, dY", &[x, h, dy]);
    match dy.storage() {
        Storage::CudaF32(dy) => {
            let entries = ("flix_dh_partial_f32", "flix_dh_finish_f32");
            narrow(
                backend, cplan, &param, dy, d_out, t, &mut dh, source, entries,
            )?
        }
        Storage::CudaBf16(dy) => {
            let entries = ("flix_dh_partial_bf16", "flix_dh_finish_f32");
            narrow(
                backend, cplan, &param, dy, d_out, t, &mut dh, source, entries,
            )?
        }
        Storage::Cpu(_) => return Err(mismatch),
    }
    let mismatch = dtype_mismatch(OP, "X, H, dY", &[x, h, dy]);

    if let Some(dx) = dx {
        let mismatch = dtype_mismatch(OP, "X and dX", &[x, dx]);
        match dx.storage_mut() {
            Storage::CudaF32(out) => {
                let entry = (source, "flix_dx_f32");
                wide(backend, cplan, &param, &dh, d_in, out, dx_write, entry)?
            }
            Storage::CudaBf16(out) => {
                let entry = (source, "flix_dx_bf16");
                wide(backend, cplan, &param, &dh, d_in, out, dx_write, entry)?
            }
            Storage::Cpu(_) => return Err(mismatch),
        }
    }
    drop(guards);

    match (x.storage(), h.storage(), dy.storage()) {
        (Storage::CudaF32(x), Storage::CudaF32(h), Storage::CudaF32(dy)) => {
            let names = ("flix_db_partial_f32", "flix_da_partial_f32");
            weight_grads(backend, plan, cplan, &param, x, h, dy, &dh, grads, names)
        }
        (Storage::CudaBf16(x), Storage::CudaBf16(h), Storage::CudaBf16(dy)) => {
            let names = ("flix_db_partial_bf16", "flix_da_partial_bf16");
            weight_grads(backend, plan, cplan, &param, x, h, dy, &dh, grads, names)
        }
        _ => Err(mismatch),
    }
}

/// Which gradient a reduce writes, and where a value's block lives in the partials.
struct ReduceLayout {
    /// Rows x cols of one value's gradient block.
    rows: usize,
    cols: usize,
    /// Row length of one segment's partial, and the offsets of type k's block inside it.
    part_ld: usize,
    row_off: usize,
    col_off: usize,
    scale: f32,
}

/// dB_{k,v} += Σ_{s uses v} P_s with P_s = dY_sᵀ H_s `[d_out, R]`, and dA_{k,v} += s_k Σ Q_s with
/// Q_s = dH_sᵀ X_s `[R, d_in]`, over groups of segments whose partials fit the workspace budget.
#[allow(clippy::too_many_arguments)]
fn weight_grads<T: DeviceRepr>(
    backend: &CudaBackend,
    plan: &DevicePlan,
    cplan: &CudaPlan,
    param: &FlixTypesParam,
    x: &CudaSlice<T>,
    h: &CudaSlice<T>,
    dy: &CudaSlice<T>,
    dh: &CudaSlice<f32>,
    grads: &mut AdapterGrads,
    (db_entry, da_entry): (&str, &str),
) -> Result<()> {
    let p = plan.plan();
    let (r, num_segments) = (p.total_rank(), p.num_segments());
    let d_in = x.len() / p.num_tokens();
    let d_out = dy.len() / p.num_tokens();
    let stream = backend.stream();

    // dB: partials [group, d_out, R] from (dY, H); dA: partials [group, R, d_in] from (dH, X).
    let budget = params::partial_budget();
    for which in [Grad::B, Grad::A] {
        let (lm, ln) = match which {
            Grad::B => (d_out, r),
            Grad::A => (r, d_in),
        };
        let per_segment = lm * ln;
        let groups = params::segment_groups(num_segments, per_segment * 4, budget);
        let largest = groups.iter().map(|g| g.len()).max().unwrap_or(0);
        if largest == 0 || per_segment == 0 {
            continue;
        }
        // SAFETY: every non-empty segment's block is written by the partial kernel before the
        // reduce reads it; the reduce reads only segments the plan lists as users, which are
        // non-empty, and only those inside the current group.
        let mut part = unsafe { stream.alloc::<f32>(largest * per_segment) }?;
        for group in groups {
            let s0 = to_i32(OP, "segment", group.start)?;
            let s1 = to_i32(OP, "segment", group.end)?;
            match which {
                Grad::B => seg_outer(
                    backend,
                    cplan,
                    db_entry,
                    (dy, d_out),
                    (h, r),
                    s0,
                    group.len(),
                    &mut part,
                )?,
                Grad::A => seg_outer(
                    backend,
                    cplan,
                    da_entry,
                    (dh, r),
                    (x, d_in),
                    s0,
                    group.len(),
                    &mut part,
                )?,
            }

            for (k, shape) in p.types().iter().enumerate() {
                let (col_off, rank) = (p.col_offsets()[k], shape.rank);
                let layout = match which {
                    Grad::B => ReduceLayout {
                        rows: d_out,
                        cols: rank,
                        part_ld: r,
                        row_off: 0,
                        col_off,
                        scale: 1.0,
                    },
                    Grad::A => ReduceLayout {
                        rows: rank,
                        cols: d_in,
                        part_ld: d_in,
                        row_off: col_off,
                        col_off: 0,
                        scale: param.scale[k],
                    },
                };
                let grad = match which {
                    Grad::B => f32_slice_mut(OP, "dB", &mut grads.db[k])?,
                    Grad::A => f32_slice_mut(OP, "dA", &mut grads.da[k])?,
                };
                let value_base = p.value_base()[k];
                let span = (shape.num_values, value_base, s0, s1, per_segment);
                reduce(backend, cplan, grad, &part, &layout, span)?;
            }
        }
    }
    Ok(())
}

/// `out[s - s0, m, n] = Σ_{t in s} left[t, m] right[t, n]` for the `count` segments from `s0`.
#[allow(clippy::too_many_arguments)]
fn seg_outer<L: DeviceRepr, R: DeviceRepr>(
    backend: &CudaBackend,
    cplan: &CudaPlan,
    entry: &str,
    (left, lm): (&CudaSlice<L>, usize),
    (right, ln): (&CudaSlice<R>, usize),
    s0: i32,
    count: usize,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    let f = backend.function(&kernels_cu::FLIX_BACKWARD, entry)?;
    let (lm_i, ln_i) = (to_i32(OP, "rows", lm)?, to_i32(OP, "cols", ln)?);
    let cfg = grid(
        OP,
        count,
        lm.div_ceil(params::OUTER_BLOCK),
        ln.div_ceil(params::OUTER_BLOCK),
    )?;
    // SAFETY: matches `flix_db_partial_*` / `flix_da_partial_*(L, LM, R, LN, seg_starts, s0,
    // out)`; `out` holds at least count x lm x ln floats.
    unsafe {
        backend
            .stream()
            .launch_builder(&f)
            .arg(left)
            .arg(&lm_i)
            .arg(right)
            .arg(&ln_i)
            .arg(&cplan.segment_starts)
            .arg(&s0)
            .arg(out)
            .launch(cfg)?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Grad {
    A,
    B,
}

/// One `flix_grad_reduce_f32` launch for one type: every value's block, every element.
fn reduce(
    backend: &CudaBackend,
    cplan: &CudaPlan,
    grad: &mut CudaSlice<f32>,
    part: &CudaSlice<f32>,
    l: &ReduceLayout,
    (num_values, value_base, s0, s1, part_seg_stride): (usize, usize, i32, i32, usize),
) -> Result<()> {
    let elems = l.rows * l.cols;
    if num_values == 0 || elems == 0 {
        return Ok(());
    }
    let f = backend.function(&kernels_cu::FLIX_BACKWARD, "flix_grad_reduce_f32")?;
    let cfg = grid(
        OP,
        elems.div_ceil(params::THREADS as usize),
        num_values.min(65_535),
        1,
    )?;
    let ints = [
        to_i32(OP, "values", num_values)?,
        to_i32(OP, "rows", l.rows)?,
        to_i32(OP, "cols", l.cols)?,
        to_i32(OP, "partial row length", l.part_ld)?,
        to_i32(OP, "row offset", l.row_off)?,
        to_i32(OP, "column offset", l.col_off)?,
        to_i32(OP, "value base", value_base)?,
    ];
    let stride = part_seg_stride as i64;
    // SAFETY: matches `flix_grad_reduce_f32(grad, num_values, rows, cols, part,
    // part_seg_stride, part_ld, row_off, col_off, users_ptr, users, value_base, s0, s1, scale)`;
    // `grad` holds num_values x rows x cols floats (checked upstream against the adapters).
    unsafe {
        backend
            .stream()
            .launch_builder(&f)
            .arg(grad)
            .arg(&ints[0])
            .arg(&ints[1])
            .arg(&ints[2])
            .arg(part)
            .arg(&stride)
            .arg(&ints[3])
            .arg(&ints[4])
            .arg(&ints[5])
            .arg(&cplan.users_ptr)
            .arg(&cplan.users)
            .arg(&ints[6])
            .arg(&s0)
            .arg(&s1)
            .arg(&l.scale)
            .launch(cfg)?;
    }
    Ok(())
}
