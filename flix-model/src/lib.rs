//! flix-model: Llama-family transformers read from Hugging Face checkpoints, with FLix adapters,
//! a forward and backward pass written by hand over explicit saved activations (no autograd).

pub mod config;
pub mod error;
pub mod weights;

pub use config::{Family, LlamaConfig};
pub use error::{ModelError, Result};
pub use weights::Checkpoint;
