//! The demo mixture on disk: one folder with `train.jsonl`, `dev.jsonl`, `test.jsonl` (one example
//! per line, the real mixture's record shape), `knowledge.txt` (one plain sentence per line) and
//! `heldout.json` (`{"heldout": [{"lang": .., "task": ..}, ..]}`, like the real mixture's
//! `zero_shot_split.json`). Each file is written to a temporary name and renamed, so a crash never
//! leaves a torn file.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use super::{Cell, DemoError, DemoExample, DemoMixture};

pub const TRAIN_FILE: &str = "train.jsonl";
pub const DEV_FILE: &str = "dev.jsonl";
pub const TEST_FILE: &str = "test.jsonl";
pub const KNOWLEDGE_FILE: &str = "knowledge.txt";
pub const HELDOUT_FILE: &str = "heldout.json";

#[derive(serde::Serialize)]
struct HeldoutFile<'a> {
    heldout: &'a [Cell],
}

/// Writes `mixture` into `dir` (created if missing), returning the paths written.
pub fn write_dir(mixture: &DemoMixture, dir: &Path) -> Result<Vec<PathBuf>, DemoError> {
    fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
    let mut written = Vec::new();
    for (name, examples) in [
        (TRAIN_FILE, &mixture.train),
        (DEV_FILE, &mixture.dev),
        (TEST_FILE, &mixture.test),
    ] {
        let mut text = String::new();
        for example in examples {
            text.push_str(&to_json(example, &dir.join(name))?);
            text.push('\n');
        }
        written.push(write_atomically(&dir.join(name), &text)?);
    }
    let mut knowledge = String::new();
    for line in &mixture.knowledge {
        knowledge.push_str(&line.text);
        knowledge.push('\n');
    }
    written.push(write_atomically(&dir.join(KNOWLEDGE_FILE), &knowledge)?);
    let heldout = HeldoutFile {
        heldout: &mixture.heldout,
    };
    let path = dir.join(HELDOUT_FILE);
    written.push(write_atomically(
        &path,
        &(to_json(&heldout, &path)? + "\n"),
    )?);
    Ok(written)
}

/// Reads a JSONL file of examples; errors name the file and the 1-based line.
pub fn read_jsonl(path: &Path) -> Result<Vec<DemoExample>, DemoError> {
    let file = fs::File::open(path).map_err(|source| io_error(path, source))?;
    let mut examples = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| io_error(path, source))?;
        if line.trim().is_empty() {
            continue;
        }
        let example = serde_json::from_str(&line).map_err(|source| DemoError::Json {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        examples.push(example);
    }
    Ok(examples)
}

fn to_json<T: serde::Serialize>(value: &T, path: &Path) -> Result<String, DemoError> {
    serde_json::to_string(value).map_err(|source| DemoError::Json {
        path: path.to_path_buf(),
        line: 0,
        source,
    })
}

fn write_atomically(path: &Path, text: &str) -> Result<PathBuf, DemoError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = fs::File::create(&temporary).map_err(|source| io_error(&temporary, source))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(&temporary, source))?;
    fs::rename(&temporary, path).map_err(|source| io_error(path, source))?;
    Ok(path.to_path_buf())
}

fn io_error(path: &Path, source: std::io::Error) -> DemoError {
    DemoError::Io {
        path: path.to_path_buf(),
        source,
    }
}
