//! Examples longer than the model's context (max_position_embeddings, 128 here) get an explicit
//! policy in every command: `flix train` skips them with a count (or truncates them, or refuses
//! the data), `flix score` refuses them naming file:line unless `--truncate`, `flix eval` skips
//! them with a count and stops generating at the context. A line of millions of characters is
//! measured, not tokenized: every command finishes in seconds.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{fixture_with_context, flix, text};
use serde_json::{json, Value};

/// The model's context in these tests.
const CONTEXT: usize = 128;

/// A line of a few million characters (digits and spaces, as in the demo's inputs).
fn giant_text() -> String {
    "12 ".repeat(1_000_000)
}

/// Appends JSON lines to `path`; returns the 1-based line number of the first one appended.
fn append(path: &Path, lines: &[Value]) -> usize {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    let first = text.lines().count() + 1;
    for line in lines {
        text += &format!("{line}\n");
    }
    std::fs::write(path, text).unwrap();
    first
}

/// Runs `flix args`, asserting it took less than a minute and did not panic; returns (success,
/// stdout, stderr).
fn timed(args: &[OsString]) -> (bool, String, String) {
    let start = Instant::now();
    let out = flix(args);
    let elapsed = start.elapsed();
    let (stdout, stderr) = text(&out);
    assert!(
        elapsed < Duration::from_secs(60),
        "{args:?} took {elapsed:?}: {stderr}"
    );
    assert!(
        out.status.code() != Some(101) && !stderr.contains("panicked"),
        "{args:?}: {stderr}"
    );
    (out.status.success(), stdout, stderr)
}

fn args(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    parts.iter().map(|p| p.as_ref().to_os_string()).collect()
}

fn train(base: &Path, data: &Path, run: &Path, extra: &[&str]) -> (bool, String) {
    let mut a = args(&[&"train", &"--base", &base, &"--data", &data, &"--out", &run]);
    a.extend(
        ["--steps", "2", "--rank", "2", "--checkpoint-every", "2"]
            .iter()
            .chain(extra)
            .map(OsString::from),
    );
    let (ok, _, stderr) = timed(&a);
    (ok, stderr)
}

/// The base (context 64) and a train file with two over-long examples appended: one whose target
/// runs past the context (truncation keeps it), one whose input is a few million characters (its
/// prompt alone fills the context) and whose language appears nowhere else.
fn long_training_data(dir: &Path) -> (PathBuf, PathBuf, usize) {
    let (base, train) = fixture_with_context(dir, CONTEXT);
    let first = append(
        &train,
        &[
            json!({"lang": "eng", "task": "num2words", "input": "12",
                   "target": "twelve ".repeat(40)}),
            json!({"lang": "xxx", "task": "num2words", "input": giant_text(), "target": "x"}),
        ],
    );
    (base, train, first)
}

#[test]
fn train_skips_truncates_or_refuses_examples_longer_than_the_context() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, data, first) = long_training_data(tmp.path());
    let file = data.display().to_string();
    let (line_a, line_b) = (format!("{file}:{first}"), format!("{file}:{}", first + 1));

    // Default: both skipped and counted, the run trains on the rest; the value only the skipped
    // example has gets no adapter. The eval file's over-long example is skipped too.
    let eval_file = tmp.path().join("data/test.jsonl");
    let eval_line = append(
        &eval_file,
        &[json!({"lang": "eng", "task": "num2words", "input": giant_text(), "target": "x"})],
    );
    let run = tmp.path().join("skip");
    let eval_every = [
        "--eval-every",
        "2",
        "--eval-file",
        eval_file.to_str().unwrap(),
    ];
    let (ok, stderr) = train(&base, &data, &run, &eval_every);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("1 eval example is longer than the model's context")
            && stderr.contains(&format!("{}:{eval_line}", eval_file.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "2 training examples are longer than the model's context of {CONTEXT} tokens \
             (max_position_embeddings): 2 skipped ({line_a}, {line_b})"
        )),
        "{stderr}"
    );
    let config =
        std::fs::read_to_string(run.join("checkpoints/step-00000002/adapter_config.json")).unwrap();
    assert!(
        config.contains("\"eng\"") && !config.contains("\"xxx\""),
        "{config}"
    );

    // Truncate: the long target is cut to the context and trained on (the model refuses any
    // position past it, so success means the cut held); the giant prompt is still skipped.
    let run = tmp.path().join("truncate");
    let (ok, stderr) = train(&base, &data, &run, &["--long-examples", "truncate"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("2 training examples are longer")
            && stderr.contains("1 skipped, 1 truncated"),
        "{stderr}"
    );

    // Error: the first over-long example is named, and no run is started.
    let run = tmp.path().join("error");
    let (ok, stderr) = train(&base, &data, &run, &["--long-examples", "error"]);
    assert!(!ok);
    assert!(
        stderr.contains(&line_a) && stderr.contains(&format!("context of {CONTEXT} tokens")),
        "{stderr}"
    );
    assert!(!run.join("spec.json").exists());

    // A policy that does not exist is named.
    let (ok, stderr) = train(&base, &data, &run, &["--long-examples", "drop"]);
    assert!(
        !ok && stderr.contains("skip, truncate or error"),
        "{stderr}"
    );

    // Everything over-long: refused, even under skip.
    let only_long = tmp.path().join("only-long.jsonl");
    append(
        &only_long,
        &[json!({"lang": "eng", "task": "num2words", "input": giant_text(), "target": "x"})],
    );
    let run = tmp.path().join("all-skipped");
    let (ok, stderr) = train(&base, &only_long, &run, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("all 1 examples are longer than the model's context"),
        "{stderr}"
    );
}

#[test]
fn score_refuses_an_over_long_example_naming_its_line_unless_truncate() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = fixture_with_context(tmp.path(), CONTEXT);
    let data = tmp.path().join("score.jsonl");
    append(
        &data,
        &[
            json!({"input": "12", "target": " twelve"}),
            json!({"input": "12", "target": "twelve ".repeat(40)}),
            json!({"input": "12", "target": giant_text()}),
        ],
    );
    let (ok, _, stderr) = timed(&args(&[&"score", &base, &data]));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{}:2", data.display()))
            && stderr.contains(&format!("context of {CONTEXT} tokens"))
            && stderr.contains("--truncate"),
        "{stderr}"
    );

    // Without the long line the giant one is named, by its size, without tokenizing it.
    let giant_only = tmp.path().join("giant.jsonl");
    append(
        &giant_only,
        &[json!({"input": "12", "target": giant_text()})],
    );
    let (ok, _, stderr) = timed(&args(&[&"score", &base, &giant_only]));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{}:1", giant_only.display())) && stderr.contains("bytes"),
        "{stderr}"
    );

    // --truncate: the over-long lines score their first CONTEXT tokens: the prompt "12" is two
    // characters (two tokens of the character tokenizer, no BOS), so CONTEXT - 2 target tokens.
    let (ok, stdout, stderr) = timed(&args(&[&"score", &base, &data, &"--truncate"]));
    assert!(ok, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["target_tokens"], json!(" twelve".chars().count()));
    assert_eq!(lines[0].get("truncated"), None);
    for line in &lines[1..] {
        assert_eq!(line["target_tokens"], json!(CONTEXT - 2), "{line}");
        assert_eq!(line["truncated"], json!(true));
    }
    assert!(stderr.contains("2 truncated"), "{stderr}");
}

#[test]
fn eval_skips_prompts_longer_than_the_context_and_stops_generating_at_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train_file) = fixture_with_context(tmp.path(), CONTEXT);
    let run = tmp.path().join("run");
    let (ok, stderr) = train(&base, &train_file, &run, &[]);
    assert!(ok, "{stderr}");

    // A prompt of 90 characters (tags, the input, " =") fits, but not with 48 new tokens:
    // generation stops at the context. Two prompts do not fit at all.
    let data = tmp.path().join("eval.jsonl");
    let first = append(
        &data,
        &[
            json!({"lang": "eng", "task": "num2words", "input": "1".repeat(60), "target": "x"}),
            json!({"lang": "eng", "task": "num2words", "input": "1".repeat(200), "target": "x"}),
            json!({"lang": "fra", "task": "num2words", "input": giant_text(), "target": "x"}),
        ],
    );
    let out_json = tmp.path().join("eval.json");
    let (ok, _, stderr) = timed(&args(&[
        &"eval",
        &run,
        &"--data",
        &data,
        &"--max-new-tokens",
        &"48",
        &"--json",
        &out_json,
    ]));
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(
            "skipped 2 example(s) whose prompt leaves no room for an output in the model's context"
        ) && stderr.contains(&format!("{}:{}", data.display(), first + 1)),
        "{stderr}"
    );
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_json).unwrap()).unwrap();
    let result = &results[0];
    assert_eq!(result["skipped_long"].as_array().unwrap().len(), 2);
    let totals: usize = result["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["total"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(totals, 1, "only the example that fits is counted");

    // Nothing fits: an error, not an empty grid.
    let only_long = tmp.path().join("only-long.jsonl");
    append(
        &only_long,
        &[json!({"lang": "eng", "task": "num2words", "input": giant_text(), "target": "x"})],
    );
    let (ok, _, stderr) = timed(&args(&[&"eval", &run, &"--data", &only_long]));
    assert!(!ok);
    assert!(
        stderr.contains("all 1 examples have a prompt longer"),
        "{stderr}"
    );
}
