use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<LlamaConfig> {
    LlamaConfig::from_json_str(text, Path::new("config.json"))
}

/// As transformers 4.x writes Llama 3.2 1B (abridged): rope_theta + rope_scaling.
const LLAMA3_V4: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
  "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
  "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
  "rms_norm_eps": 1e-05, "vocab_size": 128256, "tie_word_embeddings": true,
  "attention_bias": false, "max_position_embeddings": 131072,
  "rope_theta": 500000.0,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}
}"#;

#[test]
fn transformers_4_llama3_config() {
    let c = parse(LLAMA3_V4).unwrap();
    assert_eq!(c.family, Family::Llama);
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (2048, 8192, 16)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (32, 8, 64)
    );
    assert_eq!(c.vocab_size, 128256);
    assert!(c.tie_word_embeddings && !c.qkv_bias && !c.o_bias);
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(
        c.rope_scaling,
        RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0
        }
    );
}

#[test]
fn transformers_5_rope_parameters_give_the_same_config() {
    let v5 = LLAMA3_V4.replace(
        r#""rope_theta": 500000.0,
  "rope_scaling": {"#,
        r#""rope_parameters": {"rope_theta": 500000.0, "#,
    );
    assert!(v5.contains("rope_parameters") && !v5.contains("rope_scaling"));
    assert_eq!(parse(&v5).unwrap(), parse(LLAMA3_V4).unwrap());
}

#[test]
fn derived_head_dim_default_kv_heads_and_default_rope() {
    // TinyLlama-like, 5.x default rope, no head_dim, no num_key_value_heads.
    let c = parse(
        r#"{"model_type": "llama", "hidden_size": 256, "intermediate_size": 512,
            "num_hidden_layers": 2, "num_attention_heads": 8, "rms_norm_eps": 1e-6,
            "vocab_size": 1000, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}"#,
    )
    .unwrap();
    assert_eq!((c.head_dim, c.num_key_value_heads), (32, 8));
    assert_eq!(c.rope_scaling, RopeScaling::Default);
    assert!(!c.tie_word_embeddings);
}

#[test]
fn qwen2_has_qkv_bias_and_mistral_keeps_its_window() {
    let base = r#""hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
        "vocab_size": 100, "rope_theta": 1000000.0"#;
    let q = parse(&format!(r#"{{"model_type": "qwen2", {base}}}"#)).unwrap();
    assert!(q.qkv_bias && !q.o_bias && q.family == Family::Qwen2);
    let m = parse(&format!(
        r#"{{"model_type": "mistral", "sliding_window": 4096, {base}}}"#
    ))
    .unwrap();
    assert_eq!(m.sliding_window, Some(4096));
    assert!(!m.qkv_bias);
}

#[test]
fn errors_name_the_field() {
    let missing = LLAMA3_V4.replace(r#""intermediate_size": 8192,"#, "");
    let err = parse(&missing).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("`intermediate_size`"),
        "{err}"
    );

    let gpt2 = LLAMA3_V4.replace(r#""model_type": "llama""#, r#""model_type": "gpt2""#);
    let err = parse(&gpt2).unwrap_err().to_string();
    assert!(
        err.contains("unsupported architecture") && err.contains("gpt2"),
        "{err}"
    );

    let yarn = LLAMA3_V4.replace(r#""rope_type": "llama3""#, r#""rope_type": "yarn""#);
    let err = parse(&yarn).unwrap_err().to_string();
    assert!(
        err.contains("rope_scaling.rope_type") && err.contains("yarn"),
        "{err}"
    );

    let no_factor = LLAMA3_V4.replace(r#""factor": 32.0, "#, "");
    let err = parse(&no_factor).unwrap_err().to_string();
    assert!(err.contains("`rope_scaling.factor`"), "{err}");

    let bad_type = LLAMA3_V4.replace(r#""vocab_size": 128256"#, r#""vocab_size": "many""#);
    let err = parse(&bad_type).unwrap_err().to_string();
    assert!(
        err.contains("`vocab_size`") && err.contains("many"),
        "{err}"
    );

    let gqa = LLAMA3_V4.replace(r#""num_key_value_heads": 8"#, r#""num_key_value_heads": 5"#);
    assert!(parse(&gqa)
        .unwrap_err()
        .to_string()
        .contains("num_key_value_heads"));
}
