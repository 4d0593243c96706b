//! Dense matrix products: C = alpha · op(A) · op(B) + beta · C, row-major, op = identity or
//! transpose. The CPU uses the `gemm` crate; CUDA uses cuBLAS (the launcher lives in
//! `cuda_matmul` below). `beta = 1` lets a caller accumulate on top of what C already holds, which
//! is how the FLix layer adds x Wᵀ on top of the adapter update without re-reading Y.

use crate::error::{KernelError, Result};
use crate::{Device, Storage, Tensor};

/// Which operand is used transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    N,
    T,
}

/// Shape of one side: `op(X)` is `rows × cols`.
fn op_shape(shape: &[usize], trans: Trans) -> (usize, usize) {
    match trans {
        Trans::N => (shape[0], shape[1]),
        Trans::T => (shape[1], shape[0]),
    }
}

/// C[m, n] = alpha · op(A) · op(B) + beta · C for 2-D tensors on one device.
pub fn matmul(
    a: &Tensor,
    trans_a: Trans,
    b: &Tensor,
    trans_b: Trans,
    c: &mut Tensor,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    let _profile = crate::profile::scope("matmul", a.device());
    const OP: &str = "matmul";
    for (what, t) in [("A", a), ("B", b), ("C", &*c)] {
        if t.shape().len() != 2 {
            return Err(KernelError::Invalid {
                op: OP,
                message: format!("{what} must be 2-D, found shape {:?}", t.shape()),
            });
        }
    }
    let (m, k) = op_shape(a.shape(), trans_a);
    let (kb, n) = op_shape(b.shape(), trans_b);
    if k != kb {
        return Err(KernelError::Invalid {
            op: OP,
            message: format!(
                "inner dimensions differ: op(A) is {m}x{k} (A {:?}), op(B) is {kb}x{n} (B {:?})",
                a.shape(),
                b.shape()
            ),
        });
    }
    c.expect_shape(OP, "C", &[m, n])?;
    match c.device().clone() {
        Device::Cpu => {
            let (lda, ldb) = (a.shape()[1], b.shape()[1]);
            let a = a.cpu_data(OP)?;
            let b = b.cpu_data(OP)?;
            let c = c.cpu_data_mut(OP)?;
            gemm_f32(m, n, k, a, lda, trans_a, b, ldb, trans_b, c, n, alpha, beta);
            Ok(())
        }
        Device::Cuda(backend) => {
            cuda_matmul(&backend, (m, n, k), a, trans_a, b, trans_b, c, alpha, beta)
        }
    }
}

/// cuBLAS is column-major; a row-major `[r, c]` buffer is its transpose seen column-major. So
/// row-major C = op(A) op(B) is computed as the column-major Cᵀ = op(B)ᵀ op(A)ᵀ: the operands
/// swap places, each keeps its own transpose flag, and every leading dimension is the row length
/// of the row-major buffer. f32 uses `cublasSgemm`; bf16 `cublasGemmEx` with f32 compute
/// (`CUBLAS_COMPUTE_32F`) and f32 alpha and beta.
#[allow(clippy::too_many_arguments)]
fn cuda_matmul(
    backend: &crate::cuda::CudaBackend,
    (m, n, k): (usize, usize, usize),
    a: &Tensor,
    trans_a: Trans,
    b: &Tensor,
    trans_b: Trans,
    c: &mut Tensor,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    use cudarc::cublas::{sys, Gemm, GemmConfig};
    use cudarc::driver::{DevicePtr, DevicePtrMut};

    const OP: &str = "matmul";
    for (what, t) in [("A", a), ("B", b)] {
        if !t.device().same(c.device()) {
            return Err(KernelError::WrongDevice {
                op: OP,
                what,
                expected: c.device().to_string(),
                found: t.device().to_string(),
            });
        }
        t.expect_dtype(OP, what, c.dtype())?;
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let int = |what: &str, v: usize| {
        i32::try_from(v).map_err(|_| KernelError::Invalid {
            op: OP,
            message: format!("{what} = {v} is more than cuBLAS's int holds"),
        })
    };
    let op = |t: Trans| match t {
        Trans::N => sys::cublasOperation_t::CUBLAS_OP_N,
        Trans::T => sys::cublasOperation_t::CUBLAS_OP_T,
    };
    let (transa, transb) = (op(trans_b), op(trans_a));
    let (mm, nn, kk) = (int("n", n)?, int("m", m)?, int("k", k)?);
    // With k = 0 cuBLAS scales C by beta; a leading dimension must still be >= 1.
    let lda = int("B row length", b.shape()[1].max(1))?;
    let ldb = int("A row length", a.shape()[1].max(1))?;
    let ldc = mm;
    let blas = backend.blas();
    let mismatch = KernelError::Invalid {
        op: OP,
        message: format!("A, B and C must be CUDA tensors of one dtype, found {a:?}, {b:?}, {c:?}"),
    };
    match (a.storage(), b.storage(), c.storage_mut()) {
        (Storage::CudaF32(a), Storage::CudaF32(b), Storage::CudaF32(c)) => {
            let cfg = GemmConfig {
                transa,
                transb,
                m: mm,
                n: nn,
                k: kk,
                alpha,
                lda,
                ldb,
                beta,
                ldc,
            };
            // SAFETY: shapes were checked above: op(B)ᵀ is n x k with leading dimension
            // B.shape[1], op(A)ᵀ is k x m with A.shape[1], C is n x m column-major with n.
            unsafe { blas.gemm(cfg, b, a, c) }?;
        }
        (Storage::CudaBf16(a), Storage::CudaBf16(b), Storage::CudaBf16(c)) => {
            let stream = backend.stream();
            let (b_ptr, _rb) = b.device_ptr(stream);
            let (a_ptr, _ra) = a.device_ptr(stream);
            let (c_ptr, _rc) = c.device_ptr_mut(stream);
            // SAFETY: as for f32; the scalars are f32 as CUBLAS_COMPUTE_32F requires, and the
            // pointers stay valid while the guards (_ra, _rb, _rc) live, past the enqueue.
            unsafe {
                cudarc::cublas::result::gemm_ex(
                    *blas.handle(),
                    transa,
                    transb,
                    mm,
                    nn,
                    kk,
                    (&alpha) as *const f32 as *const _,
                    b_ptr as *const _,
                    sys::cudaDataType_t::CUDA_R_16BF,
                    lda,
                    a_ptr as *const _,
                    sys::cudaDataType_t::CUDA_R_16BF,
                    ldb,
                    (&beta) as *const f32 as *const _,
                    c_ptr as *mut _,
                    sys::cudaDataType_t::CUDA_R_16BF,
                    ldc,
                    sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }?;
        }
        _ => return Err(mismatch),
    }
    Ok(())
}

/// Slice-level CPU GEMM: `c[i * ldc + j] = alpha · Σ_p op(A)[i, p] op(B)[p, j] + beta · c[..]`,
/// all row-major with leading dimensions `lda`, `ldb`, `ldc`. Used by ops that multiply
/// sub-blocks of larger buffers (the FLix CPU path works per segment).
///
/// # Panics
/// When a slice is too short for the given shape and leading dimension: that is a bug in the
/// calling op, which checks user-visible shapes before it gets here.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    trans_a: Trans,
    b: &[f32],
    ldb: usize,
    trans_b: Trans,
    c: &mut [f32],
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    let needed = |rows: usize, cols: usize, ld: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * ld + cols
        }
    };
    let (a_rows, a_cols) = match trans_a {
        Trans::N => (m, k),
        Trans::T => (k, m),
    };
    let (b_rows, b_cols) = match trans_b {
        Trans::N => (k, n),
        Trans::T => (n, k),
    };
    assert!(
        a.len() >= needed(a_rows, a_cols, lda),
        "gemm_f32: A too short"
    );
    assert!(
        b.len() >= needed(b_rows, b_cols, ldb),
        "gemm_f32: B too short"
    );
    assert!(c.len() >= needed(m, n, ldc), "gemm_f32: C too short");
    if k == 0 {
        for i in 0..m {
            for v in &mut c[i * ldc..i * ldc + n] {
                *v *= beta;
            }
        }
        return;
    }
    // (row stride, column stride) of op(X) inside its buffer.
    let (a_rs, a_cs) = match trans_a {
        Trans::N => (lda as isize, 1),
        Trans::T => (1, lda as isize),
    };
    let (b_rs, b_cs) = match trans_b {
        Trans::N => (ldb as isize, 1),
        Trans::T => (1, ldb as isize),
    };
    let work = m * n * k;
    let parallelism = if work >= 1 << 18 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above guarantee every index gemm touches lies inside its slice; `c` is
    // borrowed mutably, so it does not alias `a` or `b`. gemm computes
    // dst := alpha_dst · dst + beta_prod · lhs · rhs, so our beta goes first.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            beta != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain triple loop in f64: the oracle.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        ta: Trans,
        b: &[f32],
        tb: Trans,
        c: &[f32],
        alpha: f32,
        beta: f32,
    ) -> Vec<f32> {
        let at = |i: usize, p: usize| match ta {
            Trans::N => a[i * k + p],
            Trans::T => a[p * m + i],
        } as f64;
        let bt = |p: usize, j: usize| match tb {
            Trans::N => b[p * n + j],
            Trans::T => b[j * k + p],
        } as f64;
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                out[i * n + j] = (alpha as f64 * s + beta as f64 * c[i * n + j] as f64) as f32;
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_the_triple_loop_for_every_transpose_and_beta() {
        let (m, n, k) = (7, 13, 9);
        for (ta, tb) in [
            (Trans::N, Trans::N),
            (Trans::N, Trans::T),
            (Trans::T, Trans::N),
            (Trans::T, Trans::T),
        ] {
            for beta in [0.0, 1.0, 0.5] {
                let a = pseudo_random(m * k, 1);
                let b = pseudo_random(k * n, 2);
                let c0 = pseudo_random(m * n, 3);
                let a_shape = if ta == Trans::N { [m, k] } else { [k, m] };
                let b_shape = if tb == Trans::N { [k, n] } else { [n, k] };
                let at = Tensor::cpu(&a_shape, a.clone()).unwrap();
                let bt = Tensor::cpu(&b_shape, b.clone()).unwrap();
                let mut ct = Tensor::cpu(&[m, n], c0.clone()).unwrap();
                matmul(&at, ta, &bt, tb, &mut ct, 0.75, beta).unwrap();
                let want = reference(m, n, k, &a, ta, &b, tb, &c0, 0.75, beta);
                let got = ct.to_f32_vec().unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-5 + 1e-5 * w.abs(),
                        "{ta:?}{tb:?} beta={beta}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// CUDA device 0, or None after saying why; with FLIX_REQUIRE_GPU=1 a missing GPU fails.
    fn cuda_or_skip(test: &str) -> Option<Device> {
        match Device::cuda(0) {
            Ok(device) => Some(device),
            Err(e) => {
                assert!(
                    std::env::var("FLIX_REQUIRE_GPU").as_deref() != Ok("1"),
                    "FLIX_REQUIRE_GPU=1 but CUDA is unavailable: {e}"
                );
                eprintln!("SKIPPED {test}: {e}");
                None
            }
        }
    }

    #[test]
    fn cublas_matches_the_triple_loop_for_every_transpose_dtype_and_beta() {
        let Some(device) = cuda_or_skip("cublas_matches_the_triple_loop") else {
            return;
        };
        let (m, n, k) = (37, 70, 19);
        for dtype in [crate::DType::F32, crate::DType::BF16] {
            // bf16 tensors hold rounded values: the oracle gets the same rounded inputs, and the
            // output is rounded once more (8 significant bits).
            let round = |v: Vec<f32>| match dtype {
                crate::DType::F32 => v,
                crate::DType::BF16 => v
                    .into_iter()
                    .map(|x| half::bf16::from_f32(x).to_f32())
                    .collect(),
            };
            let (rel, abs) = match dtype {
                crate::DType::F32 => (1e-5, 1e-5),
                crate::DType::BF16 => (1e-2, 1e-2),
            };
            for (ta, tb) in [
                (Trans::N, Trans::N),
                (Trans::N, Trans::T),
                (Trans::T, Trans::N),
                (Trans::T, Trans::T),
            ] {
                for beta in [0.0, 1.0, 0.5] {
                    let a = round(pseudo_random(m * k, 11));
                    let b = round(pseudo_random(k * n, 12));
                    let c0 = round(pseudo_random(m * n, 13));
                    let a_shape = if ta == Trans::N { [m, k] } else { [k, m] };
                    let b_shape = if tb == Trans::N { [k, n] } else { [n, k] };
                    let at = Tensor::from_f32(&device, dtype, &a_shape, &a).unwrap();
                    let bt = Tensor::from_f32(&device, dtype, &b_shape, &b).unwrap();
                    let mut ct = Tensor::from_f32(&device, dtype, &[m, n], &c0).unwrap();
                    matmul(&at, ta, &bt, tb, &mut ct, 0.75, beta).unwrap();
                    let want = reference(m, n, k, &a, ta, &b, tb, &c0, 0.75, beta);
                    let got = ct.to_f32_vec().unwrap();
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= abs + rel * w.abs(),
                            "{dtype} {ta:?}{tb:?} beta={beta} element {i}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn mismatched_inner_dimensions_name_both_shapes() {
        let a = Tensor::cpu(&[2, 3], vec![0.0; 6]).unwrap();
        let b = Tensor::cpu(&[4, 5], vec![0.0; 20]).unwrap();
        let mut c = Tensor::cpu(&[2, 5], vec![0.0; 10]).unwrap();
        let err = matmul(&a, Trans::N, &b, Trans::N, &mut c, 1.0, 0.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[2, 3]") && err.contains("[4, 5]"), "{err}");
    }
}
