//! The feature registry: the feature types (name, rank, alpha, dropout probability) and, per type,
//! its values with stable ids. Ids index the adapters, so they never change once given: the
//! registry is saved next to the adapters **by name** (value name → id) and a reload restores the
//! same ids; values seen later get new ids appended after the saved ones, never renumbering.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{check_hyper, FeatureConfig};
use crate::data::Example;
use crate::dropout::DropoutPolicy;
use crate::error::{CoreError, Result};
use crate::plan::TypeShape;

/// One feature type and its values. Value `id` is its index in [`FeatureType::values`].
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureType {
    name: String,
    rank: usize,
    alpha: f64,
    dropout: f64,
    allow_new_values: bool,
    values: Vec<String>,
    ids: HashMap<String, i32>,
}

impl FeatureType {
    fn new(name: &str, rank: usize, alpha: f64, dropout: f64, allow_new_values: bool) -> Self {
        FeatureType {
            name: name.to_string(),
            rank,
            alpha,
            dropout,
            allow_new_values,
            values: Vec::new(),
            ids: HashMap::new(),
        }
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
    /// s_k = alpha_k / r_k, the factor on this type's low-rank update.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
    /// The probability that training drops this feature from an example (per example, per step).
    pub fn dropout(&self) -> f64 {
        self.dropout
    }
    /// May training data add values this type does not know?
    pub fn allow_new_values(&self) -> bool {
        self.allow_new_values
    }
    /// The value names, in id order.
    pub fn values(&self) -> &[String] {
        &self.values
    }
    pub fn num_values(&self) -> usize {
        self.values.len()
    }
    /// The id of `value`, if known.
    pub fn id_of(&self, value: &str) -> Option<i32> {
        self.ids.get(value).copied()
    }
    /// The name of value `id`, if it exists.
    pub fn value_name(&self, id: i32) -> Option<&str> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.values.get(i))
            .map(String::as_str)
    }
    /// Appends `value` (which must be new) and returns its id.
    pub(crate) fn push_value(&mut self, value: &str) -> Result<i32> {
        let id = i32::try_from(self.values.len()).map_err(|_| {
            CoreError::config(
                format!("feature type {:?}", self.name),
                "more values than i32 can number",
            )
        })?;
        self.values.push(value.to_string());
        self.ids.insert(value.to_string(), id);
        Ok(id)
    }
}

/// All feature types, in slot order, and the dropout policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Registry {
    types: Vec<FeatureType>,
    dropout_policy: DropoutPolicy,
}

impl Registry {
    /// The registry a config describes: its types, each with its fixed values (if any).
    pub fn from_config(config: &FeatureConfig) -> Result<Self> {
        config.validate("feature config")?;
        let mut types = Vec::with_capacity(config.types.len());
        for t in &config.types {
            let h = config.resolve(t);
            let grow = t.allow_new_values.unwrap_or(t.values.is_none());
            let mut ft = FeatureType::new(&t.name, h.rank, h.alpha, h.dropout, grow);
            for v in t.values.iter().flatten() {
                ft.push_value(v)?;
            }
            types.push(ft);
        }
        Ok(Registry {
            types,
            dropout_policy: config.dropout_policy,
        })
    }

    /// A registry from `config` whose growable types take their values from `examples`
    /// (see [`Registry::grow_from`]).
    pub fn discover(config: &FeatureConfig, examples: &[Example]) -> Result<Self> {
        let mut registry = Self::from_config(config)?;
        registry.grow_from(examples)?;
        Ok(registry)
    }

    /// Adds the values of `examples` that the registry does not know yet. New values of a type
    /// are appended in name order (so discovery does not depend on file order); known ids never
    /// change. A new value of a type that may not grow is an error naming its first occurrence.
    pub fn grow_from(&mut self, examples: &[Example]) -> Result<()> {
        for k in 0..self.types.len() {
            let mut new_values: BTreeMap<&str, &Example> = BTreeMap::new();
            for ex in examples {
                if let Some(value) = ex.features.get(&self.types[k].name) {
                    if self.types[k].id_of(value).is_none() {
                        new_values.entry(value.as_str()).or_insert(ex);
                    }
                }
            }
            let ft = &mut self.types[k];
            if let Some((value, ex)) = new_values.iter().next() {
                if !ft.allow_new_values {
                    return Err(unknown_value(ft, value, ex));
                }
            }
            for value in new_values.keys() {
                ft.push_value(value)?;
            }
        }
        Ok(())
    }

    pub fn types(&self) -> &[FeatureType] {
        &self.types
    }
    pub fn num_types(&self) -> usize {
        self.types.len()
    }
    /// The slot index of the type called `name`.
    pub fn type_index(&self, name: &str) -> Option<usize> {
        self.types.iter().position(|t| t.name == name)
    }
    pub fn feature_type(&self, name: &str) -> Option<&FeatureType> {
        self.types.iter().find(|t| t.name == name)
    }
    pub(crate) fn types_mut(&mut self) -> &mut [FeatureType] {
        &mut self.types
    }
    pub fn dropout_policy(&self) -> DropoutPolicy {
        self.dropout_policy
    }
    /// The type names, in slot order.
    pub fn type_names(&self) -> Vec<&str> {
        self.types.iter().map(|t| t.name.as_str()).collect()
    }
    /// What the batch plan needs: rank and number of values of each type, in slot order.
    pub fn type_shapes(&self) -> Vec<TypeShape> {
        self.types
            .iter()
            .map(|t| TypeShape {
                rank: t.rank,
                num_values: t.num_values(),
            })
            .collect()
    }

    /// Takes the training settings of `config` for a reloaded registry: dropout probabilities,
    /// grow policies and the dropout policy, and appends the config's fixed values that are new.
    /// Types must match by name and order, with the same rank and alpha (the saved adapters
    /// depend on them).
    pub fn apply_config(&mut self, config: &FeatureConfig, origin: &str) -> Result<()> {
        config.validate(origin)?;
        if config.type_names() != self.type_names() {
            return Err(CoreError::config(
                origin,
                format!(
                    "the config's feature types {:?} differ from the saved registry's {:?}",
                    config.type_names(),
                    self.type_names()
                ),
            ));
        }
        for (ft, t) in self.types.iter_mut().zip(&config.types) {
            let h = config.resolve(t);
            if h.rank != ft.rank || h.alpha != ft.alpha {
                return Err(CoreError::config(
                    origin,
                    format!(
                        "feature type {:?}: the config says rank {} alpha {}, the saved registry \
                         rank {} alpha {}",
                        ft.name, h.rank, h.alpha, ft.rank, ft.alpha
                    ),
                ));
            }
            ft.dropout = h.dropout;
            ft.allow_new_values = t.allow_new_values.unwrap_or(t.values.is_none());
            for v in t.values.iter().flatten() {
                if ft.id_of(v).is_none() {
                    ft.push_value(v)?;
                }
            }
        }
        self.dropout_policy = config.dropout_policy;
        Ok(())
    }

    /// The saved form, JSON: per type its settings and a map value name → id.
    pub fn to_json_string(&self) -> Result<String> {
        let saved = SavedRegistry {
            format: SAVED_FORMAT.to_string(),
            dropout_policy: self.dropout_policy,
            types: self
                .types
                .iter()
                .map(|t| SavedType {
                    name: t.name.clone(),
                    rank: t.rank,
                    alpha: t.alpha,
                    dropout: t.dropout,
                    allow_new_values: t.allow_new_values,
                    values: t.ids.iter().map(|(v, &id)| (v.clone(), id)).collect(),
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

fn unknown_value(ft: &FeatureType, value: &str, ex: &Example) -> CoreError {
    CoreError::UnknownValue {
        location: ex.location.clone(),
        type_name: ft.name.clone(),
        value: value.to_string(),
        known: known_list(ft),
    }
}

/// The known values of a type for an error message, shortened when there are many.
pub(crate) fn known_list(ft: &FeatureType) -> String {
    const SHOWN: usize = 12;
    let mut s = ft
        .values
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if ft.values.len() > SHOWN {
        s += &format!(", ... ({} in all)", ft.values.len());
    }
    if s.is_empty() {
        s = "none".into();
    }
    s
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
