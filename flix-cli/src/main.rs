//! `flix`: the command line of FLix. It parses arguments, shows progress and prints reports; the
//! math lives in the library crates.

mod bench;
mod bench_attention;
mod bench_serve;
mod bench_train;
mod compare;
mod demo;
mod demo_claim;
mod error_report;
mod eval;
mod export;
mod generate;
mod inspect;
mod merge;
mod report;
mod score;
mod serve;
mod text;
mod train;

use std::process::ExitCode;

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
// Parsed once per run: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Print a mixture of JSONL files as a grid of feature values (examples and tokens per cell).
    Inspect(inspect::InspectArgs),
    /// Benchmark the FLix layer against the base GEMM, per shape (BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Training-step tokens/s and peak memory of a TinyLlama-shaped model with FLix adapters.
    BenchTrain(bench_train::BenchTrainArgs),
    /// Load test of the completions server: tokens/s and latency per concurrency level, with
    /// mixed or fixed feature combinations (BENCHMARKS.md, Serving).
    BenchServe(bench_serve::BenchServeArgs),
    /// Attention forward and backward in TFLOP/s: causal packed segments, grouped-query heads,
    /// sliding windows (its PyTorch peer: benches/peers/attention_peer.py).
    BenchAttention(bench_attention::BenchAttentionArgs),
    /// Per-example loss and per-token log-likelihood of a JSONL file under a model.
    Score(score::ScoreArgs),
    /// Train FLix adapters (or a LoRA / full baseline) on JSONL files or a mixture root; --resume
    /// a killed run.
    Train(train::TrainArgs),
    /// Scores per cell of trained runs, as a grid (held-out cells marked with *), and per task.
    Eval(eval::EvalArgs),
    /// FLix vs compute-matched LoRA vs flix+shared over seeds on one base and mixture: runs,
    /// results.json, grid, per-task summary and report. Rerunning resumes.
    Compare(compare::CompareArgs),
    /// The whole pipeline on the built-in mixture: pretrain, FLix vs LoRA, grid. No download.
    Demo(demo::DemoArgs),
    /// Write one feature combination of trained adapters as a PEFT LoRA directory.
    Export(export::ExportArgs),
    /// Merge one feature combination into the base weights: a Hugging Face checkpoint directory.
    Merge(merge::MergeArgs),
    /// Continue prompts under a trained run with one feature combination active.
    Generate(generate::GenerateArgs),
    /// One HTML page: loss curves, heatmaps of a metric per cell, FLix minus LoRA.
    Report(report::ReportArgs),
    /// Serve a trained run over an OpenAI-compatible completions API, every feature combination
    /// batched together.
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error_report::error_report(&error));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchTrain(args) => bench_train::run(args),
        Command::BenchServe(args) => bench_serve::run(args),
        Command::BenchAttention(args) => bench_attention::run(args),
        Command::Score(args) => score::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Export(args) => export::run(args),
        Command::Merge(args) => merge::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Report(args) => report::run(args),
        Command::Serve(args) => serve::run(args),
    }
}
