//! `flix eval`: scores per cell of one or several trained runs on JSONL files or a mixture root's
//! test (or dev) split, printed as a grid (rows: the first feature type, e.g. languages; columns:
//! the second, e.g. tasks; `*` marks held-out cells, `?` cells with a feature value the run never
//! trained), side by side, with the difference of the first two runs, and a per-task table of
//! supervised and held-out means. `--metric` picks what the grid shows: exact match (default),
//! chrF, accuracy (label tasks only; other cells show `-`) or auto (each task's own metric). The
//! JSON output keeps every metric.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use flix_core::{read_jsonl_files, Example, Mixture, Split};
use flix_kernels::Device;
use flix_model::eval::{
    cells_by_task, evaluate_tasks, mean_over_kind, CellKind, CellScore, EvalOptions, EvalResult,
    Metric, TaskMetrics,
};
use flix_model::train::data::{cap_per_cell, cell_matches};
use flix_model::train::trainer::SPEC_FILE;
use flix_model::train::{Holdout, TrainSpec};

use crate::export::load_run;
use crate::train::holdout_specs;

use crate::text::{padded, Align};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run directories (or checkpoint directories) to evaluate.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// JSONL files to evaluate on.
    #[arg(long, num_args = 1.., required_unless_present = "mixture")]
    pub data: Vec<PathBuf>,
    /// A mixture root: evaluates every cell's --split file (`<task>/<lang>/test.jsonl`).
    #[arg(long)]
    pub mixture: Option<PathBuf>,
    /// The split of --mixture to evaluate: test or dev.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// At most this many examples per cell, spread evenly over each cell's file.
    #[arg(long)]
    pub max_eval_per_cell: Option<usize>,
    /// Held-out cells to mark; default: those of --split-file, else of the first run's spec.json.
    #[arg(long)]
    pub holdout: Vec<String>,
    /// Held-out cells from a split file (`{"heldout": [{"task": "ner", "lang": "hau"}, ...]}`).
    #[arg(long)]
    pub split_file: Option<PathBuf>,
    /// What the grid shows: exact, chrf, accuracy (label tasks), or auto (each task's own metric,
    /// from the mixture's tasks.json when present, else from the task's name).
    #[arg(long, default_value = "exact")]
    pub metric: Metric,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 4096)]
    pub batch_tokens: usize,
    /// Also write every result (per cell, per task and per example) to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The held-out cells a run records in its spec.json: none when the directory has no spec.json
/// (e.g. a checkpoint directory); a spec.json that cannot be read or parsed is an error.
pub fn recorded_holdout(run: &Path) -> Result<Vec<String>> {
    let spec_path = run.join(SPEC_FILE);
    match std::fs::read_to_string(&spec_path) {
        Ok(text) => Ok(serde_json::from_str::<TrainSpec>(&text)
            .with_context(|| format!("parsing {}", spec_path.display()))?
            .holdout),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "note: {} has no {SPEC_FILE}; no cell is marked held out (pass --holdout or \
                 --split-file)",
                run.display()
            );
            Ok(Vec::new())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", spec_path.display())),
    }
}

/// The evaluation examples: those of `data` files, then `split` of every cell of `mixture`,
/// each cell capped to its first `max_per_cell` examples.
pub fn eval_examples(
    data: &[PathBuf],
    mixture: Option<&Mixture>,
    split: Split,
    type_names: &[&str],
    max_per_cell: Option<usize>,
) -> Result<Vec<Example>> {
    if max_per_cell == Some(0) {
        bail!("--max-eval-per-cell must be >= 1");
    }
    let mut examples = read_jsonl_files(data, type_names)?;
    if let Some(m) = mixture {
        examples.extend(m.read(split, type_names, max_per_cell, |_| true)?);
    }
    if let Some(max) = max_per_cell {
        cap_per_cell(&mut examples, type_names, max);
    }
    if examples.is_empty() {
        bail!("no examples to evaluate");
    }
    Ok(examples)
}

/// The task metrics of an evaluation: from the mixture's tasks.json when it has one (under
/// `--metric auto` a metric text that is not understood is an error naming the task), else by
/// task name.
pub fn task_metrics(mixture: Option<&Mixture>, metric: Metric) -> Result<TaskMetrics> {
    let infos = match mixture {
        Some(m) => m.task_infos()?,
        None => None,
    };
    Ok(match infos {
        Some(infos) => TaskMetrics::from_descriptions(&infos, metric == Metric::Auto)?,
        None => TaskMetrics::by_name(),
    })
}

/// Warnings about what an evaluation of one run cannot show as asked: held-out cells without
/// evaluation examples, and cells with a feature value the run never trained (they count as
/// unseen, not supervised).
pub fn eval_warnings(result: &EvalResult, holdout: &Holdout) -> Vec<String> {
    let mut warnings = Vec::new();
    for cell in &holdout.cells {
        if !result.cells.iter().any(|c| cell_matches(cell, &c.features)) {
            warnings.push(format!(
                "{}: held-out cell {} has no evaluation examples",
                result.name,
                Holdout::cell_text(cell)
            ));
        }
    }
    if let Some(first) = result.skipped_long.first() {
        warnings.push(format!(
            "{}: skipped {} example(s) whose prompt leaves no room for an output in the model's \
             context (max_position_embeddings); they count in no cell (first: {first})",
            result.name,
            result.skipped_long.len()
        ));
    }
    let unseen: Vec<&str> = result
        .cells
        .iter()
        .filter(|c| c.kind() == CellKind::Unseen)
        .map(|c| c.cell.as_str())
        .collect();
    if !unseen.is_empty() {
        warnings.push(format!(
            "{}: {} cell(s) have a feature value the run never trained and count as unseen, not \
             supervised (marked ?): {}",
            result.name,
            unseen.len(),
            unseen.join(" ")
        ));
    }
    warnings
}

pub fn run(args: EvalArgs) -> Result<()> {
    let device = Device::parse(&args.device)?;
    let holdout = if !args.holdout.is_empty() || args.split_file.is_some() {
        holdout_specs(&args.holdout, args.split_file.as_deref())?
    } else {
        recorded_holdout(&args.runs[0])?
    };
    let holdout = Holdout::parse(&holdout)?;
    let mixture = match &args.mixture {
        Some(root) => Some(Mixture::open(root)?),
        None => None,
    };
    let tasks = task_metrics(mixture.as_ref(), args.metric)?;
    let options = EvalOptions {
        max_new_tokens: args.max_new_tokens,
        batch_tokens: args.batch_tokens,
    };
    let mut results = Vec::new();
    for dir in &args.runs {
        let trained = load_run(dir, &device)?;
        let names = trained.layout.registry.type_names();
        holdout.check_types(&names)?;
        let examples = eval_examples(
            &args.data,
            mixture.as_ref(),
            args.split,
            &names,
            args.max_eval_per_cell,
        )?;
        let name = dir.display().to_string();
        let result = evaluate_tasks(&name, &trained, &examples, &holdout, options, &tasks)?;
        for w in eval_warnings(&result, &holdout) {
            eprintln!("warning: {w}");
        }
        results.push(result);
    }
    print!("{}", format_results(&results, args.metric));
    if let Some(path) = &args.json {
        flix_core::write_atomic(path, serde_json::to_string_pretty(&results)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Every run's grid of `metric`, then the first run minus the second (e.g. FLix − LoRA given in
/// that order).
pub fn format_results(results: &[EvalResult], metric: Metric) -> String {
    let mut out = String::new();
    for r in results {
        out += &format!(
            "{} ({})\n{}\n",
            r.name,
            metric.title(),
            format_metric_grid(r, None, metric)
        );
    }
    if let [a, b, ..] = results {
        out += &format!(
            "{} minus {} ({})\n{}\n",
            a.name,
            b.name,
            metric.title(),
            format_metric_grid(a, Some(b), metric)
        );
    }
    out
}

/// The grid of exact match (%) of `r`, or of `r` minus `minus`.
pub fn format_grid(r: &EvalResult, minus: Option<&EvalResult>) -> String {
    format_metric_grid(r, minus, Metric::ExactMatch)
}

/// The grid of `metric` (%) of `r`, or of `r` minus `minus`. Rows are the values of the first
/// feature type, columns of the second; `*` marks held-out cells; `-` a cell without the metric;
/// margins give supervised and held-out means (over the cells that have the metric).
pub fn format_metric_grid(r: &EvalResult, minus: Option<&EvalResult>, metric: Metric) -> String {
    // Rows: languages when there is a `lang` type, else the first type; columns: the next type.
    let type_names: BTreeSet<&str> = r
        .cells
        .iter()
        .flat_map(|c| c.features.keys().map(String::as_str))
        .collect();
    let row_type = if type_names.contains("lang") {
        "lang"
    } else {
        type_names.first().copied().unwrap_or("-")
    };
    let col_type = type_names
        .iter()
        .copied()
        .find(|t| *t != row_type)
        .unwrap_or("-");
    let key = |c: &CellScore, t: &str| {
        c.features
            .get(t)
            .cloned()
            .unwrap_or_else(|| "-".to_string())
    };
    let (row_i, col_i) = (row_type, col_type);
    let rows: BTreeSet<String> = r.cells.iter().map(|c| key(c, row_i)).collect();
    let cols: BTreeSet<String> = r.cells.iter().map(|c| key(c, col_i)).collect();
    // A cell that exists: its value (None without the metric) and whether it is held out.
    let score = |row: &str, col: &str| -> Option<(Option<f64>, CellKind)> {
        let cell = r
            .cells
            .iter()
            .find(|c| key(c, row_i) == row && key(c, col_i) == col)?;
        let value = || {
            let v = cell.value(metric)?;
            let other = match minus {
                Some(m) => m
                    .cells
                    .iter()
                    .find(|c| c.cell == cell.cell)?
                    .value(metric)?,
                None => 0.0,
            };
            Some(100.0 * (v - other))
        };
        Some((value(), cell.kind()))
    };
    // Under each task's own metric, a second header line names the metric of each column.
    let column_metric = |col: &str| -> Option<&'static str> {
        (metric == Metric::Auto).then(|| {
            r.cells
                .iter()
                .find(|c| key(c, col_i) == col)
                .map_or("-", |c| c.own_metric().title())
        })
    };
    let width = cols
        .iter()
        .map(|c| c.len().max(column_metric(c).map_or(0, str::len)))
        .max()
        .unwrap_or(0)
        .max(7);
    let mut out = format!("{:8}", "");
    for c in &cols {
        out += &format!(" {}", padded(c, width, Align::Right));
    }
    out += "\n";
    if metric == Metric::Auto {
        out += &format!("{:8}", "");
        for c in &cols {
            out += &format!(
                " {}",
                padded(column_metric(c).unwrap_or("-"), width, Align::Right)
            );
        }
        out += "\n";
    }
    for row in &rows {
        out += &padded(row, 8, Align::Left);
        for col in &cols {
            let text = match score(row, col) {
                Some((v, kind)) => {
                    let v = v.map_or("-".to_string(), |v| format!("{v:.1}"));
                    format!("{v}{}", kind_mark(kind))
                }
                None => "-".to_string(),
            };
            out += &format!(" {}", padded(&text, width, Align::Right));
        }
        out += "\n";
    }
    let mean = |held: bool| -> Option<f64> {
        let a = r.mean_of(metric, held)?;
        Some(100.0 * (a - minus.map_or(Some(0.0), |m| m.mean_of(metric, held))?))
    };
    let fmt = |m: Option<f64>| m.map_or("-".to_string(), |v| format!("{v:.1}"));
    out += &format!(
        "supervised mean {}   held-out (*) mean {}\n",
        fmt(mean(false)),
        fmt(mean(true))
    );
    if r.cells.iter().any(|c| c.kind() == CellKind::Unseen) {
        out += "?: a feature value the run never trained (neither supervised nor held out)\n";
    }
    out += &format_task_table(r, minus, metric);
    out
}

/// The mark after a cell's value: `*` held out, `?` unseen, a space for supervised.
pub fn kind_mark(kind: CellKind) -> &'static str {
    match kind {
        CellKind::Supervised => " ",
        CellKind::HeldOut => "*",
        CellKind::Unseen => "?",
    }
}

/// One task's means (%) of a metric over its supervised and its held-out cells.
pub struct TaskRow {
    pub task: String,
    pub metric: String,
    pub supervised: Option<f64>,
    pub supervised_cells: usize,
    pub heldout: Option<f64>,
    pub heldout_cells: usize,
}

/// Per task (name order): `metric` (under [`Metric::Auto`], each task's own) averaged over the
/// task's supervised and held-out cells, each cell weighing the same; with `minus`, the
/// difference of the two runs' means over the cells both have.
pub fn task_rows(r: &EvalResult, minus: Option<&EvalResult>, metric: Metric) -> Vec<TaskRow> {
    cells_by_task(&r.cells)
        .into_iter()
        .map(|(task, cells)| {
            let of = |kind| {
                mean_over_kind(&cells, kind, |c| {
                    let v = c.value(metric)?;
                    let other = match minus {
                        Some(m) => m.cells.iter().find(|o| o.cell == c.cell)?.value(metric)?,
                        None => 0.0,
                    };
                    Some(100.0 * (v - other))
                })
            };
            let (supervised, supervised_cells) = of(CellKind::Supervised);
            let (heldout, heldout_cells) = of(CellKind::HeldOut);
            let metric = match metric {
                Metric::Auto => cells[0].own_metric().title().to_string(),
                other => other.title().to_string(),
            };
            TaskRow {
                task: task.to_string(),
                metric,
                supervised,
                supervised_cells,
                heldout,
                heldout_cells,
            }
        })
        .collect()
}

/// [`task_rows`] as a text table.
pub fn format_task_table(r: &EvalResult, minus: Option<&EvalResult>, metric: Metric) -> String {
    let rows = task_rows(r, minus, metric);
    let fmt = |m: Option<f64>, n: usize| m.map_or("-".to_string(), |v| format!("{v:.1} ({n})"));
    let task_w = rows.iter().map(|t| t.task.len()).max().unwrap_or(0).max(4);
    let metric_w = rows
        .iter()
        .map(|t| t.metric.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let line = |task: &str, metric: &str, supervised: &str, heldout: &str| {
        format!(
            "{}  {}  {}  {}\n",
            padded(task, task_w, Align::Left),
            padded(metric, metric_w, Align::Left),
            padded(supervised, 16, Align::Right),
            padded(heldout, 16, Align::Right)
        )
    };
    let mut out = line("task", "metric", "supervised (n)", "held-out (n)");
    for t in &rows {
        out += &line(
            &t.task,
            &t.metric,
            &fmt(t.supervised, t.supervised_cells),
            &fmt(t.heldout, t.heldout_cells),
        );
    }
    out
}
