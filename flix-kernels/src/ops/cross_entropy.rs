//! The output head fused with masked softmax cross-entropy, computed in chunks over the
//! vocabulary so the [T, V] logits never exist at once: activation memory is O(T · chunk).
//!
//! For each token t with a target (targets[t] >= 0; -1 means "not scored"):
//! ```text
//! z = W x_t (W is [V, d]),  lse_t = log Σ_j exp z_j,  log p_t = z_{target} − lse_t.
//! ```
//! The forward pass keeps a running max and sum per row across chunks (online log-sum-exp).
//! The backward pass recomputes each chunk's logits from the saved lse:
//! ```text
//! dz_j = scale · (softmax_j − 1[j = target]),  dx = dzᵀ W,  dW += dz xᵀ
//! ```

use crate::error::{KernelError, Result};
use crate::ops::matmul::{gemm_f32, Trans};
use crate::{Device, Tensor};

/// Targets at or below this are not scored.
pub const IGNORE: i32 = -1;

/// What the forward pass returns (and the backward pass needs).
#[derive(Clone, Debug)]
pub struct CrossEntropy {
    /// Σ over scored tokens of −log p(target), accumulated in f64.
    pub loss_sum: f64,
    /// How many tokens were scored.
    pub count: usize,
    /// log p(target) per token; 0 where the token is not scored.
    pub logprob: Vec<f32>,
    /// Log-sum-exp of each scored token's logits, in the order of `scored`.
    pub lse: Vec<f32>,
    /// Indices of the scored tokens.
    pub scored: Vec<usize>,
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

/// Forward pass; `chunk` is the number of vocabulary rows per step.
pub fn linear_cross_entropy_forward(
    x: &Tensor,
    w: &Tensor,
    targets: &[i32],
    chunk: usize,
) -> Result<CrossEntropy> {
    let _profile = crate::profile::scope("linear_cross_entropy_forward", x.device());
    const OP: &str = "linear_cross_entropy_forward";
    let (t, d, v) = check(OP, x, w, targets, chunk)?;
    if let Device::Cuda(b) = x.device() {
        return super::cuda::cross_entropy::forward(b, x, w, targets, chunk);
    }
    let (xs, ws) = (x.cpu_data(OP)?, w.cpu_data(OP)?);
    let scored: Vec<usize> = (0..t).filter(|&i| targets[i] >= 0).collect();
    let n = scored.len();
    let xsel = gather(xs, d, &scored);
    let mut max = vec![f32::NEG_INFINITY; n];
    let mut sum = vec![0.0f32; n];
    let mut target_logit = vec![0.0f32; n];
    let mut logits = vec![0.0f32; n * chunk.min(v)];
    for c0 in (0..v).step_by(chunk) {
        let cw = chunk.min(v - c0);
        let z = &mut logits[..n * cw];
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
        for r in 0..n {
            let row = &z[r * cw..(r + 1) * cw];
            let m = row.iter().copied().fold(max[r], f32::max);
            sum[r] = sum[r] * (max[r] - m).exp() + row.iter().map(|&l| (l - m).exp()).sum::<f32>();
            max[r] = m;
            let y = targets[scored[r]] as usize;
            if (c0..c0 + cw).contains(&y) {
                target_logit[r] = row[y - c0];
            }
        }
    }
    let lse: Vec<f32> = max.iter().zip(&sum).map(|(m, s)| m + s.ln()).collect();
    let mut logprob = vec![0.0f32; t];
    let mut loss_sum = 0.0f64;
    for (r, &i) in scored.iter().enumerate() {
        logprob[i] = target_logit[r] - lse[r];
        loss_sum -= logprob[i] as f64;
    }
    Ok(CrossEntropy {
        loss_sum,
        count: n,
        logprob,
        lse,
        scored,
    })
}

/// Backward pass of `scale · Σ −log p` (scale = 1/count for the mean loss). Returns dx [T, d]
/// (zero on unscored rows) and adds the head's gradient into `dw` when given.
pub fn linear_cross_entropy_backward(
    x: &Tensor,
    w: &Tensor,
    targets: &[i32],
    forward: &CrossEntropy,
    scale: f32,
    chunk: usize,
    dw: Option<&mut Tensor>,
) -> Result<Tensor> {
    let _profile = crate::profile::scope("linear_cross_entropy_backward", x.device());
    const OP: &str = "linear_cross_entropy_backward";
    let (t, d, v) = check(OP, x, w, targets, chunk)?;
    let scored = &forward.scored;
    if forward.lse.len() != scored.len() || scored.iter().any(|&i| i >= t || targets[i] < 0) {
        return Err(KernelError::Invalid {
            op: OP,
            message: "the saved forward state does not belong to these targets".into(),
        });
    }
    if let Device::Cuda(b) = x.device() {
        return super::cuda::cross_entropy::backward(b, x, w, targets, forward, scale, chunk, dw);
    }
    let mut dw = match dw {
        Some(g) => {
            g.expect_shape(OP, "dW", &[v, d])?;
            Some(g.cpu_data_mut(OP)?)
        }
        None => None,
    };
    let (xs, ws) = (x.cpu_data(OP)?, w.cpu_data(OP)?);
    let n = scored.len();
    let xsel = gather(xs, d, scored);
    let mut dxsel = vec![0.0f32; n * d];
    let mut dz = vec![0.0f32; n * chunk.min(v)];
    for c0 in (0..v).step_by(chunk) {
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
        for r in 0..n {
            let y = targets[scored[r]] as usize;
            for (j, l) in z[r * cw..(r + 1) * cw].iter_mut().enumerate() {
                let onehot = if c0 + j == y { 1.0 } else { 0.0 };
                *l = scale * ((*l - forward.lse[r]).exp() - onehot);
            }
        }
        gemm_f32(
            n,
            d,
            cw,
            z,
            cw,
            Trans::N,
            &ws[c0 * d..],
            d,
            Trans::N,
            &mut dxsel,
            d,
            1.0,
            1.0,
        );
        if let Some(dw) = dw.as_deref_mut() {
            gemm_f32(
                cw,
                d,
                n,
                z,
                cw,
                Trans::T,
                &xsel,
                d,
                Trans::N,
                &mut dw[c0 * d..],
                d,
                1.0,
                1.0,
            );
        }
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
            let fwd = linear_cross_entropy_forward(&xt, &wt, &targets, chunk).unwrap();
            let want = reference(&xf, &wf, &targets, d);
            assert!(
                (fwd.loss_sum - want).abs() < 1e-5 * (1.0 + want.abs()),
                "chunk {chunk}: {} vs {want}",
                fwd.loss_sum
            );
            assert_eq!(fwd.count, 3);
            assert_eq!(fwd.logprob[1], 0.0);
            let mut dw = Tensor::cpu(&[v, d], vec![0.0; v * d]).unwrap();
            let dx =
                linear_cross_entropy_backward(&xt, &wt, &targets, &fwd, 0.5, chunk, Some(&mut dw))
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

    #[test]
    fn target_outside_vocabulary_names_the_token() {
        let x = Tensor::cpu(&[2, 2], vec![0.0; 4]).unwrap();
        let w = Tensor::cpu(&[3, 2], vec![0.0; 6]).unwrap();
        let err = linear_cross_entropy_forward(&x, &w, &[0, 3], 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("token 1") && err.contains("target 3"), "{err}");
    }
}
