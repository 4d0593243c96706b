//! The small element-wise ops the model needs between the big ones, so that no model code reads
//! device data on the host: `add_assign` (the residual stream), `scale` (gradient clipping),
//! `sum_rows_into` (bias gradients) and `duplicate` (a copy of an activation). Each has a plain
//! CPU loop and a CUDA launcher of `kernels-cu/elementwise.cu` (f32 arithmetic for f32 and bf16).

use cudarc::driver::PushKernelArg;

use crate::cuda::launch::grid_stride;

use crate::error::{KernelError, Result};
use crate::{Device, Storage, Tensor};

/// Checks that `b` has `a`'s device and dtype.
fn same_device_and_dtype(
    op: &'static str,
    what: &'static str,
    a: &Tensor,
    b: &Tensor,
) -> Result<()> {
    if !a.device().same(b.device()) {
        return Err(KernelError::WrongDevice {
            op,
            what,
            expected: a.device().to_string(),
            found: b.device().to_string(),
        });
    }
    b.expect_dtype(op, what, a.dtype())
}

fn mismatch(op: &'static str, a: &Tensor, b: &Tensor) -> KernelError {
    KernelError::Invalid {
        op,
        message: format!("storage and device disagree: {a:?}, {b:?}"),
    }
}

/// `a += b`, same shape, device and dtype.
pub fn add_assign(a: &mut Tensor, b: &Tensor) -> Result<()> {
    let _profile = crate::profile::scope("add_assign", b.device());
    const OP: &str = "add_assign";
    b.expect_shape(OP, "b", a.shape())?;
    same_device_and_dtype(OP, "b", a, b)?;
    let n = a.numel();
    match a.device().clone() {
        Device::Cpu => {
            let b = b.cpu_data(OP)?;
            for (x, y) in a.cpu_data_mut(OP)?.iter_mut().zip(b) {
                *x += y;
            }
            Ok(())
        }
        Device::Cuda(backend) => {
            if n == 0 {
                return Ok(());
            }
            let (len, stream) = (n as i64, backend.stream());
            let err = mismatch(OP, a, b);
            match (a.storage_mut(), b.storage()) {
                (Storage::CudaF32(x), Storage::CudaF32(y)) => {
                    let f = backend.function(&kernels_cu::ELEMENTWISE, "flix_add_f32")?;
                    // SAFETY: matches flix_add_f32(float*, const float*, long long); both hold n.
                    unsafe {
                        stream
                            .launch_builder(&f)
                            .arg(x)
                            .arg(y)
                            .arg(&len)
                            .launch(grid_stride(n))
                    }?;
                }
                (Storage::CudaBf16(x), Storage::CudaBf16(y)) => {
                    let f = backend.function(&kernels_cu::ELEMENTWISE, "flix_add_bf16")?;
                    // SAFETY: matches flix_add_bf16(bf16*, const bf16*, long long); both hold n.
                    unsafe {
                        stream
                            .launch_builder(&f)
                            .arg(x)
                            .arg(y)
                            .arg(&len)
                            .launch(grid_stride(n))
                    }?;
                }
                _ => return Err(err),
            }
            Ok(())
        }
    }
}

/// `x *= alpha`.
pub fn scale(x: &mut Tensor, alpha: f32) -> Result<()> {
    let _profile = crate::profile::scope("scale", x.device());
    const OP: &str = "scale";
    let n = x.numel();
    match x.device().clone() {
        Device::Cpu => {
            for v in x.cpu_data_mut(OP)? {
                *v *= alpha;
            }
            Ok(())
        }
        Device::Cuda(backend) => {
            if n == 0 {
                return Ok(());
            }
            let (len, stream) = (n as i64, backend.stream());
            match x.storage_mut() {
                Storage::CudaF32(s) => {
                    let f = backend.function(&kernels_cu::ELEMENTWISE, "flix_scale_f32")?;
                    // SAFETY: matches flix_scale_f32(float*, float, long long); s holds n.
                    unsafe {
                        stream
                            .launch_builder(&f)
                            .arg(s)
                            .arg(&alpha)
                            .arg(&len)
                            .launch(grid_stride(n))
                    }?;
                }
                Storage::CudaBf16(s) => {
                    let f = backend.function(&kernels_cu::ELEMENTWISE, "flix_scale_bf16")?;
                    // SAFETY: matches flix_scale_bf16(bf16*, float, long long); s holds n.
                    unsafe {
                        stream
                            .launch_builder(&f)
                            .arg(s)
                            .arg(&alpha)
                            .arg(&len)
                            .launch(grid_stride(n))
                    }?;
                }
                Storage::Cpu(_) => {
                    return Err(KernelError::Invalid {
                        op: OP,
                        message: "storage and device disagree".into(),
                    })
                }
            }
            Ok(())
        }
    }
}

/// `db[c] += Σ_r dy[r, c]` for `dy` `[rows, cols]` and `db` `[cols]` (a bias gradient), same
/// device and dtype. Rows are summed in order (f64 on the CPU, f32 on CUDA): deterministic.
pub fn sum_rows_into(db: &mut Tensor, dy: &Tensor) -> Result<()> {
    let _profile = crate::profile::scope("sum_rows_into", dy.device());
    const OP: &str = "sum_rows_into";
    let cols = db.numel();
    db.expect_shape(OP, "db", &[cols])?;
    if dy.shape().len() != 2 || dy.shape()[1] != cols {
        return Err(KernelError::Shape {
            op: OP,
            what: "dY",
            expected: vec![dy.shape().first().copied().unwrap_or(0), cols],
            found: dy.shape().to_vec(),
        });
    }
    same_device_and_dtype(OP, "dY", db, dy)?;
    let rows = dy.shape()[0];
    match db.device().clone() {
        Device::Cpu => {
            let dy = dy.cpu_data(OP)?;
            let mut acc = vec![0.0f64; cols];
            for row in dy.chunks(cols.max(1)) {
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += *v as f64;
                }
            }
            for (d, a) in db.cpu_data_mut(OP)?.iter_mut().zip(acc) {
                *d += a as f32;
            }
            Ok(())
        }
        Device::Cuda(backend) => {
            if cols == 0 || rows == 0 {
                return Ok(());
            }
            let (r, c, stream) = (rows as i64, cols as i64, backend.stream());
            let err = mismatch(OP, db, dy);
            match (db.storage_mut(), dy.storage()) {
                (Storage::CudaF32(d), Storage::CudaF32(y)) => {
                    let f = backend.function(&kernels_cu::ELEMENTWISE, "flix_sum_rows_f32")?;
                    // SAFETY: matches flix_sum_rows_f32(float*, const float*, long long,
                    // long long); d holds cols elements, y rows x cols.
                    unsafe {
                        stream
                            .launch_builder(&f)
                            .arg(d)
                            .arg(y)
                            .arg(&r)
                            .arg(&c)
                            .launch(grid_stride(cols))
                    }?;
                }
                (Storage::CudaBf16(d), Storage::CudaBf16(y)) => {
                    let f = backend.function(&kernels_cu::ELEMENTWISE, "flix_sum_rows_bf16")?;
                    // SAFETY: as above, bf16.
                    unsafe {
                        stream
                            .launch_builder(&f)
                            .arg(d)
                            .arg(y)
                            .arg(&r)
                            .arg(&c)
                            .launch(grid_stride(cols))
                    }?;
                }
                _ => return Err(err),
            }
            Ok(())
        }
    }
}

/// A copy of `t` on its device, same dtype (a device-to-device copy on CUDA), with `t`'s
/// [`stamp`](Tensor::stamp): same content.
pub fn duplicate(t: &Tensor) -> Result<Tensor> {
    let mut out = Tensor::zeros(t.device(), t.dtype(), t.shape())?;
    super::cast(t, &mut out)?;
    out.share_stamp_of(t);
    Ok(out)
}

/// Copies `rows` rows of the 2-D `src`, from row `src_row`, into the 2-D `dst` from row
/// `dst_row`: same device, dtype and row width (a device-to-device copy on CUDA). The key/value
/// cache of generation grows and is gathered this way without leaving the device.
pub fn copy_rows(
    src: &Tensor,
    src_row: usize,
    dst: &mut Tensor,
    dst_row: usize,
    rows: usize,
) -> Result<()> {
    const OP: &str = "copy_rows";
    let (width, src_rows, dst_rows) = match (src.shape(), dst.shape()) {
        (&[sr, w], &[dr, dw]) if w == dw => (w, sr, dr),
        _ => {
            return Err(KernelError::Invalid {
                op: OP,
                message: format!(
                    "source {:?} and destination {:?} must be 2-D with one row width",
                    src.shape(),
                    dst.shape()
                ),
            })
        }
    };
    let fits = |start: usize, len: usize| start.checked_add(rows).is_some_and(|end| end <= len);
    if !fits(src_row, src_rows) || !fits(dst_row, dst_rows) {
        return Err(KernelError::Invalid {
            op: OP,
            message: format!(
                "rows {src_row}..+{rows} of a {src_rows}-row source into rows {dst_row}..+{rows} \
                 of a {dst_rows}-row destination"
            ),
        });
    }
    if !src.device().same(dst.device()) || src.dtype() != dst.dtype() {
        return Err(KernelError::Invalid {
            op: OP,
            message: format!("source {src:?} and destination {dst:?} differ in device or dtype"),
        });
    }
    let (from, to, n) = (src_row * width, dst_row * width, rows * width);
    if n == 0 {
        return Ok(());
    }
    if let Device::Cuda(backend) = src.device().clone() {
        let stream = backend.stream();
        match (src.storage(), dst.storage_mut()) {
            (Storage::CudaF32(s), Storage::CudaF32(d)) => {
                stream.memcpy_dtod(&s.slice(from..from + n), &mut d.slice_mut(to..to + n))?
            }
            (Storage::CudaBf16(s), Storage::CudaBf16(d)) => {
                stream.memcpy_dtod(&s.slice(from..from + n), &mut d.slice_mut(to..to + n))?
            }
            _ => {
                return Err(KernelError::Invalid {
                    op: OP,
                    message: "source and destination storages differ".into(),
                })
            }
        }
        return Ok(());
    }
    let values = src.cpu_data(OP)?[from..from + n].to_vec();
    dst.cpu_data_mut(OP)?[to..to + n].copy_from_slice(&values);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::oracle::pseudo_random;
    use crate::{DType, Tolerance};

    /// CPU always; CUDA in f32 and bf16 when a GPU is there (SKIPPED otherwise, a failure with
    /// FLIX_REQUIRE_GPU=1).
    fn cases(test: &str) -> Vec<(Device, DType)> {
        let mut out = vec![(Device::Cpu, DType::F32)];
        match Device::cuda(0) {
            Ok(d) => {
                out.push((d.clone(), DType::F32));
                out.push((d, DType::BF16));
            }
            Err(e) => {
                assert!(
                    std::env::var("FLIX_REQUIRE_GPU").as_deref() != Ok("1"),
                    "FLIX_REQUIRE_GPU=1 but CUDA is unavailable: {e}"
                );
                eprintln!("SKIPPED the CUDA cases of {test}: {e}");
            }
        }
        out
    }

    /// Values exactly representable in bf16, so every dtype has one expected result.
    fn rounded(n: usize, seed: u64) -> Vec<f32> {
        pseudo_random(n, seed)
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_f32())
            .collect()
    }

    fn assert_near(what: &str, dtype: DType, got: &[f32], want: &[f64]) {
        let tol = match dtype {
            DType::F32 => Tolerance::F32,
            DType::BF16 => Tolerance::BF16,
        };
        if let Err(m) = tol.check(&format!("{what} {dtype}"), got, want) {
            panic!("{m}");
        }
    }

    #[test]
    fn add_scale_and_duplicate_match_a_plain_loop() {
        for (device, dtype) in cases("add_scale_and_duplicate_match_a_plain_loop") {
            for n in [0usize, 1, 257, 3000] {
                let (a0, b0) = (rounded(n, 1), rounded(n, 2));
                let mut a = Tensor::from_f32(&device, dtype, &[n], &a0).unwrap();
                let b = Tensor::from_f32(&device, dtype, &[n], &b0).unwrap();
                let copy = duplicate(&a).unwrap();
                add_assign(&mut a, &b).unwrap();
                let want: Vec<f64> = a0
                    .iter()
                    .zip(&b0)
                    .map(|(x, y)| *x as f64 + *y as f64)
                    .collect();
                assert_near("add", dtype, &a.to_f32_vec().unwrap(), &want);
                // The copy is independent of the tensor it was taken from.
                assert_eq!(copy.to_f32_vec().unwrap(), a0);
                let mut s = copy;
                scale(&mut s, -0.5).unwrap();
                let want: Vec<f64> = a0.iter().map(|x| *x as f64 * -0.5).collect();
                assert_near("scale", dtype, &s.to_f32_vec().unwrap(), &want);
            }
        }
    }

    #[test]
    fn sum_rows_into_matches_a_plain_loop() {
        for (device, dtype) in cases("sum_rows_into_matches_a_plain_loop") {
            for (rows, cols) in [(0usize, 3usize), (1, 1), (37, 5), (300, 130)] {
                let (y0, d0) = (rounded(rows * cols, 3), rounded(cols, 4));
                let dy = Tensor::from_f32(&device, dtype, &[rows, cols], &y0).unwrap();
                let mut db = Tensor::from_f32(&device, dtype, &[cols], &d0).unwrap();
                sum_rows_into(&mut db, &dy).unwrap();
                let want: Vec<f64> = (0..cols)
                    .map(|c| d0[c] as f64 + (0..rows).map(|r| y0[r * cols + c] as f64).sum::<f64>())
                    .collect();
                assert_near("sum_rows", dtype, &db.to_f32_vec().unwrap(), &want);
            }
        }
    }

    #[test]
    fn copy_rows_moves_exactly_the_rows_asked_for_and_checks_ranges() {
        for (device, dtype) in cases("copy_rows") {
            let src_values = rounded(5 * 3, 4);
            let src = Tensor::from_f32(&device, dtype, &[5, 3], &src_values).unwrap();
            let mut dst = Tensor::from_f32(&device, dtype, &[4, 3], &[0.5; 12]).unwrap();
            copy_rows(&src, 1, &mut dst, 2, 2).unwrap();
            let mut want = vec![0.5f32; 12];
            want[6..12].copy_from_slice(&src_values[3..9]);
            assert_eq!(dst.to_f32_vec().unwrap(), want, "{device} {dtype:?}");
            assert!(
                copy_rows(&src, 4, &mut dst, 0, 2).is_err(),
                "past the source"
            );
            assert!(
                copy_rows(&src, 0, &mut dst, 3, 2).is_err(),
                "past the destination"
            );
            assert!(
                copy_rows(&src, usize::MAX, &mut dst, 0, 2).is_err(),
                "overflow"
            );
            let mut wide = Tensor::zeros(&device, dtype, &[4, 4]).unwrap();
            assert!(
                copy_rows(&src, 0, &mut wide, 0, 1).is_err(),
                "row widths differ"
            );
        }
    }

    #[test]
    fn shape_and_dtype_errors_name_the_argument() {
        let mut a = Tensor::cpu(&[2, 3], vec![0.0; 6]).unwrap();
        let b = Tensor::cpu(&[3, 2], vec![0.0; 6]).unwrap();
        let err = add_assign(&mut a, &b).unwrap_err().to_string();
        assert!(
            err.contains("add_assign") && err.contains("[3, 2]"),
            "{err}"
        );
        let mut db = Tensor::cpu(&[4], vec![0.0; 4]).unwrap();
        let err = sum_rows_into(&mut db, &a).unwrap_err().to_string();
        assert!(err.contains("dY") && err.contains("[2, 3]"), "{err}");
    }
}
