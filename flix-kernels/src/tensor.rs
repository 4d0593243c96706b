//! A dense, row-major buffer with a shape, a dtype and a device. Deliberately small: FLix has no
//! general tensor library and no autograd (DESIGN §4); ops take tensors and check their shapes.

use cudarc::driver::CudaSlice;
use half::bf16;

use crate::error::{KernelError, Result};
use crate::Device;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
        })
    }
}

/// The bytes behind a tensor. The CPU computes in f32 only (DESIGN §4).
pub enum Storage {
    Cpu(Vec<f32>),
    CudaF32(CudaSlice<f32>),
    CudaBf16(CudaSlice<bf16>),
}

pub struct Tensor {
    device: Device,
    shape: Vec<usize>,
    storage: Storage,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({} {:?} on {})",
            self.dtype(),
            self.shape,
            self.device
        )
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// A tensor of zeros. On the CPU only f32 exists.
    pub fn zeros(device: &Device, dtype: DType, shape: &[usize]) -> Result<Self> {
        let n = numel(shape);
        let storage = match (device, dtype) {
            (Device::Cpu, DType::F32) => Storage::Cpu(vec![0.0; n]),
            (Device::Cpu, DType::BF16) => return Err(cpu_bf16("Tensor::zeros")),
            (Device::Cuda(c), DType::F32) => Storage::CudaF32(c.stream().alloc_zeros::<f32>(n)?),
            (Device::Cuda(c), DType::BF16) => Storage::CudaBf16(c.stream().alloc_zeros::<bf16>(n)?),
        };
        Ok(Self {
            device: device.clone(),
            shape: shape.to_vec(),
            storage,
        })
    }

    /// Copies `data` (row-major, `shape`) to `device`, rounding to `dtype`.
    pub fn from_f32(device: &Device, dtype: DType, shape: &[usize], data: &[f32]) -> Result<Self> {
        if data.len() != numel(shape) {
            return Err(KernelError::Invalid {
                op: "Tensor::from_f32",
                message: format!(
                    "shape {shape:?} holds {} elements but {} were given",
                    numel(shape),
                    data.len()
                ),
            });
        }
        let storage = match (device, dtype) {
            (Device::Cpu, DType::F32) => Storage::Cpu(data.to_vec()),
            (Device::Cpu, DType::BF16) => return Err(cpu_bf16("Tensor::from_f32")),
            (Device::Cuda(c), DType::F32) => Storage::CudaF32(c.stream().clone_htod(data)?),
            (Device::Cuda(c), DType::BF16) => {
                let host: Vec<bf16> = data.iter().map(|&v| bf16::from_f32(v)).collect();
                Storage::CudaBf16(c.stream().clone_htod(&host)?)
            }
        };
        Ok(Self {
            device: device.clone(),
            shape: shape.to_vec(),
            storage,
        })
    }

    /// A CPU f32 tensor that takes ownership of `data`.
    pub fn cpu(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        if data.len() != numel(shape) {
            return Err(KernelError::Invalid {
                op: "Tensor::cpu",
                message: format!(
                    "shape {shape:?} holds {} elements but {} were given",
                    numel(shape),
                    data.len()
                ),
            });
        }
        Ok(Self {
            device: Device::Cpu,
            shape: shape.to_vec(),
            storage: Storage::Cpu(data),
        })
    }

    /// The values as f32 on the host (waits for the device).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        match (&self.storage, &self.device) {
            (Storage::Cpu(v), _) => Ok(v.clone()),
            (Storage::CudaF32(s), Device::Cuda(c)) => Ok(c.stream().clone_dtoh(s)?),
            (Storage::CudaBf16(s), Device::Cuda(c)) => {
                let host = c.stream().clone_dtoh(s)?;
                Ok(host.iter().map(|v| v.to_f32()).collect())
            }
            _ => Err(KernelError::Invalid {
                op: "Tensor::to_f32_vec",
                message: "storage and device disagree".into(),
            }),
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    pub fn dtype(&self) -> DType {
        match self.storage {
            Storage::Cpu(_) | Storage::CudaF32(_) => DType::F32,
            Storage::CudaBf16(_) => DType::BF16,
        }
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    pub fn storage_mut(&mut self) -> &mut Storage {
        &mut self.storage
    }

    /// Same data, new shape with the same element count.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        if numel(shape) != self.numel() {
            return Err(KernelError::Shape {
                op: "Tensor::reshape",
                what: "new shape",
                expected: self.shape.clone(),
                found: shape.to_vec(),
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// The host slice of a CPU tensor; an error naming `op` for a CUDA tensor.
    pub fn cpu_data(&self, op: &'static str) -> Result<&[f32]> {
        match &self.storage {
            Storage::Cpu(v) => Ok(v),
            _ => Err(self.not_on_cpu(op)),
        }
    }
    pub fn cpu_data_mut(&mut self, op: &'static str) -> Result<&mut [f32]> {
        match &mut self.storage {
            Storage::Cpu(v) => Ok(v),
            _ => Err(KernelError::WrongDevice {
                op,
                what: "tensor",
                expected: "cpu".into(),
                found: self.device.to_string(),
            }),
        }
    }
    fn not_on_cpu(&self, op: &'static str) -> KernelError {
        KernelError::WrongDevice {
            op,
            what: "tensor",
            expected: "cpu".into(),
            found: self.device.to_string(),
        }
    }

    /// Checks the shape; the error names the op and the argument.
    pub fn expect_shape(
        &self,
        op: &'static str,
        what: &'static str,
        shape: &[usize],
    ) -> Result<()> {
        if self.shape != shape {
            return Err(KernelError::Shape {
                op,
                what,
                expected: shape.to_vec(),
                found: self.shape.clone(),
            });
        }
        Ok(())
    }

    /// Checks the dtype; the error names the op and the argument.
    pub fn expect_dtype(&self, op: &'static str, what: &'static str, dtype: DType) -> Result<()> {
        if self.dtype() != dtype {
            return Err(KernelError::DType {
                op,
                what,
                expected: dtype,
                found: self.dtype(),
            });
        }
        Ok(())
    }
}

fn cpu_bf16(op: &'static str) -> KernelError {
    KernelError::Invalid {
        op,
        message: "the CPU path computes in f32 only; bf16 tensors live on CUDA".into(),
    }
}
