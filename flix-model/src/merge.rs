//! Merging one feature combination of trained adapters into the base weights (DESIGN §1): a
//! Hugging Face checkpoint directory that any Llama loader reads, with zero adapter overhead.
//!
//! For every adapted linear, `W' = W + Σ_k s_k · B_{k,f_k} · A_{k,f_k}` over the combination's
//! features (plus the always-on `shared` type of `lora` and `flix+shared`), summed in f64 and
//! rounded once to the dtype the base stores `W` in. Every other tensor is copied byte for byte.
//! A `full` run has no adapters: its trained weights are written in the base's dtypes, in
//! transformers' conventions (Gemma's norm weights as w, not the 1 + w the model computes with).
//!
//! The output is one `model.safetensors` (a sharded base becomes one file; no index is written),
//! with the base's tensor names, next to copies of the base's other files (`config.json`, the
//! tokenizer files, `generation_config.json`, …).
//!
//! A GGUF base (whose weights may be quantized) becomes a Hugging Face directory: every tensor
//! under its Hugging Face name, dequantized and stored as bf16 (merged ones rounded once from
//! f64), `config.json` as [`crate::gguf::GgufModel::hf_config`] writes it, and the tokenizer the
//! GGUF describes as `tokenizer.json` (with a `tokenizer_config.json` naming its BOS and EOS).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use flix_core::{write_atomic, write_atomic_with};
use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::adapters::TargetModule;
use crate::error::{ModelError, Result};
use crate::export::{check_output_finite, picked_adapters, selected, Combination};
use crate::gguf::GgufModel;
use crate::source::ModelSource;
use crate::tokenize_gguf::{build_hf_tokenizer, GgufVocab};
use crate::train::{Method, Trained};
use crate::weights::{Checkpoint, TensorSource, INDEX_FILE, SINGLE_FILE};

/// What [`merge_checkpoint`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeSummary {
    /// Tensors whose values changed (merged adapters, or every trained weight of `full`).
    pub replaced: usize,
    /// Tensors copied unchanged.
    pub copied: usize,
    /// The base's other files copied next to the weights (config, tokenizer, …).
    pub files: Vec<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `out` = the base of `trained` with `combination` merged in (see the module docs).
/// `combination` is ignored for a `full` run. `out` may not be the base directory, nor hold a
/// shard index (it would point a loader at other weights).
pub fn merge_checkpoint(
    trained: &mut Trained,
    combination: &Combination,
    out: &Path,
) -> Result<MergeSummary> {
    let base = trained.config.base_model.clone();
    if ModelSource::open(&base)?.is_gguf() {
        return merge_gguf_base(trained, combination, &base, out);
    }
    // Everything that can be refused is checked before anything is written.
    let ck = Checkpoint::open(&base)?;
    let new_values = changed_weights(trained, combination, &ck)?;
    prepare_output(&base, out)?;

    // Rounded once to each tensor's stored dtype; every other tensor as stored.
    let mut encoded: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = HashMap::new();
    for (name, values) in &new_values {
        let (view, path) = ck.view(name)?;
        if let Some(max) = largest_finite(view.dtype()) {
            if let Some(v) = values.iter().find(|v| v.abs() > max) {
                return Err(ModelError::Invalid(format!(
                    "merged tensor `{name}`: value {v} overflows the base's {:?} (largest \
                     {max}); nothing was written",
                    view.dtype()
                )));
            }
        }
        let bytes = encode(view.dtype(), values).ok_or_else(|| ModelError::Weights {
            path: path.to_path_buf(),
            message: format!(
                "tensor `{name}` is stored as {:?}; only BF16, F16 and F32 weights can be merged",
                view.dtype()
            ),
        })?;
        encoded.insert(name.clone(), (view.dtype(), view.shape().to_vec(), bytes));
    }
    let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
    for name in ck.names() {
        let view = match encoded.get(name) {
            Some((dtype, shape, bytes)) => TensorView::new(*dtype, shape.clone(), bytes)
                .map_err(|e| ModelError::Invalid(format!("tensor `{name}`: {e}")))?,
            None => ck.view(name)?.0,
        };
        views.push((name.to_string(), view));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    // Streamed to disk: a merged checkpoint can be larger than what memory holds twice.
    write_atomic_with(&out.join(SINGLE_FILE), |tmp| {
        safetensors::serialize_to_file(views, Some(metadata), tmp)
            .map_err(|e| std::io::Error::other(format!("cannot write the merged weights: {e}")))
    })?;

    let files = copy_other_files(&base, out)?;
    Ok(MergeSummary {
        replaced: encoded.len(),
        copied: ck.names().len() - encoded.len(),
        files,
    })
}

/// The weights that change, by Hugging Face name: a `full` run's trained weights, else the merged
/// adapted linears. An error when nothing would change.
fn changed_weights(
    trained: &Trained,
    combination: &Combination,
    base: &dyn TensorSource,
) -> Result<BTreeMap<String, Vec<f64>>> {
    let new_values = if trained.layout.method == Method::Full {
        trained_weights(trained)?
    } else {
        merged_weights(trained, combination, base)?
    };
    if new_values.is_empty() {
        return Err(ModelError::Invalid(
            "no weight would change: the adapters cover no linear layer of the base model".into(),
        ));
    }
    for (name, values) in &new_values {
        check_output_finite(name, values)?;
    }
    Ok(new_values)
}

/// Creates `out`, refusing the base's own directory and a directory holding a shard index.
fn prepare_output(base: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let same_dir = match (base.canonicalize(), out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_dir {
        return Err(ModelError::Invalid(format!(
            "the output directory {} is the base model's directory; choose another",
            out.display()
        )));
    }
    if out.join(INDEX_FILE).exists() {
        return Err(ModelError::Invalid(format!(
            "{} holds {INDEX_FILE}, which would point loaders at other weights; remove it or \
             choose another directory",
            out.display()
        )));
    }
    Ok(())
}

/// [`merge_checkpoint`] for a GGUF base: a Hugging Face directory with bf16 weights (see the
/// module docs).
fn merge_gguf_base(
    trained: &mut Trained,
    combination: &Combination,
    base: &Path,
    out: &Path,
) -> Result<MergeSummary> {
    let gguf = GgufModel::open(base)?;
    let new_values = changed_weights(trained, combination, &gguf)?;
    let vocab = GgufVocab::from_gguf(gguf.file())?;
    let tokenizer = build_hf_tokenizer(&vocab, base)?;
    prepare_output(base, out)?;

    let mut names = gguf.tensor_names();
    names.sort();
    let mut encoded: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(names.len());
    for name in &names {
        let shape = gguf.hf_shape(name)?;
        let bytes = match new_values.get(name) {
            Some(values) => encode_checked(name, Dtype::BF16, values)?,
            None => {
                let values: Vec<f64> = gguf
                    .load_f32(name, &shape)?
                    .into_iter()
                    .map(f64::from)
                    .collect();
                encode_checked(name, Dtype::BF16, &values)?
            }
        };
        encoded.push((name.clone(), shape, bytes));
    }
    let views = encoded
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::BF16, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| ModelError::Invalid(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_atomic_with(&out.join(SINGLE_FILE), |tmp| {
        safetensors::serialize_to_file(views, Some(metadata), tmp)
            .map_err(|e| std::io::Error::other(format!("cannot write the merged weights: {e}")))
    })?;

    let mut config = gguf.hf_config();
    config["torch_dtype"] = "bfloat16".into();
    let json = |value: &serde_json::Value| {
        serde_json::to_string_pretty(value)
            .map_err(|e| ModelError::Invalid(format!("cannot serialise JSON: {e}")))
    };
    let mut files = Vec::new();
    let config_path = out.join("config.json");
    write_atomic(&config_path, json(&config)?.as_bytes())?;
    files.push(config_path);
    let tokenizer_path = out.join("tokenizer.json");
    let text = tokenizer
        .to_string(false)
        .map_err(|e| ModelError::Invalid(format!("cannot serialise the tokenizer: {e}")))?;
    write_atomic(&tokenizer_path, text.as_bytes())?;
    files.push(tokenizer_path);
    let token = |id: Option<u32>| id.and_then(|i| vocab.tokens.get(i as usize)).cloned();
    let tokenizer_config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token(vocab.bos_id),
        "eos_token": token(vocab.eos_id),
        "unk_token": token(vocab.unk_id),
        "pad_token": token(vocab.pad_id),
        "add_bos_token": vocab.add_bos.unwrap_or(vocab.model == "llama"),
        "add_eos_token": vocab.add_eos.unwrap_or(false),
    });
    let tokenizer_config_path = out.join("tokenizer_config.json");
    write_atomic(&tokenizer_config_path, json(&tokenizer_config)?.as_bytes())?;
    files.push(tokenizer_config_path);
    Ok(MergeSummary {
        replaced: new_values.len(),
        copied: names.len() - new_values.len(),
        files,
    })
}

/// `values` encoded as `dtype`, refusing values the dtype would store as infinity.
fn encode_checked(name: &str, dtype: Dtype, values: &[f64]) -> Result<Vec<u8>> {
    if let Some(max) = largest_finite(dtype) {
        if let Some(v) = values.iter().find(|v| v.abs() > max) {
            return Err(ModelError::Invalid(format!(
                "merged tensor `{name}`: value {v} overflows {dtype:?} (largest {max}); nothing \
                 was written"
            )));
        }
    }
    encode(dtype, values).ok_or_else(|| {
        ModelError::Invalid(format!(
            "tensor `{name}`: {dtype:?} is not a float weight type"
        ))
    })
}

/// `W + Σ s·B·A` (f64) of every adapted linear, by the base's tensor name.
fn merged_weights(
    trained: &Trained,
    combination: &Combination,
    ck: &dyn TensorSource,
) -> Result<BTreeMap<String, Vec<f64>>> {
    let picks = selected(trained, combination)?;
    let mut out = BTreeMap::new();
    for layer in &trained.model.layers {
        for (_, lin) in TargetModule::ALL.into_iter().zip(layer.linears()) {
            let picked = picked_adapters(lin, &picks)?;
            if picked.is_empty() {
                continue;
            }
            let (out_dim, in_dim) = (lin.out_dim(), lin.in_dim());
            let name = &lin.weight.name;
            let mut w: Vec<f64> = ck
                .load_f32(name, &[out_dim, in_dim])?
                .into_iter()
                .map(f64::from)
                .collect();
            for p in &picked {
                let r = p.rank;
                for o in 0..out_dim {
                    let row = &mut w[o * in_dim..(o + 1) * in_dim];
                    for j in 0..r {
                        let c = f64::from(p.scale) * f64::from(p.b[o * r + j]);
                        let a_row = &p.a[j * in_dim..(j + 1) * in_dim];
                        for (wi, &ai) in row.iter_mut().zip(a_row) {
                            *wi += c * f64::from(ai);
                        }
                    }
                }
            }
            out.insert(name.clone(), w);
        }
    }
    Ok(out)
}

/// Every weight of a `full` run's model, by name, in Hugging Face's conventions (Gemma's norm
/// weights as w, not the 1 + w the model keeps).
fn trained_weights(trained: &Trained) -> Result<BTreeMap<String, Vec<f64>>> {
    let mut out = BTreeMap::new();
    for t in trained.model.hf_weights()? {
        out.insert(t.name, t.data.into_iter().map(f64::from).collect());
    }
    Ok(out)
}

/// The largest finite value of a float weight dtype (a merged value beyond it would be stored as
/// infinity).
fn largest_finite(dtype: Dtype) -> Option<f64> {
    match dtype {
        Dtype::F32 => Some(f64::from(f32::MAX)),
        Dtype::BF16 => Some(bf16::MAX.to_f64()),
        Dtype::F16 => Some(f16::MAX.to_f64()),
        _ => None,
    }
}

/// `values` rounded to nearest (ties to even) to `dtype`, little-endian; `None` for a dtype that
/// is not a float weight type.
fn encode(dtype: Dtype, values: &[f64]) -> Option<Vec<u8>> {
    Some(match dtype {
        Dtype::F32 => values
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(round_to_odd_f32(v)).to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(round_to_odd_f32(v)).to_le_bytes())
            .collect(),
        _ => return None,
    })
}

/// `v` as f32, rounded to odd: truncated toward zero, with the last bit set when inexact.
/// Rounding that to nearest for a format at least two bits narrower (bf16, f16) gives exactly
/// the nearest value of `v` itself (Boldo and Melquiond): one rounding, not two. (`half`'s own
/// f64 conversions drop the low 32 bits first, which can turn a value just above a tie into a
/// tie.)
fn round_to_odd_f32(v: f64) -> f32 {
    let nearest = v as f32;
    if f64::from(nearest) == v || !nearest.is_finite() {
        return nearest;
    }
    let toward_zero = if f64::from(nearest).abs() > v.abs() {
        // One step smaller in magnitude (same sign): the bits of a float order its magnitude.
        f32::from_bits(nearest.to_bits() - 1)
    } else {
        nearest
    };
    f32::from_bits(toward_zero.to_bits() | 1)
}

/// Weight files of other formats, shards and indexes are not copied: the merged file replaces
/// them all.
fn is_weight_file(name: &str) -> bool {
    const EXTENSIONS: [&str; 9] = [
        ".safetensors",
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".gguf",
        ".h5",
        ".msgpack",
        ".index.json",
    ];
    EXTENSIONS.iter().any(|e| name.ends_with(e))
}

/// Copies the top-level files of `base` other than weights and hidden files into `out`.
fn copy_other_files(base: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let mut copied = Vec::new();
    let entries = std::fs::read_dir(base).map_err(io_err(base))?;
    for entry in entries {
        let entry = entry.map_err(io_err(base))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        if name.starts_with('.') || is_weight_file(&name) || !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let dest = out.join(&name);
        write_atomic(&dest, &bytes)?;
        copied.push(dest);
    }
    copied.sort();
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_rounds_once_to_nearest() {
        // bf16 keeps 8 significant bits: 1 and 1 + 2^-7 are neighbours, 1 + 2^-8 their tie.
        // Just above the tie rounds up; rounding to f32 first would make it the tie, which goes
        // to the even neighbour, 1.
        let above = 1.0 + 2f64.powi(-8) + 2f64.powi(-30);
        let tie = 1.0 + 2f64.powi(-8);
        let bf = |bytes: &[u8]| -> Vec<f64> {
            bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f64())
                .collect()
        };
        let got = bf(&encode(Dtype::BF16, &[above, tie, -above, 3.0]).unwrap());
        assert_eq!(got, [1.0 + 2f64.powi(-7), 1.0, -1.0 - 2f64.powi(-7), 3.0]);
        // f16 keeps 11 bits: the same story one level down.
        let bytes = encode(Dtype::F16, &[1.0 + 2f64.powi(-11) + 2f64.powi(-40)]).unwrap();
        assert_eq!(
            f16::from_le_bytes([bytes[0], bytes[1]]).to_f64(),
            1.0 + 2f64.powi(-10)
        );
        let bytes = encode(Dtype::F32, &[0.1]).unwrap();
        assert_eq!(
            f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            0.1f32
        );
        assert!(encode(Dtype::I64, &[1.0]).is_none());
    }

    #[test]
    fn weight_files_are_not_copied() {
        for name in [
            "model.safetensors",
            "model-00001-of-00002.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
        ] {
            assert!(is_weight_file(name), "{name}");
        }
        for name in [
            "config.json",
            "tokenizer.json",
            "generation_config.json",
            "tokenizer.model",
        ] {
            assert!(!is_weight_file(name), "{name}");
        }
    }
}
