//! The training loop: draw heterogeneous micro-batches from the mixture, run forward and backward
//! with each example's (dropped-out) features, accumulate, clip, take an AdamW step on the
//! scheduled learning rate, log, checkpoint. Every random choice is a pure function of (seed,
//! step), so a resumed run computes the very same steps as an uninterrupted one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use flix_core::{FeatureDropout, Registry};
use flix_kernels::ops::adamw::AdamWParams;
use flix_kernels::{Device, DeviceBatch};
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    checkpoint_candidates, latest_checkpoint, load_into, read_adapter_config, read_state,
    step_dirs, write_checkpoint, AdapterConfig, CONFIG_FILE, OPTIMIZER_FILE, WEIGHTS_FILE,
};
use super::data::{training_examples, PreparedSet, Tokenized, TrainingData};
use super::fingerprint::check_base_fingerprint;
use super::layout::{Layout, Method};
use super::sampler::MixtureSampler;
use super::schedule::learning_rate;
use super::spec::TrainSpec;
use super::trainables::{names, snapshot, trainables};
use crate::batch::{Batch, Sequence};
use crate::error::{ModelError, Result};
use crate::eval::periodic::{EvalRecord, PeriodicEval};
use crate::eval::Model;
use crate::length::ContextLimit;
use crate::llama::{LlamaModel, TrainMode};
use crate::optim::{AdamW, SavedState};
use crate::source::ModelSource;
use crate::tokenize::Tokenizer;

pub const SPEC_FILE: &str = "spec.json";
pub const METRICS_FILE: &str = "metrics.jsonl";

/// What one optimizer step did (one line of `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub examples: usize,
    pub seconds: f64,
    /// The evaluation after this step, when one ran (written as a line of its own).
    #[serde(skip)]
    pub eval: Option<EvalRecord>,
}

/// A micro-batch: the packed tokens bound to the model's device (with the FLix plan, absent for
/// `full`), and the cells it holds.
pub struct MicroBatch {
    pub batch: DeviceBatch,
    pub cells: Vec<usize>,
}

pub struct Trainer {
    pub spec: TrainSpec,
    pub run_dir: PathBuf,
    pub model: LlamaModel,
    pub layout: Layout,
    pub data: PreparedSet,
    pub tokenizer: Tokenizer,
    sampler: MixtureSampler,
    dropout: FeatureDropout,
    adam: AdamW,
    adapter_config: AdapterConfig,
    type_names: Vec<String>,
    /// Evaluation during training, when the spec asks for it.
    periodic: Option<PeriodicEval>,
    /// Completed optimizer steps.
    pub step: u64,
    /// What resuming had to work around (a damaged checkpoint skipped), for the user to read.
    pub resume_notes: Vec<String>,
    /// What the user should know before the first step: examples left out or cut for being
    /// longer than the model's context, ranks larger than the adapted projections.
    pub notes: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Trainer {
    /// A fresh run of `spec` writing to `run_dir`. All data is read, checked and tokenized here:
    /// bad data is an error before the first step, and nothing is written before that.
    ///
    /// Its data and base paths are stored absolute, with the base's fingerprint, so that the run
    /// resumes from any directory and only on the same base model.
    pub fn new(spec: TrainSpec, run_dir: &Path) -> Result<Self> {
        spec.validate()?;
        let mut spec = spec.with_absolute_paths()?;
        if !step_dirs(run_dir)?.is_empty() || run_dir.join(SPEC_FILE).exists() {
            return Err(ModelError::Invalid(format!(
                "{} already holds a run; resume it with --resume or choose another directory",
                run_dir.display()
            )));
        }
        std::fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
        let trainer = Self::build(spec.clone(), run_dir)?;
        spec.base_fingerprint = trainer.adapter_config.base_fingerprint.clone();
        let text = serde_json::to_string_pretty(&spec)
            .map_err(|e| ModelError::Invalid(format!("cannot serialise the spec: {e}")))?;
        flix_core::write_atomic(&run_dir.join(METRICS_FILE), b"")?;
        flix_core::write_atomic(&run_dir.join(SPEC_FILE), text.as_bytes())?;
        Ok(Self { spec, ..trainer })
    }

    /// Reads and validates `DIR/spec.json` (a hand edit gets the same checks as the options).
    pub fn read_spec(run_dir: &Path) -> Result<TrainSpec> {
        let spec_path = run_dir.join(SPEC_FILE);
        let text = std::fs::read_to_string(&spec_path).map_err(io_err(&spec_path))?;
        let spec: TrainSpec = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: spec_path.clone(),
            message: format!("invalid spec: {e}"),
        })?;
        spec.validate().map_err(|e| ModelError::Config {
            path: spec_path,
            message: e.to_string(),
        })?;
        Ok(spec)
    }

    /// Continues the run in `run_dir` from its newest checkpoint that loads. A damaged newer one
    /// is skipped, with a note in [`Trainer::resume_notes`]; when checkpoints exist but none
    /// loads, this is an error (never a silent restart). `metrics.jsonl` is cut back to the step
    /// resumed from, so no step is logged twice.
    pub fn resume(run_dir: &Path) -> Result<Self> {
        let spec = Self::read_spec(run_dir)?;
        let mut trainer = Self::build(spec, run_dir)?;
        if let Some(recorded) = &trainer.spec.base_fingerprint {
            check_base_fingerprint(&trainer.spec.base, recorded, &run_dir.join(SPEC_FILE))?;
        }
        let mut failures = Vec::new();
        for (_, checkpoint) in checkpoint_candidates(run_dir)? {
            match trainer.restore(&checkpoint) {
                Ok(()) => break,
                Err(e) => failures.push(format!("{}: {e}", checkpoint.display())),
            }
        }
        if trainer.step == 0 && !failures.is_empty() {
            return Err(ModelError::Invalid(format!(
                "no checkpoint of {} can be read, so the run cannot resume:\n  {}\nremove the \
                 damaged checkpoints to start the run over",
                run_dir.display(),
                failures.join("\n  ")
            )));
        }
        if !failures.is_empty() {
            trainer.resume_notes.push(format!(
                "skipped {} damaged checkpoint(s) and resumed from step {}:\n  {}",
                failures.len(),
                trainer.step,
                failures.join("\n  ")
            ));
        }
        trainer.truncate_metrics()?;
        Ok(trainer)
    }

    /// Loads the weights, optimizer state and step of `checkpoint`; on an error nothing that
    /// matters has changed (the weights are replaced whole by the next checkpoint tried).
    fn restore(&mut self, checkpoint: &Path) -> Result<()> {
        let step = read_state(checkpoint)?.step;
        // The checkpoint must describe this run's adapters (eval and export read its config).
        let (config, _) = read_adapter_config(checkpoint)?;
        let comparable = AdapterConfig {
            base_model: self.adapter_config.base_model.clone(),
            base_fingerprint: self.adapter_config.base_fingerprint.clone(),
            ..config
        };
        if comparable != self.adapter_config {
            return Err(ModelError::Config {
                path: checkpoint.join(CONFIG_FILE),
                message: "the adapters described here are not those of this run's spec.json \
                          (method, targets, feature types or values differ)"
                    .into(),
            });
        }
        let full = self.layout.method == Method::Full;
        load_into(
            &mut self.model,
            full,
            &self.type_names,
            &checkpoint.join(WEIGHTS_FILE),
        )?;
        let file = checkpoint.join(OPTIMIZER_FILE);
        let saved = SavedState::load(&file)?;
        if saved.step != step {
            return Err(ModelError::Weights {
                path: file,
                message: format!(
                    "the optimizer state is at step {} but the checkpoint at step {step}",
                    saved.step
                ),
            });
        }
        let params = trainables(&mut self.model, full, &self.type_names)?;
        let named: Vec<(&str, &flix_kernels::Tensor)> = params
            .iter()
            .map(|t| (t.name.as_str(), &*t.value))
            .collect();
        self.adam.load_state(saved, &named, &file)?;
        self.step = step;
        Ok(())
    }

    fn build(spec: TrainSpec, run_dir: &Path) -> Result<Self> {
        let core = |e: flix_core::CoreError| ModelError::Invalid(e.to_string());
        let TrainingData {
            examples: train,
            holdout,
        } = training_examples(&spec)?;
        let tokenizer = Tokenizer::load(&spec.base)?;
        let context = ContextLimit::new(
            ModelSource::open(&spec.base)?
                .config()?
                .max_position_embeddings,
        );
        let type_names = spec.features.type_names();
        let tokenized =
            Tokenized::new(&train, &type_names, &tokenizer, context, spec.long_examples)?;
        let mut registry = Registry::discover(&spec.features, &tokenized.examples).map_err(core)?;
        let data = PreparedSet::training(tokenized, &mut registry)?;
        spec.check_types_have_values(&registry)?;
        let sizes: Vec<usize> = data.by_cell.iter().map(|c| c.len()).collect();
        let sampler = MixtureSampler::new(&sizes, spec.temperature, spec.cap, spec.seed)?;
        let dropout = FeatureDropout::from_registry(&registry, spec.seed);
        let layout = spec.layout(registry)?;
        let device = Device::parse(&spec.device)?;
        let mut model = LlamaModel::load(&spec.base, &device)?;
        // Before the adapters and optimizer state are allocated: absurd sizes are refused here.
        // A micro-batch holds at least one example, however long (up to the context).
        let longest = data.examples.iter().map(|e| e.tokens.len()).max();
        let micro_batch_tokens = spec.batch_tokens.max(longest.unwrap_or(0));
        let needed = super::memory::estimate(&model, &layout, micro_batch_tokens);
        super::memory::check_fits(&needed, super::memory::available_memory(&device))?;
        let full = layout.method == Method::Full;
        if let Some(adapters) = layout.adapter_spec(spec.seed) {
            model.attach_adapters(&adapters)?;
        }
        model.set_train_mode(if full {
            TrainMode::Full
        } else {
            TrainMode::Adapters
        })?;
        let adapter_config = AdapterConfig::new(&layout, &spec.base)?;
        let type_names = adapter_config.type_names();
        let adam = AdamW::new(
            AdamWParams {
                weight_decay: spec.weight_decay as f32,
                ..AdamWParams::default()
            },
            (spec.max_grad_norm > 0.0).then_some(spec.max_grad_norm),
        );
        let periodic = match &spec.eval {
            Some(eval) => {
                let model = Model {
                    model: &model,
                    layout: &layout,
                    tokenizer: &tokenizer,
                };
                Some(PeriodicEval::prepare(eval, model, &holdout)?)
            }
            None => None,
        };
        let mut notes: Vec<String> = data
            .long
            .note("training example", context)
            .into_iter()
            .chain(periodic.as_ref().and_then(|p| p.length_note(context)))
            .collect();
        for (name, rank, smallest) in super::memory::ranks_above_the_dimensions(&model, &layout) {
            notes.push(format!(
                "the rank {rank} of the {name} adapters exceeds {smallest}, the smallest \
                 dimension of the projections they adapt: an update of those has rank at most \
                 {smallest}, so the rest only costs memory and time"
            ));
        }
        Ok(Self {
            spec,
            run_dir: run_dir.to_path_buf(),
            model,
            layout,
            data,
            tokenizer,
            sampler,
            dropout,
            adam,
            adapter_config,
            type_names,
            periodic,
            step: 0,
            resume_notes: Vec::new(),
            notes,
        })
    }

    /// Micro-batch `micro`: examples drawn from the mixture while they fit in the token budget
    /// (at least one), each with its features after dropout at (seed, micro, position).
    pub fn micro_batch(&self, micro: u64) -> Result<MicroBatch> {
        let mut sequences = Vec::new();
        let mut cells = Vec::new();
        let mut tokens = 0;
        for draw in 0.. {
            let (cell, within) = self.sampler.draw(micro, draw);
            let ex = &self.data.examples[self.data.by_cell[cell][within]];
            if draw > 0 && tokens + ex.tokens.len() > self.spec.batch_tokens {
                break;
            }
            tokens += ex.tokens.len();
            let mut features = ex.features.clone();
            self.dropout.apply(micro, draw, &mut features.slots);
            sequences.push(
                Sequence::prompt_and_target(ex.tokens.clone(), ex.prompt_len)
                    .with_features(self.layout.slots(&features)),
            );
            cells.push(cell);
        }
        let batch = self.model.upload(&Batch::new(&sequences)?)?;
        Ok(MicroBatch { batch, cells })
    }

    /// One optimizer step. A non-finite loss or gradient is an error naming the step and cells.
    pub fn train_step(&mut self) -> Result<StepReport> {
        let start = Instant::now();
        let step = self.step + 1;
        let accum = self.spec.grad_accum;
        self.model.zero_grad()?;
        let (mut loss, mut tokens, mut examples) = (0.0, 0, 0);
        for j in 0..accum {
            let micro = (step - 1) * accum as u64 + j as u64;
            let mb = self.micro_batch(micro)?;
            let report = self.model.forward_backward(&mb.batch)?;
            if !report.loss.is_finite() {
                return Err(self.non_finite(step, "loss", report.loss, &mb.cells));
            }
            loss += report.loss / accum as f64;
            tokens += mb.batch.num_tokens();
            examples += mb.batch.num_sequences();
        }
        let full = self.layout.method == Method::Full;
        let lr = learning_rate(
            self.spec.lr,
            step,
            self.spec.steps,
            self.spec.warmup_steps,
            self.spec.min_lr_ratio,
        );
        let mut params = trainables(&mut self.model, full, &self.type_names)?;
        self.adam.params.lr = lr as f32;
        // The gradients hold the sum over the micro-batches; the step uses their mean.
        let grad_norm = self.adam.step_tensors(
            &mut params.iter_mut().map(|t| t.as_param()).collect::<Vec<_>>(),
            1.0 / accum as f32,
        )?;
        drop(params);
        self.model.adapter_copies_written_by_optimizer();
        if !grad_norm.is_finite() {
            return Err(self.non_finite(step, "gradient norm", grad_norm, &[]));
        }
        self.step = step;
        Ok(StepReport {
            step,
            loss,
            lr,
            grad_norm,
            tokens,
            examples,
            seconds: start.elapsed().as_secs_f64(),
            eval: None,
        })
    }

    fn non_finite(&self, step: u64, what: &str, value: f64, cells: &[usize]) -> ModelError {
        let mut names: Vec<&str> = cells
            .iter()
            .map(|&c| self.data.cell_names[c].as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        let kept = match latest_checkpoint(&self.run_dir) {
            Ok(Some(dir)) => format!("the last good checkpoint is {}", dir.display()),
            _ => "no checkpoint was written yet".to_string(),
        };
        ModelError::Invalid(format!(
            "step {step}: the {what} is {value} (batch cells: {}); stopping; {kept}",
            if names.is_empty() {
                "all".to_string()
            } else {
                names.join(" ")
            }
        ))
    }

    /// Writes a checkpoint of the current step.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let full = self.layout.method == Method::Full;
        let params = trainables(&mut self.model, full, &self.type_names)?;
        let weights = snapshot(&params)?;
        let optimizer = self.adam.saved_state(&names(&params))?;
        write_checkpoint(
            &self.run_dir,
            &self.adapter_config,
            &weights,
            &optimizer,
            self.step,
        )
    }

    /// Evaluates the current weights on the spec's eval file, when this step is due for it.
    pub fn periodic_eval(&self) -> Result<Option<EvalRecord>> {
        let Some(periodic) = &self.periodic else {
            return Ok(None);
        };
        if !periodic.spec.due(self.step, self.spec.steps) {
            return Ok(None);
        }
        let model = Model {
            model: &self.model,
            layout: &self.layout,
            tokenizer: &self.tokenizer,
        };
        Ok(Some(periodic.run(
            self.step,
            model,
            self.spec.batch_tokens,
        )?))
    }

    /// Trains until the spec's last step: appends each step (and each periodic evaluation) to
    /// `metrics.jsonl`, calls `on_step`, checkpoints every `checkpoint_every` steps and at the end.
    pub fn run(&mut self, mut on_step: impl FnMut(&StepReport)) -> Result<()> {
        let path = self.run_dir.join(METRICS_FILE);
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        while self.step < self.spec.steps {
            let mut report = self.train_step()?;
            let line = serde_json::to_string(&report)
                .map_err(|e| ModelError::Invalid(format!("metrics: {e}")))?;
            writeln!(metrics, "{line}").map_err(io_err(&path))?;
            if let Some(record) = self.periodic_eval()? {
                let line = serde_json::to_string(&record)
                    .map_err(|e| ModelError::Invalid(format!("metrics: {e}")))?;
                writeln!(metrics, "{line}").map_err(io_err(&path))?;
                report.eval = Some(record);
            }
            on_step(&report);
            let every = self.spec.checkpoint_every;
            if (every > 0 && self.step.is_multiple_of(every)) || self.step == self.spec.steps {
                self.save_checkpoint()?;
            }
        }
        Ok(())
    }

    /// Drops metric lines (steps and evaluations) of steps after the resumed one (they will be
    /// computed again).
    fn truncate_metrics(&self) -> Result<()> {
        #[derive(Deserialize)]
        struct Step {
            step: u64,
        }
        let path = self.run_dir.join(METRICS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let kept: String = text
            .lines()
            .filter(|line| serde_json::from_str::<Step>(line).is_ok_and(|r| r.step <= self.step))
            .map(|l| format!("{l}\n"))
            .collect();
        Ok(flix_core::write_atomic(&path, kept.as_bytes())?)
    }
}
