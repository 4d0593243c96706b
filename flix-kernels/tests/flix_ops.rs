//! Every FLix op against the plain-loop f64 oracle, on random plans with the edge cases of
//! DESIGN §8, on every available device (the CPU always; CUDA in f32 and bf16 when present).

mod common;

use common::{devices, host, tensor, tolerance, Case, Problem, Rng};
use flix_kernels::flix::{self, cpu_ref, AdapterGrads, DevicePlan, Write};
use flix_kernels::{DType, Device};

const CASES: u64 = 40;

/// Runs `body` on every device for `CASES` seeded random cases.
fn for_all_cases(mut body: impl FnMut(&Device, DType, &Case, &mut Rng)) {
    for (device, dtype) in devices() {
        for seed in 0..CASES {
            let mut rng = Rng::new(seed);
            let case = Case::random(&mut rng);
            body(&device, dtype, &case, &mut rng);
        }
    }
}

fn label(device: &Device, dtype: DType, case: &Case, what: &str) -> String {
    format!("{what} on {device} {dtype}, case {case:?}")
}

#[test]
fn shrink_matches_the_oracle() {
    for_all_cases(|device, dtype, case, rng| {
        let p = Problem::new(case, rng, device, dtype);
        let plan = DevicePlan::new(device, p.plan.clone()).unwrap();
        let (t, r) = (p.plan.num_tokens(), p.plan.total_rank());
        // Start from garbage: shrink must overwrite every element, absent columns included.
        let mut h = tensor(device, dtype, &[t, r], &rng.vec(t * r, 9.0));
        flix::shrink(&plan, &p.adapters, &p.x, &mut h).unwrap();
        let want = cpu_ref::shrink(&p.plan, &p.layer, &p.x_ref);
        tolerance(dtype)
            .check_scaled(&label(device, dtype, case, "H"), &host(&h), &want)
            .unwrap();
    });
}

#[test]
fn expand_matches_the_oracle_overwriting_and_accumulating() {
    for_all_cases(|device, dtype, case, rng| {
        let p = Problem::new(case, rng, device, dtype);
        let plan = DevicePlan::new(device, p.plan.clone()).unwrap();
        let (t, r, d_out) = (p.plan.num_tokens(), p.plan.total_rank(), case.d_out);
        let h = tensor(device, dtype, &[t, r], &rng.vec(t * r, 1.0));
        let h_ref = host(&h);
        let y0 = tensor(device, dtype, &[t, d_out], &rng.vec(t * d_out, 1.0));
        let y0_ref = host(&y0);
        let update = cpu_ref::expand(&p.plan, &p.layer, &h_ref);
        for write in [Write::Overwrite, Write::Accumulate] {
            let mut y = tensor(device, dtype, &[t, d_out], &y0.to_f32_vec().unwrap());
            flix::expand(&plan, &p.adapters, &h, &mut y, write).unwrap();
            let want: Vec<f64> = match write {
                Write::Overwrite => update.clone(),
                Write::Accumulate => update.iter().zip(&y0_ref).map(|(u, y)| u + y).collect(),
            };
            let what = label(device, dtype, case, &format!("Y ({write:?})"));
            tolerance(dtype)
                .check_scaled(&what, &host(&y), &want)
                .unwrap();
        }
    });
}

#[test]
fn backward_matches_the_oracle_and_accumulates_gradients() {
    for_all_cases(|device, dtype, case, rng| {
        let p = Problem::new(case, rng, device, dtype);
        let plan = DevicePlan::new(device, p.plan.clone()).unwrap();
        let (t, r, d_in) = (p.plan.num_tokens(), p.plan.total_rank(), case.d_in);
        let h = tensor(device, dtype, &[t, r], &rng.vec(t * r, 1.0));
        let h_ref = host(&h);
        let want = cpu_ref::backward(&p.plan, &p.layer, &p.x_ref, &h_ref, &p.dy_ref);
        let tol = tolerance(dtype);

        // Gradients start non-zero: the op must add to them, not overwrite.
        let mut grads = AdapterGrads::zeros(&p.adapters).unwrap();
        let mut start = Vec::new();
        for g in grads.da.iter_mut().chain(grads.db.iter_mut()) {
            let init = rng.vec(g.numel(), 1.0);
            *g = tensor(device, DType::F32, g.shape(), &init);
            start.push(init);
        }
        let dx0 = rng.vec(t * d_in, 1.0);
        for write in [Write::Overwrite, Write::Accumulate] {
            let mut dx = tensor(device, dtype, &[t, d_in], &dx0);
            let dx0_ref = host(&dx);
            let mut g = AdapterGrads::zeros(&p.adapters).unwrap();
            for (dst, init) in g.da.iter_mut().chain(g.db.iter_mut()).zip(&start) {
                *dst = tensor(device, DType::F32, dst.shape(), init);
            }
            flix::backward(
                &plan,
                &p.adapters,
                &p.x,
                &h,
                &p.dy,
                Some(&mut dx),
                write,
                &mut g,
            )
            .unwrap();
            let want_dx: Vec<f64> = match write {
                Write::Overwrite => want.dx.clone(),
                Write::Accumulate => want.dx.iter().zip(&dx0_ref).map(|(a, b)| a + b).collect(),
            };
            let what = label(device, dtype, case, &format!("dX ({write:?})"));
            tol.check_scaled(&what, &host(&dx), &want_dx).unwrap();
            let wants = want.da.iter().chain(&want.db);
            for (i, ((got, init), w)) in g.da.iter().chain(&g.db).zip(&start).zip(wants).enumerate()
            {
                let w: Vec<f64> = w.iter().zip(init).map(|(w, s)| w + *s as f64).collect();
                let name = if i < case.types.len() { "dA" } else { "dB" };
                // Gradients are f32 on every device, but their inputs may be bf16.
                tol.check_scaled(&label(device, dtype, case, name), &host(got), &w)
                    .unwrap();
            }
        }
        // Without dX the adapter gradients are the same.
        let mut g = AdapterGrads::zeros(&p.adapters).unwrap();
        flix::backward(
            &plan,
            &p.adapters,
            &p.x,
            &h,
            &p.dy,
            None,
            Write::Overwrite,
            &mut g,
        )
        .unwrap();
        for (got, w) in g.da.iter().zip(&want.da) {
            tol.check_scaled(&label(device, dtype, case, "dA (no dX)"), &host(got), w)
                .unwrap();
        }
    });
}

#[test]
fn linear_layer_matches_the_oracle() {
    for_all_cases(|device, dtype, case, rng| {
        let p = Problem::new(case, rng, device, dtype);
        let plan = DevicePlan::new(device, p.plan.clone()).unwrap();
        let (t, r, d_in, d_out) = (
            p.plan.num_tokens(),
            p.plan.total_rank(),
            case.d_in,
            case.d_out,
        );
        let w = tensor(device, dtype, &[d_out, d_in], &rng.vec(d_out * d_in, 0.5));
        let bias = tensor(device, dtype, &[d_out], &rng.vec(d_out, 1.0));
        let (w_ref, bias_ref) = (host(&w), host(&bias));
        let tol = tolerance(dtype);
        for with_bias in [false, true] {
            let mut y = tensor(device, dtype, &[t, d_out], &rng.vec(t * d_out, 9.0));
            let mut h = tensor(device, dtype, &[t, r], &rng.vec(t * r, 9.0));
            let b = with_bias.then_some(&bias);
            flix::linear_forward(&plan, &w, b, &p.adapters, &p.x, &mut y, &mut h).unwrap();
            let b_ref = with_bias.then_some(bias_ref.as_slice());
            let (want_y, want_h) =
                cpu_ref::linear_forward(&p.plan, &p.layer, &w_ref, b_ref, &p.x_ref);
            tol.check_scaled(&label(device, dtype, case, "H"), &host(&h), &want_h)
                .unwrap();
            tol.check_scaled(&label(device, dtype, case, "Y"), &host(&y), &want_y)
                .unwrap();
        }
        let h = tensor(device, dtype, &[t, r], &rng.vec(t * r, 1.0));
        let h_ref = host(&h);
        let want = cpu_ref::linear_backward(&p.plan, &p.layer, &w_ref, &p.x_ref, &h_ref, &p.dy_ref);
        let mut dx = tensor(device, dtype, &[t, d_in], &rng.vec(t * d_in, 9.0));
        let mut g = AdapterGrads::zeros(&p.adapters).unwrap();
        flix::linear_backward(
            &plan,
            &w,
            &p.adapters,
            &p.x,
            &h,
            &p.dy,
            &mut dx,
            Write::Overwrite,
            &mut g,
        )
        .unwrap();
        tol.check_scaled(&label(device, dtype, case, "dX"), &host(&dx), &want.dx)
            .unwrap();
        for (got, w) in g.da.iter().zip(&want.da).chain(g.db.iter().zip(&want.db)) {
            tol.check_scaled(&label(device, dtype, case, "dA/dB"), &host(got), w)
                .unwrap();
        }
    });
}
