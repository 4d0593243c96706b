//! `flix bench-train`: training-step throughput and peak device memory of a TinyLlama-1.1B-shaped
//! model (random weights), or of a real model given with `--model` (a directory or a GGUF file),
//! with FLix adapters on every projection. Its PyTorch peer is
//! `benches/peers/train_peer.py`, run in the same device call by `scripts/gpu-remote.sh`;
//! BENCHMARKS.md has the method and results.
//!
//! One step is what a trainer does: zero the gradients, forward + backward over a packed batch
//! of `--batch` sequences of `--seq-len` tokens whose examples have different features, and one
//! AdamW update of the adapters. Tokens/s counts every token of the batch.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use flix_core::{splitmix64, TypeShape};
use flix_kernels::ops::adamw::AdamWParams;
use flix_kernels::{DType, Device};
use flix_model::{
    AdamW, AdapterSpec, AdapterType, Batch, LlamaConfig, LlamaModel, ModelSource, Sequence,
    TargetModule, TrainMode,
};

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Weights and activations: f32 or bf16 (bf16 needs CUDA). Default: bf16 on CUDA, f32 on CPU.
    #[arg(long)]
    dtype: Option<String>,
    /// A real base model instead of random weights: a Hugging Face directory or a GGUF file
    /// (e.g. Gemma 3 270M from scripts/fetch_gemma3_gguf.sh).
    #[arg(long, conflicts_with_all = ["tiny", "small"])]
    model: Option<PathBuf>,
    /// A 2-layer, 64-wide model with 4 sequences of 64 tokens: a smoke test in seconds.
    #[arg(long, conflicts_with = "small")]
    tiny: bool,
    /// A 4-layer, 256-wide model (vocab 8192) with 4 sequences of 256 tokens: the CPU
    /// throughput figure of BENCHMARKS.md.
    #[arg(long)]
    small: bool,
    /// Sequences per batch (default 8; 4 with --tiny or --small).
    #[arg(long)]
    batch: Option<usize>,
    /// Tokens per sequence (default 1024; 64 with --tiny, 256 with --small).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// TinyLlama-1.1B's config (random weights), or a tiny or small model of the same family.
fn config(args: &BenchTrainArgs) -> Result<LlamaConfig> {
    let (hidden, inter, layers, heads, kv_heads, vocab) = if args.tiny {
        (64, 172, 2, 4, 2, 512)
    } else if args.small {
        (256, 688, 4, 4, 2, 8192)
    } else {
        (2048, 5632, 22, 32, 4, 32000)
    };
    let json = serde_json::json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
        "max_position_embeddings": 2048,
    });
    Ok(LlamaConfig::from_json_str(
        &json.to_string(),
        "bench-train config".as_ref(),
    )?)
}

/// The two feature types: r = 16 each, 8 and 4 values (say, languages and tasks).
const TYPES: [TypeShape; 2] = [
    TypeShape {
        rank: 16,
        num_values: 8,
    },
    TypeShape {
        rank: 16,
        num_values: 4,
    },
];

/// Samples the device memory in use (total − free, the whole process's view from the driver)
/// every millisecond on a side thread while the steps run; the maximum seen is the peak.
struct MemoryPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MemoryPeak {
    fn start(device: &Device) -> Result<Option<Self>> {
        let Device::Cuda(backend) = device else {
            return Ok(None);
        };
        let (free, total) = backend.memory_info()?;
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicUsize::new(total - free));
        let (b, s, p) = (backend.clone(), stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok((free, total)) = b.memory_info() {
                    p.fetch_max(total - free, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        Ok(Some(Self {
            stop,
            peak,
            thread: Some(thread),
        }))
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

pub fn run(args: BenchTrainArgs) -> Result<()> {
    let device = Device::parse(&args.device)?;
    let dtype = match args.dtype.as_deref() {
        None => flix_model::llama::default_dtype(&device),
        Some("f32") => DType::F32,
        Some("bf16") => DType::BF16,
        Some(other) => bail!("unknown dtype {other:?}; use f32 or bf16"),
    };
    let batch_size = args
        .batch
        .unwrap_or(if args.tiny || args.small { 4 } else { 8 });
    let seq_len = args.seq_len.unwrap_or(match (args.tiny, args.small) {
        (true, _) => 64,
        (_, true) => 256,
        _ => 1024,
    });
    if batch_size == 0 || seq_len < 2 || args.steps == 0 {
        bail!("need --batch ≥ 1, --seq-len ≥ 2 and --steps ≥ 1");
    }
    let memory_before_model = match &device {
        Device::Cuda(b) => Some(b.memory_info()?),
        Device::Cpu => None,
    };
    let built = Instant::now();
    let mut model = match &args.model {
        Some(path) => ModelSource::open(path)?.load_as(&device, dtype)?,
        None => LlamaModel::random_as(config(&args)?, 0, &device, dtype)?,
    };
    model.set_train_mode(TrainMode::Adapters)?;
    let spec = AdapterSpec {
        types: TYPES
            .iter()
            .map(|t| AdapterType {
                rank: t.rank,
                alpha: 2.0 * t.rank as f64,
                num_values: t.num_values,
            })
            .collect(),
        targets: TargetModule::ALL.to_vec(),
        seed: 0,
    };
    model.attach_adapters(&spec)?;
    eprintln!("built the model in {:.1} s", built.elapsed().as_secs_f64());

    // Mixed features: example b has value b mod 8 of the first type and b mod 4 of the second,
    // except that every third example lacks the second type.
    let vocab = model.config.vocab_size as u64;
    let seqs: Vec<Sequence> = (0..batch_size)
        .map(|b| {
            let ids = (0..seq_len)
                .map(|t| (splitmix64((b * seq_len + t) as u64) % vocab) as u32)
                .collect();
            let features = vec![(b % 8) as i32, if b % 3 == 2 { -1 } else { (b % 4) as i32 }];
            Sequence::prompt_and_target(ids, 1).with_features(features)
        })
        .collect();
    let batch = model.upload(&Batch::new(&seqs)?)?;
    let mut optim = AdamW::new(AdamWParams::default(), Some(1.0));

    let mut step = |model: &mut LlamaModel| -> Result<f64> {
        model.zero_grad()?;
        let report = model.forward_backward(&batch)?;
        optim.step(model)?;
        Ok(report.loss)
    };
    // FLIX_PROFILE=1 times every op of one extra step after the timed ones (timing each op
    // synchronizes the device, which would distort the timed steps).
    let profiling = flix_kernels::profile::enabled();
    flix_kernels::profile::set_enabled(false);
    for _ in 0..args.warmup {
        step(&mut model)?;
    }
    device.synchronize()?;
    let memory = MemoryPeak::start(&device)?;
    let start = Instant::now();
    let mut loss = 0.0;
    for _ in 0..args.steps {
        loss = step(&mut model)?;
    }
    device.synchronize()?;
    let seconds = start.elapsed().as_secs_f64() / args.steps as f64;
    let peak = memory.map(MemoryPeak::finish);
    let op_times = if profiling {
        flix_kernels::profile::set_enabled(true);
        let _ = flix_kernels::profile::take();
        step(&mut model)?;
        Some(flix_kernels::profile::take())
    } else {
        None
    };
    let tokens = (batch_size * seq_len) as f64;
    let tokens_per_s = tokens / seconds;

    let c = &model.config;
    let model_name = args
        .model
        .as_ref()
        .map_or_else(|| "random weights".to_string(), |p| p.display().to_string());
    println!(
        "flix bench-train on {device} ({dtype}), {model_name}: {} layers, hidden {}, intermediate {}, {} heads \
         ({} KV), vocab {}; batch {batch_size} x {seq_len} tokens; FLix 2 types r=16 (8 and 4 \
         values) on all 7 projections; AdamW on the adapters",
        c.num_hidden_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size
    );
    println!(
        "training step: {:.1} ms, {tokens_per_s:.0} tokens/s (mean of {} steps after {} warm-up; \
         last loss {loss:.4})",
        seconds * 1e3,
        args.steps,
        args.warmup
    );
    if let Some(rows) = &op_times {
        print!(
            "one more step, every op synchronized:\n{}",
            flix_kernels::profile::format(rows)
        );
    }
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    let (peak_gib, before_gib) = match (peak, memory_before_model) {
        (Some(p), Some((free, total))) => {
            let before = total - free;
            println!(
                "peak device memory in use: {:.2} GiB (driver's total − free, sampled every \
                 1 ms; {:.2} GiB were in use before the model: CUDA context)",
                gib(p),
                gib(before)
            );
            (Some(gib(p)), Some(gib(before)))
        }
        _ => (None, None),
    };
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "device": device.to_string(),
            "model": model_name,
            "dtype": dtype.to_string(),
            "layers": c.num_hidden_layers,
            "hidden": c.hidden_size,
            "batch": batch_size,
            "seq_len": seq_len,
            "steps": args.steps,
            "step_ms": seconds * 1e3,
            "tokens_per_s": tokens_per_s,
            "peak_memory_gib": peak_gib,
            "memory_before_model_gib": before_gib,
            "last_loss": loss,
        });
        flix_core::write_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
