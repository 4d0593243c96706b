//! Finite-difference checks of the oracle's backward, in f64 on small shapes. The loss
//! L = Σ dY ⊙ Y(X, A, B) is linear in X and quadratic in (A, B), so central differences are
//! exact up to rounding and the tolerance can be tight. The fast path and the CUDA kernels are
//! then checked against this oracle in `flix_ops.rs`.

mod common;

use common::{Case, Rng};
use flix_core::{SegmentSpec, TypeShape, ABSENT};
use flix_kernels::flix::cpu_ref::{self, RefLayer, RefType};
use flix_kernels::Tolerance;

const FINITE_DIFF: Tolerance = Tolerance::new(1e-6, 1e-8);
const EPS: f64 = 1e-4;

fn loss(case: &Case, layer: &RefLayer, w: &[f64], bias: &[f64], x: &[f64], dy: &[f64]) -> f64 {
    let (y, _) = cpu_ref::linear_forward(&case.plan(), layer, w, Some(bias), x);
    y.iter().zip(dy).map(|(a, b)| a * b).sum()
}

/// Central difference of `f` along every element of `v`.
fn numeric_grad(v: &[f64], mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut v = v.to_vec();
    (0..v.len())
        .map(|i| {
            let orig = v[i];
            v[i] = orig + EPS;
            let up = f(&v);
            v[i] = orig - EPS;
            let down = f(&v);
            v[i] = orig;
            (up - down) / (2.0 * EPS)
        })
        .collect()
}

fn random_layer(case: &Case, rng: &mut Rng) -> RefLayer {
    let f64s =
        |rng: &mut Rng, n: usize| -> Vec<f64> { (0..n).map(|_| rng.signed() as f64).collect() };
    RefLayer {
        d_in: case.d_in,
        d_out: case.d_out,
        types: case
            .types
            .iter()
            .zip(&case.scales)
            .map(|(t, &s)| RefType {
                scale: s as f64,
                rank: t.rank,
                a: f64s(rng, t.num_values * t.rank * case.d_in),
                b: f64s(rng, t.num_values * case.d_out * t.rank),
            })
            .collect(),
    }
}

fn check_case(case: &Case, rng: &mut Rng) {
    let plan = case.plan();
    let t = plan.num_tokens();
    let layer = random_layer(case, rng);
    let mut vec = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.signed() as f64).collect() };
    let w = vec(case.d_out * case.d_in);
    let bias = vec(case.d_out);
    let x = vec(t * case.d_in);
    let dy = vec(t * case.d_out);

    let h = cpu_ref::shrink(&plan, &layer, &x);
    let grads = cpu_ref::linear_backward(&plan, &layer, &w, &x, &h, &dy);

    let dx = numeric_grad(&x, |x| loss(case, &layer, &w, &bias, x, &dy));
    FINITE_DIFF
        .check(&format!("dX, {case:?}"), &grads.dx, &dx)
        .unwrap();
    for k in 0..layer.types.len() {
        let da = numeric_grad(&layer.types[k].a, |a| {
            let mut l = layer.clone();
            l.types[k].a = a.to_vec();
            loss(case, &l, &w, &bias, &x, &dy)
        });
        FINITE_DIFF
            .check(&format!("dA[{k}], {case:?}"), &grads.da[k], &da)
            .unwrap();
        let db = numeric_grad(&layer.types[k].b, |b| {
            let mut l = layer.clone();
            l.types[k].b = b.to_vec();
            loss(case, &l, &w, &bias, &x, &dy)
        });
        FINITE_DIFF
            .check(&format!("dB[{k}], {case:?}"), &grads.db[k], &db)
            .unwrap();
    }
}

#[test]
fn oracle_backward_matches_finite_differences_on_random_small_plans() {
    for seed in 0..12 {
        let mut rng = Rng::new(1000 + seed);
        let mut case = Case::random(&mut rng);
        // Keep the parameter count small: few values, narrow widths.
        for t in &mut case.types {
            t.num_values = t.num_values.min(3);
        }
        for s in &mut case.segments {
            for (slot, t) in s.slots.iter_mut().zip(&case.types) {
                if *slot >= t.num_values as i32 {
                    *slot %= t.num_values as i32;
                }
            }
        }
        case.d_in = case.d_in.min(7);
        case.d_out = case.d_out.min(7);
        check_case(&case, &mut rng);
    }
}

#[test]
fn oracle_backward_matches_finite_differences_with_shared_and_absent_values() {
    // Two types of ranks 2 and 1; value 0 of type 0 is shared by two segments, type 1 is absent
    // in one segment and dropped in another, and one segment is empty.
    let case = Case {
        types: vec![
            TypeShape {
                rank: 2,
                num_values: 2,
            },
            TypeShape {
                rank: 1,
                num_values: 2,
            },
        ],
        scales: vec![0.5, 2.0],
        segments: vec![
            SegmentSpec {
                len: 3,
                slots: vec![0, 1],
            },
            SegmentSpec {
                len: 0,
                slots: vec![1, 0],
            },
            SegmentSpec {
                len: 1,
                slots: vec![0, ABSENT],
            },
            SegmentSpec {
                len: 2,
                slots: vec![1],
            },
        ],
        d_in: 3,
        d_out: 4,
    };
    check_case(&case, &mut Rng::new(7));
}
