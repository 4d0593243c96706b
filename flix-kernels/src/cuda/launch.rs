//! The launch plumbing every CUDA launcher shares (the transformer ops in `ops/cuda/`, the FLix
//! ops in `flix/cuda/`, and the casts and element-wise ops): kernel arguments as raw device
//! addresses ([`Args`], which keeps cudarc's guards alive until the launch is queued), the
//! device and dtype checks, the kernels' dtype suffix and element sizes, `int` conversions, grid
//! shapes, uploads and zeroed workspaces.

use std::sync::Arc;

use cudarc::driver::{
    CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, SyncOnDrop,
};

use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use crate::{DType, Device, Storage, Tensor};

/// Device addresses for one or more launches, with the guards that must outlive them.
pub struct Args<'a> {
    stream: &'a CudaStream,
    guards: Vec<SyncOnDrop<'a>>,
}

impl<'a> Args<'a> {
    pub fn new(backend: &'a CudaBackend) -> Self {
        Self {
            stream: backend.stream(),
            guards: Vec::new(),
        }
    }

    /// The address of a tensor the kernel reads.
    pub fn read(&mut self, op: &'static str, what: &'static str, t: &'a Tensor) -> Result<u64> {
        let (ptr, guard) = match t.storage() {
            Storage::CudaF32(s) => s.device_ptr(self.stream),
            Storage::CudaBf16(s) => s.device_ptr(self.stream),
            Storage::Cpu(_) => return Err(not_cuda(op, what, t)),
        };
        self.guards.push(guard);
        Ok(ptr)
    }

    /// The address of a tensor the kernel writes.
    pub fn write(
        &mut self,
        op: &'static str,
        what: &'static str,
        t: &'a mut Tensor,
    ) -> Result<u64> {
        let err = not_cuda(op, what, t);
        let (ptr, guard) = match t.storage_mut() {
            Storage::CudaF32(s) => s.device_ptr_mut(self.stream),
            Storage::CudaBf16(s) => s.device_ptr_mut(self.stream),
            Storage::Cpu(_) => return Err(err),
        };
        self.guards.push(guard);
        Ok(ptr)
    }

    /// The address of a workspace or index buffer.
    pub fn slice<T>(&mut self, s: &'a CudaSlice<T>) -> u64 {
        let (ptr, guard) = s.device_ptr(self.stream);
        self.guards.push(guard);
        ptr
    }

    pub fn slice_mut<T>(&mut self, s: &'a mut CudaSlice<T>) -> u64 {
        let (ptr, guard) = s.device_ptr_mut(self.stream);
        self.guards.push(guard);
        ptr
    }
}

fn not_cuda(op: &'static str, what: &'static str, t: &Tensor) -> KernelError {
    KernelError::Invalid {
        op,
        message: format!("{what} must be a CUDA tensor, found {t:?}"),
    }
}

/// The kernels' dtype suffix.
pub fn suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
    }
}

/// Bytes per element of `dtype` (for address offsets).
pub fn elem_bytes(dtype: DType) -> u64 {
    match dtype {
        DType::F32 => 4,
        DType::BF16 => 2,
    }
}

/// Checks that every tensor lives on `backend`'s device and has `first`'s dtype; errors name
/// both tensors.
pub fn same_device_and_dtype(
    op: &'static str,
    backend: &Arc<CudaBackend>,
    tensors: &[(&'static str, &Tensor)],
) -> Result<DType> {
    let device = Device::Cuda(backend.clone());
    let Some(&(first_name, first)) = tensors.first() else {
        return Ok(DType::F32);
    };
    for &(what, t) in tensors {
        on_device(op, what, t, &device)?;
        if t.dtype() != first.dtype() {
            return Err(KernelError::Invalid {
                op,
                message: format!(
                    "{what} is {t:?} but {first_name} is {first:?}: CUDA activations must share \
                     one dtype"
                ),
            });
        }
    }
    Ok(first.dtype())
}

pub fn on_device(op: &'static str, what: &'static str, t: &Tensor, device: &Device) -> Result<()> {
    if t.device().same(device) {
        Ok(())
    } else {
        Err(KernelError::WrongDevice {
            op,
            what,
            expected: device.to_string(),
            found: t.device().to_string(),
        })
    }
}

/// `n` as a kernel `int`.
pub fn to_i32(op: &'static str, what: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| KernelError::Invalid {
        op,
        message: format!("{what} is {n}, more than the kernels' i32 indices hold"),
    })
}

/// A grid-stride launch over `n` elements (n >= 1), 256 threads a block.
pub fn grid_stride(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A launch of `grid` blocks of `threads`.
pub fn blocks(op: &'static str, (x, y): (usize, usize), threads: u32) -> Result<LaunchConfig> {
    let dim = |what, n: usize, max: usize| {
        if n > max {
            Err(KernelError::Invalid {
                op,
                message: format!("grid {what} dimension {n} is more than {max}"),
            })
        } else {
            Ok(n as u32)
        }
    };
    Ok(LaunchConfig {
        grid_dim: (dim("x", x, i32::MAX as usize)?, dim("y", y, 65_535)?, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Copies `data` to the device; an empty slice becomes one default element (a zero-byte
/// allocation is not portable, and no kernel reads past the lengths it is given).
pub fn upload<T: DeviceRepr + Copy + Default>(
    backend: &CudaBackend,
    data: &[T],
) -> Result<CudaSlice<T>> {
    let stream: &Arc<CudaStream> = backend.stream();
    if data.is_empty() {
        Ok(stream.clone_htod(&[T::default()])?)
    } else {
        Ok(stream.clone_htod(data)?)
    }
}

/// A zeroed f32 workspace of `n` elements (at least one).
pub fn workspace<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    backend: &CudaBackend,
    n: usize,
) -> Result<CudaSlice<T>> {
    Ok(backend.stream().alloc_zeros::<T>(n.max(1))?)
}

/// `starts` cut into tiles of at most `size` rows that never cross a segment, as the attention
/// kernels' `{segment, start, end}` i32 triples; empty segments get none.
pub fn tiles(op: &'static str, starts: &[usize], size: usize) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for (s, w) in starts.windows(2).enumerate() {
        let mut a = w[0];
        while a < w[1] {
            let b = (a + size).min(w[1]);
            out.extend([
                to_i32(op, "segment index", s)?,
                to_i32(op, "token index", a)?,
                to_i32(op, "token index", b)?,
            ]);
            a = b;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_every_row_once_and_never_cross_a_segment() {
        let starts = [0, 0, 3, 20, 21, 21, 53];
        let t = tiles("test", &starts, 16).unwrap();
        let mut covered = vec![0; 53];
        for tile in t.chunks(3) {
            let (s, a, b) = (tile[0] as usize, tile[1] as usize, tile[2] as usize);
            assert!(a < b && b - a <= 16, "{tile:?}");
            assert!(
                starts[s] <= a && b <= starts[s + 1],
                "{tile:?} crosses segment {s}"
            );
            for c in &mut covered[a..b] {
                *c += 1;
            }
        }
        assert!(covered.iter().all(|&c| c == 1), "{covered:?}");
    }
}
