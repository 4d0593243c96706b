//! Evaluation of greedy continuations per cell, with held-out cells marked: exact match for every
//! cell, chrF for every cell (free text), accuracy for the cells of label tasks (the rule is in
//! [`metrics`]).

pub mod chrf;
pub mod greedy;
pub mod metrics;
pub mod periodic;

use std::collections::BTreeMap;

use flix_core::Example;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::llama::LlamaModel;
use crate::tokenize::Tokenizer;
use crate::train::data::{cell_name, prompt_text};
use crate::train::{Holdout, Layout, Trained};
use chrf::ChrfStats;
use greedy::{greedy_decode, Prompt};
pub use metrics::{LabelTasks, Metric};

/// The scores of one cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellScore {
    /// `lang=deu,task=date`.
    pub cell: String,
    /// The cell's feature values by type.
    pub features: BTreeMap<String, String>,
    pub heldout: bool,
    /// Exactly matching outputs.
    pub correct: usize,
    pub total: usize,
    /// Corpus-level chrF of the cell, in [0, 100] (absent in results written before it existed).
    #[serde(default)]
    pub chrf: Option<f64>,
    /// Outputs equal to the gold label, for cells of label tasks only.
    #[serde(default)]
    pub label_correct: Option<usize>,
}

impl CellScore {
    pub fn exact_match(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }

    /// The cell's `metric` as a fraction in [0, 1] (chrF / 100), if the cell has it.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::ExactMatch => Some(self.exact_match()),
            Metric::Chrf => self.chrf.map(|c| c / 100.0),
            Metric::Accuracy => self
                .label_correct
                .map(|c| c as f64 / self.total.max(1) as f64),
        }
    }
}

/// One prediction, for inspection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub cell: String,
    pub input: String,
    pub target: String,
    pub output: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    pub name: String,
    pub cells: Vec<CellScore>,
    pub predictions: Vec<Prediction>,
}

impl EvalResult {
    /// Mean exact match over cells (each cell weighs the same) that are held out or not.
    pub fn mean(&self, heldout: bool) -> Option<f64> {
        self.mean_of(Metric::ExactMatch, heldout)
    }

    /// Mean of `metric` (as a fraction) over the cells, held out or not, that have it.
    pub fn mean_of(&self, metric: Metric, heldout: bool) -> Option<f64> {
        let scores: Vec<f64> = self
            .cells
            .iter()
            .filter(|c| c.heldout == heldout)
            .filter_map(|c| c.value(metric))
            .collect();
        (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64)
    }
}

/// Decoding limits of an evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalOptions {
    pub max_new_tokens: usize,
    pub batch_tokens: usize,
}

/// Greedy-decodes every example under `trained` (features of unknown values are absent, as in
/// serving) and scores each cell: exact match (whitespace at the ends ignored), chrF, and
/// accuracy for label tasks.
pub fn evaluate(
    name: &str,
    trained: &Trained,
    examples: &[Example],
    holdout: &Holdout,
    options: EvalOptions,
) -> Result<EvalResult> {
    let model = Model {
        model: &trained.model,
        layout: &trained.layout,
        tokenizer: &trained.tokenizer,
    };
    evaluate_model(name, model, examples, holdout, options)
}

/// A model to evaluate: weights (with adapters), their layout, the tokenizer; borrowed from a
/// loaded checkpoint or from a trainer in the middle of its run.
#[derive(Clone, Copy)]
pub struct Model<'a> {
    pub model: &'a LlamaModel,
    pub layout: &'a Layout,
    pub tokenizer: &'a Tokenizer,
}

/// [`evaluate`] on a borrowed model.
pub fn evaluate_model(
    name: &str,
    model: Model,
    examples: &[Example],
    holdout: &Holdout,
    options: EvalOptions,
) -> Result<EvalResult> {
    let registry = &model.layout.registry;
    let type_names = registry.type_names();
    let tok = model.tokenizer;
    let prompts = examples
        .iter()
        .map(|ex| {
            let features = registry.encode_inference(ex);
            Ok(Prompt {
                tokens: tok.encode(&prompt_text(ex, &type_names))?,
                slots: model.layout.slots(&features),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let label_tasks = LabelTasks::detect(examples);
    let outputs = greedy_decode(
        model.model,
        model.layout,
        &prompts,
        tok.eos_id()?,
        options.max_new_tokens,
        options.batch_tokens,
    )?;
    let mut cells: Vec<CellScore> = Vec::new();
    let mut chrf_stats: Vec<ChrfStats> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut predictions = Vec::with_capacity(examples.len());
    for (ex, out) in examples.iter().zip(outputs) {
        let output = tok.decode(&out)?;
        let cell = cell_name(ex, &type_names);
        let i = *index.entry(cell.clone()).or_insert_with(|| {
            cells.push(CellScore {
                cell: cell.clone(),
                features: ex.features.clone(),
                heldout: holdout.contains(ex),
                correct: 0,
                total: 0,
                chrf: None,
                label_correct: None,
            });
            chrf_stats.push(ChrfStats::default());
            cells.len() - 1
        });
        let score = &mut cells[i];
        score.total += 1;
        if output.trim() == ex.target.trim() {
            score.correct += 1;
        }
        chrf_stats[i].add(&ChrfStats::sentence(&output, &ex.target));
        if let Some(right) = label_tasks.is_correct(ex, &output) {
            *score.label_correct.get_or_insert(0) += usize::from(right);
        }
        predictions.push(Prediction {
            cell,
            input: ex.input.clone(),
            target: ex.target.clone(),
            output,
        });
    }
    for (cell, stats) in cells.iter_mut().zip(&chrf_stats) {
        cell.chrf = Some(stats.score());
    }
    Ok(EvalResult {
        name: name.to_string(),
        cells,
        predictions,
    })
}
