//! Attention of generation: new queries against each sequence's own key/value cache, read where
//! it lies (no gather into one packed K and V), with the masking of [`super::attention`]: causal,
//! and the sliding window counted back from each query's own position.
//!
//! A decoding step runs every layer over the same sequences, the same query rows and the same
//! cache lengths; only the caches (and, for models mixing sliding and global layers, the window)
//! differ from layer to layer. So the step is described once, by a [`DecodeStep`] built before
//! the first layer: on CUDA it uploads, in one copy, every layer's table of cache addresses and
//! the decode kernel's work units (one set per distinct window), and each layer's
//! [`attention_decode_layer`] launches from it without uploading anything. The caches must not
//! move after the step is built (reserve their rows first); a layer whose caches did move is
//! still computed correctly, from a table of its own uploaded for it.
//! [`attention_decode_forward`] is the one-layer form.

use crate::error::{KernelError, Result};
use crate::ops::attention::AttentionShape;
use crate::{Device, Tensor};

/// One sequence's key/value cache as the decode attention reads it, in place: K and V are
/// `[capacity, kv_heads · head_dim]` buffers (on the device of the queries) whose first `len`
/// rows are the sequence's keys and values so far; the rows past `len` are never read.
#[derive(Clone, Copy, Debug)]
pub struct KvCacheView<'a> {
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub len: usize,
}

/// One layer of a decoding step: its attention shape and, per sequence, its cache as it will be
/// when the layer attends (the step's keys appended).
#[derive(Clone, Copy, Debug)]
pub struct DecodeLayerCaches<'a> {
    pub shape: AttentionShape,
    pub caches: &'a [KvCacheView<'a>],
}

/// One decoding step's attention, prepared once for all its layers (see the module docs).
pub struct DecodeStep {
    device: Device,
    q_starts: Vec<usize>,
    shapes: Vec<AttentionShape>,
    cuda: Option<super::cuda::attention_decode::DecodeTables>,
}

impl DecodeStep {
    /// Sequence s has the query rows `q_starts[s]..q_starts[s + 1]` in every layer; `layers[l]`
    /// gives layer l's shape and caches (one per sequence). Checks every layer as the attention
    /// call itself would, then, on CUDA, uploads the step's tables.
    pub fn new(device: &Device, q_starts: &[usize], layers: &[DecodeLayerCaches]) -> Result<Self> {
        const OP: &str = "DecodeStep::new";
        let tq = q_starts.last().copied().unwrap_or(0);
        for layer in layers {
            check_caches(OP, device, tq, layer.caches, q_starts, layer.shape)?;
        }
        let cuda = match device {
            Device::Cpu => None,
            Device::Cuda(backend) => Some(super::cuda::attention_decode::DecodeTables::upload(
                backend, q_starts, layers,
            )?),
        };
        Ok(Self {
            device: device.clone(),
            q_starts: q_starts.to_vec(),
            shapes: layers.iter().map(|l| l.shape).collect(),
            cuda,
        })
    }

    /// The number of layers the step was built for.
    pub fn num_layers(&self) -> usize {
        self.shapes.len()
    }

    /// The query rows of each sequence.
    pub fn q_starts(&self) -> &[usize] {
        &self.q_starts
    }
}

/// Layer `layer` of `step`: the queries `q` `[Tq, heads · head_dim]` (Tq = the step's last query
/// start) against `caches`, one per sequence, each holding the sequence's keys up to and
/// including those of its new queries: the query with local index j of a sequence with q_len
/// queries sits at key position `len − q_len + j` and attends the keys up to it, within the
/// layer's sliding window counted back from that position. Returns O `[Tq, heads · head_dim]`.
pub fn attention_decode_layer(
    q: &Tensor,
    step: &DecodeStep,
    layer: usize,
    caches: &[KvCacheView],
) -> Result<Tensor> {
    let _profile = crate::profile::scope("attention_decode_forward", q.device());
    const OP: &str = "attention_decode_forward";
    let shape = *step.shapes.get(layer).ok_or_else(|| KernelError::Invalid {
        op: OP,
        message: format!(
            "layer {layer} of a decoding step built for {} layers",
            step.shapes.len()
        ),
    })?;
    if !step.device.same(q.device()) {
        return Err(KernelError::WrongDevice {
            op: OP,
            what: "Q",
            expected: step.device.to_string(),
            found: q.device().to_string(),
        });
    }
    let q_starts = step.q_starts.as_slice();
    let tq = q.shape().first().copied().unwrap_or(0);
    q.expect_shape(OP, "Q", &[tq, shape.heads * shape.head_dim])?;
    check_caches(OP, q.device(), tq, caches, q_starts, shape)?;
    match (q.device(), &step.cuda) {
        (Device::Cuda(backend), Some(tables)) => {
            tables.launch(backend, q, layer, caches, q_starts, shape)
        }
        _ => decode_cpu(q, caches, q_starts, shape),
    }
}

/// The one-layer form of [`attention_decode_layer`]: builds the step for this call alone.
pub fn attention_decode_forward(
    q: &Tensor,
    caches: &[KvCacheView],
    q_starts: &[usize],
    shape: AttentionShape,
) -> Result<Tensor> {
    let step = DecodeStep::new(q.device(), q_starts, &[DecodeLayerCaches { shape, caches }])?;
    attention_decode_layer(q, &step, 0, caches)
}

/// What every decode call needs of its caches: the heads, query starts rising from 0 to the
/// `tq` query rows with one segment per cache, caches of `[capacity, kv_heads · head_dim]` on
/// `device` holding at least their queries' keys and at most their capacity.
fn check_caches(
    op: &'static str,
    device: &Device,
    tq: usize,
    caches: &[KvCacheView],
    q_starts: &[usize],
    shape: AttentionShape,
) -> Result<()> {
    let AttentionShape {
        kv_heads,
        head_dim: hd,
        ..
    } = shape;
    shape.check_heads(op)?;
    let rises = q_starts.first() == Some(&0)
        && q_starts.last() == Some(&tq)
        && q_starts.windows(2).all(|w| w[0] <= w[1]);
    if !rises || q_starts.len() != caches.len() + 1 {
        return Err(KernelError::Invalid {
            op,
            message: format!(
                "query starts {q_starts:?} must rise from 0 to the {tq} query rows, one segment \
                 per cache ({} caches)",
                caches.len()
            ),
        });
    }
    for (s, (cache, w)) in caches.iter().zip(q_starts.windows(2)).enumerate() {
        let capacity = cache.k.shape().first().copied().unwrap_or(0);
        cache
            .k
            .expect_shape(op, "cached K", &[capacity, kv_heads * hd])?;
        cache
            .v
            .expect_shape(op, "cached V", &[capacity, kv_heads * hd])?;
        let q_len = w[1] - w[0];
        if cache.len > capacity || q_len > cache.len {
            return Err(KernelError::Invalid {
                op,
                message: format!(
                    "sequence {s}: {q_len} queries and a cache of {} keys in {capacity} rows; \
                     need queries <= keys <= rows",
                    cache.len
                ),
            });
        }
        for (what, t) in [("cached K", cache.k), ("cached V", cache.v)] {
            if !t.device().same(device) {
                return Err(KernelError::WrongDevice {
                    op,
                    what,
                    expected: device.to_string(),
                    found: t.device().to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The CPU path: per query row and head, the softmax over its visible keys, in f32.
fn decode_cpu(
    q: &Tensor,
    caches: &[KvCacheView],
    q_starts: &[usize],
    shape: AttentionShape,
) -> Result<Tensor> {
    const OP: &str = "attention_decode_forward";
    let AttentionShape {
        heads,
        kv_heads,
        head_dim: hd,
        scale,
        ..
    } = shape;
    let tq = q.shape().first().copied().unwrap_or(0);
    let qs = q.cpu_data(OP)?;
    let group = heads / kv_heads;
    let kv_ld = kv_heads * hd;
    let mut out = vec![0.0f32; tq * heads * hd];
    let mut scores = Vec::new();
    for (cache, w) in caches.iter().zip(q_starts.windows(2)) {
        let (ks, vs) = (cache.k.cpu_data(OP)?, cache.v.cpu_data(OP)?);
        let offset = cache.len - (w[1] - w[0]);
        for (j, i) in (w[0]..w[1]).enumerate() {
            let last = offset + j;
            let first = shape.first_visible(last);
            for h in 0..heads {
                let g = h / group;
                let qi = &qs[i * heads * hd + h * hd..][..hd];
                scores.clear();
                let mut max = f32::NEG_INFINITY;
                for kj in first..=last {
                    let s = super::attention::dot(qi, &ks[kj * kv_ld + g * hd..][..hd]) * scale;
                    max = max.max(s);
                    scores.push(s);
                }
                let mut sum = 0.0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let o = &mut out[i * heads * hd + h * hd..][..hd];
                for (p, kj) in scores.iter().zip(first..=last) {
                    let vj = &vs[kj * kv_ld + g * hd..][..hd];
                    for (a, b) in o.iter_mut().zip(vj) {
                        *a += p / sum * b;
                    }
                }
            }
        }
    }
    Tensor::cpu(&[tq, heads * hd], out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::oracle::{assert_close, pseudo_random, to_f64};
    use crate::ops::reference;

    /// A cache of `len` random keys and values in `capacity` rows, the spare rows NaN so that a
    /// read past `len` shows.
    fn cache(len: usize, capacity: usize, width: usize, seed: u64) -> (Tensor, Tensor, usize) {
        let rows = |seed| {
            let mut x = pseudo_random(len * width, seed);
            x.resize(capacity * width, f32::NAN);
            Tensor::cpu(&[capacity, width], x).unwrap()
        };
        (rows(seed), rows(seed + 1), len)
    }

    #[test]
    fn one_step_serves_layers_of_different_windows() {
        // Two layers (global, and a window of 3 keys) over three sequences: 1 new query against
        // 6 keys, 2 against 4, none against 2.
        let global = AttentionShape::new(4, 2, 3);
        let windowed = AttentionShape {
            window: Some(3),
            ..global
        };
        let width = global.kv_heads * global.head_dim;
        let q_starts = [0, 1, 3, 3];
        let q = pseudo_random(3 * 12, 1);
        let qt = Tensor::cpu(&[3, 12], q.clone()).unwrap();
        let layer_caches: Vec<Vec<(Tensor, Tensor, usize)>> = (0..2u64)
            .map(|l| {
                [(6, 8), (4, 4), (2, 5)]
                    .iter()
                    .enumerate()
                    .map(|(s, &(len, cap))| cache(len, cap, width, 10 * l + 2 * s as u64))
                    .collect()
            })
            .collect();
        let views: Vec<Vec<KvCacheView>> = layer_caches
            .iter()
            .map(|cs| {
                cs.iter()
                    .map(|(k, v, len)| KvCacheView { k, v, len: *len })
                    .collect()
            })
            .collect();
        let shapes = [global, windowed];
        let layers: Vec<DecodeLayerCaches> = shapes
            .iter()
            .zip(&views)
            .map(|(&shape, caches)| DecodeLayerCaches { shape, caches })
            .collect();
        let step = DecodeStep::new(&Device::Cpu, &q_starts, &layers).unwrap();
        assert_eq!(step.num_layers(), 2);
        for (l, (&shape, cs)) in shapes.iter().zip(&layer_caches).enumerate() {
            let host: Vec<(Vec<f64>, Vec<f64>, usize)> = cs
                .iter()
                .map(|(k, v, len)| {
                    let valid = |t: &Tensor| to_f64(&t.to_f32_vec().unwrap()[..len * width]);
                    (valid(k), valid(v), *len)
                })
                .collect();
            let refs: Vec<(&[f64], &[f64], usize)> = host
                .iter()
                .map(|(k, v, len)| (k.as_slice(), v.as_slice(), *len))
                .collect();
            let want = reference::attention_decode(&to_f64(&q), &refs, &q_starts, shape);
            let got = attention_decode_layer(&qt, &step, l, &views[l]).unwrap();
            assert_close(
                &format!("layer {l}"),
                &got.to_f32_vec().unwrap(),
                &want,
                1e-5,
            );
        }
        // On the same caches the window changes the answer (it cuts the 6-key sequence's
        // query), so each layer does read its own shape from the step.
        let same = [
            DecodeLayerCaches {
                shape: global,
                caches: &views[0],
            },
            DecodeLayerCaches {
                shape: windowed,
                caches: &views[0],
            },
        ];
        let both = DecodeStep::new(&Device::Cpu, &q_starts, &same).unwrap();
        let (a, b) = (
            attention_decode_layer(&qt, &both, 0, &views[0]).unwrap(),
            attention_decode_layer(&qt, &both, 1, &views[0]).unwrap(),
        );
        assert_ne!(a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap());

        // A layer the step does not have, queries of another count, caches of another count,
        // a cache shorter than its queries: errors naming what is wrong.
        let err = attention_decode_layer(&qt, &step, 2, &views[0]).unwrap_err();
        assert!(err.to_string().contains("layer 2"), "{err}");
        let two_rows = Tensor::cpu(&[2, 12], q[..24].to_vec()).unwrap();
        assert!(attention_decode_layer(&two_rows, &step, 0, &views[0]).is_err());
        assert!(attention_decode_layer(&qt, &step, 0, &views[0][..2]).is_err());
        let mut short = views[0].clone();
        short[1].len = 1;
        let err = attention_decode_layer(&qt, &step, 0, &short).unwrap_err();
        assert!(err.to_string().contains("sequence 1"), "{err}");
        let bad = [DecodeLayerCaches {
            shape: global,
            caches: &short,
        }];
        assert!(DecodeStep::new(&Device::Cpu, &q_starts, &bad).is_err());
    }
}
