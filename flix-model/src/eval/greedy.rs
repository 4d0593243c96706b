//! Greedy decoding for evaluation, without a KV cache: every step runs the whole prefix of every
//! unfinished sequence again. Quadratic in the output length, which is fine for the short targets
//! of exact-match evaluation; the model's cached generation replaces it once it exists.

use flix_core::{BatchPlan, SegmentSpec};

use crate::batch::{Batch, Sequence};
use crate::error::Result;
use crate::llama::LlamaModel;
use crate::train::Layout;

/// One prompt to continue: its tokens and the plan slots of its features.
pub struct Prompt {
    pub tokens: Vec<u32>,
    pub slots: Vec<i32>,
}

/// Tile size of evaluation plans.
const TILE: usize = 64;

/// Greedy continuations of `prompts` (without the prompt, without `eos`), at most `max_new`
/// tokens each. Prompts are packed into batches of about `batch_tokens` tokens.
pub fn greedy_decode(
    model: &LlamaModel,
    layout: &Layout,
    prompts: &[Prompt],
    eos: u32,
    max_new: usize,
    batch_tokens: usize,
) -> Result<Vec<Vec<u32>>> {
    let mut outputs = vec![Vec::new(); prompts.len()];
    let mut start = 0;
    while start < prompts.len() {
        // Pack prompts whose final length (prompt + max_new) fits the budget.
        let mut end = start;
        let mut tokens = 0;
        while end < prompts.len() {
            let len = prompts[end].tokens.len() + max_new;
            if end > start && tokens + len > batch_tokens {
                break;
            }
            tokens += len;
            end += 1;
        }
        decode_group(
            model,
            layout,
            &prompts[start..end],
            eos,
            max_new,
            &mut outputs[start..end],
        )?;
        start = end;
    }
    Ok(outputs)
}

fn decode_group(
    model: &LlamaModel,
    layout: &Layout,
    prompts: &[Prompt],
    eos: u32,
    max_new: usize,
    outputs: &mut [Vec<u32>],
) -> Result<()> {
    let vocab = model.config.vocab_size;
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    for _ in 0..max_new {
        if active.is_empty() {
            break;
        }
        let sequences: Vec<Sequence> = active
            .iter()
            .map(|&i| {
                let mut tokens = prompts[i].tokens.clone();
                tokens.extend(&outputs[i]);
                let n = tokens.len();
                Sequence::prompt_and_target(tokens, n)
            })
            .collect();
        let batch = Batch::new(&sequences)?;
        let plan = if layout.adapter_spec(0).is_some() {
            let segments: Vec<SegmentSpec> = active
                .iter()
                .zip(batch.sequence_lens())
                .map(|(&i, len)| SegmentSpec {
                    len,
                    slots: prompts[i].slots.clone(),
                })
                .collect();
            let plan = BatchPlan::new(&layout.type_shapes(), &segments, TILE)?;
            Some(model.device_plan(plan)?)
        } else {
            None
        };
        let logits = model.logits(&batch, plan.as_ref())?.to_f32_vec()?;
        let mut still = Vec::with_capacity(active.len());
        for (s, &i) in active.iter().enumerate() {
            let last = batch.starts[s + 1] - 1;
            let row = &logits[last * vocab..(last + 1) * vocab];
            let next = argmax(row);
            if next == eos {
                continue;
            }
            outputs[i].push(next);
            still.push(i);
        }
        active = still;
    }
    Ok(())
}

/// The index of the largest value (the first on ties).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}
