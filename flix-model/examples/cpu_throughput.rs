//! CPU training and scoring throughput of a small random Llama with FLix adapters (2 feature
//! types, r = 16, on every projection). A measurement, not a test:
//!
//! ```text
//! cargo run --release -p flix-model --example cpu_throughput [layers] [hidden] [seq_len] [batch]
//! ```
//!
//! Writes a random f32 checkpoint to a temporary directory, loads it like any Hugging Face
//! model, then times `forward_backward` (training step without the optimizer) and `score`.

use std::time::Instant;

use flix_core::{splitmix64, TypeShape};
use flix_kernels::Device;
use flix_model::{AdapterSpec, AdapterType, Batch, LlamaModel, Sequence, TargetModule, TrainMode};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn random(n: usize, seed: u64, scale: f32) -> Vec<u8> {
    (0..n as u64)
        .flat_map(|i| {
            let u = (splitmix64(seed ^ splitmix64(i)) >> 40) as f32 / (1u64 << 24) as f32;
            ((2.0 * u - 1.0) * scale).to_le_bytes()
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (layers, hidden, seq_len, batch_size) = (arg(1, 4), arg(2, 256), arg(3, 256), arg(4, 4));
    let (heads, kv_heads, inter, vocab) =
        (hidden / 64, (hidden / 64).div_ceil(2), hidden * 8 / 3, 8192);
    let dir = tempfile::tempdir()?;
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": hidden, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-5, "vocab_size": vocab, "tie_word_embeddings": true, "rope_theta": 10000.0,
    });
    std::fs::write(dir.path().join("config.json"), config.to_string())?;
    let (q, kv) = (hidden, kv_heads * 64);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, hidden]),
        ("model.norm.weight".into(), vec![hidden]),
    ];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for (name, shape) in [
            ("input_layernorm.weight", vec![hidden]),
            ("post_attention_layernorm.weight", vec![hidden]),
            ("self_attn.q_proj.weight", vec![q, hidden]),
            ("self_attn.k_proj.weight", vec![kv, hidden]),
            ("self_attn.v_proj.weight", vec![kv, hidden]),
            ("self_attn.o_proj.weight", vec![hidden, q]),
            ("mlp.gate_proj.weight", vec![inter, hidden]),
            ("mlp.up_proj.weight", vec![inter, hidden]),
            ("mlp.down_proj.weight", vec![hidden, inter]),
        ] {
            shapes.push((format!("{p}.{name}"), shape));
        }
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let scale = if s.len() == 1 {
                1.0
            } else {
                1.0 / (s[1] as f32).sqrt()
            };
            let bytes = random(s.iter().product(), i as u64, scale);
            (n, s, bytes)
        })
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors"))?;

    let mut model = LlamaModel::load(dir.path(), &Device::Cpu)?;
    model.set_train_mode(TrainMode::Adapters)?;
    let types = [
        TypeShape {
            rank: 16,
            num_values: 90,
        },
        TypeShape {
            rank: 16,
            num_values: 10,
        },
    ];
    let spec = AdapterSpec {
        types: types
            .iter()
            .map(|t| AdapterType {
                rank: t.rank,
                alpha: 32.0,
                num_values: t.num_values,
            })
            .collect(),
        targets: TargetModule::ALL.to_vec(),
        seed: 0,
    };
    model.attach_adapters(&spec)?;
    let seqs: Vec<Sequence> = (0..batch_size)
        .map(|b| {
            let ids = (0..seq_len)
                .map(|t| (splitmix64((b * seq_len + t) as u64) % vocab as u64) as u32)
                .collect();
            Sequence::prompt_and_target(ids, 1)
                .with_features(vec![(b % 90) as i32, (b % 10) as i32])
        })
        .collect();
    let batch = model.upload(&Batch::new(&seqs)?)?;
    let tokens = (batch_size * seq_len) as f64;
    println!(
        "model: {layers} layers, hidden {hidden}, {heads} heads ({kv_heads} KV), intermediate {inter}, vocab {vocab}; \
         batch {batch_size} x {seq_len} tokens; FLix 2 types r=16 on all projections; {} rayon threads",
        rayon::current_num_threads()
    );
    model.forward_backward(&batch)?; // warm-up
    let reps = 3;
    let start = Instant::now();
    for _ in 0..reps {
        model.zero_grad()?;
        model.forward_backward(&batch)?;
    }
    let train = start.elapsed().as_secs_f64() / reps as f64;
    let start = Instant::now();
    for _ in 0..reps {
        model.score(&batch)?;
    }
    let score = start.elapsed().as_secs_f64() / reps as f64;
    println!(
        "forward+backward: {:.0} tokens/s ({train:.3} s per batch)",
        tokens / train
    );
    println!(
        "score (forward):  {:.0} tokens/s ({score:.3} s per batch)",
        tokens / score
    );
    Ok(())
}
