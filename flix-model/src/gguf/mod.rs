//! GGUF files (llama.cpp's format): a reader, and GGUF models seen as Hugging Face checkpoints.
//!
//! [`GgufFile`] reads GGUF versions 2 and 3 (version 1 is refused): metadata of every value type,
//! tensor infos, and tensor data memory-mapped and converted to f32 on request (F32, F16, BF16,
//! Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K). Corrupt files are errors naming the byte offset, key or
//! tensor, never panics.

mod dequant;
mod reader;
mod types;

pub use reader::{GgufFile, MetaType, MetaValue, Metadata, TensorInfo, DEFAULT_ALIGNMENT};
pub use types::GgmlType;
