//! `flix bench-serve` against a real `flix serve` of a tiny trained run: the JSON report counts
//! every request of every (mode, level), the tokens add up, percentiles are ordered, and the
//! dumped request list holds exactly the combinations the run was trained on.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::Path;

use common::{fixture, flix_ok};
use flix_core::read_jsonl;
use serde_json::Value;

const REQUESTS: u64 = 6;
const MAX_TOKENS: u64 = 4;

/// The (type → values) of the fixture's training data: what the run's server must serve.
fn trained_values(train: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut values = BTreeMap::<String, BTreeSet<String>>::new();
    for example in read_jsonl(train, &["lang", "task"]).unwrap() {
        for (name, value) in example.features {
            values.entry(name).or_default().insert(value);
        }
    }
    values
}

/// Checks one (mode, level) entry of the report.
fn check_level(level: &Value, stream: bool) {
    let what = format!("{level}");
    assert_eq!(level["requests"], REQUESTS, "{what}");
    assert_eq!(level["errors"], 0, "{what}");
    let tokens = level["completion_tokens"].as_u64().unwrap();
    assert!(tokens > 0 && tokens <= REQUESTS * MAX_TOKENS, "{what}");
    assert!(
        level["prompt_tokens"].as_u64().unwrap() >= REQUESTS,
        "{what}"
    );
    let wall = level["wall_s"].as_f64().unwrap();
    let per_s = level["tokens_per_s"].as_f64().unwrap();
    assert!(
        wall > 0.0 && (per_s * wall - tokens as f64).abs() < 1e-6 * tokens as f64,
        "{what}"
    );
    let latency = &level["latency_ms"];
    let (p50, p99) = (
        latency["p50"].as_f64().unwrap(),
        latency["p99"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= wall * 1e3, "{what}");
    let ttft = &level["time_to_first_token_ms"];
    if stream {
        // Each request's first token comes before its end, so every order statistic does too.
        let (f50, f99) = (ttft["p50"].as_f64().unwrap(), ttft["p99"].as_f64().unwrap());
        assert!(
            0.0 < f50 && f50 <= f99 && f50 <= p50 && f99 <= p99,
            "{what}"
        );
    } else {
        assert!(ttft.is_null(), "{what}");
    }
}

#[test]
fn bench_serve_reports_every_request_of_a_real_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (base, train) = fixture(dir);
    let run = dir.join("run");
    let mut args: Vec<OsString> = vec!["train".into(), "--base".into(), base.into()];
    args.extend(["--data".into(), train.clone().into(), "--out".into()]);
    args.push(run.clone().into());
    args.extend(["--steps", "3", "--rank", "2"].map(OsString::from));
    flix_ok(&args);
    let values = trained_values(&train);

    for stream in [false, true] {
        let report = dir.join(format!("report-{stream}.json"));
        let requests = dir.join(format!("requests-{stream}.jsonl"));
        let mut args: Vec<OsString> =
            vec!["bench-serve".into(), "--run".into(), run.clone().into()];
        args.extend(["--data".into(), dir.join("data/test.jsonl").into()]);
        args.extend(["--concurrency", "1,3", "--warmup", "1"].map(OsString::from));
        args.extend(["--requests-per-level".into(), REQUESTS.to_string().into()]);
        args.extend(["--max-tokens".into(), MAX_TOKENS.to_string().into()]);
        args.extend(["--out".into(), report.clone().into()]);
        args.extend(["--dump-requests".into(), requests.clone().into()]);
        if stream {
            args.push("--stream".into());
        }
        let (stdout, _) = flix_ok(&args);
        assert!(stdout.contains("tokens/s"), "no table printed:\n{stdout}");

        let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let served: BTreeMap<String, BTreeSet<String>> =
            serde_json::from_value(report["features"].clone()).unwrap();
        assert_eq!(served, values);
        let levels = report["levels"].as_array().unwrap();
        let cells: Vec<(&str, u64)> = levels
            .iter()
            .map(|l| {
                (
                    l["mode"].as_str().unwrap(),
                    l["concurrency"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            cells,
            [("mixed", 1), ("mixed", 3), ("single", 1), ("single", 3)]
        );
        for level in levels {
            check_level(level, stream);
        }

        // The dump: REQUESTS per mode; mixed draws trained values of both types, single has one
        // combination; the same prompts in both modes.
        let text = std::fs::read_to_string(&requests).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len() as u64, 2 * REQUESTS);
        let (mixed, single) = lines.split_at(REQUESTS as usize);
        let single_combos: BTreeSet<String> =
            single.iter().map(|r| r["features"].to_string()).collect();
        assert_eq!(single_combos.len(), 1, "{single_combos:?}");
        for (m, s) in mixed.iter().zip(single) {
            assert_eq!(
                (m["mode"].as_str(), s["mode"].as_str()),
                (Some("mixed"), Some("single"))
            );
            assert_eq!(m["prompt"], s["prompt"]);
            assert_eq!(m["max_tokens"], MAX_TOKENS);
            let features = m["features"].as_object().unwrap();
            assert_eq!(features.len(), values.len(), "{m}");
            for (name, value) in features {
                assert!(values[name].contains(value.as_str().unwrap()), "{m}");
            }
        }
    }
}
