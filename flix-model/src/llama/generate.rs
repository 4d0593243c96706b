//! Generation with a key/value cache for a batch in which every sequence has its own features
//! (the serving case): one prefill pass over all prompts, then one token per unfinished sequence
//! per step. Greedy (temperature 0) or temperature + top-p sampling; each sequence draws from its
//! own counter-based random stream, so its output does not depend on what it is batched with.
//! This is the one decoding loop: evaluation (`eval::greedy`) and `flix generate` go through it.

use flix_core::{splitmix64, BatchPlan, SegmentSpec};
use flix_kernels::ops::rmsnorm::rmsnorm_forward;
use flix_kernels::ops::{matmul, Trans};
use flix_kernels::Tensor;

use super::block::{LayerCache, LayerInputs};
use super::LlamaModel;
use crate::batch::Batch;
use crate::error::{ModelError, Result};
use crate::score::Features;

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
    /// prompt's slots.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        features: Option<&Features>,
        cfg: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>> {
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(ModelError::Batch(format!("prompt {i} is empty")));
        }
        if let Some(f) = features {
            if f.slots.len() != prompts.len() {
                return Err(ModelError::Batch(format!(
                    "{} feature slot arrays for {} prompts",
                    f.slots.len(),
                    prompts.len()
                )));
            }
        }
        let n = prompts.len();
        let mut caches: Vec<LayerCache> = (0..self.layers.len())
            .map(|_| LayerCache {
                k: vec![Vec::new(); n],
                v: vec![Vec::new(); n],
            })
            .collect();
        let mut lens = vec![0usize; n];
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut active: Vec<usize> = if cfg.max_new_tokens > 0 {
            (0..n).collect()
        } else {
            Vec::new()
        };
        let mut step_tokens: Vec<Vec<u32>> = prompts.to_vec();
        let mut step = 0u64;
        while !active.is_empty() {
            // Pack the new tokens of the active sequences.
            let mut batch = Batch {
                tokens: Vec::new(),
                targets: Vec::new(),
                starts: vec![0],
                positions: Vec::new(),
            };
            for &i in &active {
                let new = &step_tokens[i];
                batch.tokens.extend_from_slice(new);
                batch.targets.extend(std::iter::repeat_n(-1, new.len()));
                batch
                    .positions
                    .extend((lens[i]..lens[i] + new.len()).map(|p| p as u32));
                batch.starts.push(batch.tokens.len());
            }
            let plan = match features {
                Some(f) => {
                    let segments: Vec<SegmentSpec> = active
                        .iter()
                        .map(|&i| SegmentSpec {
                            len: step_tokens[i].len(),
                            slots: f.slots[i].clone(),
                        })
                        .collect();
                    Some(self.device_plan(BatchPlan::new(f.types, &segments, 64)?)?)
                }
                None => None,
            };
            self.check_batch(&batch, plan.as_ref())?;
            let inputs = LayerInputs {
                batch: &batch,
                plan: plan.as_ref(),
            };
            let mut x = self.embed_tokens(&batch.tokens)?;
            for (layer, cache) in self.layers.iter().zip(&mut caches) {
                x = layer.forward_cached(&inputs, x, cache, &active)?;
            }
            let logits = self.last_token_logits(&x, &batch.starts)?;
            let vocab = self.config.vocab_size;
            let mut still = Vec::with_capacity(active.len());
            for (row, &i) in active.iter().enumerate() {
                lens[i] += step_tokens[i].len();
                let next = sample(&logits[row * vocab..(row + 1) * vocab], cfg, i as u64, step);
                out[i].push(next);
                step_tokens[i] = vec![next];
                if out[i].len() < cfg.max_new_tokens && !cfg.eos_token_ids.contains(&next) {
                    still.push(i);
                }
            }
            active = still;
            step += 1;
        }
        Ok(out)
    }

    /// Logits of the last token of each segment of the final hidden state `x`.
    fn last_token_logits(&self, x: &Tensor, starts: &[usize]) -> Result<Vec<f32>> {
        let d = self.config.hidden_size;
        let all = x.to_f32_vec()?;
        let last: Vec<f32> = starts
            .windows(2)
            .flat_map(|w| all[(w[1] - 1) * d..w[1] * d].iter().copied())
            .collect();
        let rows = starts.len() - 1;
        let last = Tensor::from_f32(x.device(), x.dtype(), &[rows, d], &last)?;
        let (xn, _) = rmsnorm_forward(&last, &self.norm.value, self.config.rms_norm_eps)?;
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
