//! The feature config: a JSON file naming the feature types, their ranks, alphas and dropout
//! probabilities, optional fixed value lists, the grow policy and the dropout policy.
//!
//! ```json
//! {
//!   "defaults": { "rank": 16, "alpha": 16, "dropout": 0.0 },
//!   "dropout_policy": "keep-one",
//!   "types": [
//!     { "name": "lang", "dropout": 0.2 },
//!     { "name": "task", "rank": 8, "alpha": 16, "values": ["qa", "ner"], "allow_new_values": false }
//!   ]
//! }
//! ```
//!
//! A type without a `values` list is discovered from the training data, so it may grow by default;
//! a type with a fixed list may not, unless `allow_new_values` says so.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dropout::DropoutPolicy;
use crate::error::{CoreError, Result};

/// Rank, alpha and dropout probability for types that do not set their own.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeDefaults {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
}

impl Default for TypeDefaults {
    /// Rank 16 (DESIGN §9's reference shape), scale 1, no dropout.
    fn default() -> Self {
        TypeDefaults {
            rank: 16,
            alpha: 16.0,
            dropout: 0.0,
        }
    }
}

/// One feature type as the config describes it; unset fields come from [`TypeDefaults`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// A fixed list of values; their ids are their positions in the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// May training data add values this type does not know yet? Default: only when `values` is
    /// not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_new_values: Option<bool>,
}

/// The whole feature config. Types are kept in the order given: that is the slot order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    #[serde(default)]
    pub defaults: TypeDefaults,
    #[serde(default)]
    pub dropout_policy: DropoutPolicy,
    pub types: Vec<TypeConfig>,
}

impl FeatureConfig {
    /// A config that discovers the values of `names` from the data, each with `defaults`.
    pub fn discovered(names: &[&str], defaults: TypeDefaults) -> Self {
        FeatureConfig {
            defaults,
            dropout_policy: DropoutPolicy::default(),
            types: names
                .iter()
                .map(|name| TypeConfig {
                    name: name.to_string(),
                    ..TypeConfig::default()
                })
                .collect(),
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
        Self::from_json_str(crate::data::without_bom(&text), &path.display().to_string())
    }

    /// Parses and validates a config; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let config: FeatureConfig = serde_json::from_str(text).map_err(|e| {
            CoreError::config(
                origin,
                format!(
                    "invalid config at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The names of the types, in slot order.
    pub fn type_names(&self) -> Vec<&str> {
        self.types.iter().map(|t| t.name.as_str()).collect()
    }

    /// Checks what serde cannot: at least one type, unique non-empty names and values, ranks
    /// >= 1, finite alphas, dropout probabilities in [0, 1].
    pub fn validate(&self, origin: &str) -> Result<()> {
        let err = |message: String| Err(CoreError::config(origin, message));
        if self.types.is_empty() {
            return err("the config names no feature types".into());
        }
        let mut names = HashSet::new();
        for t in &self.types {
            if t.name.is_empty() {
                return err("a feature type has an empty name".into());
            }
            if !names.insert(t.name.as_str()) {
                return err(format!("feature type {:?} is listed twice", t.name));
            }
            let resolved = self.resolve(t);
            check_hyper(&t.name, resolved.rank, resolved.alpha, resolved.dropout)
                .map_err(|m| CoreError::config(origin, m))?;
            let mut values = HashSet::new();
            for v in t.values.iter().flatten() {
                if v.is_empty() {
                    return err(format!("feature type {:?} lists an empty value", t.name));
                }
                if !values.insert(v.as_str()) {
                    return err(format!("feature type {:?} lists value {v:?} twice", t.name));
                }
            }
        }
        check_hyper(
            "defaults",
            self.defaults.rank,
            self.defaults.alpha,
            self.defaults.dropout,
        )
        .map_err(|m| CoreError::config(origin, m))
    }

    /// The rank, alpha and dropout of `t`, falling back to the config's defaults.
    pub fn resolve(&self, t: &TypeConfig) -> TypeDefaults {
        TypeDefaults {
            rank: t.rank.unwrap_or(self.defaults.rank),
            alpha: t.alpha.unwrap_or(self.defaults.alpha),
            dropout: t.dropout.unwrap_or(self.defaults.dropout),
        }
    }
}

/// The checks shared by configs and saved registries.
pub(crate) fn check_hyper(
    name: &str,
    rank: usize,
    alpha: f64,
    dropout: f64,
) -> std::result::Result<(), String> {
    if rank == 0 {
        return Err(format!("feature type {name:?}: rank must be >= 1"));
    }
    if rank > i32::MAX as usize {
        return Err(format!("feature type {name:?}: rank {rank} is too large"));
    }
    if !alpha.is_finite() {
        return Err(format!("feature type {name:?}: alpha must be finite"));
    }
    if !(0.0..=1.0).contains(&dropout) {
        return Err(format!(
            "feature type {name:?}: dropout {dropout} is not a probability in [0, 1]"
        ));
    }
    Ok(())
}
