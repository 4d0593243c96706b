//! Launchers of the chunked linear cross-entropy on CUDA: cuBLAS for each vocabulary chunk's
//! logits (f32 output, also for bf16 operands) and the kernels of
//! `transformer_cross_entropy.cu` for the online log-sum-exp and dlogits. Only the scored rows
//! are gathered; activation memory is O(n · chunk) as on the CPU.

use std::sync::Arc;

use cudarc::cublas::sys;
use cudarc::driver::{CudaSlice, PushKernelArg};

use super::{blocks, elem_bytes, grid_stride, on_device, same_device_and_dtype, suffix};
use super::{to_i32, upload, workspace, Args};
use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use crate::ops::cross_entropy::CrossEntropy;
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

/// The scored rows of x, packed [n, d], and the scored indices on the device.
fn gather(
    backend: &Arc<CudaBackend>,
    op: &'static str,
    x: &Tensor,
    scored: &[usize],
) -> Result<(Tensor, CudaSlice<i32>)> {
    let d = x.shape()[1];
    let idx: Vec<i32> = scored
        .iter()
        .map(|&i| to_i32(op, "token index", i))
        .collect::<Result<_>>()?;
    let idx_dev = upload(backend, &idx)?;
    let mut xsel = Tensor::zeros(x.device(), x.dtype(), &[scored.len(), d])?;
    let n = scored.len() * d;
    if n > 0 {
        let f = backend.function(
            &kernels_cu::TRANSFORMER_CROSS_ENTROPY,
            &format!("ce_gather_{}", suffix(x.dtype())),
        )?;
        let mut a = Args::new(backend);
        let (xp, ip, sp) = (
            a.read(op, "x", x)?,
            a.slice(&idx_dev),
            a.write(op, "xsel", &mut xsel)?,
        );
        let (d_i, len) = (to_i32(op, "d", d)?, n as i64);
        let mut b = backend.stream().launch_builder(&f);
        b.arg(&xp).arg(&ip).arg(&sp).arg(&d_i).arg(&len);
        // SAFETY: matches ce_gather_*(const T*, const int*, T*, int, long long); every scored
        // index is a row of x.
        unsafe { b.launch(grid_stride(n)) }?;
    }
    Ok((xsel, idx_dev))
}

/// Forward pass; `scored` are the tokens with a target (checked by the caller).
pub fn forward(
    backend: &Arc<CudaBackend>,
    x: &Tensor,
    w: &Tensor,
    targets: &[i32],
    chunk: usize,
) -> Result<CrossEntropy> {
    const OP: &str = "linear_cross_entropy_forward";
    let dtype = same_device_and_dtype(OP, backend, &[("x", x), ("head weight", w)])?;
    let (t, d, v) = (x.shape()[0], x.shape()[1], w.shape()[0]);
    let scored: Vec<usize> = (0..t).filter(|&i| targets[i] >= 0).collect();
    let n = scored.len();
    let mut logprob = vec![0.0f32; t];
    if n == 0 || v == 0 {
        return Ok(CrossEntropy {
            loss_sum: 0.0,
            count: n,
            logprob,
            lse: vec![f32::NEG_INFINITY; n],
            scored,
        });
    }
    let target_sel: Vec<i32> = scored.iter().map(|&i| targets[i]).collect();
    let (xsel, _idx) = gather(backend, OP, x, &scored)?;
    let target_dev = upload(backend, &target_sel)?;
    let cmax = chunk.min(v);
    let mut z = workspace::<f32>(backend, n * cmax)?;
    let mut row_max = upload(backend, &vec![f32::NEG_INFINITY; n])?;
    let mut row_sum = workspace::<f32>(backend, n)?;
    let mut target_logit = workspace::<f32>(backend, n)?;
    let lse_update = backend.function(&kernels_cu::TRANSFORMER_CROSS_ENTROPY, "ce_lse_update")?;
    {
        let mut a = Args::new(backend);
        let (xp, wp) = (a.read(OP, "x", &xsel)?, a.read(OP, "head weight", w)?);
        let tp = a.slice(&target_dev);
        let zp = a.slice_mut(&mut z);
        let (mp, sp, lp) = (
            a.slice_mut(&mut row_max),
            a.slice_mut(&mut row_sum),
            a.slice_mut(&mut target_logit),
        );
        for c0 in (0..v).step_by(chunk) {
            let cw = chunk.min(v - c0);
            let w_chunk = Mat {
                ptr: wp + (c0 * d) as u64 * elem_bytes(dtype),
                dtype,
                ld: d,
            };
            let xm = Mat {
                ptr: xp,
                dtype,
                ld: d,
            };
            let zm = Mat {
                ptr: zp,
                dtype: DType::F32,
                ld: cw,
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
            let (cw_i, c0_i) = (to_i32(OP, "chunk", cw)?, to_i32(OP, "vocabulary", c0)?);
            let mut b = backend.stream().launch_builder(&lse_update);
            b.arg(&zp)
                .arg(&cw_i)
                .arg(&c0_i)
                .arg(&tp)
                .arg(&mp)
                .arg(&sp)
                .arg(&lp);
            // SAFETY: matches ce_lse_update(const float*, int, int, const int*, float* x3);
            // z holds n · cw floats, the state n each; one block per scored row.
            unsafe { b.launch(blocks(OP, (n, 1), 256)?) }?;
        }
    }
    let stream = backend.stream();
    let (max, sum, tl) = (
        stream.clone_dtoh(&row_max)?,
        stream.clone_dtoh(&row_sum)?,
        stream.clone_dtoh(&target_logit)?,
    );
    let lse: Vec<f32> = max
        .iter()
        .zip(&sum)
        .take(n)
        .map(|(m, s)| m + s.ln())
        .collect();
    let mut loss_sum = 0.0f64;
    for (r, &i) in scored.iter().enumerate() {
        logprob[i] = tl[r] - lse[r];
        loss_sum -= logprob[i] as f64;
    }
    Ok(CrossEntropy {
        loss_sum,
        count: n,
        logprob,
        lse,
        scored,
    })
}

/// Backward pass of `scale · Σ −log p`; returns dx and adds into `dw` (f32 or x's dtype).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    backend: &Arc<CudaBackend>,
    x: &Tensor,
    w: &Tensor,
    targets: &[i32],
    fwd: &CrossEntropy,
    scale: f32,
    chunk: usize,
    dw: Option<&mut Tensor>,
) -> Result<Tensor> {
    const OP: &str = "linear_cross_entropy_backward";
    let dtype = same_device_and_dtype(OP, backend, &[("x", x), ("head weight", w)])?;
    let device = Device::Cuda(backend.clone());
    let (t, d, v) = (x.shape()[0], x.shape()[1], w.shape()[0]);
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
    let n = fwd.scored.len();
    if n == 0 || v == 0 || d == 0 {
        return Ok(dx);
    }
    let target_sel: Vec<i32> = fwd.scored.iter().map(|&i| targets[i]).collect();
    let (xsel, idx_dev) = gather(backend, OP, x, &fwd.scored)?;
    let target_dev = upload(backend, &target_sel)?;
    let lse_dev = upload(backend, &fwd.lse)?;
    let cmax = chunk.min(v);
    let mut z = workspace::<f32>(backend, n * cmax)?;
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
    let (tp, lp, ip) = (a.slice(&target_dev), a.slice(&lse_dev), a.slice(&idx_dev));
    let zp = a.slice_mut(&mut z);
    let dzp = match dtype {
        DType::F32 => zp,
        DType::BF16 => a.write(OP, "dlogits", &mut dz_half)?,
    };
    let dxp = a.slice_mut(&mut dxsel);
    let dwp = match dw {
        Some(t) => Some(a.write(OP, "dW", t)?),
        None => None,
    };
    for c0 in (0..v).step_by(chunk) {
        let cw = chunk.min(v - c0);
        let w_chunk = Mat {
            ptr: wp + (c0 * d) as u64 * elem_bytes(dtype),
            dtype,
            ld: d,
        };
        let xm = Mat {
            ptr: xp,
            dtype,
            ld: d,
        };
        let zm = Mat {
            ptr: zp,
            dtype: DType::F32,
            ld: cw,
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
        let (cw_i, c0_i, len) = (
            to_i32(OP, "chunk", cw)?,
            to_i32(OP, "vocabulary", c0)?,
            (n * cw) as i64,
        );
        let mut b = backend.stream().launch_builder(&dlogits);
        b.arg(&zp)
            .arg(&cw_i)
            .arg(&c0_i)
            .arg(&tp)
            .arg(&lp)
            .arg(&scale)
            .arg(&dzp)
            .arg(&len);
        // SAFETY: matches ce_dlogits_*(const float*, int, int, const int*, const float*, float,
        // DZ*, long long); z and dz hold n · cw elements (dz may alias z for f32: each thread
        // reads and writes only its own element).
        unsafe { b.launch(grid_stride(n * cw)) }?;
        let dzm = Mat {
            ptr: dzp,
            dtype,
            ld: cw,
        };
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
