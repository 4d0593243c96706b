//! The one optimizer of FLix: AdamW (`flix_kernels::ops::adamw`, PyTorch's `torch.optim.AdamW`
//! semantics) with optional global gradient-norm clipping (`flix_kernels::ops::grad_norm`, as
//! `torch.nn.utils.clip_grad_norm_`), state kept per tensor in the order the tensors are given.
//! It runs on any device: every number it touches stays on the tensors' device.
//!
//! Precision (DESIGN §4): the AdamW moments are f32, and so is the tensor the step updates. A
//! tensor stored in bf16 (base weights of a bf16 model in full mode) gets an f32 master copy
//! here: the step updates the master and rounds it into the bf16 working copy. Adapters are f32
//! already and are updated in place.
//!
//! The state (step count, moments, masters) can be saved by tensor name and loaded back
//! ([`AdamW::saved_state`], [`AdamW::load_state`]), so that a resumed run takes bit-identical
//! steps.

use std::collections::BTreeMap;
use std::path::Path;

use flix_kernels::ops::adamw::{adamw_step_many, AdamWParams, AdamWTensor};
use flix_kernels::ops::cast;
use flix_kernels::ops::grad_norm::global_grad_norm;
use flix_kernels::{DType, Tensor};

use crate::error::{ModelError, Result};
use crate::llama::{LlamaModel, Trainable};
use crate::train::tensor_file::{load_tensors_with_metadata, save_tensors_with_metadata};
use crate::train::tensor_file::{take_tensor, NamedTensor};

/// The safetensors metadata key that holds the optimizer's step count.
const STEP_KEY: &str = "adamw_step";

/// What the optimizer keeps for one trainable tensor.
struct State {
    /// f32 master copy, for a tensor whose working copy is not f32.
    master: Option<Tensor>,
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    /// The hyper-parameters of the next step (a schedule sets `lr` before each step).
    pub params: AdamWParams,
    /// Clip the global gradient norm to this before the step (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    step: u64,
    /// One per trainable tensor, in the order of the tensors given to each step; created at the
    /// first step (or by `load_state`).
    state: Vec<State>,
}

/// An optimizer's state by tensor name, as a checkpoint stores it: `<name>.adam_m`,
/// `<name>.adam_v`, and `<name>.master` for a tensor whose working copy is not f32.
pub struct SavedState {
    pub step: u64,
    pub tensors: Vec<NamedTensor>,
}

impl SavedState {
    /// Writes the state as one safetensors file (atomically), the step in its metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        save_tensors_with_metadata(
            path,
            &self.tensors,
            Some((STEP_KEY, &self.step.to_string())),
        )
    }

    /// Reads a state written by [`SavedState::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let (tensors, metadata) = load_tensors_with_metadata(path)?;
        let bad = |message: String| ModelError::Weights {
            path: path.to_path_buf(),
            message,
        };
        let text = metadata.get(STEP_KEY).ok_or_else(|| {
            bad(format!(
                "no {STEP_KEY:?} in the metadata: not an optimizer state"
            ))
        })?;
        let step = text
            .parse()
            .map_err(|e| bad(format!("metadata {STEP_KEY:?} = {text:?}: {e}")))?;
        Ok(Self {
            step,
            tensors: tensors.into_values().collect(),
        })
    }
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

    /// One update of every trainable tensor of `model` (`LlamaModel::trainable_mut` order) from
    /// its accumulated gradients; see [`AdamW::step_tensors`].
    pub fn step(&mut self, model: &mut LlamaModel) -> Result<f64> {
        let norm = self.step_tensors(&mut model.trainable_mut(), 1.0)?;
        model.adapter_copies_written_by_optimizer();
        Ok(norm)
    }

    /// One update from the gradients of `trainable` (always the same tensors in the same order;
    /// a tensor's working copy, when given, gets the updated value rounded into it: follow the
    /// step with `LlamaModel::adapter_copies_written_by_optimizer`),
    /// each counted as `grad_scale` times what it holds (1 / the number of micro-batches whose
    /// gradients were summed into it, so that their mean is used; 1 otherwise). Returns the
    /// global norm of the scaled gradients before clipping. The gradients are left as they are:
    /// the scale and the clipping coefficient are applied as the step reads them, so on CUDA
    /// the whole step is a constant number of launches (the multi-tensor norm and AdamW
    /// kernels). A non-finite norm skips the update (nothing changes, the step count included)
    /// and is returned for the caller to report.
    pub fn step_tensors(&mut self, trainable: &mut [Trainable], grad_scale: f32) -> Result<f64> {
        let norm = global_grad_norm(&trainable.iter().map(|t| t.grad).collect::<Vec<_>>())?
            * f64::from(grad_scale);
        if !norm.is_finite() {
            return Ok(norm);
        }
        // As torch: coefficient max / (norm + 1e-6), applied when below 1.
        let clip = self
            .max_grad_norm
            .map(|max| max / (norm + 1e-6))
            .filter(|&coef| coef < 1.0)
            .unwrap_or(1.0);
        if self.state.is_empty() {
            self.state = trainable
                .iter()
                .map(|t| fresh_state(t.value))
                .collect::<Result<_>>()?;
        }
        if self.state.len() != trainable.len() {
            return Err(ModelError::Invalid(format!(
                "{} trainable tensors were given but the optimizer holds state for {}",
                trainable.len(),
                self.state.len()
            )));
        }
        if let Some(t) = trainable
            .iter()
            .zip(&self.state)
            .find(|(t, st)| t.working.is_some() && st.master.is_some())
        {
            return Err(ModelError::Invalid(format!(
                "a {} tensor {:?} came with a working copy: only f32 tensors have one",
                t.0.value.dtype(),
                t.0.value.shape()
            )));
        }
        self.step += 1;
        // Three kinds of tensor: f32 updated in place; f32 with a working copy (an adapter's
        // bf16 copy on a CUDA bf16 model), rounded from the update in the same pass; not f32 (a
        // bf16 base weight), updated through the optimizer's f32 master and rounded into it.
        let mut tensors: Vec<AdamWTensor> = trainable
            .iter_mut()
            .zip(&mut self.state)
            .map(|(t, st)| match st.master.as_mut() {
                Some(master) => AdamWTensor {
                    param: master,
                    grad: t.grad,
                    m: &mut st.m,
                    v: &mut st.v,
                    working: Some(&mut *t.value),
                },
                None => AdamWTensor {
                    param: &mut *t.value,
                    grad: t.grad,
                    m: &mut st.m,
                    v: &mut st.v,
                    working: t.working.as_deref_mut(),
                },
            })
            .collect();
        let scale = (f64::from(grad_scale) * clip) as f32;
        adamw_step_many(&mut tensors, self.step, self.params, scale)?;
        Ok(norm)
    }

    /// The state under the tensors' `names` (in step order), copied to the host.
    pub fn saved_state(&self, names: &[String]) -> Result<SavedState> {
        if !self.state.is_empty() && self.state.len() != names.len() {
            return Err(ModelError::Invalid(format!(
                "{} names were given but the optimizer holds state for {} tensors",
                names.len(),
                self.state.len()
            )));
        }
        let mut tensors = Vec::new();
        for (name, st) in names.iter().zip(&self.state) {
            let parts = [("adam_m", Some(&st.m)), ("adam_v", Some(&st.v))];
            for (suffix, t) in parts.into_iter().chain([("master", st.master.as_ref())]) {
                if let Some(t) = t {
                    tensors.push(NamedTensor {
                        name: format!("{name}.{suffix}"),
                        shape: t.shape().to_vec(),
                        data: t.to_f32_vec()?,
                    });
                }
            }
        }
        Ok(SavedState {
            step: self.step,
            tensors,
        })
    }

    /// Replaces the state with `saved` for the tensors `params` (name and working copy, in step
    /// order), on their device. Every moment must be there with the tensor's shape, and a master
    /// exactly for the tensors that are not f32; `origin` names the file in errors.
    pub fn load_state(
        &mut self,
        saved: SavedState,
        params: &[(&str, &Tensor)],
        origin: &Path,
    ) -> Result<()> {
        let mut tensors: BTreeMap<String, NamedTensor> = saved
            .tensors
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let mut state = Vec::new();
        if saved.step > 0 {
            for &(name, value) in params {
                let (device, shape) = (value.device(), value.shape());
                let mut take = |suffix: &str| -> Result<Tensor> {
                    let data =
                        take_tensor(&mut tensors, origin, &format!("{name}.{suffix}"), shape)?;
                    Ok(Tensor::from_f32(device, DType::F32, shape, &data)?)
                };
                let (m, v) = (take("adam_m")?, take("adam_v")?);
                let master = if value.dtype() == DType::F32 {
                    None
                } else {
                    Some(take("master")?)
                };
                state.push(State { master, m, v });
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(ModelError::Weights {
                path: origin.to_path_buf(),
                message: format!(
                    "tensor {extra} does not belong to any trainable tensor of this run \
                     (optimizer state at step {})",
                    saved.step
                ),
            });
        }
        self.step = saved.step;
        self.state = state;
        Ok(())
    }
}

/// Zero moments and, for a tensor that is not f32, its f32 master copy.
fn fresh_state(value: &Tensor) -> Result<State> {
    let f32_zeros = || Tensor::zeros(value.device(), DType::F32, value.shape());
    let master = if value.dtype() == DType::F32 {
        None
    } else {
        let mut master = f32_zeros()?;
        cast(value, &mut master)?;
        Some(master)
    };
    Ok(State {
        master,
        m: f32_zeros()?,
        v: f32_zeros()?,
    })
}

#[cfg(test)]
#[path = "optim_tests.rs"]
mod tests;
