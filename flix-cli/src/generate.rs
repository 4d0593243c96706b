//! `flix generate`: continuations of prompts under a trained run with one feature combination
//! active, through the model's cached generation. `--input` builds the prompt exactly as training
//! and evaluation do (feature tags, the input, ` =`); `--prompt` passes raw text. A feature value
//! the run never saw is served absent, with a warning, as `flix eval` does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use flix_core::{Example, Location};
use flix_kernels::Device;
use flix_model::export::{parse_combination, Combination};
use flix_model::length::Fit;
use flix_model::train::data::prompt_text;
use flix_model::train::Trained;
use flix_model::{ContextLimit, GenerationConfig};

use crate::export::load_run;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The run (or checkpoint) directory.
    pub run: PathBuf,
    /// The combination, e.g. `lang=deu,task=date`; types not named are absent.
    #[arg(long, default_value = "")]
    pub features: String,
    /// An example input; the prompt is its feature tags, the input and ` =`, as in training.
    /// Repeatable; continuations of `--input` prompts are printed first.
    #[arg(long)]
    pub input: Vec<String>,
    /// Raw prompt text, tokenized as is (no tags added). Repeatable.
    #[arg(long)]
    pub prompt: Vec<String>,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    /// Sampling temperature, >= 0; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling: draw among the most likely tokens holding this much probability, in
    /// (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// An example with the combination's features and `input`, as eval builds them from JSONL.
fn example(combination: &Combination, input: &str) -> Example {
    Example {
        location: Location {
            file: Arc::from(Path::new("--features")),
            line: 0,
        },
        id: None,
        features: combination.clone(),
        input: input.to_string(),
        target: String::new(),
    }
}

/// Warns about every type or value of `combination` the run has no adapter for.
fn warn_unknown(trained: &Trained, combination: &Combination) {
    let registry = &trained.layout.registry;
    for (name, value) in combination {
        match registry.feature_type(name) {
            None => eprintln!(
                "warning: unknown feature type {name:?} (the run knows {:?}); ignored",
                registry.type_names()
            ),
            Some(ft) if ft.id_of(value).is_none() => eprintln!(
                "warning: {}",
                flix_serve::api::unknown_value_warning(name, value, ft.values())
            ),
            Some(_) => {}
        }
    }
}

impl GenerateArgs {
    /// Refuses out-of-range numbers before anything is loaded.
    fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!(
                "--temperature must be finite and >= 0 (0: greedy), found {}",
                self.temperature
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p must be in (0, 1], found {}", self.top_p);
        }
        Ok(())
    }
}

pub fn run(args: GenerateArgs) -> Result<()> {
    args.validate()?;
    if args.input.is_empty() && args.prompt.is_empty() {
        bail!("nothing to generate from: give --input TEXT or --prompt TEXT");
    }
    let combination = parse_combination(&args.features)?;
    let device = Device::parse(&args.device)?;
    let trained = load_run(&args.run, &device)?;
    warn_unknown(&trained, &combination);
    let layout = &trained.layout;
    let type_names = layout.registry.type_names();
    let slots = layout.slots(&layout.registry.encode_inference(&example(&combination, "")));

    let tok = &trained.tokenizer;
    let positions = trained.model.config.max_position_embeddings;
    // A prompt must leave room for one new token (a giant one is refused before tokenizing).
    let room = ContextLimit::new(positions.saturating_sub(1));
    let texts = args
        .input
        .iter()
        .map(|input| prompt_text(&example(&combination, input), &type_names))
        .chain(args.prompt.iter().cloned());
    let mut prompts = Vec::new();
    for (i, text) in texts.enumerate() {
        match tok.encode_within(&text, "", None, room, false)? {
            Fit::Fits(prompt) if prompt.tokens.is_empty() => {
                bail!("prompt {} tokenizes to nothing", i + 1)
            }
            Fit::Fits(prompt) => prompts.push(prompt.tokens),
            Fit::TooLong(found) => bail!(
                "prompt {} has {found}; {} leaves room for at most {} prompt tokens",
                i + 1,
                ContextLimit::new(positions).describe(),
                room.positions
            ),
        }
    }
    // Each new token grows the attention cache; past the positions the model was built for, a
    // huge --max-new-tokens would only end in an allocation failure.
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest.saturating_add(args.max_new_tokens) > positions {
        bail!(
            "--max-new-tokens {}: with the longest prompt ({longest} tokens) that exceeds the \
             model's {positions} positions (max_position_embeddings); give at most {}",
            args.max_new_tokens,
            positions.saturating_sub(longest)
        );
    }
    let all_slots = vec![slots; prompts.len()];
    let eos = tok.eos_id()?;
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        eos_token_ids: vec![eos],
    };
    let features = layout
        .adapter_spec(0)
        .is_some()
        .then_some(all_slots.as_slice());
    for mut out in trained.model.generate(&prompts, features, &config)? {
        if out.last() == Some(&eos) {
            out.pop();
        }
        println!("{}", tok.decode(&out)?);
    }
    Ok(())
}
