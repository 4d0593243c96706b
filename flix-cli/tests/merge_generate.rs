//! `flix generate` and `flix merge` through the binary on a tiny trained run: generation prints
//! what evaluation's greedy decoding produces for the same examples; merge writes a checkpoint
//! directory and refuses bad feature combinations and missing runs with clear messages.

mod common;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use common::{fixture, flix, text};
use flix_core::{read_jsonl, Example};
use flix_kernels::Device;
use flix_model::eval::{evaluate, EvalOptions};
use flix_model::train::{load_trained, Holdout};
use flix_model::LlamaModel;

const MAX_NEW: usize = 12;

/// Trains a tiny FLix run with the binary; returns (run directory, test examples).
fn tiny_run(dir: &Path) -> (PathBuf, Vec<Example>) {
    let (base, train) = fixture(dir);
    let run = dir.join("run");
    let mut args: Vec<OsString> = vec!["train".into(), "--base".into(), base.into()];
    args.extend(["--data".into(), train.into(), "--out".into()]);
    args.push(run.clone().into());
    args.extend(["--steps", "3", "--rank", "2"].map(OsString::from));
    let out = flix(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    let examples = read_jsonl(&dir.join("data/test.jsonl"), &["lang", "task"]).unwrap();
    (run, examples)
}

/// `flix generate RUN --features F --input ...` for `inputs`; its stdout lines.
fn generate(run: &Path, features: &str, inputs: &[&str]) -> (Vec<String>, String) {
    let mut args: Vec<OsString> = vec!["generate".into(), run.into()];
    args.extend(["--features", features, "--max-new-tokens"].map(OsString::from));
    args.push(MAX_NEW.to_string().into());
    for input in inputs {
        args.extend(["--input".into(), OsString::from(input)]);
    }
    let out = flix(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    (stdout.lines().map(String::from).collect(), stderr)
}

#[test]
fn generate_prints_what_greedy_evaluation_decodes() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, examples) = tiny_run(tmp.path());
    let trained = load_trained(&run, &Device::Cpu).unwrap();
    let options = EvalOptions {
        max_new_tokens: MAX_NEW,
        batch_tokens: 4096,
    };
    // Every cell's examples (plus one with a language the run never saw, served absent).
    let mut unseen = examples[0].clone();
    unseen.features.insert("lang".into(), "xx".into());
    let mut all = examples.clone();
    all.push(unseen.clone());
    let result = evaluate("run", &trained, &all, &Holdout::default(), options).unwrap();
    let mut printed_something = false;
    for cell in ["lang=eng,task=num2words", "lang=fra,task=words2num"] {
        let (inputs, want): (Vec<&str>, Vec<String>) = all
            .iter()
            .zip(&result.predictions)
            .filter(|(_, p)| p.cell == cell)
            .map(|(ex, p)| (ex.input.as_str(), p.output.clone()))
            .unzip();
        assert!(!inputs.is_empty(), "no test example in {cell}");
        let (got, _) = generate(&run, cell, &inputs);
        assert_eq!(got, want, "{cell}");
        printed_something |= got.iter().any(|o| !o.is_empty());
    }
    assert!(printed_something, "every continuation was empty");
    let features = format!("lang=xx,task={}", unseen.features["task"]);
    let (got, stderr) = generate(&run, &features, &[&unseen.input]);
    assert_eq!(got, [result.predictions.last().unwrap().output.clone()]);
    assert!(
        stderr.contains("lang=xx") && stderr.contains("absent"),
        "{stderr}"
    );
}

#[test]
fn merge_writes_a_checkpoint_and_refuses_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, _) = tiny_run(tmp.path());
    let merged = tmp.path().join("merged");
    let out = flix(&[
        OsStr::new("merge"),
        run.as_os_str(),
        OsStr::new("--features"),
        OsStr::new("lang=fra,task=num2words"),
        OsStr::new("--out"),
        merged.as_os_str(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(merged.join(file).is_file(), "{file}");
    }
    LlamaModel::load(&merged, &Device::Cpu).unwrap();

    let fails = |features: &str, run: &Path| -> String {
        let out = flix(&[
            OsStr::new("merge"),
            run.as_os_str(),
            OsStr::new("--features"),
            OsStr::new(features),
            OsStr::new("--out"),
            tmp.path().join("bad").as_os_str(),
        ]);
        assert!(!out.status.success(), "{features}: {:?}", text(&out));
        text(&out).1
    };
    let err = fails("lang=xx,task=num2words", &run);
    assert!(
        err.contains("lang=xx") && err.contains("eng") && err.contains("fra"),
        "{err}"
    );
    let err = fails("lang=eng,lang=fra", &run);
    assert!(err.contains("twice"), "{err}");
    let err = fails("lang=eng", &tmp.path().join("no-such-run"));
    assert!(
        err.contains("no-such-run") && err.contains("not a directory"),
        "{err}"
    );
    assert!(
        !tmp.path().join("bad").exists(),
        "a refused merge wrote files"
    );
}
