//! The demo mixture on disk, in one of two layouts:
//! - [`write_dir`]: one folder with `train.jsonl`, `dev.jsonl`, `test.jsonl`;
//! - [`write_grid_dir`]: the real mixture's layout, `<task>/<lang>/{train,dev,test}.jsonl` (held-out
//!   cells have no `train.jsonl`), so the demo goes through the same loader as real data.
//!
//! Both add `knowledge.txt` (one plain sentence per line) and `heldout.json`
//! (`{"heldout": [{"lang": .., "task": ..}, ..]}`, the shape of the real mixture's
//! `zero_shot_split.json`). Examples are one JSON object per line, the real mixture's record shape.
//! Each file is written with [`flix_core::write_atomic`], so a crash never leaves a torn file.

use std::fs;
use std::io::{BufRead, BufReader};
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

/// Writes `mixture` into `dir` (created if missing) as three flat JSONL files plus the knowledge
/// text and the held-out list, returning the paths written.
pub fn write_dir(mixture: &DemoMixture, dir: &Path) -> Result<Vec<PathBuf>, DemoError> {
    create_dir(dir)?;
    let mut written = Vec::new();
    for (name, examples) in split_files(mixture) {
        let refs: Vec<&DemoExample> = examples.iter().collect();
        written.push(write_examples(&dir.join(name), &refs)?);
    }
    written.extend(write_side_files(mixture, dir)?);
    Ok(written)
}

/// Writes `mixture` into `dir` (created if missing) in the real mixture's layout,
/// `<task>/<lang>/{train,dev,test}.jsonl`, plus the knowledge text and the held-out list at the
/// top, returning the paths written. A cell gets a file only for the splits it has examples in.
pub fn write_grid_dir(mixture: &DemoMixture, dir: &Path) -> Result<Vec<PathBuf>, DemoError> {
    create_dir(dir)?;
    let mut written = Vec::new();
    for (name, examples) in split_files(mixture) {
        // Cells in order of first appearance, which is the generator's order.
        let mut cells: Vec<(&str, &str)> = Vec::new();
        for e in examples {
            if !cells.contains(&(e.task.as_str(), e.lang.as_str())) {
                cells.push((e.task.as_str(), e.lang.as_str()));
            }
        }
        for (task, lang) in cells {
            let cell_dir = dir.join(task).join(lang);
            create_dir(&cell_dir)?;
            let refs: Vec<&DemoExample> = examples
                .iter()
                .filter(|e| e.task == task && e.lang == lang)
                .collect();
            written.push(write_examples(&cell_dir.join(name), &refs)?);
        }
    }
    written.extend(write_side_files(mixture, dir)?);
    Ok(written)
}

fn split_files(mixture: &DemoMixture) -> [(&'static str, &[DemoExample]); 3] {
    [
        (TRAIN_FILE, &mixture.train),
        (DEV_FILE, &mixture.dev),
        (TEST_FILE, &mixture.test),
    ]
}

fn write_examples(path: &Path, examples: &[&DemoExample]) -> Result<PathBuf, DemoError> {
    let mut text = String::new();
    for example in examples {
        text.push_str(&to_json(example, path)?);
        text.push('\n');
    }
    write_atomically(path, &text)
}

/// `knowledge.txt` and `heldout.json`.
fn write_side_files(mixture: &DemoMixture, dir: &Path) -> Result<Vec<PathBuf>, DemoError> {
    let mut written = Vec::new();
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

/// Writes `text` with [`flix_core::write_atomic`] and returns the path written.
fn write_atomically(path: &Path, text: &str) -> Result<PathBuf, DemoError> {
    flix_core::write_atomic(path, text.as_bytes()).map_err(|e| match e {
        flix_core::CoreError::Io { path, source } => DemoError::Io { path, source },
        other => io_error(path, std::io::Error::other(other.to_string())),
    })?;
    Ok(path.to_path_buf())
}

fn io_error(path: &Path, source: std::io::Error) -> DemoError {
    DemoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn create_dir(dir: &Path) -> Result<(), DemoError> {
    fs::create_dir_all(dir).map_err(|source| io_error(dir, source))
}
