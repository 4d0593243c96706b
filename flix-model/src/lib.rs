//! flix-model: Llama-family transformers read from Hugging Face checkpoints, with FLix adapters,
//! a forward and backward pass written by hand over explicit saved activations (no autograd).
//!
//! A training step on a batch whose examples have different features:
//!
//! ```no_run
//! use flix_core::TypeShape;
//! use flix_kernels::{ops::adamw::AdamWParams, Device};
//! use flix_model::{AdamW, AdapterSpec, AdapterType, Batch, LlamaModel, Sequence, TargetModule};
//!
//! # fn main() -> flix_model::Result<()> {
//! let mut model = LlamaModel::load("path/to/SmolLM-135M".as_ref(), &Device::Cpu)?;
//! // Two feature types (say lang with 3 values, task with 2), rank 8, on every projection.
//! let types = [TypeShape { rank: 8, num_values: 3 }, TypeShape { rank: 8, num_values: 2 }];
//! model.attach_adapters(&AdapterSpec {
//!     types: types.iter().map(|t| AdapterType { rank: t.rank, alpha: 16.0, num_values: t.num_values }).collect(),
//!     targets: TargetModule::ALL.to_vec(),
//!     seed: 0,
//! })?;
//! // Two examples (prompt, then target tokens), each with its feature values.
//! let seqs = [
//!     Sequence::prompt_and_target(vec![1, 420, 77, 31, 9], 3).with_features(vec![0, 1]), // lang 0, task 1
//!     Sequence::prompt_and_target(vec![1, 55, 12], 2).with_features(vec![2, -1]), // lang 2, no task
//! ];
//! // Packed once, then bound to the model's device once (with its FLix plan).
//! let batch = model.upload(&Batch::new(&seqs)?)?;
//! let mut optimizer = AdamW::new(AdamWParams::default(), Some(1.0));
//! model.zero_grad()?;
//! let report = model.forward_backward(&batch)?; // only adapters get gradients
//! optimizer.step(&mut model)?;
//! println!("loss {} over {} target tokens", report.loss, report.targets);
//! # Ok(())
//! # }
//! ```

pub mod adapters;
pub mod batch;
pub mod config;
pub mod error;
pub mod eval;
pub mod export;
pub mod gguf;
pub mod length;
pub mod llama;
pub mod merge;
pub mod optim;
pub mod peft;
pub mod score;
pub mod source;
pub mod tokenize;
pub mod tokenize_gguf;
pub mod train;
pub mod weights;

pub use adapters::{AdapterSpec, AdapterType, TargetModule};
pub use batch::{Batch, Sequence};
pub use config::{Family, LlamaConfig};
pub use error::{ModelError, Result};
pub use length::{ContextLimit, LongExamples, LongReport};
pub use llama::{
    DecodeEvent, Decoder, FinishReason, GenerationConfig, LlamaModel, LossReport, SequenceId,
    SequenceParams, TokenLogprobs, TrainMode, Trainable, MAX_TOP_LOGPROBS,
};
pub use optim::AdamW;
pub use peft::{load_peft_lora, PeftLora};
pub use score::{score_sequences, ExampleScore};
pub use source::ModelSource;
pub use tokenize::Tokenizer;
pub use weights::{Checkpoint, TensorSource};
