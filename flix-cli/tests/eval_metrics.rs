//! `flix train --eval-every`, `flix eval --metric` and the report's eval curves through the binary
//! on a tiny run.

mod common;

use std::ffi::OsString;
use std::path::Path;

use common::{fixture, flix, flix_ok as ok};
use flix_model::eval::chrf::corpus_chrf;
use flix_model::eval::metrics::normalize_label;
use flix_model::eval::EvalResult;

fn args(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_os_string()).collect()
}

/// The free-text test split plus a label task (`pick`, targets `one`/`two` only) in one cell.
fn eval_file(dir: &Path) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(dir.join("data/test.jsonl")).unwrap();
    for (input, target) in [("1", "one"), ("2", "two"), ("1", "one"), ("2", "two")] {
        text += &format!(
            "{{\"lang\":\"fra\",\"task\":\"pick\",\"input\":\"{input}\",\"target\":\"{target}\"}}\n"
        );
    }
    let path = dir.join("eval.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn periodic_eval_metrics_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let test = tmp.path().join("data/test.jsonl");
    let run = tmp.path().join("run");

    // --eval-every needs --eval-file.
    let partial = flix(&args(&[
        &"train",
        &"--base",
        &base,
        &"--data",
        &train,
        &"--out",
        &run,
        &"--eval-every",
        &"2",
    ]));
    assert!(!partial.status.success());

    let (_, log) = ok(&args(&[
        &"train",
        &"--base",
        &base,
        &"--data",
        &train,
        &"--out",
        &run,
        &"--steps",
        &"3",
        &"--rank",
        &"2",
        &"--holdout",
        &"lang=eng,task=words2num",
        &"--eval-every",
        &"2",
        &"--eval-file",
        &test,
        &"--eval-max-per-cell",
        &"1",
        &"--eval-max-new-tokens",
        &"3",
    ]));
    assert_eq!(log.matches("eval loss held-out").count(), 2, "{log}");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("eval").is_some())
        .collect();
    let steps: Vec<u64> = records
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [2, 3]);
    for r in &records {
        let cells = r["eval"].as_object().unwrap();
        assert_eq!(cells.len(), 4);
        let held = &cells["lang=eng,task=words2num"];
        assert_eq!(held["heldout"], true);
        assert_eq!(r["heldout_mean"], held["loss"]);
        assert!(cells.values().all(|c| c["exact_match"].is_f64()));
    }

    // Every metric in the JSON; the grid shows the one asked for.
    let file = eval_file(tmp.path());
    let json = tmp.path().join("eval.json");
    let mut grids = Vec::new();
    for metric in ["exact", "chrf", "accuracy"] {
        let (out, _) = ok(&args(&[
            &"eval",
            &run,
            &"--data",
            &file,
            &"--metric",
            &metric,
            &"--max-new-tokens",
            &"4",
            &"--json",
            &json,
        ]));
        grids.push(out);
    }
    assert!(grids[0].contains("(Exact match)"), "{}", grids[0]);
    assert!(grids[1].contains("(chrF)"), "{}", grids[1]);
    let results: Vec<EvalResult> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &results[0];
    assert_eq!(r.cells.len(), 5);
    for cell in &r.cells {
        let preds: Vec<_> = r
            .predictions
            .iter()
            .filter(|p| p.cell == cell.cell)
            .collect();
        assert_eq!(preds.len(), cell.total);
        let exact = preds
            .iter()
            .filter(|p| p.output.trim() == p.target.trim())
            .count();
        assert_eq!(cell.correct, exact, "{}", cell.cell);
        let chrf = corpus_chrf(preds.iter().map(|p| (p.output.as_str(), p.target.as_str())));
        assert_eq!(cell.chrf, Some(chrf), "{}", cell.cell);
        if cell.cell == "lang=fra,task=pick" {
            let right = preds
                .iter()
                .filter(|p| normalize_label(&p.output) == normalize_label(&p.target))
                .count();
            assert_eq!(cell.label_correct, Some(right));
        } else {
            assert_eq!(cell.label_correct, None, "{} is free text", cell.cell);
        }
    }
    // Accuracy: only the label cell has a number; free-text cells (and eng's missing `pick`
    // cell) show `-`.
    let accuracy_rows: Vec<&str> = grids[2]
        .lines()
        .filter(|l| l.starts_with("eng") || l.starts_with("fra"))
        .collect();
    assert_eq!(accuracy_rows.len(), 2, "{}", grids[2]);
    let dashes = accuracy_rows
        .iter()
        .flat_map(|l| l.split_whitespace().skip(1))
        .filter(|c| c.trim_end_matches(['*', '?']) == "-")
        .count();
    assert_eq!(dashes, 5, "{}", grids[2]);

    // Old results (without chrF and accuracy) still read; the report plots the eval curves.
    let old = tmp.path().join("old.json");
    std::fs::write(
        &old,
        r#"[{"name":"old","cells":[{"cell":"lang=eng,task=date","features":{"lang":"eng","task":"date"},
            "heldout":false,"correct":1,"total":2}],"predictions":[]}]"#,
    )
    .unwrap();
    let html = tmp.path().join("report.html");
    ok(&args(&[
        &"report", &"--runs", &run, &"--eval", &old, &"--out", &html,
    ]));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("eval, held-out"),
        "no eval curve in the report"
    );
    assert!(page.contains("eval, supervised"));
    ok(&args(&[
        &"report",
        &"--runs",
        &run,
        &"--eval",
        &json,
        &"--metric",
        &"chrf",
        &"--out",
        &html,
    ]));
    assert!(std::fs::read_to_string(&html).unwrap().contains("chrF"));
}
