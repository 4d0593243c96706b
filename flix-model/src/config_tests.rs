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
    // Bit for bit the attention's default scale (the CUDA launcher accepts only that one).
    let default = flix_kernels::ops::attention::AttentionShape::new(32, 8, 64);
    assert_eq!(c.attention_scale(), default.scale);
    assert_eq!((c.layer_window(0), c.sliding_window), (None, None));
    assert_eq!(c.gate_activation(), GateActivation::Silu);
    assert_eq!((c.norm_weight_offset(), c.embedding_scale()), (0.0, None));
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
fn qwen3_has_qk_norms_its_own_head_dim_default_and_one_bias_switch() {
    // Qwen3-0.6B's config (transformers 4.x layout).
    let real = r#"{"architectures": ["Qwen3ForCausalLM"], "attention_bias": false,
        "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
        "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "initializer_range": 0.02,
        "intermediate_size": 3072, "max_position_embeddings": 40960, "max_window_layers": 28,
        "model_type": "qwen3", "num_attention_heads": 16, "num_hidden_layers": 28,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": null,
        "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true,
        "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false,
        "vocab_size": 151936}"#;
    let c = parse(real).unwrap();
    assert_eq!(c.family, Family::Qwen3);
    assert!(c.has_qk_norm() && !c.qkv_bias && !c.o_bias && c.tie_word_embeddings);
    assert_eq!((c.head_dim, c.q_dim(), c.kv_dim()), (128, 2048, 1024));
    assert_eq!(c.sliding_window, None);
    assert_eq!(c.rope_theta, 1e6);
    // Written back and read again: the same config.
    let back = c.to_hf_json().to_string();
    assert_eq!(parse(&back).unwrap(), c);

    // No head_dim: Qwen3Config's 128, not hidden / heads.
    let c = parse(&real.replace(r#""head_dim": 128,"#, "")).unwrap();
    assert_eq!(c.head_dim, 128);
    // attention_bias puts a bias on q, k, v and o alike (Qwen2 has q/k/v biases always).
    let c =
        parse(&real.replace(r#""attention_bias": false"#, r#""attention_bias": true"#)).unwrap();
    assert!(c.qkv_bias && c.o_bias);
    // A sliding window from max_window_layers on, as Qwen2's.
    let windowed = real
        .replace(
            r#""use_sliding_window": false"#,
            r#""use_sliding_window": true"#,
        )
        .replace(r#""sliding_window": null"#, r#""sliding_window": 4096"#)
        .replace(r#""max_window_layers": 28"#, r#""max_window_layers": 20"#);
    let c = parse(&windowed).unwrap();
    assert_eq!(c.sliding_window, Some(4096));
    assert_eq!(c.layer_window(19), None);
    assert_eq!(c.layer_window(20), Some(4096));
    assert_eq!(parse(&c.to_hf_json().to_string()).unwrap(), c);
    // The other families have no q/k norms but Gemma 3.
    let q2 = parse(&real.replace(r#""model_type": "qwen3""#, r#""model_type": "qwen2""#)).unwrap();
    assert!(!q2.has_qk_norm());
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

/// Gemma 3 270M's `config.json` as transformers 4.5x writes it: 4.x rope (`rope_theta`,
/// `rope_local_base_freq`, `rope_scaling`), the window pattern and the layer types.
const GEMMA3_270M_V4: &str = r#"{
  "_sliding_window_pattern": 6, "architectures": ["Gemma3ForCausalLM"],
  "attention_bias": false, "attention_dropout": 0.0, "attn_logit_softcapping": null,
  "bos_token_id": 2, "eos_token_id": 1, "final_logit_softcapping": null, "head_dim": 256,
  "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 640, "initializer_range": 0.02,
  "intermediate_size": 2048,
  "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention",
    "sliding_attention", "sliding_attention", "full_attention", "sliding_attention",
    "sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention",
    "full_attention", "sliding_attention", "sliding_attention", "sliding_attention",
    "sliding_attention", "sliding_attention", "full_attention"],
  "max_position_embeddings": 32768, "model_type": "gemma3_text", "num_attention_heads": 4,
  "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0,
  "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0,
  "rope_scaling": null, "rope_theta": 1000000.0, "sliding_window": 512,
  "torch_dtype": "bfloat16", "transformers_version": "4.55.0.dev0",
  "use_bidirectional_attention": false, "use_cache": true, "vocab_size": 262144
}"#;

#[test]
fn gemma3_270m_config_of_transformers_4() {
    let c = parse(GEMMA3_270M_V4).unwrap();
    assert_eq!(c.family, Family::Gemma3);
    assert_eq!(
        (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
        (640, 2048, 18)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (4, 1, 256)
    );
    assert_eq!((c.vocab_size, c.sliding_window), (262144, Some(512)));
    assert!(c.tie_word_embeddings && !c.qkv_bias && !c.o_bias);
    for i in 0..18 {
        let global = (i + 1) % 6 == 0;
        assert_eq!(c.layer_window(i), (!global).then_some(512), "layer {i}");
        let theta = if global { 1e6 } else { 1e4 };
        assert_eq!(
            c.layer_rope(i),
            Rope {
                theta,
                scaling: RopeScaling::Default
            },
            "layer {i}"
        );
    }
    assert_eq!(c.attention_scale(), 1.0 / 16.0);
    assert_eq!(c.gate_activation(), GateActivation::GeluTanh);
    assert_eq!(c.norm_weight_offset(), 1.0);
    assert_eq!(c.embedding_scale(), Some(640f64.sqrt() as f32));
    // Without `layer_types`, the pattern (every 6th layer global) gives the same layers.
    let start = GEMMA3_270M_V4.find(r#""layer_types""#).unwrap();
    let end = GEMMA3_270M_V4.find(r#""max_position_embeddings""#).unwrap();
    let mut no_types = GEMMA3_270M_V4.to_string();
    no_types.replace_range(start..end, "");
    assert_eq!(parse(&no_types).unwrap(), c);
}

#[test]
fn gemma3_rope_parameters_per_layer_type_give_the_same_config() {
    let v5 = GEMMA3_270M_V4
        .replace(
            r#""rope_local_base_freq": 10000.0,
  "rope_scaling": null, "rope_theta": 1000000.0,"#,
            r#""rope_parameters": {
    "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},"#,
        )
        .replace(r#""_sliding_window_pattern": 6, "#, "");
    assert!(v5.contains("rope_parameters") && !v5.contains("rope_local_base_freq"));
    assert_eq!(parse(&v5).unwrap(), parse(GEMMA3_270M_V4).unwrap());
    // transformers 5 lays a 4.x rope_scaling over the global layers' rope: read when the two
    // agree, refused when they do not.
    let with_scaling = |scaling: &str| {
        v5.replace(
            r#""rope_parameters": {"#,
            &format!(r#""rope_scaling": {scaling}, "rope_parameters": {{"#),
        )
    };
    assert_eq!(
        parse(&with_scaling(r#"{"rope_type": "default"}"#)).unwrap(),
        parse(GEMMA3_270M_V4).unwrap()
    );
    let err = parse(&with_scaling(r#"{"rope_type": "linear", "factor": 8.0}"#))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`rope_scaling`") && err.contains("keep one"),
        "{err}"
    );
}

/// Gemma 3 4B's multimodal config (abridged) as transformers 4.50 wrote it: the text model is
/// `text_config`, which leaves head_dim, rms_norm_eps, query_pre_attn_scalar and the rope
/// thetas to Gemma3TextConfig's defaults, and scales the global rope linearly.
#[test]
fn gemma3_multimodal_config_reads_its_text_config_with_transformers_defaults() {
    let c = parse(
        r#"{"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
            "boi_token_index": 255999, "mm_tokens_per_image": 256,
            "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
              "model_type": "gemma3_text", "num_hidden_layers": 34, "num_attention_heads": 8,
              "num_key_value_heads": 4, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
              "sliding_window": 1024, "sliding_window_pattern": 6, "vocab_size": 262208},
            "vision_config": {"hidden_size": 1152, "model_type": "siglip_vision_model"}}"#,
    )
    .unwrap();
    assert_eq!(c.family, Family::Gemma3);
    assert_eq!((c.head_dim, c.rms_norm_eps), (256, 1e-6));
    assert_eq!(c.attention_scale(), 1.0 / 16.0);
    assert!(c.tie_word_embeddings);
    assert_eq!(
        c.layer_rope(5),
        Rope {
            theta: 1e6,
            scaling: RopeScaling::Linear { factor: 8.0 }
        }
    );
    assert_eq!(
        c.layer_rope(0),
        Rope {
            theta: 1e4,
            scaling: RopeScaling::Default
        }
    );
    assert_eq!((c.layer_window(0), c.layer_window(5)), (Some(1024), None));

    let err = parse(r#"{"model_type": "gemma3", "text_config": {"model_type": "llama"}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`text_config.model_type`"), "{err}");
    let err = parse(r#"{"model_type": "gemma3", "text_config": {"hidden_size": 0}}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`text_config.hidden_size`"), "{err}");
}

#[test]
fn gemma3_features_we_do_not_compute_are_refused() {
    for (from, to, field) in [
        (
            r#""final_logit_softcapping": null"#,
            r#""final_logit_softcapping": 30.0"#,
            "`final_logit_softcapping`",
        ),
        (
            r#""attn_logit_softcapping": null"#,
            r#""attn_logit_softcapping": 50.0"#,
            "`attn_logit_softcapping`",
        ),
        (
            r#""hidden_activation": "gelu_pytorch_tanh""#,
            r#""hidden_activation": "gelu""#,
            "`hidden_activation`",
        ),
        (
            r#""use_bidirectional_attention": false"#,
            r#""use_bidirectional_attention": true"#,
            "`use_bidirectional_attention`",
        ),
        (
            r#""sliding_attention", "full_attention"],"#,
            r#""sliding_attention"],"#,
            "`layer_types`",
        ),
        (
            r#""sliding_attention", "full_attention"],"#,
            r#""sliding_attention", "chunked_attention"],"#,
            "`layer_types`",
        ),
    ] {
        let text = GEMMA3_270M_V4.replace(from, to);
        assert_ne!(text, GEMMA3_270M_V4, "{from}");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(field), "{to}: {err}");
    }
}

#[test]
fn impossible_values_are_errors_naming_the_field() {
    let cases = [
        (
            LLAMA3_V4,
            r#""rms_norm_eps": 1e-05"#,
            r#""rms_norm_eps": 0.0"#,
            "`rms_norm_eps`",
        ),
        (
            LLAMA3_V4,
            r#""rms_norm_eps": 1e-05"#,
            r#""rms_norm_eps": -1e-5"#,
            "`rms_norm_eps`",
        ),
        (
            LLAMA3_V4,
            r#""rope_theta": 500000.0"#,
            r#""rope_theta": 0"#,
            "`rope_theta`",
        ),
        (
            LLAMA3_V4,
            r#""factor": 32.0"#,
            r#""factor": 0.0"#,
            "`rope_scaling.factor`",
        ),
        (
            LLAMA3_V4,
            r#""factor": 32.0"#,
            r#""factor": -2.0"#,
            "`rope_scaling.factor`",
        ),
        (
            LLAMA3_V4,
            r#""hidden_size": 2048"#,
            r#""hidden_size": 0"#,
            "`hidden_size`",
        ),
        (
            LLAMA3_V4,
            r#""intermediate_size": 8192"#,
            r#""intermediate_size": 0"#,
            "`intermediate_size`",
        ),
        (
            LLAMA3_V4,
            r#""num_hidden_layers": 16"#,
            r#""num_hidden_layers": 0"#,
            "`num_hidden_layers`",
        ),
        (
            LLAMA3_V4,
            r#""num_attention_heads": 32"#,
            r#""num_attention_heads": 0"#,
            "`num_attention_heads`",
        ),
        (
            LLAMA3_V4,
            r#""num_key_value_heads": 8"#,
            r#""num_key_value_heads": 0"#,
            "`num_key_value_heads`",
        ),
        (
            LLAMA3_V4,
            r#""head_dim": 64"#,
            r#""head_dim": 0"#,
            "`head_dim`",
        ),
        (
            LLAMA3_V4,
            r#""vocab_size": 128256"#,
            r#""vocab_size": 0"#,
            "`vocab_size`",
        ),
        (
            GEMMA3_270M_V4,
            r#""sliding_window": 512"#,
            r#""sliding_window": 0"#,
            "`sliding_window`",
        ),
        (
            GEMMA3_270M_V4,
            r#""rope_local_base_freq": 10000.0"#,
            r#""rope_local_base_freq": -1"#,
            "`rope_local_base_freq`",
        ),
        (
            GEMMA3_270M_V4,
            r#""query_pre_attn_scalar": 256"#,
            r#""query_pre_attn_scalar": 0"#,
            "`query_pre_attn_scalar`",
        ),
        (
            GEMMA3_270M_V4,
            r#""rms_norm_eps": 1e-06"#,
            r#""rms_norm_eps": 0"#,
            "`rms_norm_eps`",
        ),
    ];
    for (base, from, to, field) in cases {
        let text = base.replace(from, to);
        assert_ne!(text, base, "{from}");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains(field) && err.contains("config.json"),
            "{to}: {err}"
        );
    }
    let v5 = r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 1, "num_attention_heads": 4, "rms_norm_eps": 1e-6,
        "vocab_size": 100, "rope_parameters": {"rope_type": "linear", "rope_theta": 1e4,
        "factor": 0.0}}"#;
    let err = parse(v5).unwrap_err().to_string();
    assert!(err.contains("`rope_parameters.factor`"), "{err}");
}

/// A config with both the 5.x `rope_parameters` and the 4.x `rope_scaling` is read only when
/// the two agree (transformers 5 prefers `rope_scaling`, so ignoring it would change the model);
/// an empty or null `rope_scaling` says nothing. A top-level `rope_theta` is checked either way.
#[test]
fn rope_parameters_beside_rope_scaling_must_agree() {
    let with = |extra: &str| {
        format!(
            r#"{{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 1, "num_attention_heads": 4, "rms_norm_eps": 1e-6,
            "vocab_size": 100, "rope_parameters": {{"rope_type": "linear", "rope_theta": 1e4,
            "factor": 2.0}}{extra}}}"#
        )
    };
    let alone = parse(&with("")).unwrap();
    for same in [
        r#", "rope_scaling": {"type": "linear", "factor": 2.0, "rope_theta": 1e4}"#,
        r#", "rope_theta": 1e4, "rope_scaling": {"rope_type": "linear", "factor": 2.0}"#,
        r#", "rope_scaling": {}"#,
        r#", "rope_scaling": null"#,
    ] {
        assert_eq!(parse(&with(same)).unwrap(), alone, "{same}");
    }
    for (differ, field) in [
        (
            r#", "rope_scaling": {"rope_type": "linear", "factor": 4.0}"#,
            "describe different ropes",
        ),
        (
            r#", "rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#,
            "\"yarn\"",
        ),
        (
            r#", "rope_theta": -1.0"#,
            "`rope_theta` must be a finite number > 0",
        ),
    ] {
        let err = parse(&with(differ)).unwrap_err().to_string();
        assert!(err.contains(field), "{differ}: {err}");
    }
}

#[test]
fn sliding_windows_of_mistral_and_qwen2_follow_transformers() {
    let base = r#""hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
        "vocab_size": 100, "rope_theta": 1000000.0"#;
    // Mistral: every layer slides when the window is set.
    let m = parse(&format!(
        r#"{{"model_type": "mistral", "sliding_window": 8, {base}}}"#
    ))
    .unwrap();
    assert_eq!(m.layer_types, [LayerType::Sliding; 3]);
    assert_eq!(m.layer_window(2), Some(8));
    let m = parse(&format!(
        r#"{{"model_type": "mistral", "sliding_window": null, {base}}}"#
    ))
    .unwrap();
    assert_eq!((m.sliding_window, m.layer_window(0)), (None, None));
    // Qwen2: only with use_sliding_window, from max_window_layers on.
    let q = parse(&format!(
        r#"{{"model_type": "qwen2", "use_sliding_window": true, "sliding_window": 8,
            "max_window_layers": 1, {base}}}"#
    ))
    .unwrap();
    assert_eq!(
        q.layer_types,
        [LayerType::Full, LayerType::Sliding, LayerType::Sliding]
    );
    let q = parse(&format!(
        r#"{{"model_type": "qwen2", "use_sliding_window": false, "sliding_window": 8,
            "max_window_layers": 1, {base}}}"#
    ))
    .unwrap();
    assert_eq!(
        (q.sliding_window, q.layer_types),
        (None, vec![LayerType::Full; 3])
    );
    // Llama has no window, whatever the file says.
    let l = parse(&format!(
        r#"{{"model_type": "llama", "sliding_window": 8, {base}}}"#
    ))
    .unwrap();
    assert_eq!(l.sliding_window, None);
}

/// What `to_hf_json` writes reads back as the same config, for every family.
#[test]
fn hf_json_round_trips() {
    let base = r#""hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
        "vocab_size": 100"#;
    let gemma_scaled = GEMMA3_270M_V4.replace(
        r#""rope_scaling": null"#,
        r#""rope_scaling": {"rope_type": "linear", "factor": 8.0}"#,
    );
    let texts = [
        LLAMA3_V4.to_string(),
        GEMMA3_270M_V4.to_string(),
        gemma_scaled,
        format!(r#"{{"model_type": "mistral", "sliding_window": 8, {base}}}"#),
        format!(
            r#"{{"model_type": "qwen2", "use_sliding_window": true, "sliding_window": 8,
                "max_window_layers": 2, {base}}}"#
        ),
        format!(r#"{{"model_type": "qwen2", {base}}}"#),
    ];
    for text in texts {
        let c = parse(&text).unwrap();
        let again = parse(&c.to_hf_json().to_string()).unwrap();
        assert_eq!(again, c, "{text}");
    }
}
