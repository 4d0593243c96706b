//! The CUDA side of a [`crate::Device`]: one context, one stream, one cuBLAS handle, and the
//! NVRTC-compiled modules of `kernels-cu`, compiled at first use and cached per context.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};

use crate::error::{KernelError, Result};

pub struct CudaBackend {
    ordinal: usize,
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// `sm_XY` of this device: kernels are compiled for the device's own architecture.
    arch: String,
    name: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cuda:{} ({}, {})", self.ordinal, self.name, self.arch)
    }
}

/// Whether the CUDA driver library can be loaded. cudarc panics when it touches a missing
/// library, so [`CudaBackend::new`] asks this first.
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names; nothing is called through it.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl CudaBackend {
    pub fn new(ordinal: usize) -> Result<Self> {
        if !driver_available() {
            return Err(KernelError::CudaUnavailable(
                "the CUDA driver library (libcuda.so) was not found: no NVIDIA driver on this machine"
                    .into(),
            ));
        }
        // SAFETY: the library is present (checked above); cublas is checked the same way below.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(KernelError::CudaUnavailable(
                "the cuBLAS library (libcublas.so) was not found; add its folder to LD_LIBRARY_PATH"
                    .into(),
            ));
        }
        if !super::nvrtc::nvrtc_available() {
            return Err(KernelError::CudaUnavailable(
                "the NVRTC library (libnvrtc.so) was not found; add its folder to LD_LIBRARY_PATH"
                    .into(),
            ));
        }
        let count = CudaContext::device_count()
            .map_err(|e| KernelError::CudaUnavailable(format!("cannot count CUDA devices: {e}")))?;
        if ordinal >= count as usize {
            return Err(KernelError::CudaUnavailable(format!(
                "CUDA device {ordinal} requested but {count} device(s) found"
            )));
        }
        let context = CudaContext::new(ordinal)?;
        let (major, minor) = context.compute_capability()?;
        let name = context.name()?;
        let stream = context.default_stream();
        let blas = CudaBlas::new(stream.clone())?;
        Ok(Self {
            ordinal,
            context,
            stream,
            blas,
            arch: format!("sm_{major}{minor}"),
            name,
            modules: Mutex::new(HashMap::new()),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn arch(&self) -> &str {
        &self.arch
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.context
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    pub fn blas(&self) -> &CudaBlas {
        &self.blas
    }

    /// The kernel `entry` of `source`, compiling and loading the module on first use.
    pub fn function(&self, source: &kernels_cu::Source, entry: &str) -> Result<CudaFunction> {
        let module = {
            let mut modules = self
                .modules
                .lock()
                .map_err(|_| KernelError::Driver("module cache lock poisoned".into()))?;
            match modules.get(source.name) {
                Some(m) => m.clone(),
                None => {
                    let ptx = super::nvrtc::compile_source(source, &self.arch)?;
                    let m = self.context.load_module(ptx)?;
                    modules.insert(source.name, m.clone());
                    m
                }
            }
        };
        Ok(module.load_function(entry)?)
    }

    /// (free, total) bytes of device memory, from the driver (`cuMemGetInfo`); callable from any
    /// thread (it binds the context first). Used for the benchmarks' peak-memory reports.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        self.context.bind_to_thread()?;
        Ok(cudarc::driver::result::mem_get_info()?)
    }

    /// Blocks until all work queued on the stream has finished.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }
}
