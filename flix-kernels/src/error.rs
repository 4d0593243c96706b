//! One error type for every op and device call. Messages name the tensor, the shape expected and
//! the shape found, so a user can tell which call was wrong without a debugger.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum KernelError {
    #[error("{op}: {what} has shape {found:?}, expected {expected:?}")]
    Shape {
        op: &'static str,
        what: &'static str,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{op}: {what} is {found}, expected {expected}")]
    DType {
        op: &'static str,
        what: &'static str,
        expected: crate::DType,
        found: crate::DType,
    },
    #[error("{op}: {what} lives on {found}, expected {expected}")]
    WrongDevice {
        op: &'static str,
        what: &'static str,
        expected: String,
        found: String,
    },
    #[error("{op}: {message}")]
    Invalid { op: &'static str, message: String },
    #[error("CUDA is not available: {0}")]
    CudaUnavailable(String),
    #[error("CUDA driver call failed: {0}")]
    Driver(String),
    #[error("cuBLAS call failed: {0}")]
    Blas(String),
    #[error("NVRTC failed to compile {source_name} for {arch}:\n{log}")]
    Compile {
        source_name: String,
        arch: String,
        log: String,
    },
}

pub type Result<T> = std::result::Result<T, KernelError>;

impl From<cudarc::driver::DriverError> for KernelError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        KernelError::Driver(e.to_string())
    }
}

impl From<cudarc::cublas::result::CublasError> for KernelError {
    fn from(e: cudarc::cublas::result::CublasError) -> Self {
        KernelError::Blas(format!("{e:?}"))
    }
}
