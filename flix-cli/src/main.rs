//! `flix`: the command line of FLix. It parses arguments, shows progress and prints reports; the
//! math lives in the library crates.

use clap::{Parser, Subcommand};

mod bench;

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
    /// Benchmark the FLix layer against the base GEMM (issue 3).
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => bench::run(args),
    }
}
