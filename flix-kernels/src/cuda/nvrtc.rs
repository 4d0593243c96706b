//! Run-time compilation of `kernels-cu` sources with NVRTC (DESIGN §5). Used by the CUDA device at
//! first use of a module, and by the CI compile check, which runs the same function with no GPU.

use std::path::{Path, PathBuf};

use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::error::{KernelError, Result};

/// Whether the NVRTC shared library can be loaded. cudarc panics when it touches a missing
/// library, so every path into NVRTC asks this first.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names; nothing is called through it.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The folder holding `cuda_bf16.h` and friends: `FLIX_CUDA_INCLUDE`, else `$CUDA_PATH/include`,
/// `$CUDA_HOME/include`, `/usr/local/cuda/include`; the first that exists.
pub fn cuda_include_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("FLIX_CUDA_INCLUDE") {
        return Some(PathBuf::from(dir));
    }
    let roots = ["CUDA_PATH", "CUDA_HOME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(PathBuf::from)
        .chain(std::iter::once(PathBuf::from("/usr/local/cuda")));
    roots
        .map(|root| root.join("include"))
        .find(|dir| dir.join("cuda_bf16.h").exists())
}

/// Compiles one source to PTX for `arch` (for example `sm_90`).
pub fn compile_source(source: &kernels_cu::Source, arch: &str) -> Result<Ptx> {
    if !nvrtc_available() {
        return Err(KernelError::CudaUnavailable(
            "the NVRTC library (libnvrtc.so) was not found; add its folder to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let include = cuda_include_dir().ok_or_else(|| KernelError::Compile {
        source_name: source.name.into(),
        arch: arch.into(),
        log: "CUDA headers not found: set FLIX_CUDA_INCLUDE to the folder holding cuda_bf16.h"
            .into(),
    })?;
    compile_with_include(source, arch, &include)
}

fn compile_with_include(source: &kernels_cu::Source, arch: &str, include: &Path) -> Result<Ptx> {
    let options = CompileOptions {
        include_paths: vec![include.display().to_string()],
        options: vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".into(),
            "-default-device".into(),
        ],
        name: Some(source.name.into()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(source.code, options).map_err(|e| {
        let log = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                log.to_string_lossy().into_owned()
            }
            other => format!("{other:?}"),
        };
        KernelError::Compile {
            source_name: source.name.into(),
            arch: arch.into(),
            log,
        }
    })
}
