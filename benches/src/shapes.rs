//! The benchmark's layer shapes, in one place: `flix bench`, the criterion benches and the
//! PyTorch peer script (`benches/peers/`, which reads `flix bench --list-shapes --json FILE`)
//! all use this list, down to every segment's length and feature values.
//!
//! The reference layer (DESIGN §9): T = 8192 tokens in 64 segments, d_in = d_out = 4096, r = 16
//! per type, two types of 90 (languages) and 10 (tasks) values. Each variation changes one thing.

use flix_core::{BatchPlan, PlanError, SegmentSpec, TypeShape};
use serde::Serialize;

/// How the batch's tokens are split into segments.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lengths {
    /// Every segment has T / S tokens (the first T mod S one more).
    Equal,
    /// Segment i (1-based, before shuffling) has ∝ 1 / i^s tokens, at least 1.
    Zipf { s: f64 },
}

/// One benchmark layer and batch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerShape {
    pub name: String,
    pub tokens: usize,
    pub segments: usize,
    pub d_in: usize,
    pub d_out: usize,
    /// (rank, number of values) per feature type.
    pub types: Vec<(usize, usize)>,
    pub lengths: Lengths,
    /// Seeds the segment order and the value each segment uses.
    pub seed: u64,
}

/// What the peer script needs: the shape plus the exact batch.
#[derive(Clone, Debug, Serialize)]
pub struct ShapeWithBatch {
    #[serde(flatten)]
    pub shape: LayerShape,
    /// Per segment: its token count and one value id per type (all present).
    pub batch: Vec<Segment>,
}

/// One segment of a benchmark batch, as written to JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Segment {
    pub len: usize,
    pub slots: Vec<i32>,
}

impl LayerShape {
    fn new(
        name: &str,
        tokens: usize,
        segments: usize,
        d: (usize, usize),
        types: &[(usize, usize)],
    ) -> Self {
        Self {
            name: name.to_string(),
            tokens,
            segments,
            d_in: d.0,
            d_out: d.1,
            types: types.to_vec(),
            lengths: Lengths::Equal,
            seed: 1,
        }
    }

    /// R = Σ_k r_k.
    pub fn total_rank(&self) -> usize {
        self.types.iter().map(|t| t.0).sum()
    }

    /// The segments of the batch: lengths per [`Lengths`], every type present, values uniform.
    pub fn batch(&self) -> Vec<SegmentSpec> {
        let mut rng = SplitMix(self.seed);
        let mut lens = match self.lengths {
            Lengths::Equal => (0..self.segments)
                .map(|i| self.tokens / self.segments + usize::from(i < self.tokens % self.segments))
                .collect(),
            Lengths::Zipf { s } => zipf_lengths(self.tokens, self.segments, s),
        };
        // Fisher-Yates, so that long segments are not all at the front.
        for i in (1..lens.len()).rev() {
            lens.swap(i, rng.below(i + 1));
        }
        lens.into_iter()
            .map(|len| SegmentSpec {
                len,
                slots: self
                    .types
                    .iter()
                    .map(|&(_, n)| rng.below(n) as i32)
                    .collect(),
            })
            .collect()
    }

    pub fn plan(&self) -> Result<BatchPlan, PlanError> {
        let types: Vec<TypeShape> = self
            .types
            .iter()
            .map(|&(rank, num_values)| TypeShape { rank, num_values })
            .collect();
        BatchPlan::new(&types, &self.batch())
    }

    pub fn with_batch(&self) -> ShapeWithBatch {
        ShapeWithBatch {
            shape: self.clone(),
            batch: self
                .batch()
                .into_iter()
                .map(|s| Segment {
                    len: s.len,
                    slots: s.slots,
                })
                .collect(),
        }
    }
}

/// `segments` lengths summing to `tokens`, ∝ 1 / i^s, each at least 1 (when tokens allow).
fn zipf_lengths(tokens: usize, segments: usize, s: f64) -> Vec<usize> {
    let weights: Vec<f64> = (1..=segments).map(|i| 1.0 / (i as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let spare = tokens.saturating_sub(segments) as f64;
    let mut lens: Vec<usize> = weights
        .iter()
        .map(|w| usize::from(tokens >= segments) + (spare * w / total).floor() as usize)
        .collect();
    let short = tokens.saturating_sub(lens.iter().sum());
    for len in lens.iter_mut().take(short) {
        *len += 1;
    }
    lens
}

/// The reference layer of DESIGN §9.
pub fn reference() -> LayerShape {
    LayerShape::new("reference", 8192, 64, (4096, 4096), &[(16, 90), (16, 10)])
}

/// The reference and its variations, each changing one thing (the list in BENCHMARKS.md).
pub fn all() -> Vec<LayerShape> {
    let r = reference();
    let with = |name: &str, f: &dyn Fn(&mut LayerShape)| {
        let mut s = r.clone();
        s.name = name.to_string();
        f(&mut s);
        s
    };
    vec![
        r.clone(),
        // Same 128 tokens per segment on average, fewer or more examples.
        with("T=256", &|s| (s.tokens, s.segments) = (256, 2)),
        with("T=2048", &|s| (s.tokens, s.segments) = (2048, 16)),
        with("T=16384", &|s| (s.tokens, s.segments) = (16384, 128)),
        with("d_out=11008", &|s| s.d_out = 11008),
        with("r=8", &|s| s.types = vec![(8, 90), (8, 10)]),
        with("r=64", &|s| s.types = vec![(64, 90), (64, 10)]),
        with("K=1", &|s| s.types = vec![(16, 100)]),
        with("K=3", &|s| s.types = vec![(16, 90), (16, 10), (16, 5)]),
        with("values=8", &|s| s.types = vec![(16, 6), (16, 2)]),
        with("zipf", &|s| s.lengths = Lengths::Zipf { s: 1.1 }),
    ]
}

/// The CPU set: small enough to run in about a minute on 2 cores, in f32. The first is the CPU
/// target of BENCHMARKS.md (T = 2048, d = 1024, r = 16, K = 2).
pub fn small() -> Vec<LayerShape> {
    let target = LayerShape::new("cpu-target", 2048, 16, (1024, 1024), &[(16, 90), (16, 10)]);
    let with = |name: &str, f: &dyn Fn(&mut LayerShape)| {
        let mut s = target.clone();
        s.name = name.to_string();
        f(&mut s);
        s
    };
    vec![
        target.clone(),
        with("cpu-T=256", &|s| (s.tokens, s.segments) = (256, 2)),
        with("cpu-r=64", &|s| s.types = vec![(64, 90), (64, 10)]),
        with("cpu-K=1", &|s| s.types = vec![(16, 100)]),
        with("cpu-zipf", &|s| s.lengths = Lengths::Zipf { s: 1.1 }),
    ]
}

/// Two tiny shapes (one with Zipf lengths) that run in milliseconds: for smoke tests of the
/// benchmark itself, not for timing.
pub fn tiny() -> Vec<LayerShape> {
    let mut zipf = LayerShape::new("tiny-zipf", 96, 6, (48, 40), &[(4, 5), (2, 3)]);
    zipf.lengths = Lengths::Zipf { s: 1.1 };
    vec![
        LayerShape::new("tiny", 64, 4, (32, 24), &[(4, 9), (2, 3)]),
        zipf,
    ]
}

/// A named set: `reference`, `all`, `small` or `tiny`.
pub fn set(name: &str) -> Option<Vec<LayerShape>> {
    match name {
        "reference" => Some(vec![reference()]),
        "all" => Some(all()),
        "small" => Some(small()),
        "tiny" => Some(tiny()),
        _ => None,
    }
}

/// SplitMix64: a fixed, portable sequence (the peer script reads the batch, it does not
/// regenerate it).
pub(crate) struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    /// Uniform in [-1, 1).
    pub fn signed(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_makes_a_valid_plan_with_the_right_token_count() {
        for shape in all().into_iter().chain(small()).chain(tiny()) {
            let plan = shape.plan().unwrap();
            assert_eq!(plan.num_tokens(), shape.tokens, "{}", shape.name);
            assert_eq!(plan.num_segments(), shape.segments, "{}", shape.name);
            assert_eq!(plan.total_rank(), shape.total_rank(), "{}", shape.name);
        }
    }

    #[test]
    fn zipf_lengths_sum_to_the_tokens_and_decrease() {
        let lens = zipf_lengths(8192, 64, 1.1);
        assert_eq!(lens.iter().sum::<usize>(), 8192);
        assert!(lens.windows(2).all(|w| w[0] >= w[1]), "{lens:?}");
        assert!(lens[0] > 10 * lens[63] && lens[63] >= 1, "{lens:?}");
    }
}
