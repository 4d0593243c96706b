//! The fast CPU path of the FLix ops, f32. Each segment's tokens times one value's A or B is a
//! small dense product, so every op is a loop of `gemm_f32` calls on sub-blocks of the packed
//! buffers:
//! - shrink, expand and dH/dX run in parallel across segments (each writes only its own rows);
//! - dA and dB run in parallel across (type, value) pairs, and each sums over its users in the
//!   plan's order, so the result is the same bits on every run (no atomics, fixed order).
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

impl TypeView<'_> {
    /// A of value v: `[r, d_in]`.
    fn a_of(&self, v: usize, d_in: usize) -> &[f32] {
        let n = self.rank * d_in;
        &self.a[v * n..(v + 1) * n]
    }
    /// B of value v: `[d_out, r]`.
    fn b_of(&self, v: usize, d_out: usize) -> &[f32] {
        let n = d_out * self.rank;
        &self.b[v * n..(v + 1) * n]
    }
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

/// Splits a `[T, width]` buffer into the rows of each segment, in segment order.
fn segment_rows<'a>(plan: &BatchPlan, data: &'a mut [f32], width: usize) -> Vec<&'a mut [f32]> {
    let mut rest = data;
    (0..plan.num_segments())
        .map(|s| {
            let (rows, tail) =
                std::mem::take(&mut rest).split_at_mut(plan.segment_range(s).len() * width);
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

/// The present (type, value) pairs of segment `s`.
fn present(plan: &BatchPlan, s: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    plan.segment_slots(s)
        .iter()
        .enumerate()
        .filter(|(_, &v)| v >= 0)
        .map(|(k, &v)| (k, v as usize))
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
            return; // nothing to write, and sub-slices at a type's offset would not exist
        }
        h_seg.fill(0.0);
        let x_seg = &x[range.start * d_in..range.end * d_in];
        for (k, v) in present(plan, s) {
            let ty = &types[k];
            // H_seg[:, off_k..] = s_k · X_seg · A_vᵀ
            gemm_f32(
                range.len(),
                ty.rank,
                d_in,
                x_seg,
                d_in,
                Trans::N,
                ty.a_of(v, d_in),
                d_in,
                Trans::T,
                &mut h_seg[ty.offset..],
                r_total,
                ty.scale,
                0.0,
            );
        }
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
        let h_seg = &h[range.start * r_total..range.end * r_total];
        let mut overwrite = write == Write::Overwrite;
        for (k, v) in present(plan, s) {
            let ty = &types[k];
            // Y_seg (= or +=) H_seg[:, off_k..] · B_vᵀ
            gemm_f32(
                range.len(),
                d_out,
                ty.rank,
                &h_seg[ty.offset..],
                r_total,
                Trans::N,
                ty.b_of(v, d_out),
                ty.rank,
                Trans::T,
                y_seg,
                d_out,
                1.0,
                if overwrite { 0.0 } else { 1.0 },
            );
            overwrite = false;
        }
        if overwrite {
            y_seg.fill(0.0);
        }
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

    // Per segment: dH = dY · B_v for each present type, then dX (= or +=) Σ_k s_k dH_k · A_v.
    let mut dh = vec![0.0f32; plan.num_tokens() * r_total];
    let dh_rows = segment_rows(plan, &mut dh, r_total);
    let mut dx_rows: Vec<Option<&mut [f32]>> = match dx {
        Some(dx) => segment_rows(plan, dx.cpu_data_mut(OP)?, d_in)
            .into_iter()
            .map(Some)
            .collect(),
        None => (0..plan.num_segments()).map(|_| None).collect(),
    };
    dh_rows
        .into_par_iter()
        .zip(dx_rows.par_iter_mut())
        .enumerate()
        .for_each(|(s, (dh_seg, dx_seg))| {
            let range = plan.segment_range(s);
            if range.is_empty() {
                return;
            }
            let dy_seg = &dy[range.start * d_out..range.end * d_out];
            for (k, v) in present(plan, s) {
                let ty = &types[k];
                gemm_f32(
                    range.len(),
                    ty.rank,
                    d_out,
                    dy_seg,
                    d_out,
                    Trans::N,
                    ty.b_of(v, d_out),
                    ty.rank,
                    Trans::N,
                    &mut dh_seg[ty.offset..],
                    r_total,
                    1.0,
                    0.0,
                );
            }
            if let Some(dx_seg) = dx_seg {
                let mut overwrite = dx_write == Write::Overwrite;
                for (k, v) in present(plan, s) {
                    let ty = &types[k];
                    gemm_f32(
                        range.len(),
                        d_in,
                        ty.rank,
                        &dh_seg[ty.offset..],
                        r_total,
                        Trans::N,
                        ty.a_of(v, d_in),
                        d_in,
                        Trans::N,
                        dx_seg,
                        d_in,
                        ty.scale,
                        if overwrite { 0.0 } else { 1.0 },
                    );
                    overwrite = false;
                }
                if overwrite {
                    dx_seg.fill(0.0);
                }
            }
        });

    // Per (type, value), over its users in plan order: dB += dY_sᵀ H_s, dA += s_k dH_sᵀ X_s.
    let mut jobs = Vec::new();
    for (k, (da, db)) in grads.da.iter_mut().zip(grads.db.iter_mut()).enumerate() {
        let r = types[k].rank;
        let num_values = plan.types()[k].num_values;
        let da = split_equal(da.cpu_data_mut(OP)?, num_values, r * d_in);
        let db = split_equal(db.cpu_data_mut(OP)?, num_values, d_out * r);
        for (v, (da_v, db_v)) in da.into_iter().zip(db).enumerate() {
            jobs.push((k, v, da_v, db_v));
        }
    }
    let dh = &dh;
    jobs.into_par_iter().for_each(|(k, v, da_v, db_v)| {
        let ty = &types[k];
        for &s in plan.users_of(k, v) {
            let range = plan.segment_range(s as usize);
            let (start, len) = (range.start, range.len());
            gemm_f32(
                d_out,
                ty.rank,
                len,
                &dy[start * d_out..],
                d_out,
                Trans::T,
                &h[start * r_total + ty.offset..],
                r_total,
                Trans::N,
                db_v,
                ty.rank,
                1.0,
                1.0,
            );
            gemm_f32(
                ty.rank,
                d_in,
                len,
                &dh[start * r_total + ty.offset..],
                r_total,
                Trans::T,
                &x[start * d_in..],
                d_in,
                Trans::N,
                da_v,
                d_in,
                ty.scale,
                1.0,
            );
        }
    });
    Ok(())
}
