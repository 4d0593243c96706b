//! Training FLix adapters (and the LoRA and full-parameter baselines, through the same code) on a
//! multitask multilingual mixture: data preparation, mixture sampling, the loop, checkpoints.

pub mod base;
pub mod checkpoint;
pub mod data;
pub mod fingerprint;
pub mod layout;
pub mod memory;
pub mod sampler;
pub mod schedule;
pub mod spec;
pub mod tensor_file;
pub mod trainables;
pub mod trainer;

pub use checkpoint::{load_trained, Trained};
pub use data::{Holdout, Prepared, PreparedSet};
pub use layout::{Layout, Method, SharedAdapter};
pub use spec::TrainSpec;
pub use trainer::{StepReport, Trainer};
