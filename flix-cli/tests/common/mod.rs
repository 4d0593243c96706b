//! A tiny demo mixture (2 languages × 2 tasks) and a random base model for the CLI tests, and one
//! way to run the `flix` binary.

use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flix_demo::{generate, write_dir, DemoConfig, Task, TRAIN_FILE};
use flix_model::tokenize::{char_tokenizer_json, Tokenizer};
use flix_model::train::base::{write_random_base, TinyLlamaShape};

/// Returns (base model directory, train file); the test split is `data/test.jsonl`.
#[allow(dead_code)]
pub fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    fixture_with_context(dir, 256)
}

/// As [`fixture`], with a base model of `max_positions` positions (max_position_embeddings).
#[allow(dead_code)]
pub fn fixture_with_context(dir: &Path, max_positions: usize) -> (PathBuf, PathBuf) {
    let config = DemoConfig {
        train_per_cell: 3,
        dev_per_cell: 0,
        test_per_cell: 2,
        knowledge_dates_per_language: 1,
        ..DemoConfig::for_grid(&["eng", "fra"], &[Task::Num2Words, Task::Words2Num])
    };
    let mixture = generate(&config).unwrap();
    write_dir(&mixture, &dir.join("data")).unwrap();
    let mut texts = vec![" ="];
    for e in &mixture.train {
        texts.extend([e.input.as_str(), e.target.as_str()]);
    }
    let json = char_tokenizer_json(texts, &[]);
    let vocab = Tokenizer::from_json_str(&json, Path::new("t"))
        .unwrap()
        .vocab_size();
    let shape = TinyLlamaShape {
        hidden: 16,
        intermediate: 16,
        layers: 1,
        heads: 2,
        kv_heads: 2,
        vocab,
        max_positions,
    };
    write_random_base(&dir.join("base"), &shape, &json, 1).unwrap();
    (dir.join("base"), dir.join("data").join(TRAIN_FILE))
}

/// Runs the `flix` binary with `args`.
#[allow(dead_code)]
pub fn flix<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flix"))
        .args(args)
        .output()
        .unwrap()
}

/// A finished command's (stdout, stderr) as text.
#[allow(dead_code)]
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs `flix` with `args`, asserts that it succeeded, and returns its (stdout, stderr).
#[allow(dead_code)]
pub fn flix_ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> (String, String) {
    let out = flix(args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
    (stdout, stderr)
}
