//! Evaluation of greedy continuations per cell, with held-out cells marked: exact match and chrF
//! for every cell, and each task's own metric ([`task_metric`]: accuracy and macro-F1 for label
//! tasks, entity-span F1, token accuracy, frame exact match and intent accuracy). A cell with a
//! feature value the run never trained is marked unseen: it counts neither as supervised nor as
//! held out.

pub mod chrf;
pub mod greedy;
pub mod metrics;
pub mod periodic;
pub mod task_metric;

use std::collections::BTreeMap;

use flix_core::Example;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::length::{ContextLimit, Fit};
use crate::llama::LlamaModel;
use crate::tokenize::Tokenizer;
use crate::train::data::{cell_name, prompt_text};
use crate::train::{Holdout, Layout, Trained};
use chrf::ChrfStats;
use greedy::{greedy_decode, Prompt};
pub use metrics::{LabelTasks, Metric};
pub use task_metric::{TaskDescription, TaskEntry, TaskMetric, TaskMetrics, TaskStats};

/// The scores of one cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellScore {
    /// `lang=deu,task=date`.
    pub cell: String,
    /// The cell's feature values by type.
    pub features: BTreeMap<String, String>,
    pub heldout: bool,
    /// The cell has a feature value the run never trained (it was evaluated with that feature
    /// absent), so it is not a supervised cell.
    #[serde(default)]
    pub unseen: bool,
    /// Exactly matching outputs.
    pub correct: usize,
    pub total: usize,
    /// Corpus-level chrF of the cell, in [0, 100] (absent in results written before it existed).
    #[serde(default)]
    pub chrf: Option<f64>,
    /// Outputs equal to the gold label, for cells of label tasks only.
    #[serde(default)]
    pub label_correct: Option<usize>,
    /// The cell's task metric (absent in results written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_metric: Option<TaskMetric>,
    /// Named values in [0, 1]: `exact_match` and `chrf` for every cell, and those of the task
    /// metric (e.g. `accuracy` and `macro_f1`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, f64>,
}

/// What a cell is to the run that is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellKind {
    /// Trained on.
    Supervised,
    /// Held out of training (zero-shot), whether or not its values were trained in other cells.
    HeldOut,
    /// Not held out, but with a feature value the run never trained.
    Unseen,
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
            Metric::Auto => match self.task_metric {
                Some(m) => self.values.get(m.primary()).copied(),
                None => Some(self.exact_match()),
            },
        }
    }

    /// The metric [`Metric::Auto`] shows for this cell.
    pub fn own_metric(&self) -> TaskMetric {
        self.task_metric.unwrap_or(TaskMetric::Text)
    }

    pub fn kind(&self) -> CellKind {
        if self.heldout {
            CellKind::HeldOut
        } else if self.unseen {
            CellKind::Unseen
        } else {
            CellKind::Supervised
        }
    }

    /// The cell's task: its `task` value, else its whole name.
    pub fn task(&self) -> &str {
        self.features.get("task").unwrap_or(&self.cell)
    }
}

/// One task's means over its cells (each cell weighs the same) of its own metric, by kind of
/// cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub task: String,
    pub metric: TaskMetric,
    pub supervised_mean: Option<f64>,
    pub supervised_cells: usize,
    pub heldout_mean: Option<f64>,
    pub heldout_cells: usize,
    #[serde(default)]
    pub unseen_mean: Option<f64>,
    #[serde(default)]
    pub unseen_cells: usize,
}

/// The mean of some values, None for none.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// `cells` grouped by task, in task-name order.
pub fn cells_by_task<'a>(
    cells: impl IntoIterator<Item = &'a CellScore>,
) -> BTreeMap<&'a str, Vec<&'a CellScore>> {
    let mut tasks: BTreeMap<&str, Vec<&CellScore>> = BTreeMap::new();
    for c in cells {
        tasks.entry(c.task()).or_default().push(c);
    }
    tasks
}

/// The mean of `value` over the cells of `kind` that have one, and how many did; each cell
/// weighs the same.
pub fn mean_over_kind(
    cells: &[&CellScore],
    kind: CellKind,
    value: impl Fn(&CellScore) -> Option<f64>,
) -> (Option<f64>, usize) {
    let values: Vec<f64> = cells
        .iter()
        .filter(|c| c.kind() == kind)
        .filter_map(|c| value(c))
        .collect();
    (mean(&values), values.len())
}

/// Per task (in name order), the means of each task's own metric over supervised, held-out and
/// unseen cells.
pub fn task_summaries(cells: &[CellScore]) -> Vec<TaskSummary> {
    cells_by_task(cells)
        .into_iter()
        .map(|(task, cells)| {
            let of = |kind| mean_over_kind(&cells, kind, |c| c.value(Metric::Auto));
            let (supervised_mean, supervised_cells) = of(CellKind::Supervised);
            let (heldout_mean, heldout_cells) = of(CellKind::HeldOut);
            let (unseen_mean, unseen_cells) = of(CellKind::Unseen);
            TaskSummary {
                task: task.to_string(),
                metric: cells[0].own_metric(),
                supervised_mean,
                supervised_cells,
                heldout_mean,
                heldout_cells,
                unseen_mean,
                unseen_cells,
            }
        })
        .collect()
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
    /// Per task: its metric and its supervised and held-out means ([`task_summaries`]).
    #[serde(default)]
    pub tasks: Vec<TaskSummary>,
    /// Examples left out because their prompt leaves no room for an output in the model's
    /// context (`file:line` each); they count in no cell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_long: Vec<String>,
}

impl EvalResult {
    /// Mean exact match over cells (each cell weighs the same) that are held out or not.
    pub fn mean(&self, heldout: bool) -> Option<f64> {
        self.mean_of(Metric::ExactMatch, heldout)
    }

    /// Mean of `metric` (as a fraction) over the held-out cells, or over the supervised ones
    /// (unseen cells are neither), that have it.
    pub fn mean_of(&self, metric: Metric, heldout: bool) -> Option<f64> {
        let kind = if heldout {
            CellKind::HeldOut
        } else {
            CellKind::Supervised
        };
        let scores: Vec<f64> = self
            .cells
            .iter()
            .filter(|c| c.kind() == kind)
            .filter_map(|c| c.value(metric))
            .collect();
        mean(&scores)
    }
}

/// Decoding limits of an evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalOptions {
    pub max_new_tokens: usize,
    pub batch_tokens: usize,
}

/// Greedy-decodes every example under `trained` (features of unknown values are absent, as in
/// serving) and scores each cell: exact match (whitespace at the ends ignored), chrF, and the
/// task's own metric as [`TaskMetrics::by_name`] picks it.
pub fn evaluate(
    name: &str,
    trained: &Trained,
    examples: &[Example],
    holdout: &Holdout,
    options: EvalOptions,
) -> Result<EvalResult> {
    evaluate_tasks(
        name,
        trained,
        examples,
        holdout,
        options,
        &TaskMetrics::by_name(),
    )
}

/// [`evaluate`] with the task metrics `tasks` (e.g. from a mixture's task descriptions).
pub fn evaluate_tasks(
    name: &str,
    trained: &Trained,
    examples: &[Example],
    holdout: &Holdout,
    options: EvalOptions,
    tasks: &TaskMetrics,
) -> Result<EvalResult> {
    let model = Model {
        model: &trained.model,
        layout: &trained.layout,
        tokenizer: &trained.tokenizer,
    };
    evaluate_model(name, model, examples, holdout, options, tasks)
}

/// A model to evaluate: weights (with adapters), their layout, the tokenizer; borrowed from a
/// loaded checkpoint or from a trainer in the middle of its run.
#[derive(Clone, Copy)]
pub struct Model<'a> {
    pub model: &'a LlamaModel,
    pub layout: &'a Layout,
    pub tokenizer: &'a Tokenizer,
}

/// The running counts of one cell.
struct CellCounts {
    score: CellScore,
    chrf: ChrfStats,
    task: Option<TaskStats>,
}

/// [`evaluate_tasks`] on a borrowed model. Gold targets are checked against their task's metric
/// before decoding (a malformed one is an error naming its file and line).
pub fn evaluate_model(
    name: &str,
    model: Model,
    examples: &[Example],
    holdout: &Holdout,
    options: EvalOptions,
    tasks: &TaskMetrics,
) -> Result<EvalResult> {
    let registry = &model.layout.registry;
    let type_names = registry.type_names();
    let tok = model.tokenizer;
    let task_entries = tasks.resolve(examples)?;
    // A prompt must leave room for one new token; longer ones are skipped and reported (and
    // giant ones are not even tokenized).
    let room = ContextLimit::new(model.model.config.max_position_embeddings.saturating_sub(1));
    let mut kept = Vec::with_capacity(examples.len());
    let mut prompts = Vec::with_capacity(examples.len());
    let mut skipped_long = Vec::new();
    for ex in examples {
        match tok.encode_within(&prompt_text(ex, &type_names), "", None, room, false)? {
            Fit::Fits(prompt) => {
                let features = registry.encode_inference(ex);
                prompts.push(Prompt {
                    tokens: prompt.tokens,
                    slots: model.layout.slots(&features),
                });
                kept.push(ex);
            }
            Fit::TooLong(_) => skipped_long.push(ex.location.to_string()),
        }
    }
    if kept.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{name}: all {} examples have a prompt longer than {} allows (one position is \
             needed for the output; first: {})",
            examples.len(),
            ContextLimit::new(model.model.config.max_position_embeddings).describe(),
            skipped_long.first().map_or("-", String::as_str)
        )));
    }
    let outputs = greedy_decode(
        model.model,
        model.layout,
        &prompts,
        tok.eos_id()?,
        options.max_new_tokens,
        options.batch_tokens,
    )?;
    let mut cells: Vec<CellCounts> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut predictions = Vec::with_capacity(examples.len());
    for (ex, out) in kept.into_iter().zip(outputs) {
        let output = tok.decode(&out)?;
        let cell = cell_name(ex, &type_names);
        let i = match index.get(&cell) {
            Some(&i) => i,
            None => {
                let entry = task_entries.get(&metrics::task_key(ex));
                let metric = entry.map_or(TaskMetric::Text, |e| e.metric);
                let labels = entry.and_then(|e| e.labels.clone()).unwrap_or_default();
                let unseen = registry.types().iter().any(|t| {
                    ex.features
                        .get(t.name())
                        .is_some_and(|v| t.id_of(v).is_none())
                });
                cells.push(CellCounts {
                    score: CellScore {
                        cell: cell.clone(),
                        features: ex.features.clone(),
                        heldout: holdout.contains(ex),
                        unseen,
                        correct: 0,
                        total: 0,
                        chrf: None,
                        label_correct: None,
                        task_metric: Some(metric),
                        values: BTreeMap::new(),
                    },
                    chrf: ChrfStats::default(),
                    task: TaskStats::new(metric, labels),
                });
                index.insert(cell.clone(), cells.len() - 1);
                cells.len() - 1
            }
        };
        let counts = &mut cells[i];
        counts.score.total += 1;
        if output.trim() == ex.target.trim() {
            counts.score.correct += 1;
        }
        counts.chrf.add(&ChrfStats::sentence(&output, &ex.target));
        if let Some(task) = &mut counts.task {
            task.add(&ex.target, &output);
        }
        predictions.push(Prediction {
            cell,
            input: ex.input.clone(),
            target: ex.target.clone(),
            output,
        });
    }
    let cells: Vec<CellScore> = cells
        .into_iter()
        .map(|counts| {
            let mut score = counts.score;
            let chrf = counts.chrf.score();
            score.chrf = Some(chrf);
            score
                .values
                .insert(task_metric::value::EXACT_MATCH.into(), score.exact_match());
            score
                .values
                .insert(task_metric::value::CHRF.into(), chrf / 100.0);
            if let Some(task) = &counts.task {
                score.values.extend(task.values());
                if let TaskStats::Accuracy { stats, .. } = task {
                    score.label_correct = Some(stats.correct);
                }
            }
            score
        })
        .collect();
    Ok(EvalResult {
        name: name.to_string(),
        tasks: task_summaries(&cells),
        cells,
        predictions,
        skipped_long,
    })
}
