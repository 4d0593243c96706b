//! `flix`: the command line of FLix. It parses arguments, shows progress and prints reports; the
//! math lives in the library crates.

mod inspect;
mod score;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "flix",
    version,
    about = "Featurized Low-rank Mixtures: multitask, multilingual fine-tuning"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a mixture of JSONL files as a grid of feature values (examples and tokens per cell).
    Inspect(inspect::InspectArgs),
    /// Per-example loss and per-token log-likelihood of a JSONL file under a model.
    Score(score::ScoreArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Score(args) => score::run(args),
    }
}
