//! Rotary position embeddings, Hugging Face's `rotate_half` convention: the head vector is split
//! into halves (x1, x2) and pair i = (x1[i], x2[i]) is rotated by the angle pos · inv_freq[i]:
//!
//! ```text
//! y1 = x1 cos − x2 sin,   y2 = x2 cos + x1 sin
//! ```
//!
//! The backward pass is the inverse rotation (a rotation is orthogonal), so it is the same loop
//! with sin negated. Frequencies follow transformers' rope types `default`, `linear` and `llama3`.

use crate::batch::TokenPositions;
use crate::error::Result;
use crate::{Device, Tensor};

/// How the base frequencies are rescaled for long contexts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    Default,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama 3.1's scheme: long wavelengths divided by `factor`, short ones kept, smooth between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// The `head_dim / 2` inverse frequencies, as transformers computes them: the exponent
/// `2i / head_dim` and the reciprocal in f32, the power rounded to f32. At positions in the
/// thousands an inverse frequency one ulp off turns the angle by ~1e-4 rad, which shows in the
/// log-probabilities of a real model, so the rounding steps follow transformers'.
pub fn inv_freq(head_dim: usize, theta: f64, scaling: RopeScaling) -> Vec<f32> {
    let half = head_dim / 2;
    (0..half)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            let base = f64::from(1.0f32 / theta.powf(f64::from(exponent)) as f32);
            let scaled = match scaling {
                RopeScaling::Default => base,
                RopeScaling::Linear { factor } => base / factor,
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings: old_len,
                } => {
                    let wavelen = 2.0 * std::f64::consts::PI / base;
                    let low_freq_wavelen = old_len / low_freq_factor;
                    let high_freq_wavelen = old_len / high_freq_factor;
                    if wavelen < high_freq_wavelen {
                        base
                    } else if wavelen > low_freq_wavelen {
                        base / factor
                    } else {
                        let smooth = (old_len / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * base / factor + smooth * base
                    }
                }
            };
            scaled as f32
        })
        .collect()
}

/// Rotates `x` ([T, heads · head_dim]) in place; token t sits at `positions[t]` (the batch's
/// [`TokenPositions`], on x's device).
pub fn rope_forward(
    x: &mut Tensor,
    heads: usize,
    positions: &TokenPositions,
    inv_freq: &[f32],
) -> Result<()> {
    let _profile = crate::profile::scope("rope_forward", x.device());
    apply(x, heads, positions, inv_freq, 1.0, "rope_forward")
}

/// Turns dY into dX in place (the inverse rotation).
pub fn rope_backward(
    dx: &mut Tensor,
    heads: usize,
    positions: &TokenPositions,
    inv_freq: &[f32],
) -> Result<()> {
    let _profile = crate::profile::scope("rope_backward", dx.device());
    apply(dx, heads, positions, inv_freq, -1.0, "rope_backward")
}

fn apply(
    x: &mut Tensor,
    heads: usize,
    token_positions: &TokenPositions,
    inv_freq: &[f32],
    sin_sign: f32,
    op: &'static str,
) -> Result<()> {
    let head_dim = 2 * inv_freq.len();
    let positions = token_positions.host();
    x.expect_shape(op, "x", &[positions.len(), heads * head_dim])?;
    match x.device().clone() {
        Device::Cpu => {
            let data = x.cpu_data_mut(op)?;
            let half = inv_freq.len();
            if half == 0 {
                return Ok(());
            }
            for (row, &pos) in data.chunks_mut(heads * head_dim).zip(positions) {
                for (i, &f) in inv_freq.iter().enumerate() {
                    // f32 angle like transformers, then cos/sin of it.
                    let angle = pos as f32 * f;
                    let (sin, cos) = angle.sin_cos();
                    let sin = sin * sin_sign;
                    for head in row.chunks_mut(head_dim) {
                        let (x1, x2) = (head[i], head[i + half]);
                        head[i] = x1 * cos - x2 * sin;
                        head[i + half] = x2 * cos + x1 * sin;
                    }
                }
            }
            Ok(())
        }
        Device::Cuda(b) => {
            super::cuda::elementwise::rope(&b, op, x, heads, token_positions, inv_freq, sin_sign)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::oracle::{fd_check, pseudo_random, to_f64};
    use crate::ops::reference::rope as reference;

    fn cpu_positions(positions: &[u32]) -> TokenPositions {
        TokenPositions::new(&Device::Cpu, positions).unwrap()
    }

    #[test]
    fn matches_rotate_half_reference() {
        let (heads, hd) = (3, 8);
        let positions = [0u32, 1, 2, 0, 5];
        let inv = inv_freq(hd, 10_000.0, RopeScaling::Default);
        let x = pseudo_random(positions.len() * heads * hd, 7);
        let mut t = Tensor::cpu(&[positions.len(), heads * hd], x.clone()).unwrap();
        rope_forward(&mut t, heads, &cpu_positions(&positions), &inv).unwrap();
        let want = reference(&to_f64(&x), heads, &positions, &inv, false);
        for (g, w) in t.to_f32_vec().unwrap().iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (heads, hd) = (2, 4);
        let positions = [3u32, 0, 7];
        let inv = inv_freq(hd, 100.0, RopeScaling::Default);
        let n = positions.len() * heads * hd;
        let x = pseudo_random(n, 1);
        let dy = pseudo_random(n, 2);
        let mut dx = Tensor::cpu(&[positions.len(), heads * hd], dy.clone()).unwrap();
        rope_backward(&mut dx, heads, &cpu_positions(&positions), &inv).unwrap();
        let loss = |x: &[f64]| -> f64 {
            let y = reference(x, heads, &positions, &inv, false);
            y.iter().zip(&dy).map(|(a, b)| a * *b as f64).sum()
        };
        fd_check(&x, &dx.to_f32_vec().unwrap(), loss, 2e-3);
    }

    #[test]
    fn llama3_scaling_matches_transformers_rules() {
        // The three regimes: short wavelengths kept, long ones divided by factor, smooth between.
        let (hd, theta) = (64, 500_000.0);
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let plain = inv_freq(hd, theta, RopeScaling::Default);
        let scaled = inv_freq(hd, theta, scaling);
        let mut seen = [false; 3];
        for (p, s) in plain.iter().zip(&scaled) {
            let wavelen = 2.0 * std::f64::consts::PI / *p as f64;
            if wavelen < 8192.0 / 4.0 {
                assert_eq!(p, s);
                seen[0] = true;
            } else if wavelen > 8192.0 {
                assert!((p / 8.0 - s).abs() <= 1e-6 * p.abs());
                seen[1] = true;
            } else {
                assert!(*s < *p && *s > p / 8.0, "{s} not between {p}/8 and {p}");
                seen[2] = true;
            }
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn wrong_shape_is_an_error() {
        let inv = inv_freq(4, 10_000.0, RopeScaling::Default);
        let mut t = Tensor::cpu(&[2, 6], vec![0.0; 12]).unwrap();
        let err = rope_forward(&mut t, 2, &cpu_positions(&[0, 1]), &inv)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[2, 8]"), "{err}");
    }
}
