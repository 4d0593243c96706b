//! The CUDA C++ sources of FLix, embedded as strings. flix-kernels compiles them with NVRTC at
//! first use, for the device's own architecture; nothing here needs nvcc or a GPU.
//!
//! To add a source: put `name.cu` next to the others, add it to [`ALL`]. The CI compile check
//! (`flix-kernels/tests/nvrtc_compile.rs`) then compiles it for sm_90 on every run.

/// One `.cu` file: its file name (used as the NVRTC program name and module cache key) and text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source {
    pub name: &'static str,
    pub code: &'static str,
}

/// f32 <-> bf16 conversions.
pub const CONVERT: Source = Source {
    name: "convert.cu",
    code: include_str!("../convert.cu"),
};

/// Every source, so the compile check cannot miss one.
pub const ALL: &[Source] = &[CONVERT];
