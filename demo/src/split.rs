//! Which (language, task) cells are held out of training, and the check that a held-out cell can
//! still be composed from what was trained: its language with other tasks, its task in other
//! languages.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::tasks::Task;
use super::DemoError;

/// One (language, task) cell of the mixture grid.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cell {
    pub lang: String,
    pub task: String,
}

impl Cell {
    pub fn new(lang: &str, task: Task) -> Self {
        Self {
            lang: lang.to_string(),
            task: task.name().to_string(),
        }
    }
}

/// A Latin-square diagonal: the languages, in blocks of `tasks.len()`, each hold out one task,
/// every task once per block; block `b` is the diagonal shifted by `b` (language `i` holds out task
/// `(i + i / tasks.len()) mod tasks.len()`). The shift keeps languages at the same place in two
/// blocks from holding out the same task: in the default order those are alike (German and Dutch,
/// Spanish and Portuguese), and a task held out in both would never be trained in a language
/// built like them. With at least two languages and two tasks, every language keeps its other
/// tasks and every task keeps the languages that hold out another one, so the result passes
/// [`validate_heldout`].
pub fn diagonal_heldout(langs: &[String], tasks: &[Task]) -> Vec<Cell> {
    if tasks.is_empty() {
        return Vec::new();
    }
    let n = tasks.len();
    langs
        .iter()
        .enumerate()
        .map(|(i, lang)| Cell::new(lang, tasks[(i + i / n) % n]))
        .collect()
}

/// Checks the held-out cells of a `langs` × `tasks` grid: each names a language and a task of the
/// grid, none is listed twice, and each held-out language and each held-out task has at least one
/// cell that is trained.
pub fn validate_heldout(
    langs: &[String],
    tasks: &[Task],
    heldout: &[Cell],
) -> Result<(), DemoError> {
    let mut seen = BTreeSet::new();
    for cell in heldout {
        if !langs.contains(&cell.lang) {
            return Err(DemoError::HeldoutUnknownLanguage(cell.clone()));
        }
        if !tasks.iter().any(|t| t.name() == cell.task) {
            return Err(DemoError::HeldoutUnknownTask(cell.clone()));
        }
        if !seen.insert(cell) {
            return Err(DemoError::HeldoutTwice(cell.clone()));
        }
    }
    let is_trained = |lang: &str, task: Task| !seen.contains(&Cell::new(lang, task));
    for cell in heldout {
        if !tasks.iter().any(|&t| is_trained(&cell.lang, t)) {
            return Err(DemoError::HeldoutLanguageNeverTrained(cell.clone()));
        }
        let task = tasks.iter().copied().find(|t| t.name() == cell.task);
        if let Some(task) = task {
            if !langs.iter().any(|l| is_trained(l, task)) {
                return Err(DemoError::HeldoutTaskNeverTrained(cell.clone()));
            }
        }
    }
    Ok(())
}
