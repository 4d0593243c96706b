//! Runs the FLix CUDA kernels' own source on the CPU through the host emulation in
//! `kernels-cu/emulate/` (g++, C++20: every block's threads as OS threads meeting at a real
//! barrier) and compares H, Y, dX, dA and dB with a plain-loop reference, f32 and bf16, on batches
//! with absent features, empty and one-token segments, odd widths, K up to 8 and R above 32; and
//! the transformer kernels (transformer_*.cu) with their own double references.
//! It checks the kernels' indexing and arithmetic where no GPU is at hand; it says nothing about
//! races between blocks or speed, and does not replace the GPU tests. Without g++ it says it
//! skipped.

use std::path::Path;
use std::process::Command;

/// Runs `kernels-cu/emulate/<script>` and asserts it reports every output matching; skips (and
/// says so) without the script or g++.
fn run_emulation(test: &str, script: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kernels-cu/emulate")
        .join(script);
    // The binary may run away from its source tree (the GPU run copies test binaries alone).
    if !script.exists() {
        eprintln!("SKIPPED {test}: {} not found", script.display());
        return;
    }
    if Command::new("g++").arg("--version").output().is_err() {
        eprintln!("SKIPPED {test}: no g++");
        return;
    }
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("running the emulation script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all outputs match the reference"),
        "kernel emulation failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn cuda_kernels_match_the_reference_under_host_emulation() {
    run_emulation(
        "cuda_kernels_match_the_reference_under_host_emulation",
        "run.sh",
    );
}

/// The transformer kernels (`kernels-cu/transformer_*.cu`): embedding, SwiGLU and GeGLU, RoPE,
/// RMSNorm, attention (forward, decode, backward; every head-dim limit up to Gemma 3's 256,
/// sliding windows, custom scales), cross-entropy, AdamW and the gradient norm.
#[test]
fn transformer_kernels_match_the_reference_under_host_emulation() {
    run_emulation(
        "transformer_kernels_match_the_reference_under_host_emulation",
        "run_transformer.sh",
    );
}
