//! The built-in demo mixture of `flix demo`: a multilingual, multitask grid generated in code, with
//! no download, the same bytes for the same seed.
//!
//! Eight languages (English, German, French, Spanish, Italian, Dutch, Swedish, Portuguese) × four
//! tasks (`num2words`, `words2num`, `date`, `successor`): each task's structure is shared across
//! languages, each language's words are its own. Some cells are held out of training (by default
//! a Latin-square diagonal, one per language) so that FLix can be evaluated on (language, task)
//! pairs it never saw, composed from a language and a task it did see. Alongside the examples come
//! plain "language knowledge" sentences per language for pretraining the base model.
//!
//! ```
//! use flix_core::demo::{generate, DemoConfig};
//! let mixture = generate(&DemoConfig::tiny()).unwrap();
//! assert!(mixture.heldout.len() >= 6);
//! assert!(mixture.train.iter().all(|e| !mixture.is_heldout(&e.lang, &e.task)));
//! ```

mod date;
mod io;
mod knowledge;
mod lang;
mod rng;
mod split;
mod tasks;

use serde::{Deserialize, Serialize};

pub use date::{days_in_month, is_leap_year, Date, FIRST_YEAR, LAST_YEAR};
pub use io::{
    read_jsonl, write_dir, write_grid_dir, DEV_FILE, HELDOUT_FILE, KNOWLEDGE_FILE, TEST_FILE,
    TRAIN_FILE,
};
pub use knowledge::{check_knowledge, KnowledgeKind, KnowledgeLine, MAX_GAP};
pub use lang::{all_languages, language, Language, MAX_NUMBER};
pub use split::{diagonal_heldout, validate_heldout, Cell};
pub use tasks::{Task, UnknownTask};

use rng::SplitMix64;

/// The `source` field of every demo example.
pub const SOURCE: &str = "flix-demo";

/// One example, in the record shape of the real mixture (`shared/data/README.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoExample {
    /// `flix-demo:<lang>:<split>:<task>-<index>`, unique across the mixture.
    pub id: String,
    pub lang: String,
    pub task: String,
    pub input: String,
    pub target: String,
    pub source: String,
}

/// A split of the mixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Dev,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Dev, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoConfig {
    pub seed: u64,
    /// ISO 639-3 codes, from [`all_languages`].
    pub languages: Vec<String>,
    pub tasks: Vec<Task>,
    /// Cells with no training examples (dev and test only); checked by [`validate_heldout`].
    pub heldout: Vec<Cell>,
    /// Examples per cell and split (held-out cells get no train examples whatever this says).
    pub train_per_cell: usize,
    pub dev_per_cell: usize,
    pub test_per_cell: usize,
    /// Date sentences per language in the knowledge text (the other knowledge lines are fixed).
    pub knowledge_dates_per_language: usize,
}

impl Default for DemoConfig {
    /// All 8 languages × 4 tasks, the diagonal held out (8 cells), 200 train / 50 dev / 50 test
    /// examples per cell: small enough for a tiny model on a 2-core CPU.
    fn default() -> Self {
        let languages: Vec<String> = all_languages()
            .iter()
            .map(|l| l.code().to_string())
            .collect();
        let tasks = Task::ALL.to_vec();
        let heldout = diagonal_heldout(&languages, &tasks);
        Self {
            seed: 0,
            languages,
            tasks,
            heldout,
            train_per_cell: 200,
            dev_per_cell: 50,
            test_per_cell: 50,
            knowledge_dates_per_language: 100,
        }
    }
}

impl DemoConfig {
    /// A `languages` × `tasks` grid with its diagonal held out ([`diagonal_heldout`]) and the
    /// default sizes. Check it with [`DemoConfig::validate`] (a one-language grid, for example,
    /// cannot train its held-out task anywhere).
    pub fn for_grid(languages: &[&str], tasks: &[Task]) -> Self {
        let languages: Vec<String> = languages.iter().map(|l| l.to_string()).collect();
        let heldout = diagonal_heldout(&languages, tasks);
        Self {
            languages,
            tasks: tasks.to_vec(),
            heldout,
            ..Self::default()
        }
    }

    /// The default grid with a handful of examples per cell, for tests.
    pub fn tiny() -> Self {
        Self {
            train_per_cell: 8,
            dev_per_cell: 3,
            test_per_cell: 3,
            knowledge_dates_per_language: 5,
            ..Self::default()
        }
    }

    /// Checks the languages (known, no repeats), tasks (no repeats) and held-out cells.
    pub fn validate(&self) -> Result<(), DemoError> {
        for (i, code) in self.languages.iter().enumerate() {
            if language(code).is_none() {
                return Err(DemoError::UnknownLanguage(code.clone()));
            }
            if self.languages[..i].contains(code) {
                return Err(DemoError::RepeatedLanguage(code.clone()));
            }
        }
        for (i, task) in self.tasks.iter().enumerate() {
            if self.tasks[..i].contains(task) {
                return Err(DemoError::RepeatedTask(*task));
            }
        }
        if self.languages.is_empty() || self.tasks.is_empty() {
            return Err(DemoError::EmptyGrid);
        }
        validate_heldout(&self.languages, &self.tasks, &self.heldout)
    }
}

/// A generated mixture, in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoMixture {
    pub train: Vec<DemoExample>,
    pub dev: Vec<DemoExample>,
    pub test: Vec<DemoExample>,
    pub heldout: Vec<Cell>,
    /// Pretraining text, every language; holds no held-out example in task form.
    pub knowledge: Vec<KnowledgeLine>,
}

impl DemoMixture {
    pub fn is_heldout(&self, lang: &str, task: &str) -> bool {
        self.heldout
            .iter()
            .any(|c| c.lang == lang && c.task == task)
    }

    pub fn split(&self, split: Split) -> &[DemoExample] {
        match split {
            Split::Train => &self.train,
            Split::Dev => &self.dev,
            Split::Test => &self.test,
        }
    }
}

/// Generates the mixture of `config`: examples cell by cell (language-major, then task, in the
/// config's order), each cell and split from its own random stream.
pub fn generate(config: &DemoConfig) -> Result<DemoMixture, DemoError> {
    config.validate()?;
    let mut mixture = DemoMixture {
        train: Vec::new(),
        dev: Vec::new(),
        test: Vec::new(),
        heldout: config.heldout.clone(),
        knowledge: Vec::new(),
    };
    for code in &config.languages {
        let lang = language(code).ok_or_else(|| DemoError::UnknownLanguage(code.clone()))?;
        for &task in &config.tasks {
            let heldout = mixture.is_heldout(code, task.name());
            for split in Split::ALL {
                let count = match split {
                    Split::Train if heldout => 0,
                    Split::Train => config.train_per_cell,
                    Split::Dev => config.dev_per_cell,
                    Split::Test => config.test_per_cell,
                };
                let stream = [code.as_str(), task.name(), split.name()];
                let mut rng = SplitMix64::for_stream(config.seed, &stream);
                let pairs = task.pairs(lang, count, &mut rng);
                let examples =
                    pairs
                        .into_iter()
                        .enumerate()
                        .map(|(i, (input, target))| DemoExample {
                            id: format!("{SOURCE}:{code}:{}:{}-{i}", split.name(), task.name()),
                            lang: code.clone(),
                            task: task.name().to_string(),
                            input,
                            target,
                            source: SOURCE.to_string(),
                        });
                match split {
                    Split::Train => mixture.train.extend(examples),
                    Split::Dev => mixture.dev.extend(examples),
                    Split::Test => mixture.test.extend(examples),
                }
            }
        }
        let dates = config.knowledge_dates_per_language;
        mixture
            .knowledge
            .extend(knowledge::knowledge_lines(lang, config.seed, dates));
    }
    let heldout_examples: Vec<DemoExample> = mixture
        .dev
        .iter()
        .chain(&mixture.test)
        .filter(|e| mixture.is_heldout(&e.lang, &e.task))
        .cloned()
        .collect();
    check_knowledge(&mixture.knowledge, &heldout_examples)?;
    Ok(mixture)
}

/// Everything that can go wrong building, checking or writing the demo mixture.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("unknown demo language {0:?} (known: eng deu fra spa ita nld swe por)")]
    UnknownLanguage(String),
    #[error("demo language {0:?} is listed twice")]
    RepeatedLanguage(String),
    #[error("demo task {0} is listed twice")]
    RepeatedTask(Task),
    #[error("the demo grid needs at least one language and one task")]
    EmptyGrid,
    #[error("held-out cell lang={}, task={}: the language is not in the grid", .0.lang, .0.task)]
    HeldoutUnknownLanguage(Cell),
    #[error("held-out cell lang={}, task={}: the task is not in the grid", .0.lang, .0.task)]
    HeldoutUnknownTask(Cell),
    #[error("held-out cell lang={}, task={} is listed twice", .0.lang, .0.task)]
    HeldoutTwice(Cell),
    #[error("held-out cell lang={}, task={}: every task of language {} is held out, so the language is never trained", .0.lang, .0.task, .0.lang)]
    HeldoutLanguageNeverTrained(Cell),
    #[error("held-out cell lang={}, task={}: task {} is held out in every language, so it is never trained", .0.lang, .0.task, .0.task)]
    HeldoutTaskNeverTrained(Cell),
    #[error("knowledge line {line:?} holds held-out example {id} in task form")]
    KnowledgeLeak { id: String, line: String },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// `line` is 1-based when reading, 0 when writing.
    #[error("{path}:{line}: {source}")]
    Json {
        path: std::path::PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}
