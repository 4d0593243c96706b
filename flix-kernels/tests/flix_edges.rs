//! The FLix ops on the edges a random plan rarely hits (empty batches, every feature absent, many
//! values and types at once), determinism, and the launchers' rejection of bad arguments.
//! Every body runs on every available device.

mod common;

use common::{cuda_or_skip, devices, host, tensor, tolerance, Case, Problem, Rng};
use flix_core::{SegmentSpec, TypeShape, ABSENT};
use flix_kernels::flix::{
    self, cpu_ref, AdapterGrads, DevicePlan, LayerAdapters, TypeAdapter, Write,
};
use flix_kernels::{DType, Device, Tensor};

/// Runs every op once from garbage-filled H and Y and a random dX to accumulate into; returns
/// (H, Y, dX, dA..., dB...) as read back from the device, and dX's starting values.
fn run_all(device: &Device, dtype: DType, p: &Problem, rng: &mut Rng) -> (Vec<Vec<f32>>, Vec<f64>) {
    let plan = DevicePlan::new(device, p.plan.clone()).unwrap();
    let (t, r) = (p.plan.num_tokens(), p.plan.total_rank());
    let (d_in, d_out) = (p.layer.d_in, p.layer.d_out);
    let mut h = tensor(device, dtype, &[t, r], &rng.vec(t * r, 1.0));
    let mut y = tensor(device, dtype, &[t, d_out], &rng.vec(t * d_out, 1.0));
    let mut dx = tensor(device, dtype, &[t, d_in], &rng.vec(t * d_in, 1.0));
    let dx0 = host(&dx);
    let mut grads = AdapterGrads::zeros(&p.adapters).unwrap();
    flix::shrink(&plan, &p.adapters, &p.x, &mut h).unwrap();
    flix::expand(&plan, &p.adapters, &h, &mut y, Write::Overwrite).unwrap();
    flix::backward(
        &plan,
        &p.adapters,
        &p.x,
        &h,
        &p.dy,
        Some(&mut dx),
        Write::Accumulate,
        &mut grads,
    )
    .unwrap();
    let mut out = vec![
        h.to_f32_vec().unwrap(),
        y.to_f32_vec().unwrap(),
        dx.to_f32_vec().unwrap(),
    ];
    for g in grads.da.iter().chain(&grads.db) {
        out.push(g.to_f32_vec().unwrap());
    }
    (out, dx0)
}

fn case(types: &[(usize, usize)], segments: &[(usize, &[i32])], d_in: usize, d_out: usize) -> Case {
    Case {
        types: types
            .iter()
            .map(|&(rank, num_values)| TypeShape { rank, num_values })
            .collect(),
        scales: types
            .iter()
            .enumerate()
            .map(|(k, _)| 0.5 + k as f32)
            .collect(),
        segments: segments
            .iter()
            .map(|&(len, slots)| SegmentSpec {
                len,
                slots: slots.to_vec(),
            })
            .collect(),
        d_in,
        d_out,
    }
}

/// Checks every op of `case` against the oracle on every device.
fn check_against_oracle(case: &Case) {
    for (device, dtype) in devices() {
        let mut rng = Rng::new(3);
        let p = Problem::new(case, &mut rng, &device, dtype);
        let (got, dx0) = run_all(&device, dtype, &p, &mut Rng::new(4));
        let h = cpu_ref::shrink(&p.plan, &p.layer, &p.x_ref);
        // Y and dX are computed from the device's H, which may be rounded to bf16.
        let h_dev: Vec<f64> = got[0].iter().map(|&v| v as f64).collect();
        let y = cpu_ref::expand(&p.plan, &p.layer, &h_dev);
        let g = cpu_ref::backward(&p.plan, &p.layer, &p.x_ref, &h_dev, &p.dy_ref);
        let dx: Vec<f64> = g.dx.iter().zip(&dx0).map(|(a, b)| a + b).collect();
        let mut want = vec![h, y, dx];
        want.extend(g.da.into_iter().chain(g.db));
        assert_eq!(got.len(), want.len());
        for (i, (got, want)) in got.iter().zip(&want).enumerate() {
            let what = format!("output {i} (H, Y, dX, dA.., dB..) on {device} {dtype}, {case:?}");
            tolerance(dtype).check_scaled(&what, got, want).unwrap();
        }
    }
}

#[test]
fn empty_batches_do_nothing_and_succeed() {
    check_against_oracle(&case(&[(2, 3)], &[], 5, 7));
    check_against_oracle(&case(
        &[(2, 3), (1, 1)],
        &[(0, &[1, 0]), (0, &[ABSENT, 0])],
        5,
        7,
    ));
}

#[test]
fn batches_with_every_feature_absent_give_zero_updates() {
    let c = case(
        &[(3, 4), (2, 2)],
        &[(3, &[ABSENT, ABSENT]), (1, &[]), (5, &[ABSENT])],
        33,
        7,
    );
    check_against_oracle(&c);
    // And the oracle agrees that it is zero, so the check above is not vacuous about it.
    let p = Problem::new(&c, &mut Rng::new(3), &Device::Cpu, DType::F32);
    assert!(cpu_ref::shrink(&p.plan, &p.layer, &p.x_ref)
        .iter()
        .all(|&v| v == 0.0));
}

#[test]
fn four_types_two_hundred_values_and_long_segments() {
    let mut rng = Rng::new(11);
    let types = [(1, 200), (4, 3), (2, 1), (5, 200)];
    let slots: Vec<Vec<i32>> = (0..12)
        .map(|_| {
            types
                .iter()
                .map(|&(_, n)| {
                    if rng.chance(0.8) {
                        rng.below(n) as i32
                    } else {
                        ABSENT
                    }
                })
                .collect()
        })
        .collect();
    let segments: Vec<(usize, &[i32])> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (1 + (i * 7) % 40, s.as_slice()))
        .collect();
    check_against_oracle(&case(&types, &segments, 130, 33));
}

#[test]
fn every_op_gives_the_same_bits_twice() {
    // Long segments and few values, so that the reductions over users and tokens are long.
    let mut rng = Rng::new(5);
    let slots: Vec<Vec<i32>> = (0..24).map(|i: i32| vec![i % 2, i % 3 - 1, 0]).collect();
    let segments: Vec<(usize, &[i32])> = slots
        .iter()
        .map(|s| (rng.range(1, 70), s.as_slice()))
        .collect();
    let c = case(&[(16, 2), (8, 2), (4, 1)], &segments, 130, 96);
    for (device, dtype) in devices() {
        let p = Problem::new(&c, &mut Rng::new(6), &device, dtype);
        let (first, _) = run_all(&device, dtype, &p, &mut Rng::new(7));
        let (second, _) = run_all(&device, dtype, &p, &mut Rng::new(7));
        for (i, (a, b)) in first.iter().zip(&second).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same && a.len() == b.len(),
                "output {i} differs between runs on {device} {dtype}"
            );
        }
    }
}

fn small() -> (Case, Problem) {
    let c = case(&[(2, 3), (1, 2)], &[(3, &[0, 1]), (2, &[2, ABSENT])], 5, 7);
    let p = Problem::new(&c, &mut Rng::new(1), &Device::Cpu, DType::F32);
    (c, p)
}

fn err_text(r: flix_kernels::Result<()>) -> String {
    r.expect_err("the launcher should have rejected this call")
        .to_string()
}

#[test]
fn launchers_reject_bad_shapes_naming_both_shapes() {
    let (_, p) = small();
    let plan = DevicePlan::new(&Device::Cpu, p.plan.clone()).unwrap();
    let zeros = |shape: &[usize]| Tensor::zeros(&Device::Cpu, DType::F32, shape).unwrap();
    // X with the wrong width: [5, 6] instead of [5, 5].
    let e = err_text(flix::shrink(
        &plan,
        &p.adapters,
        &zeros(&[5, 6]),
        &mut zeros(&[5, 3]),
    ));
    assert!(
        e.contains("[5, 6]") && e.contains("[5, 5]") && e.contains("X"),
        "{e}"
    );
    // H with the wrong rank.
    let e = err_text(flix::shrink(&plan, &p.adapters, &p.x, &mut zeros(&[5, 4])));
    assert!(e.contains("[5, 4]") && e.contains("[5, 3]"), "{e}");
    // Y with the wrong token count.
    let e = err_text(flix::expand(
        &plan,
        &p.adapters,
        &zeros(&[5, 3]),
        &mut zeros(&[4, 7]),
        Write::Overwrite,
    ));
    assert!(e.contains("[4, 7]") && e.contains("[5, 7]"), "{e}");
    // An adapter whose rank disagrees with the plan.
    let bad = LayerAdapters::new(vec![
        TypeAdapter {
            scale: 1.0,
            a: zeros(&[3, 2, 5]),
            b: zeros(&[3, 7, 2]),
        },
        TypeAdapter {
            scale: 1.0,
            a: zeros(&[2, 2, 5]),
            b: zeros(&[2, 7, 2]),
        },
    ]);
    let e = err_text(flix::shrink(&plan, &bad, &p.x, &mut zeros(&[5, 3])));
    assert!(
        e.contains("[2, 2, 5]") && e.contains("[2, 1, 5]") && e.contains("type 1"),
        "{e}"
    );
    // Too few types.
    let one = LayerAdapters::new(vec![TypeAdapter {
        scale: 1.0,
        a: zeros(&[3, 2, 5]),
        b: zeros(&[3, 7, 2]),
    }]);
    let e = err_text(flix::shrink(&plan, &one, &p.x, &mut zeros(&[5, 3])));
    assert!(
        e.contains("1 feature types") && e.contains("plan has 2"),
        "{e}"
    );
    // Gradients shaped wrong.
    let mut grads = AdapterGrads::zeros(&p.adapters).unwrap();
    grads.db[1] = zeros(&[2, 7, 3]);
    let e = err_text(flix::backward(
        &plan,
        &p.adapters,
        &p.x,
        &zeros(&[5, 3]),
        &p.dy,
        None,
        Write::Overwrite,
        &mut grads,
    ));
    assert!(
        e.contains("[2, 7, 3]") && e.contains("[2, 7, 1]") && e.contains("dB"),
        "{e}"
    );
    // The base weight of the linear layer.
    let e = err_text(flix::linear_forward(
        &plan,
        &zeros(&[5, 7]),
        None,
        &p.adapters,
        &p.x,
        &mut zeros(&[5, 7]),
        &mut zeros(&[5, 3]),
    ));
    assert!(
        e.contains("[5, 7]") && e.contains("[7, 5]") && e.contains("W"),
        "{e}"
    );
}

#[test]
fn launchers_reject_mixed_dtypes_and_devices() {
    let (c, p) = small();
    let Some(cuda) = cuda_or_skip() else {
        return;
    };
    let (t, r) = (p.plan.num_tokens(), p.plan.total_rank());
    // A CPU plan given a CUDA tensor.
    let cpu_plan = DevicePlan::new(&Device::Cpu, p.plan.clone()).unwrap();
    let x_gpu = tensor(&cuda, DType::F32, &[t, c.d_in], &vec![0.0; t * c.d_in]);
    let mut h = Tensor::zeros(&Device::Cpu, DType::F32, &[t, r]).unwrap();
    let e = err_text(flix::shrink(&cpu_plan, &p.adapters, &x_gpu, &mut h));
    assert!(e.contains("cpu") && e.contains("cuda"), "{e}");
    // On CUDA: bf16 X with an f32 H.
    let q = Problem::new(&c, &mut Rng::new(1), &cuda, DType::BF16);
    let plan = DevicePlan::new(&cuda, q.plan.clone()).unwrap();
    let mut h = Tensor::zeros(&cuda, DType::F32, &[t, r]).unwrap();
    let e = err_text(flix::shrink(&plan, &q.adapters, &q.x, &mut h));
    assert!(e.contains("bf16") && e.contains("f32"), "{e}");
}

#[test]
fn gradients_add_up_across_micro_batches_and_zero_clears_them() {
    let c = case(
        &[(3, 4), (2, 2)],
        &[(4, &[1, 0]), (2, &[1, ABSENT]), (3, &[3, 1])],
        7,
        5,
    );
    for (device, dtype) in devices() {
        let p = Problem::new(&c, &mut Rng::new(8), &device, dtype);
        let plan = DevicePlan::new(&device, p.plan.clone()).unwrap();
        let (t, r) = (p.plan.num_tokens(), p.plan.total_rank());
        let mut h = Tensor::zeros(&device, dtype, &[t, r]).unwrap();
        flix::shrink(&plan, &p.adapters, &p.x, &mut h).unwrap();
        let mut grads = AdapterGrads::zeros(&p.adapters).unwrap();
        let step = |grads: &mut AdapterGrads| {
            flix::backward(
                &plan,
                &p.adapters,
                &p.x,
                &h,
                &p.dy,
                None,
                Write::Overwrite,
                grads,
            )
            .unwrap()
        };
        step(&mut grads);
        let once: Vec<Vec<f64>> = grads.da.iter().chain(&grads.db).map(host).collect();
        step(&mut grads);
        for (g, once) in grads.da.iter().chain(&grads.db).zip(&once) {
            let twice: Vec<f64> = once.iter().map(|v| 2.0 * v).collect();
            let what = format!("two micro-batches on {device} {dtype}");
            tolerance(dtype)
                .check_scaled(&what, &host(g), &twice)
                .unwrap();
        }
        assert!(
            once.iter().flatten().any(|&v| v != 0.0),
            "the gradients are not trivially zero"
        );
        grads.zero().unwrap();
        assert!(grads
            .da
            .iter()
            .chain(&grads.db)
            .all(|g| host(g).iter().all(|&v| v == 0.0)));
    }
}

#[test]
fn long_segments_across_many_tiles_and_wide_ranks() {
    // Segment lengths around and past the GPU's 64-token tiles, widths that are no multiple of
    // any tile, and a rank-64 type next to a rank-1 one.
    let slots: [&[i32]; 7] = [
        &[0, 1, 2],
        &[1, ABSENT, 0],
        &[0, 0, 2],
        &[2, 1],
        &[1, 1, 1],
        &[0, 0, 0],
        &[ABSENT, 1, 2],
    ];
    let lens = [64, 65, 1, 128, 200, 63, 17];
    let segments: Vec<(usize, &[i32])> = lens.iter().copied().zip(slots).collect();
    check_against_oracle(&case(&[(16, 3), (1, 2), (64, 3)], &segments, 130, 257));
}
