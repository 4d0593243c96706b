//! Random initialisation and saving: a random model written with `save_pretrained` loads back
//! (through the same strict loader as any Hugging Face directory) as the same model, with the
//! same config, and its weights have transformers' init statistics.

use flix_kernels::Device;
use flix_model::llama::INIT_STD;
use flix_model::{Batch, LlamaConfig, LlamaModel, Sequence};

fn config(json: &str) -> LlamaConfig {
    LlamaConfig::from_json_str(json, "test config".as_ref()).unwrap()
}

const LLAMA3: &str = r#"{"model_type": "llama", "hidden_size": 32, "intermediate_size": 48,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5, "vocab_size": 50, "tie_word_embeddings": false,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}"#;

const QWEN2: &str = r#"{"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 48,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 1,
    "rms_norm_eps": 1e-6, "vocab_size": 50, "tie_word_embeddings": true, "rope_theta": 1e6}"#;

/// Two local layers around a global one, a window shorter than the test sequence, a rope per
/// layer type and head_dim != hidden / heads.
const GEMMA3: &str = r#"{"model_type": "gemma3_text", "hidden_size": 32, "intermediate_size": 48,
    "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 24,
    "query_pre_attn_scalar": 20, "sliding_window": 2, "sliding_window_pattern": 2,
    "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 4.0,
      "rope_theta": 1e6}, "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
    "vocab_size": 50}"#;

#[test]
fn saved_random_models_load_back_identically() {
    let batch = Batch::new(&[Sequence::prompt_and_target(vec![3, 14, 15, 9, 26], 1)]).unwrap();
    for text in [LLAMA3, QWEN2, GEMMA3] {
        let cfg = config(text);
        let mut model = LlamaModel::random(cfg.clone(), 7, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save_pretrained(dir.path()).unwrap();
        let loaded = LlamaModel::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(loaded.config, cfg);
        assert_eq!(
            loaded
                .logits(&loaded.upload(&batch).unwrap())
                .unwrap()
                .to_f32_vec()
                .unwrap(),
            model
                .logits(&model.upload(&batch).unwrap())
                .unwrap()
                .to_f32_vec()
                .unwrap()
        );
        // No temporary files left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}

/// Gemma's norms compute x̂ · (1 + w): the identity norm the model keeps as 1 is written as
/// transformers' w = 0 (Llama's as w = 1).
#[test]
fn saved_norm_weights_are_in_transformers_convention() {
    for (text, identity) in [(LLAMA3, 1.0), (GEMMA3, 0.0)] {
        let mut model = LlamaModel::random(config(text), 3, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        model.save_pretrained(dir.path()).unwrap();
        let ck = flix_model::Checkpoint::open(dir.path()).unwrap();
        let mut norms = 0;
        for name in ck.names() {
            if name.ends_with("norm.weight") {
                let len = ck.view(name).unwrap().0.shape()[0];
                let w = ck.load_f32(name, &[len]).unwrap();
                assert!(w.iter().all(|&x| x == identity), "{name}: {w:?}");
                norms += 1;
            }
        }
        // Llama: 2 per layer + final; Gemma: 6 per layer + final.
        let layers = model.config.num_hidden_layers;
        let per_layer = if identity == 0.0 { 6 } else { 2 };
        assert_eq!(norms, per_layer * layers + 1, "{text}");
    }
}

#[test]
fn random_init_has_transformers_statistics() {
    let mut model = LlamaModel::random(config(QWEN2), 1, &Device::Cpu).unwrap();
    let other = LlamaModel::random(config(QWEN2), 2, &Device::Cpu).unwrap();
    assert_ne!(
        model.embed.value.to_f32_vec().unwrap(),
        other.embed.value.to_f32_vec().unwrap()
    );
    let mut weights = Vec::new();
    for p in model.params_mut() {
        let v = p.value.to_f32_vec().unwrap();
        if p.name.ends_with("norm.weight") {
            assert!(v.iter().all(|&x| x == 1.0), "{}", p.name);
        } else if p.name.ends_with(".bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{}", p.name);
        } else {
            weights.extend(v);
        }
    }
    let n = weights.len() as f64;
    let mean = weights.iter().map(|&x| x as f64).sum::<f64>() / n;
    let std = (weights
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    assert!(mean.abs() < 0.1 * INIT_STD, "mean {mean}");
    assert!((std / INIT_STD - 1.0).abs() < 0.03, "std {std}");
}
