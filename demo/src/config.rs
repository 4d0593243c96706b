//! What the demo generates: which languages and tasks, which cells are held out, how many
//! examples per cell and split.

use serde::{Deserialize, Serialize};

use super::{all_languages, diagonal_heldout, language, validate_heldout, Cell, DemoError, Task};

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
    /// All 8 languages × the 4 tasks of [`Task::DEMO`], the shifted diagonal held out (8 cells),
    /// 200 train / 50 dev / 50 test examples per cell: small enough for a tiny model on a 2-core
    /// CPU.
    fn default() -> Self {
        let languages: Vec<String> = all_languages()
            .iter()
            .map(|l| l.code().to_string())
            .collect();
        let tasks = Task::DEMO.to_vec();
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
