//! The errors of flix-core outside the batch plan (which has its own [`crate::PlanError`]).
//! Every error a user can cause names where it comes from: a file and a 1-based line for data,
//! the config or registry file for settings.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use thiserror::Error;

/// Where an example comes from: its file and 1-based line number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Error)]
pub enum CoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A malformed line of a JSONL data file.
    #[error("{location}: {message}")]
    Data { location: Location, message: String },

    /// A bad config or saved registry. `origin` is the file it came from (or a description).
    #[error("{origin}: {message}")]
    Config { origin: String, message: String },

    /// Training data has a value the registry does not know, and the type may not grow.
    #[error(
        "{location}: unknown value {value:?} for feature type {type_name:?} \
         (known: {known}); set \"allow_new_values\": true for this type in the config to add it"
    )]
    UnknownValue {
        location: Location,
        type_name: String,
        value: String,
        known: String,
    },
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

impl CoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        CoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn config(origin: impl fmt::Display, message: impl Into<String>) -> Self {
        CoreError::Config {
            origin: origin.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn data(location: &Location, message: impl Into<String>) -> Self {
        CoreError::Data {
            location: location.clone(),
            message: message.into(),
        }
    }
}
