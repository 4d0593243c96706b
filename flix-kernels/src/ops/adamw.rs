//! AdamW (decoupled weight decay), as `torch.optim.AdamW` computes it:
//! ```text
//! p ← p − lr·wd·p;  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
//! p ← p − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + eps)
//! ```
//! [`adamw_step_many`] steps every trainable tensor of a model at once (on CUDA, one launch per
//! gradient dtype), with the clipping coefficient folded into the gradient and a bf16 working
//! copy refreshed from its f32 master in the same pass.

use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::{Device, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// One trainable tensor of a [`adamw_step_many`] call.
pub struct AdamWTensor<'a> {
    /// f32: the tensor itself, or the f32 master copy of `working`.
    pub param: &'a mut Tensor,
    pub grad: &'a Tensor,
    /// f32 moments, `param`'s shape.
    pub m: &'a mut Tensor,
    pub v: &'a mut Tensor,
    /// A working copy in another dtype (a bf16 model's weight) that gets the updated master
    /// rounded into it.
    pub working: Option<&'a mut Tensor>,
}

/// One step (`step` counts from 1) on `param` with its `grad` and moment buffers `m`, `v`.
pub fn adamw_step(
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    step: u64,
    hp: AdamWParams,
) -> Result<()> {
    let mut one = [AdamWTensor {
        param,
        grad,
        m,
        v,
        working: None,
    }];
    adamw_step_many(&mut one, step, hp, 1.0)
}

/// One step (`step` counts from 1) on every tensor, each gradient multiplied by `grad_scale`
/// first (gradient clipping's coefficient; 1 for none). On CUDA this is one launch per gradient
/// dtype, whatever the number of tensors (the multi-tensor kernels of transformer_optim.cu).
pub fn adamw_step_many(
    tensors: &mut [AdamWTensor],
    step: u64,
    hp: AdamWParams,
    grad_scale: f32,
) -> Result<()> {
    const OP: &str = "adamw_step";
    let Some(first) = tensors.first() else {
        return Ok(());
    };
    let _profile = crate::profile::scope(OP, first.param.device());
    if step == 0 {
        return Err(KernelError::Invalid {
            op: OP,
            message: "step counts from 1".into(),
        });
    }
    if !grad_scale.is_finite() {
        return Err(KernelError::Invalid {
            op: OP,
            message: format!("the gradient scale must be finite, found {grad_scale}"),
        });
    }
    let device = first.param.device().clone();
    for (i, t) in tensors.iter().enumerate() {
        let shape = t.param.shape().to_vec();
        t.grad.expect_shape(OP, "grad", &shape)?;
        t.m.expect_shape(OP, "m", &shape)?;
        t.v.expect_shape(OP, "v", &shape)?;
        if let Some(w) = &t.working {
            w.expect_shape(OP, "working copy", &shape)?;
        }
        let others = [t.grad, &*t.m, &*t.v]
            .into_iter()
            .chain(t.working.as_deref());
        for other in std::iter::once(&*t.param).chain(others) {
            if !other.device().same(&device) {
                return Err(KernelError::Invalid {
                    op: OP,
                    message: format!(
                        "tensor {i} has a buffer on {} but the first tensor is on {device}",
                        other.device()
                    ),
                });
            }
        }
    }
    if let Device::Cuda(b) = &device {
        return super::cuda::optim::adamw_step_many(b, tensors, step, hp, grad_scale);
    }
    let bc1 = 1.0 - (hp.beta1 as f64).powi(step as i32);
    let bc2 = 1.0 - (hp.beta2 as f64).powi(step as i32);
    for t in tensors.iter_mut() {
        let (p, g) = (t.param.cpu_data_mut(OP)?, t.grad.cpu_data(OP)?);
        let (m, v) = (t.m.cpu_data_mut(OP)?, t.v.cpu_data_mut(OP)?);
        // Element-wise, so split over threads: every element is updated as alone.
        p.par_iter_mut()
            .zip(m.par_iter_mut())
            .zip(v.par_iter_mut())
            .zip(g.par_iter())
            .for_each(|(((p, m), v), &g)| {
                let gi = g * grad_scale;
                *p -= hp.lr * hp.weight_decay * *p;
                *m = hp.beta1 * *m + (1.0 - hp.beta1) * gi;
                *v = hp.beta2 * *v + (1.0 - hp.beta2) * gi * gi;
                let mhat = *m as f64 / bc1;
                let vhat = *v as f64 / bc2;
                *p -= (hp.lr as f64 * mhat / (vhat.sqrt() + hp.eps as f64)) as f32;
            });
        if let Some(working) = t.working.as_deref_mut() {
            super::cast(t.param, working)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::oracle::{assert_close, pseudo_random, to_f64};
    use crate::ops::reference;

    #[test]
    fn three_steps_match_an_f64_reference() {
        let n = 9;
        let hp = AdamWParams {
            lr: 0.1,
            beta1: 0.8,
            beta2: 0.95,
            eps: 1e-6,
            weight_decay: 0.1,
        };
        let p0 = pseudo_random(n, 1);
        let mut p = Tensor::cpu(&[3, 3], p0.clone()).unwrap();
        let mut m = Tensor::cpu(&[3, 3], vec![0.0; n]).unwrap();
        let mut v = Tensor::cpu(&[3, 3], vec![0.0; n]).unwrap();
        let (mut rp, mut rm, mut rv) = (to_f64(&p0), vec![0.0; n], vec![0.0; n]);
        for step in 1..=3u64 {
            let g = pseudo_random(n, 10 + step);
            adamw_step(
                &mut p,
                &Tensor::cpu(&[3, 3], g.clone()).unwrap(),
                &mut m,
                &mut v,
                step,
                hp,
            )
            .unwrap();
            reference::adamw_step(&mut rp, &mut rm, &mut rv, &to_f64(&g), step, hp);
        }
        assert_close("param", &p.to_f32_vec().unwrap(), &rp, 1e-5);
    }

    #[test]
    fn step_zero_and_shape_mismatch_are_errors() {
        let mut p = Tensor::cpu(&[2], vec![0.0; 2]).unwrap();
        let mut m = Tensor::cpu(&[2], vec![0.0; 2]).unwrap();
        let mut v = Tensor::cpu(&[2], vec![0.0; 2]).unwrap();
        let g = Tensor::cpu(&[2], vec![0.0; 2]).unwrap();
        assert!(adamw_step(&mut p, &g, &mut m, &mut v, 0, AdamWParams::default()).is_err());
        let g3 = Tensor::cpu(&[3], vec![0.0; 3]).unwrap();
        assert!(adamw_step(&mut p, &g3, &mut m, &mut v, 1, AdamWParams::default()).is_err());
    }
}
