//! `flix score MODEL DATA.jsonl [--adapters PEFT_DIR]`: the log-likelihood of every example's
//! target under a model (a Hugging Face directory or a GGUF file; optionally with a PEFT LoRA),
//! one JSON line per example: `{"line", "id", "loss", "target_tokens", "token_logprobs"}`, where
//! `loss` is the mean negative log-likelihood of the target tokens. The prompt is `input` after
//! the tokenizer's leading special tokens (BOS), the scored part is `target` without any; an
//! empty input scores every target token after BOS. An example longer than the model's context
//! is an error naming its file and line, unless `--truncate` (then its first context-many
//! tokens are scored). A summary goes to stderr.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use flix_core::read_jsonl;
use flix_kernels::Device;
use flix_model::length::Fit;
use flix_model::{
    load_peft_lora, score_sequences, ContextLimit, LlamaModel, LongReport, Sequence, Tokenizer,
};

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// The model: a Hugging Face directory (config.json, model.safetensors or shards with their
    /// index, tokenizer.json) or a GGUF file.
    model: PathBuf,
    /// JSONL examples, each with "input" and "target" strings (and an optional "id").
    data: PathBuf,
    /// A PEFT LoRA directory (adapter_config.json, adapter_model.safetensors), applied to every
    /// example.
    #[arg(long)]
    adapters: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Most tokens per forward pass, >= 1 (a longer example still gets a pass of its own).
    #[arg(long, default_value_t = 4096)]
    batch_tokens: usize,
    /// Write the JSON lines here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Score an example longer than the model's context (max_position_embeddings) on its first
    /// context-many tokens (its line gets `"truncated": true`) instead of refusing the file.
    #[arg(long)]
    truncate: bool,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    if args.batch_tokens == 0 {
        bail!("--batch-tokens must be >= 1, found 0");
    }
    let device = Device::parse(&args.device)?;
    let mut model = LlamaModel::load(&args.model, &device)?;
    let tokenizer = Tokenizer::load(&args.model)?;
    let lora = match &args.adapters {
        Some(dir) => Some(load_peft_lora(&mut model, dir)?),
        None => None,
    };
    let examples = read_jsonl(&args.data, &[])?;
    let context = ContextLimit::new(model.config.max_position_embeddings);
    let mut long = LongReport::default();
    let mut sequences = Vec::with_capacity(examples.len());
    let mut truncated = Vec::with_capacity(examples.len());
    for e in &examples {
        let fit = tokenizer
            .encode_within(&e.input, &e.target, None, context, args.truncate)
            .with_context(|| e.location.to_string())?;
        let encoded = match fit {
            Fit::Fits(encoded) => encoded,
            Fit::TooLong(found) => bail!(
                "{}; pass --truncate to score only its first {} tokens",
                context.too_long(&e.location, found, "example"),
                context.positions
            ),
        };
        if encoded.truncated {
            long.truncate(&e.location);
        }
        truncated.push(encoded.truncated);
        // As `Tokenizer::encode_example`: an empty prompt still conditions on the first token.
        let sequence = Sequence::prompt_and_target(encoded.tokens, encoded.prompt_len.max(1));
        sequences.push(match &lora {
            Some(lora) => sequence.with_features(lora.features()),
            None => sequence,
        });
    }
    let scores = score_sequences(&model, &sequences, args.batch_tokens)?;

    let mut text = String::new();
    let (mut nll, mut count) = (0.0f64, 0usize);
    for ((example, score), &cut) in examples.iter().zip(&scores).zip(&truncated) {
        nll -= score.token_logprobs.iter().map(|&l| l as f64).sum::<f64>();
        count += score.token_logprobs.len();
        let mut line = serde_json::json!({
            "line": example.location.line,
            "id": example.id,
            "loss": score.loss,
            "target_tokens": score.token_logprobs.len(),
            "token_logprobs": score.token_logprobs,
        });
        if cut {
            line["truncated"] = true.into();
        }
        writeln!(text, "{line}")?;
    }
    match &args.output {
        // Whole or not at all: a killed run never leaves half a score file.
        Some(path) => flix_core::write_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    let mean = if count > 0 {
        nll / count as f64
    } else {
        f64::NAN
    };
    if let Some(note) = long.note("example", context) {
        eprintln!("note: {note}");
    }
    eprintln!(
        "scored {} examples, {count} target tokens, mean loss {mean:.6} (perplexity {:.4})",
        examples.len(),
        mean.exp()
    );
    Ok(())
}
