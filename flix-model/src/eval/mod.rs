//! Evaluation: exact match of greedy continuations, per cell, with held-out cells marked.

pub mod greedy;

use std::collections::BTreeMap;

use flix_core::Example;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::train::data::{cell_name, prompt_text};
use crate::train::{Holdout, Trained};
use greedy::{greedy_decode, Prompt};

/// Exact match of one cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellScore {
    /// `lang=deu,task=date`.
    pub cell: String,
    /// The cell's feature values by type.
    pub features: BTreeMap<String, String>,
    pub heldout: bool,
    pub correct: usize,
    pub total: usize,
}

impl CellScore {
    pub fn exact_match(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
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
        let scores: Vec<f64> = self
            .cells
            .iter()
            .filter(|c| c.heldout == heldout)
            .map(CellScore::exact_match)
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
/// serving) and scores exact match (whitespace at the ends ignored) per cell.
pub fn evaluate(
    name: &str,
    trained: &Trained,
    examples: &[Example],
    holdout: &Holdout,
    options: EvalOptions,
) -> Result<EvalResult> {
    let registry = &trained.layout.registry;
    let type_names = registry.type_names();
    let tok = &trained.tokenizer;
    let prompts = examples
        .iter()
        .map(|ex| {
            let features = registry.encode_inference(ex);
            Ok(Prompt {
                tokens: tok.encode(&prompt_text(ex, &type_names))?,
                slots: trained.layout.slots(&features),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let outputs = greedy_decode(
        &trained.model,
        &trained.layout,
        &prompts,
        tok.eos_id()?,
        options.max_new_tokens,
        options.batch_tokens,
    )?;
    let mut cells: Vec<CellScore> = Vec::new();
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
            });
            cells.len() - 1
        });
        cells[i].total += 1;
        if output.trim() == ex.target.trim() {
            cells[i].correct += 1;
        }
        predictions.push(Prediction {
            cell,
            input: ex.input.clone(),
            target: ex.target.clone(),
            output,
        });
    }
    Ok(EvalResult {
        name: name.to_string(),
        cells,
        predictions,
    })
}
