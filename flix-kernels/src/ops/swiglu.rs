//! The gated MLP activations: h = act(g) ⊙ u, with
//!
//! * SwiGLU (Llama, Mistral, Qwen2): act(g) = silu(g) = g · σ(g),
//!   act'(g) = σ(g)(1 + g(1 − σ(g)));
//! * GeGLU with the tanh-approximated GELU (Gemma 3): act(g) = ½ g (1 + tanh(c (g + 0.044715 g³))),
//!   c = √(2/π), act'(g) = ½ (1 + t) + ½ g (1 − t²) c (1 + 3 · 0.044715 g²).
//!
//! Backward: dg = dh ⊙ u ⊙ act'(g),  du = dh ⊙ act(g).

use rayon::prelude::*;

use crate::error::Result;
use crate::{Device, Tensor};

/// The activation applied to the gate projection of a gated MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateActivation {
    /// silu, as in SwiGLU (`hidden_act: "silu"`).
    Silu,
    /// GELU with the tanh approximation, as in GeGLU (`gelu_pytorch_tanh`).
    GeluTanh,
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044_715;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl GateActivation {
    /// act(g) and act'(g).
    fn value_and_slope(self, g: f32) -> (f32, f32) {
        match self {
            GateActivation::Silu => {
                let s = sigmoid(g);
                (g * s, s * (1.0 + g * (1.0 - s)))
            }
            GateActivation::GeluTanh => {
                let t = (SQRT_2_OVER_PI * (g + GELU_CUBIC * g * g * g)).tanh();
                let slope = 0.5 * (1.0 + t)
                    + 0.5 * g * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * g * g);
                (0.5 * g * (1.0 + t), slope)
            }
        }
    }

    /// The prefix of this activation's CUDA kernels (`transformer_swiglu.cu`).
    pub(crate) fn kernel_prefix(self) -> &'static str {
        match self {
            GateActivation::Silu => "swiglu",
            GateActivation::GeluTanh => "geglu",
        }
    }
}

/// h = silu(gate) ⊙ up; all [T, F].
pub fn swiglu_forward(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gated_forward(GateActivation::Silu, gate, up)
}

/// Returns (dGate, dUp) of [`swiglu_forward`].
pub fn swiglu_backward(dh: &Tensor, gate: &Tensor, up: &Tensor) -> Result<(Tensor, Tensor)> {
    gated_backward(GateActivation::Silu, dh, gate, up)
}

/// h = act(gate) ⊙ up; all [T, F].
pub fn gated_forward(act: GateActivation, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let _profile = crate::profile::scope("gated_forward", gate.device());
    const OP: &str = "gated_forward";
    up.expect_shape(OP, "up", gate.shape())?;
    match gate.device() {
        Device::Cpu => {
            let (g, u) = (gate.cpu_data(OP)?, up.cpu_data(OP)?);
            // Element-wise, so split over threads: every element is computed as alone.
            let h = g
                .par_iter()
                .zip(u)
                .map(|(&g, &u)| act.value_and_slope(g).0 * u)
                .collect();
            Tensor::cpu(gate.shape(), h)
        }
        Device::Cuda(b) => super::cuda::elementwise::gated_forward(b, act, gate, up),
    }
}

/// Returns (dGate, dUp) of [`gated_forward`].
pub fn gated_backward(
    act: GateActivation,
    dh: &Tensor,
    gate: &Tensor,
    up: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let _profile = crate::profile::scope("gated_backward", gate.device());
    const OP: &str = "gated_backward";
    up.expect_shape(OP, "up", gate.shape())?;
    dh.expect_shape(OP, "dH", gate.shape())?;
    match gate.device() {
        Device::Cpu => {
            let (g, u, d) = (gate.cpu_data(OP)?, up.cpu_data(OP)?, dh.cpu_data(OP)?);
            let mut dg = vec![0.0f32; g.len()];
            let mut du = vec![0.0f32; g.len()];
            dg.par_iter_mut()
                .zip(du.par_iter_mut())
                .zip(g.par_iter().zip(u).zip(d))
                .for_each(|((dg, du), ((&g, &u), &d))| {
                    let (a, slope) = act.value_and_slope(g);
                    *du = d * a;
                    *dg = d * u * slope;
                });
            Ok((
                Tensor::cpu(gate.shape(), dg)?,
                Tensor::cpu(gate.shape(), du)?,
            ))
        }
        Device::Cuda(b) => super::cuda::elementwise::gated_backward(b, act, dh, gate, up),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::oracle::{assert_close, fd_check, pseudo_random, to_f64};

    use crate::ops::reference::gated;

    fn reference(g: &[f64], u: &[f64]) -> Vec<f64> {
        gated(GateActivation::Silu, g, u)
    }

    fn gelu_tanh_reference(g: &[f64], u: &[f64]) -> Vec<f64> {
        gated(GateActivation::GeluTanh, g, u)
    }

    #[test]
    fn geglu_forward_and_backward_match_the_oracle() {
        let n = 12;
        let g: Vec<f32> = pseudo_random(n, 4).iter().map(|v| v * 4.0).collect();
        let u = pseudo_random(n, 5);
        let dh = pseudo_random(n, 6);
        let (gt, ut) = (
            Tensor::cpu(&[3, 4], g.clone()).unwrap(),
            Tensor::cpu(&[3, 4], u.clone()).unwrap(),
        );
        let act = GateActivation::GeluTanh;
        let h = gated_forward(act, &gt, &ut).unwrap();
        let (gf, uf) = (to_f64(&g), to_f64(&u));
        assert_close(
            "h",
            &h.to_f32_vec().unwrap(),
            &gelu_tanh_reference(&gf, &uf),
            1e-6,
        );
        let dht = Tensor::cpu(&[3, 4], dh.clone()).unwrap();
        let (dg, du) = gated_backward(act, &dht, &gt, &ut).unwrap();
        let dot = |y: Vec<f64>| y.iter().zip(&dh).map(|(a, b)| a * *b as f64).sum::<f64>();
        fd_check(
            &g,
            &dg.to_f32_vec().unwrap(),
            |g| dot(gelu_tanh_reference(g, &uf)),
            1e-4,
        );
        fd_check(
            &u,
            &du.to_f32_vec().unwrap(),
            |u| dot(gelu_tanh_reference(&gf, u)),
            1e-4,
        );
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
