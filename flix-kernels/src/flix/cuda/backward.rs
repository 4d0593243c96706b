//! Launchers of the backward kernels (`kernels-cu/flix_backward.cu`): dH and dB in one pass over
//! dY (`flix_dh_db_*`, dH as f32 partials over a split of d_out summed by `flix_dh_finish_f32`),
//! dX (through the expand kernel with s_k A), and dA in one pass over X (`flix_da_*`). The weight
//! gradients are summed per run of tiles inside the blocks and flushed once per stretch
//! ([`params::run_flushes`]): straight into the gradient for a value's only stretch, otherwise to
//! partial slots that `flix_grad_reduce_f32` adds into the gradients in the plan's slot order.

use std::ops::Range;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut, DeviceRepr, PushKernelArg, SyncOnDrop};

use super::forward::wide;
use super::params::{self, FlixGradsParam, FlixTypesParam, Split};
use super::{
    adapter_copies, adapter_params, dtype_mismatch, f32_slice_mut, grid, to_i32, CudaPlan,
};
use crate::cuda::CudaBackend;
use crate::error::Result;
use crate::flix::{AdapterGrads, DevicePlan, LayerAdapters, Write};
use crate::{Storage, Tensor};
use flix_core::BatchPlan;

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
    let one_dtype = matches!(
        (x.storage(), h.storage(), dy.storage()),
        (
            Storage::CudaF32(_),
            Storage::CudaF32(_),
            Storage::CudaF32(_)
        ) | (
            Storage::CudaBf16(_),
            Storage::CudaBf16(_),
            Storage::CudaBf16(_)
        )
    );
    if !one_dtype {
        return Err(dtype_mismatch(OP, "X, H, dY", &[x, h, dy]));
    }
    let stream = backend.stream();
    let copies = adapter_copies(ad, x)?;
    let (param, guards) = adapter_params(OP, stream, p, ad, copies.as_deref().map(Vec::as_slice))?;
    let run = RunGrads {
        backend,
        plan: p,
        cplan,
        param: &param,
    };

    // dH [T, R] in f32: it feeds both dX and dA, and is small (T x R).
    // SAFETY: the finish kernel writes every element (every token is in one tile).
    let mut dh = unsafe { stream.alloc::<f32>(p.num_tokens() * p.total_rank()) }?;
    let mismatch = dtype_mismatch(OP, "X, H, dY", &[x, h, dy]);
    match (h.storage(), dy.storage()) {
        (Storage::CudaF32(h), Storage::CudaF32(dy)) => {
            run.dh_and_db(dy, d_out, h, &mut dh, &mut grads.db, "flix_dh_db_f32")?
        }
        (Storage::CudaBf16(h), Storage::CudaBf16(dy)) => {
            run.dh_and_db(dy, d_out, h, &mut dh, &mut grads.db, "flix_dh_db_bf16")?
        }
        _ => return Err(mismatch),
    }

    if let Some(dx) = dx {
        let mismatch = dtype_mismatch(OP, "X and dX", &[x, dx]);
        let source = &kernels_cu::FLIX_BACKWARD;
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
    // dA reads no adapters.
    drop(guards);
    drop(copies);

    let mismatch = dtype_mismatch(OP, "X, H, dY", &[x, h, dy]);
    match x.storage() {
        Storage::CudaF32(x) => run.da(&dh, x, d_in, &mut grads.da, "flix_da_f32"),
        Storage::CudaBf16(x) => run.da(&dh, x, d_in, &mut grads.da, "flix_da_bf16"),
        Storage::Cpu(_) => Err(mismatch),
    }
}

/// What every weight-gradient launch of one backward shares.
struct RunGrads<'a> {
    backend: &'a CudaBackend,
    plan: &'a BatchPlan,
    cplan: &'a CudaPlan,
    param: &'a FlixTypesParam,
}

/// Which gradient a reduce writes, and where a value's block lives in a partial slot.
struct ReduceLayout {
    /// Rows x cols of one value's gradient block.
    rows: usize,
    cols: usize,
    /// Row length of one slot, and the offsets of type k's block inside it.
    part_ld: usize,
    row_off: usize,
    col_off: usize,
    scale: f32,
}

impl RunGrads<'_> {
    /// Blocks of 32 columns of H: a weight-gradient launch has one block per run and column
    /// block in grid x.
    fn col_blocks(&self) -> usize {
        self.plan.total_rank().div_ceil(params::NARROW_COLS)
    }

    /// One pass over dY: `dh` = dY Bᵀ per type (written; 0 for absent types) and dB_{k,v} +=
    /// Σ_{t using v} dY[t]ᵀ H_k[t], by groups of runs whose dB slots (d_out x R f32 each) fit the
    /// workspace budget.
    fn dh_and_db<T: DeviceRepr>(
        &self,
        dy: &CudaSlice<T>,
        d_out: usize,
        h: &CudaSlice<T>,
        dh: &mut CudaSlice<f32>,
        db: &mut [Tensor],
        entry: &str,
    ) -> Result<()> {
        let (p, cplan) = (self.plan, self.cplan);
        let (t, r) = (p.num_tokens(), p.total_rank());
        let stream = self.backend.stream();
        let blocks = cplan.run_start.len().saturating_sub(1) * self.col_blocks();
        let Split { nsplit, split_len } =
            params::split_long_dim(d_out, blocks, params::target_blocks());
        // SAFETY: every (split, token, column < R) is written by the block of its run, column
        // block and split before the finish kernel reads it.
        let mut dh_part = unsafe { stream.alloc::<f32>(nsplit * t * r) }?;
        let per_slot = d_out * r;
        let f = self.backend.function(&kernels_cu::FLIX_BACKWARD, entry)?;
        let ints = [
            to_i32(OP, "d_out", d_out)?,
            to_i32(OP, "tiles", cplan.num_tiles)?,
            to_i32(OP, "T", t)?,
            to_i32(OP, "split length", split_len)?,
        ];
        self.by_groups(per_slot, |runs, slots, part| {
            let cfg = grid(OP, runs.len() * self.col_blocks(), 1, nsplit)?;
            let (q0, f0) = (
                to_i32(OP, "run", runs.start)?,
                to_i32(OP, "slot", slots.start)?,
            );
            {
                let (db_ptrs, _guards) = grad_ptrs(stream, db, "dB")?;
                // SAFETY: matches `flix_dh_db_*(dY, d_out, H, p, slots, tiles, num_tiles, q0,
                // flush, f0, dh_part, num_tokens, split_len, db_part, db)`; `part` holds the
                // group's slots, `db_ptrs` every type's dB (checked upstream against the adapters).
                unsafe {
                    stream
                        .launch_builder(&f)
                        .arg(dy)
                        .arg(&ints[0])
                        .arg(h)
                        .arg(self.param)
                        .arg(&cplan.slots)
                        .arg(&cplan.tiles)
                        .arg(&ints[1])
                        .arg(&q0)
                        .arg(&cplan.flush)
                        .arg(&f0)
                        .arg(&mut dh_part)
                        .arg(&ints[2])
                        .arg(&ints[3])
                        .arg(&mut *part)
                        .arg(&db_ptrs)
                        .launch(cfg)?;
                }
            }
            for (k, shape) in p.types().iter().enumerate() {
                let layout = ReduceLayout {
                    rows: d_out,
                    cols: shape.rank,
                    part_ld: r,
                    row_off: 0,
                    col_off: p.col_offsets()[k],
                    scale: 1.0,
                };
                let grad = f32_slice_mut(OP, "dB", &mut db[k])?;
                self.reduce(grad, part, &layout, k, slots.clone(), per_slot)?;
            }
            Ok(())
        })?;

        let f = self
            .backend
            .function(&kernels_cu::FLIX_BACKWARD, "flix_dh_finish_f32")?;
        let nsplit_i = to_i32(OP, "split count", nsplit)?;
        // SAFETY: matches `flix_dh_finish_f32(part, nsplit, num_tokens, p, slots, tiles, dH)`;
        // `dh` holds T x R floats.
        unsafe {
            stream
                .launch_builder(&f)
                .arg(&dh_part)
                .arg(&nsplit_i)
                .arg(&ints[2])
                .arg(self.param)
                .arg(&cplan.slots)
                .arg(&cplan.tiles)
                .arg(dh)
                .launch(grid(OP, cplan.num_tiles, 1, 1)?)?;
        }
        Ok(())
    }

    /// One pass over X: dA_{k,v} += s_k Σ_{t using v} dH_k[t]ᵀ X[t], by groups of runs whose dA
    /// slots (R x d_in f32 each) fit the workspace budget. d_in is split only to spread the
    /// work: each split writes its own columns.
    fn da<T: DeviceRepr>(
        &self,
        dh: &CudaSlice<f32>,
        x: &CudaSlice<T>,
        d_in: usize,
        da: &mut [Tensor],
        entry: &str,
    ) -> Result<()> {
        let (p, cplan) = (self.plan, self.cplan);
        let r = p.total_rank();
        let stream = self.backend.stream();
        let blocks = cplan.run_start.len().saturating_sub(1) * self.col_blocks();
        let Split { nsplit, split_len } =
            params::split_long_dim(d_in, blocks, params::target_blocks());
        let per_slot = r * d_in;
        let f = self.backend.function(&kernels_cu::FLIX_BACKWARD, entry)?;
        let ints = [
            to_i32(OP, "d_in", d_in)?,
            to_i32(OP, "tiles", cplan.num_tiles)?,
            to_i32(OP, "split length", split_len)?,
        ];
        self.by_groups(per_slot, |runs, slots, part| {
            let cfg = grid(OP, runs.len() * self.col_blocks(), 1, nsplit)?;
            let (q0, f0) = (
                to_i32(OP, "run", runs.start)?,
                to_i32(OP, "slot", slots.start)?,
            );
            {
                let (da_ptrs, _guards) = grad_ptrs(stream, da, "dA")?;
                // SAFETY: matches `flix_da_*(dH, X, d_in, p, slots, tiles, num_tiles, q0, flush,
                // f0, split_len, da_part, da)`; `part` holds the group's slots, `da_ptrs` every
                // type's dA (checked upstream against the adapters).
                unsafe {
                    stream
                        .launch_builder(&f)
                        .arg(dh)
                        .arg(x)
                        .arg(&ints[0])
                        .arg(self.param)
                        .arg(&cplan.slots)
                        .arg(&cplan.tiles)
                        .arg(&ints[1])
                        .arg(&q0)
                        .arg(&cplan.flush)
                        .arg(&f0)
                        .arg(&ints[2])
                        .arg(&mut *part)
                        .arg(&da_ptrs)
                        .launch(cfg)?;
                }
            }
            for (k, shape) in p.types().iter().enumerate() {
                let layout = ReduceLayout {
                    rows: shape.rank,
                    cols: d_in,
                    part_ld: d_in,
                    row_off: p.col_offsets()[k],
                    col_off: 0,
                    scale: self.param.scale[k],
                };
                let grad = f32_slice_mut(OP, "dA", &mut da[k])?;
                self.reduce(grad, part, &layout, k, slots.clone(), per_slot)?;
            }
            Ok(())
        })
    }

    /// Runs `each(runs, slots, workspace)` for each group of runs ([`params::run_groups`]) whose
    /// partial slots of `per_slot` floats fit the workspace budget: the pass over the group's
    /// runs, then the reduce of its slots.
    fn by_groups(
        &self,
        per_slot: usize,
        mut each: impl FnMut(Range<usize>, Range<usize>, &mut CudaSlice<f32>) -> Result<()>,
    ) -> Result<()> {
        let run_start = &self.cplan.run_start;
        let groups = params::run_groups(run_start, per_slot * 4, params::partial_budget());
        let largest = groups
            .iter()
            .map(|g| run_start[g.end] - run_start[g.start])
            .max()
            .unwrap_or(0);
        // SAFETY: the pass writes, in each slot of its group, the columns of every type that
        // flushes there; the reduce reads only those (the slot lists of their values).
        let mut part = unsafe {
            self.backend
                .stream()
                .alloc::<f32>((largest * per_slot).max(1))
        }?;
        for group in groups {
            let slots = run_start[group.start]..run_start[group.end];
            each(group, slots, &mut part)?;
        }
        Ok(())
    }

    /// One `flix_grad_reduce_f32` launch for type `k`: every value's block, every element, over
    /// the partial slots `slots` of the current group.
    fn reduce(
        &self,
        grad: &mut CudaSlice<f32>,
        part: &CudaSlice<f32>,
        l: &ReduceLayout,
        k: usize,
        slots: Range<usize>,
        part_slot_stride: usize,
    ) -> Result<()> {
        let num_values = self.plan.types()[k].num_values;
        let elems = l.rows * l.cols;
        if num_values == 0 || elems == 0 || slots.is_empty() {
            return Ok(());
        }
        let f = self
            .backend
            .function(&kernels_cu::FLIX_BACKWARD, "flix_grad_reduce_f32")?;
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
            to_i32(OP, "value base", self.plan.value_base()[k])?,
            to_i32(OP, "slot", slots.start)?,
            to_i32(OP, "slot", slots.end)?,
        ];
        let stride = part_slot_stride as i64;
        // SAFETY: matches `flix_grad_reduce_f32(grad, num_values, rows, cols, part,
        // part_seg_stride, part_ld, row_off, col_off, value_ptr, value_slots, value_base, s0, s1,
        // scale)`; `grad` holds num_values x rows x cols floats (checked upstream against the
        // adapters).
        unsafe {
            self.backend
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
                .arg(&self.cplan.flush_value_ptr)
                .arg(&self.cplan.flush_value_slots)
                .arg(&ints[6])
                .arg(&ints[7])
                .arg(&ints[8])
                .arg(&l.scale)
                .launch(cfg)?;
        }
        Ok(())
    }
}

/// The device addresses of every type's f32 gradient in `grads` (`struct FlixGrads`), with the
/// guards that must live until the launch that writes them is queued.
fn grad_ptrs<'a>(
    stream: &'a CudaStream,
    grads: &'a mut [Tensor],
    what: &'static str,
) -> Result<(FlixGradsParam, Vec<SyncOnDrop<'a>>)> {
    let mut param = FlixGradsParam::default();
    let mut guards = Vec::with_capacity(grads.len());
    for (k, t) in grads.iter_mut().enumerate() {
        let (ptr, guard) = f32_slice_mut(OP, what, t)?.device_ptr_mut(stream);
        param.g[k] = ptr;
        guards.push(guard);
    }
    Ok((param, guards))
}
