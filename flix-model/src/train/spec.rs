//! Everything a training run needs, saved as `spec.json` in the run directory, so that
//! `--resume DIR` needs nothing else.

use std::path::PathBuf;

use flix_core::{FeatureConfig, Registry};
use serde::{Deserialize, Serialize};

use super::layout::{Layout, Method, SharedAdapter};
use crate::adapters::TargetModule;
use crate::error::{ModelError, Result};
use crate::eval::periodic::PeriodicEvalSpec;

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
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        if self.steps == 0 {
            return bad("steps must be >= 1".into());
        }
        if self.batch_tokens == 0 || self.grad_accum == 0 {
            return bad("batch tokens and gradient accumulation must be >= 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("the learning rate must be > 0, found {}", self.lr));
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
