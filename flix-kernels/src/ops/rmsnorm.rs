//! RMSNorm as Llama uses it: y = x / sqrt(mean(x²) + eps) · w, per row. The forward pass saves
//! the reciprocal RMS of each row; the backward pass needs only that, x, w and dY:
//!
//! ```text
//! dx = rstd · (w ⊙ dy − x̂ · mean(x̂ ⊙ w ⊙ dy)),   x̂ = x · rstd,   dw += Σ_rows dy ⊙ x̂
//! ```

use crate::error::{KernelError, Result};
use crate::{DType, Device, Tensor};

fn rows_dim(op: &'static str, x: &Tensor, w: &Tensor) -> Result<(usize, usize)> {
    let d = w.numel();
    w.expect_shape(op, "weight", &[d])?;
    if x.shape().len() != 2 || x.shape()[1] != d {
        return Err(KernelError::Shape {
            op,
            what: "x",
            expected: vec![x.shape().first().copied().unwrap_or(0), d],
            found: x.shape().to_vec(),
        });
    }
    Ok((x.shape()[0], d))
}

/// Returns (y [T, d], rstd [T]); rstd is f32 on x's device, for [`rmsnorm_backward`].
pub fn rmsnorm_forward(x: &Tensor, w: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    let _profile = crate::profile::scope("rmsnorm_forward", x.device());
    const OP: &str = "rmsnorm_forward";
    let (rows, d) = rows_dim(OP, x, w)?;
    match x.device() {
        Device::Cpu => {
            let (xs, ws) = (x.cpu_data(OP)?, w.cpu_data(OP)?);
            let mut y = vec![0.0f32; rows * d];
            let mut rstd = vec![0.0f32; rows];
            for r in 0..rows {
                let row = &xs[r * d..(r + 1) * d];
                let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
                let s = (1.0 / (ms + eps as f64).sqrt()) as f32;
                rstd[r] = s;
                for ((o, &xv), &wv) in y[r * d..(r + 1) * d].iter_mut().zip(row).zip(ws) {
                    // transformers normalises in f32 and then multiplies by the weight.
                    *o = wv * (xv * s);
                }
            }
            Ok((Tensor::cpu(&[rows, d], y)?, Tensor::cpu(&[rows], rstd)?))
        }
        Device::Cuda(b) => super::cuda::rmsnorm::rmsnorm_forward(b, x, w, eps),
    }
}

/// Returns dX; adds the weight gradient into `dw` when given.
pub fn rmsnorm_backward(
    dy: &Tensor,
    x: &Tensor,
    w: &Tensor,
    rstd: &Tensor,
    dw: Option<&mut Tensor>,
) -> Result<Tensor> {
    let _profile = crate::profile::scope("rmsnorm_backward", dy.device());
    const OP: &str = "rmsnorm_backward";
    let (rows, d) = rows_dim(OP, x, w)?;
    dy.expect_shape(OP, "dY", &[rows, d])?;
    rstd.expect_shape(OP, "rstd", &[rows])?;
    rstd.expect_dtype(OP, "rstd", DType::F32)?;
    match x.device() {
        Device::Cpu => {
            let (xs, ws, g) = (x.cpu_data(OP)?, w.cpu_data(OP)?, dy.cpu_data(OP)?);
            let rstd = rstd.cpu_data(OP)?;
            let mut dx = vec![0.0f32; rows * d];
            let mut dw_acc = vec![0.0f64; d];
            for r in 0..rows {
                let (xr, gr) = (&xs[r * d..(r + 1) * d], &g[r * d..(r + 1) * d]);
                let s = rstd[r] as f64;
                let mut dot = 0.0f64;
                for i in 0..d {
                    let xhat = xr[i] as f64 * s;
                    dot += xhat * ws[i] as f64 * gr[i] as f64;
                    dw_acc[i] += gr[i] as f64 * xhat;
                }
                let mean = dot / d as f64;
                for i in 0..d {
                    let xhat = xr[i] as f64 * s;
                    dx[r * d + i] = (s * (ws[i] as f64 * gr[i] as f64 - xhat * mean)) as f32;
                }
            }
            if let Some(dw) = dw {
                dw.expect_shape(OP, "dW", &[d])?;
                for (a, b) in dw.cpu_data_mut(OP)?.iter_mut().zip(&dw_acc) {
                    *a += *b as f32;
                }
            }
            Tensor::cpu(&[rows, d], dx)
        }
        Device::Cuda(b) => super::cuda::rmsnorm::rmsnorm_backward(b, dy, x, w, rstd, dw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::oracle::{assert_close, fd_check, pseudo_random, to_f64};
    use crate::ops::reference;

    fn reference(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
        reference::rmsnorm(x, w, eps).0
    }

    #[test]
    fn forward_matches_reference_and_backward_matches_finite_differences() {
        let (rows, d, eps) = (3, 5, 1e-5);
        let x = pseudo_random(rows * d, 1);
        let w = pseudo_random(d, 2);
        let dy = pseudo_random(rows * d, 3);
        let xt = Tensor::cpu(&[rows, d], x.clone()).unwrap();
        let wt = Tensor::cpu(&[d], w.clone()).unwrap();
        let (y, rstd) = rmsnorm_forward(&xt, &wt, eps).unwrap();
        let want = reference(&to_f64(&x), &to_f64(&w), eps as f64);
        assert_close("y", &y.to_f32_vec().unwrap(), &want, 1e-5);

        let mut dw = Tensor::cpu(&[d], vec![0.0; d]).unwrap();
        let dyt = Tensor::cpu(&[rows, d], dy.clone()).unwrap();
        let dx = rmsnorm_backward(&dyt, &xt, &wt, &rstd, Some(&mut dw)).unwrap();
        let dot = |y: Vec<f64>| y.iter().zip(&dy).map(|(a, b)| a * *b as f64).sum::<f64>();
        let wf = to_f64(&w);
        fd_check(
            &x,
            &dx.to_f32_vec().unwrap(),
            |x| dot(reference(x, &wf, eps as f64)),
            1e-4,
        );
        let xf = to_f64(&x);
        fd_check(
            &w,
            &dw.to_f32_vec().unwrap(),
            |w| dot(reference(&xf, w, eps as f64)),
            1e-4,
        );
    }

    #[test]
    fn width_mismatch_is_an_error() {
        let x = Tensor::cpu(&[2, 4], vec![0.0; 8]).unwrap();
        let w = Tensor::cpu(&[3], vec![1.0; 3]).unwrap();
        assert!(rmsnorm_forward(&x, &w, 1e-5).is_err());
    }
}
