//! `flix bench`: the FLix layer benchmark (BENCHMARKS.md). For each shape it prints forward and
//! forward+backward median times of (a) the base GEMM alone, (b) the FLix layer, (c) the adapter
//! ops alone with their achieved bandwidth as a fraction of a copy measured in the same run, and
//! the headline ratio (b)/(a). The shapes and the timing live in `flix-benches`; this file only
//! parses arguments and prints.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use flix_benches::{copy_bandwidth, measure, shapes, Row};
use flix_kernels::{DType, Device};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Activation dtype: f32 or bf16 (bf16 needs CUDA). Default: f32 on the CPU, bf16 on CUDA.
    #[arg(long)]
    dtype: Option<String>,
    /// Shape set: reference, all, small or tiny (a smoke test). Default: small on the CPU (about
    /// a minute), all on CUDA.
    #[arg(long)]
    shapes: Option<String>,
    /// Untimed runs before timing each measurement.
    #[arg(long)]
    warmup: Option<usize>,
    /// Timed runs per measurement (the median is reported).
    #[arg(long)]
    iters: Option<usize>,
    /// Also write the table as JSON to this file (with --list-shapes: the shapes instead).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Print the shape set with every segment's length and values as JSON (for the peer script)
    /// instead of running it: to stdout, or to the --json file.
    #[arg(long)]
    list_shapes: bool,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let on_cpu = args.device == "cpu";
    let set_name = args
        .shapes
        .as_deref()
        .unwrap_or(if on_cpu { "small" } else { "all" });
    let Some(set) = shapes::set(set_name) else {
        bail!("unknown shape set {set_name:?}; use reference, all, small or tiny");
    };
    if args.list_shapes {
        let list: Vec<_> = set.iter().map(|s| s.with_batch()).collect();
        let text = serde_json::to_string_pretty(&list)?;
        match &args.json {
            Some(path) => flix_core::write_atomic(path, text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?,
            // Not println!: a closed pipe (`| head`) is an error to report, not a panic.
            None => {
                std::io::Write::write_all(&mut std::io::stdout(), format!("{text}\n").as_bytes())?
            }
        }
        return Ok(());
    }

    let device = Device::parse(&args.device)?;
    let dtype = match args
        .dtype
        .as_deref()
        .unwrap_or(if on_cpu { "f32" } else { "bf16" })
    {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        other => bail!("unknown dtype {other:?}; use f32 or bf16"),
    };
    let warmup = args.warmup.unwrap_or(if on_cpu { 1 } else { 5 });
    let iters = args.iters.unwrap_or(if on_cpu { 5 } else { 20 });
    let device_name = match &device {
        Device::Cpu => format!(
            "cpu ({} threads)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        Device::Cuda(c) => format!("cuda:{} {} ({})", c.ordinal(), c.name(), c.arch()),
    };
    let copy = copy_bandwidth(&device, warmup, iters)?;
    println!(
        "flix bench on {device_name}, {dtype}, median of {iters} runs after {warmup} warm-up; \
         copy bandwidth {:.1} GB/s (read + write)",
        copy / 1e9
    );
    println!(
        "(a) base GEMM alone  (b) FLix layer  (c) adapter ops alone, %copy = (c)'s minimum \
         traffic / time as a fraction of the copy bandwidth"
    );
    println!(
        "{:<12} {:>6} {:>12} {:>4} | {:>9} {:>9} {:>6} {:>9} {:>6} | {:>9} {:>9} {:>6} {:>9} {:>6}",
        "shape",
        "T",
        "d_in x d_out",
        "R",
        "fwd (a)",
        "fwd (b)",
        "b/a",
        "fwd (c)",
        "%copy",
        "f+b (a)",
        "f+b (b)",
        "b/a",
        "f+b (c)",
        "%copy"
    );
    let mut rows: Vec<Row> = Vec::new();
    for shape in &set {
        let row = measure(&device, dtype, shape, warmup, iters, copy)
            .with_context(|| format!("shape {}", shape.name))?;
        let (f, fb) = (&row.forward, &row.forward_backward);
        println!(
            "{:<12} {:>6} {:>12} {:>4} | {:>9.3} {:>9.3} {:>6.3} {:>9.3} {:>5.0}% | {:>9.3} {:>9.3} {:>6.3} {:>9.3} {:>5.0}%",
            shape.name,
            shape.tokens,
            format!("{}x{}", shape.d_in, shape.d_out),
            shape.total_rank(),
            f.base_ms,
            f.flix_ms,
            f.ratio,
            f.adapters_ms,
            100.0 * f.adapters_copy_fraction,
            fb.base_ms,
            fb.flix_ms,
            fb.ratio,
            fb.adapters_ms,
            100.0 * fb.adapters_copy_fraction
        );
        rows.push(row);
    }
    println!("\nadapter ops one at a time (ms): where (c) goes");
    println!(
        "{:<12} | {:>9} {:>9} {:>9}",
        "shape", "shrink", "expand", "backward"
    );
    for row in &rows {
        let o = &row.ops;
        println!(
            "{:<12} | {:>9.3} {:>9.3} {:>9.3}",
            row.shape.name, o.shrink_ms, o.expand_ms, o.backward_ms
        );
    }
    if let Some(path) = &args.json {
        let report = serde_json::json!({
            "device": device_name,
            "dtype": dtype.to_string(),
            "warmup": warmup,
            "iters": iters,
            "copy_bytes_per_s": copy,
            "rows": rows,
        });
        flix_core::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
