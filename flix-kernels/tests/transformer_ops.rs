//! The transformer ops against their plain-loop f64 references (`flix_kernels::ops::reference`),
//! on every available device (the CPU in f32 always; CUDA in f32 and bf16 when present, bf16 with
//! the BF16 tolerance). Inputs are compared as the device holds them (after its rounding), so the
//! tolerance measures the op, not the input cast. Gradient formulas themselves are checked by
//! finite differences in each op's unit tests and in the reference module's; here the question
//! is whether every device computes the same function.

mod common;

use common::{devices, host, tensor, tolerance, Rng};
use flix_kernels::batch::{SegmentStarts, TokenIds, TokenPositions};
use flix_kernels::ops::adamw::{adamw_step, adamw_step_many, AdamWParams, AdamWTensor};
use flix_kernels::ops::attention::{
    attention_backward, attention_decode_forward, attention_forward, AttentionShape, KvCacheView,
};
use flix_kernels::ops::cross_entropy::{
    linear_cross_entropy_backward, linear_cross_entropy_forward, IGNORE,
};
use flix_kernels::ops::embedding::{embedding_backward, embedding_forward};
use flix_kernels::ops::grad_norm::{clip_grad_norm, global_grad_norm};
use flix_kernels::ops::reference;
use flix_kernels::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use flix_kernels::ops::rope::{inv_freq, rope_backward, rope_forward, RopeScaling};
use flix_kernels::ops::swiglu::{swiglu_backward, swiglu_forward, GateActivation};
use flix_kernels::{DType, Device, Tensor, Tolerance};

fn check(tol: Tolerance, what: &str, device: &Device, dtype: DType, got: &[f64], want: &[f64]) {
    tol.check_scaled(&format!("{what} on {device} {dtype}"), got, want)
        .unwrap();
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn embedding_gathers_and_scatters_rows_on_every_device() {
    for (device, dtype) in devices() {
        let mut rng = Rng::new(1);
        let (v, d) = (7, 300);
        let ids = [4u32, 0, 4, 2, 6, 0, 4, 1, 1];
        let table = tensor(&device, dtype, &[v, d], &rng.vec(v * d, 1.0));
        let out = embedding_forward(&table, &TokenIds::new(&device, &ids).unwrap()).unwrap();
        let tab = host(&table);
        let want: Vec<f64> = ids
            .iter()
            .flat_map(|&id| tab[id as usize * d..(id as usize + 1) * d].to_vec())
            .collect();
        check(
            Tolerance::F64,
            "embedding",
            &device,
            dtype,
            &host(&out),
            &want,
        );

        let dout = tensor(
            &device,
            dtype,
            &[ids.len(), d],
            &rng.vec(ids.len() * d, 1.0),
        );
        let mut dtable = tensor(&device, dtype, &[v, d], &rng.vec(v * d, 1.0));
        let mut want = host(&dtable);
        let g = host(&dout);
        for (t, &id) in ids.iter().enumerate() {
            for c in 0..d {
                want[id as usize * d + c] += g[t * d + c];
            }
        }
        embedding_backward(&mut dtable, &TokenIds::new(&device, &ids).unwrap(), &dout).unwrap();
        check(
            tolerance(dtype),
            "dTable",
            &device,
            dtype,
            &host(&dtable),
            &want,
        );
    }
}

#[test]
fn rmsnorm_forward_and_backward_match_the_reference_on_every_device() {
    for (device, dtype) in devices() {
        let mut rng = Rng::new(2);
        let (rows, d, eps) = (70, 130, 1e-5);
        let x = tensor(&device, dtype, &[rows, d], &rng.vec(rows * d, 2.0));
        let w = tensor(&device, dtype, &[d], &rng.vec(d, 1.0));
        let dy = tensor(&device, dtype, &[rows, d], &rng.vec(rows * d, 1.0));
        let dw0 = rng.vec(d, 1.0);
        let mut dw = tensor(&device, DType::F32, &[d], &dw0);
        let (xs, ws, g) = (host(&x), host(&w), host(&dy));
        let (y, rstd) = reference::rmsnorm(&xs, &ws, eps as f64);
        let (dx, dw_sum) = reference::rmsnorm_backward(&xs, &ws, &g, eps as f64);
        // The op adds into dW.
        let dwr: Vec<f64> = dw_sum
            .iter()
            .zip(&dw0)
            .map(|(a, &b)| a + b as f64)
            .collect();
        let tol = tolerance(dtype);
        let (yt, rstd_got) = rmsnorm_forward(&x, &w, eps).unwrap();
        check(tol, "RMSNorm y", &device, dtype, &host(&yt), &y);
        check(
            Tolerance::F32,
            "rstd",
            &device,
            dtype,
            &f64s(&rstd_got.to_f32_vec().unwrap()),
            &rstd,
        );
        let dxt = rmsnorm_backward(&dy, &x, &w, &rstd_got, Some(&mut dw)).unwrap();
        check(tol, "RMSNorm dX", &device, dtype, &host(&dxt), &dx);
        check(
            Tolerance::F32,
            "RMSNorm dW",
            &device,
            dtype,
            &host(&dw),
            &dwr,
        );
    }
}

#[test]
fn rope_rotates_and_unrotates_on_every_device() {
    for (device, dtype) in devices() {
        let mut rng = Rng::new(3);
        let (heads, hd) = (3, 10);
        // Two packed segments: positions restart at the second.
        let positions = [0u32, 1, 2, 3, 0, 1, 2, 40];
        let inv = inv_freq(hd, 10_000.0, RopeScaling::Default);
        let n = positions.len() * heads * hd;
        for backward in [false, true] {
            let mut x = tensor(
                &device,
                dtype,
                &[positions.len(), heads * hd],
                &rng.vec(n, 1.0),
            );
            let want = reference::rope(&host(&x), heads, &positions, &inv, backward);
            if backward {
                rope_backward(
                    &mut x,
                    heads,
                    &TokenPositions::new(&device, &positions).unwrap(),
                    &inv,
                )
                .unwrap();
            } else {
                rope_forward(
                    &mut x,
                    heads,
                    &TokenPositions::new(&device, &positions).unwrap(),
                    &inv,
                )
                .unwrap();
            }
            check(tolerance(dtype), "RoPE", &device, dtype, &host(&x), &want);
        }
    }
}

#[test]
fn swiglu_matches_the_reference_on_every_device() {
    for (device, dtype) in devices() {
        let mut rng = Rng::new(4);
        let shape = [5, 37];
        let n = 5 * 37;
        let gate = tensor(&device, dtype, &shape, &rng.vec(n, 4.0));
        let up = tensor(&device, dtype, &shape, &rng.vec(n, 1.0));
        let dh = tensor(&device, dtype, &shape, &rng.vec(n, 1.0));
        let (g, u, d) = (host(&gate), host(&up), host(&dh));
        let h = reference::gated(GateActivation::Silu, &g, &u);
        let (dg, du) = reference::gated_backward(GateActivation::Silu, &g, &u, &d);
        let tol = tolerance(dtype);
        let ht = swiglu_forward(&gate, &up).unwrap();
        check(tol, "SwiGLU h", &device, dtype, &host(&ht), &h);
        let (dgt, dut) = swiglu_backward(&dh, &gate, &up).unwrap();
        check(tol, "SwiGLU dGate", &device, dtype, &host(&dgt), &dg);
        check(tol, "SwiGLU dUp", &device, dtype, &host(&dut), &du);
    }
}

/// The attention shapes every device is checked on: full causal attention at the default scale
/// with head_dim not a multiple of 8, and Gemma 3's head_dim 256 (one KV head) and head_dim 100,
/// each with a custom scale and a sliding window shorter than the longest segment; and head_dim
/// 128 with 8 query heads per KV head, causal (in bf16 on CUDA, like 256, the tensor-core
/// kernels).
fn attention_shapes() -> Vec<AttentionShape> {
    let windowed = |heads, kv_heads, head_dim, scale, window| AttentionShape {
        scale,
        window: Some(window),
        ..AttentionShape::new(heads, kv_heads, head_dim)
    };
    vec![
        AttentionShape::new(4, 2, 20),
        windowed(4, 1, 256, 0.05, 7),
        windowed(4, 2, 100, 0.3, 20),
        AttentionShape::new(8, 1, 128),
    ]
}

#[test]
fn attention_forward_and_backward_match_the_reference_on_every_device() {
    for shape in attention_shapes() {
        for (device, dtype) in devices() {
            attention_matches_the_reference(shape, &device, dtype);
        }
    }
}

fn attention_matches_the_reference(shape: AttentionShape, device: &Device, dtype: DType) {
    let (h_, hkv, hd) = (shape.heads, shape.kv_heads, shape.head_dim);
    let what = |name: &str| format!("{name} ({shape:?})");
    let mut rng = Rng::new(5);
    // One-token, long (crosses tiles and key chunks), empty and short segments.
    let starts = [0, 1, 38, 38, 43];
    let t = 43;
    let q = tensor(device, dtype, &[t, h_ * hd], &rng.vec(t * h_ * hd, 2.0));
    let k = tensor(device, dtype, &[t, hkv * hd], &rng.vec(t * hkv * hd, 2.0));
    let v = tensor(device, dtype, &[t, hkv * hd], &rng.vec(t * hkv * hd, 1.0));
    let dout = tensor(device, dtype, &[t, h_ * hd], &rng.vec(t * h_ * hd, 1.0));
    let (qh, kh, vh, dh) = (host(&q), host(&k), host(&v), host(&dout));
    let reference::AttentionReference { o, lse, dq, dk, dv } =
        reference::attention((&qh, &kh, &vh), Some(&dh), &starts, &starts, shape);
    let tol = tolerance(dtype);
    let segments = SegmentStarts::new(device, &starts).unwrap();
    let (ot, lse_got) = attention_forward(&q, &k, &v, &segments, shape).unwrap();
    check(tol, &what("attention O"), device, dtype, &host(&ot), &o);
    check(
        Tolerance::F32,
        &what("attention lse"),
        device,
        dtype,
        &f64s(&lse_got.to_f32_vec().unwrap()),
        &lse,
    );
    let (dqt, dkt, dvt) =
        attention_backward(&dout, &q, &k, &v, &ot, &lse_got, &segments, shape).unwrap();
    check(tol, &what("attention dQ"), device, dtype, &host(&dqt), &dq);
    check(tol, &what("attention dK"), device, dtype, &host(&dkt), &dk);
    check(tol, &what("attention dV"), device, dtype, &host(&dvt), &dv);
}

/// The decode step against per-sequence caches read in place: caches of different lengths and
/// capacities (one full, one longer than a decode work unit so its rows are split and
/// combined), one, several and no new queries; the rows past each cache's length are NaN, so
/// reading one shows.
#[test]
fn decode_attention_over_caches_matches_the_reference_on_every_device() {
    for shape in attention_shapes() {
        for (device, dtype) in devices() {
            let (h_, kv_dim) = (shape.heads, shape.kv_heads * shape.head_dim);
            let what = format!("decode attention O ({shape:?})");
            let mut rng = Rng::new(9);
            // (cache length, capacity, new queries)
            let sequences = [(300, 320, 2), (3, 16, 3), (20, 20, 1), (5, 8, 0)];
            let caches: Vec<(Tensor, Tensor, usize)> = sequences
                .iter()
                .map(|&(len, capacity, _)| {
                    let mut rows = |scale| {
                        let mut data = rng.vec(len * kv_dim, scale);
                        data.resize(capacity * kv_dim, f32::NAN);
                        tensor(&device, dtype, &[capacity, kv_dim], &data)
                    };
                    (rows(2.0), rows(1.0), len)
                })
                .collect();
            let mut q_starts = vec![0];
            for &(_, _, n) in &sequences {
                q_starts.push(q_starts[q_starts.len() - 1] + n);
            }
            let tq = q_starts[sequences.len()];
            let width = h_ * shape.head_dim;
            let q = tensor(&device, dtype, &[tq, width], &rng.vec(tq * width, 2.0));
            let hosts: Vec<(Vec<f64>, Vec<f64>, usize)> = caches
                .iter()
                .map(|(k, v, len)| (host(k), host(v), *len))
                .collect();
            let refs: Vec<(&[f64], &[f64], usize)> = hosts
                .iter()
                .map(|(k, v, len)| (k.as_slice(), v.as_slice(), *len))
                .collect();
            let want = reference::attention_decode(&host(&q), &refs, &q_starts, shape);
            let views: Vec<KvCacheView> = caches
                .iter()
                .map(|(k, v, len)| KvCacheView { k, v, len: *len })
                .collect();
            let got = attention_decode_forward(&q, &views, &q_starts, shape).unwrap();
            check(tolerance(dtype), &what, &device, dtype, &host(&got), &want);
        }
    }
}

/// Both paths of the backward (logits recomputed, part kept, all kept: budgets of 0, 32 columns
/// and unlimited) against the f64 reference, whose backward is checked by finite differences in
/// `reference`'s tests; the log-probabilities come back per token.
#[test]
fn linear_cross_entropy_matches_the_dense_reference_on_every_device() {
    for (device, dtype) in devices() {
        let mut rng = Rng::new(6);
        let (t, d, v) = (6, 9, 70);
        let targets = [3, IGNORE, 69, 40, IGNORE, 0];
        let x = tensor(&device, dtype, &[t, d], &rng.vec(t * d, 2.0));
        let w = tensor(&device, dtype, &[v, d], &rng.vec(v * d, 1.0));
        let (xs, ws) = (host(&x), host(&w));
        let scale = 0.5;
        let loss = reference::linear_cross_entropy(&xs, &ws, &targets, d);
        let (dx, dw) = reference::linear_cross_entropy_backward(&xs, &ws, &targets, d, scale);
        let logprob: Vec<f64> = (0..t)
            .map(|i| match targets[i] {
                IGNORE => 0.0,
                y => -reference::linear_cross_entropy(&xs[i * d..(i + 1) * d], &ws, &[y], d),
            })
            .collect();
        let tol = tolerance(dtype);
        let n = 4;
        for chunk in [32, 70, 1000] {
            // A budget of 32 columns keeps only whole chunks: 32 with chunks of 32, none with
            // larger ones.
            let part = if chunk == 32 { 32 } else { 0 };
            for (budget, kept) in [(0, 0), (n * 4 * 32, part), (usize::MAX, v)] {
                let what = format!("chunk {chunk}, {kept} kept:");
                let fwd = linear_cross_entropy_forward(&x, &w, &targets, chunk, budget).unwrap();
                assert_eq!(fwd.kept_columns(), kept, "{what}");
                check(
                    tol,
                    &format!("{what} loss"),
                    &device,
                    dtype,
                    &[fwd.loss_sum],
                    &[loss],
                );
                let got = f64s(&fwd.token_logprobs().unwrap());
                check(
                    tol,
                    &format!("{what} log p"),
                    &device,
                    dtype,
                    &got,
                    &logprob,
                );
                assert_eq!(fwd.count, n);
                let mut dwt = tensor(&device, DType::F32, &[v, d], &vec![0.0; v * d]);
                let dxt = linear_cross_entropy_backward(
                    &x,
                    &w,
                    &targets,
                    fwd,
                    scale as f32,
                    chunk,
                    Some(&mut dwt),
                )
                .unwrap();
                check(tol, &format!("{what} dx"), &device, dtype, &host(&dxt), &dx);
                check(tol, &format!("{what} dW"), &device, dtype, &host(&dwt), &dw);
            }
        }
    }
}

/// Every trainable tensor in one multi-tensor step (on CUDA: tensors of several chunks, one
/// launch per gradient dtype), with a clipping coefficient and a working copy refreshed from its
/// master, against the one-element-at-a-time reference; and the norm over tensors of both
/// dtypes at once.
/// The AdamW settings of the optimizer tests: large enough steps that an error shows.
const TEST_ADAMW: AdamWParams = AdamWParams {
    lr: 0.1,
    beta1: 0.8,
    beta2: 0.95,
    eps: 1e-6,
    weight_decay: 0.1,
};

#[test]
fn multi_tensor_adamw_and_norm_match_the_reference_on_every_device() {
    for (device, dtype) in devices() {
        let mut rng = Rng::new(11);
        let sizes = [5usize, 2 * 16_384 + 100, 16_384];
        let hp = TEST_ADAMW;
        let grad_scale = 0.5f32;
        let p0: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec(n, 1.0)).collect();
        let mut p: Vec<_> = p0
            .iter()
            .map(|x| tensor(&device, DType::F32, &[x.len()], x))
            .collect();
        let zeros = |n: usize| tensor(&device, DType::F32, &[n], &vec![0.0; n]);
        let mut m: Vec<_> = sizes.iter().map(|&n| zeros(n)).collect();
        let mut v: Vec<_> = sizes.iter().map(|&n| zeros(n)).collect();
        // The working copy is bf16 where the device has bf16 tensors.
        let working_dtype = if device.is_cuda() {
            DType::BF16
        } else {
            DType::F32
        };
        let mut working = tensor(&device, working_dtype, &[sizes[1]], &vec![0.0; sizes[1]]);
        let mut want: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = p0
            .iter()
            .map(|x| (f64s(x), vec![0.0; x.len()], vec![0.0; x.len()]))
            .collect();
        for step in 1..=3u64 {
            let g: Vec<_> = sizes
                .iter()
                .map(|&n| tensor(&device, dtype, &[n], &rng.vec(n, 1.0)))
                .collect();
            let mut work = Some(&mut working);
            let mut tensors: Vec<AdamWTensor> = p
                .iter_mut()
                .zip(&g)
                .zip(m.iter_mut().zip(v.iter_mut()))
                .enumerate()
                .map(|(i, ((param, grad), (m, v)))| AdamWTensor {
                    param,
                    grad,
                    m,
                    v,
                    working: if i == 1 { work.take() } else { None },
                })
                .collect();
            adamw_step_many(&mut tensors, step, hp, grad_scale).unwrap();
            for (grad, (rp, rm, rv)) in g.iter().zip(&mut want) {
                let scaled: Vec<f64> = host(grad)
                    .into_iter()
                    .map(|gi| gi * grad_scale as f64)
                    .collect();
                reference::adamw_step(rp, rm, rv, &scaled, step, hp);
            }
        }
        for (t, (param, (rp, _, _))) in p.iter().zip(&want).enumerate() {
            let what = format!("multi-tensor AdamW param {t}");
            check(Tolerance::F32, &what, &device, dtype, &host(param), rp);
        }
        let master = host(&p[1]);
        let rounded: Vec<f64> = match working_dtype {
            DType::BF16 => master
                .iter()
                .map(|&x| half::bf16::from_f64(x).to_f64())
                .collect(),
            DType::F32 => master,
        };
        assert_eq!(host(&working), rounded, "working copy on {device}");

        // The norm over gradients of two dtypes where the device has both.
        let a = tensor(&device, dtype, &[40_000], &rng.vec(40_000, 1.0));
        let b = tensor(&device, DType::F32, &[7, 11], &rng.vec(77, 3.0));
        let all: Vec<f64> = host(&a).into_iter().chain(host(&b)).collect();
        let want = all.iter().map(|x| x * x).sum::<f64>().sqrt();
        let norm = global_grad_norm(&[&a, &b]).unwrap();
        check(
            Tolerance::F32,
            "multi-tensor grad norm",
            &device,
            dtype,
            &[norm],
            &[want],
        );
    }
}

#[test]
fn adamw_and_grad_norm_match_the_reference_on_every_device() {
    for (device, dtype) in devices() {
        let mut rng = Rng::new(7);
        let n = 1000;
        let hp = TEST_ADAMW;
        let p0 = rng.vec(n, 1.0);
        let mut p = tensor(&device, DType::F32, &[n], &p0);
        let mut m = tensor(&device, DType::F32, &[n], &vec![0.0; n]);
        let mut v = tensor(&device, DType::F32, &[n], &vec![0.0; n]);
        let (mut rp, mut rm, mut rv) = (f64s(&p0), vec![0.0; n], vec![0.0; n]);
        for step in 1..=3u64 {
            let g = tensor(&device, dtype, &[n], &rng.vec(n, 1.0));
            adamw_step(&mut p, &g, &mut m, &mut v, step, hp).unwrap();
            reference::adamw_step(&mut rp, &mut rm, &mut rv, &host(&g), step, hp);
        }
        check(
            Tolerance::F32,
            "AdamW param",
            &device,
            dtype,
            &host(&p),
            &rp,
        );

        let mut a = tensor(&device, dtype, &[300], &rng.vec(300, 1.0));
        let mut b = tensor(&device, dtype, &[7, 11], &rng.vec(77, 3.0));
        let all: Vec<f64> = host(&a).into_iter().chain(host(&b)).collect();
        let want = all.iter().map(|x| x * x).sum::<f64>().sqrt();
        let norm = global_grad_norm(&[&a, &b]).unwrap();
        check(
            Tolerance::F32,
            "grad norm",
            &device,
            dtype,
            &[norm],
            &[want],
        );
        let before = clip_grad_norm(&mut [&mut a, &mut b], 1.0).unwrap();
        check(
            Tolerance::F32,
            "norm before clipping",
            &device,
            dtype,
            &[before],
            &[want],
        );
        let after = global_grad_norm(&[&a, &b]).unwrap();
        check(
            tolerance(dtype),
            "norm after clipping",
            &device,
            dtype,
            &[after],
            &[1.0],
        );
    }
}

/// The reductions that DESIGN §4 wants deterministic (no float atomics) give the same bits when
/// run twice on the same inputs: embedding dTable, RMSNorm dW, attention dQ/dK/dV, the gradient
/// norm and the cross-entropy head gradient.
#[test]
fn backward_reductions_give_the_same_bits_twice_on_every_device() {
    for (device, dtype) in devices() {
        let mut rng = Rng::new(8);
        let bits = |t: &flix_kernels::Tensor| -> Vec<u32> {
            t.to_f32_vec()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let twice = |f: &mut dyn FnMut() -> Vec<u32>, what: &str| {
            let (a, b) = (f(), f());
            assert!(a == b, "{what} on {device} {dtype}: two runs differ");
        };

        let (v, d) = (5, 40);
        let ids: Vec<u32> = (0..200).map(|i| (i * 7 % 5) as u32).collect();
        let dout = tensor(
            &device,
            dtype,
            &[ids.len(), d],
            &rng.vec(ids.len() * d, 1.0),
        );
        twice(
            &mut || {
                let mut dt = tensor(&device, dtype, &[v, d], &vec![0.0; v * d]);
                embedding_backward(&mut dt, &TokenIds::new(&device, &ids).unwrap(), &dout).unwrap();
                bits(&dt)
            },
            "embedding dTable",
        );

        let rows = 300;
        let x = tensor(&device, dtype, &[rows, d], &rng.vec(rows * d, 1.0));
        let w = tensor(&device, dtype, &[d], &rng.vec(d, 1.0));
        let dy = tensor(&device, dtype, &[rows, d], &rng.vec(rows * d, 1.0));
        let (_, rstd) = rmsnorm_forward(&x, &w, 1e-5).unwrap();
        twice(
            &mut || {
                let mut dw = tensor(&device, DType::F32, &[d], &vec![0.0; d]);
                rmsnorm_backward(&dy, &x, &w, &rstd, Some(&mut dw)).unwrap();
                bits(&dw)
            },
            "RMSNorm dW",
        );

        let shape = AttentionShape::new(2, 1, 16);
        let (t, starts) = (70, [0, 50, 70]);
        let q = tensor(&device, dtype, &[t, 32], &rng.vec(t * 32, 1.0));
        let k = tensor(&device, dtype, &[t, 16], &rng.vec(t * 16, 1.0));
        let vv = tensor(&device, dtype, &[t, 16], &rng.vec(t * 16, 1.0));
        let go = tensor(&device, dtype, &[t, 32], &rng.vec(t * 32, 1.0));
        let segments = SegmentStarts::new(&device, &starts).unwrap();
        let (o, lse) = attention_forward(&q, &k, &vv, &segments, shape).unwrap();
        twice(
            &mut || {
                let (dq, dk, dv) =
                    attention_backward(&go, &q, &k, &vv, &o, &lse, &segments, shape).unwrap();
                [bits(&dq), bits(&dk), bits(&dv)].concat()
            },
            "attention dQ, dK, dV",
        );

        let g = tensor(&device, dtype, &[5000], &rng.vec(5000, 1.0));
        twice(
            &mut || {
                let norm = global_grad_norm(&[&g]).unwrap().to_bits();
                vec![norm as u32, (norm >> 32) as u32]
            },
            "gradient norm",
        );

        let targets: Vec<i32> = (0..rows as i32).map(|i| i % 11).collect();
        let head = tensor(&device, dtype, &[11, d], &rng.vec(11 * d, 1.0));
        // Half the vocabulary's logits kept: both backward paths at once.
        let budget = rows * 4 * 8;
        twice(
            &mut || {
                let fwd = linear_cross_entropy_forward(&x, &head, &targets, 4, budget).unwrap();
                let mut dw = tensor(&device, DType::F32, &[11, d], &vec![0.0; 11 * d]);
                linear_cross_entropy_backward(&x, &head, &targets, fwd, 1.0, 4, Some(&mut dw))
                    .unwrap();
                bits(&dw)
            },
            "cross-entropy dW",
        );
    }
}

/// On CUDA, a launcher refuses activations of two dtypes and names both tensors.
#[test]
fn cuda_launchers_name_both_tensors_when_dtypes_differ() {
    let Some(cuda) = common::cuda_or_skip() else {
        return;
    };
    let gate = tensor(&cuda, DType::F32, &[2, 3], &[0.5; 6]);
    let up = tensor(&cuda, DType::BF16, &[2, 3], &[0.5; 6]);
    let err = swiglu_forward(&gate, &up).unwrap_err().to_string();
    assert!(err.contains("f32") && err.contains("bf16"), "{err}");
    let x = tensor(&cuda, DType::BF16, &[2, 3], &[0.5; 6]);
    let w = tensor(&cuda, DType::F32, &[3], &[1.0; 3]);
    let err = rmsnorm_forward(&x, &w, 1e-5).unwrap_err().to_string();
    assert!(err.contains("weight") && err.contains("x"), "{err}");
}
