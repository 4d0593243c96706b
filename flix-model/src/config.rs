//! The model configuration, read from a Hugging Face `config.json` of the Llama family (Llama 2/3,
//! Mistral, Qwen2, SmolLM, TinyLlama). Both ways transformers writes rope settings are accepted:
//! 4.x (`rope_theta` + `rope_scaling`) and 5.x (`rope_parameters`). A missing or malformed field is
//! an error naming the field and the file.

use std::path::{Path, PathBuf};

use flix_kernels::ops::rope::RopeScaling;
use serde_json::{Map, Value};

use crate::error::{ModelError, Result};

/// Which family's conventions apply (they differ in defaults: Qwen2 has q/k/v biases).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub family: Family,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q, k and v projections (Qwen2; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama with `attention_bias` only).
    pub o_bias: bool,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    /// Mistral's sliding window; segments longer than it are rejected (we do not implement it).
    pub sliding_window: Option<usize>,
}

impl LlamaConfig {
    /// Reads `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&text, path)
    }

    /// Parses the text of a `config.json`; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("not valid JSON: {e}"),
        })?;
        let obj = value.as_object().ok_or_else(|| ModelError::Config {
            path: path.to_path_buf(),
            message: "expected a JSON object".into(),
        })?;
        Fields { obj, path }.parse()
    }

    /// The config as transformers writes it (4.x style: `rope_theta` + `rope_scaling`, which
    /// 5.x also reads), for saving a model as a Hugging Face directory.
    pub fn to_hf_json(&self) -> Value {
        let (model_type, arch) = match self.family {
            Family::Llama => ("llama", "LlamaForCausalLM"),
            Family::Mistral => ("mistral", "MistralForCausalLM"),
            Family::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
        };
        let rope_scaling = match self.rope_scaling {
            RopeScaling::Default => Value::Null,
            RopeScaling::Linear { factor } => {
                serde_json::json!({"rope_type": "linear", "factor": factor})
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => serde_json::json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings as u64,
            }),
        };
        let mut json = serde_json::json!({
            "architectures": [arch],
            "model_type": model_type,
            "hidden_act": "silu",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "torch_dtype": "float32",
        });
        if self.family != Family::Qwen2 {
            json["attention_bias"] = Value::Bool(self.qkv_bias);
        }
        if let Some(w) = self.sliding_window {
            json["sliding_window"] = w.into();
            if self.family == Family::Qwen2 {
                json["use_sliding_window"] = Value::Bool(true);
            }
        }
        json
    }

    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}

/// The JSON object plus the file name, so every accessor can build a precise error.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
}

impl Fields<'_> {
    fn err(&self, message: String) -> ModelError {
        ModelError::Config {
            path: PathBuf::from(self.path),
            message,
        }
    }

    fn present(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn usize(&self, field: &str) -> Result<usize> {
        let v = self
            .present(field)
            .ok_or_else(|| self.err(format!("missing field `{field}`")))?;
        self.as_usize(field, v)
    }

    fn as_usize(&self, field: &str, v: &Value) -> Result<usize> {
        v.as_u64().map(|n| n as usize).ok_or_else(|| {
            self.err(format!(
                "field `{field}` must be a non-negative integer, found {v}"
            ))
        })
    }

    fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        self.present(field)
            .map(|v| self.as_usize(field, v))
            .transpose()
    }

    fn opt_f64(&self, field: &str) -> Result<Option<f64>> {
        self.present(field)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.err(format!("field `{field}` must be a number, found {v}")))
            })
            .transpose()
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        self.present(field)
            .map(|v| {
                v.as_bool().ok_or_else(|| {
                    self.err(format!("field `{field}` must be true or false, found {v}"))
                })
            })
            .transpose()
    }

    fn opt_str(&self, field: &str) -> Result<Option<&str>> {
        self.present(field)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.err(format!("field `{field}` must be a string, found {v}")))
            })
            .transpose()
    }

    fn parse(&self) -> Result<LlamaConfig> {
        let model_type = self
            .opt_str("model_type")?
            .ok_or_else(|| self.err("missing field `model_type`".into()))?;
        let family = match model_type {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            other => {
                return Err(self.err(format!(
                    "unsupported architecture: field `model_type` is {other:?}; supported: \
                     \"llama\" (Llama 2/3, SmolLM, TinyLlama), \"mistral\", \"qwen2\""
                )))
            }
        };
        if let Some(act) = self.opt_str("hidden_act")? {
            if act != "silu" {
                return Err(self.err(format!(
                    "field `hidden_act` is {act:?}; only \"silu\" (SwiGLU) is supported"
                )));
            }
        }
        if self.opt_bool("mlp_bias")? == Some(true) {
            return Err(self.err("field `mlp_bias` is true; MLP biases are not supported".into()));
        }
        let hidden_size = self.usize("hidden_size")?;
        let num_attention_heads = self.usize("num_attention_heads")?;
        if num_attention_heads == 0 {
            return Err(self.err("field `num_attention_heads` must be >= 1".into()));
        }
        // transformers defaults the KV heads to the attention heads (plain multi-head attention).
        let num_key_value_heads = self
            .opt_usize("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(self.err(format!(
                "field `num_key_value_heads` ({num_key_value_heads}) must divide \
                 `num_attention_heads` ({num_attention_heads})"
            )));
        }
        let head_dim = match self.opt_usize("head_dim")? {
            Some(h) => h,
            None if hidden_size.is_multiple_of(num_attention_heads) => {
                hidden_size / num_attention_heads
            }
            None => {
                return Err(self.err(format!(
                    "field `head_dim` is missing and `hidden_size` ({hidden_size}) is not a \
                     multiple of `num_attention_heads` ({num_attention_heads})"
                )))
            }
        };
        if !head_dim.is_multiple_of(2) {
            return Err(self.err(format!(
                "field `head_dim` ({head_dim}) must be even for RoPE"
            )));
        }
        let attention_bias = self.opt_bool("attention_bias")?.unwrap_or(false);
        let (qkv_bias, o_bias) = match family {
            // Qwen2 always has q/k/v biases and no output bias; its config has no field for it.
            Family::Qwen2 => (true, false),
            Family::Llama | Family::Mistral => (attention_bias, attention_bias),
        };
        let sliding_window = match family {
            Family::Mistral => self.opt_usize("sliding_window")?,
            Family::Qwen2 if self.opt_bool("use_sliding_window")? == Some(true) => {
                self.opt_usize("sliding_window")?
            }
            _ => None,
        };
        let (rope_theta, rope_scaling) = self.rope()?;
        Ok(LlamaConfig {
            family,
            hidden_size,
            intermediate_size: self.usize("intermediate_size")?,
            num_hidden_layers: self.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: self
                .opt_f64("rms_norm_eps")?
                .ok_or_else(|| self.err("missing field `rms_norm_eps`".into()))?
                as f32,
            vocab_size: self.usize("vocab_size")?,
            tie_word_embeddings: self.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias,
            o_bias,
            rope_theta,
            rope_scaling,
            max_position_embeddings: self.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            sliding_window,
        })
    }

    /// Rope settings: 5.x `rope_parameters` (theta inside) or 4.x `rope_theta` + `rope_scaling`.
    fn rope(&self) -> Result<(f64, RopeScaling)> {
        if let Some(params) = self.present("rope_parameters") {
            let obj = params.as_object().ok_or_else(|| {
                self.err(format!(
                    "field `rope_parameters` must be an object, found {params}"
                ))
            })?;
            let inner = Fields {
                obj,
                path: self.path,
            };
            let theta = inner
                .opt_f64("rope_theta")?
                .or(self.opt_f64("rope_theta")?)
                .ok_or_else(|| self.err("missing field `rope_parameters.rope_theta`".into()))?;
            return Ok((theta, inner.scaling("rope_parameters")?));
        }
        let theta = self.opt_f64("rope_theta")?.unwrap_or(10_000.0);
        let scaling = match self.present("rope_scaling") {
            None => RopeScaling::Default,
            Some(v) => {
                let obj = v.as_object().ok_or_else(|| {
                    self.err(format!(
                        "field `rope_scaling` must be an object or null, found {v}"
                    ))
                })?;
                Fields {
                    obj,
                    path: self.path,
                }
                .scaling("rope_scaling")?
            }
        };
        Ok((theta, scaling))
    }

    /// The scaling described by this object (`rope_type`, or the older key `type`).
    fn scaling(&self, parent: &str) -> Result<RopeScaling> {
        let kind = match self.opt_str("rope_type")? {
            Some(k) => Some(k),
            None => self.opt_str("type")?,
        };
        let num = |field: &str| -> Result<f64> {
            self.opt_f64(field)?
                .ok_or_else(|| self.err(format!("missing field `{parent}.{field}`")))
        };
        match kind.unwrap_or("default") {
            "default" => Ok(RopeScaling::Default),
            "linear" => Ok(RopeScaling::Linear {
                factor: num("factor")?,
            }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            }),
            other => Err(self.err(format!(
                "field `{parent}.rope_type` is {other:?}; supported: \"default\", \"linear\", \"llama3\""
            ))),
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
