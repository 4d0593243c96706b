//! A dense, row-major buffer with a shape, a dtype and a device. Deliberately small: FLix has no
//! general tensor library and no autograd (DESIGN §4); ops take tensors and check their shapes.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// See [`Tensor::stamp`].
    stamp: u64,
}

/// The source of every content stamp: each construction and each mutable access takes the next
/// value, so no two contents ever get the same stamp.
static NEXT_STAMP: AtomicU64 = AtomicU64::new(1);

fn fresh_stamp() -> u64 {
    NEXT_STAMP.fetch_add(1, Ordering::Relaxed)
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
            stamp: fresh_stamp(),
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
            stamp: fresh_stamp(),
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
            stamp: fresh_stamp(),
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
    /// The storage, for writing: the tensor takes a new [`stamp`](Tensor::stamp), since what
    /// follows may change its content. Every write to a tensor goes through here or
    /// [`Tensor::cpu_data_mut`].
    pub fn storage_mut(&mut self) -> &mut Storage {
        self.stamp = fresh_stamp();
        &mut self.storage
    }

    /// A content stamp: equal stamps mean equal content. Each construction and each mutable
    /// access ([`Tensor::storage_mut`], [`Tensor::cpu_data_mut`]) draws a new one from a global
    /// counter, and a copy made by `ops::elementwise::duplicate` keeps its source's. So a value
    /// derived from a tensor (a working copy in another dtype) can be kept as long as the
    /// tensor's stamp is the one it was derived from. Unequal stamps say nothing: a mutable
    /// access that writes the same values still changes the stamp.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// Gives this tensor `source`'s stamp, for a copy whose content was just made equal to
    /// `source`'s (on the same stream, so that any later read sees the copy).
    pub(crate) fn share_stamp_of(&mut self, source: &Tensor) {
        self.stamp = source.stamp;
    }

    /// Same data, new shape with the same element count (and the same stamp).
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
    /// The host slice of a CPU tensor, for writing (a new [`stamp`](Tensor::stamp)).
    pub fn cpu_data_mut(&mut self, op: &'static str) -> Result<&mut [f32]> {
        self.stamp = fresh_stamp();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_draws_a_new_stamp() -> Result<()> {
        let a = Tensor::zeros(&Device::Cpu, DType::F32, &[2, 3])?;
        let b = Tensor::zeros(&Device::Cpu, DType::F32, &[2, 3])?;
        let c = Tensor::from_f32(&Device::Cpu, DType::F32, &[2], &[1.0, 2.0])?;
        let d = Tensor::cpu(&[2], vec![1.0, 2.0])?;
        let stamps = [a.stamp(), b.stamp(), c.stamp(), d.stamp()];
        for (i, x) in stamps.iter().enumerate() {
            for y in &stamps[i + 1..] {
                assert_ne!(x, y, "two constructions share a stamp: {stamps:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn mutable_access_changes_the_stamp_and_reads_do_not() -> Result<()> {
        let mut t = Tensor::cpu(&[3], vec![1.0, 2.0, 3.0])?;
        let before = t.stamp();
        let _ = t.cpu_data("read")?;
        let _ = t.storage();
        let _ = t.to_f32_vec()?;
        assert_eq!(t.stamp(), before, "reads keep the stamp");

        t.cpu_data_mut("write")?[0] = 5.0;
        let after_data = t.stamp();
        assert_ne!(after_data, before);

        let _ = t.storage_mut();
        assert_ne!(t.stamp(), after_data);
        assert_ne!(t.stamp(), before);
        Ok(())
    }

    #[test]
    fn reshape_and_duplicate_keep_the_stamp() -> Result<()> {
        let t = Tensor::cpu(&[2, 2], vec![1.0, 2.0, 3.0, 4.0])?;
        let stamp = t.stamp();
        let copy = crate::ops::elementwise::duplicate(&t)?;
        assert_eq!(copy.stamp(), stamp, "a copy has its source's content");
        assert_eq!(copy.to_f32_vec()?, t.to_f32_vec()?);
        let t = t.reshape(&[4])?;
        assert_eq!(t.stamp(), stamp);

        // Writing the copy separates it from its source again.
        let mut copy = copy;
        copy.cpu_data_mut("write")?[0] = 9.0;
        assert_ne!(copy.stamp(), t.stamp());
        Ok(())
    }
}
