//! flix-core: the host-side bookkeeping of FLix. Feature types and their values (the registry),
//! the feature set of each example, feature dropout, and the batch plan the kernels run on.
//! No device code and no tensors live here.

pub mod demo;
pub mod plan;

pub use plan::{BatchPlan, PlanError, SegmentSpec, Tile, TypeShape, ABSENT};
