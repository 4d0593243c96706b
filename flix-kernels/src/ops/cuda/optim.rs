//! Launchers of `transformer_optim.cu`: AdamW on f32 master weights and state, the global
//! gradient sum of squares (deterministic two-pass reduction in f64), and gradient scaling.

use std::sync::Arc;

use cudarc::driver::PushKernelArg;

use super::{grid_stride, on_device, suffix, workspace, Args};
use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use crate::ops::adamw::AdamWParams;
use crate::{DType, Device, Tensor};

/// Blocks of the first reduction pass: fixed, so the summation order depends only on n.
const SUMSQ_BLOCKS: usize = 512;

/// One AdamW step; `param`, `m`, `v` f32, `grad` f32 or bf16 (shapes and step checked by the
/// caller).
pub fn adamw_step(
    backend: &Arc<CudaBackend>,
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    step: u64,
    hp: AdamWParams,
) -> Result<()> {
    const OP: &str = "adamw_step";
    let device = Device::Cuda(backend.clone());
    for (what, t) in [("param", &*param), ("m", &*m), ("v", &*v)] {
        on_device(OP, what, t, &device)?;
        t.expect_dtype(OP, what, DType::F32)?;
    }
    on_device(OP, "grad", grad, &device)?;
    let n = param.numel();
    if n == 0 {
        return Ok(());
    }
    let bc1 = 1.0 - (hp.beta1 as f64).powi(step as i32);
    let bc2 = 1.0 - (hp.beta2 as f64).powi(step as i32);
    let f = backend.function(
        &kernels_cu::TRANSFORMER_OPTIM,
        &format!("adamw_step_{}", suffix(grad.dtype())),
    )?;
    let mut a = Args::new(backend);
    let gp = a.read(OP, "grad", grad)?;
    let pp = a.write(OP, "param", param)?;
    let mp = a.write(OP, "m", m)?;
    let vp = a.write(OP, "v", v)?;
    let len = n as i64;
    let mut b = backend.stream().launch_builder(&f);
    b.arg(&pp)
        .arg(&gp)
        .arg(&mp)
        .arg(&vp)
        .arg(&len)
        .arg(&hp.lr)
        .arg(&hp.beta1)
        .arg(&hp.beta2)
        .arg(&hp.eps)
        .arg(&hp.weight_decay)
        .arg(&bc1)
        .arg(&bc2);
    // SAFETY: matches adamw_step_*(float*, const G*, float*, float*, long long, float x5,
    // double, double); all four tensors hold n elements.
    unsafe { b.launch(grid_stride(n)) }?;
    Ok(())
}

/// Σ g² over one tensor, in f64, in an order fixed by its length.
pub fn sum_of_squares(backend: &Arc<CudaBackend>, g: &Tensor) -> Result<f64> {
    const OP: &str = "global_grad_norm";
    on_device(OP, "gradient", g, &Device::Cuda(backend.clone()))?;
    let n = g.numel();
    if n == 0 {
        return Ok(0.0);
    }
    let nblocks = n.div_ceil(256).min(SUMSQ_BLOCKS);
    let source = &kernels_cu::TRANSFORMER_OPTIM;
    let partial = backend.function(source, &format!("sumsq_partial_{}", suffix(g.dtype())))?;
    let finish = backend.function(source, "sumsq_finish")?;
    let mut part = workspace::<f64>(backend, nblocks)?;
    let mut out = workspace::<f64>(backend, 1)?;
    {
        let mut a = Args::new(backend);
        let gp = a.read(OP, "gradient", g)?;
        let pp = a.slice_mut(&mut part);
        let op = a.slice_mut(&mut out);
        let (len, nb) = (n as i64, nblocks as i32);
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (nblocks as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = backend.stream().launch_builder(&partial);
        b.arg(&gp).arg(&len).arg(&pp);
        // SAFETY: matches sumsq_partial_*(const T*, long long, double*); part holds nblocks.
        unsafe { b.launch(cfg) }?;
        let one = cudarc::driver::LaunchConfig {
            grid_dim: (1, 1, 1),
            ..cfg
        };
        let mut b = backend.stream().launch_builder(&finish);
        b.arg(&pp).arg(&nb).arg(&op);
        // SAFETY: matches sumsq_finish(const double*, int, double*).
        unsafe { b.launch(one) }?;
    }
    let host = backend.stream().clone_dtoh(&out)?;
    host.first()
        .copied()
        .ok_or_else(|| KernelError::Driver("empty read-back".into()))
}

/// x *= coef.
pub fn scale(backend: &Arc<CudaBackend>, x: &mut Tensor, coef: f32) -> Result<()> {
    const OP: &str = "clip_grad_norm";
    on_device(OP, "gradient", x, &Device::Cuda(backend.clone()))?;
    let n = x.numel();
    if n == 0 {
        return Ok(());
    }
    let f = backend.function(
        &kernels_cu::TRANSFORMER_OPTIM,
        &format!("scale_{}", suffix(x.dtype())),
    )?;
    let mut a = Args::new(backend);
    let xp = a.write(OP, "gradient", x)?;
    let len = n as i64;
    let mut b = backend.stream().launch_builder(&f);
    b.arg(&xp).arg(&len).arg(&coef);
    // SAFETY: matches scale_*(T*, long long, float); x holds n elements.
    unsafe { b.launch(grid_stride(n)) }?;
    Ok(())
}
