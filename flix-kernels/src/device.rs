//! Where tensors live and ops run. Call sites match on [`Device`], never on `#[cfg]`: a build
//! without a GPU still has `Device::Cuda`, and asking for it returns a clear error.

use std::sync::{Arc, Mutex};

use crate::cuda::CudaBackend;
use crate::error::Result;

#[derive(Clone, Debug)]
pub enum Device {
    Cpu,
    Cuda(Arc<CudaBackend>),
}

impl Device {
    /// CUDA device `ordinal`; an error (never a panic) when there is no driver or no such GPU.
    /// One backend per GPU and process: asking twice gives the same one (so its compiled kernels
    /// are shared, and tensors made through either are on the [`same`](Self::same) device).
    pub fn cuda(ordinal: usize) -> Result<Self> {
        static BACKENDS: Mutex<Vec<(usize, Arc<CudaBackend>)>> = Mutex::new(Vec::new());
        // A panic while the lock was held cannot leave the list half-updated: take it anyway.
        let mut backends = BACKENDS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, backend)) = backends.iter().find(|(o, _)| *o == ordinal) {
            return Ok(Device::Cuda(backend.clone()));
        }
        let backend = Arc::new(CudaBackend::new(ordinal)?);
        backends.push((ordinal, backend.clone()));
        Ok(Device::Cuda(backend))
    }

    /// Parses `cpu`, `cuda` or `cuda:N`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Device::cuda(0),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Device::cuda(n),
                _ => Err(crate::KernelError::Invalid {
                    op: "Device::parse",
                    message: format!("unknown device {other:?}; use cpu, cuda or cuda:N"),
                }),
            },
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// Same device (for CUDA: same backend instance).
    pub fn same(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Cuda(a), Device::Cuda(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Waits for queued device work; a no-op on the CPU.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(cuda) => cuda.synchronize(),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(c) => write!(f, "cuda:{}", c.ordinal()),
        }
    }
}
