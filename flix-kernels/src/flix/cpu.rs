//! The fast CPU path of the FLix ops, f32. Segments are independent, so shrink, expand and the
//! dH/dX half of backward run in parallel across segments (each writes only its own rows of the
//! packed buffers). Inside a segment the present types are handled together: their adapters are
//! stacked along the rank (`Stacked`), so each op is **one** `gemm_f32` call per segment that
//! reads the segment's activations once, instead of one thin product per type.
//!
//! dA and dB run in parallel across (type, value) pairs; each sums over the value's users in the
//! plan's order, so results are the same bits on every run (fixed order, no atomics).
//!
//! A long segment still uses both cores: `gemm_f32` parallelises large products internally.
//! Shapes were checked by the launchers in `flix/mod.rs`.

use flix_core::BatchPlan;
use rayon::prelude::*;

use super::{AdapterGrads, LayerAdapters, Write};
use crate::error::Result;
use crate::ops::{gemm_f32, Trans};
use crate::Tensor;

/// The host slices of one type's adapters plus its geometry.
struct TypeView<'a> {
    scale: f32,
    rank: usize,
    /// First column of the type in H.
    offset: usize,
    a: &'a [f32],
    b: &'a [f32],
}

fn views<'a>(
    op: &'static str,
    plan: &BatchPlan,
    ad: &'a LayerAdapters,
) -> Result<Vec<TypeView<'a>>> {
    ad.types
        .iter()
        .zip(plan.types())
        .zip(plan.col_offsets())
        .map(|((t, shape), &offset)| {
            Ok(TypeView {
                scale: t.scale,
                rank: shape.rank,
                offset,
                a: t.a.cpu_data(op)?,
                b: t.b.cpu_data(op)?,
            })
        })
        .collect()
}

/// The adapters of one segment's present types, stacked along the rank (Rp = Σ present r_k):
/// `a` `[Rp, d_in]` holds A_{k,f} rows one type after another, `b` `[d_out, Rp]` holds the
/// matching B_{k,f} columns. Copies are row-contiguous (memcpy speed) and small next to the
/// segment's activations.
struct Stacked<'t> {
    /// (type view, value) of the present types, in type order.
    present: Vec<(&'t TypeView<'t>, usize)>,
    /// Rp.
    rank: usize,
}

impl<'t> Stacked<'t> {
    fn new(plan: &BatchPlan, types: &'t [TypeView<'t>], s: usize) -> Self {
        let present: Vec<_> = plan
            .segment_slots(s)
            .iter()
            .zip(types)
            .filter(|(&v, _)| v >= 0)
            .map(|(&v, ty)| (ty, v as usize))
            .collect();
        let rank = present.iter().map(|(ty, _)| ty.rank).sum();
        Self { present, rank }
    }

    /// `[Rp, d_in]`: the present A_{k,f}, unscaled.
    fn a(&self, d_in: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rank * d_in);
        for &(ty, v) in &self.present {
            let n = ty.rank * d_in;
            out.extend_from_slice(&ty.a[v * n..(v + 1) * n]);
        }
        out
    }

    /// `[d_out, Rp]`: row o is B_{k,f}[o, :] of each present type, concatenated.
    fn b(&self, d_out: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(d_out * self.rank);
        for o in 0..d_out {
            for &(ty, v) in &self.present {
                let row = (v * d_out + o) * ty.rank;
                out.extend_from_slice(&ty.b[row..row + ty.rank]);
            }
        }
        out
    }

    /// Copies compact `[len, Rp]` rows into the type columns of `[len, R]` rows, multiplying
    /// type k's columns by s_k and zeroing the columns of absent types.
    fn scatter(&self, compact: &[f32], wide: &mut [f32], r_total: usize) {
        for (t, dst) in wide.chunks_exact_mut(r_total).enumerate() {
            dst.fill(0.0);
            let mut src = &compact[t * self.rank..(t + 1) * self.rank];
            for &(ty, _) in &self.present {
                let (cols, rest) = src.split_at(ty.rank);
                for (d, &x) in dst[ty.offset..ty.offset + ty.rank].iter_mut().zip(cols) {
                    *d = ty.scale * x;
                }
                src = rest;
            }
        }
    }

    /// The present types' columns of `[len, R]` rows as compact `[len, Rp]` rows.
    fn gather(&self, wide: &[f32], r_total: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(wide.len() / r_total.max(1) * self.rank);
        for row in wide.chunks_exact(r_total) {
            for &(ty, _) in &self.present {
                out.extend_from_slice(&row[ty.offset..ty.offset + ty.rank]);
            }
        }
        out
    }
}

/// Splits a `[T, width]` buffer into the rows of each segment, in segment order.
fn segment_rows<'a>(plan: &BatchPlan, data: &'a mut [f32], width: usize) -> Vec<&'a mut [f32]> {
    let mut rest = data;
    (0..plan.num_segments())
        .map(|s| {
            let n = plan.segment_range(s).len() * width;
            let (rows, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            rows
        })
        .collect()
}

/// Splits `data` into `count` consecutive blocks of `n` elements (n may be 0).
fn split_equal(data: &mut [f32], count: usize, n: usize) -> Vec<&mut [f32]> {
    let mut rest = data;
    (0..count)
        .map(|_| {
            let (block, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            block
        })
        .collect()
}

/// Rows per block in [`gemm_wide_output`]: large enough that re-packing B per block is cheap,
/// small enough that the block stays in cache.
const WIDE_ROW_BLOCK: usize = 64;

/// C (= or +=) A · op(B) with A `[m, k]` (lda = k), C `[m, n]` (ldc = n), for the thin-k,
/// wide-n products of expand and dX. Written straight into a C far larger than the cache, the
/// gemm crate's strided stores cost several times its arithmetic at k ≈ 16..64 (measured: 16 ms
/// against 5 ms for 16 × 128×1024×32), so blocks of rows go through a cache-sized scratch and
/// are copied or added into C contiguously.
#[allow(clippy::too_many_arguments)]
fn gemm_wide_output(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    ldb: usize,
    trans_b: Trans,
    c: &mut [f32],
    write: Write,
) {
    let mut scratch = vec![0.0f32; WIDE_ROW_BLOCK.min(m) * n];
    for row0 in (0..m).step_by(WIDE_ROW_BLOCK) {
        let rows = WIDE_ROW_BLOCK.min(m - row0);
        let block = &mut scratch[..rows * n];
        #[rustfmt::skip]
        gemm_f32(
            rows, n, k,
            &a[row0 * k..], k, Trans::N,
            b, ldb, trans_b,
            block, n,
            1.0, 0.0,
        );
        let dst = &mut c[row0 * n..(row0 + rows) * n];
        match write {
            Write::Overwrite => dst.copy_from_slice(block),
            Write::Accumulate => dst.iter_mut().zip(block.iter()).for_each(|(d, s)| *d += s),
        }
    }
}

pub fn shrink(plan: &BatchPlan, ad: &LayerAdapters, x: &Tensor, h: &mut Tensor) -> Result<()> {
    const OP: &str = "flix::shrink (cpu)";
    let types = views(OP, plan, ad)?;
    let r_total = plan.total_rank();
    let d_in = x.shape()[1];
    let x = x.cpu_data(OP)?;
    let h_rows = segment_rows(plan, h.cpu_data_mut(OP)?, r_total);
    h_rows.into_par_iter().enumerate().for_each(|(s, h_seg)| {
        let range = plan.segment_range(s);
        if range.is_empty() {
            return; // nothing to write; skip stacking its adapters
        }
        let stacked = Stacked::new(plan, &types, s);
        let x_seg = &x[range.start * d_in..range.end * d_in];
        // Hp = X_seg · Apᵀ, then scaled into the type columns of H (zero where absent).
        let mut hp = vec![0.0; range.len() * stacked.rank];
        #[rustfmt::skip]
        gemm_f32(
            range.len(), stacked.rank, d_in,
            x_seg, d_in, Trans::N,
            &stacked.a(d_in), d_in, Trans::T,
            &mut hp, stacked.rank,
            1.0, 0.0,
        );
        stacked.scatter(&hp, h_seg, r_total);
    });
    Ok(())
}

pub fn expand(
    plan: &BatchPlan,
    ad: &LayerAdapters,
    h: &Tensor,
    y: &mut Tensor,
    write: Write,
) -> Result<()> {
    const OP: &str = "flix::expand (cpu)";
    let types = views(OP, plan, ad)?;
    let r_total = plan.total_rank();
    let d_out = y.shape()[1];
    let h = h.cpu_data(OP)?;
    let y_rows = segment_rows(plan, y.cpu_data_mut(OP)?, d_out);
    y_rows.into_par_iter().enumerate().for_each(|(s, y_seg)| {
        let range = plan.segment_range(s);
        if range.is_empty() {
            return;
        }
        let stacked = Stacked::new(plan, &types, s);
        if stacked.rank == 0 {
            if write == Write::Overwrite {
                y_seg.fill(0.0);
            }
            return;
        }
        let hp = stacked.gather(&h[range.start * r_total..range.end * r_total], r_total);
        // Y_seg (= or +=) Hp · Bpᵀ.
        let bp = stacked.b(d_out);
        #[rustfmt::skip]
        gemm_wide_output(
            range.len(), d_out, stacked.rank,
            &hp, &bp, stacked.rank, Trans::T,
            y_seg, write,
        );
    });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    plan: &BatchPlan,
    ad: &LayerAdapters,
    x: &Tensor,
    h: &Tensor,
    dy: &Tensor,
    dx: Option<&mut Tensor>,
    dx_write: Write,
    grads: &mut AdapterGrads,
) -> Result<()> {
    const OP: &str = "flix::backward (cpu)";
    let types = views(OP, plan, ad)?;
    let r_total = plan.total_rank();
    let (d_in, d_out) = (x.shape()[1], dy.shape()[1]);
    let (x, h, dy) = (x.cpu_data(OP)?, h.cpu_data(OP)?, dy.cpu_data(OP)?);

    // Per segment: dHp = dY_seg · Bp, scaled by s_k into dHs [T, R] (what dA needs), and
    // dX_seg (= or +=) dHs_p · Ap.
    let mut dhs = vec![0.0f32; plan.num_tokens() * r_total];
    let dhs_rows = segment_rows(plan, &mut dhs, r_total);
    let mut dx_rows: Vec<Option<&mut [f32]>> = match dx {
        Some(dx) => segment_rows(plan, dx.cpu_data_mut(OP)?, d_in)
            .into_iter()
            .map(Some)
            .collect(),
        None => (0..plan.num_segments()).map(|_| None).collect(),
    };
    dhs_rows
        .into_par_iter()
        .zip(dx_rows.par_iter_mut())
        .enumerate()
        .for_each(|(s, (dhs_seg, dx_seg))| {
            let range = plan.segment_range(s);
            if range.is_empty() {
                return;
            }
            let stacked = Stacked::new(plan, &types, s);
            let rp = stacked.rank;
            let mut dhp = vec![0.0; range.len() * rp];
            #[rustfmt::skip]
            gemm_f32(
                range.len(), rp, d_out,
                &dy[range.start * d_out..range.end * d_out], d_out, Trans::N,
                &stacked.b(d_out), rp, Trans::N,
                &mut dhp, rp,
                1.0, 0.0,
            );
            stacked.scatter(&dhp, dhs_seg, r_total);
            if let Some(dx_seg) = dx_seg {
                if rp == 0 {
                    if dx_write == Write::Overwrite {
                        dx_seg.fill(0.0);
                    }
                    return;
                }
                let dhs_p = stacked.gather(dhs_seg, r_total);
                let ap = stacked.a(d_in);
                #[rustfmt::skip]
                gemm_wide_output(
                    range.len(), d_in, rp,
                    &dhs_p, &ap, d_in, Trans::N,
                    dx_seg, dx_write,
                );
            }
        });

    // Per (type, value), over its users in plan order: dB += dY_sᵀ H_s, dA += dHs_sᵀ X_s.
    let mut jobs = Vec::new();
    for (k, (da, db)) in grads.da.iter_mut().zip(grads.db.iter_mut()).enumerate() {
        let (r, num_values) = (types[k].rank, plan.types()[k].num_values);
        let da = split_equal(da.cpu_data_mut(OP)?, num_values, r * d_in);
        let db = split_equal(db.cpu_data_mut(OP)?, num_values, d_out * r);
        for (v, (da_v, db_v)) in da.into_iter().zip(db).enumerate() {
            if !plan.users_of(k, v).is_empty() {
                jobs.push((k, v, da_v, db_v));
            }
        }
    }
    let dhs = &dhs;
    jobs.into_par_iter().for_each(|(k, v, da_v, db_v)| {
        let ty = &types[k];
        for &s in plan.users_of(k, v) {
            let range = plan.segment_range(s as usize);
            let (start, len) = (range.start, range.len());
            #[rustfmt::skip]
            gemm_f32(
                d_out, ty.rank, len,
                &dy[start * d_out..], d_out, Trans::T,
                &h[start * r_total + ty.offset..], r_total, Trans::N,
                db_v, ty.rank,
                1.0, 1.0,
            );
            #[rustfmt::skip]
            gemm_f32(
                ty.rank, d_in, len,
                &dhs[start * r_total + ty.offset..], r_total, Trans::T,
                &x[start * d_in..], d_in, Trans::N,
                da_v, d_in,
                1.0, 1.0,
            );
        }
    });
    Ok(())
}
