//! `flix serve`: the OpenAI-compatible completions server (flix-serve) on a trained run. This
//! file only parses the command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use flix_serve::{Limits, ServeConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// `RUN`, or `BASE RUN`: the run (or checkpoint) directory, which records its base; a BASE
    /// given first must be that base.
    #[arg(required = true, num_args = 1..=2, value_name = "[BASE] RUN")]
    pub paths: Vec<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port; the printed `listening on` line says which.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The model name clients see; the run directory's name by default.
    #[arg(long)]
    pub model_id: Option<String>,
    /// Sequences decoding at once (one batch, continuous batching).
    #[arg(long, default_value_t = 64)]
    pub max_concurrent: usize,
    /// Requests waiting for a place in the batch; more get 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Prompts (an array's entries) in one request; more get 400.
    #[arg(long, default_value_t = 128)]
    pub max_prompts: usize,
    /// Tokens of one prompt; longer prompts get 400.
    #[arg(long, default_value_t = 4096)]
    pub max_prompt_tokens: usize,
    /// The largest `max_tokens` a request may ask for.
    #[arg(long, default_value_t = 1024)]
    pub max_tokens: usize,
    /// After SIGTERM or Ctrl-C, how long accepted requests may take to finish; whatever still
    /// runs then gets what was generated so far.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let (base, run) = match args.paths.as_slice() {
        [run] => (None, run.clone()),
        [base, run] => (Some(base.clone()), run.clone()),
        _ => bail!("give RUN or BASE RUN"),
    };
    if !run.is_dir() {
        bail!(
            "{} is not a directory: give a run directory (from `flix train --out`) or one of its \
             checkpoints",
            run.display()
        );
    }
    let config = ServeConfig {
        run,
        base,
        model_id: args.model_id,
        device: args.device,
        host: args.host,
        port: args.port,
        limits: Limits {
            max_concurrent: args.max_concurrent,
            max_queue: args.max_queue,
            max_prompts: args.max_prompts,
            max_prompt_tokens: args.max_prompt_tokens,
            max_tokens: args.max_tokens,
            retry_after_secs: 1,
        },
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(flix_serve::serve(config))?;
    Ok(())
}
