//! Causal self-attention with grouped KV heads over packed variable-length sequences.
//!
//! Tokens of all sequences are packed row-major: Q is [T, H·hd], K and V are [T, Hkv·hd], and
//! sequence s owns rows `starts[s]..starts[s + 1]`. A query attends to the keys of its own
//! sequence at or before it (within its sliding window, when [`AttentionShape::window`] sets
//! one), never across a boundary. Query head h reads KV head h / (H / Hkv), as transformers'
//! `repeat_kv` does. Scores are scaled by [`AttentionShape::scale`] (1/sqrt(hd) by default).
//!
//! The forward pass saves only the log-sum-exp of each (token, head) row; the backward pass
//! recomputes the probabilities from it (as flash attention does), so saved activation memory is
//! O(T·H), not O(T²·H):
//!
//! ```text
//! p_j = exp(s_j − lse),  dp_j = dO·v_j,  ds_j = p_j (dp_j − dO·O),
//! dQ += scale Σ_j ds_j k_j,  dK_j += scale ds_j q,  dV_j += p_j dO
//! ```
//!
//! Generation attends new queries over each sequence's own key/value cache where it lies
//! ([`attention_decode_forward`] with one [`KvCacheView`] per sequence, or every layer of a step
//! from one [`DecodeStep`]; `ops/attention_decode.rs`), with the same masking, so a decode step
//! never copies the caches into a packed K and V.

use rayon::prelude::*;

pub use super::attention_decode::{
    attention_decode_forward, attention_decode_layer, DecodeLayerCaches, DecodeStep, KvCacheView,
};

use crate::batch::SegmentStarts;
use crate::error::{KernelError, Result};
use crate::ops::matmul::{gemm_f32, Trans};
use crate::{DType, Device, Tensor};

/// Head layout and masking of one attention layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The factor applied to q·k before the softmax: 1/√head_dim unless the model says
    /// otherwise (Gemma 3: 1/√query_pre_attn_scalar).
    pub scale: f32,
    /// Sliding-window attention: a query at position i sees the keys at positions j with
    /// i − window < j ≤ i, that is itself and the window − 1 keys before it (transformers'
    /// convention). `None`: every earlier key of its sequence.
    pub window: Option<usize>,
}

impl AttentionShape {
    /// Full causal attention scaled by 1/√head_dim.
    pub fn new(heads: usize, kv_heads: usize, head_dim: usize) -> Self {
        Self {
            heads,
            kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window: None,
        }
    }

    /// The first key (relative to its segment's start) that the query at relative position `i`
    /// sees.
    pub(crate) fn first_visible(&self, i: usize) -> usize {
        match self.window {
            Some(w) => (i + 1).saturating_sub(w),
            None => 0,
        }
    }

    pub(crate) fn check_heads(&self, op: &'static str) -> Result<()> {
        let heads_ok =
            self.kv_heads != 0 && self.heads.is_multiple_of(self.kv_heads) && self.head_dim != 0;
        if !heads_ok {
            return Err(KernelError::Invalid {
                op,
                message: format!("{self:?}: kv_heads must divide heads and head_dim must be >= 1"),
            });
        }
        if !(self.scale.is_finite() && self.scale > 0.0) || self.window == Some(0) {
            return Err(KernelError::Invalid {
                op,
                message: format!("{self:?}: scale must be finite and > 0, window >= 1"),
            });
        }
        Ok(())
    }

    fn check(
        &self,
        op: &'static str,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        starts: &[usize],
    ) -> Result<usize> {
        self.check_heads(op)?;
        let t = q.shape().first().copied().unwrap_or(0);
        q.expect_shape(op, "Q", &[t, self.heads * self.head_dim])?;
        k.expect_shape(op, "K", &[t, self.kv_heads * self.head_dim])?;
        v.expect_shape(op, "V", &[t, self.kv_heads * self.head_dim])?;
        let ok = starts.first() == Some(&0)
            && starts.last() == Some(&t)
            && starts.windows(2).all(|w| w[0] <= w[1]);
        if !ok {
            return Err(KernelError::Invalid {
                op,
                message: format!(
                    "segment starts must rise from 0 to the token count {t}, found {starts:?}"
                ),
            });
        }
        Ok(t)
    }
}

/// Queries per block: a block of a segment needs a [block, keys so far] score matrix, so memory
/// stays O(block · sequence) however long the sequence is.
const QUERY_BLOCK: usize = 64;

/// Head dimensions per partial sum of a score (see [`HeadView::scores`]).
const SCORE_SLICE: usize = 64;

/// Where one (query head, KV head) pair reads its rows: the head's column offset and the row
/// strides of Q (and dO, O) and of K (and V).
#[derive(Clone, Copy)]
struct HeadView {
    q_col: usize,
    kv_col: usize,
    q_ld: usize,
    kv_ld: usize,
    head_dim: usize,
    scale: f32,
}

impl HeadView {
    fn new(shape: AttentionShape, h: usize) -> Self {
        let AttentionShape {
            heads,
            kv_heads,
            head_dim,
            scale,
            ..
        } = shape;
        Self {
            q_col: h * head_dim,
            kv_col: (h / (heads / kv_heads)) * head_dim,
            q_ld: heads * head_dim,
            kv_ld: kv_heads * head_dim,
            head_dim,
            scale,
        }
    }

    /// Scores of queries `i0..i0 + nq` against keys `s0..s0 + nk` into `s` ([nq, nk]).
    ///
    /// Summed over the head dimension in slices of [`SCORE_SLICE`]: one product per slice,
    /// added into `s`. The GEMM keeps one running f32 sum per score over the whole head
    /// dimension, whose rounding error grows with its length; per-slice sums added together
    /// round about half as much (as torch's CPU GEMM does). A long context is sensitive to it:
    /// with one running sum over Gemma 3's 256 dimensions, a token of a 2,340-token text lay
    /// 3.2e-3 from float64 in log-probability (torch: 1.4e-3); with slices, 8e-5.
    #[allow(clippy::too_many_arguments)]
    fn scores(
        &self,
        qs: &[f32],
        ks: &[f32],
        i0: usize,
        nq: usize,
        s0: usize,
        nk: usize,
        s: &mut [f32],
    ) {
        for d0 in (0..self.head_dim).step_by(SCORE_SLICE) {
            gemm_f32(
                nq,
                nk,
                SCORE_SLICE.min(self.head_dim - d0),
                &qs[i0 * self.q_ld + self.q_col + d0..],
                self.q_ld,
                Trans::N,
                &ks[s0 * self.kv_ld + self.kv_col + d0..],
                self.kv_ld,
                Trans::T,
                s,
                nk,
                self.scale,
                if d0 == 0 { 0.0 } else { 1.0 },
            );
        }
    }
}

/// The query blocks of every segment: (segment start, first query, query count).
fn query_blocks(starts: &[usize]) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    starts.windows(2).flat_map(|w| {
        let (s0, s1) = (w[0], w[1]);
        (s0..s1)
            .step_by(QUERY_BLOCK)
            .map(move |i0| (s0, i0, QUERY_BLOCK.min(s1 - i0)))
    })
}

/// Returns (O [T, H·hd], lse [T·H] f32 on q's device, row-major by token then head).
/// `segments` are the batch's
/// sequence starts ([`SegmentStarts`], on the tensors' device).
pub fn attention_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &SegmentStarts,
    shape: AttentionShape,
) -> Result<(Tensor, Tensor)> {
    let _profile = crate::profile::scope("attention_forward", q.device());
    const OP: &str = "attention_forward";
    let starts = segments.host();
    let t = shape.check(OP, q, k, v, starts)?;
    if let Device::Cuda(b) = q.device() {
        return super::cuda::attention::attention_forward(b, q, k, v, segments, shape);
    }
    let (qs, ks, vs) = (q.cpu_data(OP)?, k.cpu_data(OP)?, v.cpu_data(OP)?);
    let AttentionShape {
        heads,
        head_dim: hd,
        ..
    } = shape;
    // One task per query head; each fills its own [T, hd] block and [T] lse, scattered after.
    let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..heads)
        .into_par_iter()
        .map(|h| {
            let view = HeadView::new(shape, h);
            let mut out = vec![0.0f32; t * hd];
            let mut lse = vec![0.0f32; t];
            let mut p = Vec::new();
            for (s0, i0, nq) in query_blocks(starts) {
                // Keys s0 ..= last query of the block; later keys are masked below.
                let nk = i0 + nq - s0;
                p.resize(nq * nk, 0.0);
                view.scores(qs, ks, i0, nq, s0, nk, &mut p);
                for (r, row) in p.chunks_mut(nk).enumerate() {
                    let visible = i0 + r - s0 + 1;
                    let first = shape.first_visible(i0 + r - s0);
                    let max = row[first..visible]
                        .iter()
                        .copied()
                        .fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0.0f32;
                    for x in &mut row[first..visible] {
                        *x = (*x - max).exp();
                        sum += *x;
                    }
                    for x in &mut row[first..visible] {
                        *x /= sum;
                    }
                    row[..first].fill(0.0);
                    row[visible..].fill(0.0);
                    lse[i0 + r] = max + sum.ln();
                }
                gemm_f32(
                    nq,
                    hd,
                    nk,
                    &p,
                    nk,
                    Trans::N,
                    &vs[s0 * view.kv_ld + view.kv_col..],
                    view.kv_ld,
                    Trans::N,
                    &mut out[i0 * hd..],
                    hd,
                    1.0,
                    0.0,
                );
            }
            (out, lse)
        })
        .collect();
    let mut out = vec![0.0f32; t * heads * hd];
    let mut lse = vec![0.0f32; t * heads];
    for (h, (o, l)) in per_head.iter().enumerate() {
        for i in 0..t {
            out[i * heads * hd + h * hd..][..hd].copy_from_slice(&o[i * hd..(i + 1) * hd]);
            lse[i * heads + h] = l[i];
        }
    }
    Ok((
        Tensor::cpu(&[t, heads * hd], out)?,
        Tensor::cpu(&[t * heads], lse)?,
    ))
}

/// Returns (dQ, dK, dV) from dO and the forward's inputs, output and lse.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dout: &Tensor,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    segments: &SegmentStarts,
    shape: AttentionShape,
) -> Result<(Tensor, Tensor, Tensor)> {
    let _profile = crate::profile::scope("attention_backward", dout.device());
    const OP: &str = "attention_backward";
    let starts = segments.host();
    let t = shape.check(OP, q, k, v, starts)?;
    let AttentionShape {
        heads,
        kv_heads,
        head_dim: hd,
        ..
    } = shape;
    dout.expect_shape(OP, "dO", &[t, heads * hd])?;
    out.expect_shape(OP, "O", &[t, heads * hd])?;
    lse.expect_shape(OP, "lse", &[t * heads])?;
    lse.expect_dtype(OP, "lse", DType::F32)?;
    if let Device::Cuda(b) = q.device() {
        return super::cuda::attention::attention_backward(
            b, dout, q, k, v, out, lse, segments, shape,
        );
    }
    let (qs, ks, vs) = (q.cpu_data(OP)?, k.cpu_data(OP)?, v.cpu_data(OP)?);
    let (dos, os) = (dout.cpu_data(OP)?, out.cpu_data(OP)?);
    let lse = lse.cpu_data(OP)?;
    let group = heads / kv_heads;
    // One task per KV head: it owns dK, dV of that head and dQ of the query heads reading it, so
    // no two tasks write the same element and the summation order is fixed.
    let per_kv: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..kv_heads)
        .into_par_iter()
        .map(|g| {
            let mut dq = vec![0.0f32; group * t * hd];
            let mut dk = vec![0.0f32; t * hd];
            let mut dv = vec![0.0f32; t * hd];
            let (mut p, mut ds) = (Vec::new(), Vec::new());
            for local in 0..group {
                let h = g * group + local;
                let view = HeadView::new(shape, h);
                for (s0, i0, nq) in query_blocks(starts) {
                    let nk = i0 + nq - s0;
                    p.resize(nq * nk, 0.0);
                    ds.resize(nq * nk, 0.0);
                    // P from the saved lse; dP = dO Vᵀ.
                    view.scores(qs, ks, i0, nq, s0, nk, &mut p);
                    gemm_f32(
                        nq,
                        nk,
                        hd,
                        &dos[i0 * view.q_ld + view.q_col..],
                        view.q_ld,
                        Trans::N,
                        &vs[s0 * view.kv_ld + view.kv_col..],
                        view.kv_ld,
                        Trans::T,
                        &mut ds,
                        nk,
                        1.0,
                        0.0,
                    );
                    for r in 0..nq {
                        let i = i0 + r;
                        let visible = i - s0 + 1;
                        let first = shape.first_visible(i - s0);
                        let l = lse[i * heads + h];
                        let d = dot(
                            &dos[i * view.q_ld + view.q_col..][..hd],
                            &os[i * view.q_ld + view.q_col..][..hd],
                        );
                        let (prow, dsrow) =
                            (&mut p[r * nk..(r + 1) * nk], &mut ds[r * nk..(r + 1) * nk]);
                        for j in 0..nk {
                            if (first..visible).contains(&j) {
                                prow[j] = (prow[j] - l).exp();
                                dsrow[j] = prow[j] * (dsrow[j] - d) * view.scale;
                            } else {
                                prow[j] = 0.0;
                                dsrow[j] = 0.0;
                            }
                        }
                    }
                    // dQ = dS K;  dK += dSᵀ Q;  dV += Pᵀ dO.
                    let kv_rows = &ks[s0 * view.kv_ld + view.kv_col..];
                    gemm_f32(
                        nq,
                        hd,
                        nk,
                        &ds,
                        nk,
                        Trans::N,
                        kv_rows,
                        view.kv_ld,
                        Trans::N,
                        &mut dq[(local * t + i0) * hd..],
                        hd,
                        1.0,
                        0.0,
                    );
                    let q_rows = &qs[i0 * view.q_ld + view.q_col..];
                    gemm_f32(
                        nk,
                        hd,
                        nq,
                        &ds,
                        nk,
                        Trans::T,
                        q_rows,
                        view.q_ld,
                        Trans::N,
                        &mut dk[s0 * hd..],
                        hd,
                        1.0,
                        1.0,
                    );
                    let do_rows = &dos[i0 * view.q_ld + view.q_col..];
                    gemm_f32(
                        nk,
                        hd,
                        nq,
                        &p,
                        nk,
                        Trans::T,
                        do_rows,
                        view.q_ld,
                        Trans::N,
                        &mut dv[s0 * hd..],
                        hd,
                        1.0,
                        1.0,
                    );
                }
            }
            (dq, dk, dv)
        })
        .collect();
    let mut dq = vec![0.0f32; t * heads * hd];
    let mut dk = vec![0.0f32; t * kv_heads * hd];
    let mut dv = vec![0.0f32; t * kv_heads * hd];
    for (g, (dqg, dkg, dvg)) in per_kv.iter().enumerate() {
        for i in 0..t {
            for local in 0..group {
                let h = g * group + local;
                dq[i * heads * hd + h * hd..][..hd]
                    .copy_from_slice(&dqg[(local * t + i) * hd..][..hd]);
            }
            dk[i * kv_heads * hd + g * hd..][..hd].copy_from_slice(&dkg[i * hd..(i + 1) * hd]);
            dv[i * kv_heads * hd + g * hd..][..hd].copy_from_slice(&dvg[i * hd..(i + 1) * hd]);
        }
    }
    Ok((
        Tensor::cpu(&[t, heads * hd], dq)?,
        Tensor::cpu(&[t, kv_heads * hd], dk)?,
        Tensor::cpu(&[t, kv_heads * hd], dv)?,
    ))
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::oracle::{assert_close, fd_check, pseudo_random, to_f64};

    fn cpu_segments(starts: &[usize]) -> SegmentStarts {
        SegmentStarts::new(&Device::Cpu, starts).unwrap()
    }

    /// O of the plain reference, every query against the keys of its own segment.
    fn reference(q: &[f64], k: &[f64], v: &[f64], starts: &[usize], s: AttentionShape) -> Vec<f64> {
        crate::ops::reference::attention((q, k, v), None, starts, starts, s).o
    }

    #[test]
    fn forward_and_backward_match_the_reference() {
        // Three packed sequences, one of a single token.
        check_forward_backward(AttentionShape::new(4, 2, 3), &[0, 3, 4, 7], 1);
    }

    /// Each segment of packed K and V (`[T, width]`, segments `starts`) copied into a cache of
    /// its own whose capacity is `spare` rows more than its length, the spare rows NaN: a read
    /// past a cache's length shows in the output.
    fn caches_of(
        k: &[f32],
        v: &[f32],
        starts: &[usize],
        width: usize,
        spare: usize,
    ) -> Vec<(Tensor, Tensor, usize)> {
        let cache = |x: &[f32], a: usize, b: usize| {
            let mut rows = x[a * width..b * width].to_vec();
            rows.resize((b - a + spare) * width, f32::NAN);
            Tensor::cpu(&[b - a + spare, width], rows).unwrap()
        };
        starts
            .windows(2)
            .map(|w| (cache(k, w[0], w[1]), cache(v, w[0], w[1]), w[1] - w[0]))
            .collect()
    }

    fn views(caches: &[(Tensor, Tensor, usize)]) -> Vec<KvCacheView<'_>> {
        caches
            .iter()
            .map(|(k, v, len)| KvCacheView { k, v, len: *len })
            .collect()
    }

    /// The rows `rows` of Q (width `width`) as a tensor.
    fn query_rows(q: &[f32], rows: &[usize], width: usize) -> Tensor {
        let data: Vec<f32> = rows
            .iter()
            .flat_map(|&r| q[r * width..(r + 1) * width].to_vec())
            .collect();
        Tensor::cpu(&[rows.len(), width], data).unwrap()
    }

    #[test]
    fn decode_attention_equals_the_last_rows_of_full_attention() {
        let shape = AttentionShape::new(4, 2, 3);
        let starts = [0usize, 3, 4, 7];
        let t = 7;
        let q = pseudo_random(t * 12, 5);
        let k = pseudo_random(t * 6, 6);
        let v = pseudo_random(t * 6, 7);
        let full = reference(&to_f64(&q), &to_f64(&k), &to_f64(&v), &starts, shape);
        let caches = caches_of(&k, &v, &starts, 6, 5);
        // All queries (prefill into empty caches).
        let qt = Tensor::cpu(&[t, 12], q.clone()).unwrap();
        let o = attention_decode_forward(&qt, &views(&caches), &starts, shape).unwrap();
        assert_close("prefill", &o.to_f32_vec().unwrap(), &full, 1e-5);
        // Only the last queries of each segment (decoding); the middle sequence has two.
        let rows = [2usize, 3, 4, 6];
        let o = attention_decode_forward(
            &query_rows(&q, &rows, 12),
            &views(&caches),
            &[0, 1, 3, 4],
            shape,
        );
        assert!(o.is_err(), "2 queries against a cache of 1 key");
        let caches2 = caches_of(&k, &v, &[0, 3, 5, 7], 6, 0);
        let full2 = reference(&to_f64(&q), &to_f64(&k), &to_f64(&v), &[0, 3, 5, 7], shape);
        let o = attention_decode_forward(
            &query_rows(&q, &rows, 12),
            &views(&caches2),
            &[0, 1, 3, 4],
            shape,
        )
        .unwrap();
        let want: Vec<f64> = rows
            .iter()
            .flat_map(|&r| full2[r * 12..(r + 1) * 12].to_vec())
            .collect();
        assert_close("decode", &o.to_f32_vec().unwrap(), &want, 1e-5);
        // A length past the capacity, or too few query starts, is an error.
        let mut bad = views(&caches2);
        bad[0].len = 4;
        assert!(
            attention_decode_forward(&query_rows(&q, &rows, 12), &bad, &[0, 1, 3, 4], shape)
                .is_err()
        );
        assert!(attention_decode_forward(
            &query_rows(&q, &rows, 12),
            &views(&caches2),
            &[0, 4],
            shape
        )
        .is_err());
    }

    /// Random Q, K, V for `shape` over the segments `starts` (seeded from `seed`); checks the
    /// forward pass against [`reference`] and the backward pass by finite differences of it.
    /// Returns (Q, K, V, the reference output).
    fn check_forward_backward(
        shape: AttentionShape,
        starts: &[usize],
        seed: u64,
    ) -> (Vec<f32>, Tensor, Tensor, Vec<f64>) {
        let t = *starts.last().unwrap();
        let (qw, kw) = (
            shape.heads * shape.head_dim,
            shape.kv_heads * shape.head_dim,
        );
        let q = pseudo_random(t * qw, seed);
        let k = pseudo_random(t * kw, seed + 1);
        let v = pseudo_random(t * kw, seed + 2);
        let dout = pseudo_random(t * qw, seed + 3);
        let (qt, kt, vt) = (
            Tensor::cpu(&[t, qw], q.clone()).unwrap(),
            Tensor::cpu(&[t, kw], k.clone()).unwrap(),
            Tensor::cpu(&[t, kw], v.clone()).unwrap(),
        );
        let (qf, kf, vf) = (to_f64(&q), to_f64(&k), to_f64(&v));
        let want = reference(&qf, &kf, &vf, starts, shape);
        let (o, lse) = attention_forward(&qt, &kt, &vt, &cpu_segments(starts), shape).unwrap();
        assert_close("O", &o.to_f32_vec().unwrap(), &want, 1e-5);
        let dot_ = |y: Vec<f64>| y.iter().zip(&dout).map(|(a, b)| a * *b as f64).sum::<f64>();
        let dout_t = Tensor::cpu(&[t, qw], dout.clone()).unwrap();
        let (dq, dk, dv) = attention_backward(
            &dout_t,
            &qt,
            &kt,
            &vt,
            &o,
            &lse,
            &cpu_segments(starts),
            shape,
        )
        .unwrap();
        fd_check(
            &q,
            &dq.to_f32_vec().unwrap(),
            |x| dot_(reference(x, &kf, &vf, starts, shape)),
            1e-3,
        );
        fd_check(
            &k,
            &dk.to_f32_vec().unwrap(),
            |x| dot_(reference(&qf, x, &vf, starts, shape)),
            1e-3,
        );
        fd_check(
            &v,
            &dv.to_f32_vec().unwrap(),
            |x| dot_(reference(&qf, &kf, x, starts, shape)),
            1e-3,
        );
        (q, kt, vt, want)
    }

    #[test]
    fn segments_longer_than_a_query_block_match_the_reference() {
        // 70 > QUERY_BLOCK: the second block of the first segment sees the first block's keys.
        check_forward_backward(AttentionShape::new(2, 1, 2), &[0, 70, 73], 8);
    }

    #[test]
    fn sliding_window_and_custom_scale_match_the_reference() {
        // A window of 5 in a 70-token segment: the second query block sees none of the first
        // block's keys. The 3-token segment is shorter than the window.
        let mut shape = AttentionShape::new(2, 1, 2);
        shape.window = Some(5);
        shape.scale = 0.37;
        let starts = [0usize, 70, 73];
        let (q, kt, vt, want) = check_forward_backward(shape, &starts, 12);
        let (kf, vf) = (
            to_f64(&kt.to_f32_vec().unwrap()),
            to_f64(&vt.to_f32_vec().unwrap()),
        );
        let unwindowed = reference(&to_f64(&q), &kf, &vf, &starts, AttentionShape::new(2, 1, 2));
        assert!(
            want.iter()
                .zip(&unwindowed)
                .any(|(a, b)| (a - b).abs() > 1e-3),
            "the window must change the output"
        );
        // Decoding the last token of each segment against its cache sees the same window.
        let last_rows = [69usize, 72];
        let k = kt.to_f32_vec().unwrap();
        let caches = caches_of(&k, &vt.to_f32_vec().unwrap(), &starts, 2, 9);
        let qdt = query_rows(&q, &last_rows, 4);
        let o = attention_decode_forward(&qdt, &views(&caches), &[0, 1, 2], shape).unwrap();
        let want_rows: Vec<f64> = last_rows
            .iter()
            .flat_map(|&r| want[r * 4..(r + 1) * 4].to_vec())
            .collect();
        assert_close("decode", &o.to_f32_vec().unwrap(), &want_rows, 1e-5);
    }

    #[test]
    fn zero_window_and_bad_scale_are_rejected() {
        let x = Tensor::cpu(&[3, 2], vec![0.0; 6]).unwrap();
        let mut shape = AttentionShape::new(1, 1, 2);
        shape.window = Some(0);
        assert!(attention_forward(&x, &x, &x, &cpu_segments(&[0, 3]), shape).is_err());
        let mut shape = AttentionShape::new(1, 1, 2);
        shape.scale = f32::NAN;
        assert!(attention_forward(&x, &x, &x, &cpu_segments(&[0, 3]), shape).is_err());
    }

    #[test]
    fn bad_segment_starts_are_rejected() {
        let shape = AttentionShape::new(1, 1, 2);
        let x = Tensor::cpu(&[3, 2], vec![0.0; 6]).unwrap();
        let err = attention_forward(&x, &x, &x, &cpu_segments(&[0, 2]), shape)
            .unwrap_err()
            .to_string();
        assert!(err.contains("token count 3"), "{err}");
    }
}
