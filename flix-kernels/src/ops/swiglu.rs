//! The SwiGLU gate of the Llama MLP: h = silu(g) ⊙ u, with silu(g) = g · σ(g).
//! Backward: dg = dh ⊙ u ⊙ σ(g)(1 + g(1 − σ(g))),  du = dh ⊙ silu(g).

use crate::error::Result;
use crate::{Device, Tensor};

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// h = silu(gate) ⊙ up; all [T, F].
pub fn swiglu_forward(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let _profile = crate::profile::scope("swiglu_forward", gate.device());
    const OP: &str = "swiglu_forward";
    up.expect_shape(OP, "up", gate.shape())?;
    match gate.device() {
        Device::Cpu => {
            let (g, u) = (gate.cpu_data(OP)?, up.cpu_data(OP)?);
            let h = g.iter().zip(u).map(|(&g, &u)| g * sigmoid(g) * u).collect();
            Tensor::cpu(gate.shape(), h)
        }
        Device::Cuda(b) => super::cuda::elementwise::swiglu_forward(b, gate, up),
    }
}

/// Returns (dGate, dUp).
pub fn swiglu_backward(dh: &Tensor, gate: &Tensor, up: &Tensor) -> Result<(Tensor, Tensor)> {
    let _profile = crate::profile::scope("swiglu_backward", gate.device());
    const OP: &str = "swiglu_backward";
    up.expect_shape(OP, "up", gate.shape())?;
    dh.expect_shape(OP, "dH", gate.shape())?;
    match gate.device() {
        Device::Cpu => {
            let (g, u, d) = (gate.cpu_data(OP)?, up.cpu_data(OP)?, dh.cpu_data(OP)?);
            let mut dg = vec![0.0f32; g.len()];
            let mut du = vec![0.0f32; g.len()];
            for i in 0..g.len() {
                let s = sigmoid(g[i]);
                du[i] = d[i] * g[i] * s;
                dg[i] = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
            }
            Ok((
                Tensor::cpu(gate.shape(), dg)?,
                Tensor::cpu(gate.shape(), du)?,
            ))
        }
        Device::Cuda(b) => super::cuda::elementwise::swiglu_backward(b, dh, gate, up),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::oracle::{assert_close, fd_check, pseudo_random, to_f64};

    fn reference(g: &[f64], u: &[f64]) -> Vec<f64> {
        g.iter()
            .zip(u)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect()
    }

    #[test]
    fn forward_and_backward_match_the_oracle() {
        let n = 12;
        let g: Vec<f32> = pseudo_random(n, 1).iter().map(|v| v * 4.0).collect();
        let u = pseudo_random(n, 2);
        let dh = pseudo_random(n, 3);
        let (gt, ut) = (
            Tensor::cpu(&[3, 4], g.clone()).unwrap(),
            Tensor::cpu(&[3, 4], u.clone()).unwrap(),
        );
        let h = swiglu_forward(&gt, &ut).unwrap();
        assert_close(
            "h",
            &h.to_f32_vec().unwrap(),
            &reference(&to_f64(&g), &to_f64(&u)),
            1e-6,
        );
        let (dg, du) =
            swiglu_backward(&Tensor::cpu(&[3, 4], dh.clone()).unwrap(), &gt, &ut).unwrap();
        let dot = |y: Vec<f64>| y.iter().zip(&dh).map(|(a, b)| a * *b as f64).sum::<f64>();
        let (gf, uf) = (to_f64(&g), to_f64(&u));
        fd_check(
            &g,
            &dg.to_f32_vec().unwrap(),
            |g| dot(reference(g, &uf)),
            1e-4,
        );
        fd_check(
            &u,
            &du.to_f32_vec().unwrap(),
            |u| dot(reference(&gf, u)),
            1e-4,
        );
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let g = Tensor::cpu(&[2, 2], vec![0.0; 4]).unwrap();
        let u = Tensor::cpu(&[4], vec![0.0; 4]).unwrap();
        assert!(swiglu_forward(&g, &u).is_err());
    }
}
