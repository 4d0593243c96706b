//! `flix bench-attention`: our attention kernels, forward and backward, over packed causal
//! segments with grouped-query heads and an optional sliding window, in TFLOP/s. Its PyTorch peer
//! is `benches/peers/attention_peer.py` (`scaled_dot_product_attention` on the same shapes, the
//! backend it used named), run in the same device call by `scripts/gpu-remote.sh`.
//!
//! FLOPs count only the (query, key) pairs a query can see: 4 · pairs · head_dim · heads for the
//! forward (Q·Kᵀ and P·V), 2.5 times that for the backward (the usual flash-attention convention:
//! five products, one of them recomputing Q·Kᵀ). The peer counts the same way.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use flix_benches::measure::median_ms;
use flix_core::splitmix64;
use flix_kernels::batch::SegmentStarts;
use flix_kernels::ops::attention::{attention_backward, attention_forward, AttentionShape};
use flix_kernels::{DType, Device, Tensor};
use serde::Serialize;

#[derive(Args, Debug)]
pub struct BenchAttentionArgs {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// f32 or bf16 (bf16 needs CUDA). Default: bf16 on CUDA, f32 on CPU.
    #[arg(long)]
    dtype: Option<String>,
    /// Batches as SEQUENCESxLENGTH, packed into one batch of causal segments.
    #[arg(long, value_delimiter = ',', default_value = "8x1024,4x2048")]
    batches: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "64,128,256")]
    head_dims: Vec<usize>,
    /// Sliding windows; `none` for full causal attention.
    #[arg(long, value_delimiter = ',', default_value = "none,512")]
    windows: Vec<String>,
    #[arg(long, default_value_t = 32)]
    heads: usize,
    #[arg(long, default_value_t = 4)]
    kv_heads: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed samples; the median is reported (a sample repeats short calls to last >= 2 ms).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One measured configuration.
#[derive(Serialize)]
struct Row {
    sequences: usize,
    seq_len: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    window: Option<usize>,
    dtype: String,
    forward_ms: f64,
    backward_ms: f64,
    forward_tflops: f64,
    backward_tflops: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    benchmark: &'static str,
    device: String,
    rows: &'a [Row],
}

/// `8x1024` → (8, 1024).
fn parse_batch(text: &str) -> Result<(usize, usize)> {
    let parsed = text
        .split_once('x')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
    match parsed {
        Some((n, len)) if n >= 1 && len >= 1 => Ok((n, len)),
        _ => bail!("--batches takes SEQUENCESxLENGTH with both >= 1, e.g. 8x1024; found {text:?}"),
    }
}

fn parse_window(text: &str) -> Result<Option<usize>> {
    match text.trim() {
        "none" => Ok(None),
        w => match w.parse::<usize>() {
            Ok(w) if w >= 1 => Ok(Some(w)),
            _ => bail!("--windows takes `none` or a length >= 1, found {text:?}"),
        },
    }
}

/// Visible (query, key) pairs of one causal segment of `len` tokens.
pub fn visible_pairs(len: usize, window: Option<usize>) -> u64 {
    (0..len)
        .map(|i| (i + 1).min(window.unwrap_or(usize::MAX)) as u64)
        .sum()
}

fn random(device: &Device, dtype: DType, shape: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n as u64)
        .map(|i| (splitmix64(seed ^ i) >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        .collect();
    Ok(Tensor::from_f32(device, dtype, shape, &data)?)
}

pub fn run(args: BenchAttentionArgs) -> Result<()> {
    let device = Device::parse(&args.device)?;
    let dtype = match args.dtype.as_deref() {
        None if device.is_cuda() => DType::BF16,
        None | Some("f32") => DType::F32,
        Some("bf16") if device.is_cuda() => DType::BF16,
        Some("bf16") => bail!("--dtype bf16 needs a CUDA device"),
        Some(other) => bail!("--dtype takes f32 or bf16, found {other:?}"),
    };
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    if args.heads == 0 || args.kv_heads == 0 || !args.heads.is_multiple_of(args.kv_heads) {
        bail!(
            "--heads ({}) must be a positive multiple of --kv-heads ({})",
            args.heads,
            args.kv_heads
        );
    }
    let batches = args
        .batches
        .iter()
        .map(|b| parse_batch(b))
        .collect::<Result<Vec<_>>>()?;
    let windows = args
        .windows
        .iter()
        .map(|w| parse_window(w))
        .collect::<Result<Vec<_>>>()?;
    println!(
        "attention on {device}, {dtype:?}, {} heads / {} KV heads, median of {} runs",
        args.heads, args.kv_heads, args.iters
    );
    println!(
        "{:>10} {:>4} {:>7} {:>10} {:>10} {:>10} {:>10}",
        "batch", "hd", "window", "fwd ms", "fwd TF/s", "bwd ms", "bwd TF/s"
    );
    let mut rows = Vec::new();
    for &(sequences, seq_len) in &batches {
        let t = sequences * seq_len;
        let starts: Vec<usize> = (0..=sequences).map(|s| s * seq_len).collect();
        let segments = SegmentStarts::new(&device, &starts)?;
        for &hd in &args.head_dims {
            let q = random(&device, dtype, &[t, args.heads * hd], 1)?;
            let k = random(&device, dtype, &[t, args.kv_heads * hd], 2)?;
            let v = random(&device, dtype, &[t, args.kv_heads * hd], 3)?;
            let dout = random(&device, dtype, &[t, args.heads * hd], 4)?;
            for &window in &windows {
                let shape = AttentionShape {
                    window,
                    ..AttentionShape::new(args.heads, args.kv_heads, hd)
                };
                let context = || format!("{sequences}x{seq_len}, head_dim {hd}, window {window:?}");
                let (out, lse) =
                    attention_forward(&q, &k, &v, &segments, shape).with_context(context)?;
                let forward_ms = median_ms(&device, args.warmup, args.iters, || {
                    attention_forward(&q, &k, &v, &segments, shape).map(drop)
                })
                .with_context(context)?;
                let backward_ms = median_ms(&device, args.warmup, args.iters, || {
                    attention_backward(&dout, &q, &k, &v, &out, &lse, &segments, shape).map(drop)
                })
                .with_context(context)?;
                let pairs = sequences as f64 * visible_pairs(seq_len, window) as f64;
                let forward_flop = 4.0 * pairs * hd as f64 * args.heads as f64;
                let row = Row {
                    sequences,
                    seq_len,
                    heads: args.heads,
                    kv_heads: args.kv_heads,
                    head_dim: hd,
                    window,
                    dtype: format!("{dtype:?}").to_lowercase(),
                    forward_ms,
                    backward_ms,
                    forward_tflops: forward_flop / (forward_ms * 1e-3) / 1e12,
                    backward_tflops: 2.5 * forward_flop / (backward_ms * 1e-3) / 1e12,
                };
                println!(
                    "{:>10} {:>4} {:>7} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
                    format!("{sequences}x{seq_len}"),
                    hd,
                    window.map_or("none".into(), |w| w.to_string()),
                    row.forward_ms,
                    row.forward_tflops,
                    row.backward_ms,
                    row.backward_tflops
                );
                rows.push(row);
            }
        }
    }
    if let Some(path) = &args.json {
        let report = Report {
            benchmark: "attention",
            device: device.to_string(),
            rows: &rows,
        };
        let text = serde_json::to_string_pretty(&report)?;
        flix_core::write_atomic(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_pairs_count_the_causal_triangle_cut_by_the_window() {
        // Brute force over the mask itself: i − window < j ≤ i.
        for (len, window) in [
            (1, None),
            (7, None),
            (7, Some(3)),
            (10, Some(1)),
            (5, Some(9)),
        ] {
            let mut want = 0;
            for i in 0..len {
                for j in 0..=i {
                    if window.is_none_or(|w| i - j < w) {
                        want += 1;
                    }
                }
            }
            assert_eq!(visible_pairs(len, window), want, "{len} {window:?}");
        }
    }

    #[test]
    fn batch_and_window_options_are_checked() {
        assert_eq!(parse_batch("8x1024").unwrap(), (8, 1024));
        for bad in ["8", "0x5", "x", "8x-1", "ax2"] {
            assert!(parse_batch(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_window("none").unwrap(), None);
        assert_eq!(parse_window("512").unwrap(), Some(512));
        assert!(parse_window("0").is_err());
    }
}
