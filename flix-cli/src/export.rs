//! `flix export`: one feature combination of trained adapters as a PEFT LoRA directory (the
//! features' ranks concatenated: exact, DESIGN §1).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use flix_kernels::Device;
use flix_model::export::{export_peft, parse_combination};
use flix_model::train::{load_trained, Trained};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The run (or checkpoint) directory.
    pub run: PathBuf,
    /// The combination, e.g. `lang=deu,task=date`; types not named are left out.
    #[arg(long)]
    pub features: String,
    /// The PEFT directory to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Loads a trained run, or one checkpoint of it (adapters with their config, which names the
/// base model), on `device`: what `eval`, `export`, `merge`, `generate`, `compare` and `demo`
/// start from. A damaged newest checkpoint gives way to an older one, with a warning on stderr.
pub fn load_run(dir: &Path, device: &Device) -> Result<Trained> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: give a run directory (from `flix train --out`) or one of its \
             checkpoints",
            dir.display()
        );
    }
    let trained =
        load_trained(dir, device).with_context(|| format!("loading {}", dir.display()))?;
    for warning in &trained.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(trained)
}

pub fn run(args: ExportArgs) -> Result<()> {
    let combination = parse_combination(&args.features)?;
    let trained = load_run(&args.run, &Device::Cpu)?;
    export_peft(&trained, &combination, &args.out)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
