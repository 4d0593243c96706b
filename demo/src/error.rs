//! The demo's one error type.

use super::{Cell, Task};

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
