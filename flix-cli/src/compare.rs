//! `flix compare`: FLix against compute-matched LoRA (rank Σ_k r_k) and `flix+shared` on one base
//! model and one mixture, over several seeds, through the same training and evaluation code as
//! `flix train` and `flix eval`.
//!
//! Every method gets the same data, held-out cells, steps, token budget and seeds, and the same
//! learning rate unless `--lr` gives one per method (each method at its own best rate, chosen on
//! the supervised cells' dev split, is the fair comparison when the methods' best rates differ).
//! All runs are evaluated on the same test examples with each task's own metric. `--out DIR`
//! receives:
//!
//! - `runs/<method>-seed<N>/`: each run's directory (spec.json, checkpoints, metrics.jsonl) and
//!   its evaluation (`eval.json`);
//! - `results.json`: per method, seed and cell, the metric values and the held-out flag; and the
//!   per-task table's numbers;
//! - `grid.txt`: each seed's grids (each task's metric; the first method minus the second);
//! - `summary.md`: per task, supervised and held-out (zero-shot) means ± standard deviation over
//!   seeds for each method, and FLix − LoRA (also printed);
//! - `report.html`: loss curves, heatmaps and per-task tables of the first seed, and the summary.
//!
//! It resumes: a finished run (method, seed) with the same settings is not retrained and its
//! saved evaluation is reused; a killed run continues from its latest checkpoint.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use flix_core::write_atomic;
use flix_core::{FeatureConfig, Mixture, Split, TypeDefaults};
use flix_kernels::Device;
use flix_model::eval::{
    evaluate_tasks, mean, CellKind, EvalOptions, EvalResult, Metric, TaskMetric,
};
use flix_model::train::checkpoint::{latest_checkpoint, read_state};
use flix_model::train::data::training_examples;
use flix_model::train::trainer::SPEC_FILE;
use flix_model::train::{Holdout, Method, TrainSpec, Trainer};
use serde::{Deserialize, Serialize};

use crate::demo_claim::MeanStd;
use crate::eval::{eval_examples, eval_warnings, format_results, task_metrics};
use crate::export::load_run;
use crate::report::{html_escape, write_report_page};
use crate::train::{holdout_specs, run_with_progress};

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The base model: a Hugging Face directory (config.json, safetensors weights,
    /// tokenizer.json) or a GGUF file.
    #[arg(long)]
    pub base: PathBuf,
    /// A mixture root: trains on every cell's train.jsonl, evaluates every cell's --split file.
    #[arg(long, required_unless_present = "data")]
    pub mixture: Option<PathBuf>,
    /// JSONL training files (instead of, or beside, --mixture).
    #[arg(long, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// JSONL evaluation files (with --data; beside the mixture's --split files).
    #[arg(long, num_args = 1..)]
    pub test_data: Vec<PathBuf>,
    /// Held-out cells from a split file (`{"heldout": [{"task": "ner", "lang": "hau"}, ...]}`).
    #[arg(long)]
    pub split_file: Option<PathBuf>,
    /// Held-out cells, e.g. `--holdout lang=sw,task=ner` (beside --split-file).
    #[arg(long)]
    pub holdout: Vec<String>,
    /// Where runs, results.json, grid.txt, summary.md and report.html go.
    #[arg(long)]
    pub out: PathBuf,
    /// Methods to train, comma-separated, in table order (the first minus the second in grids).
    #[arg(long, value_delimiter = ',', default_value = "flix,lora,flix+shared")]
    pub methods: Vec<String>,
    /// Seeds 0..N for every method.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Feature types, comma-separated.
    #[arg(long, default_value = "lang,task", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Rank of every feature type (`8`), or per type (`lang=4,task=8`); LoRA gets their sum.
    #[arg(long, default_value = "8")]
    pub rank: String,
    /// Alpha of every feature type (its adapter's scale is alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f64,
    /// Feature dropout probability of every type.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Rank of flix+shared's always-on adapter (default: the largest feature type rank).
    #[arg(long)]
    pub shared_rank: Option<usize>,
    /// Optimizer steps of every run.
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    /// Peak learning rate of every run (`1e-3`), or per method (`flix=5e-4,lora=1e-3`).
    #[arg(long, default_value = "1e-3")]
    pub lr: String,
    /// Warmup steps of every run.
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// Tokens per step (examples are added while they fit), the same for every method.
    #[arg(long, default_value_t = 2048)]
    pub batch_tokens: usize,
    /// Steps between checkpoints: a killed run resumes from its latest one.
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: u64,
    /// At most this many training examples per cell, spread evenly over each cell's file.
    #[arg(long)]
    pub max_train_per_cell: Option<usize>,
    /// At most this many test examples per cell, spread evenly over each cell's file.
    #[arg(long)]
    pub max_eval_per_cell: Option<usize>,
    /// The split of --mixture to evaluate: test or dev.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Most new tokens greedy decoding generates per test example.
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// One run of the comparison.
struct RunPlan {
    method: String,
    seed: u64,
    dir: PathBuf,
    spec: TrainSpec,
}

/// What an evaluation depends on besides the weights: a saved one is reused only when this
/// matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct EvalSettings {
    step: u64,
    mixture: Option<PathBuf>,
    split: String,
    test_data: Vec<PathBuf>,
    holdout: Vec<String>,
    max_eval_per_cell: Option<usize>,
    max_new_tokens: usize,
}

#[derive(Serialize, Deserialize)]
struct SavedEval {
    settings: EvalSettings,
    result: EvalResult,
}

const EVAL_FILE: &str = "eval.json";

/// One cell of one run, as results.json lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    pub method: String,
    pub seed: u64,
    pub task: String,
    pub cell: String,
    pub features: BTreeMap<String, String>,
    pub heldout: bool,
    pub unseen: bool,
    /// Supervised, held out, or unseen (a feature value the run never trained).
    pub kind: CellKind,
    /// The task's metric and its value (a fraction), then every value of the cell.
    pub metric: TaskMetric,
    pub value: Option<f64>,
    pub values: BTreeMap<String, f64>,
    pub examples: usize,
}

/// Mean ± standard deviation over seeds (in %) of one method on one task's cells of one kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedStats {
    /// Per seed, the mean over the task's cells (in %).
    pub per_seed: Vec<f64>,
    pub mean: f64,
    /// Sample standard deviation (0 for one seed).
    pub std: f64,
}

/// One row of the per-task table (or of the per-cell table of held-out cells).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskTableRow {
    /// A task, or `all tasks` (per seed, the mean of the task means); a cell in the per-cell
    /// table.
    pub task: String,
    pub metric: String,
    pub cells: usize,
    /// Method → its statistics (methods without cells of this kind are absent).
    pub methods: BTreeMap<String, SeedStats>,
    /// FLix mean − LoRA mean, when both ran.
    pub flix_minus_lora: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareResults {
    pub base: PathBuf,
    pub mixture: Option<PathBuf>,
    pub methods: Vec<String>,
    pub seeds: Vec<u64>,
    pub steps: u64,
    /// Each method's peak learning rate.
    #[serde(default)]
    pub lr: BTreeMap<String, f64>,
    pub holdout: Vec<String>,
    pub records: Vec<CellRecord>,
    pub supervised: Vec<TaskTableRow>,
    pub heldout: Vec<TaskTableRow>,
    /// The held-out cells one by one: where a difference on held-out cells comes from.
    #[serde(default)]
    pub heldout_cells: Vec<TaskTableRow>,
}

/// The name of the row that averages every task.
pub const ALL_TASKS: &str = "all tasks";

/// The learning rate of each method of `methods` (by its canonical name): `1e-3` (every method)
/// or `flix=5e-4,lora=1e-3` (each method named once, and only methods of `methods`).
fn method_lrs(text: &str, methods: &[String]) -> Result<BTreeMap<String, f64>> {
    let canonical =
        |name: &str| -> Result<String> { Ok(name.parse::<Method>()?.name().to_string()) };
    let valid = |lr: f64, what: &str| -> Result<f64> {
        if !(lr.is_finite() && lr > 0.0) {
            bail!("--lr {text:?}: {what} must be a finite number > 0");
        }
        Ok(lr)
    };
    let wanted: Vec<String> = methods
        .iter()
        .map(|m| canonical(m))
        .collect::<Result<_>>()?;
    if let Ok(lr) = text.trim().parse::<f64>() {
        let lr = valid(lr, "the learning rate")?;
        return Ok(wanted.into_iter().map(|m| (m, lr)).collect());
    }
    let names = NamedValues {
        flag: "--lr",
        text,
        expected: "a rate or method=rate,method=rate",
        names_flag: "--methods",
        names: &wanted,
        what: "learning rate",
    };
    names.parse(canonical, |name, value| {
        let lr: f64 = value
            .parse()
            .with_context(|| format!("--lr {text:?}: {value:?} is not a learning rate"))?;
        valid(lr, name)
    })
}

/// Per-type ranks: `8` (every type) or `lang=4,task=8`.
fn type_ranks(text: &str, types: &[String]) -> Result<(usize, BTreeMap<String, usize>)> {
    if let Ok(rank) = text.trim().parse::<usize>() {
        return Ok((rank, BTreeMap::new()));
    }
    let names = NamedValues {
        flag: "--rank",
        text,
        expected: "N or type=N,type=N",
        names_flag: "--types",
        names: types,
        what: "rank",
    };
    let ranks = names.parse(
        |name| Ok(name.to_string()),
        |_, value| {
            value
                .parse()
                .with_context(|| format!("--rank {text:?}: {value:?} is not a rank"))
        },
    )?;
    let default = ranks.values().copied().max().unwrap_or(1);
    Ok((default, ranks))
}

/// An option's `name=value,name=value` form, in which each of `names` (the values of
/// `names_flag`) gets its `what` exactly once.
struct NamedValues<'a> {
    flag: &'a str,
    text: &'a str,
    expected: &'a str,
    names_flag: &'a str,
    names: &'a [String],
    what: &'a str,
}

impl NamedValues<'_> {
    /// Every name's value: each part's name through `canonical`, its value through `value`
    /// (given the canonical name and the trimmed text).
    fn parse<T>(
        &self,
        canonical: impl Fn(&str) -> Result<String>,
        value: impl Fn(&str, &str) -> Result<T>,
    ) -> Result<BTreeMap<String, T>> {
        let (flag, text) = (self.flag, self.text);
        let mut values = BTreeMap::new();
        for part in text.split(',') {
            let (name, v) = part
                .split_once('=')
                .with_context(|| format!("{flag} {text:?}: expected {}", self.expected))?;
            let name = canonical(name.trim()).with_context(|| format!("{flag} {text:?}"))?;
            if !self.names.contains(&name) {
                bail!(
                    "{flag} {text:?}: {name} is not one of {} ({})",
                    self.names_flag,
                    self.names.join(",")
                );
            }
            let v = value(&name, v.trim())?;
            if values.insert(name.clone(), v).is_some() {
                bail!("{flag} {text:?} names {name} twice");
            }
        }
        let missing: Vec<&str> = self
            .names
            .iter()
            .filter(|n| !values.contains_key(*n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            bail!(
                "{flag} {text:?} gives no {} to {}",
                self.what,
                missing.join(", ")
            );
        }
        Ok(values)
    }
}

impl CompareArgs {
    fn features(&self) -> Result<FeatureConfig> {
        let (default_rank, ranks) = type_ranks(&self.rank, &self.types)?;
        let names: Vec<&str> = self.types.iter().map(String::as_str).collect();
        let mut config = FeatureConfig::discovered(
            &names,
            TypeDefaults {
                rank: default_rank,
                alpha: self.alpha,
                dropout: self.dropout,
            },
        );
        for t in &mut config.types {
            t.rank = ranks.get(&t.name).copied();
        }
        config.validate("--rank/--alpha/--dropout")?;
        Ok(config)
    }

    /// Every (method, seed) run, with the one spec that differs only in method and seed.
    fn plans(&self, holdout: &[String]) -> Result<Vec<RunPlan>> {
        if self.seeds == 0 {
            bail!("--seeds must be >= 1");
        }
        if self.methods.is_empty() {
            bail!("--methods names no method");
        }
        let features = self.features()?;
        let lrs = method_lrs(&self.lr, &self.methods)?;
        let mut plans = Vec::new();
        for seed in 0..self.seeds {
            for name in &self.methods {
                let method: Method = name.parse()?;
                let mut spec = TrainSpec::new(
                    self.base.clone(),
                    self.data.clone(),
                    features.clone(),
                    method,
                );
                spec.mixture = self.mixture.clone();
                spec.max_train_per_cell = self.max_train_per_cell;
                spec.holdout = holdout.to_vec();
                // LoRA is compute-matched: its rank is the active rank of a FLix example.
                spec.match_compute = method == Method::Lora;
                spec.shared_rank = self.shared_rank;
                spec.steps = self.steps;
                spec.lr = lrs[method.name()];
                spec.warmup_steps = self.warmup;
                spec.batch_tokens = self.batch_tokens;
                spec.checkpoint_every = self.checkpoint_every;
                spec.seed = seed;
                spec.device = self.device.clone();
                spec.validate()?;
                plans.push(RunPlan {
                    method: method.name().to_string(),
                    seed,
                    dir: self
                        .out
                        .join("runs")
                        .join(format!("{}-seed{seed}", method.name())),
                    spec,
                });
            }
        }
        Ok(plans)
    }
}

/// Trains `plan` to its last step, resuming what an earlier invocation left: a finished run is
/// kept, a killed one continues from its latest checkpoint, one without a checkpoint starts
/// again. A run directory holding checkpoints of other settings is an error (nothing is
/// overwritten).
fn train(plan: &RunPlan) -> Result<u64> {
    let label = format!("{} seed {}", plan.method, plan.seed);
    let Some(checkpoint) = latest_checkpoint(&plan.dir)? else {
        let mut trainer = Trainer::new(plan.spec.clone(), &plan.dir)?;
        run_with_progress(&mut trainer, &label)?;
        return Ok(trainer.step);
    };
    let spec_path = plan.dir.join(SPEC_FILE);
    let text = std::fs::read_to_string(&spec_path)
        .with_context(|| format!("reading {}", spec_path.display()))?;
    let saved: TrainSpec =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", spec_path.display()))?;
    // The saved spec holds absolute paths and the base's fingerprint (checked by the resume
    // itself); compare the settings in that form.
    let mut wanted = plan.spec.clone().with_absolute_paths()?;
    wanted.base_fingerprint = saved.base_fingerprint.clone();
    if saved != wanted {
        bail!(
            "{} holds a run with other settings; choose another --out or remove it",
            plan.dir.display()
        );
    }
    let step = read_state(&checkpoint)?.step;
    if step >= plan.spec.steps {
        eprintln!("{label}: finished earlier ({step} steps); kept");
        return Ok(step);
    }
    eprintln!("{label}: resuming from step {step}");
    let mut trainer = Trainer::resume(&plan.dir)?;
    run_with_progress(&mut trainer, &label)?;
    Ok(trainer.step)
}

pub fn run(args: CompareArgs) -> Result<()> {
    let device = Device::parse(&args.device)?;
    if args.mixture.is_none() && args.test_data.is_empty() {
        bail!("--test-data is required without --mixture");
    }
    let holdout_list = holdout_specs(&args.holdout, args.split_file.as_deref())?;
    let holdout = Holdout::parse(&holdout_list)?;
    let plans = args.plans(&holdout_list)?;
    // Everything that can be wrong with the evaluation data is found before any training.
    let mixture = match &args.mixture {
        Some(root) => Some(Mixture::open(root)?),
        None => None,
    };
    let tasks = task_metrics(mixture.as_ref(), Metric::Auto)?;
    let type_names: Vec<&str> = args.types.iter().map(String::as_str).collect();
    holdout.check_types(&type_names)?;
    let examples = eval_examples(
        &args.test_data,
        mixture.as_ref(),
        args.split,
        &type_names,
        args.max_eval_per_cell,
    )?;
    tasks.resolve(&examples)?;
    // The training data (and the held-out cells against it) too: every run reads the same.
    if let Some(first) = plans.first() {
        training_examples(&first.spec)?;
    }
    std::fs::create_dir_all(args.out.join("runs"))
        .with_context(|| format!("creating {}", args.out.display()))?;

    let options = EvalOptions {
        max_new_tokens: args.max_new_tokens,
        batch_tokens: 4096,
    };
    let mut results: Vec<(String, u64, EvalResult)> = Vec::new();
    for plan in &plans {
        let step = train(plan)?;
        let settings = EvalSettings {
            step,
            mixture: args.mixture.clone(),
            split: args.split.to_string(),
            test_data: args.test_data.clone(),
            holdout: holdout_list.clone(),
            max_eval_per_cell: args.max_eval_per_cell,
            max_new_tokens: args.max_new_tokens,
        };
        let eval_path = plan.dir.join(EVAL_FILE);
        let saved = std::fs::read_to_string(&eval_path)
            .ok()
            .and_then(|text| serde_json::from_str::<SavedEval>(&text).ok())
            .filter(|s| s.settings == settings);
        let result = match saved {
            Some(saved) => saved.result,
            None => {
                let trained = load_run(&plan.dir, &device)?;
                let name = format!("{} seed {}", plan.method, plan.seed);
                let result = evaluate_tasks(&name, &trained, &examples, &holdout, options, &tasks)?;
                let saved = SavedEval { settings, result };
                write_atomic(&eval_path, serde_json::to_string_pretty(&saved)?.as_bytes())?;
                saved.result
            }
        };
        for w in eval_warnings(&result, &holdout) {
            eprintln!("warning: {w}");
        }
        results.push((plan.method.clone(), plan.seed, result));
    }

    let seeds: Vec<u64> = (0..args.seeds).collect();
    let methods: Vec<String> = plans
        .iter()
        .filter(|p| p.seed == 0)
        .map(|p| p.method.clone())
        .collect();
    let records = cell_records(&results);
    let compare = CompareResults {
        base: args.base.clone(),
        mixture: args.mixture.clone(),
        supervised: task_table(&records, &methods, &seeds, CellKind::Supervised),
        heldout: task_table(&records, &methods, &seeds, CellKind::HeldOut),
        heldout_cells: cell_table(&records, &methods, &seeds, CellKind::HeldOut),
        methods,
        seeds,
        steps: args.steps,
        lr: plans
            .iter()
            .map(|p| (p.method.clone(), p.spec.lr))
            .collect(),
        holdout: holdout_list,
        records,
    };
    let write = |name: &str, text: &str| -> Result<()> {
        Ok(write_atomic(&args.out.join(name), text.as_bytes())?)
    };
    write("results.json", &serde_json::to_string_pretty(&compare)?)?;

    let mut grids = String::new();
    for &seed in &compare.seeds {
        let of_seed: Vec<EvalResult> = results
            .iter()
            .filter(|(_, s, _)| *s == seed)
            .map(|(_, _, r)| r.clone())
            .collect();
        grids += &format_results(&of_seed, Metric::Auto);
    }
    write("grid.txt", &grids)?;
    let summary = summary_markdown(&compare);
    write("summary.md", &summary)?;
    let first_seed: Vec<(String, PathBuf)> = plans
        .iter()
        .filter(|p| p.seed == 0)
        .map(|p| (p.method.clone(), p.dir.clone()))
        .collect();
    let first_evals: Vec<EvalResult> = results
        .iter()
        .filter(|(_, s, _)| *s == 0)
        .map(|(_, _, r)| r.clone())
        .collect();
    write_report_page(
        &args.out.join("report.html"),
        &first_seed,
        &first_evals,
        Metric::Auto,
        &summary_html(&compare),
    )?;
    println!("{summary}");
    eprintln!("results in {}", args.out.display());
    Ok(())
}

/// Every cell of every run, flat.
fn cell_records(results: &[(String, u64, EvalResult)]) -> Vec<CellRecord> {
    results
        .iter()
        .flat_map(|(method, seed, r)| {
            r.cells.iter().map(move |c| CellRecord {
                method: method.clone(),
                seed: *seed,
                task: c.task().to_string(),
                cell: c.cell.clone(),
                features: c.features.clone(),
                heldout: c.heldout,
                unseen: c.unseen,
                kind: c.kind(),
                metric: c.own_metric(),
                value: c.value(Metric::Auto),
                values: c.values.clone(),
                examples: c.total,
            })
        })
        .collect()
}

/// Per task (and over all tasks), each method's mean ± std over seeds of the mean over the
/// task's cells of `kind` of the task's metric, in %.
pub fn task_table(
    records: &[CellRecord],
    methods: &[String],
    seeds: &[u64],
    kind: CellKind,
) -> Vec<TaskTableRow> {
    let mut tasks: BTreeMap<&str, (TaskMetric, Vec<&CellRecord>)> = BTreeMap::new();
    for r in records.iter().filter(|r| r.kind == kind) {
        tasks
            .entry(r.task.as_str())
            .or_insert((r.metric, Vec::new()))
            .1
            .push(r);
    }
    // Per method and seed: the task means, for the all-tasks row.
    let mut task_means: BTreeMap<(&str, u64), Vec<f64>> = BTreeMap::new();
    let mut rows = Vec::new();
    for (task, (metric, recs)) in &tasks {
        let mut stats = BTreeMap::new();
        for method in methods {
            let per_seed: Vec<f64> = seeds
                .iter()
                .filter_map(|&seed| {
                    let values: Vec<f64> = recs
                        .iter()
                        .filter(|r| &r.method == method && r.seed == seed)
                        .filter_map(|r| r.value)
                        .map(|v| 100.0 * v)
                        .collect();
                    let m = mean(&values)?;
                    task_means.entry((method, seed)).or_default().push(m);
                    Some(m)
                })
                .collect();
            if let Some(s) = seed_stats(per_seed) {
                stats.insert(method.clone(), s);
            }
        }
        let cells = recs
            .iter()
            .map(|r| r.cell.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        rows.push(TaskTableRow {
            task: task.to_string(),
            metric: metric.title().to_string(),
            cells,
            flix_minus_lora: difference(&stats),
            methods: stats,
        });
    }
    if !rows.is_empty() {
        let mut stats = BTreeMap::new();
        for method in methods {
            let per_seed: Vec<f64> = seeds
                .iter()
                .filter_map(|&seed| mean(task_means.get(&(method.as_str(), seed))?))
                .collect();
            if let Some(s) = seed_stats(per_seed) {
                stats.insert(method.clone(), s);
            }
        }
        rows.push(TaskTableRow {
            task: ALL_TASKS.to_string(),
            metric: "mean of the tasks".to_string(),
            cells: rows.iter().map(|r| r.cells).sum(),
            flix_minus_lora: difference(&stats),
            methods: stats,
        });
    }
    rows
}

/// Per cell of `kind`, each method's mean ± std over seeds of the cell's metric, in %.
pub fn cell_table(
    records: &[CellRecord],
    methods: &[String],
    seeds: &[u64],
    kind: CellKind,
) -> Vec<TaskTableRow> {
    let mut cells: BTreeMap<&str, Vec<&CellRecord>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.kind == kind) {
        cells.entry(r.cell.as_str()).or_default().push(r);
    }
    cells
        .into_iter()
        .map(|(cell, recs)| {
            let mut stats = BTreeMap::new();
            for method in methods {
                let per_seed: Vec<f64> = seeds
                    .iter()
                    .filter_map(|&seed| {
                        recs.iter()
                            .find(|r| &r.method == method && r.seed == seed)
                            .and_then(|r| r.value)
                            .map(|v| 100.0 * v)
                    })
                    .collect();
                if let Some(s) = seed_stats(per_seed) {
                    stats.insert(method.clone(), s);
                }
            }
            TaskTableRow {
                task: cell.to_string(),
                metric: recs[0].metric.title().to_string(),
                cells: 1,
                flix_minus_lora: difference(&stats),
                methods: stats,
            }
        })
        .collect()
}

fn seed_stats(per_seed: Vec<f64>) -> Option<SeedStats> {
    if per_seed.is_empty() {
        return None;
    }
    let s = MeanStd::of(&per_seed);
    Some(SeedStats {
        per_seed,
        mean: s.mean,
        std: s.std,
    })
}

fn difference(stats: &BTreeMap<String, SeedStats>) -> Option<f64> {
    Some(stats.get("flix")?.mean - stats.get("lora")?.mean)
}

/// `12.3 ± 0.4`, the form summary.md and the terminal show.
pub fn format_stats(s: &SeedStats) -> String {
    format!("{:.1} ± {:.1}", s.mean, s.std)
}

/// The per-task tables as Markdown.
pub fn summary_markdown(c: &CompareResults) -> String {
    let mut md = format!(
        "# FLix compare\n\nBase {}; {} seed(s) ({}); {} steps; learning rate {}; held-out cells: \
         {}.\n\
         Values in %: each task's metric, averaged over the task's cells, then mean ± standard \
         deviation over seeds.\n",
        c.base.display(),
        c.seeds.len(),
        c.seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        c.steps,
        learning_rates(&c.lr),
        if c.holdout.is_empty() {
            "none".to_string()
        } else {
            c.holdout.join(" ")
        }
    );
    for (title, first, rows) in [
        ("Supervised cells", "task", &c.supervised),
        ("Held-out (zero-shot) cells", "task", &c.heldout),
        ("Held-out cells one by one", "cell", &c.heldout_cells),
    ] {
        md += &format!("\n## {title}\n\n");
        if rows.is_empty() {
            md += "No cells.\n";
            continue;
        }
        md += &format!("| {first} | metric | cells |");
        for m in &c.methods {
            md += &format!(" {m} |");
        }
        md += " FLix − LoRA |\n|---|---|---|";
        md += &"---|".repeat(c.methods.len() + 1);
        md += "\n";
        for row in rows.iter() {
            md += &format!("| {} | {} | {} |", row.task, row.metric, row.cells);
            for m in &c.methods {
                md += &format!(
                    " {} |",
                    row.methods.get(m).map_or("-".to_string(), format_stats)
                );
            }
            md += &format!(
                " {} |\n",
                row.flix_minus_lora
                    .map_or("-".to_string(), |d| format!("{d:+.1}"))
            );
        }
    }
    md
}

/// `1e-3` when every method has that rate, else `flix 5e-4, lora 1e-3`.
fn learning_rates(lrs: &BTreeMap<String, f64>) -> String {
    let mut rates = lrs.values();
    match rates.next() {
        None => "-".to_string(),
        Some(first) if rates.all(|lr| lr == first) => format!("{first:e}"),
        Some(_) => lrs
            .iter()
            .map(|(m, lr)| format!("{m} {lr:e}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The per-task tables as HTML, for the report.
fn summary_html(c: &CompareResults) -> String {
    let mut html = format!(
        "<h2>Per task, {} seed(s): mean ± standard deviation (%)</h2>\n",
        c.seeds.len()
    );
    for (title, first, rows) in [
        ("Supervised cells", "task", &c.supervised),
        ("Held-out (zero-shot) cells", "task", &c.heldout),
        ("Held-out cells one by one", "cell", &c.heldout_cells),
    ] {
        if rows.is_empty() && first == "cell" {
            continue;
        }
        html += &format!(
            "<h3>{title}</h3>\n<table border=\"1\" cellpadding=\"4\" \
             style=\"border-collapse:collapse\">\n<tr><th>{first}</th><th>metric</th><th>cells</th>"
        );
        for m in &c.methods {
            html += &format!("<th>{}</th>", html_escape(m));
        }
        html += "<th>FLix − LoRA</th></tr>\n";
        for row in rows.iter() {
            html += &format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td>",
                html_escape(&row.task),
                html_escape(&row.metric),
                row.cells
            );
            for m in &c.methods {
                html += &format!(
                    "<td>{}</td>",
                    row.methods.get(m).map_or("-".to_string(), format_stats)
                );
            }
            html += &format!(
                "<td>{}</td></tr>\n",
                row.flix_minus_lora
                    .map_or("-".to_string(), |d| format!("{d:+.1}"))
            );
        }
        html += "</table>\n";
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_per_type() {
        let types = vec!["lang".to_string(), "task".to_string()];
        assert_eq!(type_ranks("8", &types).unwrap(), (8, BTreeMap::new()));
        let (_, ranks) = type_ranks("lang=4,task=8", &types).unwrap();
        assert_eq!(ranks, [("lang".into(), 4), ("task".into(), 8)].into());
        assert!(type_ranks("lang=4", &types).is_err());
        assert!(type_ranks("domain=4,lang=4,task=2", &types).is_err());
        assert!(type_ranks("lang=x,task=2", &types).is_err());
    }

    #[test]
    fn learning_rates_per_method() {
        let methods: Vec<String> = ["flix", "lora", "flix+shared"].map(String::from).into();
        let all = method_lrs("2e-3", &methods).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.values().all(|&lr| lr == 2e-3));
        assert_eq!(learning_rates(&all), "2e-3");
        let each = method_lrs("lora=1e-3, flix=5e-4,flix+shared=2.5e-4", &methods).unwrap();
        assert_eq!(
            each,
            [
                ("flix".into(), 5e-4),
                ("lora".into(), 1e-3),
                ("flix+shared".into(), 2.5e-4)
            ]
            .into()
        );
        assert_eq!(
            learning_rates(&each),
            "flix 5e-4, flix+shared 2.5e-4, lora 1e-3"
        );
        for (bad, says) in [
            (
                "flix=5e-4,lora=1e-3",
                "gives no learning rate to flix+shared",
            ),
            (
                "flix=5e-4,lora=1e-3,flix+shared=1,full=1",
                "not one of --methods",
            ),
            (
                "flix=5e-4,flix=1e-3,lora=1,flix+shared=1",
                "names flix twice",
            ),
            (
                "flix=0,lora=1e-3,flix+shared=1",
                "flix must be a finite number > 0",
            ),
            ("flix=x,lora=1e-3,flix+shared=1", "is not a learning rate"),
            ("-1e-3", "must be a finite number > 0"),
            ("NaN", "must be a finite number > 0"),
            ("fast", "expected a rate or method=rate"),
            ("bert=1e-3", "--lr"),
        ] {
            let err = format!("{:#}", method_lrs(bad, &methods).unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn task_table_means_over_cells_then_seeds() {
        let record = |method: &str, seed, task: &str, lang: &str, heldout, value| CellRecord {
            method: method.into(),
            seed,
            task: task.into(),
            cell: format!("lang={lang},task={task}"),
            features: BTreeMap::new(),
            heldout,
            unseen: false,
            kind: if heldout {
                CellKind::HeldOut
            } else {
                CellKind::Supervised
            },
            metric: TaskMetric::Accuracy,
            value: Some(value),
            values: BTreeMap::new(),
            examples: 1,
        };
        let records = vec![
            record("flix", 0, "a", "x", false, 0.5),
            record("flix", 0, "a", "y", false, 1.0),
            record("flix", 1, "a", "x", false, 0.25),
            record("flix", 1, "a", "y", false, 0.25),
            record("lora", 0, "a", "x", false, 0.0),
            record("lora", 0, "a", "y", false, 0.5),
            record("lora", 1, "a", "x", false, 0.5),
            record("lora", 1, "a", "y", false, 0.5),
            record("flix", 0, "a", "z", true, 0.1),
        ];
        let methods = vec!["flix".to_string(), "lora".to_string()];
        let rows = task_table(&records, &methods, &[0, 1], CellKind::Supervised);
        assert_eq!(rows.len(), 2);
        let flix = &rows[0].methods["flix"];
        // Seed 0: (50 + 100) / 2 = 75; seed 1: 25. Mean 50, sample std sqrt(2 · 25²) = 35.36.
        assert_eq!(flix.per_seed, [75.0, 25.0]);
        assert!((flix.std - (2.0f64 * 625.0).sqrt()).abs() < 1e-9);
        assert_eq!(rows[0].methods["lora"].mean, 37.5);
        assert_eq!(rows[0].flix_minus_lora, Some(12.5));
        assert_eq!(rows[0].cells, 2);
        assert_eq!(rows[1].task, ALL_TASKS);
        let held = task_table(&records, &methods, &[0, 1], CellKind::HeldOut);
        assert_eq!(held[0].methods["flix"].per_seed, [10.0]);
        assert!(!held[0].methods.contains_key("lora"));
        assert_eq!(held[0].flix_minus_lora, None);
    }
}
