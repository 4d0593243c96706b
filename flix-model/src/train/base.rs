//! Small base models made in code: a random-init Llama checkpoint written as a Hugging Face
//! directory (`config.json`, `model.safetensors`, `tokenizer.json`), and the weights of a model
//! (after full-parameter pretraining) saved back as such a directory. The demo pretrains its own
//! base this way, then loads it through [`crate::LlamaModel::load`] like any real checkpoint.

use std::path::Path;

use flix_core::splitmix64;
use serde_json::json;

use super::tensor_file::{save_tensors, write_atomic, NamedTensor};
use crate::error::{ModelError, Result};
use crate::llama::LlamaModel;

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

    /// Every weight with its shape, in checkpoint naming.
    fn weights(&self) -> Vec<(String, Vec<usize>)> {
        let (d, f, v) = (self.hidden, self.intermediate, self.vocab);
        let hd = d / self.heads;
        let kv = self.kv_heads * hd;
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, d])];
        for i in 0..self.layers {
            let p = format!("model.layers.{i}");
            out.extend([
                (format!("{p}.input_layernorm.weight"), vec![d]),
                (format!("{p}.self_attn.q_proj.weight"), vec![d, d]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kv, d]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kv, d]),
                (format!("{p}.self_attn.o_proj.weight"), vec![d, d]),
                (format!("{p}.post_attention_layernorm.weight"), vec![d]),
                (format!("{p}.mlp.gate_proj.weight"), vec![f, d]),
                (format!("{p}.mlp.up_proj.weight"), vec![f, d]),
                (format!("{p}.mlp.down_proj.weight"), vec![d, f]),
            ]);
        }
        out.push(("model.norm.weight".to_string(), vec![d]));
        out.push(("lm_head.weight".to_string(), vec![v, d]));
        out
    }
}

/// Writes a random-init checkpoint of `shape` to `dir`: norms 1, every matrix uniform with
/// standard deviation 0.02 (transformers' `initializer_range`), drawn from `seed`.
pub fn write_random_base(
    dir: &Path,
    shape: &TinyLlamaShape,
    tokenizer_json: &str,
    seed: u64,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let bound = 0.02 * 3f64.sqrt();
    let tensors: Vec<NamedTensor> = shape
        .weights()
        .into_iter()
        .enumerate()
        .map(|(w, (name, dims))| {
            let n: usize = dims.iter().product();
            let data = if dims.len() == 1 {
                vec![1.0; n]
            } else {
                let stream = splitmix64(seed ^ splitmix64(w as u64));
                (0..n as u64)
                    .map(|i| {
                        let h = splitmix64(stream ^ splitmix64(i));
                        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
                        ((2.0 * u - 1.0) * bound) as f32
                    })
                    .collect()
            };
            NamedTensor {
                name,
                shape: dims,
                data,
            }
        })
        .collect();
    save_tensors(&dir.join("model.safetensors"), &tensors)?;
    write_atomic(&dir.join("config.json"), shape.config_json().as_bytes())?;
    write_atomic(&dir.join("tokenizer.json"), tokenizer_json.as_bytes())
}

/// Saves every base weight of `model` as `dir/model.safetensors`, with `config.json` and
/// `tokenizer.json` copied from `source_dir`: a checkpoint directory `LlamaModel::load` reads.
pub fn save_model_dir(model: &mut LlamaModel, source_dir: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut tensors = Vec::new();
    for p in model.params_mut() {
        tensors.push(NamedTensor {
            name: p.name.clone(),
            shape: p.value.shape().to_vec(),
            data: p.value.to_f32_vec()?,
        });
    }
    save_tensors(&dir.join("model.safetensors"), &tensors)?;
    for file in ["config.json", "tokenizer.json"] {
        let from = source_dir.join(file);
        let bytes = std::fs::read(&from).map_err(|source| ModelError::Io { path: from, source })?;
        write_atomic(&dir.join(file), &bytes)?;
    }
    Ok(())
}
