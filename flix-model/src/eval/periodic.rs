//! Evaluation during training (`flix train --eval-every N --eval-file F`): every N steps and at
//! the end, the mean teacher-forced loss of every cell of the eval file under the current weights
//! (the training loss's definition: mean negative log-likelihood of the target tokens and the
//! end-of-sequence token), and optionally exact match by greedy decoding on the first M examples of
//! each cell. Held-out cells of the run are marked. It only reads the model: the sampler and
//! dropout are pure functions of (seed, step), so training goes on exactly as without it.
//!
//! Each evaluation is one line of the run's `metrics.jsonl`, beside the step lines:
//! `{"step": 20, "eval": {"lang=deu,task=date": {"loss": .., "heldout": false, ..}, ..},
//!   "heldout_mean": .., "supervised_mean": ..}` (means over cells, each cell weighing the same).

use std::collections::BTreeMap;
use std::path::PathBuf;

use flix_core::{read_jsonl_files, Example};
use serde::{Deserialize, Serialize};

use super::{evaluate_model, EvalOptions, Model, TaskMetrics};
use crate::batch::Sequence;
use crate::error::{ModelError, Result};
use crate::length::{ContextLimit, LongExamples};
use crate::score::score_sequences;
use crate::train::data::Holdout;
use crate::train::data::Tokenized;
use crate::train::PreparedSet;

/// What to evaluate during training and how often (saved in `spec.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeriodicEvalSpec {
    /// Steps between evaluations (the last step is always evaluated).
    pub every: u64,
    /// The JSONL file to evaluate on.
    pub file: PathBuf,
    /// Also exact match, by greedy decoding, on at most this many examples per cell.
    #[serde(default)]
    pub max_per_cell: Option<usize>,
    /// Most tokens greedy decoding may generate per example.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
}

fn default_max_new_tokens() -> usize {
    48
}

impl PeriodicEvalSpec {
    pub fn new(every: u64, file: PathBuf) -> Self {
        Self {
            every,
            file,
            max_per_cell: None,
            max_new_tokens: default_max_new_tokens(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.every == 0 {
            return Err(ModelError::Invalid("--eval-every must be >= 1".into()));
        }
        if self.max_per_cell == Some(0) || self.max_new_tokens == 0 {
            return Err(ModelError::Invalid(
                "the eval's examples per cell and new tokens must be >= 1".into(),
            ));
        }
        Ok(())
    }

    /// Whether step `step` of a run of `last` steps is evaluated.
    pub fn due(&self, step: u64, last: u64) -> bool {
        step == last || (self.every > 0 && step.is_multiple_of(self.every))
    }
}

/// One cell's evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellEval {
    /// Mean negative log-likelihood of the cell's target tokens.
    pub loss: f64,
    pub heldout: bool,
    pub examples: usize,
    /// Exact match on the cell's first `max_per_cell` examples, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<f64>,
}

/// One evaluation (one line of `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: u64,
    /// Cell name → its evaluation.
    pub eval: BTreeMap<String, CellEval>,
    /// Mean loss over held-out cells (none without such cells).
    pub heldout_mean: Option<f64>,
    /// Mean loss over supervised cells.
    pub supervised_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout_exact_match: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervised_exact_match: Option<f64>,
}

/// The mean of `value` over the cells held out (or not) that have it.
fn cell_mean(
    cells: &BTreeMap<String, CellEval>,
    heldout: bool,
    value: impl Fn(&CellEval) -> Option<f64>,
) -> Option<f64> {
    let values: Vec<f64> = cells
        .values()
        .filter(|c| c.heldout == heldout)
        .filter_map(value)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

impl EvalRecord {
    /// `eval loss held-out 1.234 supervised 0.567 (exact match held-out 10.0% supervised 50.0%)`.
    pub fn summary(&self) -> String {
        let loss = |m: Option<f64>| m.map_or("-".to_string(), |v| format!("{v:.4}"));
        let pct = |m: Option<f64>| m.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
        let mut text = format!(
            "eval loss held-out {} supervised {}",
            loss(self.heldout_mean),
            loss(self.supervised_mean)
        );
        if self.heldout_exact_match.is_some() || self.supervised_exact_match.is_some() {
            text += &format!(
                " (exact match held-out {} supervised {})",
                pct(self.heldout_exact_match),
                pct(self.supervised_exact_match)
            );
        }
        text
    }
}

/// A line of `metrics.jsonl`: a training step, or an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricsLine {
    Eval(EvalRecord),
    Step(crate::train::StepReport),
}

/// The eval set of a run, read and tokenized once before the first step.
pub struct PeriodicEval {
    pub spec: PeriodicEvalSpec,
    holdout: Holdout,
    set: PreparedSet,
    /// Per cell of `set`: whether the run holds it out.
    heldout: Vec<bool>,
    /// The examples decoded for exact match (the first `max_per_cell` of each cell).
    decoded: Vec<Example>,
}

impl PeriodicEval {
    /// Reads and tokenizes `spec.file` for `model` (unknown feature values become absent, as in
    /// serving). Bad data is an error here, before training starts.
    pub fn prepare(spec: &PeriodicEvalSpec, model: Model, holdout: &Holdout) -> Result<Self> {
        spec.validate()?;
        let mut registry = model.layout.registry.clone();
        let type_names: Vec<String> = registry
            .type_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let type_names: Vec<&str> = type_names.iter().map(String::as_str).collect();
        let examples = read_jsonl_files(std::slice::from_ref(&spec.file), &type_names)
            .map_err(|e| ModelError::Invalid(format!("eval file: {e}")))?;
        // An eval example longer than the context is skipped (and counted), as in `flix eval`.
        let context = ContextLimit::new(model.model.config.max_position_embeddings);
        let tokenized = Tokenized::new(
            &examples,
            &type_names,
            model.tokenizer,
            context,
            LongExamples::Skip,
        )
        .map_err(|e| ModelError::Invalid(format!("eval file: {e}")))?;
        let examples = tokenized.examples.clone();
        let set = PreparedSet::inference(tokenized, &mut registry)?;
        let heldout = set
            .by_cell
            .iter()
            .map(|members| holdout.contains(&examples[members[0]]))
            .collect();
        let decoded = match spec.max_per_cell {
            Some(m) => {
                let mut indices: Vec<usize> = set
                    .by_cell
                    .iter()
                    .flat_map(|members| {
                        flix_core::spread_positions(members.len(), m)
                            .into_iter()
                            .map(|p| members[p])
                    })
                    .collect();
                indices.sort_unstable();
                indices.into_iter().map(|i| examples[i].clone()).collect()
            }
            None => Vec::new(),
        };
        // Malformed gold targets of the decoded examples are an error now, not mid-training.
        TaskMetrics::by_name().resolve(&decoded)?;
        Ok(Self {
            spec: spec.clone(),
            holdout: holdout.clone(),
            set,
            heldout,
            decoded,
        })
    }

    /// What the eval set left out for being longer than the model's context, as a sentence.
    pub fn length_note(&self, context: ContextLimit) -> Option<String> {
        self.set.long.note("eval example", context)
    }

    /// Evaluates `model` (the weights after `step`), packing at most `batch_tokens` tokens per
    /// forward pass.
    pub fn run(&self, step: u64, model: Model, batch_tokens: usize) -> Result<EvalRecord> {
        let sequences: Vec<Sequence> = self
            .set
            .examples
            .iter()
            .map(|p| {
                Sequence::prompt_and_target(p.tokens.clone(), p.prompt_len)
                    .with_features(model.layout.slots(&p.features))
            })
            .collect();
        let scores = score_sequences(model.model, &sequences, batch_tokens)?;
        let mut nll = vec![(0.0f64, 0usize); self.set.cell_names.len()];
        for (p, score) in self.set.examples.iter().zip(&scores) {
            nll[p.cell].0 -= score.token_logprobs.iter().map(|&l| l as f64).sum::<f64>();
            nll[p.cell].1 += score.token_logprobs.len();
        }
        let mut eval: BTreeMap<String, CellEval> = BTreeMap::new();
        for (c, name) in self.set.cell_names.iter().enumerate() {
            let (sum, count) = nll[c];
            if !(sum / count.max(1) as f64).is_finite() {
                return Err(ModelError::Invalid(format!(
                    "step {step}: the eval loss of cell {name} is not finite"
                )));
            }
            eval.insert(
                name.clone(),
                CellEval {
                    loss: sum / count.max(1) as f64,
                    heldout: self.heldout[c],
                    examples: self.set.by_cell[c].len(),
                    exact_match: None,
                },
            );
        }
        if !self.decoded.is_empty() {
            let options = EvalOptions {
                max_new_tokens: self.spec.max_new_tokens,
                batch_tokens,
            };
            let result = evaluate_model(
                "eval",
                model,
                &self.decoded,
                &self.holdout,
                options,
                &TaskMetrics::by_name(),
            )?;
            for cell in &result.cells {
                if let Some(e) = eval.get_mut(&cell.cell) {
                    e.exact_match = Some(cell.exact_match());
                }
            }
        }
        Ok(EvalRecord {
            step,
            heldout_mean: cell_mean(&eval, true, |c| Some(c.loss)),
            supervised_mean: cell_mean(&eval, false, |c| Some(c.loss)),
            heldout_exact_match: cell_mean(&eval, true, |c| c.exact_match),
            supervised_exact_match: cell_mean(&eval, false, |c| c.exact_match),
            eval,
        })
    }
}
