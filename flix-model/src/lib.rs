//! flix-model: Llama-family transformers read from Hugging Face checkpoints, with FLix adapters,
//! a forward and backward pass written by hand over explicit saved activations (no autograd).

pub mod adapters;
pub mod batch;
pub mod config;
pub mod error;
pub mod llama;
pub mod optim;
pub mod peft;
pub mod score;
pub mod tokenizer;
pub mod weights;

pub use adapters::{AdapterSpec, AdapterType, TargetModule};
pub use batch::{Batch, Sequence};
pub use config::{Family, LlamaConfig};
pub use error::{ModelError, Result};
pub use llama::{GenerationConfig, LlamaModel, LossReport, TrainMode, Trainable};
pub use optim::AdamW;
pub use peft::{load_peft_lora, PeftLora};
pub use score::{score_sequences, ExampleScore, Features};
pub use tokenizer::TextTokenizer;
pub use weights::Checkpoint;
