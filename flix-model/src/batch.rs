//! A packed batch of token sequences: tokens of every sequence one after the other, with the
//! target of each position (the next token, or [`IGNORE`] when the position is not scored), the
//! sequence boundaries, and each token's position inside its own sequence (restarting at 0).

use flix_kernels::ops::cross_entropy::IGNORE;

use crate::error::{ModelError, Result};

/// One sequence before packing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    pub tokens: Vec<u32>,
    /// `targets[t]` is the token position t must predict, or -1.
    pub targets: Vec<i32>,
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
        Self { tokens, targets }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub targets: Vec<i32>,
    /// Sequence s owns tokens `starts[s]..starts[s + 1]`; `starts.len()` = sequences + 1.
    pub starts: Vec<usize>,
    pub positions: Vec<u32>,
}

impl Batch {
    pub fn new(sequences: &[Sequence]) -> Result<Self> {
        let mut batch = Batch {
            tokens: Vec::new(),
            targets: Vec::new(),
            starts: vec![0],
            positions: Vec::new(),
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
        }
        Ok(batch)
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
    use super::*;

    #[test]
    fn packs_sequences_and_restarts_positions() {
        let a = Sequence::prompt_and_target(vec![1, 2, 3, 4], 2);
        assert_eq!(a.targets, vec![IGNORE, 3, 4, IGNORE]);
        let b = Sequence::prompt_and_target(vec![9], 1);
        let batch = Batch::new(&[a, b]).unwrap();
        assert_eq!(batch.tokens, vec![1, 2, 3, 4, 9]);
        assert_eq!(batch.starts, vec![0, 4, 5]);
        assert_eq!(batch.positions, vec![0, 1, 2, 3, 0]);
        assert_eq!(batch.sequence_lens().collect::<Vec<_>>(), vec![4, 1]);
    }

    #[test]
    fn mismatched_targets_name_the_sequence() {
        let bad = Sequence {
            tokens: vec![1, 2],
            targets: vec![1],
        };
        let err = Batch::new(&[bad]).unwrap_err().to_string();
        assert!(err.contains("sequence 0"), "{err}");
    }
}
