//! chrF, the character n-gram F-score (Popović 2015), exactly as sacreBLEU's default `CHRF()`
//! computes it (version 2.x: `char_order=6, word_order=0, beta=2`, case kept, whitespace removed,
//! no epsilon smoothing):
//!
//! - every string loses all its whitespace, then yields its character n-grams for n = 1..6
//!   (characters are Unicode scalar values, as Python's `str` indexes them);
//! - per sentence and order n: hypothesis n-grams (counted only when the reference has n-grams of
//!   that order), reference n-grams, and matches (Σ min of the two counts per n-gram);
//! - corpus level: these statistics are summed over the sentences;
//! - per order with both counts > 0, precision and recall; their averages over those orders give
//!   chrF = (1 + β²)·P·R / (β²·P + R), times 100 (0 when no order counts).
//!
//! Note that sacreBLEU averages precision and recall over the orders first and takes one F-score,
//! rather than averaging per-order F-scores; this module does the same.

use std::collections::HashMap;

/// Largest character n-gram order.
pub const CHAR_ORDER: usize = 6;
/// Recall weighs β times as much as precision.
pub const BETA: f64 = 2.0;

/// Summed n-gram statistics of one or many (hypothesis, reference) pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChrfStats {
    /// Per order n (index n - 1): hypothesis n-grams, reference n-grams, matching n-grams.
    pub orders: [[u64; 3]; CHAR_ORDER],
}

/// Python's `str.split()` whitespace: Rust's `White_Space` plus the four information separators
/// U+001C..U+001F that Python also treats as whitespace.
fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Counts of the character n-grams of order `n` of `chars`.
fn ngram_counts(chars: &[char], n: usize) -> HashMap<&[char], u64> {
    let mut counts = HashMap::new();
    for gram in chars.windows(n) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

impl ChrfStats {
    /// The statistics of one hypothesis against one reference.
    pub fn sentence(hypothesis: &str, reference: &str) -> Self {
        let hyp: Vec<char> = hypothesis
            .chars()
            .filter(|&c| !is_python_whitespace(c))
            .collect();
        let refr: Vec<char> = reference
            .chars()
            .filter(|&c| !is_python_whitespace(c))
            .collect();
        let mut stats = Self::default();
        for (i, order) in stats.orders.iter_mut().enumerate() {
            let n = i + 1;
            let hyp_grams = ngram_counts(&hyp, n);
            let ref_grams = ngram_counts(&refr, n);
            let hyp_count: u64 = hyp_grams.values().sum();
            let ref_count: u64 = ref_grams.values().sum();
            let matches: u64 = hyp_grams
                .iter()
                .map(|(gram, &c)| c.min(ref_grams.get(gram).copied().unwrap_or(0)))
                .sum();
            // As sacreBLEU: hypothesis n-grams count only when the reference has some.
            *order = [
                if ref_count > 0 { hyp_count } else { 0 },
                ref_count,
                matches,
            ];
        }
        stats
    }

    /// Adds the statistics of another sentence (corpus-level chrF sums them).
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.orders.iter_mut().zip(&other.orders) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }

    /// chrF in [0, 100] of these statistics.
    pub fn score(&self) -> f64 {
        let (mut precision, mut recall, mut effective) = (0.0, 0.0, 0usize);
        for &[hyp, refr, matches] in &self.orders {
            if hyp > 0 && refr > 0 {
                precision += matches as f64 / hyp as f64;
                recall += matches as f64 / refr as f64;
                effective += 1;
            }
        }
        if effective == 0 {
            return 0.0;
        }
        let (p, r) = (precision / effective as f64, recall / effective as f64);
        let factor = BETA * BETA;
        if p + r == 0.0 {
            return 0.0;
        }
        100.0 * (1.0 + factor) * p * r / (factor * p + r)
    }
}

/// Corpus-level chrF of (hypothesis, reference) pairs: their statistics summed, then scored.
pub fn corpus_chrf<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> f64 {
    let mut total = ChrfStats::default();
    for (hyp, refr) in pairs {
        total.add(&ChrfStats::sentence(hyp, refr));
    }
    total.score()
}

#[cfg(test)]
#[path = "chrf_tests.rs"]
mod tests;
