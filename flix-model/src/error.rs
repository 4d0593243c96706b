//! One error type for loading and running models. Messages name the file, the tensor or config
//! field, what was expected and what was found.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    /// A GGUF file that cannot be read: the message says what is wrong and where (byte offset,
    /// metadata key or tensor name).
    #[error("{path}: {message}")]
    Gguf { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid batch: {0}")]
    Batch(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Kernel(#[from] flix_kernels::KernelError),
    #[error(transparent)]
    Plan(#[from] flix_core::plan::PlanError),
}

pub type Result<T> = std::result::Result<T, ModelError>;

/// flix-core's errors keep their file: an I/O error stays one, the rest name their origin in
/// the message.
impl From<flix_core::CoreError> for ModelError {
    fn from(e: flix_core::CoreError) -> Self {
        match e {
            flix_core::CoreError::Io { path, source } => ModelError::Io { path, source },
            other => ModelError::Invalid(other.to_string()),
        }
    }
}
