//! The optimizer step over everything trainable in a model: AdamW (`flix_kernels::ops::adamw`)
//! with optional global gradient-norm clipping, state kept per tensor in the model's fixed
//! parameter order.
//!
//! Precision (DESIGN §4): the AdamW moments are f32, and so is the tensor the step updates. A
//! tensor stored in bf16 (base weights of a bf16 model in full mode) gets an f32 master copy
//! here: the step updates the master and rounds it into the bf16 working copy. Adapters are f32
//! already and are updated in place.

use flix_kernels::ops::adamw::{adamw_step, AdamWParams};
use flix_kernels::ops::cast;
use flix_kernels::ops::elementwise::{duplicate, scale};
use flix_kernels::ops::grad_norm::global_grad_norm;
use flix_kernels::{DType, Tensor};

use crate::error::{ModelError, Result};
use crate::llama::LlamaModel;

/// What the optimizer keeps for one trainable tensor.
struct State {
    /// f32 master copy, for a tensor whose working copy is not f32.
    master: Option<Tensor>,
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    pub params: AdamWParams,
    /// Clip the global gradient norm to this before the step (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    step: u64,
    /// One per trainable tensor, in `LlamaModel::trainable_mut` order; created at first step.
    state: Vec<State>,
}

impl AdamW {
    pub fn new(params: AdamWParams, max_grad_norm: Option<f64>) -> Self {
        Self {
            params,
            max_grad_norm,
            step: 0,
            state: Vec::new(),
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
        if self.state.is_empty() {
            for t in &trainable {
                let f32_zeros = || Tensor::zeros(t.value.device(), DType::F32, t.value.shape());
                let master = if t.value.dtype() == DType::F32 {
                    None
                } else {
                    let mut master = f32_zeros()?;
                    cast(t.value, &mut master)?;
                    Some(master)
                };
                self.state.push(State {
                    master,
                    m: f32_zeros()?,
                    v: f32_zeros()?,
                });
            }
        }
        if self.state.len() != trainable.len() {
            return Err(ModelError::Invalid(format!(
                "the model has {} trainable tensors but the optimizer was started with {}",
                trainable.len(),
                self.state.len()
            )));
        }
        self.step += 1;
        for (t, st) in trainable.iter_mut().zip(&mut self.state) {
            // The model's gradients stay as accumulated; clipping scales a copy.
            let clipped = if clip < 1.0 {
                let mut g = duplicate(t.grad)?;
                scale(&mut g, clip)?;
                Some(g)
            } else {
                None
            };
            let grad = clipped.as_ref().unwrap_or(t.grad);
            match st.master.as_mut() {
                Some(master) => {
                    adamw_step(master, grad, &mut st.m, &mut st.v, self.step, self.params)?;
                    cast(master, t.value)?;
                }
                None => adamw_step(t.value, grad, &mut st.m, &mut st.v, self.step, self.params)?,
            }
        }
        Ok(norm)
    }
}
