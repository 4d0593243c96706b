//! TEMPORARY stand-in for flix_model::llama::decode until it lands on main (not to be merged):
//! generates a sequence whole at `add`, then hands out one token per step.

use std::collections::BTreeMap;

use flix_core::TypeShape;
use flix_model::{Features, GenerationConfig, LlamaModel, ModelError, Result};

#[derive(Clone, Debug)]
pub struct SequenceParams {
    pub prompt: Vec<u32>,
    pub slots: Vec<i32>,
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub stream: u64,
    pub eos_token_ids: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SequenceId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    Eos,
    Length,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeEvent {
    pub id: SequenceId,
    pub token: u32,
    pub finished: Option<FinishReason>,
}

pub struct Decoder<'m> {
    model: &'m LlamaModel,
    types: Option<Vec<TypeShape>>,
    next: u64,
    active: BTreeMap<SequenceId, (Vec<u32>, usize, Vec<u32>, usize)>,
}

impl<'m> Decoder<'m> {
    pub fn new(model: &'m LlamaModel, types: Option<Vec<TypeShape>>) -> Self {
        Self {
            model,
            types,
            next: 0,
            active: BTreeMap::new(),
        }
    }
    pub fn add(&mut self, params: SequenceParams) -> Result<SequenceId> {
        if params.max_new_tokens == 0 {
            return Err(ModelError::Invalid("max_new_tokens must be >= 1".into()));
        }
        let types = self.types.clone().unwrap_or_default();
        let slots = vec![params.slots.clone()];
        let features = Features {
            types: &types,
            slots: &slots,
        };
        let config = GenerationConfig {
            max_new_tokens: params.max_new_tokens,
            temperature: params.temperature,
            top_p: params.top_p,
            seed: params.seed,
            eos_token_ids: params.eos_token_ids.clone(),
        };
        let out = self
            .model
            .generate(
                &[params.prompt.clone()],
                self.types.is_some().then_some(&features),
                &config,
            )?
            .remove(0);
        let id = SequenceId(self.next);
        self.next += 1;
        self.active.insert(
            id,
            (out, 0, params.eos_token_ids, params.max_new_tokens),
        );
        Ok(id)
    }
    pub fn cancel(&mut self, id: SequenceId) -> bool {
        self.active.remove(&id).is_some()
    }
    pub fn step(&mut self) -> Result<Vec<DecodeEvent>> {
        std::thread::sleep(std::time::Duration::from_millis(1));
        let mut events = Vec::new();
        let mut gone = Vec::new();
        for (&id, (out, pos, eos, max)) in self.active.iter_mut() {
            let token = out[*pos];
            *pos += 1;
            let finished = if eos.contains(&token) {
                Some(FinishReason::Eos)
            } else if *pos == *max {
                Some(FinishReason::Length)
            } else {
                None
            };
            if finished.is_some() {
                gone.push(id);
            }
            events.push(DecodeEvent {
                id,
                token,
                finished,
            });
        }
        for id in gone {
            self.active.remove(&id);
        }
        Ok(events)
    }
    pub fn len(&self) -> usize {
        self.active.len()
    }
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}
