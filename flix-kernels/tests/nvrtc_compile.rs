//! The kernel compile check of CI: every source in `kernels-cu` must compile with NVRTC for sm_90
//! (Hopper, the GPUs we run on), through the same function the CUDA device uses at first use.
//! Without NVRTC the test says it skipped; with `FLIX_NVRTC_REQUIRED=1` that is a failure.
//! For the attention and FLix sources it also checks that every entry the launchers
//! (`ops/cuda/attention.rs`, `flix/cuda/`) can take is in the PTX: a misspelt or missing entry
//! (the attention ones are made by macros) would otherwise show only at the first launch on a GPU.

use flix_kernels::cuda::nvrtc::{compile_source, cuda_include_dir, nvrtc_available};

#[test]
fn every_kernel_source_compiles_for_sm90() {
    let required = std::env::var("FLIX_NVRTC_REQUIRED").as_deref() == Ok("1");
    if !nvrtc_available() || cuda_include_dir().is_none() {
        let why = if nvrtc_available() {
            "CUDA headers not found (set FLIX_CUDA_INCLUDE)"
        } else {
            "libnvrtc not found (add it to LD_LIBRARY_PATH)"
        };
        assert!(!required, "FLIX_NVRTC_REQUIRED=1 but {why}");
        eprintln!("SKIPPED every_kernel_source_compiles_for_sm90: {why}");
        return;
    }
    let mut failures = Vec::new();
    for source in kernels_cu::ALL {
        match compile_source(source, "sm_90") {
            Ok(ptx) => {
                let text = ptx.to_src();
                assert!(
                    text.contains(".target sm_90"),
                    "{}: PTX is not for sm_90",
                    source.name
                );
                eprintln!(
                    "compiled {} for sm_90 ({} bytes of PTX)",
                    source.name,
                    text.len()
                );
                let entries = match source.name {
                    n if n == kernels_cu::TRANSFORMER_ATTENTION.name => attention_entries(),
                    n if n == kernels_cu::FLIX_FORWARD.name => flix_forward_entries(),
                    n if n == kernels_cu::FLIX_BACKWARD.name => flix_backward_entries(),
                    _ => Vec::new(),
                };
                for entry in entries {
                    if !text.contains(&format!(".entry {entry}(")) {
                        failures.push(format!("{}: no entry {entry} in the PTX", source.name));
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every FLix forward entry, f32 and bf16: shrink and its finish, expand, add_bias.
fn flix_forward_entries() -> Vec<String> {
    let kernels = ["shrink", "shrink_finish", "expand", "add_bias"];
    dtype_pairs(&kernels)
}

/// Every FLix backward entry: dH with dB, dX and dA per dtype; the f32-only dH finish and the
/// gradient reduce.
fn flix_backward_entries() -> Vec<String> {
    let mut entries = dtype_pairs(&["dh_db", "dx", "da"]);
    entries.push("flix_dh_finish_f32".to_string());
    entries.push("flix_grad_reduce_f32".to_string());
    entries
}

fn dtype_pairs(kernels: &[&str]) -> Vec<String> {
    let dtypes = ["f32", "bf16"];
    kernels
        .iter()
        .flat_map(|k| dtypes.iter().map(move |d| format!("flix_{k}_{d}")))
        .collect()
}

/// Every attention entry: the dot product of the backward and the decode combine per dtype; per
/// head-dim limit the FMA forward, dQ and dK/dV kernels and the decode kernel for f32 and bf16,
/// and the tensor-core ones for bf16.
fn attention_entries() -> Vec<String> {
    let mut entries = vec![
        "attention_bwd_dot_f32".to_string(),
        "attention_bwd_dot_bf16".to_string(),
        "attention_decode_combine_f32".to_string(),
        "attention_decode_combine_bf16".to_string(),
    ];
    for limit in [64, 128, 256] {
        for dtype in ["f32", "bf16"] {
            entries.push(format!("attention_decode_hd{limit}_{dtype}"));
        }
        for kernel in ["forward", "bwd_dq", "bwd_dkdv"] {
            for dtype in ["f32", "bf16"] {
                entries.push(format!("attention_{kernel}_hd{limit}_{dtype}"));
            }
            entries.push(format!("attention_{kernel}_mma_hd{limit}_bf16"));
        }
    }
    entries
}

#[test]
fn a_broken_source_reports_its_name_and_the_compiler_log() {
    if !nvrtc_available() || cuda_include_dir().is_none() {
        eprintln!("SKIPPED a_broken_source_reports_its_name_and_the_compiler_log: no NVRTC");
        return;
    }
    let broken = kernels_cu::Source {
        name: "broken.cu",
        code: "extern \"C\" __global__ void f() { this_is_not_defined(); }",
    };
    let err = compile_source(&broken, "sm_90").expect_err("must not compile");
    let text = err.to_string();
    assert!(text.contains("broken.cu"), "{text}");
    assert!(text.contains("this_is_not_defined"), "{text}");
}
