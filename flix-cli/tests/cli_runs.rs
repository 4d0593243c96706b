//! `flix train`, `flix eval`, `flix export` and `flix report` through the binary on a tiny run.

mod common;

use common::fixture;

/// Runs `flix`, asserts that it succeeded, and returns its stdout.
fn flix(args: &[&std::ffi::OsStr]) -> String {
    common::flix_ok(args).0
}

#[test]
fn train_eval_export_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let test = tmp.path().join("data/test.jsonl");
    let run = tmp.path().join("run");
    let os = |s: &str| std::ffi::OsString::from(s);
    let mut args = vec![os("train"), os("--base"), base.clone().into(), os("--data")];
    args.extend([train.into(), os("--out"), run.clone().into()]);
    args.extend(
        [
            "--steps",
            "3",
            "--rank",
            "2",
            "--holdout",
            "lang=eng,task=words2num",
        ]
        .map(os),
    );
    flix(&args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());

    // The same run twice: the difference grid is all zeros; held-out cells come from spec.json.
    let json = tmp.path().join("eval.json");
    let out = flix(&[
        os("eval").as_os_str(),
        run.as_os_str(),
        run.as_os_str(),
        os("--data").as_os_str(),
        test.as_os_str(),
        os("--json").as_os_str(),
        json.as_os_str(),
    ]);
    let diff: Vec<&str> = out.lines().skip_while(|l| !l.contains("minus")).collect();
    assert!(diff.len() >= 4, "{out}");
    for row in &diff[2..4] {
        let cells: Vec<&str> = row.split_whitespace().skip(1).collect();
        assert_eq!(cells.len(), 2, "{out}");
        assert!(
            // `*` held out; `?` a language or task only held-out cells have (never trained).
            cells
                .iter()
                .all(|c| c.trim_end_matches(['*', '?']) == "0.0"),
            "{out}"
        );
    }
    assert_eq!(
        out.matches("0.0*").count(),
        3,
        "one held-out cell per grid: {out}"
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(results.as_array().unwrap().len(), 2);
    assert_eq!(results[0]["predictions"].as_array().unwrap().len(), 8);

    let peft = tmp.path().join("peft");
    flix(&[
        os("export").as_os_str(),
        run.as_os_str(),
        os("--features").as_os_str(),
        os("lang=fra,task=num2words").as_os_str(),
        os("--out").as_os_str(),
        peft.as_os_str(),
    ]);
    assert!(peft.join("adapter_model.safetensors").exists());
    assert!(peft.join("adapter_config.json").exists());

    let html = tmp.path().join("report.html");
    flix(&[
        os("report").as_os_str(),
        os("--runs").as_os_str(),
        run.as_os_str(),
        os("--eval").as_os_str(),
        json.as_os_str(),
        os("--out").as_os_str(),
        html.as_os_str(),
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 4);
    // The page opens with the summary table, before any plot; every heatmap has its legend.
    let summary = page.find("<h2>Summary").expect("a summary table");
    assert!(summary < page.find("<svg").unwrap());
    assert!(page.contains("supervised mean (cells)") && page.contains("held-out mean (cells)"));
    assert!(page.matches("100 (%)").count() + page.matches("+100 (points)").count() >= 3);
}
