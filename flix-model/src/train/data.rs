//! Training examples as the trainer sees them: the prompt text that names the example's features
//! (every method sees the same text), its tokens, its cell, its feature set, and the checks that
//! make bad data an error before the first step.

use std::collections::BTreeMap;

use flix_core::{Example, FeatureSet, Registry};

use crate::error::{ModelError, Result};
use crate::tokenize::Tokenizer;

/// `<type=value>` tags for each feature the example has, in registry order, each followed by a
/// space: `<lang=deu> <task=date> `.
pub fn feature_tags(example: &Example, type_names: &[&str]) -> String {
    type_names
        .iter()
        .filter_map(|name| {
            example
                .features
                .get(*name)
                .map(|v| format!("<{name}={v}> "))
        })
        .collect()
}

/// The prompt of an example: its feature tags, then its input and ` =` (or only the tags when the
/// input is empty, as for plain pretraining text).
pub fn prompt_text(example: &Example, type_names: &[&str]) -> String {
    let tags = feature_tags(example, type_names);
    if example.input.is_empty() {
        tags
    } else {
        format!("{tags}{} =", example.input)
    }
}

/// The text the model must produce after the prompt (the end-of-sequence token follows it).
pub fn target_text(example: &Example) -> String {
    if example.input.is_empty() {
        example.target.clone()
    } else {
        format!(" {}", example.target)
    }
}

/// The cell of an example: its value of every feature type, `-` where absent, e.g.
/// `lang=deu,task=date`.
pub fn cell_name(example: &Example, type_names: &[&str]) -> String {
    type_names
        .iter()
        .map(|name| {
            let v = example.features.get(*name).map_or("-", |v| v.as_str());
            format!("{name}={v}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Held-out cells: each a set of `type=value` conditions, all of which an example must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holdout {
    pub cells: Vec<BTreeMap<String, String>>,
}

impl Holdout {
    /// Parses `lang=sw,task=ner` specs, one per held-out cell.
    pub fn parse(specs: &[String]) -> Result<Self> {
        let mut cells = Vec::new();
        for spec in specs {
            let mut cell = BTreeMap::new();
            for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = part.split_once('=').ok_or_else(|| {
                    ModelError::Invalid(format!(
                        "held-out cell {spec:?}: expected type=value pairs, found {part:?}"
                    ))
                })?;
                cell.insert(k.trim().to_string(), v.trim().to_string());
            }
            if cell.is_empty() {
                return Err(ModelError::Invalid(format!(
                    "held-out cell {spec:?} names no feature"
                )));
            }
            cells.push(cell);
        }
        Ok(Self { cells })
    }

    pub fn contains(&self, example: &Example) -> bool {
        self.cells.iter().any(|cell| {
            cell.iter()
                .all(|(k, v)| example.features.get(k).is_some_and(|x| x == v))
        })
    }
}

/// One example ready for training or evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub cell: usize,
    pub features: FeatureSet,
    /// Prompt tokens, then target tokens, then end-of-sequence.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
}

/// Examples grouped by cell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PreparedSet {
    pub cell_names: Vec<String>,
    pub examples: Vec<Prepared>,
    /// Indices into `examples`, per cell.
    pub by_cell: Vec<Vec<usize>>,
}

impl PreparedSet {
    /// Tokenizes `examples` and encodes their features (training mode: an unknown value is an
    /// error unless its type may grow). A target that tokenizes to nothing is an error naming the
    /// example; so is an empty set.
    pub fn training(
        examples: &[Example],
        registry: &mut Registry,
        tokenizer: &Tokenizer,
    ) -> Result<Self> {
        Self::build(
            examples,
            tokenizer,
            |r, ex| {
                r.encode_training(ex)
                    .map_err(|e| ModelError::Invalid(e.to_string()))
            },
            registry,
        )
    }

    /// As [`Self::training`], but unknown feature values become absent (zero-shot serving).
    pub fn inference(
        examples: &[Example],
        registry: &mut Registry,
        tokenizer: &Tokenizer,
    ) -> Result<Self> {
        Self::build(
            examples,
            tokenizer,
            |r, ex| Ok(r.encode_inference(ex)),
            registry,
        )
    }

    fn build(
        examples: &[Example],
        tokenizer: &Tokenizer,
        mut encode: impl FnMut(&mut Registry, &Example) -> Result<FeatureSet>,
        registry: &mut Registry,
    ) -> Result<Self> {
        if examples.is_empty() {
            return Err(ModelError::Invalid(
                "no examples to train or evaluate on".into(),
            ));
        }
        let names: Vec<String> = registry
            .type_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let mut set = PreparedSet::default();
        let mut cell_index: BTreeMap<String, usize> = BTreeMap::new();
        for ex in examples {
            let features = encode(registry, ex)?;
            let mut tokens = tokenizer.encode(&prompt_text(ex, &names))?;
            let prompt_len = tokens.len();
            let target = tokenizer.encode(&target_text(ex))?;
            if target.is_empty() || ex.target.trim().is_empty() {
                return Err(ModelError::Invalid(format!(
                    "{}: the target {:?} tokenizes to nothing",
                    ex.location, ex.target
                )));
            }
            tokens.extend(target);
            tokens.push(tokenizer.eos_id()?);
            let name = cell_name(ex, &names);
            let cell = *cell_index.entry(name.clone()).or_insert_with(|| {
                set.cell_names.push(name);
                set.by_cell.push(Vec::new());
                set.cell_names.len() - 1
            });
            set.by_cell[cell].push(set.examples.len());
            set.examples.push(Prepared {
                cell,
                features,
                tokens,
                prompt_len,
            });
        }
        Ok(set)
    }
}
