//! The Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM, TinyLlama): embedding, decoder
//! layers, final RMSNorm and output head (tied to the embedding or not).
//!
//! Three entry points over a packed [`Batch`]: [`LlamaModel::logits`], [`LlamaModel::score`]
//! (per-token log-likelihood of the targets) and [`LlamaModel::forward_backward`] (mean loss over
//! target tokens; gradients accumulate into every trainable parameter).

mod block;
mod generate;
mod init;
mod linear;
mod param;

use std::path::Path;

use flix_core::BatchPlan;
use flix_kernels::flix::DevicePlan;
use flix_kernels::ops::cross_entropy::{
    linear_cross_entropy_backward, linear_cross_entropy_forward, CrossEntropy,
};
use flix_kernels::ops::embedding::{embedding_backward, embedding_forward};
use flix_kernels::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use flix_kernels::ops::rope::inv_freq;
use flix_kernels::ops::{matmul, Trans};
use flix_kernels::{DType, Device, Tensor};

pub use block::DecoderLayer;
pub use generate::{sample, GenerationConfig};
pub use init::INIT_STD;
pub use linear::{Linear, LinearSaved};
pub use param::{duplicate, Param};

use crate::adapters::{Adapter, AdapterSpec, TargetModule};
use crate::batch::Batch;
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::weights::{Checkpoint, TensorSource};
use block::LayerInputs;

/// Which parameters receive gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainMode {
    /// Only adapters (the default for fine-tuning).
    Adapters,
    /// Every weight of the model (a baseline, and for pretraining small models).
    Full,
}

pub struct LlamaModel {
    pub config: LlamaConfig,
    pub device: Device,
    pub embed: Param,
    pub layers: Vec<DecoderLayer>,
    pub norm: Param,
    /// `None` when the head is tied to the embedding.
    pub lm_head: Option<Param>,
    /// Vocabulary rows per step of the chunked cross-entropy.
    pub vocab_chunk: usize,
    inv_freq: Vec<f32>,
}

/// The working dtype a model gets on `device` unless told otherwise (DESIGN §4): bf16 on CUDA,
/// f32 on the CPU (which computes in f32 only).
pub fn default_dtype(device: &Device) -> DType {
    match device {
        Device::Cpu => DType::F32,
        Device::Cuda(_) => DType::BF16,
    }
}

/// A trainable tensor and its accumulated gradient.
pub struct Trainable<'a> {
    pub value: &'a mut Tensor,
    pub grad: &'a Tensor,
}

/// Mean loss over the target tokens of a batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossReport {
    pub loss: f64,
    pub targets: usize,
}

impl LlamaModel {
    /// Loads `dir/config.json` and the weights of `dir` onto `device`, in the device's default
    /// working dtype ([`default_dtype`]).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_as(dir, device, default_dtype(device))
    }

    /// Loads onto `device` with weights and activations in `dtype` (f32 on CUDA is for tests).
    pub fn load_as(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = LlamaConfig::from_file(&dir.join("config.json"))?;
        let ck = Checkpoint::open(dir)?;
        Self::from_checkpoint(config, &ck, device, dtype)
    }

    pub fn from_checkpoint(
        config: LlamaConfig,
        ck: &dyn TensorSource,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let (v, d) = (config.vocab_size, config.hidden_size);
        let embed = Param::load(ck, "model.embed_tokens.weight", &[v, d], device, dtype)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::load(ck, &config, i, device, dtype))
            .collect::<Result<Vec<_>>>()?;
        let norm = Param::load(ck, "model.norm.weight", &[d], device, dtype)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(Param::load(ck, "lm_head.weight", &[v, d], device, dtype)?)
        };
        let inv_freq = inv_freq(config.head_dim, config.rope_theta, config.rope_scaling);
        Ok(Self {
            config,
            device: device.clone(),
            embed,
            layers,
            norm,
            lm_head,
            vocab_chunk: 4096,
            inv_freq,
        })
    }

    /// The working dtype of weights and activations (adapters are always f32).
    pub fn dtype(&self) -> DType {
        self.embed.value.dtype()
    }

    /// Every base parameter, in a fixed order.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut out = vec![&mut self.embed];
        for layer in &mut self.layers {
            out.extend(layer.params_mut());
        }
        out.push(&mut self.norm);
        out.extend(self.lm_head.as_mut());
        out
    }

    /// Every trainable tensor with its gradient, in a fixed order: base parameters (full mode),
    /// then each layer's adapters (A then B of every type).
    pub fn trainable_mut(&mut self) -> Vec<Trainable<'_>> {
        let mut out = Vec::new();
        let LlamaModel {
            embed,
            layers,
            norm,
            lm_head,
            ..
        } = self;
        let mut base: Vec<&mut Param> = vec![embed];
        let mut adapters = Vec::new();
        for layer in layers.iter_mut() {
            let [q, k, v, o, gate, up, down] = layer.linears_mut_with_norms(&mut base);
            for lin in [q, k, v, o, gate, up, down] {
                base.push(&mut lin.weight);
                base.extend(lin.bias.as_mut());
                if let Some(ad) = lin.adapter.as_mut() {
                    adapters.push(ad);
                }
            }
        }
        base.push(norm);
        base.extend(lm_head.as_mut());
        for p in base {
            if let Some(grad) = p.grad.as_ref() {
                out.push(Trainable {
                    value: &mut p.value,
                    grad,
                });
            }
        }
        for ad in adapters {
            for (k, ty) in ad.layers.types.iter_mut().enumerate() {
                out.push(Trainable {
                    value: &mut ty.a,
                    grad: &ad.grads.da[k],
                });
                out.push(Trainable {
                    value: &mut ty.b,
                    grad: &ad.grads.db[k],
                });
            }
        }
        out
    }

    /// Makes base weights trainable (`Full`) or frozen (`Adapters`).
    pub fn set_train_mode(&mut self, mode: TrainMode) -> Result<()> {
        for p in self.params_mut() {
            p.set_trainable(mode == TrainMode::Full)?;
        }
        Ok(())
    }

    /// Zeroes the gradients of every trainable parameter and adapter.
    pub fn zero_grad(&mut self) -> Result<()> {
        for p in self.params_mut() {
            p.zero_grad()?;
        }
        for layer in &mut self.layers {
            for lin in layer.linears_mut() {
                if let Some(ad) = lin.adapter.as_mut() {
                    ad.zero_grad()?;
                }
            }
        }
        Ok(())
    }

    /// Attaches fresh FLix adapters (A Kaiming-uniform, B zero) to the spec's target modules of
    /// every layer, replacing any attached before. Adapters are always trainable.
    pub fn attach_adapters(&mut self, spec: &AdapterSpec) -> Result<()> {
        let device = self.device.clone();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (module, lin) in TargetModule::ALL.into_iter().zip(layer.linears_mut()) {
                lin.adapter = if spec.targets.contains(&module) {
                    let salt = (i * TargetModule::ALL.len() + module as usize) as u64;
                    Some(Adapter::init(
                        spec,
                        lin.out_dim(),
                        lin.in_dim(),
                        salt,
                        &device,
                    )?)
                } else {
                    None
                };
            }
        }
        Ok(())
    }

    /// Every attached adapter with the module path of its linear layer (for example
    /// `model.layers.0.self_attn.q_proj`, as in PEFT's keys), in layer then q, k, v, o, gate,
    /// up, down order: what a trainer saves.
    pub fn adapters(&self) -> Vec<(String, &Adapter)> {
        let mut out = Vec::new();
        for layer in &self.layers {
            for lin in layer.linears() {
                if let Some(ad) = &lin.adapter {
                    let path = lin
                        .weight
                        .name
                        .strip_suffix(".weight")
                        .unwrap_or(&lin.weight.name);
                    out.push((path.to_string(), ad));
                }
            }
        }
        out
    }

    /// The projection `module` of layer `layer`.
    pub fn linear_mut(&mut self, layer: usize, module: TargetModule) -> Result<&mut Linear> {
        let n = self.layers.len();
        let l = self.layers.get_mut(layer).ok_or_else(|| {
            ModelError::Invalid(format!("layer {layer} does not exist (the model has {n})"))
        })?;
        let [q, k, v, o, gate, up, down] = l.linears_mut();
        Ok(match module {
            TargetModule::Q => q,
            TargetModule::K => k,
            TargetModule::V => v,
            TargetModule::O => o,
            TargetModule::Gate => gate,
            TargetModule::Up => up,
            TargetModule::Down => down,
        })
    }

    /// Binds a batch plan to the model's device (uploads it once on CUDA).
    pub fn device_plan(&self, plan: BatchPlan) -> Result<DevicePlan> {
        Ok(DevicePlan::new(&self.device, plan)?)
    }

    fn check_batch(&self, batch: &Batch, plan: Option<&DevicePlan>) -> Result<()> {
        if let Some(w) = self.config.sliding_window {
            if let Some((s, len)) = batch.sequence_lens().enumerate().find(|(_, l)| *l > w) {
                return Err(ModelError::Batch(format!(
                    "sequence {s} has {len} tokens, more than the sliding window ({w}), which is \
                     not implemented"
                )));
            }
        }
        if let Some(plan) = plan {
            if !plan.device().same(&self.device) {
                return Err(ModelError::Batch(format!(
                    "the batch plan lives on {}, the model on {}",
                    plan.device(),
                    self.device
                )));
            }
            let plan = plan.plan();
            let same = plan.num_segments() == batch.num_sequences()
                && (0..plan.num_segments())
                    .all(|s| plan.segment_range(s) == (batch.starts[s]..batch.starts[s + 1]));
            if !same {
                return Err(ModelError::Batch(
                    "the batch plan's segments differ from the batch's sequences".into(),
                ));
            }
        }
        Ok(())
    }

    /// Runs embedding and every layer; returns the final hidden state before the last norm and,
    /// with `save`, each layer's saved activations.
    fn trunk(
        &self,
        batch: &Batch,
        plan: Option<&DevicePlan>,
        save: bool,
    ) -> Result<(Tensor, Vec<block::LayerSaved>)> {
        self.check_batch(batch, plan)?;
        let inputs = LayerInputs {
            batch,
            plan,
            inv_freq: &self.inv_freq,
        };
        let mut x = embedding_forward(&self.embed.value, &batch.tokens)?;
        let mut saved = Vec::new();
        for layer in &self.layers {
            let (next, s) = layer.forward(&inputs, x)?;
            if save {
                saved.push(s);
            }
            x = next;
        }
        Ok((x, saved))
    }

    fn head(&self) -> &Param {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Logits [T, vocab] for every token of the batch.
    pub fn logits(&self, batch: &Batch, plan: Option<&DevicePlan>) -> Result<Tensor> {
        let (x, _) = self.trunk(batch, plan, false)?;
        let (xn, _) = rmsnorm_forward(&x, &self.norm.value, self.config.rms_norm_eps)?;
        let mut logits = Tensor::zeros(
            &self.device,
            xn.dtype(),
            &[batch.num_tokens(), self.config.vocab_size],
        )?;
        matmul(
            &xn,
            Trans::N,
            &self.head().value,
            Trans::T,
            &mut logits,
            1.0,
            0.0,
        )?;
        Ok(logits)
    }

    /// Log-likelihood of every target token (and the summed loss), without gradients.
    pub fn score(&self, batch: &Batch, plan: Option<&DevicePlan>) -> Result<CrossEntropy> {
        let (x, _) = self.trunk(batch, plan, false)?;
        let (xn, _) = rmsnorm_forward(&x, &self.norm.value, self.config.rms_norm_eps)?;
        Ok(linear_cross_entropy_forward(
            &xn,
            &self.head().value,
            &batch.targets,
            self.vocab_chunk,
        )?)
    }

    /// Mean cross-entropy over the target tokens; adds its gradient into every trainable
    /// parameter (call [`Self::zero_grad`] between steps).
    pub fn forward_backward(
        &mut self,
        batch: &Batch,
        plan: Option<&DevicePlan>,
    ) -> Result<LossReport> {
        self.forward_backward_scaled(batch, plan, None)
    }

    /// Like [`Self::forward_backward`], but the gradient added is that of
    /// `grad_scale · Σ −log p` over the batch's target tokens when `grad_scale` is given. For
    /// gradient accumulation, pass 1 / (target tokens of all micro-batches) to every
    /// micro-batch: the sum is then the gradient of the mean over the whole step.
    pub fn forward_backward_scaled(
        &mut self,
        batch: &Batch,
        plan: Option<&DevicePlan>,
        grad_scale: Option<f32>,
    ) -> Result<LossReport> {
        let (x, saved) = self.trunk(batch, plan, true)?;
        let eps = self.config.rms_norm_eps;
        let (xn, rstd) = rmsnorm_forward(&x, &self.norm.value, eps)?;
        let ce = linear_cross_entropy_forward(
            &xn,
            &self.head().value,
            &batch.targets,
            self.vocab_chunk,
        )?;
        if ce.count == 0 {
            return Err(ModelError::Batch("the batch has no target tokens".into()));
        }
        let scale = grad_scale.unwrap_or(1.0 / ce.count as f32);
        let chunk = self.vocab_chunk;
        let head = self.lm_head.as_mut().unwrap_or(&mut self.embed);
        let Param {
            value: w, grad: dw, ..
        } = head;
        let dxn =
            linear_cross_entropy_backward(&xn, w, &batch.targets, &ce, scale, chunk, dw.as_mut())?;
        let Param {
            value: wn,
            grad: dwn,
            ..
        } = &mut self.norm;
        let mut dx = rmsnorm_backward(&dxn, &x, wn, &rstd, dwn.as_mut())?;
        let inputs = LayerInputs {
            batch,
            plan,
            inv_freq: &self.inv_freq,
        };
        for (layer, s) in self.layers.iter_mut().zip(&saved).rev() {
            dx = layer.backward(&inputs, s, &dx)?;
        }
        if let Some(de) = self.embed.grad.as_mut() {
            embedding_backward(de, &batch.tokens, &dx)?;
        }
        Ok(LossReport {
            loss: ce.loss_sum / ce.count as f64,
            targets: ce.count,
        })
    }
}
