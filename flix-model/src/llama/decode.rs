//! Continuous batching: a [`Decoder`] holds the sequences being generated, each with its own
//! features, sampling settings and key/value cache. Sequences join ([`Decoder::add`]) and leave
//! (they finish, or [`Decoder::cancel`]) between steps; each [`Decoder::step`] is one forward pass
//! over every active sequence in one mixed-feature batch: the whole prompt of a sequence that
//! joined since the last step (prefill) and one token for each of the others (decode).
//!
//! A sequence's tokens do not depend on what it is batched with or when it joined: attention only
//! reads the sequence's own cache, the adapters are picked per segment by the batch plan, and a
//! sampled sequence draws from the random stream of its own (seed, stream) at its own step.
//! `LlamaModel::generate` (so `flix generate` and evaluation) and `flix serve` all decode here.

use flix_core::TypeShape;
use flix_kernels::ops::attention::{DecodeLayerCaches, DecodeStep};
use flix_kernels::Tensor;

use super::block::{LayerCache, LayerInputs};
use super::generate::{sample, token_logprobs, GenerationConfig, TokenLogprobs};
use super::LlamaModel;
use crate::batch::Batch;
use crate::error::{ModelError, Result};

/// One sequence to decode.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceParams {
    pub prompt: Vec<u32>,
    /// The plan slot of each feature type (-1: absent), as `Layout::slots` gives them. Ignored
    /// when the model has no adapters.
    pub slots: Vec<i32>,
    /// At least 1.
    pub max_new_tokens: usize,
    /// 0 is greedy.
    pub temperature: f32,
    /// In (0, 1].
    pub top_p: f32,
    pub seed: u64,
    /// Which random stream of `seed` the sequence draws from. `LlamaModel::generate` gives
    /// prompt i the stream i, so a sequence with stream i and the same seed, prompt and features
    /// samples the same tokens as prompt i there.
    pub stream: u64,
    /// Decoding stops after one of these (it is emitted, with [`FinishReason::Eos`]).
    pub eos_token_ids: Vec<u32>,
    /// `Some(k)`: every new token comes with its log-probability and the k most likely tokens'
    /// ([`TokenLogprobs`]; k = 0 for the token's own only). At most [`MAX_TOP_LOGPROBS`].
    pub logprobs: Option<usize>,
    /// With `logprobs`: the sequence's first event also carries the same for every prompt token
    /// after the first ([`DecodeEvent::prompt_logprobs`]), from the prefill's logits.
    pub prompt_logprobs: bool,
}

/// Prompt rows whose logits are on the host at once when prompt log-probabilities are asked
/// for: bounds the memory a long prompt of a large vocabulary takes (32 × 262 144 f32 = 32 MiB).
const PROMPT_LOGPROB_ROWS: usize = 32;

/// The most alternatives [`SequenceParams::logprobs`] may ask for per token.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A handle on a sequence of one decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SequenceId(pub u64);

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// It emitted one of its end-of-sequence tokens.
    Eos,
    /// It reached `max_new_tokens`, or its prompt and output filled the model's context.
    Length,
}

/// One new token of one sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeEvent {
    pub id: SequenceId,
    pub token: u32,
    /// Set on the sequence's last token; the decoder has already let go of it.
    pub finished: Option<FinishReason>,
    /// When the sequence asked for them ([`SequenceParams::logprobs`]).
    pub logprobs: Option<TokenLogprobs>,
    /// On a sequence's first event, when it asked for them ([`SequenceParams::prompt_logprobs`]):
    /// prompt token j's, for j = 1, 2, …; empty otherwise.
    pub prompt_logprobs: Vec<TokenLogprobs>,
}

/// A sequence being decoded.
struct Active {
    id: SequenceId,
    /// Its index in every layer's cache.
    cache_slot: usize,
    slots: Vec<i32>,
    sampling: GenerationConfig,
    stream: u64,
    /// How many alternatives to report with each new token, if any.
    logprobs: Option<usize>,
    prompt_logprobs: bool,
    /// Tokens the next step feeds: the prompt before the first step, then the last new token.
    pending: Vec<u32>,
    /// Tokens already in the cache.
    cached: usize,
    generated: usize,
}

/// Log-probabilities of `prompt[1..]` from the final hidden state `x` of a prefill whose rows
/// `start..start + prompt.len()` hold the prompt: row j predicts token j + 1.
fn prompt_token_logprobs(
    model: &LlamaModel,
    x: &Tensor,
    start: usize,
    prompt: &[u32],
    k: usize,
) -> Result<Vec<TokenLogprobs>> {
    let vocab = model.config.vocab_size;
    let rows: Vec<usize> = (start..start + prompt.len().saturating_sub(1)).collect();
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(PROMPT_LOGPROB_ROWS) {
        let logits = model.row_logits(x, chunk)?;
        for (i, &row) in chunk.iter().enumerate() {
            let next = prompt[row - start + 1];
            out.push(token_logprobs(&logits[i * vocab..(i + 1) * vocab], next, k));
        }
    }
    Ok(out)
}

/// The sequences being generated and their key/value caches. See the module docs.
pub struct Decoder<'m> {
    model: &'m LlamaModel,
    types: Option<Vec<TypeShape>>,
    /// Per layer; indexed by `Active::cache_slot`.
    caches: Vec<LayerCache>,
    free_cache_slots: Vec<usize>,
    /// In the order they joined, which is their order in each step's batch.
    active: Vec<Active>,
    next_id: u64,
}

impl<'m> Decoder<'m> {
    /// A decoder over `model` with its adapters, if any (each sequence then gives its feature
    /// values in [`SequenceParams::slots`]).
    pub fn new(model: &'m LlamaModel) -> Self {
        Self {
            model,
            types: model.adapter_types(),
            caches: (0..model.layers.len())
                .map(|_| LayerCache::default())
                .collect(),
            free_cache_slots: Vec::new(),
            active: Vec::new(),
            next_id: 0,
        }
    }

    /// Active sequences: added, and neither finished nor cancelled.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Tokens of the active sequences held in the caches or waiting for their prefill.
    pub fn cached_tokens(&self) -> usize {
        self.active.iter().map(|a| a.cached + a.pending.len()).sum()
    }

    /// Checks `params` and queues the sequence for the next step. Every error names what is
    /// wrong in words fit for whoever sent the request.
    pub fn add(&mut self, params: SequenceParams) -> Result<SequenceId> {
        self.check(&params)?;
        let cache_slot = match self.free_cache_slots.pop() {
            Some(slot) => slot,
            None => {
                for cache in &mut self.caches {
                    cache.slots.push(None);
                }
                self.caches.first().map_or(0, |c| c.slots.len() - 1)
            }
        };
        let id = SequenceId(self.next_id);
        self.next_id += 1;
        let SequenceParams {
            prompt,
            slots,
            max_new_tokens,
            temperature,
            top_p,
            seed,
            stream,
            eos_token_ids,
            logprobs,
            prompt_logprobs,
        } = params;
        self.active.push(Active {
            id,
            cache_slot,
            slots,
            sampling: GenerationConfig {
                max_new_tokens,
                temperature,
                top_p,
                seed,
                eos_token_ids,
            },
            stream,
            logprobs,
            prompt_logprobs,
            pending: prompt,
            cached: 0,
            generated: 0,
        });
        Ok(id)
    }

    fn check(&self, p: &SequenceParams) -> Result<()> {
        let invalid = |message: String| Err(ModelError::Batch(message));
        let config = &self.model.config;
        if p.prompt.is_empty() {
            return invalid("the prompt is empty".into());
        }
        if let Some(&token) = p.prompt.iter().find(|&&t| t as usize >= config.vocab_size) {
            return invalid(format!(
                "prompt token {token} is outside the vocabulary of {} tokens",
                config.vocab_size
            ));
        }
        if p.prompt.len() >= config.max_position_embeddings {
            return invalid(format!(
                "the prompt has {} tokens; the model's context holds {} \
                 (max_position_embeddings), so at most {} leave room for one new token",
                p.prompt.len(),
                config.max_position_embeddings,
                config.max_position_embeddings - 1
            ));
        }
        if p.max_new_tokens == 0 {
            return invalid("max_new_tokens must be at least 1".into());
        }
        if !(p.temperature >= 0.0 && p.temperature.is_finite()) {
            return invalid(format!(
                "temperature must be finite and >= 0 (0: greedy), found {}",
                p.temperature
            ));
        }
        if !(p.top_p > 0.0 && p.top_p <= 1.0) {
            return invalid(format!("top_p must be in (0, 1], found {}", p.top_p));
        }
        if let Some(k) = p.logprobs.filter(|&k| k > MAX_TOP_LOGPROBS) {
            return invalid(format!(
                "at most {MAX_TOP_LOGPROBS} alternatives per token (logprobs), found {k}"
            ));
        }
        if p.prompt_logprobs && p.logprobs.is_none() {
            return invalid(
                "prompt log-probabilities need logprobs (how many alternatives)".into(),
            );
        }
        if let Some(types) = &self.types {
            if p.slots.len() > types.len() {
                return invalid(format!(
                    "{} feature slots for {} adapter types",
                    p.slots.len(),
                    types.len()
                ));
            }
            for (t, (&slot, ty)) in p.slots.iter().zip(types).enumerate() {
                if slot < -1 || slot >= ty.num_values as i32 {
                    return invalid(format!(
                        "feature slot {slot} of type {t} is outside -1..{}",
                        ty.num_values
                    ));
                }
            }
        }
        Ok(())
    }

    /// Drops a sequence and its cache. False when `id` is not active (finished, cancelled or
    /// never added).
    pub fn cancel(&mut self, id: SequenceId) -> bool {
        match self.active.iter().position(|a| a.id == id) {
            Some(i) => {
                let gone = self.active.remove(i);
                self.release(gone.cache_slot);
                true
            }
            None => false,
        }
    }

    fn release(&mut self, cache_slot: usize) {
        for cache in &mut self.caches {
            cache.slots[cache_slot] = None;
        }
        self.free_cache_slots.push(cache_slot);
    }

    /// One forward pass over every active sequence; one event per sequence, in the order they
    /// joined. Finished sequences are dropped before this returns. Empty when none is active.
    pub fn step(&mut self) -> Result<Vec<DecodeEvent>> {
        if self.active.is_empty() {
            return Ok(Vec::new());
        }
        let model = self.model;
        let mut batch = Batch {
            tokens: Vec::new(),
            targets: Vec::new(),
            starts: vec![0],
            positions: Vec::new(),
            features: Vec::with_capacity(self.active.len()),
        };
        for a in &self.active {
            batch.tokens.extend_from_slice(&a.pending);
            batch
                .targets
                .extend(std::iter::repeat_n(-1, a.pending.len()));
            batch
                .positions
                .extend((a.cached..a.cached + a.pending.len()).map(|p| p as u32));
            batch.starts.push(batch.tokens.len());
            batch.features.push(a.slots.clone());
        }
        let batch = model.upload(&batch)?;
        let inputs = LayerInputs { batch: &batch };
        let cache_slots: Vec<usize> = self.active.iter().map(|a| a.cache_slot).collect();
        // Every layer's caches get room for the step's rows first, so that the step's attention
        // tables (every layer's cache addresses and the work units, one upload) stay valid
        // while the layers append.
        let new_rows: Vec<usize> = self.active.iter().map(|a| a.pending.len()).collect();
        let device = &model.device;
        for (layer, cache) in model.layers.iter().zip(&mut self.caches) {
            cache.reserve(
                &cache_slots,
                &new_rows,
                layer.attention_shape(),
                device,
                model.dtype(),
            )?;
        }
        let views = self
            .caches
            .iter()
            .map(|c| c.views_after(&cache_slots, &new_rows))
            .collect::<Result<Vec<_>>>()?;
        let layer_caches: Vec<DecodeLayerCaches> = model
            .layers
            .iter()
            .zip(&views)
            .map(|(layer, caches)| DecodeLayerCaches {
                shape: layer.attention_shape(),
                caches,
            })
            .collect();
        let step = DecodeStep::new(device, batch.starts(), &layer_caches)?;
        let mut x = model.embed_tokens(&batch)?;
        for (index, (layer, cache)) in model.layers.iter().zip(&mut self.caches).enumerate() {
            x = layer.forward_cached(&inputs, x, cache, &cache_slots, &step, index)?;
        }
        let logits = model.last_token_logits(&x, batch.starts())?;

        let vocab = model.config.vocab_size;
        let context = model.config.max_position_embeddings;
        let mut events = Vec::with_capacity(self.active.len());
        let mut finished = Vec::new();
        let starts = batch.starts();
        for (row, a) in self.active.iter_mut().enumerate() {
            let prompt_logprobs = match a.logprobs {
                Some(k) if a.prompt_logprobs && a.cached == 0 => {
                    prompt_token_logprobs(model, &x, starts[row], &a.pending, k)?
                }
                _ => Vec::new(),
            };
            let row_logits = &logits[row * vocab..(row + 1) * vocab];
            let token = sample(row_logits, &a.sampling, a.stream, a.generated as u64);
            let logprobs = a.logprobs.map(|k| token_logprobs(row_logits, token, k));
            a.cached += a.pending.len();
            a.generated += 1;
            a.pending = vec![token];
            let reason = if a.sampling.eos_token_ids.contains(&token) {
                Some(FinishReason::Eos)
            } else if a.generated >= a.sampling.max_new_tokens || a.cached + 1 >= context {
                Some(FinishReason::Length)
            } else {
                None
            };
            if reason.is_some() {
                finished.push(a.id);
            }
            events.push(DecodeEvent {
                id: a.id,
                token,
                finished: reason,
                logprobs,
                prompt_logprobs,
            });
        }
        for id in finished {
            self.cancel(id);
        }
        Ok(events)
    }
}
