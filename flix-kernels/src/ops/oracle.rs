//! Test helpers shared by the op tests: deterministic pseudo-random inputs and a central
//! finite-difference gradient check in f64 (the independent oracle for every backward pass),
//! both judged with the crate's one [`Tolerance`] type.

use crate::tolerance::Tolerance;

/// Deterministic values in [-1, 1).
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Checks `analytic` against central differences of the scalar `loss` at `x`, within
/// `Tolerance::new(tol, tol)` (the worst element is named on failure).
pub fn fd_check(x: &[f32], analytic: &[f32], loss: impl Fn(&[f64]) -> f64, tol: f64) {
    assert_eq!(x.len(), analytic.len(), "gradient length");
    let h = 1e-5;
    let mut point = to_f64(x);
    let mut numeric = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        let orig = point[i];
        point[i] = orig + h;
        let up = loss(&point);
        point[i] = orig - h;
        let down = loss(&point);
        point[i] = orig;
        numeric.push((up - down) / (2.0 * h));
    }
    if let Err(m) =
        Tolerance::new(tol, tol).check("analytic vs finite-difference gradient", analytic, &numeric)
    {
        panic!("{m}");
    }
}

/// Asserts `got` matches the f64 `want` within `Tolerance::new(tol, tol)`.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    if let Err(m) = Tolerance::new(tol, tol).check(what, got, want) {
        panic!("{m}");
    }
}
