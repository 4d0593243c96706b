//! A GGUF model seen as a Hugging Face checkpoint: its `config.json` rebuilt from the GGUF
//! metadata, and its tensors under their Hugging Face names, in Hugging Face's conventions. See
//! the [module docs](super) for the mapping.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::reader::{gguf_err, GgufFile, MetaValue};
use crate::adapters::TargetModule;
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::weights::TensorSource;

/// The GGUF architectures (`general.architecture`) that map onto Hugging Face models here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufArchitecture {
    /// `llama`: Llama 2/3, and Mistral, which llama.cpp also writes as `llama`.
    Llama,
    Qwen2,
    /// `qwen3`: the dense Qwen3 models (Qwen2's layer with per-head q/k norms, no biases).
    Qwen3,
    Gemma3,
}

impl GgufArchitecture {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            "gemma3" => Some(Self::Gemma3),
            _ => None,
        }
    }

    /// The name in `general.architecture` and in the metadata key prefix.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Gemma3 => "gemma3",
        }
    }
}

/// llama.cpp fills Gemma 3's sliding-window layout in: every 6th layer attends globally.
pub const GEMMA3_SLIDING_WINDOW_PATTERN: usize = 6;
/// llama.cpp's rope base of Gemma 3's sliding-window (local) layers.
pub const GEMMA3_ROPE_LOCAL_BASE_FREQ: f64 = 10_000.0;
/// The layer count of Gemma 3 27B, whose attention scale llama.cpp takes from hidden / heads.
const GEMMA3_27B_LAYERS: usize = 62;

/// An opened GGUF model: the file, its Hugging Face config and the name mapping.
pub struct GgufModel {
    file: GgufFile,
    architecture: GgufArchitecture,
    config: Value,
    /// Hugging Face tensor name → GGUF tensor name.
    names: BTreeMap<String, String>,
    num_heads: usize,
    num_kv_heads: usize,
}

impl std::fmt::Debug for GgufModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufModel({:?}, {:?})", self.file, self.architecture)
    }
}

impl GgufModel {
    /// Opens `path` and builds its configuration and tensor mapping; an architecture other than
    /// llama, qwen2, qwen3 or gemma3, a missing hyperparameter, or a tensor with no Hugging Face
    /// counterpart is an error naming it.
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_file(GgufFile::open(path)?)
    }

    /// As [`GgufModel::open`], for an already opened file.
    pub fn from_file(file: GgufFile) -> Result<Self> {
        let arch_name = file.get_str("general.architecture")?;
        let architecture = GgufArchitecture::from_name(arch_name).ok_or_else(|| {
            gguf_err(
                file.path(),
                format!(
                    "unsupported architecture: `general.architecture` is {arch_name:?}; \
                     supported: \"llama\" (Llama 2/3, Mistral), \"qwen2\", \"qwen3\", \"gemma3\""
                ),
            )
        })?;
        let hp = Hyperparameters::read(&file, architecture)?;
        let mut names = BTreeMap::new();
        let mut rope_freqs = None;
        for info in file.tensors() {
            if architecture == GgufArchitecture::Llama && info.name == "rope_freqs.weight" {
                // Llama 3's rope scaling, stored as per-frequency factors; read into the config.
                rope_freqs = Some(info.name.clone());
                continue;
            }
            let hf = hf_name(architecture, &info.name, hp.layers)
                .map_err(|m| gguf_err(file.path(), format!("tensor `{}`: {m}", info.name)))?;
            names.insert(hf, info.name.clone());
        }
        let config = hp.to_hf_json(&file, architecture, rope_freqs.as_deref())?;
        Ok(Self {
            file,
            architecture,
            config,
            names,
            num_heads: hp.heads,
            num_kv_heads: hp.kv_heads,
        })
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    pub fn architecture(&self) -> GgufArchitecture {
        self.architecture
    }

    /// The Hugging Face `config.json` object transformers would write for this model (see the
    /// [module docs](super) for where each field comes from).
    pub fn hf_config(&self) -> Value {
        self.config.clone()
    }

    /// [`GgufModel::hf_config`] parsed as a model configuration.
    pub fn llama_config(&self) -> Result<LlamaConfig> {
        LlamaConfig::from_json_str(&self.config.to_string(), self.file.path())
    }

    /// The GGUF name of the Hugging Face tensor `hf_name`, if the file has it.
    pub fn gguf_name(&self, hf_name: &str) -> Option<&str> {
        self.names.get(hf_name).map(String::as_str)
    }

    /// The row-major shape of the Hugging Face tensor `hf_name` (the GGUF tensor's shape; the
    /// conversions to Hugging Face's conventions keep it).
    pub fn hf_shape(&self, hf_name: &str) -> Result<Vec<usize>> {
        self.gguf_name(hf_name)
            .and_then(|g| self.file.tensor_info(g))
            .map(|info| info.shape.clone())
            .ok_or_else(|| self.err(format!("no GGUF tensor maps to `{hf_name}`")))
    }

    fn err(&self, message: String) -> ModelError {
        gguf_err(self.file.path(), message)
    }
}

impl TensorSource for GgufModel {
    fn contains(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }

    fn tensor_names(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    fn load_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let gguf = self.names.get(name).ok_or_else(|| {
            self.err(format!(
                "tensor `{name}` (shape {shape:?}) is missing: no GGUF tensor maps to it"
            ))
        })?;
        let (found, mut values) = self.file.tensor_f32(gguf)?;
        if found != shape {
            return Err(self.err(format!(
                "tensor `{name}` (GGUF `{gguf}`) has shape {found:?}, expected {shape:?}"
            )));
        }
        match self.architecture {
            GgufArchitecture::Llama => {
                // convert_hf_to_gguf permutes the rows of q (by attention heads) and k (by KV
                // heads) so rotary pairs sit side by side; undo it.
                let heads = if is_projection(name, TargetModule::Q) {
                    Some(self.num_heads)
                } else if is_projection(name, TargetModule::K) {
                    Some(self.num_kv_heads)
                } else {
                    None
                };
                if let Some(heads) = heads {
                    values = unpermute_rows(&values, &found, heads)
                        .map_err(|m| self.err(format!("tensor `{name}` (GGUF `{gguf}`): {m}")))?;
                }
            }
            GgufArchitecture::Gemma3 => {
                // llama.cpp's converter stores 1 + w for every Gemma norm; transformers stores w.
                if name.ends_with("norm.weight") {
                    for v in &mut values {
                        *v -= 1.0;
                    }
                }
            }
            GgufArchitecture::Qwen2 | GgufArchitecture::Qwen3 => {}
        }
        Ok(values)
    }
}

fn is_projection(name: &str, module: TargetModule) -> bool {
    let path = module.layer_path();
    name.ends_with(&format!("{path}.weight")) || name.ends_with(&format!("{path}.bias"))
}

/// Undoes convert_hf_to_gguf's `LlamaModel.permute`: within each head of `head_dim` rows, GGUF
/// row `2i + j` is Hugging Face row `j · head_dim/2 + i`.
fn unpermute_rows(
    values: &[f32],
    shape: &[usize],
    heads: usize,
) -> std::result::Result<Vec<f32>, String> {
    let rows = shape.first().copied().unwrap_or(0);
    let cols: usize = shape.iter().skip(1).product();
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(format!(
            "{rows} rows cannot be split into {heads} heads of an even size"
        ));
    }
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let from = (h * head_dim + 2 * i + j) * cols;
                let to = (h * head_dim + j * half + i) * cols;
                if let (Some(src), Some(dst)) =
                    (values.get(from..from + cols), out.get_mut(to..to + cols))
                {
                    dst.copy_from_slice(src);
                }
            }
        }
    }
    Ok(out)
}

/// The Hugging Face name of GGUF tensor `gguf` (per gguf-py's tensor_mapping for the arch).
fn hf_name(
    arch: GgufArchitecture,
    gguf: &str,
    layers: usize,
) -> std::result::Result<String, String> {
    match gguf {
        "token_embd.weight" => return Ok("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Ok("model.norm.weight".into()),
        "output.weight" => return Ok("lm_head.weight".into()),
        _ => {}
    }
    let unknown = || {
        format!(
            "no Hugging Face counterpart for this tensor in a {} model",
            arch.name()
        )
    };
    let rest = gguf.strip_prefix("blk.").ok_or_else(unknown)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unknown)?;
    let (module, kind) = rest.rsplit_once('.').ok_or_else(unknown)?;
    let layer: usize = layer.parse().map_err(|_| unknown())?;
    if layer >= layers {
        return Err(format!(
            "layer {layer} does not exist: the model has {layers} layers (`block_count`)"
        ));
    }
    if kind != "weight" && kind != "bias" {
        return Err(unknown());
    }
    if let Some(projection) = TargetModule::from_gguf_name(module) {
        return Ok(format!("{}.{kind}", projection.path(layer)));
    }
    let hf_module = match (module, arch) {
        ("attn_norm", _) => "input_layernorm",
        // In Llama and Qwen2 the norm before the MLP is called post_attention_layernorm; Gemma 3
        // has a separate norm after attention and calls the one before the MLP
        // pre_feedforward_layernorm.
        ("ffn_norm", GgufArchitecture::Gemma3) => "pre_feedforward_layernorm",
        ("ffn_norm", _) => "post_attention_layernorm",
        ("post_attention_norm", GgufArchitecture::Gemma3) => "post_attention_layernorm",
        ("post_ffw_norm", GgufArchitecture::Gemma3) => "post_feedforward_layernorm",
        ("attn_q_norm", GgufArchitecture::Gemma3 | GgufArchitecture::Qwen3) => "self_attn.q_norm",
        ("attn_k_norm", GgufArchitecture::Gemma3 | GgufArchitecture::Qwen3) => "self_attn.k_norm",
        _ => return Err(unknown()),
    };
    Ok(format!("model.layers.{layer}.{hf_module}.{kind}"))
}

/// The hyperparameters read from `{arch}.*` metadata and the tensor shapes.
struct Hyperparameters {
    layers: usize,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rms_norm_eps: f64,
    rope_theta: f64,
    context_length: usize,
    vocab_size: usize,
    tied: bool,
    qkv_bias: bool,
    sliding_window: Option<usize>,
}

impl Hyperparameters {
    fn read(file: &GgufFile, arch: GgufArchitecture) -> Result<Self> {
        let p = arch.name();
        let key = |k: &str| format!("{p}.{k}");
        let has = |k: &str| file.metadata().get(&key(k)).is_some();
        let err = |m: String| gguf_err(file.path(), m);

        let layers = file.get_usize(&key("block_count"))?;
        let hidden = file.get_usize(&key("embedding_length"))?;
        let intermediate = file.get_usize(&key("feed_forward_length"))?;
        let heads = file.get_usize(&key("attention.head_count"))?;
        if heads == 0 {
            return Err(err(format!(
                "metadata key `{}` is 0",
                key("attention.head_count")
            )));
        }
        let kv_heads = if has("attention.head_count_kv") {
            file.get_usize(&key("attention.head_count_kv"))?
        } else {
            heads
        };
        // llama.cpp: n_embd_head_k = key_length, defaulting to n_embd / n_head; Llama GGUFs may
        // state it as the rope dimension instead.
        let head_dim = if has("attention.key_length") {
            file.get_usize(&key("attention.key_length"))?
        } else if arch == GgufArchitecture::Llama && has("rope.dimension_count") {
            file.get_usize(&key("rope.dimension_count"))?
        } else if hidden.is_multiple_of(heads) {
            hidden / heads
        } else {
            return Err(err(format!(
                "metadata key `{}` is missing and `{}` ({hidden}) is not a multiple of the head \
                 count ({heads})",
                key("attention.key_length"),
                key("embedding_length")
            )));
        };
        if has("attention.value_length") {
            let v = file.get_usize(&key("attention.value_length"))?;
            if v != head_dim {
                return Err(err(format!(
                    "metadata key `{}` is {v} but the key length is {head_dim}; different key and \
                     value head sizes are not supported",
                    key("attention.value_length")
                )));
            }
        }
        let rms_norm_eps = file.get_float(&key("attention.layer_norm_rms_epsilon"))?;
        // llama.cpp's default when the file does not say.
        let rope_theta = if has("rope.freq_base") {
            file.get_float(&key("rope.freq_base"))?
        } else {
            10_000.0
        };
        let context_length = file.get_usize(&key("context_length"))?;

        let embed = file.tensor_info("token_embd.weight").ok_or_else(|| {
            err("tensor `token_embd.weight` (the token embeddings) is missing".into())
        })?;
        let vocab_size = match embed.shape.as_slice() {
            [rows, cols] if *cols == hidden => *rows,
            other => {
                return Err(err(format!(
                    "tensor `token_embd.weight` has shape {other:?}, expected [vocab, {hidden}]"
                )))
            }
        };
        if let Some(MetaValue::Array { values, .. }) = file.metadata().get("tokenizer.ggml.tokens")
        {
            if values.len() != vocab_size {
                return Err(err(format!(
                    "`tokenizer.ggml.tokens` lists {} tokens but `token_embd.weight` has {vocab_size} rows",
                    values.len()
                )));
            }
        }
        let sliding_window = if arch == GgufArchitecture::Gemma3 && has("attention.sliding_window")
        {
            Some(file.get_usize(&key("attention.sliding_window"))?).filter(|&w| w > 0)
        } else {
            None
        };
        Ok(Self {
            layers,
            hidden,
            intermediate,
            heads,
            kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            context_length,
            vocab_size,
            tied: file.tensor_info("output.weight").is_none(),
            qkv_bias: file.tensor_info("blk.0.attn_q.bias").is_some(),
            sliding_window,
        })
    }

    fn to_hf_json(
        &self,
        file: &GgufFile,
        arch: GgufArchitecture,
        rope_freqs: Option<&str>,
    ) -> Result<Value> {
        let rope_scaling = match rope_freqs {
            Some(tensor) => llama3_rope_scaling(file, tensor, self.head_dim, self.rope_theta)?,
            None => rope_scaling(file, arch)?,
        };
        let mut config = json!({
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.context_length,
            "tie_word_embeddings": self.tied,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "torch_dtype": "float32",
        });
        let fields = match arch {
            GgufArchitecture::Llama => {
                // llama.cpp writes Mistral as `llama`; transformers tells them apart by name.
                let is_mistral = file
                    .get_str("general.name")
                    .is_ok_and(|n| n.to_lowercase().contains("mistral"));
                let (model_type, class) = if is_mistral {
                    ("mistral", "MistralForCausalLM")
                } else {
                    ("llama", "LlamaForCausalLM")
                };
                json!({
                    "architectures": [class],
                    "model_type": model_type,
                    "hidden_act": "silu",
                    "attention_bias": self.qkv_bias,
                })
            }
            GgufArchitecture::Qwen2 => json!({
                "architectures": ["Qwen2ForCausalLM"],
                "model_type": "qwen2",
                "hidden_act": "silu",
            }),
            GgufArchitecture::Qwen3 => json!({
                "architectures": ["Qwen3ForCausalLM"],
                "model_type": "qwen3",
                "hidden_act": "silu",
                "attention_bias": self.qkv_bias,
            }),
            GgufArchitecture::Gemma3 => self.gemma3_fields(file)?,
        };
        if let (Some(config), Some(fields)) = (config.as_object_mut(), fields.as_object()) {
            config.extend(fields.clone());
            for (gguf_key, hf_key) in [
                ("tokenizer.ggml.bos_token_id", "bos_token_id"),
                ("tokenizer.ggml.eos_token_id", "eos_token_id"),
                ("tokenizer.ggml.padding_token_id", "pad_token_id"),
            ] {
                if file.metadata().get(gguf_key).is_some() {
                    config.insert(hf_key.into(), file.get_usize(gguf_key)?.into());
                }
            }
        }
        Ok(config)
    }

    /// The Gemma 3 settings llama.cpp does not read from the file but fixes in code
    /// (llama-model.cpp, LLM_ARCH_GEMMA3); documented in the module docs.
    fn gemma3_fields(&self, file: &GgufFile) -> Result<Value> {
        let layer_types: Vec<&str> = (0..self.layers)
            .map(|i| match self.sliding_window {
                Some(_) if (i + 1) % GEMMA3_SLIDING_WINDOW_PATTERN != 0 => "sliding_attention",
                _ => "full_attention",
            })
            .collect();
        // llama.cpp's f_attention_scale: 1/sqrt(head_dim), except 27B: 1/sqrt(hidden / heads).
        let query_pre_attn_scalar = if self.layers == GEMMA3_27B_LAYERS {
            self.hidden / self.heads
        } else {
            self.head_dim
        };
        let softcap_key = "gemma3.final_logit_softcapping";
        let final_logit_softcapping = match file.metadata().get(softcap_key) {
            Some(_) => Value::from(file.get_float(softcap_key)?),
            None => Value::Null,
        };
        Ok(json!({
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": query_pre_attn_scalar,
            "sliding_window": self.sliding_window,
            "sliding_window_pattern": GEMMA3_SLIDING_WINDOW_PATTERN,
            "layer_types": layer_types,
            "rope_local_base_freq": GEMMA3_ROPE_LOCAL_BASE_FREQ,
            "final_logit_softcapping": final_logit_softcapping,
            "attn_logit_softcapping": Value::Null,
            "attention_bias": false,
        }))
    }
}

/// `{arch}.rope.scaling.type` and `.factor` as transformers' `rope_scaling` (null for none).
fn rope_scaling(file: &GgufFile, arch: GgufArchitecture) -> Result<Value> {
    let type_key = format!("{}.rope.scaling.type", arch.name());
    let factor_key = format!("{}.rope.scaling.factor", arch.name());
    let kind = match file.metadata().get(&type_key) {
        Some(_) => file.get_str(&type_key)?,
        // Older files state only a factor, which means linear scaling.
        None if file.metadata().get(&factor_key).is_some() => "linear",
        None => "none",
    };
    match kind {
        "none" => Ok(Value::Null),
        "linear" => {
            let factor = file.get_float(&factor_key)?;
            if factor == 1.0 {
                Ok(Value::Null)
            } else {
                Ok(json!({"rope_type": "linear", "factor": factor}))
            }
        }
        other => Err(gguf_err(
            file.path(),
            format!(
                "metadata key `{type_key}` is {other:?}; supported rope scaling: \"none\", \
                 \"linear\" (and Llama 3's, given as a `rope_freqs.weight` tensor)"
            ),
        )),
    }
}

/// Llama 3 rope scaling, which convert_hf_to_gguf stores as the per-frequency factors
/// `rope_freqs.weight` rather than as metadata. The factors only determine the scaling when
/// `low_freq_factor`, `high_freq_factor` and `original_max_position_embeddings` are known, so
/// this accepts the values every Llama 3.x release uses (1, 4, 8192) with the largest factor as
/// `factor`, and refuses factors that do not match them.
fn llama3_rope_scaling(
    file: &GgufFile,
    tensor: &str,
    head_dim: usize,
    theta: f64,
) -> Result<Value> {
    let (_, factors) = file.tensor_f32(tensor)?;
    if factors.len() * 2 != head_dim {
        return Err(gguf_err(
            file.path(),
            format!(
                "tensor `{tensor}` has {} factors, expected head_dim / 2 = {}",
                factors.len(),
                head_dim / 2
            ),
        ));
    }
    let factor = factors.iter().copied().fold(1.0f32, f32::max) as f64;
    if factor == 1.0 {
        return Ok(Value::Null);
    }
    let (low, high, original) = (1.0f64, 4.0f64, 8192.0f64);
    for (i, &got) in factors.iter().enumerate() {
        let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
        let wavelen = 2.0 * std::f64::consts::PI / freq;
        let want = if wavelen < original / high {
            1.0
        } else if wavelen > original / low {
            factor
        } else {
            let smooth = (original / wavelen - low) / (high - low);
            1.0 / ((1.0 - smooth) / factor + smooth)
        };
        if (got as f64 - want).abs() > 1e-4 * want {
            return Err(gguf_err(
                file.path(),
                format!(
                    "tensor `{tensor}`: factor {i} is {got}, but Llama 3 rope scaling (factor \
                     {factor}, low_freq_factor {low}, high_freq_factor {high}, original context \
                     {original}) gives {want}; other rope factors are not supported"
                ),
            ));
        }
    }
    Ok(json!({
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": original as u64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse of convert_hf_to_gguf's permutation, written as the forward permutation
    /// `w.reshape(heads, 2, half, cols).swapaxes(1, 2)` with plain loops.
    #[test]
    fn unpermute_inverts_the_converter_permutation() {
        let (heads, head_dim, cols) = (3, 8, 2);
        let rows = heads * head_dim;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        let half = head_dim / 2;
        let mut permuted = vec![0f32; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..half {
                    // Source index (h, j, i) lands at (h, i, j).
                    let src = h * head_dim + j * half + i;
                    let dst = h * head_dim + i * 2 + j;
                    for c in 0..cols {
                        permuted[dst * cols + c] = hf[src * cols + c];
                    }
                }
            }
        }
        let back = unpermute_rows(&permuted, &[rows, cols], heads).unwrap();
        assert_eq!(back, hf);
        assert!(unpermute_rows(&permuted, &[rows, cols], 5).is_err());
    }

    #[test]
    fn names_map_per_architecture() {
        let g = GgufArchitecture::Gemma3;
        let l = GgufArchitecture::Llama;
        assert_eq!(
            hf_name(g, "blk.1.ffn_norm.weight", 2).unwrap(),
            "model.layers.1.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            hf_name(l, "blk.1.ffn_norm.weight", 2).unwrap(),
            "model.layers.1.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name(g, "blk.0.post_attention_norm.weight", 2).unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name(GgufArchitecture::Qwen2, "blk.0.attn_k.bias", 1).unwrap(),
            "model.layers.0.self_attn.k_proj.bias"
        );
        assert!(hf_name(l, "blk.0.attn_q_norm.weight", 2)
            .unwrap_err()
            .contains("no Hugging Face counterpart"));
        assert!(hf_name(l, "blk.2.attn_q.weight", 2)
            .unwrap_err()
            .contains("layer 2 does not exist"));
        assert!(hf_name(l, "mystery.weight", 2).is_err());
    }
}
