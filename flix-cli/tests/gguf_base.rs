//! A GGUF file as the base model of every command: `flix score`, `train`, `eval`, `generate`,
//! `export` and `merge` on a tiny random Gemma 3 GGUF with a real SentencePiece vocabulary
//! (flix-model/tests/fixtures/gguf/tiny-gemma3-text.gguf, written by
//! scripts/make_gguf_fixtures.py). The merged Hugging Face directory and the PEFT export applied
//! to the GGUF must score the same text alike (up to the merged weights' bf16 rounding).

mod common;

use std::path::{Path, PathBuf};

use common::{flix, flix_ok, text};
use flix_kernels::Device;
use flix_model::{score_sequences, ModelSource};

fn gguf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../flix-model/tests/fixtures/gguf/tiny-gemma3-text.gguf")
}

/// Two languages × two tasks of short texts (the features only need to differ).
fn write_data(dir: &Path) -> (PathBuf, PathBuf) {
    let rows = [
        ("eng", "echo", "the cat sat", "the cat sat"),
        ("eng", "echo", "a red door", "a red door"),
        ("eng", "upper", "the cat sat", "THE CAT SAT"),
        ("eng", "upper", "a red door", "A RED DOOR"),
        ("fra", "echo", "le chat dort", "le chat dort"),
        ("fra", "echo", "une porte rouge", "une porte rouge"),
        ("fra", "upper", "le chat dort", "LE CHAT DORT"),
        ("fra", "upper", "une porte rouge", "UNE PORTE ROUGE"),
    ];
    let line = |(lang, task, input, target): &(&str, &str, &str, &str)| {
        serde_json::json!({"lang": lang, "task": task, "input": input, "target": target})
            .to_string()
    };
    let train: Vec<String> = rows.iter().map(line).collect();
    let test: Vec<String> = rows.iter().step_by(2).map(line).collect();
    let (train_path, test_path) = (dir.join("train.jsonl"), dir.join("test.jsonl"));
    std::fs::write(&train_path, train.join("\n") + "\n").unwrap();
    std::fs::write(&test_path, test.join("\n") + "\n").unwrap();
    (train_path, test_path)
}

/// `flix score` output: the token log-probabilities of each line.
fn score(args: &[&std::ffi::OsStr]) -> Vec<Vec<f64>> {
    let (stdout, _) = flix_ok(args);
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["token_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn every_command_takes_a_gguf_base() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (train, test) = write_data(dir);
    let gguf = gguf();

    // score: an empty input scores every target token after BOS, as the library does.
    let scored = dir.join("scored.jsonl");
    std::fs::write(
        &scored,
        "{\"input\": \"\", \"target\": \"le chat dort\"}\n{\"input\": \"the\", \"target\": \" cat\"}\n",
    )
    .unwrap();
    let from_cli = score(&["score".as_ref(), gguf.as_os_str(), scored.as_os_str()]);
    let source = ModelSource::open(&gguf).unwrap();
    let tokenizer = source.tokenizer().unwrap();
    let model = source.load(&Device::Cpu).unwrap();
    let seqs = vec![
        tokenizer.encode_example("", "le chat dort").unwrap(),
        tokenizer.encode_example("the", " cat").unwrap(),
    ];
    assert_eq!(seqs[0].tokens[0], 2, "BOS first");
    assert_eq!(
        from_cli[0].len(),
        tokenizer.encode("le chat dort").unwrap().len()
    );
    let from_lib = score_sequences(&model, &seqs, 4096).unwrap();
    for (cli, lib) in from_cli.iter().zip(&from_lib) {
        let lib: Vec<f64> = lib.token_logprobs.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(cli, &lib);
    }

    // train, eval, generate.
    let run = dir.join("run");
    flix_ok(&[
        "train".as_ref(),
        "--base".as_ref(),
        gguf.as_os_str(),
        "--data".as_ref(),
        train.as_os_str(),
        "--out".as_ref(),
        run.as_os_str(),
        "--steps".as_ref(),
        "4".as_ref(),
        "--rank".as_ref(),
        "2".as_ref(),
        "--batch-tokens".as_ref(),
        "256".as_ref(),
    ]);
    let (grid, _) = flix_ok(&[
        "eval".as_ref(),
        run.as_os_str(),
        "--data".as_ref(),
        test.as_os_str(),
        "--max-new-tokens".as_ref(),
        "4".as_ref(),
    ]);
    assert!(grid.contains("eng") && grid.contains("upper"), "{grid}");
    flix_ok(&[
        "generate".as_ref(),
        run.as_os_str(),
        "--features".as_ref(),
        "lang=eng,task=upper".as_ref(),
        "--input".as_ref(),
        "a red door".as_ref(),
        "--max-new-tokens".as_ref(),
        "4".as_ref(),
    ]);

    // export (PEFT, Hugging Face module names) and merge (a Hugging Face directory).
    let peft = dir.join("peft");
    let merged = dir.join("merged");
    for (cmd, out) in [("export", &peft), ("merge", &merged)] {
        flix_ok(&[
            cmd.as_ref(),
            run.as_os_str(),
            "--features".as_ref(),
            "lang=fra,task=upper".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ]);
    }
    let adapter_config = std::fs::read_to_string(peft.join("adapter_config.json")).unwrap();
    assert!(adapter_config.contains("q_proj"), "{adapter_config}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["model_type"], "gemma3_text");
    assert!(merged.join("tokenizer.json").is_file());
    assert_eq!(
        ModelSource::open(&merged)
            .unwrap()
            .tokenizer()
            .unwrap()
            .encode_prompt("une porte rouge")
            .unwrap(),
        tokenizer.encode_prompt("une porte rouge").unwrap(),
        "the merged directory's tokenizer.json is the GGUF's tokenizer"
    );
    let with_adapters = score(&[
        "score".as_ref(),
        gguf.as_os_str(),
        scored.as_os_str(),
        "--adapters".as_ref(),
        peft.as_os_str(),
    ]);
    let from_merged = score(&["score".as_ref(), merged.as_os_str(), scored.as_os_str()]);
    let mut changed = false;
    for ((a, m), base) in with_adapters.iter().zip(&from_merged).zip(&from_cli) {
        for ((a, m), b) in a.iter().zip(m).zip(base) {
            assert!((a - m).abs() < 0.05, "adapters {a} vs merged {m}");
            changed |= (a - b).abs() > 1e-6;
        }
    }
    assert!(changed, "the trained adapters change the scores");
}

#[test]
fn a_file_that_is_not_a_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bogus = tmp.path().join("model.gguf");
    std::fs::write(&bogus, b"PK\x03\x04 not a gguf").unwrap();
    let data = tmp.path().join("d.jsonl");
    std::fs::write(&data, "{\"input\": \"\", \"target\": \"x\"}\n").unwrap();
    let out = flix(&["score".as_ref(), bogus.as_os_str(), data.as_os_str()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not a base model") && stderr.contains("model.gguf"),
        "{stderr}"
    );
}
