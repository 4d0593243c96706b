//! The real Gemma 3 270M against transformers, when `FLIX_GEMMA3_GGUF` names its GGUF (skipped
//! with a message otherwise). `scripts/gemma3_gguf_reference.py` has transformers dequantize
//! the GGUF into a Hugging Face directory in a temporary folder (about 1.1 GB, never in the
//! repository) and compute, for a 560-token sequence (past the 512-token sliding window), the
//! log-probability of every next token and a greedy continuation by `generate`. We load that
//! directory and must agree. `FLIX_GEMMA3_REFERENCE` may name a directory the script already
//! wrote, to skip the conversion.

mod common;

use std::path::PathBuf;

use flix_kernels::tolerance::Tolerance;
use flix_kernels::Device;
use flix_model::config::Family;
use flix_model::{score_sequences, GenerationConfig, LlamaModel, Sequence};

/// The reference directory: given, or written now into `tmp`. `None` (after saying why) when
/// the test cannot run here.
fn reference(tmp: &tempfile::TempDir) -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("FLIX_GEMMA3_REFERENCE") {
        return Some(PathBuf::from(dir));
    }
    let Ok(gguf) = std::env::var("FLIX_GEMMA3_GGUF") else {
        eprintln!("SKIPPED: set FLIX_GEMMA3_GGUF to the Gemma 3 270M GGUF to run this test");
        return None;
    };
    let out = tmp.path().join("gemma3-270m");
    let ran = common::run_python_check(
        "gemma3_gguf_reference.py",
        &[gguf.as_ref(), out.as_os_str()],
        "Gemma 3 reference",
    );
    ran.then_some(out)
}

/// Through 18 layers in f32 with other summation orders than PyTorch's (seen: below 1e-4).
const REAL_MODEL: Tolerance = Tolerance::new(1e-3, 1e-3);

#[test]
fn gemma3_270m_matches_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(dir) = reference(&tmp) else {
        return;
    };
    let text = std::fs::read_to_string(dir.join("case.json")).unwrap();
    let case: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tokens: Vec<u32> = serde_json::from_value(case["tokens"].clone()).unwrap();
    let want: Vec<f32> = serde_json::from_value(case["token_logprobs"].clone()).unwrap();
    let greedy: Vec<u32> = serde_json::from_value(case["greedy"].clone()).unwrap();

    let model = LlamaModel::load(&dir, &Device::Cpu).unwrap();
    let c = &model.config;
    assert_eq!(c.family, Family::Gemma3);
    assert_eq!(
        (c.num_hidden_layers, c.hidden_size, c.head_dim, c.vocab_size),
        (18, 640, 256, 262144)
    );
    assert_eq!(c.sliding_window, Some(512));
    assert!(tokens.len() > 512);

    let seq = Sequence::prompt_and_target(tokens.clone(), 1);
    let scores = score_sequences(&model, &[seq], 1 << 20).unwrap();
    let got = &scores[0].token_logprobs;
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!(
        "Gemma 3 270M: worst log-probability difference {worst:e} over {} tokens",
        got.len()
    );
    if let Err(m) = REAL_MODEL.check("token log-probabilities", got, &want) {
        panic!("{m}");
    }
    let cfg = GenerationConfig {
        max_new_tokens: greedy.len(),
        ..GenerationConfig::default()
    };
    assert_eq!(model.generate(&[tokens], None, &cfg).unwrap(), [greedy]);
}
