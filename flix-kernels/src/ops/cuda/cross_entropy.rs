//! Launchers of the chunked linear cross-entropy on CUDA: cuBLAS for each vocabulary chunk's
//! logits (f32 output, also for bf16 operands) and the kernels of
//! `transformer_cross_entropy.cu` for the online log-sum-exp and dlogits. Only the scored rows
//! are gathered; activation memory is O(n · chunk) plus the kept logits, as on the CPU. The
//! forward's results stay on the device (lse, log-probabilities, the scored rows and targets,
//! kept logits); the host reads one number, the loss sum. The backward goes chunk by chunk,
//! recomputing only the chunks whose logits were not kept, so a bf16 dz needs a chunk's buffer.

use std::sync::Arc;

use cudarc::cublas::sys;
use cudarc::driver::{CudaSlice, PushKernelArg};

use super::{blocks, elem_bytes, grid_stride, on_device, same_device_and_dtype, suffix};
use super::{to_i32, upload, workspace, Args};
use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use crate::ops::cross_entropy::{kept_columns, CrossEntropy};
use crate::ops::Trans;
use crate::{DType, Device, Tensor};

fn cuda_type(dtype: DType) -> sys::cudaDataType_t {
    match dtype {
        DType::F32 => sys::cudaDataType_t::CUDA_R_32F,
        DType::BF16 => sys::cudaDataType_t::CUDA_R_16BF,
    }
}

/// One operand of [`gemm`]: a device address, its dtype and row length (row-major).
#[derive(Clone, Copy)]
struct Mat {
    ptr: u64,
    dtype: DType,
    ld: usize,
}

/// Row-major C[m, n] = alpha · op(A) op(B) + beta · C through `cublasGemmEx` with f32 compute:
/// computed as the column-major Cᵀ = op(B)ᵀ op(A)ᵀ (see `ops::matmul`). A and B share a dtype; C
/// may be f32 with bf16 operands.
#[allow(clippy::too_many_arguments)]
fn gemm(
    backend: &CudaBackend,
    (m, n, k): (usize, usize, usize),
    a: Mat,
    trans_a: Trans,
    b: Mat,
    trans_b: Trans,
    c: Mat,
    beta: f32,
) -> Result<()> {
    const OP: &str = "linear_cross_entropy";
    let op = |t: Trans| match t {
        Trans::N => sys::cublasOperation_t::CUBLAS_OP_N,
        Trans::T => sys::cublasOperation_t::CUBLAS_OP_T,
    };
    let alpha = 1.0f32;
    // SAFETY: the callers pass addresses of live buffers (kept by their `Args` guards) holding
    // the given shapes with these leading dimensions; alpha and beta are f32 as
    // CUBLAS_COMPUTE_32F requires.
    unsafe {
        cudarc::cublas::result::gemm_ex(
            *backend.blas().handle(),
            op(trans_b),
            op(trans_a),
            to_i32(OP, "n", n)?,
            to_i32(OP, "m", m)?,
            to_i32(OP, "k", k)?,
            (&alpha) as *const f32 as *const _,
            b.ptr as *const _,
            cuda_type(b.dtype),
            to_i32(OP, "ldb", b.ld.max(1))?,
            a.ptr as *const _,
            cuda_type(a.dtype),
            to_i32(OP, "lda", a.ld.max(1))?,
            (&beta) as *const f32 as *const _,
            c.ptr as *mut _,
            cuda_type(c.dtype),
            to_i32(OP, "ldc", c.ld.max(1))?,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }?;
    Ok(())
}

/// The scored tokens on the device: their rows in the batch and their targets (i32 each).
pub struct DeviceRows {
    /// How many tokens are scored.
    pub count: usize,
    index: CudaSlice<i32>,
    target: CudaSlice<i32>,
}

impl std::fmt::Debug for DeviceRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceRows({} scored, on CUDA)", self.count)
    }
}

/// The scored rows of x, packed [n, d].
fn gather(
    backend: &Arc<CudaBackend>,
    op: &'static str,
    x: &Tensor,
    rows: &DeviceRows,
) -> Result<Tensor> {
    let d = x.shape()[1];
    let mut xsel = Tensor::zeros(x.device(), x.dtype(), &[rows.count, d])?;
    let n = rows.count * d;
    if n > 0 {
        let f = backend.function(
            &kernels_cu::TRANSFORMER_CROSS_ENTROPY,
            &format!("ce_gather_{}", suffix(x.dtype())),
        )?;
        let mut a = Args::new(backend);
        let (xp, ip, sp) = (
            a.read(op, "x", x)?,
            a.slice(&rows.index),
            a.write(op, "xsel", &mut xsel)?,
        );
        let (d_i, len) = (to_i32(op, "d", d)?, n as i64);
        let mut b = backend.stream().launch_builder(&f);
        b.arg(&xp).arg(&ip).arg(&sp).arg(&d_i).arg(&len);
        // SAFETY: matches ce_gather_*(const T*, const int*, T*, int, long long); every scored
        // index is a row of x.
        unsafe { b.launch(grid_stride(n)) }?;
    }
    Ok(xsel)
}

/// Where a chunk's f32 logits are: a device address and its row stride.
fn f32_at(ptr: u64, column: usize, ld: usize) -> Mat {
    Mat {
        ptr: ptr + (column * std::mem::size_of::<f32>()) as u64,
        dtype: DType::F32,
        ld,
    }
}

/// Forward pass (targets checked by the caller); keeps the scored rows' logits of as many
/// vocabulary chunks as `keep_logits_bytes` holds.
pub fn forward(
    backend: &Arc<CudaBackend>,
    x: &Tensor,
    w: &Tensor,
    targets: &[i32],
    chunk: usize,
    keep_logits_bytes: usize,
) -> Result<CrossEntropy> {
    const OP: &str = "linear_cross_entropy_forward";
    let dtype = same_device_and_dtype(OP, backend, &[("x", x), ("head weight", w)])?;
    let device = Device::Cuda(backend.clone());
    let (t, d, v) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    let scored: Vec<i32> = (0..t)
        .filter(|&i| targets[i] >= 0)
        .map(|i| to_i32(OP, "token index", i))
        .collect::<Result<_>>()?;
    let target_sel: Vec<i32> = scored.iter().map(|&i| targets[i as usize]).collect();
    let n = scored.len();
    let rows = DeviceRows {
        count: n,
        index: upload(backend, &scored)?,
        target: upload(backend, &target_sel)?,
    };
    let mut logprob = Tensor::zeros(&device, DType::F32, &[t])?;
    let mut lse = Tensor::zeros(&device, DType::F32, &[n])?;
    if n == 0 || v == 0 {
        return Ok(CrossEntropy::new_cuda(0.0, (logprob, lse, None), t, rows));
    }
    let xsel = gather(backend, OP, x, &rows)?;
    let kept_cols = kept_columns(n, v, chunk, keep_logits_bytes);
    let mut kept = match kept_cols {
        0 => None,
        k => Some(Tensor::zeros(&device, DType::F32, &[n, k])?),
    };
    let scratch_len = if kept_cols < v { n * chunk.min(v) } else { 1 };
    let mut scratch = workspace::<f32>(backend, scratch_len)?;
    let mut row_max = upload(backend, &vec![f32::NEG_INFINITY; n])?;
    let mut row_sum = workspace::<f32>(backend, n)?;
    let mut target_logit = workspace::<f32>(backend, n)?;
    let mut loss_sum = workspace::<f64>(backend, 1)?;
    let source = &kernels_cu::TRANSFORMER_CROSS_ENTROPY;
    let lse_update = backend.function(source, "ce_lse_update")?;
    let finish = backend.function(source, "ce_finish")?;
    {
        let mut a = Args::new(backend);
        let (xp, wp) = (a.read(OP, "x", &xsel)?, a.read(OP, "head weight", w)?);
        let (ip, tp) = (a.slice(&rows.index), a.slice(&rows.target));
        let scratch_p = a.slice_mut(&mut scratch);
        let kept_p = match kept.as_mut() {
            Some(k) => a.write(OP, "kept logits", k)?,
            None => 0,
        };
        let (mp, sp, lp) = (
            a.slice_mut(&mut row_max),
            a.slice_mut(&mut row_sum),
            a.slice_mut(&mut target_logit),
        );
        let xm = Mat {
            ptr: xp,
            dtype,
            ld: d,
        };
        for c0 in (0..v).step_by(chunk) {
            let cw = chunk.min(v - c0);
            let w_chunk = Mat {
                ptr: wp + (c0 * d) as u64 * elem_bytes(dtype),
                dtype,
                ld: d,
            };
            // A kept chunk goes to its columns of the kept logits, the others to the scratch.
            let zm = if c0 < kept_cols {
                f32_at(kept_p, c0, kept_cols)
            } else {
                f32_at(scratch_p, 0, cw)
            };
            gemm(
                backend,
                (n, cw, d),
                xm,
                Trans::N,
                w_chunk,
                Trans::T,
                zm,
                0.0,
            )?;
            let (ld_i, cw_i, c0_i) = (
                to_i32(OP, "kept columns", zm.ld)?,
                to_i32(OP, "chunk", cw)?,
                to_i32(OP, "vocabulary", c0)?,
            );
            let mut b = backend.stream().launch_builder(&lse_update);
            b.arg(&zm.ptr)
                .arg(&ld_i)
                .arg(&cw_i)
                .arg(&c0_i)
                .arg(&tp)
                .arg(&mp)
                .arg(&sp)
                .arg(&lp);
            // SAFETY: matches ce_lse_update(const float*, int, int, int, const int*, float* x3);
            // z holds n rows of ld floats (cw of them used), the state n each; one block per
            // scored row.
            unsafe { b.launch(blocks(OP, (n, 1), 256)?) }?;
        }
        let (lse_p, logprob_p) = (
            a.write(OP, "lse", &mut lse)?,
            a.write(OP, "log p", &mut logprob)?,
        );
        let loss_p = a.slice_mut(&mut loss_sum);
        let n_i = to_i32(OP, "scored tokens", n)?;
        let mut b = backend.stream().launch_builder(&finish);
        b.arg(&mp)
            .arg(&sp)
            .arg(&lp)
            .arg(&ip)
            .arg(&n_i)
            .arg(&lse_p)
            .arg(&logprob_p)
            .arg(&loss_p);
        // SAFETY: matches ce_finish(const float* x3, const int*, int, float*, float*, double*);
        // the state, index and lse hold n elements, logprob t, loss 1; one block.
        unsafe { b.launch(blocks(OP, (1, 1), 256)?) }?;
    }
    let loss = backend.stream().clone_dtoh(&loss_sum)?;
    let loss = loss.first().copied().unwrap_or(0.0);
    Ok(CrossEntropy::new_cuda(loss, (logprob, lse, kept), t, rows))
}

/// Backward pass of `scale · Σ −log p` from the forward's device state (lse, kept logits, the
/// scored rows); returns dx and adds into `dw` (f32 or x's dtype). Kept logits become dz in
/// place (f32) or feed the bf16 dz of their chunk; the other chunks are recomputed.
pub fn backward(
    backend: &Arc<CudaBackend>,
    x: &Tensor,
    w: &Tensor,
    (lse, kept, rows): (Tensor, Option<Tensor>, DeviceRows),
    scale: f32,
    chunk: usize,
    dw: Option<&mut Tensor>,
) -> Result<Tensor> {
    const OP: &str = "linear_cross_entropy_backward";
    let dtype = same_device_and_dtype(OP, backend, &[("x", x), ("head weight", w)])?;
    let device = Device::Cuda(backend.clone());
    let (t, d, v) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    let n = rows.count;
    lse.expect_shape(OP, "saved lse", &[n])?;
    lse.expect_dtype(OP, "saved lse", DType::F32)?;
    on_device(OP, "saved lse", &lse, &device)?;
    let mut kept = kept;
    let kept_cols = match kept.as_ref() {
        Some(k) => {
            let cols = k.shape().get(1).copied().unwrap_or(0);
            k.expect_shape(OP, "kept logits", &[n, cols])?;
            k.expect_dtype(OP, "kept logits", DType::F32)?;
            on_device(OP, "kept logits", k, &device)?;
            cols
        }
        None => 0,
    };
    if let Some(dw) = dw.as_deref() {
        dw.expect_shape(OP, "dW", &[v, d])?;
        on_device(OP, "dW", dw, &device)?;
        if dw.dtype() != DType::F32 && dw.dtype() != dtype {
            return Err(KernelError::Invalid {
                op: OP,
                message: format!("dW must be f32 or {dtype} like x, found {dw:?}"),
            });
        }
    }
    let mut dx = Tensor::zeros(&device, dtype, &[t, d])?;
    if n == 0 || v == 0 || d == 0 {
        return Ok(dx);
    }
    let xsel = gather(backend, OP, x, &rows)?;
    let cmax = chunk.min(v);
    let mut scratch = workspace::<f32>(backend, if kept_cols < v { n * cmax } else { 1 })?;
    // bf16 operands need dlogits in bf16 for the next GEMMs; f32 writes them over z.
    let mut dz_half = Tensor::zeros(
        &device,
        dtype,
        &[if dtype == DType::F32 { 1 } else { n * cmax }],
    )?;
    let mut dxsel = workspace::<f32>(backend, n * d)?;
    let source = &kernels_cu::TRANSFORMER_CROSS_ENTROPY;
    let dlogits = backend.function(source, &format!("ce_dlogits_{}", suffix(dtype)))?;
    let scatter = backend.function(source, &format!("ce_scatter_{}", suffix(dtype)))?;
    let dw_dtype = dw.as_deref().map(|t| t.dtype());
    let mut a = Args::new(backend);
    let (xp, wp) = (a.read(OP, "x", &xsel)?, a.read(OP, "head weight", w)?);
    let (tp, lp, ip) = (
        a.slice(&rows.target),
        a.read(OP, "saved lse", &lse)?,
        a.slice(&rows.index),
    );
    let scratch_p = a.slice_mut(&mut scratch);
    let kept_p = match kept.as_mut() {
        Some(k) => a.write(OP, "kept logits", k)?,
        None => 0,
    };
    let half_p = match dtype {
        DType::F32 => None,
        DType::BF16 => Some(a.write(OP, "dlogits", &mut dz_half)?),
    };
    let dxp = a.slice_mut(&mut dxsel);
    let dwp = match dw {
        Some(t) => Some(a.write(OP, "dW", t)?),
        None => None,
    };
    let xm = Mat {
        ptr: xp,
        dtype,
        ld: d,
    };
    for c0 in (0..v).step_by(chunk) {
        let cw = chunk.min(v - c0);
        let w_chunk = Mat {
            ptr: wp + (c0 * d) as u64 * elem_bytes(dtype),
            dtype,
            ld: d,
        };
        let zm = if c0 < kept_cols {
            f32_at(kept_p, c0, kept_cols)
        } else {
            let zm = f32_at(scratch_p, 0, cw);
            gemm(
                backend,
                (n, cw, d),
                xm,
                Trans::N,
                w_chunk,
                Trans::T,
                zm,
                0.0,
            )?;
            zm
        };
        let dzm = match half_p {
            None => zm,
            Some(ptr) => Mat { ptr, dtype, ld: cw },
        };
        let (ldz_i, cw_i, c0_i, lddz_i, len) = (
            to_i32(OP, "kept columns", zm.ld)?,
            to_i32(OP, "chunk", cw)?,
            to_i32(OP, "vocabulary", c0)?,
            to_i32(OP, "chunk", dzm.ld)?,
            (n * cw) as i64,
        );
        let mut b = backend.stream().launch_builder(&dlogits);
        b.arg(&zm.ptr)
            .arg(&ldz_i)
            .arg(&cw_i)
            .arg(&c0_i)
            .arg(&tp)
            .arg(&lp)
            .arg(&scale)
            .arg(&dzm.ptr)
            .arg(&lddz_i)
            .arg(&len);
        // SAFETY: matches ce_dlogits_*(const float*, int, int, int, const int*, const float*,
        // float, DZ*, int, long long); z and dz hold n rows of their strides (cw used); for f32
        // dz is z itself: each thread reads and writes only its own element.
        unsafe { b.launch(grid_stride(n * cw)) }?;
        let dxm = Mat {
            ptr: dxp,
            dtype: DType::F32,
            ld: d,
        };
        // dxsel[n, d] += dz[n, cw] · W_c[cw, d]
        gemm(
            backend,
            (n, d, cw),
            dzm,
            Trans::N,
            w_chunk,
            Trans::N,
            dxm,
            1.0,
        )?;
        if let (Some(dwp), Some(dw_dtype)) = (dwp, dw_dtype) {
            let dwm = Mat {
                ptr: dwp + (c0 * d) as u64 * elem_bytes(dw_dtype),
                dtype: dw_dtype,
                ld: d,
            };
            // dW_c[cw, d] += dzᵀ[cw, n] · xsel[n, d]
            gemm(backend, (cw, d, n), dzm, Trans::T, xm, Trans::N, dwm, 1.0)?;
        }
    }
    let dxo = a.write(OP, "dx", &mut dx)?;
    let (d_i, len) = (to_i32(OP, "d", d)?, (n * d) as i64);
    let mut b = backend.stream().launch_builder(&scatter);
    b.arg(&dxp).arg(&ip).arg(&dxo).arg(&d_i).arg(&len);
    // SAFETY: matches ce_scatter_*(const float*, const int*, T*, int, long long); every scored
    // index is a row of dx.
    unsafe { b.launch(grid_stride(n * d)) }?;
    drop(a);
    Ok(dx)
}
