//! Launchers of `transformer_optim.cu`: the multi-tensor AdamW step on f32 master weights and
//! state, the multi-tensor gradient sum of squares (a deterministic two-pass reduction in f64),
//! and gradient scaling. A multi-tensor launch reads a table of the tensors' device addresses,
//! uploaded once per call, so a step costs a constant number of launches.

use std::sync::Arc;

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{grid_stride, on_device, suffix, to_i32, upload, workspace, Args};
use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use crate::ops::adamw::{AdamWParams, AdamWTensor};
use crate::{DType, Device, Tensor};

/// Elements per chunk of a multi-tensor launch: `TF_CHUNK` in transformer_optim.cu (a test below
/// holds the two together).
const CHUNK: usize = 16_384;

/// At most this many blocks walk a launch's chunks (enough to fill the card several times over).
const MAX_BLOCKS: usize = 2048;

/// The table of a multi-tensor launch, the kernels' `TfMultiTensor` rows of seven 8-byte words:
/// param, grad, m, v, working-copy addresses (0: none), element count, first chunk.
#[derive(Default)]
struct MultiTensorTable {
    words: Vec<u64>,
    rows: usize,
    chunks: usize,
}

impl MultiTensorTable {
    fn push(&mut self, [param, grad, m, v, working]: [u64; 5], n: usize) {
        if n == 0 {
            return; // no chunks: nothing for the kernels to find
        }
        self.words
            .extend([param, grad, m, v, working, n as u64, self.chunks as u64]);
        self.rows += 1;
        self.chunks += n.div_ceil(CHUNK);
    }

    /// The launch over this table's chunks, and its row count as the kernels' `int`.
    fn launch(&self, op: &'static str) -> Result<(LaunchConfig, i32)> {
        let config = LaunchConfig {
            grid_dim: (self.chunks.clamp(1, MAX_BLOCKS) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        Ok((config, to_i32(op, "tensors in one launch", self.rows)?))
    }
}

/// One AdamW step of every tensor (shapes, devices and the step checked by the caller): one
/// launch per gradient dtype. `param`, `m`, `v` must be f32; a working copy bf16.
pub fn adamw_step_many(
    backend: &Arc<CudaBackend>,
    tensors: &mut [AdamWTensor],
    step: u64,
    hp: AdamWParams,
    grad_scale: f32,
) -> Result<()> {
    const OP: &str = "adamw_step";
    for t in tensors.iter() {
        for (what, x) in [("param", &*t.param), ("m", &*t.m), ("v", &*t.v)] {
            x.expect_dtype(OP, what, DType::F32)?;
        }
        if let Some(w) = &t.working {
            w.expect_dtype(OP, "working copy", DType::BF16)?;
        }
    }
    let bc1 = 1.0 - (hp.beta1 as f64).powi(step as i32);
    let bc2 = 1.0 - (hp.beta2 as f64).powi(step as i32);
    let mut a = Args::new(backend);
    let mut tables: [MultiTensorTable; 2] = Default::default();
    for t in tensors.iter_mut() {
        let n = t.param.numel();
        let dtype = t.grad.dtype();
        let row = [
            a.write(OP, "param", t.param)?,
            a.read(OP, "grad", t.grad)?,
            a.write(OP, "m", t.m)?,
            a.write(OP, "v", t.v)?,
            match t.working.as_deref_mut() {
                Some(w) => a.write(OP, "working copy", w)?,
                None => 0,
            },
        ];
        tables[(dtype == DType::BF16) as usize].push(row, n);
    }
    let mut uploaded = Vec::new();
    for (table, dtype) in tables.iter().zip([DType::F32, DType::BF16]) {
        if table.rows > 0 {
            uploaded.push((table, dtype, upload(backend, &table.words)?));
        }
    }
    // The tables' own guards: they are allocated after the tensors' guards were taken.
    let mut table_args = Args::new(backend);
    for (table, dtype, words) in &uploaded {
        let f = backend.function(
            &kernels_cu::TRANSFORMER_OPTIM,
            &format!("multi_adamw_{}", suffix(*dtype)),
        )?;
        let (config, rows) = table.launch(OP)?;
        let (table_ptr, chunks) = (table_args.slice(words), table.chunks as i64);
        let mut b = backend.stream().launch_builder(&f);
        b.arg(&table_ptr)
            .arg(&rows)
            .arg(&chunks)
            .arg(&hp.lr)
            .arg(&hp.beta1)
            .arg(&hp.beta2)
            .arg(&hp.eps)
            .arg(&hp.weight_decay)
            .arg(&bc1)
            .arg(&bc2)
            .arg(&grad_scale);
        // SAFETY: matches multi_adamw_*(const TfMultiTensor*, int, long long, float x5, double,
        // double, float); every row's buffers hold its n elements (checked by the caller) and
        // stay alive, guarded by `a`, until the launch is queued.
        unsafe { b.launch(config) }?;
    }
    Ok(())
}

/// Σ g² over every tensor, in f64, in an order fixed by the tensors' sizes and dtypes: one
/// partial launch per dtype, one finishing launch, one read-back.
pub fn sum_of_squares_many(backend: &Arc<CudaBackend>, grads: &[&Tensor]) -> Result<f64> {
    const OP: &str = "global_grad_norm";
    let device = Device::Cuda(backend.clone());
    let mut grad_args = Args::new(backend);
    let mut tables: [MultiTensorTable; 2] = Default::default();
    for g in grads {
        on_device(OP, "gradient", g, &device)?;
        let row = [0, grad_args.read(OP, "gradient", g)?, 0, 0, 0];
        tables[(g.dtype() == DType::BF16) as usize].push(row, g.numel());
    }
    let total_chunks = tables[0].chunks + tables[1].chunks;
    if total_chunks == 0 {
        return Ok(0.0);
    }
    let source = &kernels_cu::TRANSFORMER_OPTIM;
    let mut part = workspace::<f64>(backend, total_chunks)?;
    let mut out = workspace::<f64>(backend, 1)?;
    let mut uploaded = Vec::new();
    for (table, dtype) in tables.iter().zip([DType::F32, DType::BF16]) {
        if table.rows > 0 {
            uploaded.push((table, dtype, upload(backend, &table.words)?));
        }
    }
    {
        // The workspace's and tables' own guards: they are allocated after the gradients' guards
        // were taken.
        let mut a = Args::new(backend);
        let part_ptr = a.slice_mut(&mut part);
        let mut offset = 0;
        for (table, dtype, words) in &uploaded {
            let f = backend.function(source, &format!("multi_sumsq_partial_{}", suffix(*dtype)))?;
            let (config, rows) = table.launch(OP)?;
            let (table_ptr, chunks) = (a.slice(words), table.chunks as i64);
            // This dtype's chunks fill their own stretch of the partial sums.
            let partial = part_ptr + 8 * offset as u64;
            let mut b = backend.stream().launch_builder(&f);
            b.arg(&table_ptr).arg(&rows).arg(&chunks).arg(&partial);
            // SAFETY: matches multi_sumsq_partial_*(const TfMultiTensor*, int, long long,
            // double*); `part` holds total_chunks >= offset + chunks values.
            unsafe { b.launch(config) }?;
            offset += table.chunks;
        }
        let finish = backend.function(source, "sumsq_finish")?;
        let (out_ptr, n) = (a.slice_mut(&mut out), to_i32(OP, "chunks", total_chunks)?);
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = backend.stream().launch_builder(&finish);
        b.arg(&part_ptr).arg(&n).arg(&out_ptr);
        // SAFETY: matches sumsq_finish(const double*, int, double*); part holds n values.
        unsafe { b.launch(one) }?;
    }
    drop(grad_args);
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

#[cfg(test)]
mod tests {
    use super::CHUNK;

    #[test]
    fn chunk_size_matches_the_kernel_source() {
        let define = format!("#define TF_CHUNK {CHUNK}\n");
        assert!(
            kernels_cu::TRANSFORMER_OPTIM.code.contains(&define),
            "transformer_optim.cu must say {define:?}"
        );
    }
}
