//! Launchers of the element-wise kernels: the gated MLP activations SwiGLU and GeGLU
//! (`transformer_swiglu.cu`) and RoPE (`transformer_rope.cu`).

use std::sync::Arc;

use cudarc::driver::PushKernelArg;

use super::{grid_stride, same_device_and_dtype, suffix, to_i32, upload, Args};
use crate::batch::TokenPositions;
use crate::cuda::CudaBackend;
use crate::error::Result;
use crate::ops::swiglu::GateActivation;
use crate::{Device, Tensor};

/// h = act(gate) ⊙ up (shapes checked by the caller).
pub fn gated_forward(
    backend: &Arc<CudaBackend>,
    act: GateActivation,
    gate: &Tensor,
    up: &Tensor,
) -> Result<Tensor> {
    const OP: &str = "gated_forward";
    let dtype = same_device_and_dtype(OP, backend, &[("gate", gate), ("up", up)])?;
    let mut h = Tensor::zeros(&Device::Cuda(backend.clone()), dtype, gate.shape())?;
    let n = gate.numel();
    if n == 0 {
        return Ok(h);
    }
    let f = backend.function(
        &kernels_cu::TRANSFORMER_SWIGLU,
        &format!("{}_forward_{}", act.kernel_prefix(), suffix(dtype)),
    )?;
    let mut a = Args::new(backend);
    let (g, u, out, len) = (
        a.read(OP, "gate", gate)?,
        a.read(OP, "up", up)?,
        a.write(OP, "h", &mut h)?,
        n as i64,
    );
    let mut b = backend.stream().launch_builder(&f);
    b.arg(&g).arg(&u).arg(&out).arg(&len);
    // SAFETY: matches {swiglu,geglu}_forward_*(const T*, const T*, T*, long long); all hold n
    // elements.
    unsafe { b.launch(grid_stride(n)) }?;
    drop(a);
    Ok(h)
}

/// Returns (dGate, dUp).
pub fn gated_backward(
    backend: &Arc<CudaBackend>,
    act: GateActivation,
    dh: &Tensor,
    gate: &Tensor,
    up: &Tensor,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "gated_backward";
    let dtype = same_device_and_dtype(OP, backend, &[("gate", gate), ("up", up), ("dH", dh)])?;
    let device = Device::Cuda(backend.clone());
    let mut dgate = Tensor::zeros(&device, dtype, gate.shape())?;
    let mut dup = Tensor::zeros(&device, dtype, gate.shape())?;
    let n = gate.numel();
    if n == 0 {
        return Ok((dgate, dup));
    }
    let f = backend.function(
        &kernels_cu::TRANSFORMER_SWIGLU,
        &format!("{}_backward_{}", act.kernel_prefix(), suffix(dtype)),
    )?;
    let mut a = Args::new(backend);
    let (d, g, u) = (
        a.read(OP, "dH", dh)?,
        a.read(OP, "gate", gate)?,
        a.read(OP, "up", up)?,
    );
    let (dg, du, len) = (
        a.write(OP, "dGate", &mut dgate)?,
        a.write(OP, "dUp", &mut dup)?,
        n as i64,
    );
    let mut b = backend.stream().launch_builder(&f);
    b.arg(&d).arg(&g).arg(&u).arg(&dg).arg(&du).arg(&len);
    // SAFETY: matches {swiglu,geglu}_backward_*(const T* x3, T* x2, long long); all hold n
    // elements.
    unsafe { b.launch(grid_stride(n)) }?;
    drop(a);
    Ok((dgate, dup))
}

/// Rotates `x` ([T, heads · 2 · inv_freq.len()], checked by the caller) in place; `sin_sign` is
/// 1 forward and −1 backward.
pub fn rope(
    backend: &Arc<CudaBackend>,
    op: &'static str,
    x: &mut Tensor,
    heads: usize,
    positions: &TokenPositions,
    inv_freq: &[f32],
    sin_sign: f32,
) -> Result<()> {
    let dtype = same_device_and_dtype(op, backend, &[("x", x)])?;
    let pos = positions.cuda(op, &Device::Cuda(backend.clone()))?;
    let half = inv_freq.len();
    let n = positions.host().len() * heads * half;
    if n == 0 {
        return Ok(());
    }
    let (heads_i, half_i, len) = (
        to_i32(op, "heads", heads)?,
        to_i32(op, "head_dim / 2", half)?,
        n as i64,
    );
    let freq = upload(backend, inv_freq)?;
    let f = backend.function(
        &kernels_cu::TRANSFORMER_ROPE,
        &format!("rope_{}", suffix(dtype)),
    )?;
    let mut a = Args::new(backend);
    let (xp, pp, fp) = (a.write(op, "x", x)?, a.slice(pos), a.slice(&freq));
    let mut b = backend.stream().launch_builder(&f);
    b.arg(&xp)
        .arg(&pp)
        .arg(&fp)
        .arg(&heads_i)
        .arg(&half_i)
        .arg(&sin_sign)
        .arg(&len);
    // SAFETY: matches rope_*(T*, const unsigned*, const float*, int, int, float, long long); x
    // holds T · heads · 2 · half elements, positions T, inv_freq half.
    unsafe { b.launch(grid_stride(n)) }?;
    Ok(())
}
