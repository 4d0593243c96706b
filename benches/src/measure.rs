//! Timing one benchmark layer on one device: (a) the base GEMM alone, (b) the FLix layer, (c) the
//! adapter ops alone, forward and forward+backward, plus the device's copy bandwidth measured in
//! the same run so that (c) can be reported as a fraction of it.
//!
//! Times are medians of wall-clock runs bracketed by `device.synchronize()`. The plan is built
//! and uploaded once outside the timed region: a real step shares it across all layers.

use std::time::Instant;

use flix_kernels::flix::{self, AdapterGrads, DevicePlan, LayerAdapters, TypeAdapter, Write};
use flix_kernels::ops::{matmul, Trans};
use flix_kernels::{DType, Device, KernelError, Result, Storage, Tensor};
use serde::Serialize;

use crate::shapes::{LayerShape, SplitMix};

/// Every buffer of one benchmark layer, allocated once.
pub struct LayerProblem {
    pub shape: LayerShape,
    pub dtype: DType,
    pub plan: DevicePlan,
    pub w: Tensor,
    pub adapters: LayerAdapters,
    pub x: Tensor,
    pub h: Tensor,
    pub y: Tensor,
    pub dy: Tensor,
    pub dx: Tensor,
    pub grads: AdapterGrads,
}

fn random(
    device: &Device,
    dtype: DType,
    shape: &[usize],
    scale: f32,
    rng: &mut SplitMix,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| scale * rng.signed()).collect();
    Tensor::from_f32(device, dtype, shape, &data)
}

impl LayerProblem {
    /// Random weights, adapters (B non-zero), X and dY for `shape`, activations in `dtype`.
    pub fn new(device: &Device, dtype: DType, shape: &LayerShape) -> Result<Self> {
        let plan = shape.plan().map_err(|e| KernelError::Invalid {
            op: "LayerProblem::new",
            message: format!("shape {}: {e}", shape.name),
        })?;
        let plan = DevicePlan::new(device, plan)?;
        let mut rng = SplitMix(shape.seed);
        let (t, r, d_in, d_out) = (shape.tokens, shape.total_rank(), shape.d_in, shape.d_out);
        let init = 1.0 / (d_in as f32).sqrt();
        let mut types = Vec::new();
        for &(rank, values) in &shape.types {
            types.push(TypeAdapter {
                scale: 2.0,
                a: random(device, DType::F32, &[values, rank, d_in], init, &mut rng)?,
                b: random(device, DType::F32, &[values, d_out, rank], 0.01, &mut rng)?,
            });
        }
        let adapters = LayerAdapters::new(types);
        let grads = AdapterGrads::zeros(&adapters)?;
        Ok(Self {
            plan,
            w: random(device, dtype, &[d_out, d_in], init, &mut rng)?,
            x: random(device, dtype, &[t, d_in], 1.0, &mut rng)?,
            h: Tensor::zeros(device, dtype, &[t, r])?,
            y: Tensor::zeros(device, dtype, &[t, d_out])?,
            dy: random(device, dtype, &[t, d_out], 1.0, &mut rng)?,
            dx: Tensor::zeros(device, dtype, &[t, d_in])?,
            adapters,
            grads,
            shape: shape.clone(),
            dtype,
        })
    }

    /// (a) forward: Y = X Wᵀ.
    pub fn base_forward(&mut self) -> Result<()> {
        matmul(&self.x, Trans::N, &self.w, Trans::T, &mut self.y, 1.0, 0.0)
    }

    /// (a) forward and backward: Y = X Wᵀ, dX = dY W (W is frozen: no dW).
    pub fn base_forward_backward(&mut self) -> Result<()> {
        self.base_forward()?;
        matmul(
            &self.dy,
            Trans::N,
            &self.w,
            Trans::N,
            &mut self.dx,
            1.0,
            0.0,
        )
    }

    /// (b) forward of the FLix layer.
    pub fn flix_forward(&mut self) -> Result<()> {
        flix::linear_forward(
            &self.plan,
            &self.w,
            None,
            &self.adapters,
            &self.x,
            &mut self.y,
            &mut self.h,
        )
    }

    /// (b) forward and backward of the FLix layer.
    pub fn flix_forward_backward(&mut self) -> Result<()> {
        self.flix_forward()?;
        flix::linear_backward(
            &self.plan,
            &self.w,
            &self.adapters,
            &self.x,
            &self.h,
            &self.dy,
            &mut self.dx,
            Write::Overwrite,
            &mut self.grads,
        )
    }

    /// (c) the adapter ops alone, forward: shrink then expand (overwriting Y).
    pub fn adapters_forward(&mut self) -> Result<()> {
        self.shrink_only()?;
        self.expand_only()
    }

    /// (c) the adapter ops alone, forward and backward (dX overwritten, dA and dB accumulated).
    pub fn adapters_forward_backward(&mut self) -> Result<()> {
        self.adapters_forward()?;
        self.backward_only()
    }

    /// One adapter op alone, for the per-op breakdown: shrink (H from X).
    pub fn shrink_only(&mut self) -> Result<()> {
        flix::shrink(&self.plan, &self.adapters, &self.x, &mut self.h)
    }

    /// One adapter op alone: expand (Y overwritten from H).
    pub fn expand_only(&mut self) -> Result<()> {
        flix::expand(
            &self.plan,
            &self.adapters,
            &self.h,
            &mut self.y,
            Write::Overwrite,
        )
    }

    /// One adapter op alone: the backward (dH, dX overwritten, dA and dB accumulated).
    pub fn backward_only(&mut self) -> Result<()> {
        flix::backward(
            &self.plan,
            &self.adapters,
            &self.x,
            &self.h,
            &self.dy,
            Some(&mut self.dx),
            Write::Overwrite,
            &mut self.grads,
        )
    }

    /// The bytes the adapter ops must move at the least: every activation read or written once,
    /// every used adapter read once (f32), every used gradient read and written once (f32).
    pub fn adapter_bytes(&self, backward: bool) -> f64 {
        let s = &self.shape;
        let act = match self.dtype {
            DType::F32 => 4.0,
            DType::BF16 => 2.0,
        };
        let (t, r) = (s.tokens as f64, s.total_rank() as f64);
        let (d_in, d_out) = (s.d_in as f64, s.d_out as f64);
        let plan = self.plan.plan();
        // Adapter elements of the values this batch uses.
        let used: f64 = (0..plan.num_types())
            .map(|k| {
                let rank = plan.types()[k].rank as f64;
                let values = (0..plan.types()[k].num_values)
                    .filter(|&v| !plan.users_of(k, v).is_empty())
                    .count() as f64;
                values * rank * (d_in + d_out)
            })
            .sum();
        // shrink: X in, H out; expand: H in, Y out.
        let forward = act * t * (d_in + 2.0 * r + d_out) + 4.0 * used;
        if !backward {
            return forward;
        }
        // dY, H, X in, dX out; adapters read again; gradients read and written.
        forward + act * t * (d_out + r + 2.0 * d_in) + 4.0 * used * 3.0
    }
}

/// A timed sample lasts at least this long: GPU calls of a fraction of a millisecond are
/// repeated inside one sample so that launch and synchronisation overhead does not count.
const MIN_SAMPLE_MS: f64 = 2.0;

/// Median wall-clock milliseconds per call of `f`, over `iters` samples after `warmup` calls.
/// Each sample runs `f` back to back n times between two `device.synchronize()` calls and
/// divides by n, with n chosen from the warm-up so that a sample lasts >= [`MIN_SAMPLE_MS`]
/// (n = 1 for calls that long already, as on the CPU).
pub fn median_ms(
    device: &Device,
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
    device.synchronize()?;
    let start = Instant::now();
    for _ in 0..warmup.max(1) {
        f()?;
    }
    device.synchronize()?;
    let per_call = start.elapsed().as_secs_f64() * 1e3 / warmup.max(1) as f64;
    let repeats = (MIN_SAMPLE_MS / per_call.max(1e-6))
        .ceil()
        .clamp(1.0, 1000.0) as usize;
    let mut times = Vec::with_capacity(iters.max(1));
    for _ in 0..iters.max(1) {
        device.synchronize()?;
        let start = Instant::now();
        for _ in 0..repeats {
            f()?;
        }
        device.synchronize()?;
        times.push(start.elapsed().as_secs_f64() * 1e3 / repeats as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Copy bandwidth in bytes per second (bytes read plus bytes written), measured on `device`
/// with a 256 MiB buffer (64 MiB on the CPU): a device-to-device copy on CUDA, a memcpy on the CPU.
pub fn copy_bandwidth(device: &Device, warmup: usize, iters: usize) -> Result<f64> {
    match device {
        Device::Cpu => {
            let n = 16 << 20; // f32 elements
            let src = vec![1.0f32; n];
            let mut dst = vec![0.0f32; n];
            let ms = median_ms(device, warmup, iters, || {
                dst.copy_from_slice(&src);
                std::hint::black_box(&mut dst);
                Ok(())
            })?;
            Ok(2.0 * 4.0 * n as f64 / (ms * 1e-3))
        }
        Device::Cuda(backend) => {
            let n = 128 << 20; // bf16 elements
            let src = Tensor::zeros(device, DType::BF16, &[n])?;
            let mut dst = Tensor::zeros(device, DType::BF16, &[n])?;
            let ms = median_ms(device, warmup, iters, || {
                match (src.storage(), dst.storage_mut()) {
                    (Storage::CudaBf16(s), Storage::CudaBf16(d)) => {
                        Ok(backend.stream().memcpy_dtod(s, d)?)
                    }
                    _ => Err(KernelError::Invalid {
                        op: "copy_bandwidth",
                        message: "expected bf16 CUDA buffers".into(),
                    }),
                }
            })?;
            Ok(2.0 * 2.0 * n as f64 / (ms * 1e-3))
        }
    }
}

/// One forward or forward+backward measurement of one shape.
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    /// (a) base GEMM alone, ms.
    pub base_ms: f64,
    /// (b) FLix layer, ms.
    pub flix_ms: f64,
    /// (b) / (a), the headline.
    pub ratio: f64,
    /// (c) adapter ops alone, ms.
    pub adapters_ms: f64,
    /// (c)'s minimum traffic / time, bytes per second.
    pub adapters_bytes_per_s: f64,
    /// (c)'s bandwidth as a fraction of the copy bandwidth.
    pub adapters_copy_fraction: f64,
}

/// The adapter ops one at a time (medians, ms): where (c)'s time goes.
#[derive(Clone, Debug, Serialize)]
pub struct OpTimes {
    pub shrink_ms: f64,
    pub expand_ms: f64,
    /// dH, dX, dA and dB together.
    pub backward_ms: f64,
}

/// One row of the benchmark table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub shape: LayerShape,
    pub dtype: String,
    pub forward: Timing,
    pub forward_backward: Timing,
    pub ops: OpTimes,
}

/// Measures `shape` on `device`; `copy_bytes_per_s` from [`copy_bandwidth`] in the same run.
pub fn measure(
    device: &Device,
    dtype: DType,
    shape: &LayerShape,
    warmup: usize,
    iters: usize,
    copy_bytes_per_s: f64,
) -> Result<Row> {
    let mut p = LayerProblem::new(device, dtype, shape)?;
    let timing = |p: &mut LayerProblem, backward: bool| -> Result<Timing> {
        let base_ms = if backward {
            median_ms(device, warmup, iters, || p.base_forward_backward())?
        } else {
            median_ms(device, warmup, iters, || p.base_forward())?
        };
        let flix_ms = if backward {
            median_ms(device, warmup, iters, || p.flix_forward_backward())?
        } else {
            median_ms(device, warmup, iters, || p.flix_forward())?
        };
        let adapters_ms = if backward {
            median_ms(device, warmup, iters, || p.adapters_forward_backward())?
        } else {
            median_ms(device, warmup, iters, || p.adapters_forward())?
        };
        let bytes_per_s = p.adapter_bytes(backward) / (adapters_ms * 1e-3);
        Ok(Timing {
            base_ms,
            flix_ms,
            ratio: flix_ms / base_ms,
            adapters_ms,
            adapters_bytes_per_s: bytes_per_s,
            adapters_copy_fraction: bytes_per_s / copy_bytes_per_s,
        })
    };
    let forward = timing(&mut p, false)?;
    let forward_backward = timing(&mut p, true)?;
    let ops = OpTimes {
        shrink_ms: median_ms(device, warmup, iters, || p.shrink_only())?,
        expand_ms: median_ms(device, warmup, iters, || p.expand_only())?,
        backward_ms: median_ms(device, warmup, iters, || p.backward_only())?,
    };
    Ok(Row {
        shape: shape.clone(),
        dtype: dtype.to_string(),
        forward,
        forward_backward,
        ops,
    })
}
