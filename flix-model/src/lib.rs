//! flix-model: Llama-family transformers read from Hugging Face checkpoints, with FLix adapters,
//! a forward and backward pass written by hand over explicit saved activations (no autograd).

pub mod adapters;
pub mod batch;
pub mod config;
pub mod error;
pub mod eval;
pub mod export;
pub mod llama;
pub mod tokenize;
pub mod train;
pub mod weights;

pub use adapters::{AdapterSpec, AdapterType, TargetModule};
pub use batch::{Batch, Sequence};
pub use config::{Family, LlamaConfig};
pub use error::{ModelError, Result};
pub use llama::{LlamaModel, LossReport, TrainMode};
pub use weights::Checkpoint;
