//! flix-core: the host-side bookkeeping of FLix. Feature types and their values (the registry),
//! the feature set of each example, feature dropout, reading JSONL examples and mixture folders,
//! the batch plan the kernels run on, and the atomic file writes every saved artifact goes through.
//! No device code, no tensors, and no data of its own: the demo's generated mixture lives in the
//! `flix-demo` crate.

pub mod config;
pub mod data;
pub mod dropout;
pub mod error;
pub mod features;
pub mod mixture;
pub mod plan;
pub mod registry;
mod saved;

pub use config::{FeatureConfig, TypeConfig, TypeDefaults};
pub use data::{
    keep_spread, read_jsonl, read_jsonl_files, read_jsonl_within, spread_positions,
    whitespace_tokens, without_bom, Example, MAX_LINE_BYTES,
};
pub use dropout::{splitmix64, DropoutPolicy, FeatureDropout};
pub use error::{CoreError, Location, Result};
pub use features::{FeatureSet, Mode};
pub use mixture::{read_split_file, Mixture, MixtureCell, Split, TaskInfo};
pub use plan::{BatchPlan, PlanError, SegmentSpec, Tile, TypeShape, ABSENT, TILE_SIZE};
pub use registry::{FeatureType, Registry};
pub use saved::{write_atomic, write_atomic_with, write_dir_atomic};
