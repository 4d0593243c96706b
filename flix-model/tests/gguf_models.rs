//! GGUF models through [`GgufModel`]: the configuration rebuilt from the metadata must agree with
//! what transformers reads from the same file, and a model loaded from the GGUF's tensors (Hugging
//! Face names and conventions) must compute transformers' logits. Fixtures from
//! `scripts/make_gguf_fixtures.py` (tiny random models converted the way llama.cpp does).
//!
//! With FLIX_GEMMA3_GGUF naming the real Gemma 3 270M GGUF, also checks that model's config and
//! converts every tensor (and, with FLIX_GEMMA3_GGUF_EXPECTED naming the output of
//! `make_gguf_fixtures.py --dump-real`, compares a few tensors with gguf-py's conversion).

use std::path::{Path, PathBuf};

use flix_kernels::tolerance::Tolerance;
use flix_kernels::{DType, Device};
use flix_model::gguf::{GgufArchitecture, GgufFile, GgufModel};
use flix_model::{Batch, LlamaModel, Sequence, TensorSource};
use safetensors::SafeTensors;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

fn json_file(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

/// Every field transformers read from the GGUF (`<stem>.config.json`) must be in `hf_config` with
/// the same value, except those transformers fills with its own default where llama.cpp's differs.
fn check_config_matches_transformers(stem: &str, model: &GgufModel) {
    let config = model.hf_config();
    let read = json_file(&format!("{stem}.config.json"));
    for (key, want) in read.as_object().unwrap() {
        let got = &config[key];
        // transformers gives Qwen2 and Qwen3 an explicit null window and per-layer types; both
        // mean "all layers global", which is also what a config without them means.
        let qwen = stem == "tiny-qwen2" || stem == "tiny-qwen3";
        if qwen && (key == "sliding_window" || key == "layer_types") {
            assert!(got.is_null(), "{stem}: {key} should be absent, found {got}");
            continue;
        }
        match (got.as_f64(), want.as_f64()) {
            (Some(g), Some(w)) => assert_eq!(g, w, "{stem}: {key}"),
            _ => assert_eq!(got, want, "{stem}: {key}"),
        }
    }
}

/// Loads the GGUF as a model and compares its logits with transformers' on the same file.
fn check_logits(stem: &str) {
    let gguf = GgufModel::open(&fixture(&format!("{stem}.gguf"))).unwrap();
    let config = gguf.llama_config().unwrap();
    let vocab = config.vocab_size;
    let model = LlamaModel::from_checkpoint(config, &gguf, &Device::Cpu, DType::F32).unwrap();
    let expected_bytes = std::fs::read(fixture(&format!("{stem}.expected.safetensors"))).unwrap();
    let expected = SafeTensors::deserialize(&expected_bytes).unwrap();
    let inputs = json_file("inputs.json");
    for (i, ids) in inputs["sequences"].as_array().unwrap().iter().enumerate() {
        let ids: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let batch = Batch::new(&[Sequence::prompt_and_target(ids, 1)]).unwrap();
        let got = model
            .logits(&model.upload(&batch).unwrap())
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let want: Vec<f32> = expected
            .tensor(&format!("logits.{i}"))
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len(), "{stem}: logits of sequence {i}");
        assert_eq!(got.len() % vocab, 0);
        if let Err(m) = Tolerance::new(0.0, 1e-4).check(&format!("{stem} logits {i}"), &got, &want)
        {
            panic!("{m}");
        }
    }
}

#[test]
fn llama_gguf_config_matches_transformers() {
    let model = GgufModel::open(&fixture("tiny-llama.gguf")).unwrap();
    assert_eq!(model.architecture(), GgufArchitecture::Llama);
    check_config_matches_transformers("tiny-llama", &model);
    let config = model.hf_config();
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["rope_scaling"], Value::Null);
    assert_eq!(config["bos_token_id"], 2);
    assert_eq!(config["eos_token_id"], 1);
}

#[test]
fn llama_gguf_logits_match_transformers() {
    check_logits("tiny-llama");
}

#[test]
fn qwen2_gguf_config_matches_transformers() {
    let model = GgufModel::open(&fixture("tiny-qwen2.gguf")).unwrap();
    check_config_matches_transformers("tiny-qwen2", &model);
    assert_eq!(model.hf_config()["model_type"], "qwen2");
    assert!(model.contains("model.layers.1.self_attn.v_proj.bias"));
    assert!(!model.contains("lm_head.weight"), "tied: no separate head");
}

#[test]
fn qwen2_gguf_logits_match_transformers() {
    check_logits("tiny-qwen2");
}

#[test]
fn qwen3_gguf_config_matches_transformers() {
    let model = GgufModel::open(&fixture("tiny-qwen3.gguf")).unwrap();
    assert_eq!(model.architecture(), GgufArchitecture::Qwen3);
    check_config_matches_transformers("tiny-qwen3", &model);
    let config = model.hf_config();
    assert_eq!(config["model_type"], "qwen3");
    assert_eq!(config["attention_bias"], false);
    // head_dim from `qwen3.attention.key_length`, not hidden / heads (32 / 4).
    assert_eq!(config["head_dim"], 16);
    assert!(model.contains("model.layers.1.self_attn.q_norm.weight"));
    assert!(model.contains("model.layers.0.self_attn.k_norm.weight"));
    assert!(!model.contains("model.layers.0.self_attn.q_proj.bias"));
    let llama = model.llama_config().unwrap();
    assert!(llama.has_qk_norm() && !llama.qkv_bias && !llama.o_bias);
}

#[test]
fn qwen3_gguf_logits_match_transformers() {
    check_logits("tiny-qwen3");
}

#[test]
fn gemma3_gguf_config_follows_llama_cpp() {
    let model = GgufModel::open(&fixture("tiny-gemma3.gguf")).unwrap();
    // transformers read from the same file; query_pre_attn_scalar was given to it as llama.cpp's.
    check_config_matches_transformers("tiny-gemma3", &model);
    let config = model.hf_config();
    assert_eq!(config["model_type"], "gemma3_text");
    assert_eq!(config["hidden_activation"], "gelu_pytorch_tanh");
    assert_eq!(config["sliding_window_pattern"], 6);
    assert_eq!(config["final_logit_softcapping"], Value::Null);
    assert_eq!(config["attn_logit_softcapping"], Value::Null);
    assert_eq!(config["tie_word_embeddings"], true);
    let names = model.tensor_names();
    for module in [
        "pre_feedforward_layernorm",
        "post_feedforward_layernorm",
        "post_attention_layernorm",
        "input_layernorm",
        "self_attn.q_norm",
        "self_attn.k_norm",
    ] {
        let name = format!("model.layers.5.{module}.weight");
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
}

/// Gemma's norms come back as transformers stores them: GGUF's value minus 1.
#[test]
fn gemma3_norms_are_stored_minus_one() {
    let model = GgufModel::open(&fixture("tiny-gemma3.gguf")).unwrap();
    let name = "model.layers.0.self_attn.q_norm.weight";
    let hf = model.load_f32(name, &[32]).unwrap();
    let (_, raw) = model.file().tensor_f32("blk.0.attn_q_norm.weight").unwrap();
    for (h, r) in hf.iter().zip(&raw) {
        assert_eq!(*h, r - 1.0);
    }
    // The mean of random N(0, 0.2) weights is near 0, not near 1.
    let mean = hf.iter().sum::<f32>() / hf.len() as f32;
    assert!(mean.abs() < 0.2, "mean {mean}");
}

#[test]
fn gemma3_gguf_logits_match_transformers() {
    check_logits("tiny-gemma3");
}

#[test]
fn wrong_shapes_and_missing_tensors_are_named() {
    let model = GgufModel::open(&fixture("tiny-llama.gguf")).unwrap();
    let err = model
        .load_f32("model.layers.0.self_attn.q_proj.weight", &[64, 32])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "tensor `model.layers.0.self_attn.q_proj.weight` (GGUF `blk.0.attn_q.weight`) has \
             shape [64, 64], expected [64, 32]"
        ),
        "{err}"
    );
    let err = model
        .load_f32("model.layers.0.self_attn.q_norm.weight", &[16])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is missing: no GGUF tensor maps to it"),
        "{err}"
    );
}

/// The real Gemma 3 270M GGUF (Q4_K_M: F32, Q5_0, Q8_0, Q4_K, Q6_K tensors), when
/// FLIX_GEMMA3_GGUF names it.
#[test]
fn real_gemma3_270m() {
    let Ok(path) = std::env::var("FLIX_GEMMA3_GGUF") else {
        eprintln!("SKIPPED real_gemma3_270m: set FLIX_GEMMA3_GGUF to the Gemma 3 270M GGUF");
        return;
    };
    let model = GgufModel::open(Path::new(&path)).unwrap();
    let config = model.hf_config();
    for (key, want) in [
        ("num_hidden_layers", 18),
        ("hidden_size", 640),
        ("num_attention_heads", 4),
        ("num_key_value_heads", 1),
        ("head_dim", 256),
        ("intermediate_size", 2048),
        ("vocab_size", 262_144),
        ("sliding_window", 512),
        ("query_pre_attn_scalar", 256),
    ] {
        assert_eq!(config[key], want, "{key}");
    }
    assert_eq!(config["model_type"], "gemma3_text");
    assert_eq!(config["rope_theta"], 1_000_000.0);
    assert_eq!(config["tie_word_embeddings"], true);
    let layer_types = config["layer_types"].as_array().unwrap();
    assert_eq!(layer_types.len(), 18);
    for (i, t) in layer_types.iter().enumerate() {
        let global = i % 6 == 5;
        assert_eq!(
            t,
            if global {
                "full_attention"
            } else {
                "sliding_attention"
            }
        );
    }
    let names = model.tensor_names();
    assert_eq!(names.len(), 18 * 13 + 2);
    for name in &names {
        let info = model
            .file()
            .tensor_info(model.gguf_name(name).unwrap())
            .unwrap();
        let values = model.load_f32(name, &info.shape).unwrap();
        assert!(
            values.iter().all(|v| v.is_finite()),
            "{name} has non-finite values"
        );
    }
    let Ok(expected) = std::env::var("FLIX_GEMMA3_GGUF_EXPECTED") else {
        eprintln!(
            "SKIPPED the comparison with gguf-py: set FLIX_GEMMA3_GGUF_EXPECTED to the output of \
             scripts/make_gguf_fixtures.py --dump-real"
        );
        return;
    };
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(expected).unwrap()).unwrap();
    let file = model.file();
    let mut types = Vec::new();
    for (name, want) in expected["tensors"].as_object().unwrap() {
        let (shape, got) = file.tensor_f32(name).unwrap();
        let rows = want["first_rows"].as_array().unwrap();
        let cols = shape[shape.len() - 1];
        for (r, row) in rows.iter().enumerate() {
            for (c, w) in row.as_array().unwrap().iter().enumerate() {
                let w = w.as_f64().unwrap() as f32;
                assert_eq!(got[r * cols + c].to_bits(), w.to_bits(), "{name}[{r}][{c}]");
            }
        }
        types.push(want["type"].as_str().unwrap().to_string());
    }
    eprintln!("compared with gguf-py: {types:?}");
    assert!(types.len() >= 3, "at least three tensor types compared");

    // The whole model against transformers on the same file, where the model code knows Gemma 3.
    let config = match model.llama_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED the logits of the real model: {e}");
            return;
        }
    };
    let vocab = config.vocab_size;
    let llama = LlamaModel::from_checkpoint(config, &model, &Device::Cpu, DType::F32).unwrap();
    let want = &expected["model"];
    let ids: Vec<u32> = want["sequence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let batch = Batch::new(&[Sequence::prompt_and_target(ids.clone(), 1)]).unwrap();
    let logits = llama
        .logits(&llama.upload(&batch).unwrap())
        .unwrap()
        .to_f32_vec()
        .unwrap();
    let columns = want["columns"].as_u64().unwrap() as usize;
    for (t, (row, best)) in want["logits"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["argmax"].as_array().unwrap())
        .enumerate()
    {
        let got_row = &logits[t * vocab..(t + 1) * vocab];
        let want_row: Vec<f32> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        // 18 layers of f32 with different summation orders: agreement to ~1e-3 of logits whose
        // scale is ~10.
        if let Err(m) = Tolerance::new(1e-3, 2e-3).check(
            &format!("real Gemma 3 logits at position {t}"),
            &got_row[..columns],
            &want_row,
        ) {
            panic!("{m}");
        }
        let argmax = got_row
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0;
        assert_eq!(
            argmax as u64,
            best.as_u64().unwrap(),
            "most likely token at {t}"
        );
    }
    eprintln!(
        "real Gemma 3 logits match transformers for {} tokens",
        ids.len()
    );
}

/// Llama 3 rope scaling, stored by llama.cpp as per-frequency factors, comes back as the
/// `rope_scaling` of the Hugging Face config the factors were computed from.
#[test]
fn llama3_rope_scaling_is_read_from_rope_freqs() {
    let model = GgufModel::open(&fixture("llama3_rope.gguf")).unwrap();
    let want = &json_file("llama3_rope.json")["rope_scaling"];
    let got = &model.hf_config()["rope_scaling"];
    for key in ["rope_type", "original_max_position_embeddings"] {
        assert_eq!(got[key], want[key], "{key}");
    }
    for key in ["factor", "low_freq_factor", "high_freq_factor"] {
        assert_eq!(got[key].as_f64(), want[key].as_f64(), "{key}");
    }
    assert!(model.llama_config().is_ok());
    assert!(!model.contains("rope_freqs.weight"));

    // Factors that no Llama 3 scaling gives are refused, naming the tensor.
    let mut bytes = std::fs::read(fixture("llama3_rope.gguf")).unwrap();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&3.0f32.to_le_bytes()); // the last factor
    let file = GgufFile::from_bytes(bytes, Path::new("odd_rope.gguf")).unwrap();
    let err = GgufModel::from_file(file).unwrap_err().to_string();
    assert!(
        err.contains("tensor `rope_freqs.weight`: factor 31 is 3"),
        "{err}"
    );
}

fn patched(name: &str, from: &[u8], to: &[u8]) -> Result<GgufModel, String> {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(fixture(name)).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{:?} not in {name}", String::from_utf8_lossy(from)));
    bytes[at..at + to.len()].copy_from_slice(to);
    let file = GgufFile::from_bytes(bytes, Path::new(name)).map_err(|e| e.to_string())?;
    GgufModel::from_file(file).map_err(|e| e.to_string())
}

#[test]
fn mistral_is_told_apart_by_name() {
    let model = patched("tiny-llama.gguf", b"tiny-llama", b"Mistral-7B").unwrap();
    assert_eq!(model.hf_config()["model_type"], "mistral");
    assert_eq!(
        model.llama_config().unwrap().family,
        flix_model::Family::Mistral
    );
}

#[test]
fn unsupported_models_are_refused_naming_what() {
    let err = patched(
        "tiny-llama.gguf",
        b"\x05\0\0\0\0\0\0\0llama",
        b"\x05\0\0\0\0\0\0\0llamb",
    )
    .unwrap_err();
    assert!(
        err.contains("unsupported architecture: `general.architecture` is \"llamb\""),
        "{err}"
    );
    let err = patched(
        "tiny-llama.gguf",
        b"llama.block_count",
        b"llama.block_counx",
    )
    .unwrap_err();
    assert!(
        err.contains("metadata key `llama.block_count` is missing"),
        "{err}"
    );
    let err = patched(
        "tiny-llama.gguf",
        b"blk.1.attn_q.weight",
        b"blk.1.attn_z.weight",
    )
    .unwrap_err();
    assert!(
        err.contains("tensor `blk.1.attn_z.weight`: no Hugging Face counterpart"),
        "{err}"
    );
    // The tensors of layer 1 when the metadata says there is one layer.
    let mut key = b"llama.block_count".to_vec();
    key.extend_from_slice(&4u32.to_le_bytes()); // value type uint32
    let mut one = key.clone();
    key.extend_from_slice(&2u32.to_le_bytes());
    one.extend_from_slice(&1u32.to_le_bytes());
    let err = patched("tiny-llama.gguf", &key, &one).unwrap_err();
    assert!(
        err.contains("layer 1 does not exist: the model has 1 layers"),
        "{err}"
    );
}
