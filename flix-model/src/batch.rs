//! A packed batch of token sequences: tokens of every sequence one after the other, with the
//! target of each position (the next token, or [`IGNORE`] when the position is not scored), the
//! sequence boundaries, each token's position inside its own sequence (restarting at 0), and
//! each sequence's feature values. [`Batch::plan`] is the one place a FLix batch plan is made;
//! [`crate::LlamaModel::upload`] binds batch and plan to the model's device.

use flix_core::{BatchPlan, SegmentSpec, TypeShape};
use flix_kernels::ops::cross_entropy::IGNORE;

use crate::error::{ModelError, Result};

/// One sequence before packing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    pub tokens: Vec<u32>,
    /// `targets[t]` is the token position t must predict, or -1.
    pub targets: Vec<i32>,
    /// One value id per feature type, in the adapters' type order ([`flix_core::ABSENT`] where
    /// the sequence has none); missing trailing types are absent. Empty for a model without
    /// adapters.
    pub features: Vec<i32>,
}

impl Sequence {
    /// A prompt followed by a continuation: every position predicts the next token, and only
    /// continuation tokens (index >= `prompt_len`) are targets.
    pub fn prompt_and_target(tokens: Vec<u32>, prompt_len: usize) -> Self {
        let n = tokens.len();
        let targets = (0..n)
            .map(|t| {
                if t + 1 < n && t + 1 >= prompt_len {
                    tokens[t + 1] as i32
                } else {
                    IGNORE
                }
            })
            .collect();
        Self {
            tokens,
            targets,
            features: Vec::new(),
        }
    }

    /// The same sequence with feature values `features` (see [`Sequence::features`]).
    pub fn with_features(self, features: Vec<i32>) -> Self {
        Self { features, ..self }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub targets: Vec<i32>,
    /// Sequence s owns tokens `starts[s]..starts[s + 1]`; `starts.len()` = sequences + 1.
    pub starts: Vec<usize>,
    pub positions: Vec<u32>,
    /// The feature values of each sequence ([`Sequence::features`]).
    pub features: Vec<Vec<i32>>,
}

impl Batch {
    pub fn new(sequences: &[Sequence]) -> Result<Self> {
        let mut batch = Batch {
            tokens: Vec::new(),
            targets: Vec::new(),
            starts: vec![0],
            positions: Vec::new(),
            features: Vec::with_capacity(sequences.len()),
        };
        for (i, s) in sequences.iter().enumerate() {
            if s.targets.len() != s.tokens.len() {
                return Err(ModelError::Batch(format!(
                    "sequence {i}: {} tokens but {} targets",
                    s.tokens.len(),
                    s.targets.len()
                )));
            }
            batch.tokens.extend_from_slice(&s.tokens);
            batch.targets.extend_from_slice(&s.targets);
            batch.positions.extend(0..s.tokens.len() as u32);
            batch.starts.push(batch.tokens.len());
            batch.features.push(s.features.clone());
        }
        Ok(batch)
    }

    /// The FLix batch plan of this batch for adapters of `types`: one segment per sequence,
    /// with the sequence's feature values. Every plan of the product is made here.
    pub fn plan(&self, types: &[TypeShape]) -> Result<BatchPlan> {
        let segments: Vec<SegmentSpec> = self
            .sequence_lens()
            .zip(&self.features)
            .map(|(len, slots)| SegmentSpec {
                len,
                slots: slots.clone(),
            })
            .collect();
        Ok(BatchPlan::new(types, &segments)?)
    }

    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }
    pub fn num_sequences(&self) -> usize {
        self.starts.len() - 1
    }
    pub fn sequence_lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.starts.windows(2).map(|w| w[1] - w[0])
    }
}

#[cfg(test)]
mod tests {
    use flix_core::ABSENT;

    use super::*;

    #[test]
    fn packs_sequences_and_restarts_positions() {
        let a = Sequence::prompt_and_target(vec![1, 2, 3, 4], 2);
        assert_eq!(a.targets, vec![IGNORE, 3, 4, IGNORE]);
        let b = Sequence::prompt_and_target(vec![9], 1).with_features(vec![2, 0]);
        let batch = Batch::new(&[a, b]).unwrap();
        assert_eq!(batch.tokens, vec![1, 2, 3, 4, 9]);
        assert_eq!(batch.starts, vec![0, 4, 5]);
        assert_eq!(batch.positions, vec![0, 1, 2, 3, 0]);
        assert_eq!(batch.sequence_lens().collect::<Vec<_>>(), vec![4, 1]);
        assert_eq!(batch.features, vec![vec![], vec![2, 0]]);
    }

    #[test]
    fn the_plan_has_one_segment_per_sequence_with_its_features() {
        let types = [
            TypeShape {
                rank: 2,
                num_values: 3,
            },
            TypeShape {
                rank: 1,
                num_values: 1,
            },
        ];
        let batch = Batch::new(&[
            Sequence::prompt_and_target(vec![1, 2, 3], 1).with_features(vec![2, 0]),
            Sequence::prompt_and_target(vec![4, 5], 1),
        ])
        .unwrap();
        let plan = batch.plan(&types).unwrap();
        assert_eq!(plan.segment_starts(), [0, 3, 5]);
        assert_eq!(plan.slots(), [2, 0, ABSENT, ABSENT]);
        assert_eq!(plan.tile_size(), flix_core::TILE_SIZE);

        let out_of_range =
            Batch::new(&[Sequence::prompt_and_target(vec![1], 1).with_features(vec![3])]).unwrap();
        assert!(out_of_range.plan(&types).is_err());
    }

    #[test]
    fn mismatched_targets_name_the_sequence() {
        let bad = Sequence {
            tokens: vec![1, 2],
            targets: vec![1],
            features: Vec::new(),
        };
        let err = Batch::new(&[bad]).unwrap_err().to_string();
        assert!(err.contains("sequence 0"), "{err}");
    }
}
