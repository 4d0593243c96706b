//! Scoring: the log-likelihood of each example's target tokens under the model (and its
//! adapters), in batches of at most a given number of tokens. Every example is its own segment,
//! so results do not depend on how examples are batched.

use crate::batch::{Batch, Sequence};
use crate::error::Result;
use crate::llama::LlamaModel;

/// The score of one example.
#[derive(Clone, Debug, PartialEq)]
pub struct ExampleScore {
    /// log p of each target token, in order.
    pub token_logprobs: Vec<f32>,
    /// Mean negative log-likelihood over the target tokens; `None` without targets.
    pub loss: Option<f64>,
}

/// Scores `sequences` in order, packing consecutive ones into batches of at most
/// `max_batch_tokens` tokens (a longer sequence gets a batch of its own). A model with adapters
/// reads each sequence's [`Sequence::features`].
pub fn score_sequences(
    model: &LlamaModel,
    sequences: &[Sequence],
    max_batch_tokens: usize,
) -> Result<Vec<ExampleScore>> {
    let mut out = Vec::with_capacity(sequences.len());
    let mut start = 0;
    while start < sequences.len() {
        let mut end = start + 1;
        let mut tokens = sequences[start].tokens.len();
        while end < sequences.len() && tokens + sequences[end].tokens.len() <= max_batch_tokens {
            tokens += sequences[end].tokens.len();
            end += 1;
        }
        let batch = Batch::new(&sequences[start..end])?;
        let logprob = model.score(&model.upload(&batch)?)?.token_logprobs()?;
        for s in 0..batch.num_sequences() {
            let range = batch.starts[s]..batch.starts[s + 1];
            let token_logprobs: Vec<f32> = range
                .filter(|&t| batch.targets[t] >= 0)
                .map(|t| logprob[t])
                .collect();
            let loss = (!token_logprobs.is_empty()).then(|| {
                -token_logprobs.iter().map(|&l| l as f64).sum::<f64>() / token_logprobs.len() as f64
            });
            out.push(ExampleScore {
                token_logprobs,
                loss,
            });
        }
        start = end;
    }
    Ok(out)
}
