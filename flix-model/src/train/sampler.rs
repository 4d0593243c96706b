//! Mixture sampling over cells: a cell c with n_c examples is drawn with probability proportional
//! to min(n_c, cap)^(1/T) (T = 1: proportional to size; large T: towards uniform; the cap keeps
//! one big dataset from dominating), then one of its examples uniformly.
//!
//! Every draw is a pure function of (seed, micro-batch index, draw index): the sampler has no
//! state beyond its seed, so a resumed run draws exactly the batches the uninterrupted run would.

use flix_core::splitmix64;

use crate::error::{ModelError, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct MixtureSampler {
    seed: u64,
    /// Cumulative cell probabilities; the last is 1.
    cumulative: Vec<f64>,
    sizes: Vec<usize>,
}

/// A uniform number in [0, 1) from the top 53 bits of a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn hash3(seed: u64, a: u64, b: u64) -> u64 {
    splitmix64(splitmix64(seed ^ splitmix64(a)) ^ splitmix64(b))
}

impl MixtureSampler {
    /// Weights for cells of `sizes` examples; an empty cell or a non-positive temperature is an
    /// error.
    pub fn new(sizes: &[usize], temperature: f64, cap: Option<usize>, seed: u64) -> Result<Self> {
        if sizes.is_empty() || sizes.contains(&0) {
            return Err(ModelError::Invalid(
                "the training mixture has no cells, or a cell with no example".into(),
            ));
        }
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(ModelError::Invalid(format!(
                "the sampling temperature must be > 0, found {temperature}"
            )));
        }
        let weights: Vec<f64> = sizes
            .iter()
            .map(|&n| (cap.map_or(n, |c| n.min(c.max(1))) as f64).powf(1.0 / temperature))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let mut cumulative: Vec<f64> = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        if let Some(last) = cumulative.last_mut() {
            *last = 1.0;
        }
        Ok(Self {
            seed,
            cumulative,
            sizes: sizes.to_vec(),
        })
    }

    /// Probability of each cell.
    pub fn probabilities(&self) -> Vec<f64> {
        let mut prev = 0.0;
        self.cumulative
            .iter()
            .map(|&c| {
                let p = c - prev;
                prev = c;
                p
            })
            .collect()
    }

    /// Draw `draw` of micro-batch `micro`: (cell, index of the example inside the cell).
    pub fn draw(&self, micro: u64, draw: u64) -> (usize, usize) {
        let h = hash3(self.seed, micro, draw);
        let u = unit(h);
        let cell = self
            .cumulative
            .partition_point(|&c| c <= u)
            .min(self.sizes.len() - 1);
        let within = (splitmix64(h) % self.sizes[cell] as u64) as usize;
        (cell, within)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_follow_size_temperature_and_cap() {
        let p = MixtureSampler::new(&[100, 300], 1.0, None, 0)
            .unwrap()
            .probabilities();
        assert!((p[0] - 0.25).abs() < 1e-12 && (p[1] - 0.75).abs() < 1e-12);
        // T = 2: proportional to sqrt(n).
        let p = MixtureSampler::new(&[100, 400], 2.0, None, 0)
            .unwrap()
            .probabilities();
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-12);
        // Capped at 100: both cells weigh the same.
        let p = MixtureSampler::new(&[100, 400], 1.0, Some(100), 0)
            .unwrap()
            .probabilities();
        assert!((p[0] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn draws_are_deterministic_and_match_the_weights() {
        let s = MixtureSampler::new(&[10, 30], 1.0, None, 7).unwrap();
        let draws: Vec<_> = (0..4000).map(|i| s.draw(i / 8, i % 8)).collect();
        let again: Vec<_> = (0..4000).map(|i| s.draw(i / 8, i % 8)).collect();
        assert_eq!(draws, again);
        let first = draws.iter().filter(|d| d.0 == 0).count() as f64 / 4000.0;
        assert!((first - 0.25).abs() < 0.03, "{first}");
        assert!(draws.iter().all(|&(c, i)| i < [10, 30][c]));
        let other = MixtureSampler::new(&[10, 30], 1.0, None, 8).unwrap();
        assert_ne!(
            draws[..50],
            (0..50)
                .map(|i| other.draw(i / 8, i % 8))
                .collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn empty_cells_and_bad_temperature_are_errors() {
        assert!(MixtureSampler::new(&[], 1.0, None, 0).is_err());
        assert!(MixtureSampler::new(&[3, 0], 1.0, None, 0).is_err());
        assert!(MixtureSampler::new(&[3], 0.0, None, 0).is_err());
    }
}
