//! Launchers of `transformer_embedding.cu`: the gather, and the deterministic backward over a
//! host-built CSR of token positions per used id (no atomics: same inputs, same bits). The ids
//! and the CSR are built and uploaded once per batch ([`CudaTokenIds`]).

use std::sync::Arc;

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::{blocks, grid_stride, same_device_and_dtype, suffix, to_i32, upload, Args};
use crate::batch::TokenIds;
use crate::cuda::CudaBackend;
use crate::error::Result;
use crate::{Device, Tensor};

/// A batch's token ids on the device, with the CSR of token positions per used id that the
/// backward reads.
pub(crate) struct CudaTokenIds {
    ids: CudaSlice<u32>,
    rows: CudaSlice<i32>,
    ptr: CudaSlice<i32>,
    pos: CudaSlice<i32>,
    used_rows: usize,
}

impl CudaTokenIds {
    pub(crate) fn upload(backend: &CudaBackend, ids: &[u32]) -> Result<Self> {
        to_i32("TokenIds::new", "token count", ids.len())?;
        let (rows, ptr, pos) = positions_by_id(ids);
        Ok(Self {
            ids: upload(backend, ids)?,
            rows: upload(backend, &rows)?,
            ptr: upload(backend, &ptr)?,
            pos: upload(backend, &pos)?,
            used_rows: rows.len(),
        })
    }
}

/// out [T, d] = table[ids] (ids checked against the vocabulary by the caller).
pub fn embedding_forward(
    backend: &Arc<CudaBackend>,
    table: &Tensor,
    ids: &TokenIds,
) -> Result<Tensor> {
    const OP: &str = "embedding_forward";
    let dtype = same_device_and_dtype(OP, backend, &[("table", table)])?;
    let device = Device::Cuda(backend.clone());
    let ids_dev = &ids.cuda(OP, &device)?.ids;
    let t = ids.host().len();
    let d = table.shape()[1];
    let mut out = Tensor::zeros(&device, dtype, &[t, d])?;
    let n = t * d;
    if n == 0 {
        return Ok(out);
    }
    let f = backend.function(
        &kernels_cu::TRANSFORMER_EMBEDDING,
        &format!("embedding_forward_{}", suffix(dtype)),
    )?;
    let d_i = to_i32(OP, "embedding width", d)?;
    let mut a = Args::new(backend);
    let (tp, ip, op, len) = (
        a.read(OP, "table", table)?,
        a.slice(ids_dev),
        a.write(OP, "out", &mut out)?,
        n as i64,
    );
    let mut b = backend.stream().launch_builder(&f);
    b.arg(&tp).arg(&ip).arg(&op).arg(&d_i).arg(&len);
    // SAFETY: matches embedding_forward_*(const T*, const unsigned*, T*, int, long long); every
    // id is below the table's row count (checked by the caller), out holds T · d elements.
    unsafe { b.launch(grid_stride(n)) }?;
    drop(a);
    Ok(out)
}

/// The used ids (ascending) and, per used id, its token positions (ascending), as CSR.
pub(crate) fn positions_by_id(ids: &[u32]) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&t| (ids[t], t));
    let (mut rows, mut ptr, mut pos) = (Vec::new(), vec![0i32], Vec::with_capacity(ids.len()));
    for (k, &t) in order.iter().enumerate() {
        if k > 0 && ids[order[k - 1]] != ids[t] {
            ptr.push(k as i32);
        }
        if k == 0 || ids[order[k - 1]] != ids[t] {
            rows.push(ids[t] as i32);
        }
        pos.push(t as i32);
    }
    if !ids.is_empty() {
        ptr.push(ids.len() as i32);
    }
    (rows, ptr, pos)
}

/// dTable[ids[t]] += dOut[t], in token order per row.
pub fn embedding_backward(
    backend: &Arc<CudaBackend>,
    dtable: &mut Tensor,
    ids: &TokenIds,
    dout: &Tensor,
) -> Result<()> {
    const OP: &str = "embedding_backward";
    let dtype = same_device_and_dtype(OP, backend, &[("dTable", dtable), ("dOut", dout)])?;
    let csr = ids.cuda(OP, &Device::Cuda(backend.clone()))?;
    let d = dtable.shape()[1];
    if ids.host().is_empty() || d == 0 {
        return Ok(());
    }
    let d_i = to_i32(OP, "embedding width", d)?;
    let cfg = blocks(OP, (csr.used_rows, d.div_ceil(256)), 256)?;
    let (rows_dev, ptr_dev, pos_dev) = (&csr.rows, &csr.ptr, &csr.pos);
    let f = backend.function(
        &kernels_cu::TRANSFORMER_EMBEDDING,
        &format!("embedding_backward_{}", suffix(dtype)),
    )?;
    let mut a = Args::new(backend);
    let (gp, dp) = (a.read(OP, "dOut", dout)?, a.write(OP, "dTable", dtable)?);
    let (rp, pp, sp) = (a.slice(rows_dev), a.slice(ptr_dev), a.slice(pos_dev));
    let mut b = backend.stream().launch_builder(&f);
    b.arg(&dp).arg(&gp).arg(&rp).arg(&pp).arg(&sp).arg(&d_i);
    // SAFETY: matches embedding_backward_*(T*, const T*, const int*, const int*, const int*,
    // int); rows are valid table rows, positions valid dOut rows, grid x = rows.len().
    unsafe { b.launch(cfg) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_by_id_groups_tokens_in_order() {
        let (rows, ptr, pos) = positions_by_id(&[4, 0, 4, 2, 0, 4]);
        assert_eq!(rows, vec![0, 2, 4]);
        assert_eq!(ptr, vec![0, 2, 3, 6]);
        assert_eq!(pos, vec![1, 4, 3, 0, 2, 5]);
        let (rows, ptr, pos) = positions_by_id(&[]);
        assert!(rows.is_empty() && pos.is_empty());
        assert_eq!(ptr, vec![0]);
    }
}
