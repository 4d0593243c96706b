//! The CUDA launchers and kernels against the f64 oracle on shapes that reach every branch of the
//! kernels, which the small random cases of `flix_ops.rs` do not: R above 32 (several column
//! blocks in shrink, dH/dB and dA, several rank chunks in expand/dX), segments of several 64-token
//! tiles (longer than a run of the weight-gradient kernels), widths that are multiples of 8
//! (16-byte loads) and not, K = 8, a long dimension split many ways and not split at all, and the
//! gradient workspace in several groups of runs. Also: the same bits twice. And attention at head_dim 256 with sliding windows and custom scales against
//! the CPU path.
//! CUDA only: without a GPU it says it skipped (FLIX_REQUIRE_GPU=1 makes that a failure).

mod common;

use common::{cuda_or_skip, host, tensor, tolerance, Case, Problem, Rng};
use flix_core::{SegmentSpec, TypeShape, ABSENT};
use flix_kernels::batch::SegmentStarts;
use flix_kernels::flix::{self, cpu_ref, AdapterGrads, DevicePlan, Write};
use flix_kernels::{DType, Device};

fn case(
    ranks_values: &[(usize, usize)],
    lens_slots: &[(usize, &[i32])],
    d: (usize, usize),
) -> Case {
    Case {
        types: ranks_values
            .iter()
            .map(|&(rank, num_values)| TypeShape { rank, num_values })
            .collect(),
        scales: (0..ranks_values.len())
            .map(|k| 0.5 + 0.25 * k as f32)
            .collect(),
        segments: lens_slots
            .iter()
            .map(|&(len, slots)| SegmentSpec {
                len,
                slots: slots.to_vec(),
            })
            .collect(),
        d_in: d.0,
        d_out: d.1,
    }
}

fn cases() -> Vec<(&'static str, Case)> {
    const A: i32 = ABSENT;
    vec![
        (
            "R=44, three tiles in one segment, widths multiple of 8",
            case(
                &[(24, 5), (20, 3)],
                &[
                    (150, &[4, 2]),
                    (1, &[0, A]),
                    (0, &[1, 1]),
                    (70, &[A, 0]),
                    (9, &[4, 1]),
                ],
                (264, 72),
            ),
        ),
        (
            "K=8, R=36, odd widths",
            case(
                &[
                    (1, 2),
                    (2, 2),
                    (3, 2),
                    (4, 2),
                    (5, 2),
                    (6, 2),
                    (7, 2),
                    (8, 2),
                ],
                &[
                    (65, &[0, 1, 0, 1, 0, 1, 0, 1]),
                    (3, &[1, A, 1, 0, A, 0, 1, 0]),
                    (64, &[A; 8]),
                ],
                (33, 65),
            ),
        ),
        (
            "one tile, long dimensions split many ways",
            case(&[(16, 1)], &[(20, &[0])], (1000, 777)),
        ),
    ]
}

fn check(device: &Device, dtype: DType, name: &str, case: &Case, seed: u64) {
    let mut rng = Rng::new(seed);
    let p = Problem::new(case, &mut rng, device, dtype);
    let plan = DevicePlan::new(device, p.plan.clone()).unwrap();
    let (t, r) = (p.plan.num_tokens(), p.plan.total_rank());
    let tol = tolerance(dtype);
    let what = |op: &str| format!("{op}: {name}, {dtype}");

    let mut h = tensor(device, dtype, &[t, r], &rng.vec(t * r, 9.0));
    flix::shrink(&plan, &p.adapters, &p.x, &mut h).unwrap();
    let want_h = cpu_ref::shrink(&p.plan, &p.layer, &p.x_ref);
    tol.check_scaled(&what("H"), &host(&h), &want_h).unwrap();

    let h_ref = host(&h);
    let mut y = tensor(
        device,
        dtype,
        &[t, case.d_out],
        &rng.vec(t * case.d_out, 9.0),
    );
    flix::expand(&plan, &p.adapters, &h, &mut y, Write::Overwrite).unwrap();
    let want_y = cpu_ref::expand(&p.plan, &p.layer, &h_ref);
    tol.check_scaled(&what("Y"), &host(&y), &want_y).unwrap();

    let want = cpu_ref::backward(&p.plan, &p.layer, &p.x_ref, &h_ref, &p.dy_ref);
    let mut bits = Vec::new();
    for _ in 0..2 {
        let mut dx = tensor(device, dtype, &[t, case.d_in], &rng.vec(t * case.d_in, 9.0));
        let mut g = AdapterGrads::zeros(&p.adapters).unwrap();
        flix::backward(
            &plan,
            &p.adapters,
            &p.x,
            &h,
            &p.dy,
            Some(&mut dx),
            Write::Overwrite,
            &mut g,
        )
        .unwrap();
        tol.check_scaled(&what("dX"), &host(&dx), &want.dx).unwrap();
        for (k, (got, w)) in g.da.iter().zip(&want.da).enumerate() {
            tol.check_scaled(&what(&format!("dA[{k}]")), &host(got), w)
                .unwrap();
        }
        for (k, (got, w)) in g.db.iter().zip(&want.db).enumerate() {
            tol.check_scaled(&what(&format!("dB[{k}]")), &host(got), w)
                .unwrap();
        }
        let mut run: Vec<u32> = dx
            .to_f32_vec()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        for gt in g.da.iter().chain(&g.db) {
            run.extend(gt.to_f32_vec().unwrap().iter().map(|v| v.to_bits()));
        }
        bits.push(run);
    }
    assert!(
        bits[0] == bits[1],
        "{}: backward gave different bits twice",
        what("dX/dA/dB")
    );
}

#[test]
fn kernels_match_the_oracle_on_shapes_that_reach_every_branch() {
    let Some(device) = cuda_or_skip() else {
        return;
    };
    for dtype in [DType::F32, DType::BF16] {
        for (i, (name, case)) in cases().iter().enumerate() {
            check(&device, dtype, name, case, i as u64);
        }
        // The first case again with a workspace budget of two partial slots of the narrower
        // gradient (min(d_in, d_out) x R f32 each), so that its pass runs in groups of runs
        // holding at most two slots and the other's one run at a time.
        // (One test function: the variable is process-wide.)
        let (_, first) = &cases()[0];
        let per_segment = first.d_out.min(first.d_in) * 44 * 4;
        std::env::set_var(
            "FLIX_CUDA_PARTIAL_BUDGET_BYTES",
            (2 * per_segment).to_string(),
        );
        check(&device, dtype, "workspace groups of two slots", first, 7);
        std::env::remove_var("FLIX_CUDA_PARTIAL_BUDGET_BYTES");
        // Every case unsplit, so that shrink and dH loop over the whole long dimension in one
        // block (the split otherwise gives small batches one 64-wide step per block).
        std::env::set_var("FLIX_CUDA_TARGET_BLOCKS", "1");
        for (i, (name, case)) in cases().iter().enumerate() {
            check(
                &device,
                dtype,
                &format!("{name}, unsplit"),
                case,
                10 + i as u64,
            );
        }
        std::env::remove_var("FLIX_CUDA_TARGET_BLOCKS");
    }
}

/// The bf16 kernels read the adapters' bf16 working copy: after the f32 masters change, by a
/// write (a new stamp) or by an optimizer step that rounds the update into the copy in the same
/// pass, every op must see the new values. H, Y and dX against the oracle of the new adapters.
#[test]
fn bf16_kernels_follow_the_adapters_through_writes_and_optimizer_steps() {
    use flix_kernels::ops::adamw::{adamw_step_many, AdamWParams, AdamWTensor};
    use flix_kernels::ops::cast;

    let Some(device) = cuda_or_skip() else {
        return;
    };
    let dtype = DType::BF16;
    let (name, case) = &cases()[0];
    let mut rng = Rng::new(3);
    let mut p = Problem::new(case, &mut rng, &device, dtype);
    let plan = DevicePlan::new(&device, p.plan.clone()).unwrap();
    let (t, r) = (p.plan.num_tokens(), p.plan.total_rank());
    let tol = tolerance(dtype);
    let check_ops = |p: &Problem, when: &str| {
        let layer = cpu_ref::RefLayer::from_adapters(&p.adapters).unwrap();
        let what = |op: &str| format!("{op}: {name}, {when}");
        let mut h = tensor(&device, dtype, &[t, r], &vec![0.0; t * r]);
        flix::shrink(&plan, &p.adapters, &p.x, &mut h).unwrap();
        tol.check_scaled(
            &what("H"),
            &host(&h),
            &cpu_ref::shrink(&p.plan, &layer, &p.x_ref),
        )
        .unwrap();
        let h_ref = host(&h);
        let mut y = tensor(&device, dtype, &[t, case.d_out], &vec![0.0; t * case.d_out]);
        flix::expand(&plan, &p.adapters, &h, &mut y, Write::Overwrite).unwrap();
        tol.check_scaled(
            &what("Y"),
            &host(&y),
            &cpu_ref::expand(&p.plan, &layer, &h_ref),
        )
        .unwrap();
        let mut dx = tensor(&device, dtype, &[t, case.d_in], &vec![0.0; t * case.d_in]);
        let mut g = AdapterGrads::zeros(&p.adapters).unwrap();
        flix::backward(
            &plan,
            &p.adapters,
            &p.x,
            &h,
            &p.dy,
            Some(&mut dx),
            Write::Overwrite,
            &mut g,
        )
        .unwrap();
        let want = cpu_ref::backward(&p.plan, &layer, &p.x_ref, &h_ref, &p.dy_ref);
        tol.check_scaled(&what("dX"), &host(&dx), &want.dx).unwrap();
        g
    };

    check_ops(&p, "first use");
    assert!(p
        .adapters
        .copies_current(dtype)
        .iter()
        .all(|&c| c == (true, true)));

    // A write to one master (here a cast into it): its copy is stale until the next launch.
    let shape = p.adapters.types[1].b.shape().to_vec();
    let fresh = tensor(
        &device,
        DType::F32,
        &shape,
        &rng.vec(shape.iter().product(), 1.0),
    );
    cast(&fresh, &mut p.adapters.types[1].b).unwrap();
    assert_eq!(p.adapters.copies_current(dtype)[1], (true, false));
    let grads = check_ops(&p, "after a write to B[1]");

    // An optimizer step that writes the copies with the masters: current without a cast.
    let mut moments: Vec<_> = (0..2 * p.adapters.types.len())
        .map(|i| {
            let k = i / 2;
            let shape = if i % 2 == 0 {
                grads.da[k].shape()
            } else {
                grads.db[k].shape()
            };
            let zeros = || flix_kernels::Tensor::zeros(&device, DType::F32, shape).unwrap();
            (zeros(), zeros())
        })
        .collect();
    {
        let tensors = p.adapters.optimizer_tensors_mut();
        let mut step = Vec::new();
        for ((k, ty), pair) in tensors.into_iter().enumerate().zip(moments.chunks_mut(2)) {
            let (ma, mb) = pair.split_at_mut(1);
            let (m_a, v_a) = &mut ma[0];
            let (m_b, v_b) = &mut mb[0];
            step.push(AdamWTensor {
                param: ty.a,
                grad: &grads.da[k],
                m: m_a,
                v: v_a,
                working: ty.a_working,
            });
            step.push(AdamWTensor {
                param: ty.b,
                grad: &grads.db[k],
                m: m_b,
                v: v_b,
                working: ty.b_working,
            });
        }
        let hp = AdamWParams {
            lr: 0.05,
            ..AdamWParams::default()
        };
        adamw_step_many(&mut step, 1, hp, 1.0).unwrap();
    }
    p.adapters.copy_written_by_optimizer();
    assert!(p
        .adapters
        .copies_current(dtype)
        .iter()
        .all(|&c| c == (true, true)));
    check_ops(&p, "after an optimizer step");
}

/// Attention on CUDA against the CPU path on the same (rounded) inputs, at each head-dim limit of
/// the kernels (64, 128, 256: Gemma 3's head_dim) with sliding windows shorter than a tile,
/// longer than a tile and none, and scales other than 1/√head_dim: forward (O, lse), backward
/// (dQ, dK, dV, the same bits twice) and the decode step against long caches; in bf16 the forward
/// runs on the tensor cores at head dims 128 and 256 and on the FMA path at 40. Segments span
/// many 16-row tiles, so windowed tiles start past their segment's first key chunk and the dK/dV
/// blocks stop before their segment's end.
#[test]
fn attention_matches_the_cpu_path_with_windows_scales_and_head_dim_256() {
    use flix_kernels::ops::attention::{
        attention_backward, attention_decode_forward, attention_decode_layer, attention_forward,
        AttentionShape, DecodeLayerCaches, DecodeStep, KvCacheView,
    };
    let Some(cuda) = cuda_or_skip() else {
        return;
    };
    let shape = |heads, kv_heads, head_dim, scale, window| AttentionShape {
        scale,
        window,
        ..AttentionShape::new(heads, kv_heads, head_dim)
    };
    let shapes = [
        shape(4, 1, 256, 0.0625, Some(5)),
        shape(4, 1, 256, 0.09, Some(40)),
        shape(2, 2, 256, 0.04, None),
        shape(4, 2, 128, 0.1, Some(17)),
        shape(6, 3, 40, 0.3, Some(3)),
    ];
    let cpu = Device::Cpu;
    for dtype in [DType::F32, DType::BF16] {
        let tol = tolerance(dtype);
        for (n, s) in shapes.into_iter().enumerate() {
            let mut rng = Rng::new(40 + n as u64);
            let (h, hkv, hd) = (s.heads, s.kv_heads, s.head_dim);
            let what = |name: &str| format!("{name}: {s:?}, {dtype}");
            // A one-token segment, a long one (10 tiles), an empty one and a short one.
            let starts = [0, 1, 151, 151, 170];
            let t = 170;
            // Each input on both devices, the CPU copy holding CUDA's rounded values.
            let pair = |rng: &mut Rng, rows: usize, cols: usize, scale: f32| {
                let on_cuda = tensor(&cuda, dtype, &[rows, cols], &rng.vec(rows * cols, scale));
                let values: Vec<f32> = host(&on_cuda).iter().map(|&x| x as f32).collect();
                (on_cuda, tensor(&cpu, DType::F32, &[rows, cols], &values))
            };
            let (q, q_cpu) = pair(&mut rng, t, h * hd, 2.0);
            let (k, k_cpu) = pair(&mut rng, t, hkv * hd, 2.0);
            let (v, v_cpu) = pair(&mut rng, t, hkv * hd, 1.0);
            let (dout, dout_cpu) = pair(&mut rng, t, h * hd, 1.0);

            let segments = SegmentStarts::new(&cuda, &starts).unwrap();
            let cpu_segments = SegmentStarts::new(&cpu, &starts).unwrap();
            let (o, lse) = attention_forward(&q, &k, &v, &segments, s).unwrap();
            let (o_cpu, lse_cpu) =
                attention_forward(&q_cpu, &k_cpu, &v_cpu, &cpu_segments, s).unwrap();
            tol.check_scaled(&what("O"), &host(&o), &host(&o_cpu))
                .unwrap();
            let f64s = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
            let host32 = |t: &flix_kernels::Tensor| t.to_f32_vec().unwrap();
            flix_kernels::Tolerance::F32
                .check_scaled(&what("lse"), &f64s(&host32(&lse)), &f64s(&host32(&lse_cpu)))
                .unwrap();

            // The CPU backward from the CPU forward, CUDA's from CUDA's (as training runs).
            let (dq_cpu, dk_cpu, dv_cpu) = attention_backward(
                &dout_cpu,
                &q_cpu,
                &k_cpu,
                &v_cpu,
                &o_cpu,
                &lse_cpu,
                &cpu_segments,
                s,
            )
            .unwrap();
            let mut bits = Vec::new();
            for _ in 0..2 {
                let (dq, dk, dv) =
                    attention_backward(&dout, &q, &k, &v, &o, &lse, &segments, s).unwrap();
                tol.check_scaled(&what("dQ"), &host(&dq), &host(&dq_cpu))
                    .unwrap();
                tol.check_scaled(&what("dK"), &host(&dk), &host(&dk_cpu))
                    .unwrap();
                tol.check_scaled(&what("dV"), &host(&dv), &host(&dv_cpu))
                    .unwrap();
                let run: Vec<u32> = [dq, dk, dv]
                    .iter()
                    .flat_map(|x| x.to_f32_vec().unwrap())
                    .map(|x| x.to_bits())
                    .collect();
                bits.push(run);
            }
            assert!(
                bits[0] == bits[1],
                "{}",
                what("backward gave different bits twice")
            );

            // Decode against per-sequence caches: 1, 2 and no new queries against caches of
            // 600 (split over three work units), 40 and 7 keys, capacities past the lengths;
            // the window slides with the cache.
            let sequences = [(600, 700, 1), (40, 64, 2), (7, 16, 0)];
            let mut caches = Vec::new();
            for &(len, capacity, _) in &sequences {
                let (k, k_cpu) = pair(&mut rng, capacity, hkv * hd, 2.0);
                let (v, v_cpu) = pair(&mut rng, capacity, hkv * hd, 1.0);
                caches.push((k, v, k_cpu, v_cpu, len));
            }
            let (cq, cq_cpu) = pair(&mut rng, 3, h * hd, 2.0);
            let q_starts = [0, 1, 3, 3];
            let on_cuda: Vec<KvCacheView> = caches
                .iter()
                .map(|(k, v, _, _, len)| KvCacheView { k, v, len: *len })
                .collect();
            let on_cpu: Vec<KvCacheView> = caches
                .iter()
                .map(|(_, _, k, v, len)| KvCacheView { k, v, len: *len })
                .collect();
            let got = attention_decode_forward(&cq, &on_cuda, &q_starts, s).unwrap();
            let want = attention_decode_forward(&cq_cpu, &on_cpu, &q_starts, s).unwrap();
            tol.check_scaled(&what("decode O"), &host(&got), &host(&want))
                .unwrap();
            let again = attention_decode_forward(&cq, &on_cuda, &q_starts, s).unwrap();
            assert!(
                host(&again) == host(&got),
                "{}",
                what("decode gave different values twice")
            );

            // One step for two layers (this shape and a 2-key window), its tables uploaded once:
            // each layer gives the bits of its own one-layer call; caches that moved after the
            // step was built (copies elsewhere) are still read where they now lie.
            let narrow = AttentionShape {
                window: Some(2),
                ..s
            };
            let layers = [
                DecodeLayerCaches {
                    shape: s,
                    caches: &on_cuda,
                },
                DecodeLayerCaches {
                    shape: narrow,
                    caches: &on_cuda,
                },
            ];
            let step = DecodeStep::new(&cuda, &q_starts, &layers).unwrap();
            let layer0 = attention_decode_layer(&cq, &step, 0, &on_cuda).unwrap();
            assert!(host(&layer0) == host(&got), "{}", what("step layer 0"));
            let layer1 = attention_decode_layer(&cq, &step, 1, &on_cuda).unwrap();
            let narrow_alone = attention_decode_forward(&cq, &on_cuda, &q_starts, narrow).unwrap();
            assert!(
                host(&layer1) == host(&narrow_alone),
                "{}",
                what("step layer 1")
            );
            let moved: Vec<_> = caches
                .iter()
                .map(|(k, v, _, _, len)| {
                    let copy = |x: &flix_kernels::Tensor| {
                        let values: Vec<f32> = host(x).iter().map(|&e| e as f32).collect();
                        tensor(&cuda, dtype, x.shape(), &values)
                    };
                    (copy(k), copy(v), *len)
                })
                .collect();
            let moved_views: Vec<KvCacheView> = moved
                .iter()
                .map(|(k, v, len)| KvCacheView { k, v, len: *len })
                .collect();
            let from_moved = attention_decode_layer(&cq, &step, 0, &moved_views).unwrap();
            assert!(host(&from_moved) == host(&got), "{}", what("moved caches"));
        }
    }
    // Past the largest limit the launcher says so, naming both numbers.
    let s = AttentionShape::new(1, 1, 257);
    let x = tensor(&cuda, DType::F32, &[2, 257], &[0.5; 514]);
    let segments = SegmentStarts::new(&cuda, &[0, 2]).unwrap();
    let err = attention_forward(&x, &x, &x, &segments, s)
        .unwrap_err()
        .to_string();
    assert!(err.contains("257") && err.contains("256"), "{err}");
}
