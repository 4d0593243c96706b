//! Generation of a list of prompts, each with its own features, through the continuous-batching
//! [`Decoder`] (one prefill pass over all prompts, then one token per unfinished sequence per
//! step), and the sampler. Greedy (temperature 0) or temperature + top-p sampling; each sequence
//! draws from its own counter-based random stream, so its output does not depend on what it is
//! batched with. Evaluation (`eval::greedy`), `flix generate` and `flix serve` all decode
//! through the `Decoder`.

use std::collections::HashMap;

use flix_core::splitmix64;
use flix_kernels::ops::elementwise::copy_rows;
use flix_kernels::ops::rmsnorm::rmsnorm_forward;
use flix_kernels::ops::{matmul, Trans};
use flix_kernels::Tensor;

use super::decode::{Decoder, SequenceParams};
use super::LlamaModel;
use crate::error::{ModelError, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling: sample among the most likely tokens whose probabilities sum to top_p.
    pub top_p: f32,
    pub seed: u64,
    /// Generation of a sequence stops after it emits one of these (it is kept in the output).
    pub eos_token_ids: Vec<u32>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 32,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            eos_token_ids: Vec::new(),
        }
    }
}

impl LlamaModel {
    /// The new tokens of every prompt. `features` (when the model has adapters) gives each
    /// prompt's feature values, as [`crate::Sequence::features`]. Prompt i draws from random
    /// stream i of `cfg.seed`.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        features: Option<&[Vec<i32>]>,
        cfg: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>> {
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(ModelError::Batch(format!("prompt {i} is empty")));
        }
        if let Some(f) = features {
            if f.len() != prompts.len() {
                return Err(ModelError::Batch(format!(
                    "{} feature value arrays for {} prompts",
                    f.len(),
                    prompts.len()
                )));
            }
        }
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
        if cfg.max_new_tokens == 0 {
            return Ok(out);
        }
        let mut decoder = Decoder::new(self);
        let mut index_of = HashMap::new();
        for (i, prompt) in prompts.iter().enumerate() {
            let id = decoder
                .add(SequenceParams {
                    prompt: prompt.clone(),
                    slots: features.map(|f| f[i].clone()).unwrap_or_default(),
                    max_new_tokens: cfg.max_new_tokens,
                    temperature: cfg.temperature,
                    top_p: cfg.top_p,
                    seed: cfg.seed,
                    stream: i as u64,
                    eos_token_ids: cfg.eos_token_ids.clone(),
                    logprobs: None,
                    prompt_logprobs: false,
                })
                .map_err(|e| ModelError::Batch(format!("prompt {i}: {e}")))?;
            index_of.insert(id, i);
        }
        while !decoder.is_empty() {
            for event in decoder.step()? {
                out[index_of[&event.id]].push(event.token);
            }
        }
        Ok(out)
    }

    /// Logits of the last token of each segment of the final hidden state `x`. The last rows
    /// are gathered where `x` lies (a decode step, one token per segment, needs no gathering);
    /// only the logits come to the host.
    pub(super) fn last_token_logits(&self, x: &Tensor, starts: &[usize]) -> Result<Vec<f32>> {
        if let Some(row) = starts.windows(2).position(|w| w[1] == w[0]) {
            return Err(ModelError::Batch(format!("segment {row} has no tokens")));
        }
        if starts.windows(2).all(|w| w[1] == w[0] + 1) {
            return self.head_logits(x);
        }
        let last: Vec<usize> = starts.iter().skip(1).map(|&end| end - 1).collect();
        self.row_logits(x, &last)
    }

    /// Logits of the rows `rows` of the final hidden state `x`, gathered where `x` lies: one
    /// copy per run of consecutive rows (a prompt's rows are one run).
    pub(super) fn row_logits(&self, x: &Tensor, rows: &[usize]) -> Result<Vec<f32>> {
        let mut gathered = Tensor::zeros(
            x.device(),
            x.dtype(),
            &[rows.len(), self.config.hidden_size],
        )?;
        let mut to = 0;
        while to < rows.len() {
            let run = 1 + rows[to + 1..]
                .iter()
                .zip(&rows[to..])
                .take_while(|(next, prev)| **next == **prev + 1)
                .count();
            copy_rows(x, rows[to], &mut gathered, to, run)?;
            to += run;
        }
        self.head_logits(&gathered)
    }

    /// The final norm and the output head over every row of `x`, brought to the host.
    fn head_logits(&self, x: &Tensor) -> Result<Vec<f32>> {
        let rows = x.shape()[0];
        let (xn, _) = rmsnorm_forward(x, &self.norm.value, self.config.rms_norm_eps)?;
        let mut logits = Tensor::zeros(x.device(), x.dtype(), &[rows, self.config.vocab_size])?;
        matmul(
            &xn,
            Trans::N,
            &self.head().value,
            Trans::T,
            &mut logits,
            1.0,
            0.0,
        )?;
        Ok(logits.to_f32_vec()?)
    }
}

/// The log-probability of a generated token and of the most likely tokens at its step.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    /// log p(token), of the model's distribution: the softmax of the logits, before temperature
    /// and top-p shape the draw.
    pub logprob: f32,
    /// The most likely tokens with their log-probabilities, most likely first (ties: lower id
    /// first); as many as were asked for, or the whole vocabulary when it is smaller.
    pub top: Vec<(u32, f32)>,
}

/// log-softmax of `logits` at `token`, and the `top` most likely tokens with theirs; sums in f64.
/// NaN logits rank last.
pub fn token_logprobs(logits: &[f32], token: u32, top: usize) -> TokenLogprobs {
    let max = logits
        .iter()
        .copied()
        .filter(|l| !l.is_nan())
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits
        .iter()
        .filter(|l| !l.is_nan())
        .map(|&l| (l as f64 - max).exp())
        .sum();
    let log_total = max + sum.ln();
    let logprob = |l: f32| (l as f64 - log_total) as f32;
    // Most likely first, then lower id; NaN below everything.
    let better = |a: (usize, f32), b: (usize, f32)| match (a.1.is_nan(), b.1.is_nan()) {
        (false, true) => true,
        (true, _) => false,
        (false, false) => a.1 > b.1 || (a.1 == b.1 && a.0 < b.0),
    };
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(top + 1);
    for (j, &l) in logits.iter().enumerate() {
        if best.len() == top && best.last().is_none_or(|&last| !better((j, l), last)) {
            continue;
        }
        let at = best
            .iter()
            .position(|&b| better((j, l), b))
            .unwrap_or(best.len());
        best.insert(at, (j, l));
        best.truncate(top);
    }
    TokenLogprobs {
        logprob: logits.get(token as usize).map_or(f32::NAN, |&l| logprob(l)),
        top: best
            .into_iter()
            .map(|(j, l)| (j as u32, logprob(l)))
            .collect(),
    }
}

/// The next token from one row of logits: argmax for temperature 0, else a draw from the
/// top-p nucleus of softmax(logits / temperature), from the stream of (seed, sequence, step).
pub fn sample(logits: &[f32], cfg: &GenerationConfig, sequence: u64, step: u64) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (j, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = j;
            }
        }
        best as u32
    };
    if cfg.temperature <= 0.0 || logits.is_empty() {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let t = cfg.temperature as f64;
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(j, &l)| (j, ((l as f64 - max) / t).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    // Most likely first; ties keep the lower id first (a stable sort).
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0;
    let mut mass = 0.0;
    for p in &probs {
        kept += 1;
        mass += p.1 / total;
        if mass >= cfg.top_p as f64 {
            break;
        }
    }
    let nucleus = &probs[..kept];
    let nucleus_mass: f64 = nucleus.iter().map(|p| p.1).sum();
    let h = splitmix64(cfg.seed ^ splitmix64(sequence ^ splitmix64(step.wrapping_add(0x5EED))));
    let u = (h >> 11) as f64 / (1u64 << 53) as f64 * nucleus_mass;
    let mut acc = 0.0;
    for p in nucleus {
        acc += p.1;
        if u < acc {
            return p.0 as u32;
        }
    }
    nucleus[nucleus.len() - 1].0 as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ties rank the lower id first, NaN ranks last, and asking for more alternatives than the
    /// vocabulary holds gives the whole vocabulary.
    #[test]
    fn token_logprobs_order_ties_nan_and_small_vocabularies() {
        let logits = [1.0, f32::NAN, 3.0, 1.0, 3.0];
        let got = token_logprobs(&logits, 3, 10);
        let ids: Vec<u32> = got.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [2, 4, 0, 3, 1]);
        // Probabilities over the non-NaN logits sum to one.
        let total: f64 = got.top[..4].iter().map(|t| (t.1 as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        let want = 1.0 - (2.0 * 1f64.exp() + 2.0 * 3f64.exp()).ln();
        assert!((got.logprob as f64 - want).abs() < 1e-6);
        assert!(got.top[4].1.is_nan());
        assert!(token_logprobs(&logits, 0, 0).top.is_empty());
        assert!(
            token_logprobs(&logits, 9, 1).logprob.is_nan(),
            "no such token"
        );
    }
}
