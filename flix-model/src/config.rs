//! The model configuration, read from a Hugging Face `config.json` of the Llama family (Llama 2/3,
//! Mistral, Qwen2, Qwen3, SmolLM, TinyLlama) or of Gemma 3's text model. Both ways transformers writes
//! rope settings are accepted: 4.x (`rope_theta` + `rope_scaling`, and Gemma's
//! `rope_local_base_freq`) and 5.x (`rope_parameters`, per layer type for Gemma). A missing or
//! malformed field is an error naming the field and the file; so is a value no model can have
//! (a zero size, a non-positive epsilon, theta or rope factor).
//!
//! Gemma 3 comes as `model_type: "gemma3_text"` (the text-only models, e.g. 270M and 1B) or as a
//! multimodal `"gemma3"` config whose `text_config` object describes the text model (4B and
//! larger). Fields the text config leaves out take `Gemma3TextConfig`'s defaults, as transformers
//! does: `head_dim` 256, `num_key_value_heads` 4, `rms_norm_eps` 1e-6, `vocab_size` 262208,
//! `query_pre_attn_scalar` 256, `sliding_window` 4096 with every 6th layer global, rope theta
//! 1e6 (global layers) and 10000 (local layers), tied embeddings.
//!
//! Qwen3 (`model_type: "qwen3"`, the dense models) is Qwen2's layer without the q/k/v biases
//! (`attention_bias`, default false, puts a bias on q, k, v and o alike) and with an RMSNorm of
//! each head's query and key before the rope (`self_attn.q_norm`, `self_attn.k_norm`, weights
//! as Llama's norms, not Gemma's 1 + w). `head_dim` defaults to 128, as `Qwen3Config`'s.

use std::path::{Path, PathBuf};

use flix_kernels::ops::rope::RopeScaling;
use flix_kernels::ops::swiglu::GateActivation;
use serde_json::{Map, Value};

use crate::error::{ModelError, Result};

/// Which family's conventions apply. They differ in defaults (Qwen2 has q/k/v biases), in
/// sliding windows (see [`LlamaConfig::sliding_window`]), in the per-head query and key norms
/// (Qwen3 and Gemma 3), and Gemma 3's layer differs in several more ways (see [`crate::llama`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma3,
}

/// Which keys a layer's attention sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerType {
    /// Every earlier key of the sequence (`full_attention`).
    Full,
    /// The last `sliding_window` keys, itself included (`sliding_attention`).
    Sliding,
}

impl LayerType {
    fn hf_name(self) -> &'static str {
        match self {
            LayerType::Full => "full_attention",
            LayerType::Sliding => "sliding_attention",
        }
    }
}

/// A rope setting: base frequency and long-context scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// What only Gemma 3 has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmaSettings {
    /// Attention scores are scaled by `query_pre_attn_scalar^-0.5` (not `head_dim^-0.5`).
    pub query_pre_attn_scalar: f64,
    /// The rope of the sliding (local) layers; the global layers use `rope_theta` and
    /// `rope_scaling` of [`LlamaConfig`].
    pub local_rope: Rope,
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
    /// Bias on q, k and v projections (Qwen2; Llama and Gemma with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama and Gemma with `attention_bias` only).
    pub o_bias: bool,
    /// The rope of every layer (of the global layers for Gemma 3).
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    /// The window of the [`LayerType::Sliding`] layers (Mistral: every layer; Qwen2 with
    /// `use_sliding_window`: the layers from `max_window_layers` on; Gemma 3: the local layers).
    pub sliding_window: Option<usize>,
    /// Per layer, full or sliding attention (`num_hidden_layers` entries).
    pub layer_types: Vec<LayerType>,
    /// `Some` exactly for [`Family::Gemma3`].
    pub gemma: Option<GemmaSettings>,
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
        Fields {
            obj,
            path,
            prefix: String::new(),
        }
        .parse()
    }

    /// The config as transformers writes it (4.x style: `rope_theta` + `rope_scaling`, which
    /// 5.x also reads; Gemma 3 also gets 5.x's per-layer-type `rope_parameters`, the only way
    /// to write a scaled local rope), for saving a model as a Hugging Face directory.
    pub fn to_hf_json(&self) -> Value {
        let (model_type, arch) = match self.family {
            Family::Llama => ("llama", "LlamaForCausalLM"),
            Family::Mistral => ("mistral", "MistralForCausalLM"),
            Family::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
            Family::Qwen3 => ("qwen3", "Qwen3ForCausalLM"),
            Family::Gemma3 => ("gemma3_text", "Gemma3ForCausalLM"),
        };
        let mut json = serde_json::json!({
            "architectures": [arch],
            "model_type": model_type,
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
            "rope_scaling": rope_scaling_json(self.rope_scaling),
            "max_position_embeddings": self.max_position_embeddings,
            "torch_dtype": "float32",
        });
        match self.family {
            Family::Qwen2 => {}
            _ => json["attention_bias"] = Value::Bool(self.qkv_bias),
        }
        if let Some(w) = self.sliding_window {
            json["sliding_window"] = w.into();
        }
        match (self.family, self.gemma) {
            (Family::Gemma3, Some(g)) => {
                json["hidden_activation"] = "gelu_pytorch_tanh".into();
                // transformers 5.x insists on an integer here (its configs all have one).
                let scalar = g.query_pre_attn_scalar;
                json["query_pre_attn_scalar"] = if scalar.fract() == 0.0 && scalar < 1e15 {
                    (scalar as u64).into()
                } else {
                    scalar.into()
                };
                json["rope_local_base_freq"] = g.local_rope.theta.into();
                json["final_logit_softcapping"] = Value::Null;
                json["attn_logit_softcapping"] = Value::Null;
                json["layer_types"] = self.layer_types_json();
                let with_theta = |rope: Rope| {
                    let mut v = rope_scaling_json(rope.scaling);
                    if v.is_null() {
                        v = serde_json::json!({"rope_type": "default"});
                    }
                    v["rope_theta"] = rope.theta.into();
                    v
                };
                json["rope_parameters"] = serde_json::json!({
                    "full_attention": with_theta(Rope {
                        theta: self.rope_theta,
                        scaling: self.rope_scaling,
                    }),
                    "sliding_attention": with_theta(g.local_rope),
                });
            }
            (Family::Qwen2 | Family::Qwen3, _) if self.sliding_window.is_some() => {
                json["hidden_act"] = "silu".into();
                json["use_sliding_window"] = Value::Bool(true);
                json["layer_types"] = self.layer_types_json();
                // 4.x reads the sliding layers from here: the first sliding layer's index.
                let first = self
                    .layer_types
                    .iter()
                    .position(|t| *t == LayerType::Sliding);
                json["max_window_layers"] = first.unwrap_or(self.num_hidden_layers).into();
            }
            _ => json["hidden_act"] = "silu".into(),
        }
        json
    }

    fn layer_types_json(&self) -> Value {
        Value::Array(
            self.layer_types
                .iter()
                .map(|t| Value::from(t.hf_name()))
                .collect(),
        )
    }

    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// The factor on q·k before the softmax: `query_pre_attn_scalar^-0.5` for Gemma 3 (as
    /// transformers computes it, in f64), else exactly `AttentionShape::new`'s 1/√head_dim.
    pub fn attention_scale(&self) -> f32 {
        match self.gemma {
            Some(g) => g.query_pre_attn_scalar.powf(-0.5) as f32,
            None => 1.0 / (self.head_dim as f32).sqrt(),
        }
    }

    /// The keys layer `layer` sees beyond itself: `Some(window)` for a sliding layer.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        match self.layer_types.get(layer) {
            Some(LayerType::Sliding) => self.sliding_window,
            _ => None,
        }
    }

    /// The rope of layer `layer`: Gemma 3's local layers have their own.
    pub fn layer_rope(&self, layer: usize) -> Rope {
        match (self.gemma, self.layer_types.get(layer)) {
            (Some(g), Some(LayerType::Sliding)) => g.local_rope,
            _ => Rope {
                theta: self.rope_theta,
                scaling: self.rope_scaling,
            },
        }
    }

    /// Whether each head's query and key go through an RMSNorm before the rope (Qwen3 and
    /// Gemma 3: `self_attn.q_norm` and `self_attn.k_norm`, one weight of `head_dim` each).
    pub fn has_qk_norm(&self) -> bool {
        matches!(self.family, Family::Qwen3 | Family::Gemma3)
    }

    /// The activation of the MLP's gate: GeGLU (tanh GELU) for Gemma 3, SwiGLU otherwise.
    pub fn gate_activation(&self) -> GateActivation {
        match self.family {
            Family::Gemma3 => GateActivation::GeluTanh,
            _ => GateActivation::Silu,
        }
    }

    /// What the model adds to every RMSNorm weight of a checkpoint at load (and subtracts when it
    /// writes one back): Gemma's norms compute x̂ · (1 + w) where Llama's compute x̂ · w, so a
    /// Gemma model keeps 1 + w and shares the one RMSNorm op.
    pub fn norm_weight_offset(&self) -> f32 {
        match self.family {
            Family::Gemma3 => 1.0,
            _ => 0.0,
        }
    }

    /// Gemma 3 multiplies the embeddings by √hidden_size, which transformers computes in f64 and
    /// keeps as an f32 buffer (rounded further to the model's dtype by the caller); `None` for
    /// the other families.
    pub fn embedding_scale(&self) -> Option<f32> {
        match self.family {
            Family::Gemma3 => Some((self.hidden_size as f64).sqrt() as f32),
            _ => None,
        }
    }
}

/// The 4.x `rope_scaling` object of `scaling` (`null` for the default rope).
fn rope_scaling_json(scaling: RopeScaling) -> Value {
    match scaling {
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
    }
}

/// `Qwen3Config`'s `head_dim` (transformers), which is not hidden / heads in most Qwen3 models.
const QWEN3_DEFAULT_HEAD_DIM: usize = 128;

/// Gemma3TextConfig's defaults (transformers), for the fields a text config may leave out.
mod gemma_defaults {
    pub const HEAD_DIM: usize = 256;
    pub const NUM_KEY_VALUE_HEADS: usize = 4;
    pub const RMS_NORM_EPS: f64 = 1e-6;
    pub const VOCAB_SIZE: usize = 262_208;
    pub const QUERY_PRE_ATTN_SCALAR: f64 = 256.0;
    pub const SLIDING_WINDOW: usize = 4096;
    /// Every 6th layer is global (`sliding_window_pattern`).
    pub const SLIDING_WINDOW_PATTERN: usize = 6;
    pub const MAX_POSITION_EMBEDDINGS: usize = 131_072;
    pub const GLOBAL_ROPE_THETA: f64 = 1_000_000.0;
    pub const LOCAL_ROPE_THETA: f64 = 10_000.0;
}

/// The JSON object plus the file name and the object's path in the file (`text_config.` inside a
/// multimodal Gemma 3 config), so every accessor can build a precise error.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
    prefix: String,
}

impl<'a> Fields<'a> {
    fn err(&self, message: String) -> ModelError {
        ModelError::Config {
            path: PathBuf::from(self.path),
            message,
        }
    }

    /// `field` as the error messages name it: with its parents.
    fn name(&self, field: &str) -> String {
        format!("`{}{field}`", self.prefix)
    }

    /// The object under `field`, for reading its fields.
    fn nested(&self, field: &str) -> Result<Option<Fields<'a>>> {
        let Some(v) = self.obj.get(field).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let obj = v.as_object().ok_or_else(|| {
            self.err(format!(
                "field {} must be an object, found {v}",
                self.name(field)
            ))
        })?;
        Ok(Some(Fields {
            obj,
            path: self.path,
            prefix: format!("{}{field}.", self.prefix),
        }))
    }

    fn present(&self, field: &str) -> Option<&'a Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn missing(&self, field: &str) -> ModelError {
        self.err(format!("missing field {}", self.name(field)))
    }

    fn as_usize(&self, field: &str, v: &Value) -> Result<usize> {
        v.as_u64().map(|n| n as usize).ok_or_else(|| {
            self.err(format!(
                "field {} must be a non-negative integer, found {v}",
                self.name(field)
            ))
        })
    }

    fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        self.present(field)
            .map(|v| self.as_usize(field, v))
            .transpose()
    }

    /// A size: a positive integer.
    fn size(&self, field: &str, default: Option<usize>) -> Result<usize> {
        let n = match (self.opt_usize(field)?, default) {
            (Some(n), _) | (None, Some(n)) => n,
            (None, None) => return Err(self.missing(field)),
        };
        if n == 0 {
            return Err(self.err(format!("field {} must be >= 1, found 0", self.name(field))));
        }
        Ok(n)
    }

    fn opt_f64(&self, field: &str) -> Result<Option<f64>> {
        self.present(field)
            .map(|v| {
                v.as_f64().ok_or_else(|| {
                    self.err(format!(
                        "field {} must be a number, found {v}",
                        self.name(field)
                    ))
                })
            })
            .transpose()
    }

    /// A number that must be finite and > 0 (a theta, a factor, an epsilon).
    fn positive(&self, field: &str, default: Option<f64>) -> Result<f64> {
        let x = match (self.opt_f64(field)?, default) {
            (Some(x), _) | (None, Some(x)) => x,
            (None, None) => return Err(self.missing(field)),
        };
        if !(x.is_finite() && x > 0.0) {
            return Err(self.err(format!(
                "field {} must be a finite number > 0, found {x}",
                self.name(field)
            )));
        }
        Ok(x)
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        self.present(field)
            .map(|v| {
                v.as_bool().ok_or_else(|| {
                    self.err(format!(
                        "field {} must be true or false, found {v}",
                        self.name(field)
                    ))
                })
            })
            .transpose()
    }

    fn opt_str(&self, field: &str) -> Result<Option<&'a str>> {
        self.present(field)
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    self.err(format!(
                        "field {} must be a string, found {v}",
                        self.name(field)
                    ))
                })
            })
            .transpose()
    }

    fn parse(&self) -> Result<LlamaConfig> {
        let model_type = self
            .opt_str("model_type")?
            .ok_or_else(|| self.missing("model_type"))?;
        let family = match model_type {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "gemma3_text" => Family::Gemma3,
            "gemma3" => return self.parse_gemma3_wrapper(),
            other => {
                return Err(self.err(format!(
                    "unsupported architecture: field {} is {other:?}; supported: \
                     \"llama\" (Llama 2/3, SmolLM, TinyLlama), \"mistral\", \"qwen2\", \
                     \"qwen3\", \"gemma3_text\" and \"gemma3\" (Gemma 3's text model)",
                    self.name("model_type")
                )))
            }
        };
        // Gemma 3 has defaults of its own (see the module docs).
        let gemma = family == Family::Gemma3;
        self.check_activation(family)?;
        if self.opt_bool("mlp_bias")? == Some(true) {
            return Err(self.err(format!(
                "field {} is true; MLP biases are not supported",
                self.name("mlp_bias")
            )));
        }
        let hidden_size = self.size("hidden_size", None)?;
        let num_attention_heads = self.size("num_attention_heads", None)?;
        // transformers defaults the KV heads to the attention heads (plain multi-head
        // attention), except Gemma 3 (4).
        let num_key_value_heads = self.size(
            "num_key_value_heads",
            Some(if gemma {
                gemma_defaults::NUM_KEY_VALUE_HEADS
            } else {
                num_attention_heads
            }),
        )?;
        if !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(self.err(format!(
                "field {} ({num_key_value_heads}) must divide {} ({num_attention_heads})",
                self.name("num_key_value_heads"),
                self.name("num_attention_heads")
            )));
        }
        let head_dim = match self.opt_usize("head_dim")? {
            Some(h) => h,
            None if gemma => gemma_defaults::HEAD_DIM,
            None if family == Family::Qwen3 => QWEN3_DEFAULT_HEAD_DIM,
            None if hidden_size.is_multiple_of(num_attention_heads) => {
                hidden_size / num_attention_heads
            }
            None => {
                return Err(self.err(format!(
                    "field {} is missing and {} ({hidden_size}) is not a multiple of {} \
                     ({num_attention_heads})",
                    self.name("head_dim"),
                    self.name("hidden_size"),
                    self.name("num_attention_heads")
                )))
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(self.err(format!(
                "field {} ({head_dim}) must be even and >= 2 for RoPE",
                self.name("head_dim")
            )));
        }
        let num_hidden_layers = self.size("num_hidden_layers", None)?;
        let attention_bias = self.opt_bool("attention_bias")?.unwrap_or(false);
        let (qkv_bias, o_bias) = match family {
            // Qwen2 always has q/k/v biases and no output bias; its config has no field for it.
            Family::Qwen2 => (true, false),
            Family::Llama | Family::Mistral | Family::Qwen3 | Family::Gemma3 => {
                (attention_bias, attention_bias)
            }
        };
        let (sliding_window, layer_types) = self.layers(family, num_hidden_layers)?;
        let (global_rope, gemma_settings) = if gemma {
            self.refuse_gemma_features()?;
            let (global, local) = self.gemma_rope()?;
            let settings = GemmaSettings {
                query_pre_attn_scalar: self.positive(
                    "query_pre_attn_scalar",
                    Some(gemma_defaults::QUERY_PRE_ATTN_SCALAR),
                )?,
                local_rope: local,
            };
            (global, Some(settings))
        } else {
            (self.rope(10_000.0)?, None)
        };
        Ok(LlamaConfig {
            family,
            hidden_size,
            intermediate_size: self.size("intermediate_size", None)?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: self.positive(
                "rms_norm_eps",
                gemma.then_some(gemma_defaults::RMS_NORM_EPS),
            )? as f32,
            vocab_size: self.size("vocab_size", gemma.then_some(gemma_defaults::VOCAB_SIZE))?,
            // Gemma ties its head to the embedding unless told otherwise.
            tie_word_embeddings: self.opt_bool("tie_word_embeddings")?.unwrap_or(gemma),
            qkv_bias,
            o_bias,
            rope_theta: global_rope.theta,
            rope_scaling: global_rope.scaling,
            max_position_embeddings: self.size(
                "max_position_embeddings",
                Some(if gemma {
                    gemma_defaults::MAX_POSITION_EMBEDDINGS
                } else {
                    2048
                }),
            )?,
            sliding_window,
            layer_types,
            gemma: gemma_settings,
        })
    }

    /// A multimodal Gemma 3 config: the text model is its `text_config` (whose `model_type`, if
    /// given, must be `gemma3_text`). `tie_word_embeddings` may sit at either level.
    fn parse_gemma3_wrapper(&self) -> Result<LlamaConfig> {
        let text = self
            .nested("text_config")?
            .ok_or_else(|| self.missing("text_config"))?;
        match text.opt_str("model_type")? {
            None | Some("gemma3_text") => {}
            Some(other) => {
                return Err(self.err(format!(
                    "field {} is {other:?}; a \"gemma3\" config's text model must be \
                     \"gemma3_text\"",
                    text.name("model_type")
                )))
            }
        }
        let mut obj = text.obj.clone();
        obj.insert("model_type".into(), "gemma3_text".into());
        if !obj.contains_key("tie_word_embeddings") {
            if let Some(tie) = self.opt_bool("tie_word_embeddings")? {
                obj.insert("tie_word_embeddings".into(), tie.into());
            }
        }
        Fields {
            obj: &obj,
            path: self.path,
            prefix: text.prefix.clone(),
        }
        .parse()
    }

    /// `hidden_act` must be silu (SwiGLU) for the Llama family; Gemma 3's `hidden_activation`
    /// must be gelu_pytorch_tanh (GeGLU), its default.
    fn check_activation(&self, family: Family) -> Result<()> {
        let (field, want, default) = match family {
            Family::Gemma3 => (
                "hidden_activation",
                "gelu_pytorch_tanh",
                "gelu_pytorch_tanh",
            ),
            _ => ("hidden_act", "silu", "silu"),
        };
        let act = self.opt_str(field)?.unwrap_or(default);
        if act != want {
            return Err(self.err(format!(
                "field {} is {act:?}; only {want:?} is supported for this architecture",
                self.name(field)
            )));
        }
        Ok(())
    }

    /// Gemma settings that change the computation in ways not implemented: refused, not ignored.
    fn refuse_gemma_features(&self) -> Result<()> {
        for field in ["final_logit_softcapping", "attn_logit_softcapping"] {
            if let Some(v) = self.present(field) {
                return Err(self.err(format!(
                    "field {} is {v}; soft-capping is not supported (Gemma 3 sets it to null)",
                    self.name(field)
                )));
            }
        }
        if self.opt_bool("use_bidirectional_attention")? == Some(true) {
            return Err(self.err(format!(
                "field {} is true; only causal attention is supported",
                self.name("use_bidirectional_attention")
            )));
        }
        Ok(())
    }

    /// The sliding window and each layer's type, per family (see [`LlamaConfig::sliding_window`]).
    /// An explicit `layer_types` list wins over what the family's other fields imply.
    fn layers(&self, family: Family, layers: usize) -> Result<(Option<usize>, Vec<LayerType>)> {
        let window = |default: Option<usize>| -> Result<Option<usize>> {
            match self.opt_usize("sliding_window")?.or(default) {
                Some(0) => Err(self.err(format!(
                    "field {} must be >= 1, found 0",
                    self.name("sliding_window")
                ))),
                w => Ok(w),
            }
        };
        let (window, implied) = match family {
            Family::Llama => (None, vec![LayerType::Full; layers]),
            Family::Mistral => {
                let w = window(None)?;
                let kind = if w.is_some() {
                    LayerType::Sliding
                } else {
                    LayerType::Full
                };
                (w, vec![kind; layers])
            }
            Family::Qwen2 | Family::Qwen3 => {
                if self.opt_bool("use_sliding_window")? == Some(true) {
                    let w = window(None)?;
                    // transformers: layers from `max_window_layers` (default 28) on slide.
                    let from = self.opt_usize("max_window_layers")?.unwrap_or(28);
                    let types = (0..layers)
                        .map(|i| match (w, i >= from) {
                            (Some(_), true) => LayerType::Sliding,
                            _ => LayerType::Full,
                        })
                        .collect();
                    (w, types)
                } else {
                    (None, vec![LayerType::Full; layers])
                }
            }
            Family::Gemma3 => {
                let w = window(Some(gemma_defaults::SLIDING_WINDOW))?;
                // 4.x wrote `sliding_window_pattern`, 5.x `_sliding_window_pattern`.
                let pattern = match self.opt_usize("sliding_window_pattern")? {
                    Some(p) => Some(p),
                    None => self.opt_usize("_sliding_window_pattern")?,
                }
                .unwrap_or(gemma_defaults::SLIDING_WINDOW_PATTERN);
                if pattern == 0 {
                    return Err(self.err(format!(
                        "field {} must be >= 1, found 0",
                        self.name("sliding_window_pattern")
                    )));
                }
                let types = (0..layers)
                    .map(|i| {
                        if (i + 1).is_multiple_of(pattern) {
                            LayerType::Full
                        } else {
                            LayerType::Sliding
                        }
                    })
                    .collect();
                (w, types)
            }
        };
        // Only Qwen2 and Qwen3 (with a window) and Gemma 3 read `layer_types`; transformers'
        // Llama and Mistral ignore it.
        let explicit = match family {
            Family::Qwen2 | Family::Qwen3 if window.is_some() => self.present("layer_types"),
            Family::Gemma3 => self.present("layer_types"),
            _ => None,
        };
        let types = match explicit {
            None => implied,
            Some(v) => self.layer_types(v, layers)?,
        };
        // A window no layer uses is not kept (Qwen2 writes one regardless).
        let window = window.filter(|_| types.contains(&LayerType::Sliding));
        Ok((window, types))
    }

    fn layer_types(&self, v: &Value, layers: usize) -> Result<Vec<LayerType>> {
        let field = self.name("layer_types");
        let list = v
            .as_array()
            .ok_or_else(|| self.err(format!("field {field} must be a list, found {v}")))?;
        if list.len() != layers {
            return Err(self.err(format!(
                "field {field} has {} entries for {layers} layers (`num_hidden_layers`)",
                list.len()
            )));
        }
        list.iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(LayerType::Full),
                Some("sliding_attention") => Ok(LayerType::Sliding),
                _ => Err(self.err(format!(
                    "field {field} holds {t}; supported: \"full_attention\", \
                     \"sliding_attention\""
                ))),
            })
            .collect()
    }

    /// Rope settings: 5.x `rope_parameters` (theta inside) or 4.x `rope_theta` + `rope_scaling`;
    /// `default_theta` when neither names a theta.
    fn rope(&self, default_theta: f64) -> Result<Rope> {
        if let Some(params) = self.nested("rope_parameters")? {
            let outer_theta = self.positive("rope_theta", Some(default_theta))?;
            let rope = params.rope_object(outer_theta)?;
            return self.agreeing_with_rope_scaling(rope, outer_theta, "rope_parameters");
        }
        let theta = self.positive("rope_theta", Some(default_theta))?;
        let scaling = match self.nested("rope_scaling")? {
            None => RopeScaling::Default,
            Some(obj) => obj.scaling()?,
        };
        Ok(Rope { theta, scaling })
    }

    /// Gemma 3's (global, local) rope: 5.x `rope_parameters` per layer type
    /// (`full_attention`, `sliding_attention`), or 4.x `rope_theta` + `rope_scaling` for the
    /// global layers and `rope_local_base_freq` (default rope) for the local ones.
    fn gemma_rope(&self) -> Result<(Rope, Rope)> {
        let local_theta = self.positive(
            "rope_local_base_freq",
            Some(gemma_defaults::LOCAL_ROPE_THETA),
        )?;
        let per_type = match self.nested("rope_parameters")? {
            Some(p) if p.present("full_attention").is_some() => Some(p),
            Some(p) if p.present("sliding_attention").is_some() => Some(p),
            _ => None,
        };
        let Some(params) = per_type else {
            let local = Rope {
                theta: local_theta,
                scaling: RopeScaling::Default,
            };
            return Ok((self.rope(gemma_defaults::GLOBAL_ROPE_THETA)?, local));
        };
        let global_theta = self.positive("rope_theta", Some(gemma_defaults::GLOBAL_ROPE_THETA))?;
        let of_type = |name: &str, theta: f64| -> Result<Rope> {
            match params.nested(name)? {
                Some(obj) => obj.rope_object(theta),
                None => Ok(Rope {
                    theta,
                    scaling: RopeScaling::Default,
                }),
            }
        };
        let global = of_type("full_attention", global_theta)?;
        let global = self.agreeing_with_rope_scaling(
            global,
            global.theta,
            "rope_parameters.full_attention",
        )?;
        Ok((global, of_type("sliding_attention", local_theta)?))
    }

    /// `rope`, read from the 5.x field `field`, when a 4.x `rope_scaling` beside it (present,
    /// not null, not empty; its theta defaulting to `default_theta`) describes the same rope or
    /// is absent. transformers 5 lays `rope_scaling` over `rope_parameters` (for Gemma 3, over
    /// the global layers' rope) and 4.x reads only `rope_scaling`, so when they disagree the
    /// config means different models to different readers: refused.
    fn agreeing_with_rope_scaling(
        &self,
        rope: Rope,
        default_theta: f64,
        field: &str,
    ) -> Result<Rope> {
        let Some(legacy) = self.nested("rope_scaling")?.filter(|f| !f.obj.is_empty()) else {
            return Ok(rope);
        };
        if legacy.rope_object(default_theta)? != rope {
            return Err(self.err(format!(
                "fields {} and {} describe different ropes; keep one",
                self.name(field),
                self.name("rope_scaling")
            )));
        }
        Ok(rope)
    }

    /// A 5.x rope object: `rope_theta` (else `default_theta`) and the scaling it describes.
    fn rope_object(&self, default_theta: f64) -> Result<Rope> {
        Ok(Rope {
            theta: self.positive("rope_theta", Some(default_theta))?,
            scaling: self.scaling()?,
        })
    }

    /// The scaling described by this object (`rope_type`, or the older key `type`).
    fn scaling(&self) -> Result<RopeScaling> {
        let kind = match self.opt_str("rope_type")? {
            Some(k) => Some(k),
            None => self.opt_str("type")?,
        };
        let num = |field: &str| self.positive(field, None);
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
                "field {} is {other:?}; supported: \"default\", \"linear\", \"llama3\"",
                self.name("rope_type")
            ))),
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
