//! The Llama-family decoder (Llama 2/3, Mistral, Qwen2, Qwen3, SmolLM, TinyLlama) and Gemma 3's
//! text model: embedding, decoder layers, final RMSNorm and output head (tied to the embedding or
//! not).
//!
//! Qwen3 differs from Llama only inside attention: q and k are normalised per head before the
//! rope (Llama-style norm weights, x̂ · w), as in Gemma 3 below.
//!
//! Gemma 3 differs from Llama in these ways, each driven by the config ([`LlamaConfig`]):
//!
//! * the embeddings are multiplied by √hidden_size, rounded to the model's dtype first as
//!   transformers does (`embed_scale.to(weight.dtype)`), in the forward pass, its backward (full
//!   mode) and generation; the tied output head uses the unscaled table;
//! * every RMSNorm computes x̂ · (1 + w) where Llama's computes x̂ · w. The model keeps **1 + w**
//!   in the norm's [`Param`] (added at load, [`LlamaConfig::norm_weight_offset`]), so the one
//!   RMSNorm op serves both families, and the gradient with respect to the kept value is the
//!   gradient with respect to w. Whatever writes Hugging Face tensors converts back through
//!   [`LlamaModel::hf_weights`] (`save_pretrained`, the merge of a full-mode run). In bf16 the
//!   kept 1 + w is rounded to bf16, where transformers adds 1 in f32 at every call;
//! * q and k are normalised per head, each branch output is normalised before the residual add
//!   (see [`block`](DecoderLayer) for the layer), and the MLP is GeGLU (tanh GELU);
//! * attention scores are scaled by `query_pre_attn_scalar^-0.5`; the local (sliding) layers
//!   see a window of keys and have their own rope base (`rope_local_base_freq`), the global
//!   layers use `rope_theta` with the config's scaling: each layer keeps its own frequencies.
//!
//! A packed [`Batch`] is bound to the model's device once, by [`LlamaModel::upload`]; three entry
//! points take the result: [`LlamaModel::logits`], [`LlamaModel::score`] (per-token
//! log-likelihood of the targets) and [`LlamaModel::forward_backward`] (mean loss over target
//! tokens; gradients accumulate into every trainable parameter).

mod block;
mod decode;
mod generate;
mod init;
mod linear;
mod param;

use std::path::Path;

use flix_core::TypeShape;
use flix_kernels::ops::cross_entropy::{
    linear_cross_entropy_backward, linear_cross_entropy_forward, CrossEntropy,
};
use flix_kernels::ops::elementwise;
use flix_kernels::ops::embedding::{embedding_backward, embedding_forward};
use flix_kernels::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use flix_kernels::ops::{matmul, Trans};
use flix_kernels::{DType, Device, DeviceBatch, PackedTokens, Tensor};

pub use block::{DecoderLayer, QkNorm, SandwichNorms};
pub use decode::{
    DecodeEvent, Decoder, FinishReason, SequenceId, SequenceParams, MAX_TOP_LOGPROBS,
};
pub use generate::{sample, token_logprobs, GenerationConfig, TokenLogprobs};
pub use init::INIT_STD;
pub use linear::{Linear, LinearSaved};
pub use param::{duplicate, Param, ParamKind};

use crate::adapters::{Adapter, AdapterSpec, TargetModule};
use crate::batch::Batch;
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::train::tensor_file::NamedTensor;
use crate::weights::TensorSource;
use block::LayerInputs;
use param::MakeParam;

/// What [`LlamaModel::visit_activations`] calls per layer: the layer's index and its
/// activations by name.
#[doc(hidden)]
pub type ActivationVisitor<'a> = dyn FnMut(usize, &[(&'static str, &Tensor)]) -> Result<()> + 'a;

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
    /// Bytes the training forward may spend keeping the scored tokens' f32 logits for the
    /// backward, which then skips recomputing them (a third of the output layer's GEMM work);
    /// chunks past the budget are recomputed. Default: [`default_logits_budget`].
    pub logits_budget_bytes: usize,
}

/// The default [`LlamaModel::logits_budget_bytes`] on `device`. The CPU: 1 GiB, every logit of
/// a micro-batch of up to 1,024 scored tokens at a 262,144-token vocabulary (Gemma), 8,192 at
/// 32,000 (Llama 2): the micro-batches a CPU trains on, where the recompute is about a third of
/// the step, in a fraction of the RAM such a machine has. CUDA: 2 GiB, the same for 2,048
/// tokens (16,384 at 32k), under 3 % of an 80 GB card and 9 % of a 24 GB one, where GPU memory
/// is dearer and the recomputing GEMM cheaper. Past the budget, chunks are recomputed.
pub fn default_logits_budget(device: &Device) -> usize {
    match device {
        Device::Cpu => 1 << 30,
        Device::Cuda(_) => 2 << 30,
    }
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
    /// A working copy of an f32 `value` in another dtype (the bf16 copy a CUDA bf16 model keeps
    /// of its adapters), which the optimizer rounds the update into in the same pass.
    pub working: Option<&'a mut Tensor>,
}

/// Mean loss over the target tokens of a batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossReport {
    pub loss: f64,
    pub targets: usize,
}

impl LlamaModel {
    /// Loads the base model at `path` (a Hugging Face directory or a GGUF file, see
    /// [`crate::ModelSource`]) onto `device`, in the device's default working dtype
    /// ([`default_dtype`]).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_as(path, device, default_dtype(device))
    }

    /// Loads onto `device` with weights and activations in `dtype` (f32 on CUDA is for tests).
    pub fn load_as(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        crate::source::ModelSource::open(path)?.load_as(device, dtype)
    }

    pub fn from_checkpoint(
        config: LlamaConfig,
        ck: &dyn TensorSource,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        check_text_model_names(ck)?;
        check_layer_count(&config, ck)?;
        let offset = config.norm_weight_offset();
        let mut load = |name: String, shape: &[usize], kind: ParamKind| match kind {
            ParamKind::Norm => Param::load_shifted(ck, &name, shape, offset, device, dtype),
            ParamKind::Weight | ParamKind::Bias => Param::load(ck, &name, shape, device, dtype),
        };
        Self::build(config, device, &mut load)
    }

    /// A model for `config` with every parameter from `make` (name, shape, kind), asked for in
    /// a fixed order: the embedding, each layer's ([`DecoderLayer`]), the final norm, the head.
    fn build(config: LlamaConfig, device: &Device, make: &mut MakeParam<'_>) -> Result<Self> {
        let (v, d) = (config.vocab_size, config.hidden_size);
        let embed = make(
            "model.embed_tokens.weight".into(),
            &[v, d],
            ParamKind::Weight,
        )?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::build(&config, i, make))
            .collect::<Result<Vec<_>>>()?;
        let norm = make("model.norm.weight".into(), &[d], ParamKind::Norm)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(make("lm_head.weight".into(), &[v, d], ParamKind::Weight)?)
        };
        Ok(Self {
            config,
            device: device.clone(),
            embed,
            layers,
            norm,
            lm_head,
            vocab_chunk: 4096,
            logits_budget_bytes: default_logits_budget(device),
        })
    }

    /// Every base parameter in Hugging Face's conventions (Gemma's norm weights back to w):
    /// what `save_pretrained` and the merge of a full-mode run write.
    pub fn hf_weights(&self) -> Result<Vec<NamedTensor>> {
        let offset = self.config.norm_weight_offset();
        let tensor = |p: &Param, shift: f32| -> Result<NamedTensor> {
            let mut data = p.value.to_f32_vec()?;
            if shift != 0.0 {
                data.iter_mut().for_each(|v| *v -= shift);
            }
            Ok(NamedTensor {
                name: p.name.clone(),
                shape: p.value.shape().to_vec(),
                data,
            })
        };
        let mut out = vec![tensor(&self.embed, 0.0)?];
        for layer in &self.layers {
            for norm in layer.norms() {
                out.push(tensor(norm, offset)?);
            }
            for lin in layer.linears() {
                out.push(tensor(&lin.weight, 0.0)?);
                if let Some(b) = &lin.bias {
                    out.push(tensor(b, 0.0)?);
                }
            }
        }
        out.push(tensor(&self.norm, offset)?);
        if let Some(head) = &self.lm_head {
            out.push(tensor(head, 0.0)?);
        }
        Ok(out)
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
            for lin in layer.linears_mut_with_norms(&mut base) {
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
                    working: None,
                });
            }
        }
        for ad in adapters {
            let tensors = ad.layers.optimizer_tensors_mut();
            for (k, ty) in tensors.into_iter().enumerate() {
                out.push(Trainable {
                    value: ty.a,
                    grad: &ad.grads.da[k],
                    working: ty.a_working,
                });
                out.push(Trainable {
                    value: ty.b,
                    grad: &ad.grads.db[k],
                    working: ty.b_working,
                });
            }
        }
        out
    }

    /// Records that an optimizer step given [`LlamaModel::trainable_mut`] (or the trainer's
    /// list) wrote the adapters' working copies along with their masters
    /// (`LayerAdapters::copy_written_by_optimizer`), so the next launch does not cast them.
    pub fn adapter_copies_written_by_optimizer(&mut self) {
        for layer in &mut self.layers {
            for lin in layer.linears_mut() {
                if let Some(ad) = lin.adapter.as_mut() {
                    ad.layers.copy_written_by_optimizer();
                }
            }
        }
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
    /// `model.layers.0.self_attn.q_proj`, as in PEFT's keys), in layer then
    /// [`TargetModule::ALL`] order: what a trainer saves.
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
        Ok(l.linear_mut(module))
    }

    /// The feature types of the attached adapters, in plan order (`None` without adapters):
    /// read off the first adapter's shapes, since every adapter of a model has the same types.
    pub fn adapter_types(&self) -> Option<Vec<TypeShape>> {
        let adapter = self
            .layers
            .iter()
            .flat_map(|l| l.linears())
            .find_map(|lin| lin.adapter.as_ref())?;
        Some(
            adapter
                .layers
                .types
                .iter()
                .map(|t| {
                    // `a` is [values, rank, d_in]; a malformed one reads as rank 0, which the
                    // batch plan refuses with an error naming the type.
                    let dim = |i: usize| t.a.shape().get(i).copied().unwrap_or(0);
                    TypeShape {
                        rank: dim(1),
                        num_values: dim(0),
                    }
                })
                .collect(),
        )
    }

    /// Binds `batch` to the model's device, once per batch: checks it against the model's
    /// context, makes its FLix plan when the model has adapters ([`Batch::plan`]), and on CUDA
    /// uploads what the kernels read. Every pass over the batch takes the result.
    pub fn upload(&self, batch: &Batch) -> Result<DeviceBatch> {
        // The model has no positions past its context: a longer sequence would be computed
        // outside what it was built for, so callers cut or skip such examples first.
        let context = self.config.max_position_embeddings;
        if let Some(&last) = batch.positions.iter().find(|&&p| p as usize >= context) {
            return Err(ModelError::Batch(format!(
                "position {last} is past the model's context of {context} tokens \
                 (max_position_embeddings)"
            )));
        }
        let plan = match self.adapter_types() {
            Some(types) => Some(batch.plan(&types)?),
            None => None,
        };
        let packed = PackedTokens {
            tokens: &batch.tokens,
            targets: &batch.targets,
            positions: &batch.positions,
            starts: &batch.starts,
        };
        Ok(DeviceBatch::new(&self.device, packed, plan)?)
    }

    fn check_batch(&self, batch: &DeviceBatch) -> Result<()> {
        if !batch.device().same(&self.device) {
            return Err(ModelError::Batch(format!(
                "the batch lives on {}, the model on {}",
                batch.device(),
                self.device
            )));
        }
        Ok(())
    }

    /// Runs embedding and every layer; returns the final hidden state before the last norm and,
    /// with `save`, each layer's saved activations.
    fn trunk(&self, batch: &DeviceBatch, save: bool) -> Result<(Tensor, Vec<block::LayerSaved>)> {
        let mut saved = Vec::new();
        let x = self.run_layers(batch, |_, s| {
            if save {
                saved.push(s);
            }
            Ok(())
        })?;
        Ok((x, saved))
    }

    /// Embedding, then every layer in order, handing each layer's index and saved activations to
    /// `each`; returns the last layer's output.
    fn run_layers(
        &self,
        batch: &DeviceBatch,
        mut each: impl FnMut(usize, block::LayerSaved) -> Result<()>,
    ) -> Result<Tensor> {
        self.check_batch(batch)?;
        let inputs = LayerInputs { batch };
        let mut x = self.embed_tokens(batch)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let (next, s) = layer.forward(&inputs, x)?;
            each(i, s)?;
            x = next;
        }
        Ok(x)
    }

    /// Runs the trunk on `batch` (with its adapters, if it has a plan) and hands `visit` each
    /// layer's activations by name as it goes (see `LayerSaved::named`), the output of the last layer as `(layers,
    /// [("x", …)])` and the final norm's output as `(layers + 1, [("final", …)])`: for
    /// comparing the arithmetic layer by layer with another implementation
    /// (`examples/layer_dump.rs`).
    #[doc(hidden)]
    pub fn visit_activations(
        &self,
        batch: &DeviceBatch,
        visit: &mut ActivationVisitor<'_>,
    ) -> Result<()> {
        let x = self.run_layers(batch, |i, saved| visit(i, &saved.named()))?;
        let n = self.layers.len();
        visit(n, &[("x", &x)])?;
        let (xn, _) = rmsnorm_forward(&x, &self.norm.value, self.config.rms_norm_eps)?;
        visit(n + 1, &[("final", &xn)])
    }

    /// The factor on the embeddings (Gemma 3's √hidden_size), rounded to the model's dtype.
    fn embedding_scale(&self) -> Option<f32> {
        self.config.embedding_scale().map(|s| match self.dtype() {
            DType::F32 => s,
            DType::BF16 => half::bf16::from_f32(s).to_f32(),
        })
    }

    /// The (scaled) embeddings of the batch's tokens, `[T, hidden]`.
    fn embed_tokens(&self, batch: &DeviceBatch) -> Result<Tensor> {
        let mut x = embedding_forward(&self.embed.value, batch.token_ids())?;
        if let Some(s) = self.embedding_scale() {
            elementwise::scale(&mut x, s)?;
        }
        Ok(x)
    }

    fn head(&self) -> &Param {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Logits [T, vocab] for every token of the batch.
    pub fn logits(&self, batch: &DeviceBatch) -> Result<Tensor> {
        let (x, _) = self.trunk(batch, false)?;
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

    /// Log-likelihood of every target token (and the summed loss), without gradients: no logits
    /// are kept. [`CrossEntropy::token_logprobs`] brings the per-token values to the host.
    pub fn score(&self, batch: &DeviceBatch) -> Result<CrossEntropy> {
        let (x, _) = self.trunk(batch, false)?;
        let (xn, _) = rmsnorm_forward(&x, &self.norm.value, self.config.rms_norm_eps)?;
        Ok(linear_cross_entropy_forward(
            &xn,
            &self.head().value,
            batch.targets(),
            self.vocab_chunk,
            0,
        )?)
    }

    /// Mean cross-entropy over the target tokens; adds its gradient into every trainable
    /// parameter (call [`Self::zero_grad`] between steps).
    pub fn forward_backward(&mut self, batch: &DeviceBatch) -> Result<LossReport> {
        self.forward_backward_scaled(batch, None)
    }

    /// Like [`Self::forward_backward`], but the gradient added is that of
    /// `grad_scale · Σ −log p` over the batch's target tokens when `grad_scale` is given. For
    /// gradient accumulation, pass 1 / (target tokens of all micro-batches) to every
    /// micro-batch: the sum is then the gradient of the mean over the whole step.
    pub fn forward_backward_scaled(
        &mut self,
        batch: &DeviceBatch,
        grad_scale: Option<f32>,
    ) -> Result<LossReport> {
        let (x, saved) = self.trunk(batch, true)?;
        let eps = self.config.rms_norm_eps;
        let (xn, rstd) = rmsnorm_forward(&x, &self.norm.value, eps)?;
        let ce = linear_cross_entropy_forward(
            &xn,
            &self.head().value,
            batch.targets(),
            self.vocab_chunk,
            self.logits_budget_bytes,
        )?;
        if ce.count == 0 {
            return Err(ModelError::Batch("the batch has no target tokens".into()));
        }
        let report = LossReport {
            loss: ce.loss_sum / ce.count as f64,
            targets: ce.count,
        };
        let scale = grad_scale.unwrap_or(1.0 / ce.count as f32);
        let chunk = self.vocab_chunk;
        let head = self.lm_head.as_mut().unwrap_or(&mut self.embed);
        let Param {
            value: w, grad: dw, ..
        } = head;
        let dxn =
            linear_cross_entropy_backward(&xn, w, batch.targets(), ce, scale, chunk, dw.as_mut())?;
        let Param {
            value: wn,
            grad: dwn,
            ..
        } = &mut self.norm;
        let mut dx = rmsnorm_backward(&dxn, &x, wn, &rstd, dwn.as_mut())?;
        let inputs = LayerInputs { batch };
        for (layer, s) in self.layers.iter_mut().zip(&saved).rev() {
            dx = layer.backward(&inputs, s, &dx)?;
        }
        let embedding_scale = self.embedding_scale();
        if let Some(de) = self.embed.grad.as_mut() {
            if let Some(s) = embedding_scale {
                elementwise::scale(&mut dx, s)?;
            }
            embedding_backward(de, batch.token_ids(), &dx)?;
        }
        Ok(report)
    }
}

/// A multimodal checkpoint (Gemma 3 4B and larger, `Gemma3ForConditionalGeneration`) keeps its
/// text model under another prefix: say so, rather than report a missing embedding.
fn check_text_model_names(ck: &dyn TensorSource) -> Result<()> {
    if ck.contains("model.embed_tokens.weight") {
        return Ok(());
    }
    // transformers 4.x and 5.x name the text model differently.
    for prefix in ["language_model.model.", "model.language_model."] {
        if ck.contains(&format!("{prefix}embed_tokens.weight")) {
            return Err(ModelError::Invalid(format!(
                "the checkpoint is a multimodal model whose text weights are named \
                 `{prefix}…`; only text-model checkpoints (`model.…`, as Gemma3ForCausalLM \
                 saves them) can be loaded"
            )));
        }
    }
    Ok(())
}

/// Refuses a checkpoint with tensors of layers the config does not have.
fn check_layer_count(config: &LlamaConfig, ck: &dyn TensorSource) -> Result<()> {
    let layers = config.num_hidden_layers;
    for name in ck.tensor_names() {
        let index = name
            .strip_prefix("model.layers.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(i) = index.filter(|&i| i >= layers) {
            return Err(ModelError::Invalid(format!(
                "the checkpoint holds `{name}` (layer {i}) but the config has \
                 num_hidden_layers = {layers}: the config does not describe these weights"
            )));
        }
    }
    Ok(())
}
