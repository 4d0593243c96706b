//! Launchers of `transformer_rmsnorm.cu`: one block per row for y and dX; dW reduced without
//! atomics (f32 partials over row splits, then summed in split order).

use std::sync::Arc;

use cudarc::driver::PushKernelArg;

use super::{blocks, same_device_and_dtype, suffix, to_i32, workspace, Args};
use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use crate::{DType, Device, Tensor};

/// Rows per dW partial: enough splits to spread long batches over the GPU, few enough that the
/// partials stay small.
const DW_ROWS_PER_SPLIT: usize = 64;
const DW_MAX_SPLITS: usize = 256;

/// Returns (y [rows, d], rstd [rows], f32 on the device); shapes checked by the caller.
pub fn rmsnorm_forward(
    backend: &Arc<CudaBackend>,
    x: &Tensor,
    w: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rmsnorm_forward";
    let dtype = same_device_and_dtype(OP, backend, &[("x", x), ("weight", w)])?;
    let device = Device::Cuda(backend.clone());
    let (rows, d) = (x.shape()[0], x.shape()[1]);
    let mut y = Tensor::zeros(&device, dtype, &[rows, d])?;
    let mut rstd = Tensor::zeros(&device, DType::F32, &[rows])?;
    if rows == 0 {
        return Ok((y, rstd));
    }
    let d_i = to_i32(OP, "width", d)?;
    let f = backend.function(
        &kernels_cu::TRANSFORMER_RMSNORM,
        &format!("rmsnorm_forward_{}", suffix(dtype)),
    )?;
    {
        let mut a = Args::new(backend);
        let (xp, wp, yp, rp) = (
            a.read(OP, "x", x)?,
            a.read(OP, "weight", w)?,
            a.write(OP, "y", &mut y)?,
            a.write(OP, "rstd", &mut rstd)?,
        );
        let mut b = backend.stream().launch_builder(&f);
        b.arg(&xp).arg(&wp).arg(&yp).arg(&rp).arg(&d_i).arg(&eps);
        // SAFETY: matches rmsnorm_forward_*(const T*, const T*, T*, float*, int, float); x and
        // y hold rows · d elements, w d, rstd rows; one block per row.
        unsafe { b.launch(blocks(OP, (rows, 1), 256)?) }?;
    }
    Ok((y, rstd))
}

/// Returns dX; adds Σ_rows dY ⊙ x̂ into `dw` (f32, or the activations' dtype) when given.
pub fn rmsnorm_backward(
    backend: &Arc<CudaBackend>,
    dy: &Tensor,
    x: &Tensor,
    w: &Tensor,
    rstd: &Tensor,
    dw: Option<&mut Tensor>,
) -> Result<Tensor> {
    const OP: &str = "rmsnorm_backward";
    let dtype = same_device_and_dtype(OP, backend, &[("x", x), ("weight", w), ("dY", dy)])?;
    let device = Device::Cuda(backend.clone());
    super::on_device(OP, "rstd", rstd, &device)?;
    let (rows, d) = (x.shape()[0], x.shape()[1]);
    if let Some(dw) = dw.as_deref() {
        dw.expect_shape(OP, "dW", &[d])?;
        super::on_device(OP, "dW", dw, &device)?;
        if dw.dtype() != DType::F32 && dw.dtype() != dtype {
            return Err(KernelError::Invalid {
                op: OP,
                message: format!("dW must be f32 or {dtype} like x, found {dw:?}"),
            });
        }
    }
    let mut dx = Tensor::zeros(&device, dtype, &[rows, d])?;
    if rows == 0 || d == 0 {
        return Ok(dx);
    }
    let (rows_i, d_i) = (to_i32(OP, "rows", rows)?, to_i32(OP, "width", d)?);
    let sfx = suffix(dtype);
    let source = &kernels_cu::TRANSFORMER_RMSNORM;
    {
        let f = backend.function(source, &format!("rmsnorm_backward_{sfx}"))?;
        let mut a = Args::new(backend);
        let (gp, xp, wp, rp, dp) = (
            a.read(OP, "dY", dy)?,
            a.read(OP, "x", x)?,
            a.read(OP, "weight", w)?,
            a.read(OP, "rstd", rstd)?,
            a.write(OP, "dX", &mut dx)?,
        );
        let mut b = backend.stream().launch_builder(&f);
        b.arg(&gp).arg(&xp).arg(&wp).arg(&rp).arg(&dp).arg(&d_i);
        // SAFETY: matches rmsnorm_backward_*(const T* x3, const float*, T*, int); one block
        // per row, rows · d elements in dY, x, dX.
        unsafe { b.launch(blocks(OP, (rows, 1), 256)?) }?;
    }
    if let Some(dw) = dw {
        let nsplit = rows.div_ceil(DW_ROWS_PER_SPLIT).min(DW_MAX_SPLITS);
        let per_split = rows.div_ceil(nsplit);
        let (nsplit_i, per_split_i) = (nsplit as i32, to_i32(OP, "rows per split", per_split)?);
        let mut part = workspace::<f32>(backend, nsplit * d)?;
        let partial = backend.function(source, &format!("rmsnorm_dw_partial_{sfx}"))?;
        let finish =
            backend.function(source, &format!("rmsnorm_dw_finish_{}", suffix(dw.dtype())))?;
        let mut a = Args::new(backend);
        let (gp, xp, rp) = (
            a.read(OP, "dY", dy)?,
            a.read(OP, "x", x)?,
            a.read(OP, "rstd", rstd)?,
        );
        let pp = a.slice_mut(&mut part);
        let wp = a.write(OP, "dW", dw)?;
        let mut b = backend.stream().launch_builder(&partial);
        b.arg(&gp)
            .arg(&xp)
            .arg(&rp)
            .arg(&pp)
            .arg(&rows_i)
            .arg(&d_i)
            .arg(&per_split_i);
        // SAFETY: matches rmsnorm_dw_partial_*(const T*, const T*, const float*, float*, int,
        // int, int); part holds nsplit · d floats, grid (ceil(d/256), nsplit).
        unsafe { b.launch(blocks(OP, (d.div_ceil(256), nsplit), 256)?) }?;
        let mut b = backend.stream().launch_builder(&finish);
        b.arg(&pp).arg(&nsplit_i).arg(&d_i).arg(&wp);
        // SAFETY: matches rmsnorm_dw_finish_*(const float*, int, int, W*); dW holds d elements.
        unsafe { b.launch(blocks(OP, (d.div_ceil(256), 1), 256)?) }?;
    }
    Ok(dx)
}
