//! Launchers of the decode kernels of `transformer_attention.cu` (`attention_decode_*` and
//! `attention_decode_combine_*`): new queries against per-sequence KV caches read in place.
//! `ops/attention_decode.rs` has checked the shapes, the query starts and the caches' lengths;
//! here: one device, one dtype, head_dim within the kernels' limit, the step's tables, then the
//! launches.
//!
//! A decoding step's tables are one upload ([`DecodeTables`]), in u32 words: per layer, 8 words
//! per sequence (`AttDecodeSequence`: K and V addresses, length, first query row, query count,
//! unused), every layer's records first so that their 8-byte addresses stay aligned; then, per
//! distinct (window, lengths), the work units (5 words, `AttDecodeUnit`) and the split rows (3,
//! `AttDecodeCombine`). A layer's launch passes the addresses of its own records and of its
//! plan's units inside that one buffer.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::attention::{head_dim_limit, launch_config, Layout, THREADS};
use super::{blocks, same_device_and_dtype, suffix, to_i32, upload, workspace, Args};
use crate::cuda::CudaBackend;
use crate::error::{KernelError, Result};
use crate::ops::attention::{AttentionShape, DecodeLayerCaches, KvCacheView};
use crate::{Device, Tensor};

/// Keys per work unit of the decode kernel (ATT_DECODE_KEYS): a query row that sees more is
/// split over several blocks whose partial results the combine kernel joins.
const DECODE_KEYS: usize = 256;

/// How the decode kernel covers a call, as the kernel's i32 records: per work unit
/// `{sequence, query row, first key, end key, partial index or −1}` (AttDecodeUnit), per split
/// row `{row, first partial, partials}` (AttDecodeCombine), and the number of partials.
#[derive(Debug, PartialEq, Eq)]
struct DecodePlan {
    units: Vec<[i32; 5]>,
    combines: Vec<[i32; 3]>,
    parts: usize,
}

/// Each query row sees the keys from its window's start up to its own position (the row j of a
/// sequence with q_len queries and len keys sits at position len − q_len + j); rows seeing more
/// than `DECODE_KEYS` keys are cut into units of `DECODE_KEYS` from their first key on.
fn decode_plan(
    op: &'static str,
    lens: &[usize],
    q_starts: &[usize],
    shape: AttentionShape,
) -> Result<DecodePlan> {
    let i32_ = |what, n| to_i32(op, what, n);
    let mut plan = DecodePlan {
        units: Vec::new(),
        combines: Vec::new(),
        parts: 0,
    };
    for (s, (&len, w)) in lens.iter().zip(q_starts.windows(2)).enumerate() {
        let q_len = w[1] - w[0];
        for (j, row) in (w[0]..w[1]).enumerate() {
            let position = len - q_len + j;
            let first = shape
                .window
                .map_or(0, |window| (position + 1).saturating_sub(window));
            let end = position + 1;
            let pieces = (end - first).div_ceil(DECODE_KEYS);
            if pieces > 1 {
                plan.combines.push([
                    i32_("query row", row)?,
                    i32_("partial index", plan.parts)?,
                    i32_("partials", pieces)?,
                ]);
            }
            for piece in 0..pieces {
                let begin = first + piece * DECODE_KEYS;
                let part = if pieces > 1 {
                    i32_("partial index", plan.parts + piece)?
                } else {
                    -1
                };
                plan.units.push([
                    i32_("sequence index", s)?,
                    i32_("query row", row)?,
                    i32_("key position", begin)?,
                    i32_("key position", (begin + DECODE_KEYS).min(end))?,
                    part,
                ]);
            }
            if pieces > 1 {
                plan.parts += pieces;
            }
        }
    }
    Ok(plan)
}

/// Splits a device address into the two little-endian u32 words of its place in a table.
fn address_words(address: u64) -> [u32; 2] {
    [address as u32, (address >> 32) as u32]
}

/// Where one sequence's cache of one layer lies, as the step's table records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CacheRecord {
    k: u64,
    v: u64,
    len: usize,
}

/// The records of one layer: its caches, where they start in the table (in words), its shape,
/// and which plan its units are.
struct LayerRecords {
    caches: Vec<CacheRecord>,
    at: usize,
    shape: AttentionShape,
    plan: usize,
}

/// One distinct set of work units: for a window and the caches' lengths.
struct PlanRecords {
    window: Option<usize>,
    lens: Vec<usize>,
    plan: DecodePlan,
    units_at: usize,
    combines_at: usize,
}

/// A decoding step's tables on the device, uploaded once and read by every layer's launch.
pub struct DecodeTables {
    table: CudaSlice<u32>,
    layers: Vec<LayerRecords>,
    plans: Vec<PlanRecords>,
}

/// The device addresses and lengths of `caches`.
fn cache_records(
    op: &'static str,
    backend: &CudaBackend,
    caches: &[KvCacheView],
) -> Result<Vec<CacheRecord>> {
    let mut args = Args::new(backend);
    caches
        .iter()
        .map(|c| {
            Ok(CacheRecord {
                k: args.read(op, "cached K", c.k)?,
                v: args.read(op, "cached V", c.v)?,
                len: c.len,
            })
        })
        .collect()
}

impl DecodeTables {
    /// Builds and uploads the tables of `layers` (checked by the caller), in one copy.
    pub fn upload(
        backend: &CudaBackend,
        q_starts: &[usize],
        layers: &[DecodeLayerCaches],
    ) -> Result<Self> {
        const OP: &str = "DecodeStep::new";
        let mut words = Vec::new();
        let mut records = Vec::with_capacity(layers.len());
        let mut plans: Vec<PlanRecords> = Vec::new();
        for layer in layers {
            let caches = cache_records(OP, backend, layer.caches)?;
            let at = words.len();
            for (c, w) in caches.iter().zip(q_starts.windows(2)) {
                words.extend(address_words(c.k));
                words.extend(address_words(c.v));
                words.extend([
                    to_i32(OP, "cache length", c.len)? as u32,
                    to_i32(OP, "query row", w[0])? as u32,
                    to_i32(OP, "query count", w[1] - w[0])? as u32,
                    0,
                ]);
            }
            let lens: Vec<usize> = caches.iter().map(|c| c.len).collect();
            let window = layer.shape.window;
            let plan = match plans
                .iter()
                .position(|p| p.window == window && p.lens == lens)
            {
                Some(i) => i,
                None => {
                    let plan = decode_plan(OP, &lens, q_starts, layer.shape)?;
                    plans.push(PlanRecords {
                        window,
                        lens,
                        plan,
                        units_at: 0,
                        combines_at: 0,
                    });
                    plans.len() - 1
                }
            };
            records.push(LayerRecords {
                caches,
                at,
                shape: layer.shape,
                plan,
            });
        }
        for p in &mut plans {
            p.units_at = words.len();
            words.extend(p.plan.units.iter().flatten().map(|&x| x as u32));
            p.combines_at = words.len();
            words.extend(p.plan.combines.iter().flatten().map(|&x| x as u32));
        }
        Ok(Self {
            table: upload(backend, &words)?,
            layers: records,
            plans,
        })
    }

    /// The decode kernel over (units, Hkv) for layer `layer`, then the combine kernel over
    /// (split rows, H) where rows were split. If the caches are not where the tables say (they
    /// moved after the step was built), the layer gets tables of its own first.
    pub fn launch(
        &self,
        backend: &Arc<CudaBackend>,
        q: &Tensor,
        layer: usize,
        caches: &[KvCacheView],
        q_starts: &[usize],
        shape: AttentionShape,
    ) -> Result<Tensor> {
        const OP: &str = "attention_decode_forward";
        let mut tensors = vec![("Q", q)];
        for c in caches {
            tensors.extend([("cached K", c.k), ("cached V", c.v)]);
        }
        let dtype = same_device_and_dtype(OP, backend, &tensors)?;
        let records = self.layers.get(layer).ok_or_else(|| KernelError::Invalid {
            op: OP,
            message: format!("layer {layer} of tables for {} layers", self.layers.len()),
        })?;
        if records.shape != shape || records.caches != cache_records(OP, backend, caches)? {
            let own = Self::upload(backend, q_starts, &[DecodeLayerCaches { shape, caches }])?;
            return own.launch(backend, q, 0, caches, q_starts, shape);
        }
        let plan = &self.plans[records.plan];
        let limit = head_dim_limit(OP, shape)?;
        let AttentionShape {
            heads,
            kv_heads,
            head_dim,
            scale,
            ..
        } = shape;
        let tq = q.shape()[0];
        let mut out = Tensor::zeros(
            &Device::Cuda(backend.clone()),
            dtype,
            &[tq, heads * head_dim],
        )?;
        if plan.plan.units.is_empty() || heads == 0 {
            return Ok(out);
        }
        let (h_i, hkv_i, hd_i) = (
            to_i32(OP, "heads", heads)?,
            to_i32(OP, "kv_heads", kv_heads)?,
            to_i32(OP, "head_dim", head_dim)?,
        );
        let source = &kernels_cu::TRANSFORMER_ATTENTION;
        let f = backend.function(
            source,
            &format!("attention_decode_{limit}_{}", suffix(dtype)),
        )?;
        let layout = Layout::Decode {
            group: heads / kv_heads,
        };
        let config = launch_config(
            backend,
            OP,
            &f,
            (plan.plan.units.len(), kv_heads),
            layout,
            head_dim,
        )?;
        let parts = plan.plan.parts;
        let mut part_ml = workspace::<f32>(backend, parts * heads * 2)?;
        let mut part_acc = workspace::<f32>(backend, parts * heads * head_dim)?;

        let mut args = Args::new(backend);
        let qp = args.read(OP, "Q", q)?;
        let op_ = args.write(OP, "O", &mut out)?;
        let mut table_args = Args::new(backend);
        let table_p = table_args.slice(&self.table);
        let word = |at: usize| table_p + 4 * at as u64;
        let (sequences_p, units_p, combines_p) = (
            word(records.at),
            word(plan.units_at),
            word(plan.combines_at),
        );
        let (mlp, accp) = (
            table_args.slice_mut(&mut part_ml),
            table_args.slice_mut(&mut part_acc),
        );
        let mut b = backend.stream().launch_builder(&f);
        b.arg(&qp)
            .arg(&op_)
            .arg(&mlp)
            .arg(&accp)
            .arg(&sequences_p)
            .arg(&units_p)
            .arg(&h_i)
            .arg(&hkv_i)
            .arg(&hd_i)
            .arg(&scale);
        // SAFETY: matches attention_decode_hd*_*(const T*, T*, float*, float*, const
        // AttDecodeSequence*, const AttDecodeUnit*, int, int, int, float); the layer's sequence
        // records hold the live addresses of these caches (compared just above) of [capacity,
        // kv_heads · head_dim] with len <= capacity (the op checked), every unit's keys lie
        // within its sequence's len and its row within Q, the partial indices within the
        // workspaces, and the shared memory is the kernel's layout.
        unsafe { b.launch(config) }?;
        if !plan.plan.combines.is_empty() {
            let combine = backend.function(
                source,
                &format!("attention_decode_combine_{}", suffix(dtype)),
            )?;
            let config = blocks(OP, (plan.plan.combines.len(), heads), THREADS)?;
            let mut b = backend.stream().launch_builder(&combine);
            b.arg(&mlp)
                .arg(&accp)
                .arg(&op_)
                .arg(&combines_p)
                .arg(&h_i)
                .arg(&hd_i);
            // SAFETY: matches attention_decode_combine_*(const float*, const float*, T*, const
            // AttDecodeCombine*, int, int); every split row's partials were written by the decode
            // launch before it on the same stream.
            unsafe { b.launch(config) }?;
        }
        drop(args);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each query row's visible keys (causal, window counted back from its own position) are
    /// covered once, in order, by units of at most DECODE_KEYS; split rows name their partials.
    #[test]
    fn decode_units_cover_each_rows_visible_keys_once() {
        // Caches of 256 keys (one full unit), 600 (a split row) and 3 (three queries), and an
        // empty query range.
        let (lens, q_starts) = ([256, 600, 3, 5], [0, 1, 2, 5, 5]);
        for window in [None, Some(300), Some(2)] {
            let mut shape = AttentionShape::new(4, 2, 8);
            shape.window = window;
            let plan = decode_plan("test", &lens, &q_starts, shape).unwrap();
            let mut parts_seen = 0;
            let mut combines = plan.combines.iter();
            for (s, (&len, w)) in lens.iter().zip(q_starts.windows(2)).enumerate() {
                for (j, row) in (w[0]..w[1]).enumerate() {
                    let position = len - (w[1] - w[0]) + j;
                    let first = window.map_or(0, |x| (position + 1).saturating_sub(x));
                    let units: Vec<_> = plan.units.iter().filter(|u| u[1] == row as i32).collect();
                    let mut next = first as i32;
                    for u in &units {
                        assert_eq!((u[0], u[2]), (s as i32, next), "{window:?} row {row}");
                        assert!(u[3] > u[2] && u[3] - u[2] <= DECODE_KEYS as i32);
                        next = u[3];
                    }
                    assert_eq!(next, position as i32 + 1, "{window:?} row {row}");
                    if units.len() > 1 {
                        let c = combines.next().unwrap();
                        assert_eq!(*c, [row as i32, parts_seen, units.len() as i32]);
                        for (i, u) in units.iter().enumerate() {
                            assert_eq!(u[4], parts_seen + i as i32);
                        }
                        parts_seen += units.len() as i32;
                    } else {
                        assert_eq!(units[0][4], -1);
                    }
                }
            }
            assert!(combines.next().is_none());
            assert_eq!(plan.parts, parts_seen as usize);
            // Without a window the 600-key row takes three units; a window of 300, two.
            let long_row = plan.units.iter().filter(|u| u[1] == 1).count();
            assert_eq!(
                long_row,
                [3, 2, 1][[None, Some(300), Some(2)]
                    .iter()
                    .position(|w| *w == window)
                    .unwrap()]
            );
        }
    }
}
