//! The kernel compile check of CI: every source in `kernels-cu` must compile with NVRTC for sm_90
//! (Hopper, the GPUs we run on), through the same function the CUDA device uses at first use.
//! Without NVRTC the test says it skipped; with `FLIX_NVRTC_REQUIRED=1` that is a failure.

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
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
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
