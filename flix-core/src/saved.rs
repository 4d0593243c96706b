//! The saved form of the registry: JSON with, per type, its settings and a map value name → id.
//! Saved next to the adapters, it is what keeps value ids stable: a reload restores exactly these
//! ids, whatever order the data comes in later.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::check_hyper;
use crate::dropout::DropoutPolicy;
use crate::error::{CoreError, Result};
use crate::registry::{FeatureType, Registry};

impl Registry {
    /// The saved form, JSON: per type its settings and a map value name → id.
    pub fn to_json_string(&self) -> Result<String> {
        let saved = SavedRegistry {
            format: SAVED_FORMAT.to_string(),
            dropout_policy: self.dropout_policy(),
            types: self
                .types()
                .iter()
                .map(|t| SavedType {
                    name: t.name().to_string(),
                    rank: t.rank(),
                    alpha: t.alpha(),
                    dropout: t.dropout(),
                    allow_new_values: t.allow_new_values(),
                    values: (0..)
                        .zip(t.values())
                        .map(|(id, v)| (v.clone(), id))
                        .collect(),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&saved)
            .map_err(|e| CoreError::config("feature registry", format!("cannot serialise: {e}")))
    }

    /// Writes the registry to `path` through a temporary file and a rename, so a crash never
    /// leaves a torn file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, self.to_json_string()? + "\n").map_err(|e| CoreError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| CoreError::io(path, e))
    }

    /// Reads a registry saved by [`Registry::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parses a saved registry; `origin` names it in errors. Value ids must be exactly
    /// 0..n for each type.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let saved: SavedRegistry = serde_json::from_str(text).map_err(|e| {
            CoreError::config(
                origin,
                format!(
                    "invalid saved registry at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if saved.format != SAVED_FORMAT {
            return Err(CoreError::config(
                origin,
                format!(
                    "unknown registry format {:?} (expected {SAVED_FORMAT:?})",
                    saved.format
                ),
            ));
        }
        if saved.types.is_empty() {
            return Err(CoreError::config(
                origin,
                "the registry has no feature types",
            ));
        }
        let mut names = BTreeSet::new();
        let mut types = Vec::with_capacity(saved.types.len());
        for st in saved.types {
            if !names.insert(st.name.clone()) {
                return Err(CoreError::config(
                    origin,
                    format!("feature type {:?} appears twice", st.name),
                ));
            }
            check_hyper(&st.name, st.rank, st.alpha, st.dropout)
                .map_err(|m| CoreError::config(origin, m))?;
            let mut by_id: Vec<Option<String>> = vec![None; st.values.len()];
            for (value, id) in st.values {
                let slot = usize::try_from(id).ok().and_then(|i| by_id.get_mut(i));
                match slot {
                    Some(slot @ None) => *slot = Some(value),
                    _ => {
                        return Err(CoreError::config(
                            origin,
                            format!(
                                "feature type {:?}: value {value:?} has id {id}; ids must be \
                                 0..{} with no repeats",
                                st.name,
                                by_id.len()
                            ),
                        ))
                    }
                }
            }
            let mut ft =
                FeatureType::new(&st.name, st.rank, st.alpha, st.dropout, st.allow_new_values);
            // Every slot is filled: n distinct ids in 0..n.
            for value in by_id.into_iter().flatten() {
                ft.push_value(&value)?;
            }
            types.push(ft);
        }
        Ok(Registry {
            types,
            dropout_policy: saved.dropout_policy,
        })
    }
}

const SAVED_FORMAT: &str = "flix-registry/1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedRegistry {
    format: String,
    dropout_policy: DropoutPolicy,
    types: Vec<SavedType>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedType {
    name: String,
    rank: usize,
    alpha: f64,
    dropout: f64,
    allow_new_values: bool,
    /// Value name → id, sorted by name in the file.
    values: BTreeMap<String, i32>,
}
