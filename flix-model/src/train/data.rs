//! Training examples as the trainer sees them: the prompt text that names the example's features
//! (every method sees the same text), its tokens, its cell, its feature set, and the checks that
//! make bad data an error before the first step.

use std::collections::BTreeMap;

use flix_core::mixture::{self, Mixture, Split};
use flix_core::{read_jsonl_files, Example, FeatureSet, Registry};

use crate::error::{ModelError, Result};
use crate::length::{ContextLimit, Encoded, Fit, LongExamples, LongReport};
use crate::tokenize::Tokenizer;
use crate::train::TrainSpec;

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

/// The most cells one `--holdout` spec may expand to (a guard against a hostile spec whose
/// alternatives multiply out to more cells than memory holds).
const MAX_CELLS_PER_SPEC: usize = 10_000;

impl Holdout {
    /// Parses `lang=sw,task=ner` specs, one per held-out cell. A type named more than once lists
    /// alternatives: `lang=deu,lang=fra` holds out both languages, and `lang=deu,lang=fra,task=qa`
    /// the cells (deu, qa) and (fra, qa). A part without `=`, an empty type or value (`lang=`,
    /// `=deu`), a spec without any part, or one that expands to more than 10,000 cells is an
    /// error.
    pub fn parse(specs: &[String]) -> Result<Self> {
        let mut cells: Vec<BTreeMap<String, String>> = Vec::new();
        for spec in specs {
            let bad = |m: String| ModelError::Invalid(format!("held-out cell {spec:?}: {m}"));
            // Type → its values, each once, in the order given.
            let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| bad(format!("expected type=value pairs, found {part:?}")))?;
                let (k, v) = (k.trim(), v.trim());
                if k.is_empty() || v.is_empty() {
                    return Err(bad(format!(
                        "{part:?} needs both a feature type and a value"
                    )));
                }
                let listed = values.entry(k.to_string()).or_default();
                if !listed.iter().any(|x| x == v) {
                    listed.push(v.to_string());
                }
            }
            if values.is_empty() {
                return Err(bad("names no feature".into()));
            }
            let count = values
                .values()
                .try_fold(1usize, |n, vs| n.checked_mul(vs.len()))
                .filter(|&n| n <= MAX_CELLS_PER_SPEC);
            if count.is_none() {
                return Err(bad(format!(
                    "its alternatives make more than {MAX_CELLS_PER_SPEC} cells"
                )));
            }
            let mut expanded = vec![BTreeMap::new()];
            for (k, vs) in &values {
                expanded = expanded
                    .into_iter()
                    .flat_map(|cell| {
                        vs.iter().map(move |v| {
                            let mut cell = cell.clone();
                            cell.insert(k.clone(), v.clone());
                            cell
                        })
                    })
                    .collect();
            }
            for cell in expanded {
                if !cells.contains(&cell) {
                    cells.push(cell);
                }
            }
        }
        Ok(Self { cells })
    }

    /// The cell as `lang=sw,task=ner`.
    pub fn cell_text(cell: &BTreeMap<String, String>) -> String {
        cell.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// An error naming a held-out cell whose type is not one of the run's `type_names`.
    pub fn check_types(&self, type_names: &[&str]) -> Result<()> {
        for cell in &self.cells {
            if let Some(t) = cell.keys().find(|t| !type_names.contains(&t.as_str())) {
                return Err(ModelError::Invalid(format!(
                    "held-out cell {}: {t:?} is not a feature type of the run (types: {})",
                    Self::cell_text(cell),
                    type_names.join(", ")
                )));
            }
        }
        Ok(())
    }

    pub fn contains(&self, example: &Example) -> bool {
        self.matches(&example.features)
    }

    /// Whether some held-out cell's conditions all hold for `features`.
    pub fn matches(&self, features: &BTreeMap<String, String>) -> bool {
        self.cells.iter().any(|cell| cell_matches(cell, features))
    }
}

/// Whether every condition of the held-out `cell` holds for `features`.
pub fn cell_matches(cell: &BTreeMap<String, String>, features: &BTreeMap<String, String>) -> bool {
    cell.iter()
        .all(|(k, v)| features.get(k).is_some_and(|x| x == v))
}

/// The training examples of a run and its held-out cells.
pub struct TrainingData {
    pub examples: Vec<Example>,
    pub holdout: Holdout,
}

/// Reads the training examples of `spec` (its `--data` files, and every cell's `train.jsonl` of
/// its mixture root), checks its held-out cells and removes their examples, and keeps the first
/// `max_train_per_cell` examples of each cell. Errors, before any training: a held-out cell of
/// a type the run does not have; one whose value no training example (nor mixture folder) has;
/// with a mixture root, one that names no cell of the mixture; no example left.
pub fn training_examples(spec: &TrainSpec) -> Result<TrainingData> {
    let core = |e: flix_core::CoreError| ModelError::Invalid(e.to_string());
    let type_names = spec.features.type_names();
    let holdout = Holdout::parse(&spec.holdout)?;
    holdout.check_types(&type_names)?;
    let mut examples = read_jsonl_files(&spec.data, &type_names).map_err(core)?;
    let mixture = match &spec.mixture {
        Some(root) => Some(Mixture::open(root).map_err(core)?),
        None => None,
    };
    for cell in &holdout.cells {
        let in_data = examples.iter().any(|ex| cell_matches(cell, &ex.features));
        let folder_types = cell
            .keys()
            .all(|k| k == mixture::LANG || k == mixture::TASK);
        let in_mixture = mixture
            .as_ref()
            .is_some_and(|m| m.cells.iter().any(|c| cell_matches(cell, &c.features())));
        if in_data || in_mixture {
            continue;
        }
        let unknown = cell.iter().find(|(k, v)| {
            !examples.iter().any(|ex| ex.features.get(*k) == Some(*v))
                && !mixture.as_ref().is_some_and(|m| m.has_value(k, v))
        });
        if let Some((k, v)) = unknown {
            return Err(ModelError::Invalid(format!(
                "held-out cell {}: no training data has {k}={v}; is it misspelt?",
                Holdout::cell_text(cell)
            )));
        }
        if let (Some(m), true) = (&mixture, folder_types) {
            return Err(ModelError::Invalid(format!(
                "held-out cell {}: the mixture {} has no such cell",
                Holdout::cell_text(cell),
                m.root.display()
            )));
        }
    }
    examples.retain(|ex| !holdout.contains(ex));
    if let Some(m) = &mixture {
        let cells = m
            .read(Split::Train, &type_names, spec.max_train_per_cell, |c| {
                !holdout.matches(&c.features())
            })
            .map_err(core)?;
        examples.extend(cells);
    }
    if let Some(max) = spec.max_train_per_cell {
        cap_per_cell(&mut examples, &type_names, max);
    }
    if examples.is_empty() {
        return Err(ModelError::Invalid(
            "no examples to train on: the data is empty or every cell is held out".into(),
        ));
    }
    Ok(TrainingData { examples, holdout })
}

/// Keeps at most `max` examples of each cell (by [`cell_name`] over `type_names`), spread over
/// the cell's examples as [`flix_core::spread_positions`] says, in order.
pub fn cap_per_cell(examples: &mut Vec<Example>, type_names: &[&str], max: usize) {
    let cells: Vec<String> = examples
        .iter()
        .map(|ex| cell_name(ex, type_names))
        .collect();
    let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for cell in &cells {
        *sizes.entry(cell).or_default() += 1;
    }
    let kept: BTreeMap<&str, Vec<usize>> = sizes
        .iter()
        .map(|(&cell, &len)| (cell, flix_core::spread_positions(len, max)))
        .collect();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let keep: Vec<bool> = cells
        .iter()
        .map(|cell| {
            let n = seen.entry(cell).or_default();
            let position = *n;
            *n += 1;
            kept[cell.as_str()].binary_search(&position).is_ok()
        })
        .collect();
    let mut flags = keep.into_iter();
    examples.retain(|_| flags.next().unwrap_or(false));
}

/// Examples tokenized as training and evaluation see them (prompt, target, end-of-sequence),
/// those longer than the model's context left out or cut as the policy says, before any feature
/// value is registered: a value only over-long examples have is not trained.
pub struct Tokenized {
    /// The examples kept, in order.
    pub examples: Vec<Example>,
    /// The tokens of each kept example.
    pub encoded: Vec<Encoded>,
    /// What was left out or cut.
    pub long: LongReport,
}

impl Tokenized {
    /// Tokenizes `examples` (prompts built over `type_names`) within `context`. A target that
    /// tokenizes to nothing is an error naming the example. Under [`LongExamples::Error`] an
    /// over-long example is an error naming it; otherwise it is skipped (or cut, and skipped
    /// when its prompt alone fills the context) and counted, and an error when no example is
    /// left.
    pub fn new(
        examples: &[Example],
        type_names: &[&str],
        tokenizer: &Tokenizer,
        context: ContextLimit,
        policy: LongExamples,
    ) -> Result<Self> {
        let eos = tokenizer.eos_id()?;
        let mut kept = Self {
            examples: Vec::with_capacity(examples.len()),
            encoded: Vec::with_capacity(examples.len()),
            long: LongReport::default(),
        };
        for ex in examples {
            if ex.target.trim().is_empty() {
                return Err(nothing_to_predict(ex));
            }
            let prompt = prompt_text(ex, type_names);
            let target = target_text(ex);
            let truncate = policy == LongExamples::Truncate;
            let encoded =
                match tokenizer.encode_within(&prompt, &target, Some(eos), context, truncate)? {
                    Fit::Fits(e) if e.has_continuation() => e,
                    // Truncation left only the prompt: nothing to learn or score.
                    Fit::Fits(_) => {
                        kept.long.skip(&ex.location);
                        continue;
                    }
                    Fit::TooLong(found) if policy == LongExamples::Error => {
                        return Err(context.too_long(&ex.location, found, "example"))
                    }
                    Fit::TooLong(_) => {
                        kept.long.skip(&ex.location);
                        continue;
                    }
                };
            if encoded.truncated {
                kept.long.truncate(&ex.location);
            } else if encoded.tokens.len() - encoded.prompt_len < 2 {
                // Only the end-of-sequence token follows the prompt.
                return Err(nothing_to_predict(ex));
            }
            kept.examples.push(ex.clone());
            kept.encoded.push(encoded);
        }
        if kept.examples.is_empty() && kept.long.skipped > 0 {
            return Err(ModelError::Invalid(format!(
                "all {} examples are longer than {} and were skipped (first: {})",
                kept.long.skipped,
                context.describe(),
                kept.long.first[0]
            )));
        }
        Ok(kept)
    }
}

fn nothing_to_predict(ex: &Example) -> ModelError {
    ModelError::Invalid(format!(
        "{}: the target {:?} tokenizes to nothing",
        ex.location, ex.target
    ))
}

/// One example ready for training or evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub cell: usize,
    pub features: FeatureSet,
    /// Prompt tokens, then target tokens, then end-of-sequence (unless truncation cut it off).
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
    /// The examples left out or cut for being longer than the model's context.
    pub long: LongReport,
}

impl PreparedSet {
    /// Encodes the features of `tokenized` (training mode: an unknown value is an error unless
    /// its type may grow) and groups the examples by cell. An empty set is an error.
    pub fn training(tokenized: Tokenized, registry: &mut Registry) -> Result<Self> {
        Self::build(tokenized, registry, |r, ex| {
            r.encode_training(ex)
                .map_err(|e| ModelError::Invalid(e.to_string()))
        })
    }

    /// As [`Self::training`], but unknown feature values become absent (zero-shot serving).
    pub fn inference(tokenized: Tokenized, registry: &mut Registry) -> Result<Self> {
        Self::build(tokenized, registry, |r, ex| Ok(r.encode_inference(ex)))
    }

    fn build(
        tokenized: Tokenized,
        registry: &mut Registry,
        mut encode: impl FnMut(&mut Registry, &Example) -> Result<FeatureSet>,
    ) -> Result<Self> {
        if tokenized.examples.is_empty() {
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
        let mut set = PreparedSet {
            long: tokenized.long,
            ..PreparedSet::default()
        };
        let mut cell_index: BTreeMap<String, usize> = BTreeMap::new();
        for (ex, encoded) in tokenized.examples.iter().zip(tokenized.encoded) {
            let features = encode(registry, ex)?;
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
                tokens: encoded.tokens,
                prompt_len: encoded.prompt_len,
            });
        }
        Ok(set)
    }
}
