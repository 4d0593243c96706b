//! The real Gemma 3 270M, read straight from its GGUF file (weights and tokenizer), against the
//! per-token log-probabilities transformers computed from the same file
//! (`scripts/gemma3_reference_logprobs.py` wrote `fixtures/gemma3-270m/reference.json`: eleven
//! multilingual texts, one of 2,340 tokens so that the 512-token sliding window matters). Runs
//! when `FLIX_GEMMA3_GGUF` names the file (`scripts/fetch_gemma3_gguf.sh`); says it skipped
//! otherwise. Token ids must be equal and every log-probability within 1e-3 (f32).

use std::path::{Path, PathBuf};

use flix_kernels::Device;
use flix_model::{score_sequences, ModelSource};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3-270m").join(name)
}

#[test]
fn gemma3_270m_gguf_scores_match_transformers() {
    let Ok(gguf) = std::env::var("FLIX_GEMMA3_GGUF") else {
        eprintln!("SKIPPED: set FLIX_GEMMA3_GGUF to the Gemma 3 270M GGUF to run this test");
        return;
    };
    let source = ModelSource::open(Path::new(&gguf)).unwrap();
    assert!(source.is_gguf());
    let tokenizer = source.tokenizer().unwrap();
    let model = source.load(&Device::Cpu).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap();
    let texts = std::fs::read_to_string(fixture("texts.jsonl")).unwrap();
    let mut sequences = Vec::new();
    let mut expected = Vec::new();
    for (line, want) in texts.lines().zip(reference["texts"].as_array().unwrap()) {
        let example: serde_json::Value = serde_json::from_str(line).unwrap();
        let seq = tokenizer
            .encode_example(
                example["input"].as_str().unwrap(),
                example["target"].as_str().unwrap(),
            )
            .unwrap();
        let want_ids: Vec<u32> = want["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(seq.tokens, want_ids, "token ids of {}", want["id"]);
        sequences.push(seq);
        expected.push(want["token_logprobs"].clone());
    }
    let scores = score_sequences(&model, &sequences, None, 4096).unwrap();
    let mut worst = 0.0f64;
    for (score, want) in scores.iter().zip(&expected) {
        let want = want.as_array().unwrap();
        assert_eq!(score.token_logprobs.len(), want.len());
        for (got, want) in score.token_logprobs.iter().zip(want) {
            let diff = (*got as f64 - want.as_f64().unwrap()).abs();
            worst = worst.max(diff);
        }
    }
    eprintln!("worst |Δ log-prob| over {} texts: {worst:.2e}", scores.len());
    assert!(worst <= 1e-3, "worst |Δ log-prob| {worst}");
}
