//! Checkpoints of a run: `DIR/checkpoints/step-NNNNNNNN/` holds
//! - `adapter_model.safetensors`: the trained tensors (adapters, or every weight for `full`);
//! - `adapter_config.json`: what they are (method, feature registry, ranks, alphas, targets, base);
//! - `optimizer.safetensors`: AdamW's state (`optim::SavedState`: step count, moments, f32
//!   masters of tensors that are not f32);
//! - `trainer_state.json`: the completed step (the sampler and dropout are pure functions of the
//!   seed and the step, so the step is their whole state).
//!
//! Each file is written under a temporary name and renamed; the directory is filled under a
//! temporary name too and renamed when complete, and only then does `checkpoints/latest` (also
//! renamed into place) point at it. A crash at any moment leaves the previous checkpoint intact.

use std::path::{Path, PathBuf};

use flix_core::Registry;
use flix_kernels::Device;
use serde::{Deserialize, Serialize};

use super::layout::{Layout, Method, SharedAdapter};
use super::tensor_file::{load_tensors, save_tensors, take_tensor, write_atomic, NamedTensor};
use super::trainables::trainables;
use crate::adapters::TargetModule;
use crate::error::{ModelError, Result};
use crate::llama::{LlamaModel, TrainMode};
use crate::optim::SavedState;
use crate::tokenize::Tokenizer;

pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
const FORMAT: &str = "flix-adapters-1";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| ModelError::Invalid(format!("cannot serialise: {e}")))
}

/// One adapter type as described in `adapter_config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterTypeInfo {
    pub name: String,
    pub rank: usize,
    pub alpha: f64,
    pub num_values: usize,
}

/// The description of trained adapters (or weights, for `full`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub format: String,
    pub method: Method,
    pub base_model: PathBuf,
    /// The feature registry (flix-core's saved form).
    pub registry: serde_json::Value,
    pub shared: Option<SharedAdapter>,
    pub targets: Vec<String>,
    /// The adapter types in plan order (what the tensors hold).
    pub adapter_types: Vec<AdapterTypeInfo>,
}

impl AdapterConfig {
    pub fn new(layout: &Layout, base_model: &Path) -> Result<Self> {
        let registry_text = layout
            .registry
            .to_json_string()
            .map_err(|e| ModelError::Invalid(e.to_string()))?;
        let registry = serde_json::from_str(&registry_text)
            .map_err(|e| ModelError::Invalid(format!("registry JSON: {e}")))?;
        Ok(Self {
            format: FORMAT.to_string(),
            method: layout.method,
            base_model: base_model.to_path_buf(),
            registry,
            shared: layout.shared,
            targets: layout
                .targets
                .iter()
                .map(|t| t.hf_name().to_string())
                .collect(),
            adapter_types: layout
                .adapter_types()
                .into_iter()
                .map(|(name, t)| AdapterTypeInfo {
                    name,
                    rank: t.rank,
                    alpha: t.alpha,
                    num_values: t.num_values,
                })
                .collect(),
        })
    }

    pub fn layout(&self, origin: &Path) -> Result<Layout> {
        let registry =
            Registry::from_json_str(&self.registry.to_string(), &origin.display().to_string())
                .map_err(|e| ModelError::Invalid(e.to_string()))?;
        Ok(Layout {
            method: self.method,
            registry,
            shared: self.shared,
            targets: self
                .targets
                .iter()
                .map(|t| TargetModule::parse(t))
                .collect::<Result<_>>()?,
        })
    }

    pub fn type_names(&self) -> Vec<String> {
        self.adapter_types.iter().map(|t| t.name.clone()).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Completed optimizer steps.
    pub step: u64,
}

/// `DIR/checkpoints`.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// The newest complete checkpoint of a run, if any.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    let pointer = checkpoints_dir(run_dir).join("latest");
    if !pointer.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&pointer).map_err(io_err(&pointer))?;
    Ok(Some(checkpoints_dir(run_dir).join(name.trim())))
}

/// Writes a checkpoint for `step` and points `latest` at it; keeps the previous one, removes
/// older ones.
pub fn write_checkpoint(
    run_dir: &Path,
    config: &AdapterConfig,
    weights: &[NamedTensor],
    optimizer: &SavedState,
    step: u64,
) -> Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    let name = format!("step-{step:08}");
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    save_tensors(&tmp.join(WEIGHTS_FILE), weights)?;
    optimizer.save(&tmp.join(OPTIMIZER_FILE))?;
    write_atomic(&tmp.join(CONFIG_FILE), to_json(config)?.as_bytes())?;
    write_atomic(
        &tmp.join(STATE_FILE),
        to_json(&TrainerState { step })?.as_bytes(),
    )?;
    let dir = root.join(&name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    let previous = latest_checkpoint(run_dir)?;
    write_atomic(&root.join("latest"), name.as_bytes())?;
    // Older checkpoints than the previous one go.
    let entries = std::fs::read_dir(&root).map_err(io_err(&root))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().to_string();
        let keep = path == dir || Some(&path) == previous.as_ref();
        if file_name.starts_with("step-") && !keep {
            std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
    }
    Ok(dir)
}

/// Reads the step of a checkpoint.
pub fn read_state(checkpoint: &Path) -> Result<TrainerState> {
    read_json(&checkpoint.join(STATE_FILE))
}

pub fn read_adapter_config(checkpoint: &Path) -> Result<AdapterConfig> {
    let config: AdapterConfig = read_json(&checkpoint.join(CONFIG_FILE))?;
    if config.format != FORMAT {
        return Err(ModelError::Config {
            path: checkpoint.join(CONFIG_FILE),
            message: format!("format {:?}, expected {FORMAT:?}", config.format),
        });
    }
    Ok(config)
}

/// Copies the tensors of `file` into the model's trainable tensors (by name, shapes checked).
pub fn load_into(
    model: &mut LlamaModel,
    full: bool,
    type_names: &[String],
    file: &Path,
) -> Result<()> {
    let mut tensors = load_tensors(file)?;
    for t in trainables(model, full, type_names)? {
        let shape = t.value.shape().to_vec();
        let data = take_tensor(&mut tensors, file, &t.name, &shape)?;
        *t.value =
            flix_kernels::Tensor::from_f32(t.value.device(), t.value.dtype(), &shape, &data)?;
    }
    Ok(())
}

/// A trained model ready for evaluation: base weights, the checkpoint's tensors, its layout.
pub struct Trained {
    pub model: LlamaModel,
    pub layout: Layout,
    pub tokenizer: Tokenizer,
    pub config: AdapterConfig,
}

/// Loads the run (its latest checkpoint) or checkpoint directory `dir` on `device`.
pub fn load_trained(dir: &Path, device: &Device) -> Result<Trained> {
    let checkpoint = latest_checkpoint(dir)?.unwrap_or_else(|| dir.to_path_buf());
    let config = read_adapter_config(&checkpoint)?;
    let layout = config.layout(&checkpoint.join(CONFIG_FILE))?;
    let mut model = LlamaModel::load(&config.base_model, device)?;
    let tokenizer = Tokenizer::load(&config.base_model)?;
    let full = layout.method == Method::Full;
    if let Some(spec) = layout.adapter_spec(0) {
        model.attach_adapters(&spec)?;
    }
    if full {
        model.set_train_mode(TrainMode::Full)?;
    }
    load_into(
        &mut model,
        full,
        &config.type_names(),
        &checkpoint.join(WEIGHTS_FILE),
    )?;
    model.set_train_mode(TrainMode::Adapters)?;
    Ok(Trained {
        model,
        layout,
        tokenizer,
        config,
    })
}
