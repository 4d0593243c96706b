//! Precision casts between f32 and bf16 tensors of one device (DESIGN §4: bf16 activations and
//! working weights on the GPU, f32 master copies). On CUDA they run `kernels-cu/convert.cu`
//! (round to nearest even); the CPU holds f32 only, so there a cast is a copy.

use cudarc::driver::PushKernelArg;

use crate::cuda::launch::grid_stride;

use crate::error::{KernelError, Result};
use crate::{Device, Storage, Tensor};

/// Writes `src` converted to `dst`'s dtype into `dst` (same shape, same device).
pub fn cast(src: &Tensor, dst: &mut Tensor) -> Result<()> {
    let _profile = crate::profile::scope("cast", src.device());
    const OP: &str = "cast";
    dst.expect_shape(OP, "destination", src.shape())?;
    if !src.device().same(dst.device()) {
        return Err(KernelError::WrongDevice {
            op: OP,
            what: "destination",
            expected: src.device().to_string(),
            found: dst.device().to_string(),
        });
    }
    let n = src.numel();
    match src.device().clone() {
        Device::Cpu => {
            let from = src.cpu_data(OP)?.to_vec();
            dst.cpu_data_mut(OP)?.copy_from_slice(&from);
            Ok(())
        }
        Device::Cuda(backend) => {
            if n == 0 {
                return Ok(());
            }
            let cfg = grid_stride(n);
            let len = n as i64;
            let stream = backend.stream();
            let (from, to) = (src.dtype(), dst.dtype());
            match (src.storage(), dst.storage_mut()) {
                (Storage::CudaF32(s), Storage::CudaBf16(d)) => {
                    let f = backend.function(&kernels_cu::CONVERT, "flix_cast_f32_to_bf16")?;
                    // SAFETY: matches `flix_cast_f32_to_bf16(const float*, bf16*, long long)`;
                    // both buffers hold n elements (same shape).
                    unsafe {
                        stream
                            .launch_builder(&f)
                            .arg(s)
                            .arg(d)
                            .arg(&len)
                            .launch(cfg)
                    }?;
                }
                (Storage::CudaBf16(s), Storage::CudaF32(d)) => {
                    let f = backend.function(&kernels_cu::CONVERT, "flix_cast_bf16_to_f32")?;
                    // SAFETY: matches `flix_cast_bf16_to_f32(const bf16*, float*, long long)`.
                    unsafe {
                        stream
                            .launch_builder(&f)
                            .arg(s)
                            .arg(d)
                            .arg(&len)
                            .launch(cfg)
                    }?;
                }
                (Storage::CudaF32(s), Storage::CudaF32(d)) => stream.memcpy_dtod(s, d)?,
                (Storage::CudaBf16(s), Storage::CudaBf16(d)) => stream.memcpy_dtod(s, d)?,
                _ => {
                    return Err(KernelError::Invalid {
                        op: OP,
                        message: format!("cannot cast {from} to {to} on {}", src.device()),
                    })
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn cpu_cast_copies_and_checks_the_shape() {
        let src = Tensor::cpu(&[2, 3], vec![1.0, -2.5, 3.25, 0.0, 1e-3, 7.0]).unwrap();
        let mut dst = Tensor::zeros(&Device::Cpu, DType::F32, &[2, 3]).unwrap();
        cast(&src, &mut dst).unwrap();
        assert_eq!(dst.to_f32_vec().unwrap(), src.to_f32_vec().unwrap());
        let mut wrong = Tensor::zeros(&Device::Cpu, DType::F32, &[3, 2]).unwrap();
        let err = cast(&src, &mut wrong).unwrap_err().to_string();
        assert!(err.contains("[2, 3]") && err.contains("[3, 2]"), "{err}");
    }

    #[test]
    fn cuda_casts_round_to_nearest_even_and_back() {
        let device = match Device::cuda(0) {
            Ok(d) => d,
            Err(e) => {
                assert!(
                    std::env::var("FLIX_REQUIRE_GPU").as_deref() != Ok("1"),
                    "FLIX_REQUIRE_GPU=1 but CUDA is unavailable: {e}"
                );
                eprintln!("SKIPPED cuda_casts_round_to_nearest_even_and_back: {e}");
                return;
            }
        };
        // Includes exact ties (1 + 2^-8, 1 + 3·2^-8: round to even); the expected values come
        // from the half crate, independently of the kernel.
        let values: Vec<f32> = (0..1000)
            .map(|i| ((i as f32) * 0.377).sin() * 10f32.powi(i % 7 - 3))
            .chain([1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -0.0, 65504.0])
            .collect();
        let n = values.len();
        let src = Tensor::from_f32(&device, DType::F32, &[n], &values).unwrap();
        let mut half = Tensor::zeros(&device, DType::BF16, &[n]).unwrap();
        cast(&src, &mut half).unwrap();
        let mut back = Tensor::zeros(&device, DType::F32, &[n]).unwrap();
        cast(&half, &mut back).unwrap();
        let got = back.to_f32_vec().unwrap();
        for (i, (g, v)) in got.iter().zip(&values).enumerate() {
            let want = half::bf16::from_f32(*v).to_f32();
            assert_eq!(
                g.to_bits(),
                want.to_bits(),
                "element {i}: {v} -> {g}, want {want}"
            );
        }
    }
}
