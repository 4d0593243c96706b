//! The built-in demo mixture of `flix demo`: a multilingual, multitask grid generated in code, with
//! no download, the same bytes for the same seed.
//!
//! Eight languages (English, German, French, Spanish, Italian, Dutch, Swedish, Portuguese) × four
//! tasks, by default [`Task::DEMO`] (`num2words`, `next`, `previous`, `reverse`: digits in, a
//! number out in words; `words2num`, `successor`, `date`, `double`, `plus10` and `minus10` can be
//! chosen instead): each task's structure is shared across languages, each language's words are
//! its own. Some cells are held out of training (by default a shifted Latin-square diagonal, one
//! per language) so that FLix can be evaluated on (language, task) pairs it never saw, composed
//! from a language and a task it did see. Alongside the examples come
//! plain "language knowledge" sentences per language for pretraining the base model.
//!
//! ```
//! use flix_demo::{generate, DemoConfig};
//! let mixture = generate(&DemoConfig::tiny()).unwrap();
//! assert!(mixture.heldout.len() >= 6);
//! assert!(mixture.train.iter().all(|e| !mixture.is_heldout(&e.lang, &e.task)));
//! ```

mod config;
mod date;
mod error;
mod io;
mod knowledge;
mod lang;
mod rng;
mod split;
mod tasks;

use serde::{Deserialize, Serialize};

pub use config::DemoConfig;
pub use date::{days_in_month, is_leap_year, Date, FIRST_YEAR, LAST_YEAR};
pub use error::DemoError;
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

/// One example, in the record shape of the real multilingual mixture's JSONL files.
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

impl DemoExample {
    fn new(id: String, lang: &str, task: Task, input: String, target: String) -> Self {
        Self {
            id,
            lang: lang.to_string(),
            task: task.name().to_string(),
            input,
            target,
            source: SOURCE.to_string(),
        }
    }
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
                let examples = pairs.into_iter().enumerate().map(|(i, (input, target))| {
                    let id = format!("{SOURCE}:{code}:{}:{task}-{i}", split.name());
                    DemoExample::new(id, code, task, input, target)
                });
                match split {
                    Split::Train => mixture.train.extend(examples),
                    Split::Dev => mixture.dev.extend(examples),
                    Split::Test => mixture.test.extend(examples),
                }
            }
        }
        let with_months = config.tasks.contains(&Task::Date);
        let dates = config.knowledge_dates_per_language;
        mixture.knowledge.extend(knowledge::knowledge_lines(
            lang,
            config.seed,
            with_months,
            dates,
        ));
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
