//! Checkpoints of a run: `DIR/checkpoints/step-NNNNNNNN/` holds
//! - `adapter_model.safetensors`: the trained tensors (adapters, or every weight for `full`);
//! - `adapter_config.json`: what they are (method, feature registry, ranks, alphas, targets, base);
//! - `optimizer.safetensors`: AdamW's state (`optim::SavedState`: step count, moments, f32
//!   masters of tensors that are not f32);
//! - `trainer_state.json`: the completed step (the sampler and dropout are pure functions of the
//!   seed and the step, so the step is their whole state).
//!
//! The directory is filled under a temporary name and renamed when complete
//! ([`flix_core::write_dir_atomic`]), and only then does `checkpoints/latest` (written with
//! [`flix_core::write_atomic`]) point at it. A crash at any moment leaves the previous checkpoint
//! intact. Readers do not trust the pointer alone: when it is lost or names no checkpoint, the
//! newest complete `step-*` directory is the latest checkpoint, and a checkpoint that turns out
//! damaged gives way to the one before it.
//!
//! Loading checks everything a hand edit or a damaged disk can break: the config's method,
//! targets and adapter types must agree with each other, every tensor the config implies must be
//! in the file with its shape, every tensor in the file must be used, and every value must be
//! finite. Adapters that fail any check are refused, never silently dropped (which would leave
//! the bare base model).

use std::path::{Path, PathBuf};

use flix_core::{write_atomic, write_dir_atomic, Registry};
use flix_kernels::Device;
use serde::{Deserialize, Serialize};

use super::fingerprint::{base_fingerprint, check_base_fingerprint};
use super::layout::{Layout, Method, SharedAdapter};
use super::tensor_file::{load_tensors, save_tensors, take_tensor, NamedTensor};
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
    /// What the base model was when training started (`train::fingerprint`); checked on load so
    /// that adapters are never applied to another model. Absent in older checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_fingerprint: Option<String>,
}

/// The largest scale alpha / r an adapter may have. Training uses scales around 1 (PEFT's
/// defaults give 0.5 to 2); a scale beyond this is a corrupted or hand-edited config, and would
/// turn any adapter into noise.
pub const MAX_ADAPTER_SCALE: f64 = 1e4;

/// Checks one adapter type's rank and alpha; `what` names it in the message.
pub fn check_rank_alpha(what: &str, rank: usize, alpha: f64) -> std::result::Result<(), String> {
    if rank == 0 {
        return Err(format!("{what}: rank must be >= 1"));
    }
    let scale = alpha / rank as f64;
    if !(alpha.is_finite() && alpha > 0.0 && scale <= MAX_ADAPTER_SCALE) {
        return Err(format!(
            "{what}: alpha must be finite and > 0 with alpha / rank <= {MAX_ADAPTER_SCALE}, \
             found alpha {alpha} at rank {rank}"
        ));
    }
    Ok(())
}

impl AdapterConfig {
    /// The config of `layout` trained on `base_model`, with the base's fingerprint.
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
            base_fingerprint: Some(base_fingerprint(base_model)?),
        })
    }

    /// The layout, after checking that the config is whole and agrees with itself: known format,
    /// a valid registry, at least one target (adapters on no module would leave the base model
    /// bare), sane ranks and alphas, and `adapter_types` exactly what the method and registry
    /// imply (an edited method or registry is caught here). `origin` is the config file.
    pub fn validated_layout(&self, origin: &Path) -> Result<Layout> {
        let bad = |message: String| ModelError::Config {
            path: origin.to_path_buf(),
            message,
        };
        if self.format != FORMAT {
            return Err(bad(format!(
                "format {:?}, expected {FORMAT:?}",
                self.format
            )));
        }
        let layout = self.layout(origin)?;
        if layout.method != Method::Full && layout.targets.is_empty() {
            return Err(bad(format!(
                "field `targets` is empty: method {} needs at least one target module",
                layout.method
            )));
        }
        for (i, t) in layout.targets.iter().enumerate() {
            if layout.targets[..i].contains(t) {
                return Err(bad(format!("field `targets` lists {} twice", t.hf_name())));
            }
        }
        let has_shared = matches!(layout.method, Method::Lora | Method::FlixShared);
        match (has_shared, layout.shared) {
            (true, None) => {
                return Err(bad(format!(
                    "field `shared` is missing: method {} has an always-on adapter",
                    layout.method
                )))
            }
            (false, Some(_)) => {
                return Err(bad(format!(
                    "field `shared` is set, but method {} has no always-on adapter",
                    layout.method
                )))
            }
            _ => {}
        }
        let implied: Vec<AdapterTypeInfo> = layout
            .adapter_types()
            .into_iter()
            .map(|(name, t)| AdapterTypeInfo {
                name,
                rank: t.rank,
                alpha: t.alpha,
                num_values: t.num_values,
            })
            .collect();
        for t in &implied {
            check_rank_alpha(&format!("adapter type {:?}", t.name), t.rank, t.alpha)
                .map_err(bad)?;
            if t.num_values == 0 {
                return Err(bad(format!("adapter type {:?} has no values", t.name)));
            }
        }
        if implied != self.adapter_types {
            let show = |types: &[AdapterTypeInfo]| {
                types
                    .iter()
                    .map(|t| {
                        format!(
                            "{}(rank {}, alpha {}, {} values)",
                            t.name, t.rank, t.alpha, t.num_values
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(bad(format!(
                "field `adapter_types` lists [{}], but method {} with this registry has [{}]",
                show(&self.adapter_types),
                layout.method,
                show(&implied)
            )));
        }
        Ok(layout)
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
                .map(|t| {
                    TargetModule::parse(t).map_err(|e| ModelError::Config {
                        path: origin.to_path_buf(),
                        message: format!("field `targets`: {e}"),
                    })
                })
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

/// The step directories under `DIR/checkpoints` (`step-NNNNNNNN`), newest first, whether or not
/// they are complete. Temporary directories of an interrupted write are not listed.
pub fn step_dirs(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let root = checkpoints_dir(run_dir);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(io_err(&root))? {
        let entry = entry.map_err(io_err(&root))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let step = name
            .strip_prefix("step-")
            .and_then(|n| n.parse::<u64>().ok());
        if let (Some(step), true) = (step, entry.path().is_dir()) {
            out.push((step, entry.path()));
        }
    }
    out.sort_by_key(|(step, _)| std::cmp::Reverse(*step));
    Ok(out)
}

/// Whether `dir` looks like a whole checkpoint of `step`: every file is there and its trainer
/// state names that step. (Only loading proves the tensors intact; see `Trainer::resume`.)
pub fn is_complete(dir: &Path, step: u64) -> bool {
    check_complete(dir, step).is_ok()
}

/// [`is_complete`] as an error that says what is missing or wrong.
fn check_complete(dir: &Path, step: u64) -> Result<()> {
    let files = [WEIGHTS_FILE, CONFIG_FILE, OPTIMIZER_FILE, STATE_FILE];
    let missing: Vec<&str> = files
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(ModelError::Invalid(format!(
            "the checkpoint is incomplete: {} missing",
            missing.join(", ")
        )));
    }
    let state = read_state(dir)?;
    if state.step != step {
        return Err(ModelError::Config {
            path: dir.join(STATE_FILE),
            message: format!(
                "names step {}, but the directory is that of step {step}",
                state.step
            ),
        });
    }
    Ok(())
}

/// The checkpoints to resume from, in the order to try them: the one `checkpoints/latest` names
/// and every older one, newest first; every step directory when the pointer is missing or names
/// none (a lost pointer loses nothing: a directory exists only once complete). A pointer set
/// back by hand to an older checkpoint is honoured.
pub fn checkpoint_candidates(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dirs = step_dirs(run_dir)?;
    let pointer = checkpoints_dir(run_dir).join("latest");
    let named = std::fs::read_to_string(&pointer).ok().and_then(|name| {
        dirs.iter()
            .find(|(_, d)| d.ends_with(name.trim()))
            .map(|(s, _)| *s)
    });
    Ok(match named {
        Some(latest) => dirs.into_iter().filter(|(s, _)| *s <= latest).collect(),
        None => dirs,
    })
}

/// The complete checkpoints of a run, in [`checkpoint_candidates`] order.
pub fn complete_checkpoints(run_dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(checkpoint_candidates(run_dir)?
        .into_iter()
        .filter(|(step, dir)| is_complete(dir, *step))
        .map(|(_, dir)| dir)
        .collect())
}

/// The latest complete checkpoint of a run, if any: the first of [`complete_checkpoints`].
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(complete_checkpoints(run_dir)?.into_iter().next())
}

/// Writes a checkpoint for `step` and points `latest` at it; keeps the previous one, removes
/// older ones (and what interrupted writes left).
pub fn write_checkpoint(
    run_dir: &Path,
    config: &AdapterConfig,
    weights: &[NamedTensor],
    optimizer: &SavedState,
    step: u64,
) -> Result<PathBuf> {
    let root = checkpoints_dir(run_dir);
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    let previous = latest_checkpoint(run_dir)?;
    let name = format!("step-{step:08}");
    let dir = root.join(&name);
    write_dir_atomic(&dir, |tmp| -> Result<()> {
        save_tensors(&tmp.join(WEIGHTS_FILE), weights)?;
        optimizer.save(&tmp.join(OPTIMIZER_FILE))?;
        write_atomic(&tmp.join(CONFIG_FILE), to_json(config)?.as_bytes())?;
        write_atomic(
            &tmp.join(STATE_FILE),
            to_json(&TrainerState { step })?.as_bytes(),
        )?;
        Ok(())
    })?;
    write_atomic(&root.join("latest"), name.as_bytes())?;
    let entries = std::fs::read_dir(&root).map_err(io_err(&root))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().to_string();
        let keep = path == dir || Some(&path) == previous.as_ref();
        let old_step = file_name.starts_with("step-");
        let leftover = file_name.starts_with(".step-") && file_name.ends_with(".tmp");
        if (old_step || leftover) && !keep && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
    }
    Ok(dir)
}

/// Reads the step of a checkpoint.
pub fn read_state(checkpoint: &Path) -> Result<TrainerState> {
    read_json(&checkpoint.join(STATE_FILE))
}

/// Reads a checkpoint's `adapter_config.json` and checks it
/// ([`AdapterConfig::validated_layout`]); returns it with its layout.
pub fn read_adapter_config(checkpoint: &Path) -> Result<(AdapterConfig, Layout)> {
    let path = checkpoint.join(CONFIG_FILE);
    let config: AdapterConfig = read_json(&path)?;
    let layout = config.validated_layout(&path)?;
    Ok((config, layout))
}

/// Copies the tensors of `file` into the model's trainable tensors. Every trainable tensor must
/// be in the file with its shape, every tensor of the file must be one of them, and every value
/// must be finite; nothing is changed unless all of that holds.
pub fn load_into(
    model: &mut LlamaModel,
    full: bool,
    type_names: &[String],
    file: &Path,
) -> Result<()> {
    let mut tensors = load_tensors(file)?;
    let mut values = Vec::new();
    let expected = trainables(model, full, type_names)?;
    if expected.is_empty() {
        return Err(ModelError::Weights {
            path: file.to_path_buf(),
            message: "the model has no trainable tensor to load: its config attaches no adapter"
                .into(),
        });
    }
    for t in &expected {
        let shape = t.value.shape().to_vec();
        let data = take_tensor(&mut tensors, file, &t.name, &shape)?;
        check_finite(file, &t.name, &data)?;
        values.push((shape, data));
    }
    drop(expected);
    if !tensors.is_empty() {
        let unused: Vec<&str> = tensors.keys().take(3).map(String::as_str).collect();
        return Err(ModelError::Weights {
            path: file.to_path_buf(),
            message: format!(
                "{} tensor(s) are not used by the adapter config next to it (e.g. {}): the \
                 config's method, targets or feature types do not match the trained tensors",
                tensors.len(),
                unused.join(", ")
            ),
        });
    }
    for (t, (shape, data)) in trainables(model, full, type_names)?.into_iter().zip(values) {
        *t.value =
            flix_kernels::Tensor::from_f32(t.value.device(), t.value.dtype(), &shape, &data)?;
    }
    Ok(())
}

/// An error naming the first value of tensor `name` in `file` that is NaN or infinite.
pub fn check_finite(file: &Path, name: &str, data: &[f32]) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(ModelError::Weights {
            path: file.to_path_buf(),
            message: format!(
                "tensor {name}: value {} at flat index {i} is not finite ({} non-finite in all)",
                data[i],
                data.iter().filter(|v| !v.is_finite()).count()
            ),
        }),
    }
}

/// A trained model ready for evaluation: base weights, the checkpoint's tensors, its layout.
pub struct Trained {
    pub model: LlamaModel,
    pub layout: Layout,
    pub tokenizer: Tokenizer,
    pub config: AdapterConfig,
    /// The checkpoint directory the trained tensors came from.
    pub checkpoint: PathBuf,
    /// What the user must be told about the loading: newer checkpoints that were damaged and
    /// skipped for an older one. Callers print these (the CLI on stderr).
    pub warnings: Vec<String>,
}

/// Loads the run or checkpoint directory `dir` on `device`, with every check of
/// [`read_adapter_config`] and [`load_into`], on the base model it was trained on (its
/// fingerprint must match).
///
/// A run loads from its newest checkpoint that loads, as `Trainer::resume` does: a damaged newer
/// one (cut short, a file missing, a garbled config, a non-finite value) gives way to the one
/// before it, with a warning in [`Trained::warnings`]; when none loads, the error names each
/// checkpoint tried and why it failed. A checkpoint directory given directly has no fallback.
pub fn load_trained(dir: &Path, device: &Device) -> Result<Trained> {
    let candidates = checkpoint_candidates(dir)?;
    if candidates.is_empty() {
        if checkpoints_dir(dir).is_dir() {
            return Err(ModelError::Invalid(format!(
                "{} holds no checkpoint (a run killed before its first checkpoint?)",
                checkpoints_dir(dir).display()
            )));
        }
        if dir.is_dir() && !dir.join(CONFIG_FILE).exists() {
            return Err(ModelError::Invalid(format!(
                "{} is neither a run directory (it has no checkpoints/) nor a checkpoint (it \
                 has no {CONFIG_FILE})",
                dir.display()
            )));
        }
        return load_checkpoint(dir, device);
    }
    let mut failures = Vec::new();
    for (step, checkpoint) in candidates {
        let loaded =
            check_complete(&checkpoint, step).and_then(|()| load_checkpoint(&checkpoint, device));
        match loaded {
            Ok(mut trained) => {
                if !failures.is_empty() {
                    trained.warnings.push(format!(
                        "skipped {} damaged checkpoint(s) of {} and loaded the one of step \
                         {step} ({}):\n  {}",
                        failures.len(),
                        dir.display(),
                        checkpoint.display(),
                        failures.join("\n  ")
                    ));
                }
                return Ok(trained);
            }
            Err(e) => failures.push(format!("{}: {e}", checkpoint.display())),
        }
    }
    Err(ModelError::Invalid(format!(
        "no checkpoint of {} can be loaded:\n  {}",
        dir.display(),
        failures.join("\n  ")
    )))
}

/// Loads the one checkpoint directory `checkpoint` (see [`load_trained`]).
fn load_checkpoint(checkpoint: &Path, device: &Device) -> Result<Trained> {
    let (config, layout) = read_adapter_config(checkpoint)?;
    if let Some(recorded) = &config.base_fingerprint {
        check_base_fingerprint(&config.base_model, recorded, &checkpoint.join(CONFIG_FILE))?;
    }
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
        checkpoint: checkpoint.to_path_buf(),
        warnings: Vec::new(),
    })
}
