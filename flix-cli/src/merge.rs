//! `flix merge`: one feature combination of trained adapters merged into the base weights, as a
//! Hugging Face checkpoint directory (DESIGN §1) that any Llama loader reads.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use flix_kernels::Device;
use flix_model::export::parse_combination;
use flix_model::merge::merge_checkpoint;
use flix_model::train::Method;

use crate::export::load_run;

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The run (or checkpoint) directory.
    pub run: PathBuf,
    /// The combination, e.g. `lang=deu,task=date`; types not named are left out. The shared
    /// adapter of `lora` and `flix+shared` runs is always merged; a `full` run needs none.
    #[arg(long, default_value = "")]
    pub features: String,
    /// The checkpoint directory to write (config, tokenizer and merged `model.safetensors`).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: MergeArgs) -> Result<()> {
    let combination = parse_combination(&args.features)?;
    let mut trained = load_run(&args.run, &Device::Cpu)?;
    if trained.layout.method == Method::Full && !combination.is_empty() {
        eprintln!("note: a `full` run has no adapters; --features is ignored");
    }
    let summary = merge_checkpoint(&mut trained, &combination, &args.out)?;
    eprintln!(
        "wrote {}: {} tensors merged, {} copied, {} other files",
        args.out.display(),
        summary.replaced,
        summary.copied,
        summary.files.len()
    );
    Ok(())
}
