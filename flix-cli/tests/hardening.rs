//! Hostile input to the `flix` binary is refused with a message that names the option, field or
//! file, before any work, and never with a panic (exit code 101) or an abort: out-of-range
//! numbers, options that do not apply, absurd sizes, feature types the data lacks, empty files,
//! huge feature values. A run started from one directory with relative paths resumes and
//! generates from another, and still generates once its newest checkpoint is damaged.

mod common;

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};

use common::{fixture, flix, text};

/// Runs `flix args` and returns (exit code, stderr); a panic fails the test.
fn refused<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String) {
    let out = flix(args);
    let (stdout, stderr) = text(&out);
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code != 101 && !stderr.contains("panicked"),
        "panic: {stderr}"
    );
    assert!(!out.status.success(), "accepted: {stdout}{stderr}");
    (code, stderr)
}

#[test]
fn train_options_out_of_range_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // The base and data need not exist: the options are checked first.
    let common_args = [
        "train",
        "--base",
        "no-base",
        "--data",
        "no-data.jsonl",
        "--out",
    ];
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--min-lr-ratio=-0.5"],
            &["--min-lr-ratio", "[0, 1]", "-0.5"],
        ),
        (&["--min-lr-ratio=1.5"], &["--min-lr-ratio", "[0, 1]"]),
        (&["--weight-decay=-1"], &["--weight-decay", ">= 0"]),
        (&["--weight-decay=inf"], &["--weight-decay", "finite"]),
        (&["--clip=-1"], &["--clip", ">= 0"]),
        (&["--clip=NaN"], &["--clip", "NaN"]),
        (&["--temperature=-1"], &["--temperature", "> 0"]),
        (&["--temperature=NaN"], &["--temperature", "NaN"]),
        (&["--temperature=0"], &["--temperature", "> 0"]),
        (&["--lr=-0.001"], &["--lr", "> 0"]),
        (&["--cap=0"], &["--cap", ">= 1"]),
        (&["--steps=0"], &["--steps", ">= 1"]),
        (&["--batch-tokens=0"], &["--batch-tokens"]),
        (
            &["--batch-tokens=18446744073709551615"],
            &["--batch-tokens", "18446744073709551615"],
        ),
        (&["--grad-accum=0"], &["--grad-accum"]),
        (&["--rank=0"], &["rank must be >= 1"]),
        (&["--alpha=0"], &["--alpha", "> 0"]),
        (&["--alpha=NaN"], &["alpha"]),
        (&["--dropout=1.5"], &["dropout", "[0, 1]"]),
        (
            &["--method", "flix", "--shared-rank", "4"],
            &["--shared-rank", "flix"],
        ),
        (
            &["--method", "flix", "--match-compute"],
            &["--match-compute", "flix"],
        ),
        (
            &["--method", "full", "--shared-rank", "4"],
            &["--shared-rank", "full"],
        ),
        (
            &["--method", "lora", "--shared-rank", "0"],
            &["--shared-rank", ">= 1"],
        ),
        (
            &["--method", "lora", "--match-compute", "--shared-rank", "4"],
            &["--match-compute"],
        ),
    ];
    for (extra, expected) in cases {
        let mut args: Vec<&str> = common_args.to_vec();
        args.push(out.to_str().unwrap());
        args.extend_from_slice(extra);
        let (_, stderr) = refused(&args);
        for e in *expected {
            assert!(stderr.contains(e), "{extra:?}: expected {e:?} in {stderr}");
        }
        assert!(!out.exists(), "{extra:?}: the run directory was created");
    }
}

#[test]
fn generate_options_out_of_range_are_refused_before_loading() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("no-run");
    let cases: &[(&str, &[&str])] = &[
        ("--temperature=-1", &["--temperature", ">= 0"]),
        ("--temperature=NaN", &["--temperature", "NaN"]),
        ("--temperature=inf", &["--temperature", "finite"]),
        ("--top-p=0", &["--top-p", "(0, 1]"]),
        ("--top-p=1.5", &["--top-p", "(0, 1]"]),
        ("--top-p=NaN", &["--top-p", "NaN"]),
        ("--top-p=-0.1", &["--top-p"]),
    ];
    for (option, expected) in cases {
        let args = ["generate", run.to_str().unwrap(), "--input", "1", option];
        let (_, stderr) = refused(&args);
        for e in *expected {
            assert!(stderr.contains(e), "{option}: expected {e:?} in {stderr}");
        }
        // The run was never opened.
        assert!(!stderr.contains("no-run"), "{option}: {stderr}");
    }
}

/// `train --base BASE --data TRAIN --out RUN` and `extra`.
fn train_args(base: &Path, train: &Path, run: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["train".into(), "--base".into(), base.into()];
    args.extend(["--data".into(), train.into(), "--out".into(), run.into()]);
    args.extend(extra.iter().map(OsString::from));
    args
}

#[test]
fn absurd_sizes_are_refused_with_the_estimate_and_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let cases: &[(&[&str], &str)] = &[
        (&["--rank", "1000000000"], "trainable parameters"),
        (&["--batch-tokens", "1099511627776"], "activations"),
    ];
    for (i, (extra, expected)) in cases.iter().enumerate() {
        let run = tmp.path().join(format!("run{i}"));
        let (code, stderr) = refused(&train_args(&base, &train, &run, extra));
        assert_eq!(code, 1, "{stderr}");
        assert!(
            stderr.contains("needs at least") && stderr.contains(expected),
            "{extra:?}: {stderr}"
        );
        assert!(
            !run.join("spec.json").exists(),
            "{extra:?}: the run was started"
        );
    }
}

/// A rank above the smallest dimension of the adapted projections (16 in the fixture: hidden
/// size, intermediate size, and 2 key/value heads of 8) adds no capacity: the run says so.
#[test]
fn a_rank_larger_than_the_projections_is_noted_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let run = tmp.path().join("run");
    let out = flix(&train_args(
        &base,
        &train,
        &run,
        &["--rank", "24", "--steps", "1"],
    ));
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for name in ["lang", "task"] {
        assert!(
            stderr.contains(&format!("the rank 24 of the {name} adapters exceeds 16")),
            "{stderr}"
        );
    }
    let run = tmp.path().join("run16");
    let out = flix(&train_args(
        &base,
        &train,
        &run,
        &["--rank", "16", "--steps", "1"],
    ));
    let (_, stderr) = text(&out);
    assert!(
        out.status.success() && !stderr.contains("exceeds"),
        "{stderr}"
    );
}

#[test]
fn a_feature_type_the_data_lacks_is_named_with_the_types_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let run = tmp.path().join("run");
    let (_, stderr) = refused(&train_args(&base, &train, &run, &["--types", "foo,lang"]));
    assert!(
        stderr.contains("\"foo\"") || stderr.contains("foo have no value"),
        "{stderr}"
    );
    assert!(
        stderr.contains("lang") && stderr.contains("task"),
        "{stderr}"
    );
}

#[test]
fn inspect_names_an_empty_file_and_survives_huge_values() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let (_, stderr) = refused(&["inspect".as_ref(), empty.as_os_str()]);
    assert!(
        stderr.contains("empty.jsonl") && stderr.contains("empty"),
        "{stderr}"
    );

    // Feature values of 65,536 characters and more, on both axes and in a third type.
    let huge = "x".repeat(70_000);
    let file = tmp.path().join("huge.jsonl");
    let lines = [
        serde_json::json!({"lang": huge, "task": "qa", "topic": huge, "input": "a b", "target": "c"}),
        serde_json::json!({"lang": "en", "task": huge, "topic": "t", "input": "a", "target": "c"}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let out = flix(&[
        "inspect".as_ref(),
        file.as_os_str(),
        "--types".as_ref(),
        "lang,task,topic".as_ref(),
    ]);
    let (stdout, stderr) = text_of(&out);
    assert!(out.status.success(), "{stderr}");
    // The grid is aligned: every row is as long as the header.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("en ") || l.starts_with("xxx"))
        .collect();
    assert_eq!(rows.len(), 2, "{}", &stdout[..stdout.len().min(500)]);
    assert!(
        stdout.contains(&format!("  {huge} 1/3")),
        "the third type's value is missing"
    );
}

fn text_of(out: &Output) -> (String, String) {
    text(out)
}

#[test]
fn a_run_with_relative_paths_resumes_and_generates_from_another_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _) = fixture(tmp.path());
    let start_dir = tmp.path();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let run_in = |dir: &Path, args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_flix"))
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run_in(
        start_dir,
        &[
            "train",
            "--base",
            "base",
            "--data",
            "data/train.jsonl",
            "--out",
            "run",
            "--steps",
            "4",
            "--rank",
            "2",
            "--checkpoint-every",
            "2",
        ],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    // Lose the last checkpoint, as a kill would, then resume from elsewhere.
    let run = start_dir.join("run");
    std::fs::remove_dir_all(run.join("checkpoints/step-00000004")).unwrap();
    let out = run_in(&elsewhere, &["train", "--resume", run.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
    let steps: Vec<u64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
    // Generation from elsewhere, with the input "12" and `extra` options.
    let generate = |extra: &[&str]| -> Output {
        let mut args = vec!["generate", run.to_str().unwrap(), "--input", "12"];
        args.extend(extra);
        run_in(&elsewhere, &args)
    };
    let out = generate(&["--features", "lang=eng", "--max-new-tokens", "3"]);
    assert!(out.status.success(), "{:?}", text(&out));
    // A length the model has no positions for is refused before generating.
    let out = generate(&["--max-new-tokens", "1000000000"]);
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && out.status.code() != Some(101),
        "{stderr}"
    );
    assert!(
        stderr.contains("--max-new-tokens") && stderr.contains("max_position_embeddings"),
        "{stderr}"
    );

    // A damaged newest checkpoint: generation falls back to the one before it and says so.
    let weights = run.join("checkpoints/step-00000004/adapter_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let out = generate(&["--max-new-tokens", "3"]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning:")
            && stderr.contains("step-00000004")
            && stderr.contains("step 2"),
        "{stderr}"
    );
}
