//! One named tolerance type for every numeric comparison (DESIGN §8): an element passes when
//! `|got - want| <= abs + rel · |want|`. A failed comparison reports the worst element (the one
//! furthest over its allowance), so a failing test says where and by how much.

/// Relative and absolute tolerance; see the module docs for the rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub rel: f64,
    pub abs: f64,
}

/// The worst element of a failed comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    pub what: String,
    pub index: usize,
    pub got: f64,
    pub want: f64,
    /// `|got - want|`.
    pub error: f64,
    /// `abs + rel · |want|` at that element.
    pub allowed: f64,
    /// How many elements failed, out of `len`.
    pub failures: usize,
    pub len: usize,
    pub tolerance: Tolerance,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} of {} elements out of tolerance (rel {:e}, abs {:e}); worst at index {}: got \
             {}, want {}, error {:e} > allowed {:e}",
            self.what,
            self.failures,
            self.len,
            self.tolerance.rel,
            self.tolerance.abs,
            self.index,
            self.got,
            self.want,
            self.error,
            self.allowed
        )
    }
}

impl std::error::Error for Mismatch {}

impl Tolerance {
    /// f64 computations compared with an f64 reference.
    pub const F64: Self = Self {
        rel: 1e-10,
        abs: 1e-12,
    };
    /// f32 computations (sums of up to a few thousand terms of magnitude ~1).
    pub const F32: Self = Self {
        rel: 1e-4,
        abs: 1e-5,
    };
    /// bf16 inputs and outputs with f32 accumulation: bf16 keeps 8 significant bits (~4e-3).
    pub const BF16: Self = Self {
        rel: 2e-2,
        abs: 2e-2,
    };

    pub const fn new(rel: f64, abs: f64) -> Self {
        Self { rel, abs }
    }

    /// [`Tolerance::check`] with the absolute part scaled to the tensor: `abs · max(1, max|want|)`.
    /// Use it for sums whose terms are larger than some results (cancellation): a kernel that
    /// rounds its operands (bf16 tensor cores) or sums in another order errs in proportion to the
    /// terms, not to the small result.
    pub fn check_scaled<G, W>(&self, what: &str, got: &[G], want: &[W]) -> Result<(), Mismatch>
    where
        G: Copy + Into<f64>,
        W: Copy + Into<f64>,
    {
        let scale = want
            .iter()
            .map(|&w| Into::<f64>::into(w).abs())
            .fold(1.0, f64::max);
        Tolerance::new(self.rel, self.abs * scale).check(what, got, want)
    }

    /// Compares element by element; `Err` holds the worst element. Lengths must agree (a length
    /// mismatch is reported as a mismatch at index `min(len)`). NaN never passes.
    pub fn check<G, W>(&self, what: &str, got: &[G], want: &[W]) -> Result<(), Mismatch>
    where
        G: Copy + Into<f64>,
        W: Copy + Into<f64>,
    {
        let mut worst: Option<Mismatch> = None;
        let mut failures = 0;
        let mut worst_excess = f64::NEG_INFINITY;
        for (index, (&g, &w)) in got.iter().zip(want).enumerate() {
            let (g, w): (f64, f64) = (g.into(), w.into());
            let error = (g - w).abs();
            let allowed = self.abs + self.rel * w.abs();
            // NaN in either value fails.
            if error.is_nan() || error > allowed {
                failures += 1;
                let excess = if error.is_nan() {
                    f64::INFINITY
                } else {
                    error - allowed
                };
                if worst.is_none() || excess > worst_excess {
                    worst_excess = excess;
                    worst = Some(Mismatch {
                        what: what.to_string(),
                        index,
                        got: g,
                        want: w,
                        error,
                        allowed,
                        failures: 0,
                        len: want.len(),
                        tolerance: *self,
                    });
                }
            }
        }
        if got.len() != want.len() {
            return Err(Mismatch {
                what: format!("{what} (length {} vs expected {})", got.len(), want.len()),
                index: got.len().min(want.len()),
                got: f64::NAN,
                want: f64::NAN,
                error: f64::NAN,
                allowed: 0.0,
                failures: failures + got.len().abs_diff(want.len()),
                len: want.len(),
                tolerance: *self,
            });
        }
        match worst {
            Some(mut m) => {
                m.failures = failures;
                Err(m)
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_within_and_reports_the_worst_element_outside() {
        let tol = Tolerance::new(1e-3, 1e-6);
        assert!(tol.check("x", &[1.0f32, 2.0], &[1.0005f64, 2.001]).is_ok());
        let err = tol
            .check("x", &[1.0f64, 2.0, 3.0, 4.0], &[1.0f64, 2.1, 3.0, 4.5])
            .unwrap_err();
        assert_eq!((err.index, err.failures, err.len), (3, 2, 4));
        assert!(err.to_string().contains("worst at index 3"), "{err}");
    }

    #[test]
    fn scaled_check_allows_errors_in_proportion_to_the_largest_value() {
        let tol = Tolerance::new(0.0, 1e-3);
        let want = [100.0f64, 0.0];
        assert!(tol.check("x", &[100.0f64, 0.05], &want).is_err());
        assert!(tol.check_scaled("x", &[100.0f64, 0.05], &want).is_ok());
        assert!(tol.check_scaled("x", &[100.0f64, 0.2], &want).is_err());
    }

    #[test]
    fn nan_and_length_mismatch_fail() {
        assert!(Tolerance::F32.check("x", &[f64::NAN], &[0.0f64]).is_err());
        assert!(Tolerance::F32
            .check("x", &[0.0f64], &[0.0f64, 1.0])
            .is_err());
    }
}
