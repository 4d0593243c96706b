//! Which adapters a method trains and which slots each example gets (DESIGN §1: every baseline is
//! a special case of FLix, through the same code path):
//! - `flix`: one adapter type per feature type of the registry, an example uses its features;
//! - `flix+shared`: the same plus one always-on type with a single value;
//! - `lora`: only the always-on type (K = 1, one value every example has);
//! - `full`: no adapters, every base weight trainable.

use std::fmt;
use std::str::FromStr;

use flix_core::{FeatureSet, Registry, TypeShape};
use serde::{Deserialize, Serialize};

use crate::adapters::{AdapterSpec, AdapterType, TargetModule};
use crate::error::{ModelError, Result};

/// The name of the always-on adapter type of `lora` and `flix+shared`.
pub const SHARED_TYPE: &str = "shared";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    #[serde(rename = "lora")]
    Lora,
    #[serde(rename = "flix")]
    Flix,
    #[serde(rename = "flix+shared")]
    FlixShared,
    #[serde(rename = "full")]
    Full,
}

impl Method {
    pub const ALL: [Method; 4] = [Method::Lora, Method::Flix, Method::FlixShared, Method::Full];

    pub fn name(self) -> &'static str {
        match self {
            Method::Lora => "lora",
            Method::Flix => "flix",
            Method::FlixShared => "flix+shared",
            Method::Full => "full",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                ModelError::Invalid(format!(
                    "unknown method {s:?}; use lora, flix, flix+shared or full"
                ))
            })
    }
}

/// Rank and alpha of the always-on type.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharedAdapter {
    pub rank: usize,
    pub alpha: f64,
}

/// The adapter types of a run, in plan order, and how an example's features map to slots.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub method: Method,
    /// The feature types (prompts, cells, and the FLix adapter types).
    pub registry: Registry,
    /// The always-on type (`lora`, `flix+shared`).
    pub shared: Option<SharedAdapter>,
    pub targets: Vec<TargetModule>,
}

impl Layout {
    /// The active rank of an example that has every feature: Σ_k r_k over the registry's types.
    pub fn full_feature_rank(registry: &Registry) -> usize {
        registry.types().iter().map(|t| t.rank()).sum()
    }

    /// The adapter types in plan order, with their names.
    pub fn adapter_types(&self) -> Vec<(String, AdapterType)> {
        let mut out = Vec::new();
        if matches!(self.method, Method::Flix | Method::FlixShared) {
            for t in self.registry.types() {
                out.push((
                    t.name().to_string(),
                    AdapterType {
                        rank: t.rank(),
                        alpha: t.alpha(),
                        num_values: t.num_values(),
                    },
                ));
            }
        }
        if let Some(s) = self.shared {
            out.push((
                SHARED_TYPE.to_string(),
                AdapterType {
                    rank: s.rank,
                    alpha: s.alpha,
                    num_values: 1,
                },
            ));
        }
        out
    }

    /// The adapters to attach (`None` for `full`).
    pub fn adapter_spec(&self, seed: u64) -> Option<AdapterSpec> {
        let types: Vec<AdapterType> = self.adapter_types().into_iter().map(|(_, t)| t).collect();
        (!types.is_empty()).then(|| AdapterSpec {
            types,
            targets: self.targets.clone(),
            seed,
        })
    }

    pub fn type_shapes(&self) -> Vec<TypeShape> {
        self.adapter_types()
            .into_iter()
            .map(|(_, t)| TypeShape {
                rank: t.rank,
                num_values: t.num_values,
            })
            .collect()
    }

    /// The plan slots of an example whose (possibly dropped-out) features are `features`.
    pub fn slots(&self, features: &FeatureSet) -> Vec<i32> {
        let mut slots = match self.method {
            Method::Flix | Method::FlixShared => features.slots.clone(),
            Method::Lora | Method::Full => Vec::new(),
        };
        if self.shared.is_some() {
            slots.push(0);
        }
        slots
    }
}
