//! A tiny demo mixture (2 languages × 2 tasks) and a random base model for the CLI tests.

use std::path::{Path, PathBuf};

use flix_core::demo::{generate, write_dir, DemoConfig, Task, TRAIN_FILE};
use flix_model::tokenize::{char_tokenizer_json, Tokenizer};
use flix_model::train::base::{write_random_base, TinyLlamaShape};

/// Returns (base model directory, train file); the test split is `data/test.jsonl`.
pub fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
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
        max_positions: 256,
    };
    write_random_base(&dir.join("base"), &shape, &json, 1).unwrap();
    (dir.join("base"), dir.join("data").join(TRAIN_FILE))
}
