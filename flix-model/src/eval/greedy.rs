//! Greedy decoding for evaluation: prompts packed into groups by a token budget, each group
//! decoded by [`LlamaModel::generate`] (the one decoding loop, with its KV cache).

use crate::error::Result;
use crate::llama::{GenerationConfig, LlamaModel};
use crate::train::Layout;

/// One prompt to continue: its tokens and the plan slots of its features.
pub struct Prompt {
    pub tokens: Vec<u32>,
    pub slots: Vec<i32>,
}

/// Greedy continuations of `prompts` (without the prompt, without `eos`), at most `max_new`
/// tokens each. Prompts are packed into groups whose final length (prompt + `max_new` each) is
/// about `batch_tokens`; a sequence's output does not depend on its group.
pub fn greedy_decode(
    model: &LlamaModel,
    layout: &Layout,
    prompts: &[Prompt],
    eos: u32,
    max_new: usize,
    batch_tokens: usize,
) -> Result<Vec<Vec<u32>>> {
    let config = GenerationConfig {
        max_new_tokens: max_new,
        temperature: 0.0,
        eos_token_ids: vec![eos],
        ..GenerationConfig::default()
    };
    let has_adapters = layout.adapter_spec(0).is_some();
    let mut outputs = Vec::with_capacity(prompts.len());
    let mut start = 0;
    while start < prompts.len() {
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
        let group = &prompts[start..end];
        let token_lists: Vec<Vec<u32>> = group.iter().map(|p| p.tokens.clone()).collect();
        let slots: Vec<Vec<i32>> = group.iter().map(|p| p.slots.clone()).collect();
        let features = has_adapters.then_some(slots.as_slice());
        for mut out in model.generate(&token_lists, features, &config)? {
            if out.last() == Some(&eos) {
                out.pop();
            }
            outputs.push(out);
        }
        start = end;
    }
    Ok(outputs)
}
