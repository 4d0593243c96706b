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

/// FLix forward: shrink (with its split-reduction finish) and expand. `flix_common.cuh` (the
/// per-type parameter struct and the tile GEMM templates) and `flix_mma.cuh` (their tensor-core
/// versions for bf16) are prepended: NVRTC compiles one string.
pub const FLIX_FORWARD: Source = Source {
    name: "flix_forward.cu",
    code: concat!(
        include_str!("../flix_common.cuh"),
        include_str!("../flix_mma.cuh"),
        include_str!("../flix_forward.cu")
    ),
};

/// FLix backward: dH and dB in one pass over dY, dX, dA in one pass over X, and the deterministic
/// reduce of their partial slots.
pub const FLIX_BACKWARD: Source = Source {
    name: "flix_backward.cu",
    code: concat!(
        include_str!("../flix_common.cuh"),
        include_str!("../flix_mma.cuh"),
        include_str!("../flix_backward.cu")
    ),
};

/// Small element-wise ops of the model: residual add, scale, bias-gradient column sums.
pub const ELEMENTWISE: Source = Source {
    name: "elementwise.cu",
    code: include_str!("../elementwise.cu"),
};

/// Token embedding forward and deterministic (CSR) backward. `transformer_common.cuh` is prepended.
pub const TRANSFORMER_EMBEDDING: Source = Source {
    name: "transformer_embedding.cu",
    code: concat!(
        include_str!("../transformer_common.cuh"),
        include_str!("../transformer_embedding.cu")
    ),
};

/// RMSNorm forward, backward, and the deterministic split reduction of dW. `transformer_common.cuh` is prepended.
pub const TRANSFORMER_RMSNORM: Source = Source {
    name: "transformer_rmsnorm.cu",
    code: concat!(
        include_str!("../transformer_common.cuh"),
        include_str!("../transformer_rmsnorm.cu")
    ),
};

/// Rotary position embeddings (forward and its inverse rotation). `transformer_common.cuh` is prepended.
pub const TRANSFORMER_ROPE: Source = Source {
    name: "transformer_rope.cu",
    code: concat!(
        include_str!("../transformer_common.cuh"),
        include_str!("../transformer_rope.cu")
    ),
};

/// Causal GQA attention over packed segments, with a sliding window and the caller's softmax scale,
/// head_dim up to 256: forward (also the cached decode step) and backward.
/// `transformer_common.cuh` is prepended.
pub const TRANSFORMER_ATTENTION: Source = Source {
    name: "transformer_attention.cu",
    code: concat!(
        include_str!("../transformer_common.cuh"),
        include_str!("../transformer_attention.cu")
    ),
};

/// The gated MLP activations (SwiGLU, GeGLU) forward and backward. `transformer_common.cuh` is
/// prepended.
pub const TRANSFORMER_SWIGLU: Source = Source {
    name: "transformer_swiglu.cu",
    code: concat!(
        include_str!("../transformer_common.cuh"),
        include_str!("../transformer_swiglu.cu")
    ),
};

/// The non-GEMM parts of the chunked linear cross-entropy. `transformer_common.cuh` is prepended.
pub const TRANSFORMER_CROSS_ENTROPY: Source = Source {
    name: "transformer_cross_entropy.cu",
    code: concat!(
        include_str!("../transformer_common.cuh"),
        include_str!("../transformer_cross_entropy.cu")
    ),
};

/// AdamW step, the deterministic two-pass gradient sum of squares, and scaling. `transformer_common.cuh` is prepended.
pub const TRANSFORMER_OPTIM: Source = Source {
    name: "transformer_optim.cu",
    code: concat!(
        include_str!("../transformer_common.cuh"),
        include_str!("../transformer_optim.cu")
    ),
};

/// Every source, so the compile check cannot miss one.
pub const ALL: &[Source] = &[
    CONVERT,
    FLIX_FORWARD,
    FLIX_BACKWARD,
    TRANSFORMER_EMBEDDING,
    TRANSFORMER_RMSNORM,
    TRANSFORMER_ROPE,
    TRANSFORMER_ATTENTION,
    TRANSFORMER_SWIGLU,
    TRANSFORMER_CROSS_ENTROPY,
    TRANSFORMER_OPTIM,
    ELEMENTWISE,
];
