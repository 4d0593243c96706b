//! `flix eval`: scores per cell of one or several trained runs, printed as a grid (rows: the
//! first feature type, e.g. languages; columns: the second, e.g. tasks; `*` marks held-out cells),
//! side by side, with the difference of the first two runs. `--metric` picks what the grid shows:
//! exact match (default), chrF, or accuracy (label tasks only; other cells show `-`). The JSON
//! output keeps every metric.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use flix_core::read_jsonl_files;
use flix_kernels::Device;
use flix_model::eval::{evaluate, CellScore, EvalOptions, EvalResult, Metric};
use flix_model::train::{load_trained, Holdout, TrainSpec};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run directories (or checkpoint directories) to evaluate.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// JSONL files to evaluate on.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// Held-out cells to mark; default: those of the first run's spec.json.
    #[arg(long)]
    pub holdout: Vec<String>,
    /// What the grid shows: exact, chrf or accuracy (label tasks).
    #[arg(long, default_value = "exact")]
    pub metric: Metric,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 4096)]
    pub batch_tokens: usize,
    /// Also write every result (per cell and per example) to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let device = Device::parse(&args.device)?;
    let holdout = if args.holdout.is_empty() {
        let spec_path = args.runs[0].join("spec.json");
        match std::fs::read_to_string(&spec_path) {
            Ok(text) => {
                serde_json::from_str::<TrainSpec>(&text)
                    .with_context(|| format!("reading {}", spec_path.display()))?
                    .holdout
            }
            Err(_) => Vec::new(),
        }
    } else {
        args.holdout.clone()
    };
    let holdout = Holdout::parse(&holdout)?;
    let options = EvalOptions {
        max_new_tokens: args.max_new_tokens,
        batch_tokens: args.batch_tokens,
    };
    let mut results = Vec::new();
    for dir in &args.runs {
        let trained =
            load_trained(dir, &device).with_context(|| format!("loading {}", dir.display()))?;
        let names = trained.layout.registry.type_names();
        let examples = read_jsonl_files(&args.data, &names)?;
        let name = dir.display().to_string();
        results.push(evaluate(&name, &trained, &examples, &holdout, options)?);
    }
    print!("{}", format_results(&results, args.metric));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
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
    let score = |row: &str, col: &str| -> Option<(Option<f64>, bool)> {
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
        Some((value(), cell.heldout))
    };
    let width = cols.iter().map(|c| c.len()).max().unwrap_or(0).max(7);
    let mut out = format!("{:8}", "");
    for c in &cols {
        out += &format!(" {c:>width$}");
    }
    out += "\n";
    for row in &rows {
        out += &format!("{row:8}");
        for col in &cols {
            let text = match score(row, col) {
                Some((v, held)) => {
                    let v = v.map_or("-".to_string(), |v| format!("{v:.1}"));
                    format!("{v}{}", if held { "*" } else { " " })
                }
                None => "-".to_string(),
            };
            out += &format!(" {text:>width$}");
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
    out
}
