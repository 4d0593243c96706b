//! The FLix layer benchmark, shared by `flix bench` (any device) and the criterion benches of the
//! CPU path (`benches/flix_cpu.rs`): the shape list ([`shapes`]) and the timing ([`measure`]).
//! The PyTorch peers live in `peers/` and read the same shape list.

pub mod measure;
pub mod shapes;

pub use measure::{copy_bandwidth, measure, LayerProblem, OpTimes, Row, Timing};
pub use shapes::{LayerShape, Lengths};
