//! The references of the transformer ops: one plain f64 loop per op, written from the formula
//! with no tiling, chunking, fusion or parallelism, and sharing no code with the CPU paths or the
//! CUDA kernels. Each op's unit tests check its CPU path against these (the backward passes by
//! finite differences of the forward reference), `tests/transformer_ops.rs` checks every device
//! against them, and each backward reference here is itself checked against finite differences
//! of its forward reference (the tests at the bottom). Slow and obviously right; not for use
//! outside tests.
//!
//! Layouts are those of the ops: row-major, tokens first.

use super::adamw::AdamWParams;
use super::attention::AttentionShape;
use super::swiglu::GateActivation;

/// RMSNorm of the rows of `x` (width `w.len()`): returns (y, the reciprocal RMS of each row),
/// y = x / sqrt(mean(x²) + eps) · w.
pub fn rmsnorm(x: &[f64], w: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>) {
    let d = w.len();
    let mut y = Vec::with_capacity(x.len());
    let mut rstd = Vec::new();
    for row in x.chunks(d) {
        let mean_square = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let s = 1.0 / (mean_square + eps).sqrt();
        rstd.push(s);
        y.extend(row.iter().zip(w).map(|(xv, wv)| xv * s * wv));
    }
    (y, rstd)
}

/// The gradients (dx, dw) of Σ dy ⊙ rmsnorm(x, w):
/// dx = rstd · (w ⊙ dy − x̂ · mean(x̂ ⊙ w ⊙ dy)), x̂ = x · rstd, dw = Σ_rows dy ⊙ x̂.
pub fn rmsnorm_backward(x: &[f64], w: &[f64], dy: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>) {
    let d = w.len();
    let (_, rstd) = rmsnorm(x, w, eps);
    let mut dx = Vec::with_capacity(x.len());
    let mut dw = vec![0.0; d];
    for ((row, g), s) in x.chunks(d).zip(dy.chunks(d)).zip(rstd) {
        let xhat: Vec<f64> = row.iter().map(|v| v * s).collect();
        let mean = (0..d).map(|i| xhat[i] * w[i] * g[i]).sum::<f64>() / d as f64;
        for i in 0..d {
            dx.push(s * (w[i] * g[i] - xhat[i] * mean));
            dw[i] += g[i] * xhat[i];
        }
    }
    (dx, dw)
}

/// Rotary embedding of `x` ([T, heads · head_dim], head_dim = 2 · inv_freq.len()) in Hugging
/// Face's form, y = x · cos + rotate_half(x) · sin with rotate_half(x1, x2) = (−x2, x1), token t
/// at `positions[t]`. The angle is rounded to f32 as transformers computes it. With `inverse`
/// the rotation is undone (sin negated): the backward pass.
pub fn rope(
    x: &[f64],
    heads: usize,
    positions: &[u32],
    inv_freq: &[f32],
    inverse: bool,
) -> Vec<f64> {
    let half = inv_freq.len();
    let head_dim = 2 * half;
    let sign = if inverse { -1.0 } else { 1.0 };
    let mut out = vec![0.0; x.len()];
    for (t, &p) in positions.iter().enumerate() {
        for h in 0..heads {
            let base = (t * heads + h) * head_dim;
            for d in 0..head_dim {
                let angle = f64::from(p as f32 * inv_freq[d % half]);
                let rotated = if d < half {
                    -x[base + d + half]
                } else {
                    x[base + d - half]
                };
                out[base + d] = x[base + d] * angle.cos() + rotated * angle.sin() * sign;
            }
        }
    }
    out
}

/// act(g) for the gate activation `act`: silu, or GELU with torch's tanh approximation.
fn activation(act: GateActivation, g: f64) -> f64 {
    match act {
        GateActivation::Silu => g / (1.0 + (-g).exp()),
        GateActivation::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * g * (1.0 + (c * (g + 0.044715 * g * g * g)).tanh())
        }
    }
}

/// act'(g), differentiated by hand from [`activation`].
fn activation_slope(act: GateActivation, g: f64) -> f64 {
    match act {
        GateActivation::Silu => {
            let s = 1.0 / (1.0 + (-g).exp());
            s * (1.0 + g * (1.0 - s))
        }
        GateActivation::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let t = (c * (g + 0.044715 * g * g * g)).tanh();
            0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * g * g)
        }
    }
}

/// The gated MLP activation h = act(gate) ⊙ up (SwiGLU with silu, GeGLU with tanh GELU).
pub fn gated(act: GateActivation, gate: &[f64], up: &[f64]) -> Vec<f64> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| activation(act, g) * u)
        .collect()
}

/// The gradients (dgate, dup) of Σ dh ⊙ gated(act, gate, up).
pub fn gated_backward(
    act: GateActivation,
    gate: &[f64],
    up: &[f64],
    dh: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let dgate = (0..gate.len())
        .map(|i| dh[i] * up[i] * activation_slope(act, gate[i]))
        .collect();
    let dup = (0..gate.len())
        .map(|i| dh[i] * activation(act, gate[i]))
        .collect();
    (dgate, dup)
}

/// The logits z = W x of token `t` (x [T, d], W [V, d]).
fn logits(x: &[f64], w: &[f64], d: usize, t: usize) -> Vec<f64> {
    w.chunks(d)
        .map(|wj| (0..d).map(|c| x[t * d + c] * wj[c]).sum())
        .collect()
}

/// log Σ exp(z), shifted by the maximum so that large logits do not overflow.
fn log_sum_exp(z: &[f64]) -> f64 {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + z.iter().map(|a| (a - m).exp()).sum::<f64>().ln()
}

/// −log softmax(z)[target]: the cross-entropy of one row of logits.
pub fn cross_entropy(z: &[f64], target: usize) -> f64 {
    log_sum_exp(z) - z[target]
}

/// The summed cross-entropy of the LM head: Σ over tokens with a target ≥ 0 of
/// −log softmax(W x_t)[target_t] (x [T, d], W [V, d]); tokens with a negative target are not
/// scored.
pub fn linear_cross_entropy(x: &[f64], w: &[f64], targets: &[i32], d: usize) -> f64 {
    let mut loss = 0.0;
    for (t, &y) in targets.iter().enumerate() {
        if y >= 0 {
            loss += cross_entropy(&logits(x, w, d, t), y as usize);
        }
    }
    loss
}

/// The gradients (dx, dW) of `scale` · [`linear_cross_entropy`]:
/// dz = scale · (softmax(z) − onehot(target)), dx = dz W, dW = Σ_t dz ⊗ x_t.
pub fn linear_cross_entropy_backward(
    x: &[f64],
    w: &[f64],
    targets: &[i32],
    d: usize,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
    for (t, &y) in targets.iter().enumerate() {
        if y < 0 {
            continue;
        }
        let z = logits(x, w, d, t);
        let lse = log_sum_exp(&z);
        for (j, zj) in z.iter().enumerate() {
            let onehot = if j == y as usize { 1.0 } else { 0.0 };
            let dz = scale * ((zj - lse).exp() - onehot);
            for c in 0..d {
                dx[t * d + c] += dz * w[j * d + c];
                dw[j * d + c] += dz * x[t * d + c];
            }
        }
    }
    (dx, dw)
}

/// What [`attention`] computes: O and the log-sum-exp of each (query, head); dQ, dK, dV when
/// dO was given (else empty).
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionReference {
    pub o: Vec<f64>,
    pub lse: Vec<f64>,
    pub dq: Vec<f64>,
    pub dk: Vec<f64>,
    pub dv: Vec<f64>,
}

/// Causal grouped-query attention of queries `q` [Tq, heads · hd] against keys `k` and values
/// `v` [Tk, kv_heads · hd], segment by segment: segment s holds queries `qs[s]..qs[s+1]` and keys
/// `ks[s]..ks[s+1]`, its queries being its last keys (decoding against a cache; `qs == ks` is
/// ordinary causal attention). The query at key position p of its segment sees the keys at
/// positions p − window < j ≤ p, with scores scaled by `s.scale`; query head h reads KV head
/// h / (heads / kv_heads). With `dout`, also the gradients of Σ dO ⊙ O.
pub fn attention(
    (q, k, v): (&[f64], &[f64], &[f64]),
    dout: Option<&[f64]>,
    qs: &[usize],
    ks: &[usize],
    s: AttentionShape,
) -> AttentionReference {
    let (heads, kv_heads, hd) = (s.heads, s.kv_heads, s.head_dim);
    let (tq, tk) = (
        qs.last().copied().unwrap_or(0),
        ks.last().copied().unwrap_or(0),
    );
    let scale = f64::from(s.scale);
    // Gradients only when dO is given.
    let (dq_len, dkv_len) = match dout {
        Some(_) => (tq * heads * hd, tk * kv_heads * hd),
        None => (0, 0),
    };
    let mut r = AttentionReference {
        o: vec![0.0; tq * heads * hd],
        lse: vec![0.0; tq * heads],
        dq: vec![0.0; dq_len],
        dk: vec![0.0; dkv_len],
        dv: vec![0.0; dkv_len],
    };
    for (qw, kw) in qs.windows(2).zip(ks.windows(2)) {
        // Queries are the last keys of their segment.
        let offset = (kw[1] - kw[0]) - (qw[1] - qw[0]);
        for i in qw[0]..qw[1] {
            for h in 0..heads {
                let g = h / (heads / kv_heads);
                let row = (i * heads + h) * hd;
                let key = |j: usize| (j * kv_heads + g) * hd;
                let qi = &q[row..row + hd];
                let p = offset + (i - qw[0]);
                let first = s.window.map_or(0, |w| (p + 1).saturating_sub(w));
                let keys = kw[0] + first..=kw[0] + p;
                let scores: Vec<f64> = keys
                    .clone()
                    .map(|j| (0..hd).map(|d| qi[d] * k[key(j) + d]).sum::<f64>() * scale)
                    .collect();
                let lse = log_sum_exp(&scores);
                r.lse[i * heads + h] = lse;
                let probs: Vec<f64> = scores.iter().map(|x| (x - lse).exp()).collect();
                for (pj, j) in probs.iter().zip(keys.clone()) {
                    for d in 0..hd {
                        r.o[row + d] += pj * v[key(j) + d];
                    }
                }
                let Some(dout) = dout else { continue };
                let doi = &dout[row..row + hd];
                let big_d: f64 = (0..hd).map(|d| doi[d] * r.o[row + d]).sum();
                for (pj, j) in probs.iter().zip(keys) {
                    let dp: f64 = (0..hd).map(|d| doi[d] * v[key(j) + d]).sum();
                    let ds = pj * (dp - big_d) * scale;
                    for d in 0..hd {
                        r.dq[row + d] += ds * k[key(j) + d];
                        r.dk[key(j) + d] += ds * qi[d];
                        r.dv[key(j) + d] += pj * doi[d];
                    }
                }
            }
        }
    }
    r
}

/// O of [`super::attention::attention_decode_forward`]: queries `q` [Tq, heads · hd], sequence
/// s holding queries `qs[s]..qs[s+1]` and the cache `caches[s]` = (K, V, len), K and V row-major
/// `[capacity, kv_heads · hd]` of which the first `len` rows are its keys and values. The same
/// function as [`attention`] over the caches' valid rows packed one after another.
pub fn attention_decode(
    q: &[f64],
    caches: &[(&[f64], &[f64], usize)],
    qs: &[usize],
    s: AttentionShape,
) -> Vec<f64> {
    let kv_dim = s.kv_heads * s.head_dim;
    let (mut k, mut v, mut ks) = (Vec::new(), Vec::new(), vec![0]);
    for &(ck, cv, len) in caches {
        k.extend_from_slice(&ck[..len * kv_dim]);
        v.extend_from_slice(&cv[..len * kv_dim]);
        ks.push(ks[ks.len() - 1] + len);
    }
    attention((q, &k, &v), None, qs, &ks, s).o
}

/// One AdamW step (decoupled weight decay, bias-corrected moments) on `p`, `m`, `v` with the
/// gradient `g`; `step` counts from 1. The hyperparameters are taken as the f32 values the op
/// receives.
pub fn adamw_step(
    p: &mut [f64],
    m: &mut [f64],
    v: &mut [f64],
    g: &[f64],
    step: u64,
    hp: AdamWParams,
) {
    let (lr, b1, b2, eps, wd) = (
        f64::from(hp.lr),
        f64::from(hp.beta1),
        f64::from(hp.beta2),
        f64::from(hp.eps),
        f64::from(hp.weight_decay),
    );
    let t = step as i32;
    for i in 0..p.len() {
        p[i] *= 1.0 - lr * wd;
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        let mhat = m[i] / (1.0 - b1.powi(t));
        let vhat = v[i] / (1.0 - b2.powi(t));
        p[i] -= lr * mhat / (vhat.sqrt() + eps);
    }
}

#[cfg(test)]
mod tests {
    //! Each backward reference against central differences of its forward reference.
    use super::*;
    use crate::ops::oracle::{fd_check, pseudo_random, to_f64};
    use crate::ops::rope::{inv_freq, RopeScaling};

    fn f32s(x: &[f64]) -> Vec<f32> {
        x.iter().map(|&v| v as f32).collect()
    }

    /// Σ dy ⊙ y: the scalar whose gradient a backward pass computes.
    fn dot(y: &[f64], dy: &[f32]) -> f64 {
        y.iter().zip(dy).map(|(a, b)| a * f64::from(*b)).sum()
    }

    #[test]
    fn rmsnorm_backward_is_the_gradient_of_rmsnorm() {
        let (rows, d, eps) = (3, 5, 1e-5);
        let (x, w, dy) = (
            pseudo_random(rows * d, 1),
            pseudo_random(d, 2),
            pseudo_random(rows * d, 3),
        );
        let (xf, wf) = (to_f64(&x), to_f64(&w));
        let (dx, dw) = rmsnorm_backward(&xf, &wf, &to_f64(&dy), eps);
        fd_check(&x, &f32s(&dx), |x| dot(&rmsnorm(x, &wf, eps).0, &dy), 1e-4);
        fd_check(&w, &f32s(&dw), |w| dot(&rmsnorm(&xf, w, eps).0, &dy), 1e-4);
    }

    #[test]
    fn inverse_rope_is_the_gradient_of_rope() {
        let (heads, positions) = (2, [3u32, 0, 7]);
        let inv = inv_freq(4, 100.0, RopeScaling::Default);
        let n = positions.len() * heads * 4;
        let (x, dy) = (pseudo_random(n, 1), pseudo_random(n, 2));
        let dx = rope(&to_f64(&dy), heads, &positions, &inv, true);
        fd_check(
            &x,
            &f32s(&dx),
            |x| dot(&rope(x, heads, &positions, &inv, false), &dy),
            1e-4,
        );
    }

    #[test]
    fn gated_backward_is_the_gradient_of_gated() {
        let n = 12;
        let g: Vec<f32> = pseudo_random(n, 4).iter().map(|v| v * 4.0).collect();
        let (u, dh) = (pseudo_random(n, 5), pseudo_random(n, 6));
        let (gf, uf) = (to_f64(&g), to_f64(&u));
        for act in [GateActivation::Silu, GateActivation::GeluTanh] {
            let (dg, du) = gated_backward(act, &gf, &uf, &to_f64(&dh));
            fd_check(&g, &f32s(&dg), |g| dot(&gated(act, g, &uf), &dh), 1e-4);
            fd_check(&u, &f32s(&du), |u| dot(&gated(act, &gf, u), &dh), 1e-4);
        }
    }

    #[test]
    fn cross_entropy_backward_is_the_gradient_of_cross_entropy() {
        let (t, d, v) = (4, 3, 6);
        let targets = [2, -100, 0, 5];
        let x: Vec<f32> = pseudo_random(t * d, 1).iter().map(|a| a * 3.0).collect();
        let w = pseudo_random(v * d, 2);
        let (xf, wf) = (to_f64(&x), to_f64(&w));
        let (dx, dw) = linear_cross_entropy_backward(&xf, &wf, &targets, d, 0.5);
        let loss = |x: &[f64], w: &[f64]| 0.5 * linear_cross_entropy(x, w, &targets, d);
        fd_check(&x, &f32s(&dx), |x| loss(x, &wf), 1e-4);
        fd_check(&w, &f32s(&dw), |w| loss(&xf, w), 1e-4);
    }

    #[test]
    fn attention_backward_is_the_gradient_of_attention() {
        // Two segments, a window shorter than the first, a custom scale, two query heads per KV
        // head.
        let shape = AttentionShape {
            scale: 0.6,
            window: Some(3),
            ..AttentionShape::new(4, 2, 3)
        };
        let starts = [0, 5, 7];
        let (qn, kn) = (7 * 4 * 3, 7 * 2 * 3);
        let (q, k, v, dout) = (
            pseudo_random(qn, 1),
            pseudo_random(kn, 2),
            pseudo_random(kn, 3),
            pseudo_random(qn, 4),
        );
        let (qf, kf, vf) = (to_f64(&q), to_f64(&k), to_f64(&v));
        let r = attention(
            (&qf, &kf, &vf),
            Some(&to_f64(&dout)),
            &starts,
            &starts,
            shape,
        );
        let o = |q: &[f64], k: &[f64], v: &[f64]| {
            dot(
                &attention((q, k, v), None, &starts, &starts, shape).o,
                &dout,
            )
        };
        fd_check(&q, &f32s(&r.dq), |q| o(q, &kf, &vf), 1e-4);
        fd_check(&k, &f32s(&r.dk), |k| o(&qf, k, &vf), 1e-4);
        fd_check(&v, &f32s(&r.dv), |v| o(&qf, &kf, v), 1e-4);
    }
}
