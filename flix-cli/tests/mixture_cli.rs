//! `flix train` and `flix eval` on mixture roots and split files through the binary: bad input is
//! an error before any work, cells with a value the run never trained are marked unseen, and a
//! spec.json that cannot be parsed is an error.

mod common;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use common::{fixture, flix, flix_ok, text};

/// A mixture root with the fixture's test examples as each cell's test.jsonl (and train.jsonl).
fn mixture_root(dir: &Path, test: &Path) -> PathBuf {
    let root = dir.join("mixture");
    for line in std::fs::read_to_string(test).unwrap().lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let cell = root
            .join(record["task"].as_str().unwrap())
            .join(record["lang"].as_str().unwrap());
        std::fs::create_dir_all(&cell).unwrap();
        for split in ["train.jsonl", "test.jsonl"] {
            let path = cell.join(split);
            let mut text = std::fs::read_to_string(&path).unwrap_or_default();
            text += &format!("{line}\n");
            std::fs::write(&path, text).unwrap();
        }
    }
    root
}

fn args(parts: &[&dyn AsRef<OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_os_string()).collect()
}

fn fails_with(parts: &[&dyn AsRef<OsStr>], want: &str) {
    let out = flix(&args(parts));
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains(want), "wanted {want:?} in: {stderr}");
}

#[test]
fn mixture_roots_split_files_unseen_cells_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = fixture(tmp.path());
    let test = tmp.path().join("data/test.jsonl");
    let root = mixture_root(tmp.path(), &test);
    let split = tmp.path().join("split.json");
    std::fs::write(
        &split,
        r#"{"heldout": [{"task": "words2num", "lang": "eng", "note": ["x"]}]}"#,
    )
    .unwrap();
    let run = tmp.path().join("run");

    // Bad input before any training: no run directory is left behind.
    let missing = tmp.path().join("missing.json");
    fails_with(
        &[
            &"train",
            &"--base",
            &base,
            &"--mixture",
            &root,
            &"--out",
            &run,
            &"--split-file",
            &missing,
        ],
        "missing.json",
    );
    let bad_split = tmp.path().join("bad-split.json");
    std::fs::write(
        &bad_split,
        r#"{"heldout": [{"task": "words2num", "lang": "deu"}]}"#,
    )
    .unwrap();
    fails_with(
        &[
            &"train",
            &"--base",
            &base,
            &"--mixture",
            &root,
            &"--out",
            &run,
            &"--split-file",
            &bad_split,
        ],
        "lang=deu",
    );
    fails_with(
        &[
            &"train",
            &"--base",
            &base,
            &"--mixture",
            &tmp.path().join("data"),
            &"--out",
            &run,
        ],
        "no cells",
    );
    fails_with(
        &[
            &"train",
            &"--base",
            &base,
            &"--mixture",
            &root,
            &"--out",
            &run,
            &"--holdout",
            &"lang=eng,=fra",
        ],
        "needs both a feature type and a value",
    );
    assert!(!run.join("checkpoints").exists());

    flix_ok(&args(&[
        &"train",
        &"--base",
        &base,
        &"--mixture",
        &root,
        &"--split-file",
        &split,
        &"--out",
        &run,
        &"--steps",
        &"2",
        &"--rank",
        &"2",
        &"--max-train-per-cell",
        &"1",
    ]));
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("spec.json")).unwrap()).unwrap();
    assert_eq!(
        spec["holdout"],
        serde_json::json!(["lang=eng,task=words2num"])
    );
    assert_eq!(spec["max_train_per_cell"], 1);

    // Evaluation on the mixture's test split: held-out cells from spec.json; a language the run
    // never trained (deu) is unseen, with a warning, and not a supervised cell.
    let extra = tmp.path().join("extra.jsonl");
    std::fs::write(
        &extra,
        r#"{"lang":"deu","task":"num2words","input":"1","target":"eins"}"#.to_string() + "\n",
    )
    .unwrap();
    let json = tmp.path().join("eval.json");
    let out = flix(&args(&[
        &"eval",
        &run,
        &"--mixture",
        &root,
        &"--data",
        &extra,
        &"--metric",
        &"auto",
        &"--max-eval-per-cell",
        &"1",
        &"--max-new-tokens",
        &"3",
        &"--json",
        &json,
    ]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("lang=deu,task=num2words"),
        "{stderr}"
    );
    assert!(stderr.contains("unseen"), "{stderr}");
    assert!(stdout.contains('?') && stdout.contains('*'), "{stdout}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for cell in results[0]["cells"].as_array().unwrap() {
        assert_eq!(
            cell["unseen"],
            cell["cell"] == "lang=deu,task=num2words",
            "{cell}"
        );
        assert_eq!(
            cell["heldout"],
            cell["cell"] == "lang=eng,task=words2num",
            "{cell}"
        );
        assert_eq!(cell["total"], 1, "{cell}");
    }
    let tasks = results[0]["tasks"].as_array().unwrap();
    let num2words = tasks.iter().find(|t| t["task"] == "num2words").unwrap();
    assert_eq!(num2words["supervised_cells"], 2);
    assert_eq!(num2words["unseen_cells"], 1);

    // A held-out cell the evaluation data does not have is a warning, not silently dropped.
    let out = flix(&args(&[
        &"eval",
        &run,
        &"--data",
        &test,
        &"--holdout",
        &"lang=xxx",
        &"--max-new-tokens",
        &"2",
    ]));
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("held-out cell lang=xxx has no evaluation examples"),
        "{stderr}"
    );

    // Bad evaluation input.
    fails_with(
        &[&"eval", &run, &"--mixture", &root, &"--split", &"dev"],
        "has no dev split",
    );
    fails_with(
        &[&"eval", &run, &"--data", &test, &"--holdout", &"foo=bar"],
        "\"foo\" is not a feature type",
    );
    std::fs::write(
        root.join("tasks.json"),
        r#"{"num2words": {"metric": "BLEU-4"}, "words2num": {"metric": "exact match"}}"#,
    )
    .unwrap();
    fails_with(
        &[&"eval", &run, &"--mixture", &root, &"--metric", &"auto"],
        "task \"num2words\": unknown metric \"BLEU-4\"",
    );
    // Under another metric the text is not needed.
    flix_ok(&args(&[
        &"eval",
        &run,
        &"--mixture",
        &root,
        &"--max-new-tokens",
        &"2",
    ]));

    // A spec.json that cannot be parsed is an error, not a run without held-out cells.
    std::fs::write(run.join("spec.json"), "{ not json").unwrap();
    fails_with(&[&"eval", &run, &"--data", &test], "spec.json");
}
