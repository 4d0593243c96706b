//! The output head fused with masked softmax cross-entropy, computed in chunks over the
//! vocabulary so the [T, V] logits need never exist at once: without a budget for them,
//! activation memory is O(T · chunk).
//!
//! For each token t with a target (targets[t] >= 0; -1 means "not scored"):
//! ```text
//! z = W x_t (W is [V, d]),  lse_t = log Σ_j exp z_j,  log p_t = z_{target} − lse_t.
//! ```
//! The forward pass keeps a running max and sum per row across chunks (online log-sum-exp).
//! The backward pass needs the logits again:
//! ```text
//! dz_j = scale · (softmax_j − 1[j = target]),  dx = dzᵀ W,  dW += dz xᵀ
//! ```
//! Recomputing them costs a third GEMM as large as the forward's. So the forward keeps, in f32,
//! the scored rows' logits of as many vocabulary chunks as fit `keep_logits_bytes` (all of them
//! when n · V · 4 bytes fit), and the backward turns those into dz in place; only the chunks past
//! the budget are recomputed. Kept logits are f32, not the activation dtype: the backward needs
//! softmax − 1 at the target to f32 accuracy (a bf16 logit of 20 is off by 0.06, a 6 % error in
//! its probability), and kept f32 logits are the very numbers a recompute would give, so both
//! paths compute the same function.
//!
//! Everything the backward needs (log-sum-exp, the scored rows, kept logits) and the per-token
//! log-probabilities stay on x's device; only the loss sum and the count come to the host.

use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::ops::matmul::{gemm_f32, Trans};
use crate::{Device, Tensor};

/// Targets at or below this are not scored.
pub const IGNORE: i32 = -1;

/// What the forward pass returns (and the backward pass consumes). Its tensors are on x's device.
#[derive(Debug)]
pub struct CrossEntropy {
    /// Σ over scored tokens of −log p(target) (summed in f64).
    pub loss_sum: f64,
    /// How many tokens were scored.
    pub count: usize,
    /// log p(target) per token, `[T]` f32; 0 where the token is not scored. On the host through
    /// [`Self::token_logprobs`].
    pub logprob: Tensor,
    /// Log-sum-exp of each scored token's logits, `[count]` f32, in token order.
    pub lse: Tensor,
    /// The scored tokens' logits over the first [`Self::kept_columns`] vocabulary entries,
    /// `[count, kept_columns]` f32, kept for the backward; `None` when none fit the budget.
    pub kept_logits: Option<Tensor>,
    /// The tokens of the batch (the length of the targets).
    tokens: usize,
    /// Which tokens are scored, where the backward needs them.
    rows: ScoredRows,
}

/// The scored tokens on the device that computes with them.
#[derive(Debug)]
enum ScoredRows {
    Cpu(Vec<usize>),
    Cuda(super::cuda::cross_entropy::DeviceRows),
}

impl CrossEntropy {
    /// log p(target) of every token on the host (0 where unscored): what scoring and
    /// evaluation read; training needs only `loss_sum` and `count`.
    pub fn token_logprobs(&self) -> Result<Vec<f32>> {
        self.logprob.to_f32_vec()
    }

    /// How many vocabulary entries (from the first) have their logits kept for the backward.
    pub fn kept_columns(&self) -> usize {
        self.kept_logits
            .as_ref()
            .and_then(|k| k.shape().get(1).copied())
            .unwrap_or(0)
    }

    pub(crate) fn new_cuda(
        loss_sum: f64,
        (logprob, lse, kept_logits): (Tensor, Tensor, Option<Tensor>),
        tokens: usize,
        rows: super::cuda::cross_entropy::DeviceRows,
    ) -> Self {
        Self {
            loss_sum,
            count: rows.count,
            logprob,
            lse,
            kept_logits,
            tokens,
            rows: ScoredRows::Cuda(rows),
        }
    }
}

/// Bytes of f32 logits one scored token needs per vocabulary entry kept.
const LOGIT_BYTES: usize = 4;

/// How many vocabulary entries (from the first) have their logits kept for `n` scored tokens
/// within `budget_bytes`: all `v` when they fit, else whole chunks of `chunk` (so no chunk is
/// part kept, part recomputed), possibly none.
pub fn kept_columns(n: usize, v: usize, chunk: usize, budget_bytes: usize) -> usize {
    if n == 0 || chunk == 0 {
        return 0;
    }
    let fit = budget_bytes / (n * LOGIT_BYTES);
    if fit >= v {
        v
    } else {
        fit / chunk * chunk
    }
}

/// The bytes of kept logits for `n` scored tokens of a `v`-entry vocabulary under `budget_bytes`
/// (what a memory estimate counts).
pub fn kept_logits_bytes(n: usize, v: usize, chunk: usize, budget_bytes: usize) -> usize {
    n * kept_columns(n, v, chunk, budget_bytes) * LOGIT_BYTES
}

fn check(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    targets: &[i32],
    chunk: usize,
) -> Result<(usize, usize, usize)> {
    let (t, d) = match *x.shape() {
        [t, d] => (t, d),
        _ => {
            return Err(KernelError::Invalid {
                op,
                message: format!("x must be [T, d], found {:?}", x.shape()),
            })
        }
    };
    let v = w.shape().first().copied().unwrap_or(0);
    w.expect_shape(op, "head weight", &[v, d])?;
    if targets.len() != t {
        return Err(KernelError::Shape {
            op,
            what: "targets",
            expected: vec![t],
            found: vec![targets.len()],
        });
    }
    if chunk == 0 {
        return Err(KernelError::Invalid {
            op,
            message: "vocabulary chunk must be >= 1".into(),
        });
    }
    if let Some(i) = targets.iter().position(|&y| y >= v as i32 || y < IGNORE) {
        return Err(KernelError::Invalid {
            op,
            message: format!(
                "token {i} has target {} but the vocabulary has {v} entries",
                targets[i]
            ),
        });
    }
    Ok((t, d, v))
}

/// The scored rows of x, packed.
fn gather(x: &[f32], d: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * d);
    for &r in rows {
        out.extend_from_slice(&x[r * d..(r + 1) * d]);
    }
    out
}

/// Forward pass; `chunk` is the number of vocabulary rows per step, and the logits of the
/// scored tokens are kept for the backward as far as `keep_logits_bytes` allows (0 when no
/// backward follows).
pub fn linear_cross_entropy_forward(
    x: &Tensor,
    w: &Tensor,
    targets: &[i32],
    chunk: usize,
    keep_logits_bytes: usize,
) -> Result<CrossEntropy> {
    let _profile = crate::profile::scope("linear_cross_entropy_forward", x.device());
    const OP: &str = "linear_cross_entropy_forward";
    let (t, d, v) = check(OP, x, w, targets, chunk)?;
    if let Device::Cuda(b) = x.device() {
        return super::cuda::cross_entropy::forward(b, x, w, targets, chunk, keep_logits_bytes);
    }
    let (xs, ws) = (x.cpu_data(OP)?, w.cpu_data(OP)?);
    let scored: Vec<usize> = (0..t).filter(|&i| targets[i] >= 0).collect();
    let n = scored.len();
    let kept_cols = kept_columns(n, v, chunk, keep_logits_bytes);
    let xsel = gather(xs, d, &scored);
    let mut max = vec![f32::NEG_INFINITY; n];
    let mut sum = vec![0.0f32; n];
    let mut target_logit = vec![0.0f32; n];
    // Kept chunks are written where the backward will find them ([n, kept_cols]); the others go
    // to a scratch chunk.
    let mut kept = vec![0.0f32; n * kept_cols];
    let mut scratch = vec![0.0f32; if kept_cols < v { n * chunk.min(v) } else { 0 }];
    for c0 in (0..v).step_by(chunk) {
        let cw = chunk.min(v - c0);
        let (z, ld) = if c0 < kept_cols {
            (&mut kept[c0..], kept_cols)
        } else {
            (&mut scratch[..], cw)
        };
        gemm_f32(
            n,
            cw,
            d,
            &xsel,
            d,
            Trans::N,
            &ws[c0 * d..],
            d,
            Trans::T,
            z,
            ld,
            1.0,
            0.0,
        );
        // Rows are independent: each keeps its own running max and sum, in the same order as a
        // serial loop would, so the result does not depend on the thread count.
        z.par_chunks(ld)
            .zip(max.par_iter_mut())
            .zip(sum.par_iter_mut())
            .zip(target_logit.par_iter_mut())
            .zip(scored.par_iter())
            .for_each(|((((row, max), sum), target_logit), &token)| {
                let row = &row[..cw];
                let m = row.iter().copied().fold(*max, f32::max);
                *sum = *sum * (*max - m).exp() + row.iter().map(|&l| (l - m).exp()).sum::<f32>();
                *max = m;
                let y = targets[token] as usize;
                if (c0..c0 + cw).contains(&y) {
                    *target_logit = row[y - c0];
                }
            });
    }
    let lse: Vec<f32> = max.iter().zip(&sum).map(|(m, s)| m + s.ln()).collect();
    let mut logprob = vec![0.0f32; t];
    let mut loss_sum = 0.0f64;
    for (r, &i) in scored.iter().enumerate() {
        logprob[i] = target_logit[r] - lse[r];
        loss_sum -= logprob[i] as f64;
    }
    let kept_logits = if kept_cols > 0 {
        Some(Tensor::cpu(&[n, kept_cols], kept)?)
    } else {
        None
    };
    Ok(CrossEntropy {
        loss_sum,
        count: n,
        logprob: Tensor::cpu(&[t], logprob)?,
        lse: Tensor::cpu(&[n], lse)?,
        kept_logits,
        tokens: t,
        rows: ScoredRows::Cpu(scored),
    })
}

/// Refuses a forward state computed for other targets (or on another device than x).
fn check_forward(
    op: &'static str,
    forward: &CrossEntropy,
    x: &Tensor,
    targets: &[i32],
) -> Result<()> {
    let count = targets.iter().filter(|&&y| y >= 0).count();
    let rows_match = match &forward.rows {
        ScoredRows::Cpu(rows) => {
            rows.len() == count && rows.iter().all(|&i| i < targets.len() && targets[i] >= 0)
        }
        ScoredRows::Cuda(rows) => rows.count == count,
    };
    if forward.tokens != targets.len() || forward.count != count || !rows_match {
        return Err(KernelError::Invalid {
            op,
            message: format!(
                "the saved forward state ({} tokens, {} scored) does not belong to these \
                 targets ({} tokens, {count} scored)",
                forward.tokens,
                forward.count,
                targets.len()
            ),
        });
    }
    if !forward.lse.device().same(x.device()) {
        return Err(KernelError::Invalid {
            op,
            message: format!(
                "the saved forward state is on {} but x is on {}",
                forward.lse.device(),
                x.device()
            ),
        });
    }
    Ok(())
}

/// dz = scale · (softmax − onehot(target)) in place over the `[n, cw]` logits `z` (row stride
/// `ld`) of vocabulary entries `c0..c0 + cw`; rows in parallel (an exp per logit: with every
/// logit kept, n · V of them in one call).
fn dlogits_in_place(
    z: &mut [f32],
    ld: usize,
    (n, c0, cw): (usize, usize, usize),
    target: impl Fn(usize) -> usize + Sync,
    lse: &[f32],
    scale: f32,
) {
    z.par_chunks_mut(ld)
        .zip(lse)
        .take(n)
        .enumerate()
        .for_each(|(r, (row, &lse_r))| {
            let y = target(r);
            for (j, l) in row[..cw].iter_mut().enumerate() {
                let onehot = if c0 + j == y { 1.0 } else { 0.0 };
                *l = scale * ((*l - lse_r).exp() - onehot);
            }
        });
}

/// dx_sel += dz W_c and (when asked) dW_c += dzᵀ x_sel for the `[n, cw]` dlogits `dz` (row stride
/// `ld`) of vocabulary entries `c0..c0 + cw`.
#[allow(clippy::too_many_arguments)]
fn accumulate_gradients(
    dz: &[f32],
    ld: usize,
    (n, d, c0, cw): (usize, usize, usize, usize),
    w: &[f32],
    xsel: &[f32],
    dxsel: &mut [f32],
    dw: Option<&mut [f32]>,
) {
    gemm_f32(
        n,
        d,
        cw,
        dz,
        ld,
        Trans::N,
        &w[c0 * d..],
        d,
        Trans::N,
        dxsel,
        d,
        1.0,
        1.0,
    );
    if let Some(dw) = dw {
        gemm_f32(
            cw,
            d,
            n,
            dz,
            ld,
            Trans::T,
            xsel,
            d,
            Trans::N,
            &mut dw[c0 * d..],
            d,
            1.0,
            1.0,
        );
    }
}

/// Backward pass of `scale · Σ −log p` (scale = 1/count for the mean loss). Consumes the
/// forward's state (its kept logits become dz in place). Returns dx [T, d] (zero on unscored
/// rows) and adds the head's gradient into `dw` when given. Vocabulary entries whose logits were
/// not kept are recomputed `chunk` rows at a time.
pub fn linear_cross_entropy_backward(
    x: &Tensor,
    w: &Tensor,
    targets: &[i32],
    forward: CrossEntropy,
    scale: f32,
    chunk: usize,
    dw: Option<&mut Tensor>,
) -> Result<Tensor> {
    let _profile = crate::profile::scope("linear_cross_entropy_backward", x.device());
    const OP: &str = "linear_cross_entropy_backward";
    let (t, d, v) = check(OP, x, w, targets, chunk)?;
    check_forward(OP, &forward, x, targets)?;
    let kept_cols = forward.kept_columns();
    if kept_cols > v {
        return Err(KernelError::Invalid {
            op: OP,
            message: format!("{kept_cols} kept logit columns for a vocabulary of {v}"),
        });
    }
    let CrossEntropy {
        lse,
        kept_logits,
        rows,
        ..
    } = forward;
    let scored = match rows {
        ScoredRows::Cpu(scored) => scored,
        ScoredRows::Cuda(rows) => {
            let Device::Cuda(b) = x.device() else {
                return Err(KernelError::Invalid {
                    op: OP,
                    message: format!(
                        "the saved forward state is on CUDA but x is on {}",
                        x.device()
                    ),
                });
            };
            let saved = (lse, kept_logits, rows);
            return super::cuda::cross_entropy::backward(b, x, w, saved, scale, chunk, dw);
        }
    };
    let mut dw = match dw {
        Some(g) => {
            g.expect_shape(OP, "dW", &[v, d])?;
            Some(g.cpu_data_mut(OP)?)
        }
        None => None,
    };
    let (xs, ws) = (x.cpu_data(OP)?, w.cpu_data(OP)?);
    let lse = lse.cpu_data(OP)?;
    let n = scored.len();
    let target = |r: usize| targets[scored[r]] as usize;
    let xsel = gather(xs, d, &scored);
    let mut dxsel = vec![0.0f32; n * d];
    // The kept logits: dz in place, then one GEMM each for dx and dW over all their columns.
    if let Some(mut kept) = kept_logits {
        let z = kept.cpu_data_mut(OP)?;
        dlogits_in_place(z, kept_cols, (n, 0, kept_cols), target, lse, scale);
        let shape = (n, d, 0, kept_cols);
        accumulate_gradients(
            z,
            kept_cols,
            shape,
            ws,
            &xsel,
            &mut dxsel,
            dw.as_deref_mut(),
        );
    }
    // The rest: recomputed a chunk at a time.
    let mut dz = vec![0.0f32; if kept_cols < v { n * chunk.min(v) } else { 0 }];
    for c0 in (kept_cols..v).step_by(chunk) {
        let cw = chunk.min(v - c0);
        let z = &mut dz[..n * cw];
        gemm_f32(
            n,
            cw,
            d,
            &xsel,
            d,
            Trans::N,
            &ws[c0 * d..],
            d,
            Trans::T,
            z,
            cw,
            1.0,
            0.0,
        );
        dlogits_in_place(z, cw, (n, c0, cw), target, lse, scale);
        let shape = (n, d, c0, cw);
        accumulate_gradients(z, cw, shape, ws, &xsel, &mut dxsel, dw.as_deref_mut());
    }
    let mut dx = vec![0.0f32; t * d];
    for (r, &i) in scored.iter().enumerate() {
        dx[i * d..(i + 1) * d].copy_from_slice(&dxsel[r * d..(r + 1) * d]);
    }
    Tensor::cpu(&[t, d], dx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::oracle::{fd_check, pseudo_random, to_f64};

    use crate::ops::reference::linear_cross_entropy as reference;

    /// Budgets that keep no logits, part of the vocabulary, and all of it.
    fn budgets(n: usize, v: usize) -> [usize; 3] {
        [0, n * 4 * v / 2, usize::MAX]
    }

    #[test]
    fn chunked_loss_and_gradients_match_dense_reference() {
        let (t, d, v) = (5, 4, 7);
        let targets = [3, IGNORE, 0, 6, IGNORE];
        let x: Vec<f32> = pseudo_random(t * d, 1).iter().map(|a| a * 3.0).collect();
        let w = pseudo_random(v * d, 2);
        let (xt, wt) = (
            Tensor::cpu(&[t, d], x.clone()).unwrap(),
            Tensor::cpu(&[v, d], w.clone()).unwrap(),
        );
        let (xf, wf) = (to_f64(&x), to_f64(&w));
        for chunk in [1, 3, 7, 100] {
            for budget in budgets(3, v) {
                let fwd = linear_cross_entropy_forward(&xt, &wt, &targets, chunk, budget).unwrap();
                let what = format!("chunk {chunk}, {} kept", fwd.kept_columns());
                let want = reference(&xf, &wf, &targets, d);
                assert!(
                    (fwd.loss_sum - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "{what}: {} vs {want}",
                    fwd.loss_sum
                );
                assert_eq!(fwd.count, 3);
                assert_eq!(fwd.token_logprobs().unwrap()[1], 0.0);
                let mut dw = Tensor::cpu(&[v, d], vec![0.0; v * d]).unwrap();
                let dx = linear_cross_entropy_backward(
                    &xt,
                    &wt,
                    &targets,
                    fwd,
                    0.5,
                    chunk,
                    Some(&mut dw),
                )
                .unwrap();
                fd_check(
                    &x,
                    &dx.to_f32_vec().unwrap(),
                    |x| 0.5 * reference(x, &wf, &targets, d),
                    1e-4,
                );
                fd_check(
                    &w,
                    &dw.to_f32_vec().unwrap(),
                    |w| 0.5 * reference(&xf, w, &targets, d),
                    1e-4,
                );
            }
        }
    }

    #[test]
    fn the_budget_keeps_whole_chunks_or_the_whole_vocabulary() {
        // 3 scored tokens, 10 entries, chunks of 4: 12 bytes per entry.
        assert_eq!(kept_columns(3, 10, 4, 0), 0);
        assert_eq!(kept_columns(3, 10, 4, 12 * 4 - 1), 0);
        assert_eq!(kept_columns(3, 10, 4, 12 * 4), 4);
        assert_eq!(kept_columns(3, 10, 4, 12 * 9), 8);
        assert_eq!(kept_columns(3, 10, 4, 12 * 10), 10);
        assert_eq!(kept_columns(0, 10, 4, usize::MAX), 0);
        assert_eq!(kept_logits_bytes(3, 10, 4, 12 * 9), 3 * 8 * 4);
        let x = Tensor::cpu(&[3, 2], vec![0.5; 6]).unwrap();
        let w = Tensor::cpu(&[10, 2], vec![0.25; 20]).unwrap();
        let fwd = linear_cross_entropy_forward(&x, &w, &[1, 9, 4], 4, 12 * 9).unwrap();
        assert_eq!(fwd.kept_logits.as_ref().unwrap().shape(), &[3, 8]);
    }

    #[test]
    fn a_forward_state_of_other_targets_is_refused() {
        let x = Tensor::cpu(&[3, 2], vec![0.5; 6]).unwrap();
        let w = Tensor::cpu(&[4, 2], vec![0.25; 8]).unwrap();
        let fwd = linear_cross_entropy_forward(&x, &w, &[1, IGNORE, 3], 2, 0).unwrap();
        let err = linear_cross_entropy_backward(&x, &w, &[1, 2, 3], fwd, 1.0, 2, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2 scored") && err.contains("3 scored"),
            "{err}"
        );
    }

    #[test]
    fn target_outside_vocabulary_names_the_token() {
        let x = Tensor::cpu(&[2, 2], vec![0.0; 4]).unwrap();
        let w = Tensor::cpu(&[3, 2], vec![0.0; 6]).unwrap();
        let err = linear_cross_entropy_forward(&x, &w, &[0, 3], 2, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("token 1") && err.contains("target 3"), "{err}");
    }
}
