//! `flix export`: one feature combination of trained adapters as a PEFT LoRA directory (the
//! features' ranks concatenated: exact, DESIGN §1).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use flix_kernels::Device;
use flix_model::export::export_peft;
use flix_model::train::load_trained;

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

pub fn run(args: ExportArgs) -> Result<()> {
    let mut combination = BTreeMap::new();
    for part in args.features.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("--features: expected type=value pairs, found {part:?}");
        };
        combination.insert(k.trim().to_string(), v.trim().to_string());
    }
    let trained = load_trained(&args.run, &Device::Cpu)
        .with_context(|| format!("loading {}", args.run.display()))?;
    export_peft(&trained, &combination, &args.out)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
