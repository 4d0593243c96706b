//! The optimizer step over everything trainable in a model: AdamW (`flix_kernels::ops::adamw`)
//! with optional global gradient-norm clipping, moment buffers kept per tensor in the model's
//! fixed parameter order.

use flix_kernels::ops::adamw::{adamw_step, AdamWParams};
use flix_kernels::ops::grad_norm::global_grad_norm;
use flix_kernels::Tensor;

use crate::error::{ModelError, Result};
use crate::llama::LlamaModel;

pub struct AdamW {
    pub params: AdamWParams,
    /// Clip the global gradient norm to this before the step (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    step: u64,
    /// (m, v) per trainable tensor, in `LlamaModel::trainable_mut` order; created at first step.
    moments: Vec<(Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(params: AdamWParams, max_grad_norm: Option<f64>) -> Self {
        Self {
            params,
            max_grad_norm,
            step: 0,
            moments: Vec::new(),
        }
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update from the gradients accumulated in `model`; returns the gradient norm before
    /// clipping. Does not zero the gradients.
    pub fn step(&mut self, model: &mut LlamaModel) -> Result<f64> {
        let mut trainable = model.trainable_mut();
        let norm = global_grad_norm(&trainable.iter().map(|t| t.grad).collect::<Vec<_>>())?;
        let clip = match self.max_grad_norm {
            Some(max) if norm > max => (max / (norm + 1e-6)) as f32,
            _ => 1.0,
        };
        if self.moments.is_empty() {
            for t in &trainable {
                let zeros = || Tensor::zeros(t.value.device(), t.value.dtype(), t.value.shape());
                self.moments.push((zeros()?, zeros()?));
            }
        }
        if self.moments.len() != trainable.len() {
            return Err(ModelError::Invalid(format!(
                "the model has {} trainable tensors but the optimizer was started with {}",
                trainable.len(),
                self.moments.len()
            )));
        }
        self.step += 1;
        for (t, (m, v)) in trainable.iter_mut().zip(&mut self.moments) {
            let grad = if clip < 1.0 {
                let scaled: Vec<f32> = t.grad.to_f32_vec()?.iter().map(|g| g * clip).collect();
                Tensor::from_f32(t.grad.device(), t.grad.dtype(), t.grad.shape(), &scaled)?
            } else {
                crate::llama::duplicate(t.grad)?
            };
            adamw_step(t.value, &grad, m, v, self.step, self.params)?;
        }
        Ok(norm)
    }
}
