//! `flix score` end to end on the committed tiny Llama fixture with its PEFT LoRA: every printed
//! token log-likelihood must match what `transformers` + `peft` computed for the same text
//! (`scripts/make_hf_fixture.py`), and bad inputs must fail with a message naming the culprit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flix_kernels::tolerance::Tolerance;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../flix-model/tests/fixtures/tiny-llama")
}

fn flix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flix"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the flix binary runs")
}

fn hf_examples() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixture_dir().join("inputs.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["score_examples_with_lora"].as_array().unwrap().clone()
}

#[test]
fn scores_match_transformers_with_peft_lora() {
    let examples = hf_examples();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    let lines: Vec<String> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            serde_json::json!({"id": format!("ex{i}"), "input": e["input"], "target": e["target"]})
                .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let fixture = fixture_dir();
    let lora = fixture.join("lora");
    for batch_tokens in ["1", "4096"] {
        let out = flix(&[
            "score",
            fixture.to_str().unwrap(),
            data.to_str().unwrap(),
            "--adapters",
            lora.to_str().unwrap(),
            "--batch-tokens",
            batch_tokens,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "flix score failed: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let printed: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(printed.len(), examples.len());
        for (i, (got, want)) in printed.iter().zip(&examples).enumerate() {
            assert_eq!(got["id"], format!("ex{i}"));
            assert_eq!(got["line"], i + 1);
            let logp: Vec<f64> = got["token_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let hf: Vec<f64> = want["token_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            Tolerance::F32
                .check(&format!("example {i} token log-probs"), &logp, &hf)
                .unwrap();
            let mean = -hf.iter().sum::<f64>() / hf.len() as f64;
            Tolerance::F32
                .check("loss", &[got["loss"].as_f64().unwrap()], &[mean])
                .unwrap();
            assert_eq!(got["target_tokens"], hf.len());
        }
        assert!(stderr.contains("scored 2 examples"), "{stderr}");
    }
}

#[test]
fn without_adapters_the_scores_differ_and_bad_inputs_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(
        &data,
        "{\"input\": \"the quick\", \"target\": \" brown fox\"}\n",
    )
    .unwrap();
    let fixture = fixture_dir();
    let out = flix(&["score", fixture.to_str().unwrap(), data.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let lora = fixture.join("lora");
    let out = flix(&[
        "score",
        fixture.to_str().unwrap(),
        data.to_str().unwrap(),
        "--adapters",
        lora.to_str().unwrap(),
    ]);
    let adapted: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_ne!(base["loss"], adapted["loss"]);

    // Malformed JSONL: the error names file and line.
    std::fs::write(&data, "{\"input\": \"a\", \"target\": \"b\"}\nnot json\n").unwrap();
    let out = flix(&["score", fixture.to_str().unwrap(), data.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("data.jsonl") && stderr.contains('2'),
        "{stderr}"
    );

    // A directory that is not a model: the error names the missing config.
    let out = flix(&[
        "score",
        dir.path().to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("config.json"),
        "{stderr}"
    );
}
