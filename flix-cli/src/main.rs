//! `flix`: the command line of FLix. It parses arguments, shows progress and prints reports; the
//! math lives in the library crates.

mod bench;
mod bench_train;
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
    /// Benchmark the FLix layer against the base GEMM (issue 3).
    Bench(bench::BenchArgs),
    /// Training-step tokens/s and peak memory of a TinyLlama-shaped model with FLix (issue 4).
    BenchTrain(bench_train::BenchTrainArgs),
    /// Per-example loss and per-token log-likelihood of a JSONL file under a model.
    Score(score::ScoreArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchTrain(args) => bench_train::run(args),
        Command::Score(args) => score::run(args),
    }
}
