//! Small base models made in code: a random-init Llama checkpoint written as a Hugging Face
//! directory (`config.json`, `model.safetensors`, `tokenizer.json`), and the weights of a model
//! (after full-parameter pretraining) saved back as such a directory. The demo pretrains its own
//! base this way, then loads it through [`crate::LlamaModel::load`] like any real checkpoint.

use std::path::Path;

use flix_kernels::{DType, Device};
use serde_json::json;

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::llama::LlamaModel;
use flix_core::write_atomic;

/// The shape of a small Llama.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TinyLlamaShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub max_positions: usize,
}

impl TinyLlamaShape {
    /// The `config.json` of this shape (untied embeddings, rope theta 10000).
    pub fn config_json(&self) -> String {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.hidden / self.heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": self.max_positions,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": false,
            "hidden_act": "silu",
            "torch_dtype": "float32"
        })
        .to_string()
    }
}

/// Writes a random-init checkpoint of `shape` to `dir` (transformers' initialisation, drawn from
/// `seed`, f32) with `tokenizer_json` beside it.
pub fn write_random_base(
    dir: &Path,
    shape: &TinyLlamaShape,
    tokenizer_json: &str,
    seed: u64,
) -> Result<()> {
    let config = LlamaConfig::from_json_str(&shape.config_json(), &dir.join("config.json"))?;
    let mut model = LlamaModel::random_as(config, seed, &Device::Cpu, DType::F32)?;
    model.save_pretrained(dir)?;
    Ok(write_atomic(
        &dir.join("tokenizer.json"),
        tokenizer_json.as_bytes(),
    )?)
}

/// Saves every base weight of `model` as a checkpoint directory in `dir`, with `tokenizer.json`
/// copied from `source_dir`: a directory `LlamaModel::load` reads.
pub fn save_model_dir(model: &mut LlamaModel, source_dir: &Path, dir: &Path) -> Result<()> {
    model.save_pretrained(dir)?;
    let from = source_dir.join("tokenizer.json");
    let bytes = std::fs::read(&from).map_err(|source| ModelError::Io { path: from, source })?;
    Ok(write_atomic(&dir.join("tokenizer.json"), &bytes)?)
}
