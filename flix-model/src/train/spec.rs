//! Everything a training run needs, saved as `spec.json` in the run directory, so that
//! `--resume DIR` needs nothing else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use flix_core::{FeatureConfig, Registry};
use serde::{Deserialize, Serialize};

use super::layout::{Layout, Method, SharedAdapter};
use crate::adapters::TargetModule;
use crate::error::{ModelError, Result};
use crate::eval::periodic::PeriodicEvalSpec;
use crate::length::LongExamples;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    /// The base model directory (config.json, weights, tokenizer.json).
    pub base: PathBuf,
    /// JSONL training files.
    pub data: Vec<PathBuf>,
    /// A mixture root: every `<task>/<lang>/train.jsonl` under it is read too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixture: Option<PathBuf>,
    /// At most this many training examples per cell: the first ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_train_per_cell: Option<usize>,
    /// Feature types: prompts, cells, FLix adapters.
    pub features: FeatureConfig,
    /// Held-out cells, `lang=sw,task=ner` each: excluded from training (from `--holdout` or a
    /// split file).
    pub holdout: Vec<String>,
    pub method: Method,
    /// Rank of the always-on adapter (`lora`, `flix+shared`); default: the feature defaults' rank.
    pub shared_rank: Option<usize>,
    /// `lora`: rank = Σ_k r_k, the active rank of a FLix example that has every feature.
    pub match_compute: bool,
    /// Target modules (`q`, `v`, ...; empty: all seven).
    pub targets: Vec<String>,
    /// Training examples longer than the base model's context: skipped and counted (default),
    /// truncated to it, or an error.
    #[serde(default)]
    pub long_examples: LongExamples,
    pub steps: u64,
    /// Tokens per micro-batch (examples are added while they fit; at least one).
    pub batch_tokens: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// The cosine decays to `lr × min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    /// Global gradient norm clip (0: none).
    pub max_grad_norm: f64,
    /// Mixture sampling temperature (1: proportional to cell size).
    pub temperature: f64,
    /// Cells count at most this many examples when weighting the mixture.
    pub cap: Option<usize>,
    pub seed: u64,
    /// Steps between checkpoints (a checkpoint is always written at the end).
    pub checkpoint_every: u64,
    /// Evaluation during training (`--eval-every`, `--eval-file`); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<PeriodicEvalSpec>,
    /// Where to train: `cpu`, `cuda` or `cuda:N`. A resumed run continues on the same device;
    /// bit-identical resumption holds on one device (CPU and GPU sums round differently).
    #[serde(default = "default_device")]
    pub device: String,
    /// The base model's fingerprint when the run started (`train::fingerprint`), checked on
    /// resume. Set by `Trainer::new`; absent in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_fingerprint: Option<String>,
}

fn default_device() -> String {
    "cpu".to_string()
}

/// Whether `name` is a device name [`flix_kernels::Device::parse`] accepts, checked without
/// touching a driver (so a spec is validated the same on a machine without a GPU).
fn is_device_name(name: &str) -> bool {
    match name.strip_prefix("cuda") {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix(':')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => name == "cpu",
    }
}

impl TrainSpec {
    /// A spec with the usual knobs for `base`, `data` and `features`.
    pub fn new(base: PathBuf, data: Vec<PathBuf>, features: FeatureConfig, method: Method) -> Self {
        Self {
            base,
            data,
            mixture: None,
            max_train_per_cell: None,
            features,
            holdout: Vec::new(),
            method,
            shared_rank: None,
            match_compute: false,
            targets: Vec::new(),
            long_examples: LongExamples::default(),
            steps: 100,
            batch_tokens: 2048,
            grad_accum: 1,
            lr: 1e-3,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            temperature: 1.0,
            cap: None,
            seed: 0,
            checkpoint_every: 50,
            eval: None,
            device: default_device(),
            base_fingerprint: None,
        }
    }

    /// The spec with its base, data and eval paths made absolute and canonical, so that a run
    /// started with relative paths resumes, evaluates and generates from any directory. Each path
    /// must exist.
    pub fn with_absolute_paths(mut self) -> Result<Self> {
        let absolute = |path: &Path, option: &str| {
            path.canonicalize()
                .map_err(|e| ModelError::Invalid(format!("{option} {}: {e}", path.display())))
        };
        self.base = absolute(&self.base, "--base")?;
        for file in &mut self.data {
            *file = absolute(file, "--data")?;
        }
        if let Some(eval) = &mut self.eval {
            eval.file = absolute(&eval.file, "--eval-file")?;
        }
        Ok(self)
    }

    /// Checks every setting against its range; each message names the option (and its field in
    /// `spec.json`, which gets the same checks on resume), the range and the value found.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        let range = |option: &str, field: &str, range: &str, found: &dyn std::fmt::Display| {
            ModelError::Invalid(format!(
                "{option} (`{field}` in spec.json) must be {range}, found {found}"
            ))
        };
        let check = |ok: bool, option: &str, field: &str, what: &str, v: &dyn std::fmt::Display| {
            if ok {
                Ok(())
            } else {
                Err(range(option, field, what, v))
            }
        };
        check(self.steps >= 1, "--steps", "steps", ">= 1", &self.steps)?;
        check(
            (1..=MAX_BATCH_TOKENS).contains(&self.batch_tokens),
            "--batch-tokens",
            "batch_tokens",
            &format!("in [1, {MAX_BATCH_TOKENS}]"),
            &self.batch_tokens,
        )?;
        check(
            (1..=MAX_GRAD_ACCUM).contains(&self.grad_accum),
            "--grad-accum",
            "grad_accum",
            &format!("in [1, {MAX_GRAD_ACCUM}]"),
            &self.grad_accum,
        )?;
        check(
            self.lr > 0.0 && self.lr.is_finite(),
            "--lr",
            "lr",
            "finite and > 0",
            &self.lr,
        )?;
        check(
            (0.0..=1.0).contains(&self.min_lr_ratio),
            "--min-lr-ratio",
            "min_lr_ratio",
            "in [0, 1]",
            &self.min_lr_ratio,
        )?;
        check(
            self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
            "--weight-decay",
            "weight_decay",
            "finite and >= 0",
            &self.weight_decay,
        )?;
        check(
            self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite(),
            "--clip",
            "max_grad_norm",
            "finite and >= 0 (0: no clipping)",
            &self.max_grad_norm,
        )?;
        check(
            self.temperature > 0.0 && self.temperature.is_finite(),
            "--temperature",
            "temperature",
            "finite and > 0",
            &self.temperature,
        )?;
        if let Some(cap) = self.cap {
            check(cap >= 1, "--cap", "cap", ">= 1", &cap)?;
        }
        match (self.method, self.shared_rank) {
            (Method::Lora | Method::FlixShared, Some(rank)) => {
                check(rank >= 1, "--shared-rank", "shared_rank", ">= 1", &rank)?
            }
            (method @ (Method::Flix | Method::Full), Some(_)) => {
                return bad(format!(
                    "--shared-rank (`shared_rank` in spec.json) applies only to --method lora or \
                     flix+shared, not {method}"
                ))
            }
            (_, None) => {}
        }
        if self.match_compute && self.method != Method::Lora {
            return bad(format!(
                "--match-compute (`match_compute` in spec.json) applies only to --method lora, \
                 not {}",
                self.method
            ));
        }
        if self.match_compute && self.shared_rank.is_some() {
            return bad(
                "--match-compute sets the LoRA rank itself; drop --shared-rank or --match-compute"
                    .into(),
            );
        }
        self.features
            .validate("the feature settings (--rank, --alpha, --dropout or --features)")
            .map_err(ModelError::from)?;
        let defaults = self.features.defaults;
        check_alpha("--alpha", defaults.rank, defaults.alpha)?;
        for t in &self.features.types {
            let rank = t.rank.unwrap_or(defaults.rank);
            let alpha = t.alpha.unwrap_or(defaults.alpha);
            check_alpha(&format!("feature type {:?}", t.name), rank, alpha)?;
        }
        if self.data.is_empty() && self.mixture.is_none() {
            return bad("no training data file or mixture root was given".into());
        }
        if self.max_train_per_cell == Some(0) {
            return bad("the training examples per cell must be >= 1".into());
        }
        if self.features.types.is_empty() {
            return bad("the feature config has no feature type".into());
        }
        if let Some(eval) = &self.eval {
            eval.validate()?;
        }
        if !is_device_name(&self.device) {
            return bad(format!(
                "unknown device {:?}: use cpu, cuda or cuda:N",
                self.device
            ));
        }
        Ok(())
    }

    /// Checks that every feature type of `registry` (discovered from the training data) has at
    /// least one value when the method trains an adapter per feature value (`flix`,
    /// `flix+shared`): a type named in `--types` or the config that the data never sets would get
    /// an adapter with no value. (`lora` and `full` use features in prompts only, where a type
    /// the data lacks is merely absent.) The message lists the fields the data does have.
    pub fn check_types_have_values(&self, registry: &Registry) -> Result<()> {
        if !matches!(self.method, Method::Flix | Method::FlixShared) {
            return Ok(());
        }
        let empty: Vec<&str> = registry
            .types()
            .iter()
            .filter(|t| t.num_values() == 0)
            .map(|t| t.name())
            .collect();
        if empty.is_empty() {
            return Ok(());
        }
        let fields = data_fields(&self.data);
        Err(ModelError::Invalid(format!(
            "feature type(s) {} have no value in the training data ({}); the data's fields \
             besides input, target and id are: {}; choose feature types among them with --types \
             or the config",
            empty.join(", "),
            self.data
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if fields.is_empty() {
                "(none)".to_string()
            } else {
                fields.into_iter().collect::<Vec<_>>().join(", ")
            }
        )))
    }

    pub fn target_modules(&self) -> Result<Vec<TargetModule>> {
        if self.targets.is_empty() {
            return Ok(TargetModule::ALL.to_vec());
        }
        self.targets
            .iter()
            .map(|t| TargetModule::parse(t))
            .collect()
    }

    /// The adapter layout of this run for the (final) feature registry.
    pub fn layout(&self, registry: Registry) -> Result<Layout> {
        let defaults = self.features.defaults;
        let default_scale = defaults.alpha / defaults.rank.max(1) as f64;
        let shared = match self.method {
            Method::Lora if self.match_compute => Some(SharedAdapter {
                rank: Layout::full_feature_rank(&registry),
                alpha: registry.types().iter().map(|t| t.alpha()).sum(),
            }),
            Method::Lora | Method::FlixShared => {
                let rank = self.shared_rank.unwrap_or(defaults.rank);
                Some(SharedAdapter {
                    rank,
                    alpha: default_scale * rank as f64,
                })
            }
            Method::Flix | Method::Full => None,
        };
        Ok(Layout {
            method: self.method,
            registry,
            shared,
            targets: self.target_modules()?,
        })
    }
}

/// The most tokens a micro-batch may hold. Far beyond any memory (a 135M model's activations
/// alone are several KiB per token): it only keeps sums of token counts far from overflow; the
/// real bound is the memory estimate the trainer checks before it allocates.
pub const MAX_BATCH_TOKENS: usize = 1 << 40;
/// The most micro-batches per optimizer step.
pub const MAX_GRAD_ACCUM: usize = 1 << 20;

/// The range of an adapter's alpha, shared with the loader's check.
fn check_alpha(what: &str, rank: usize, alpha: f64) -> Result<()> {
    super::checkpoint::check_rank_alpha(what, rank, alpha).map_err(ModelError::Invalid)
}

/// The fields of the examples in `files` other than input, target and id (for messages; a file
/// that cannot be read contributes nothing).
fn data_fields(files: &[PathBuf]) -> BTreeSet<String> {
    let mut fields = BTreeSet::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(line) {
                fields.extend(
                    map.keys()
                        .filter(|k| !["input", "target", "id"].contains(&k.as_str()))
                        .cloned(),
                );
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_checked_without_a_driver() {
        for good in ["cpu", "cuda", "cuda:0", "cuda:12"] {
            assert!(is_device_name(good), "{good}");
        }
        for bad in ["", "gpu", "cuda:", "cuda:x", "cuda0", "cpu:0", "CUDA"] {
            assert!(!is_device_name(bad), "{bad}");
        }
        let features = FeatureConfig::discovered(&["lang"], flix_core::TypeDefaults::default());
        let mut spec = TrainSpec::new(
            "base".into(),
            vec!["d.jsonl".into()],
            features,
            Method::Flix,
        );
        assert!(spec.validate().is_ok());
        spec.device = "tpu".into();
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("\"tpu\"") && err.contains("cuda:N"), "{err}");
    }
}
