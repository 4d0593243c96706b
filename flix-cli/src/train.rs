//! `flix train`: trains FLix adapters (or a LoRA / full-parameter baseline) on JSONL files or a
//! mixture root (`--mixture ROOT`: every `<task>/<lang>/train.jsonl`), holding out the cells of
//! `--holdout` and `--split-file`, or resumes a killed run with `--resume DIR`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use flix_core::{read_split_file, FeatureConfig, TypeDefaults};
use flix_model::eval::periodic::PeriodicEvalSpec;
use flix_model::train::{Holdout, Method, StepReport, TrainSpec, Trainer};
use flix_model::LongExamples;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Continue the run in this directory from its latest checkpoint (other options are ignored:
    /// the run's saved spec.json is used).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// The base model: a Hugging Face directory (config.json, safetensors weights,
    /// tokenizer.json) or a GGUF file.
    #[arg(long, required_unless_present = "resume")]
    pub base: Option<PathBuf>,
    /// JSONL training files.
    #[arg(long, num_args = 1.., required_unless_present_any = ["resume", "mixture"])]
    pub data: Vec<PathBuf>,
    /// A mixture root: trains on every `<task>/<lang>/train.jsonl` under it (beside --data).
    #[arg(long)]
    pub mixture: Option<PathBuf>,
    /// Held-out cells from a split file (`{"heldout": [{"task": "ner", "lang": "hau"}, ...]}`),
    /// beside any --holdout.
    #[arg(long)]
    pub split_file: Option<PathBuf>,
    /// At most this many training examples per cell, spread evenly over each cell's file.
    #[arg(long)]
    pub max_train_per_cell: Option<usize>,
    /// The run directory (checkpoints, metrics.jsonl, spec.json).
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// A feature config (JSON); without it, --types with --rank/--alpha/--dropout.
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// Feature types, comma-separated, when no --features file is given.
    #[arg(long, default_value = "lang,task", value_delimiter = ',')]
    pub types: Vec<String>,
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f64,
    /// Feature dropout probability of every type.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// lora, flix, flix+shared or full.
    #[arg(long, default_value = "flix")]
    pub method: String,
    /// lora: make the rank the active rank of a FLix example (Σ_k r_k).
    #[arg(long)]
    pub match_compute: bool,
    /// Rank of the always-on adapter of lora and flix+shared.
    #[arg(long)]
    pub shared_rank: Option<usize>,
    /// Target modules, comma-separated (q,k,v,o,gate,up,down); default all.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Training examples longer than the base model's context (max_position_embeddings): skip
    /// them (counted in a note; an error when none is left), truncate them to the context, or
    /// refuse the data (error, naming the first).
    #[arg(long, default_value = "skip")]
    pub long_examples: LongExamples,
    /// Held-out cells, e.g. `--holdout lang=sw,task=ner --holdout lang=de,task=qa`; a type named
    /// twice lists alternatives (`lang=de,lang=fr` holds out both languages).
    #[arg(long)]
    pub holdout: Vec<String>,
    /// cpu, cuda or cuda:N (a resumed run stays on the device it started on).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    #[arg(long, default_value_t = 2048)]
    pub batch_tokens: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Mixture temperature (1: proportional to cell size).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Cells count at most this many examples when weighting the mixture.
    #[arg(long)]
    pub cap: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: u64,
    /// Evaluate every N steps (and at the end) on --eval-file: mean loss per cell, written to
    /// metrics.jsonl and shown in the progress line.
    #[arg(long, requires = "eval_file")]
    pub eval_every: Option<u64>,
    /// The JSONL file of --eval-every.
    #[arg(long, requires = "eval_every")]
    pub eval_file: Option<PathBuf>,
    /// Also exact match (greedy decoding) on at most this many examples per cell.
    #[arg(long, requires = "eval_every")]
    pub eval_max_per_cell: Option<usize>,
    /// Most new tokens per example for --eval-max-per-cell.
    #[arg(long, default_value_t = 48)]
    pub eval_max_new_tokens: usize,
}

impl TrainArgs {
    fn spec(&self) -> Result<TrainSpec> {
        let method: Method = self.method.parse()?;
        let features = match &self.features {
            Some(path) => FeatureConfig::load(path)?,
            None => {
                let names: Vec<&str> = self.types.iter().map(|s| s.as_str()).collect();
                FeatureConfig::discovered(
                    &names,
                    TypeDefaults {
                        rank: self.rank,
                        alpha: self.alpha,
                        dropout: self.dropout,
                    },
                )
            }
        };
        let Some(base) = self.base.clone() else {
            bail!("--base is required for a new run");
        };
        if self.data.is_empty() && self.mixture.is_none() {
            bail!("--data or --mixture is required for a new run");
        }
        let mut spec = TrainSpec::new(base, self.data.clone(), features, method);
        spec.mixture = self.mixture.clone();
        spec.max_train_per_cell = self.max_train_per_cell;
        spec.holdout = holdout_specs(&self.holdout, self.split_file.as_deref())?;
        spec.match_compute = self.match_compute;
        spec.shared_rank = self.shared_rank;
        spec.targets = self.targets.clone();
        spec.long_examples = self.long_examples;
        spec.steps = self.steps;
        spec.batch_tokens = self.batch_tokens;
        spec.grad_accum = self.grad_accum;
        spec.lr = self.lr;
        spec.warmup_steps = self.warmup;
        spec.min_lr_ratio = self.min_lr_ratio;
        spec.weight_decay = self.weight_decay;
        spec.max_grad_norm = self.clip;
        spec.temperature = self.temperature;
        spec.cap = self.cap;
        spec.seed = self.seed;
        spec.checkpoint_every = self.checkpoint_every;
        spec.device = self.device.clone();
        if let (Some(every), Some(file)) = (self.eval_every, &self.eval_file) {
            let mut eval = PeriodicEvalSpec::new(every, file.clone());
            eval.max_per_cell = self.eval_max_per_cell;
            eval.max_new_tokens = self.eval_max_new_tokens;
            spec.eval = Some(eval);
        }
        Ok(spec)
    }
}

/// The held-out cells of `--holdout` and `--split-file` together, checked for form (see
/// [`Holdout::parse`]); a split file that cannot be read is an error.
pub fn holdout_specs(holdout: &[String], split_file: Option<&Path>) -> Result<Vec<String>> {
    let mut specs = holdout.to_vec();
    if let Some(path) = split_file {
        specs.extend(read_split_file(path).context("reading the split file")?);
    }
    Holdout::parse(&specs)?;
    Ok(specs)
}

pub fn run(args: TrainArgs) -> Result<()> {
    let mut trainer = match &args.resume {
        Some(dir) => {
            let trainer =
                Trainer::resume(dir).with_context(|| format!("resuming {}", dir.display()))?;
            for note in &trainer.resume_notes {
                eprintln!("warning: {note}");
            }
            trainer
        }
        None => {
            let out = args
                .out
                .clone()
                .context("--out is required for a new run")?;
            Trainer::new(args.spec()?, &out)?
        }
    };
    run_with_progress(&mut trainer, "train")?;
    eprintln!(
        "trained {} steps; adapters in {}",
        trainer.step,
        trainer.run_dir.join("checkpoints").display()
    );
    Ok(())
}

/// Runs `trainer` to its last step with a progress bar (loss, tokens/s, ETA) on a terminal, and a
/// log line every tenth of the run otherwise; each periodic evaluation gets a line of its own.
pub fn run_with_progress(trainer: &mut Trainer, label: &str) -> Result<()> {
    for note in &trainer.notes {
        eprintln!("{label}: note: {note}");
    }
    let total = trainer.spec.steps;
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")?
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar.set_position(trainer.step);
        Some(bar)
    } else {
        None
    };
    let every = (total / 10).max(1);
    // The bar's message keeps the last evaluation's means (held-out / supervised loss).
    let mut last_eval = String::new();
    let mut on_step = |r: &StepReport| {
        let tps = r.tokens as f64 / r.seconds.max(1e-9);
        if let Some(eval) = &r.eval {
            let mean = |m: Option<f64>| m.map_or("-".to_string(), |v| format!("{v:.3}"));
            last_eval = format!(
                " eval held-out/supervised {}/{}",
                mean(eval.heldout_mean),
                mean(eval.supervised_mean)
            );
            let line = format!("{label} step {}/{total} {}", r.step, eval.summary());
            match &bar {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            }
        }
        match &bar {
            Some(bar) => {
                bar.set_position(r.step);
                bar.set_message(format!("loss {:.4} {:.0} tok/s{last_eval}", r.loss, tps));
            }
            None if r.step.is_multiple_of(every) || r.step == total => eprintln!(
                "{label} step {}/{total} loss {:.4} lr {:.2e} grad-norm {:.3} {:.0} tok/s",
                r.step, r.loss, r.lr, r.grad_norm, tps
            ),
            None => {}
        }
    };
    let result = trainer.run(&mut on_step);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result?;
    Ok(())
}
