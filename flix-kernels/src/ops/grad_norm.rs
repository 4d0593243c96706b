//! Global gradient norm ‖g‖₂ over many tensors (f64 accumulation, fixed order), and clipping by
//! it, as `torch.nn.utils.clip_grad_norm_` does: scale = max_norm / (norm + 1e-6) when below 1.

use crate::error::Result;
use crate::{Device, Tensor};

/// sqrt(Σ over all tensors and elements of g²). On CUDA, every tensor in a constant number of
/// launches and one read-back of the result.
pub fn global_grad_norm(grads: &[&Tensor]) -> Result<f64> {
    const OP: &str = "global_grad_norm";
    let Some(first) = grads.first() else {
        return Ok(0.0);
    };
    if let Device::Cuda(b) = first.device() {
        return Ok(super::cuda::optim::sum_of_squares_many(b, grads)?.sqrt());
    }
    let mut sum = 0.0f64;
    for g in grads {
        sum += g
            .cpu_data(OP)?
            .iter()
            .map(|&v| v as f64 * v as f64)
            .sum::<f64>();
    }
    Ok(sum.sqrt())
}

/// Scales every gradient so the global norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut [&mut Tensor], max_norm: f64) -> Result<f64> {
    const OP: &str = "clip_grad_norm";
    let norm = global_grad_norm(&grads.iter().map(|g| &**g).collect::<Vec<_>>())?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            match g.device().clone() {
                Device::Cpu => {
                    for v in g.cpu_data_mut(OP)? {
                        *v *= coef as f32;
                    }
                }
                Device::Cuda(b) => super::cuda::optim::scale(&b, g, coef as f32)?,
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::oracle::{fd_check, pseudo_random};

    #[test]
    fn norm_matches_reference_and_its_gradient() {
        let a = pseudo_random(5, 1);
        let b = pseudo_random(3, 2);
        let ta = Tensor::cpu(&[5], a.clone()).unwrap();
        let tb = Tensor::cpu(&[3], b.clone()).unwrap();
        let norm = global_grad_norm(&[&ta, &tb]).unwrap();
        let all: Vec<f32> = a.iter().chain(&b).copied().collect();
        let want = all.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - want).abs() < 1e-12);
        // d‖g‖/dg = g / ‖g‖: checks that the norm is the L2 norm of the concatenation.
        let analytic: Vec<f32> = all.iter().map(|&v| (v as f64 / norm) as f32).collect();
        fd_check(
            &all,
            &analytic,
            |x| x.iter().map(|v| v * v).sum::<f64>().sqrt(),
            1e-6,
        );
    }

    #[test]
    fn clipping_scales_to_max_norm_and_leaves_small_gradients() {
        let mut a = Tensor::cpu(&[2], vec![3.0, 4.0]).unwrap();
        let before = clip_grad_norm(&mut [&mut a], 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-12);
        let after = global_grad_norm(&[&a]).unwrap();
        assert!((after - 1.0).abs() < 1e-5, "{after}");
        let mut small = Tensor::cpu(&[2], vec![0.3, 0.4]).unwrap();
        clip_grad_norm(&mut [&mut small], 1.0).unwrap();
        assert_eq!(small.to_f32_vec().unwrap(), vec![0.3, 0.4]);
    }
}
