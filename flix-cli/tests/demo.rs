//! `flix demo --tiny`: the whole pipeline (mixture, tokenizer, random base, pretraining, FLix and
//! LoRA fine-tuning, evaluation) in a few seconds, with its grid and results file.

mod common;

use std::ffi::OsString;
use std::path::Path;

use common::{flix, flix_ok, text};

/// `demo --tiny EXTRA... --out OUT`.
fn tiny_demo(out: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["demo", "--tiny"].iter().map(OsString::from).collect();
    args.extend(extra.iter().map(OsString::from));
    args.extend([OsString::from("--out"), out.as_os_str().to_owned()]);
    args
}

#[test]
fn tiny_demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let (stdout, _) = flix_ok(&tiny_demo(&out, &[]));
    // Eight language rows, four task columns, eight held-out cells marked, for FLix, LoRA and
    // their difference.
    for header in ["FLix", "LoRA (compute-matched)", "FLix minus LoRA"] {
        assert!(stdout.contains(header), "{stdout}");
    }
    let grid: Vec<&str> = stdout.lines().skip_while(|l| !l.contains("FLix")).collect();
    assert!(
        ["num2words", "next", "previous", "reverse"]
            .iter()
            .all(|task| grid[1].contains(task)),
        "{stdout}"
    );
    let rows = &grid[2..10];
    assert_eq!(
        rows.iter().filter(|l| l.matches('*').count() == 1).count(),
        8,
        "{stdout}"
    );
    assert!(stdout.contains("held-out"), "{stdout}");
    // One seed has no spread: the closing line says what testing the claim takes.
    assert!(
        stdout.contains("FLix minus LoRA: held-out") && stdout.contains("--seeds 3"),
        "{stdout}"
    );

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let cells = results[0]["flix"]["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 32);
    assert_eq!(cells.iter().filter(|c| c["heldout"] == true).count(), 8);
    // The report embeds SVG plots: loss curves and three heatmaps.
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(report.matches("<svg").count(), 4, "{report}");
    assert!(report.contains("FLix minus LoRA") || report.contains("flix minus lora"));
    // The pretrained base and both runs' checkpoints are on disk.
    for dir in ["base", "flix", "lora"] {
        assert!(out.join("seed-0").join(dir).exists(), "{dir}");
    }
}

#[test]
fn a_bad_size_device_task_list_or_learning_rate_is_an_error_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--hidden", "12"][..], "multiple of 8"),
        (&["--layers", "0"][..], "--layers at least 1"),
        (&["--device", "tpu"][..], "unknown device"),
        (&["--tasks", "num2words"][..], "never trained"),
        (&["--tasks", "next,next"][..], "listed twice"),
        (&["--tasks", "next,sums"][..], "unknown demo task"),
        (&["--lr", "0"][..], "--lr must be a positive learning rate"),
        (
            &["--pretrain-lr=-1e-3"][..],
            "--pretrain-lr must be a positive",
        ),
    ] {
        let out = tmp.path().join("demo");
        let output = flix(&tiny_demo(&out, args));
        let (_, stderr) = text(&output);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}

#[test]
fn the_learning_rate_options_reach_pretraining_and_both_fine_tuning_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    flix_ok(&tiny_demo(
        &out,
        &["--pretrain-lr", "0.002", "--lr", "0.0007"],
    ));
    for (run, lr) in [("pretrain", 0.002), ("flix", 0.0007), ("lora", 0.0007)] {
        let path = out.join("seed-0").join(run).join("spec.json");
        let spec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(spec["lr"].as_f64(), Some(lr), "{}", path.display());
    }
}
