//! Mixtures as users lay them out on disk:
//!
//! ```text
//! ROOT/<task>/<lang>/train.jsonl   one cell per (task, lang) folder, with any of the three splits
//! ROOT/<task>/<lang>/dev.jsonl
//! ROOT/<task>/<lang>/test.jsonl
//! ROOT/tasks.json                  optional: per task, its "metric" text and "labels"
//! ```
//!
//! and split files naming held-out cells (`zero_shot_split.json`):
//! `{"heldout": [{"task": "ner", "lang": "hau", ...}, ...]}`. In a held-out entry the string
//! fields are the cell's feature values; fields of other kinds (lists, numbers) are notes and are
//! ignored.
//!
//! Every record of a cell's file must agree with its folder: a `lang` or `task` field with another
//! value is an error naming the file and line; a record without the field takes the folder's.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde_json::Value;

use crate::data::{keep_spread, read_jsonl, without_bom, Example};
use crate::error::{CoreError, Result};

/// The task descriptions file of a mixture root.
pub const TASKS_FILE: &str = "tasks.json";
/// The two feature types a mixture's folders give.
pub const TASK: &str = "task";
pub const LANG: &str = "lang";

/// One split of every cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Dev,
    Test,
}

impl Split {
    /// `train.jsonl`, `dev.jsonl` or `test.jsonl`.
    pub fn file_name(self) -> &'static str {
        match self {
            Split::Train => "train.jsonl",
            Split::Dev => "dev.jsonl",
            Split::Test => "test.jsonl",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "dev" => Ok(Split::Dev),
            "test" => Ok(Split::Test),
            other => Err(CoreError::config(
                "--split",
                format!("unknown split {other:?}: expected train, dev or test"),
            )),
        }
    }
}

/// One (task, lang) folder of a mixture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MixtureCell {
    pub task: String,
    pub lang: String,
    pub dir: PathBuf,
}

impl MixtureCell {
    /// The file of `split` in this cell's folder.
    pub fn file(&self, split: Split) -> PathBuf {
        self.dir.join(split.file_name())
    }

    /// The cell's feature values.
    pub fn features(&self) -> BTreeMap<String, String> {
        [
            (LANG.to_string(), self.lang.clone()),
            (TASK.to_string(), self.task.clone()),
        ]
        .into()
    }

    /// `lang=hau,task=ner`.
    pub fn name(&self) -> String {
        format!("{LANG}={},{TASK}={}", self.lang, self.task)
    }
}

/// A task as the mixture's `tasks.json` describes it; other fields of the file are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TaskInfo {
    /// How the task is scored, in words (e.g. "accuracy / macro-F1").
    #[serde(default)]
    pub metric: Option<String>,
    /// The label set of a classification task.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
}

/// A mixture root and its cells, in (task, lang) order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mixture {
    pub root: PathBuf,
    pub cells: Vec<MixtureCell>,
}

fn is_split_file(path: &Path) -> bool {
    [Split::Train, Split::Dev, Split::Test]
        .iter()
        .any(|s| path.join(s.file_name()).is_file())
}

/// The sub-folders of `dir` in name order, hidden ones left out.
fn sub_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| CoreError::io(dir, e))? {
        let entry = entry.map_err(|e| CoreError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() && !name.starts_with('.') {
            dirs.push((name, path));
        }
    }
    dirs.sort();
    Ok(dirs)
}

impl Mixture {
    /// The cells under `root`: every `<task>/<lang>` folder holding a train, dev or test file. A
    /// root that is not a folder, or has no cell, is an error.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(CoreError::config(
                root.display(),
                "not a mixture root: no such folder",
            ));
        }
        let mut cells = Vec::new();
        for (task, task_dir) in sub_dirs(root)? {
            for (lang, dir) in sub_dirs(&task_dir)? {
                if is_split_file(&dir) {
                    cells.push(MixtureCell {
                        task: task.clone(),
                        lang,
                        dir,
                    });
                }
            }
        }
        if cells.is_empty() {
            return Err(CoreError::config(
                root.display(),
                "the mixture root has no cells: expected <task>/<lang>/{train,dev,test}.jsonl",
            ));
        }
        Ok(Self {
            root: root.to_path_buf(),
            cells,
        })
    }

    /// The cell of (`task`, `lang`), if the mixture has it.
    pub fn cell(&self, task: &str, lang: &str) -> Option<&MixtureCell> {
        self.cells.iter().find(|c| c.task == task && c.lang == lang)
    }

    /// Whether some cell has `value` for feature type `type_name` (only `lang` and `task` can).
    pub fn has_value(&self, type_name: &str, value: &str) -> bool {
        self.cells.iter().any(|c| match type_name {
            LANG => c.lang == value,
            TASK => c.task == value,
            _ => false,
        })
    }

    /// The examples of `split` of every cell that `keep` accepts, cell by cell, at most
    /// `max_per_cell` per cell, spread over its file ([`crate::data::spread_positions`]). Records take `feature_names` as
    /// their feature fields, and always `lang` and `task`, which must agree with the folder. A
    /// kept cell without the split's file is an error.
    pub fn read(
        &self,
        split: Split,
        feature_names: &[&str],
        max_per_cell: Option<usize>,
        keep: impl Fn(&MixtureCell) -> bool,
    ) -> Result<Vec<Example>> {
        let mut names: Vec<&str> = feature_names.to_vec();
        for name in [LANG, TASK] {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let mut examples = Vec::new();
        for cell in self.cells.iter().filter(|c| keep(c)) {
            let path = cell.file(split);
            if !path.is_file() {
                return Err(CoreError::config(
                    path.display(),
                    format!("cell {} has no {} split", cell.name(), split),
                ));
            }
            let mut cell_examples = read_jsonl(&path, &names)?;
            if let Some(max) = max_per_cell {
                keep_spread(&mut cell_examples, max);
            }
            for ex in &mut cell_examples {
                for (type_name, folder) in [(LANG, &cell.lang), (TASK, &cell.task)] {
                    match ex.features.get(type_name) {
                        Some(value) if value != folder => {
                            return Err(CoreError::data(
                                &ex.location,
                                format!(
                                    "{type_name} {value:?} does not match the cell's folder \
                                     ({type_name} {folder:?})"
                                ),
                            ))
                        }
                        Some(_) => {}
                        None => {
                            ex.features.insert(type_name.to_string(), folder.clone());
                        }
                    }
                }
            }
            examples.extend(cell_examples);
        }
        Ok(examples)
    }

    /// The task descriptions of `ROOT/tasks.json`, or None when the mixture has none.
    pub fn task_infos(&self) -> Result<Option<BTreeMap<String, TaskInfo>>> {
        let path = self.root.join(TASKS_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| CoreError::io(&path, e))?;
        let infos = serde_json::from_str(without_bom(&text)).map_err(|e| {
            CoreError::config(
                path.display(),
                format!(
                    "expected an object of tasks, each with an optional \"metric\" text and \
                     \"labels\" list; at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        Ok(Some(infos))
    }
}

/// The held-out cells of a split file, each as `type=value` pairs joined by `,` in type-name
/// order (`lang=hau,task=ner`), the form `--holdout` takes.
pub fn read_split_file(path: &Path) -> Result<Vec<String>> {
    let origin = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
    let value: Value = serde_json::from_str(without_bom(&text)).map_err(|e| {
        CoreError::config(
            &origin,
            format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    let Some(entries) = value.get("heldout").and_then(Value::as_array) else {
        return Err(CoreError::config(
            &origin,
            "expected an object with a \"heldout\" list of cells like {\"task\": \"ner\", \"lang\": \"hau\"}",
        ));
    };
    let mut cells = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let Some(fields) = entry.as_object() else {
            return Err(CoreError::config(
                &origin,
                format!("held-out entry {i} is not an object"),
            ));
        };
        let mut pairs = BTreeMap::new();
        for (name, value) in fields {
            if let Value::String(v) = value {
                let bad = |s: &str| s.is_empty() || s.contains([',', '=']);
                if bad(name) || bad(v) {
                    return Err(CoreError::config(
                        &origin,
                        format!(
                            "held-out entry {i}: {name:?}: {v:?} is not a feature value \
                             (empty, or holding ',' or '=')"
                        ),
                    ));
                }
                pairs.insert(name.as_str(), v.as_str());
            }
        }
        if pairs.is_empty() {
            return Err(CoreError::config(
                &origin,
                format!("held-out entry {i} names no feature (no string field)"),
            ));
        }
        cells.push(
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    Ok(cells)
}
