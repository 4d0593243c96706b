//! Models without a checkpoint and checkpoints without Python: a randomly initialised model (as
//! transformers initialises Llama: weights N(0, 0.02²), norms 1), and writing a model back as a
//! Hugging Face directory (`config.json` + `model.safetensors`) that `LlamaModel::load` and
//! transformers read.

use std::path::Path;

use flix_core::splitmix64;
use flix_kernels::ops::rope::inv_freq;
use flix_kernels::{DType, Device, Tensor};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::{DecoderLayer, Linear, LlamaModel, Param};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};

/// transformers' default `initializer_range` for Llama.
pub const INIT_STD: f64 = 0.02;

/// How transformers initialises each kind of parameter: weights normal, norms one, biases zero.
#[derive(Clone, Copy)]
enum Init {
    Normal,
    Ones,
    Zeros,
}

/// Deterministic N(0, std²) values (Box–Muller over a counter-based hash of (seed, stream, i)).
fn normal(n: usize, std: f64, seed: u64, stream: u64) -> Vec<f32> {
    let base = splitmix64(seed ^ splitmix64(stream));
    let unit =
        |i: u64| ((splitmix64(base ^ splitmix64(i)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    (0..n as u64)
        .map(|i| {
            let (u1, u2) = (unit(2 * i), unit(2 * i + 1));
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect()
}

impl LlamaModel {
    /// A model with random weights for `config` (for pretraining small models from scratch),
    /// in the device's default working dtype.
    pub fn random(config: LlamaConfig, seed: u64, device: &Device) -> Result<Self> {
        Self::random_as(config, seed, device, super::default_dtype(device))
    }

    /// [`Self::random`] with weights stored as `dtype`.
    pub fn random_as(
        config: LlamaConfig,
        seed: u64,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let mut stream = 0u64;
        let mut param = |name: String, shape: &[usize], init: Init| -> Result<Param> {
            stream += 1;
            let n = shape.iter().product();
            let data = match init {
                Init::Normal => normal(n, INIT_STD, seed, stream),
                Init::Ones => vec![1.0; n],
                Init::Zeros => vec![0.0; n],
            };
            Ok(Param {
                value: Tensor::from_f32(device, dtype, shape, &data)?,
                name,
                grad: None,
            })
        };
        let (v, d, f) = (
            config.vocab_size,
            config.hidden_size,
            config.intermediate_size,
        );
        let embed = param("model.embed_tokens.weight".into(), &[v, d], Init::Normal)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut lin = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear> {
                let bias = if bias {
                    Some(param(format!("{p}.{name}.bias"), &[out], Init::Zeros)?)
                } else {
                    None
                };
                Ok(Linear {
                    weight: param(format!("{p}.{name}.weight"), &[out, inp], Init::Normal)?,
                    bias,
                    adapter: None,
                })
            };
            let (q, kv) = (config.q_dim(), config.kv_dim());
            let q_proj = lin("self_attn.q_proj", q, d, config.qkv_bias)?;
            let k_proj = lin("self_attn.k_proj", kv, d, config.qkv_bias)?;
            let v_proj = lin("self_attn.v_proj", kv, d, config.qkv_bias)?;
            let o_proj = lin("self_attn.o_proj", d, q, config.o_bias)?;
            let gate_proj = lin("mlp.gate_proj", f, d, false)?;
            let up_proj = lin("mlp.up_proj", f, d, false)?;
            let down_proj = lin("mlp.down_proj", d, f, false)?;
            layers.push(DecoderLayer::from_parts(
                &config,
                param(format!("{p}.input_layernorm.weight"), &[d], Init::Ones)?,
                [
                    q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj,
                ],
                param(
                    format!("{p}.post_attention_layernorm.weight"),
                    &[d],
                    Init::Ones,
                )?,
            ));
        }
        let norm = param("model.norm.weight".into(), &[d], Init::Ones)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(param("lm_head.weight".into(), &[v, d], Init::Normal)?)
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

    /// Writes `dir/config.json` and `dir/model.safetensors` (f32 base weights; adapters are not
    /// included), each with [`flix_core::write_atomic`], so a crash never leaves a torn file.
    pub fn save_pretrained(&mut self, dir: &Path) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ModelError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let config = self.config.to_hf_json();
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| ModelError::Invalid(format!("cannot serialise the config: {e}")))?;
        flix_core::write_atomic(&dir.join("config.json"), text.as_bytes())?;

        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for p in self.params_mut() {
            let bytes = p
                .value
                .to_f32_vec()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            tensors.push((p.name.clone(), p.value.shape().to_vec(), bytes));
        }
        let views = tensors
            .iter()
            .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
            .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
            .map_err(|e| ModelError::Invalid(format!("cannot lay out the weights: {e}")))?;
        let mut metadata = std::collections::HashMap::new();
        metadata.insert("format".to_string(), "pt".to_string());
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| ModelError::Invalid(format!("cannot serialise the weights: {e}")))?;
        Ok(flix_core::write_atomic(
            &dir.join(crate::weights::SINGLE_FILE),
            &bytes,
        )?)
    }
}
