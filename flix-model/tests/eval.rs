//! Greedy decoding of a mixed-feature batch (evaluation's `greedy_decode`, which runs the cached
//! `LlamaModel::generate`) gives, for every prompt, what the oracle gives: that prompt alone, no
//! cache, one argmax over the full logits of the whole sequence per step.

mod common;

use common::fixture;
use flix_core::{FeatureConfig, TypeDefaults};
use flix_kernels::Device;
use flix_model::eval::greedy::{greedy_decode, Prompt};
use flix_model::train::{load_trained, Method, TrainSpec, Trainer};
use flix_model::{Batch, Sequence};

#[test]
fn batched_greedy_decoding_equals_decoding_each_prompt_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let features = FeatureConfig::discovered(
        &["lang", "task"],
        TypeDefaults {
            rank: 2,
            alpha: 4.0,
            dropout: 0.0,
        },
    );
    let mut spec = TrainSpec::new(base, vec![train], features, Method::Flix);
    spec.steps = 8;
    spec.lr = 0.05;
    let run = tmp.path().join("run");
    Trainer::new(spec, &run).unwrap().run(|_| {}).unwrap();
    let trained = load_trained(&run, &Device::Cpu).unwrap();
    let (model, layout) = (&trained.model, &trained.layout);

    // Prompts of different lengths and feature sets (one with a feature absent).
    let prompts: Vec<Prompt> = [
        (vec![3u32, 5, 7], vec![0, 1]),
        (vec![4, 4], vec![2, 0]),
        (vec![9, 1, 2, 6], vec![1, -1]),
    ]
    .into_iter()
    .map(|(tokens, slots)| Prompt { tokens, slots })
    .collect();
    let max_new = 6;
    let eos = trained.tokenizer.eos_id().unwrap();
    // A budget that forces several groups, and one that packs all prompts together.
    let small = greedy_decode(model, layout, &prompts, eos, max_new, 12).unwrap();
    let large = greedy_decode(model, layout, &prompts, eos, max_new, 1000).unwrap();
    assert_eq!(small, large);
    assert!(large.iter().any(|o| !o.is_empty()), "nothing was generated");

    let vocab = model.config.vocab_size;
    for (p, got) in prompts.iter().zip(&large) {
        let mut tokens = p.tokens.clone();
        let mut want = Vec::new();
        for _ in 0..max_new {
            let sequence = Sequence::prompt_and_target(tokens.clone(), tokens.len())
                .with_features(p.slots.clone());
            let logits = common::logits_of(model, &Batch::new(&[sequence]).unwrap());
            let last = &logits[(tokens.len() - 1) * vocab..];
            let next = (0..vocab).fold(0, |b, i| if last[i] > last[b] { i } else { b }) as u32;
            if next == eos {
                break;
            }
            want.push(next);
            tokens.push(next);
        }
        assert_eq!(got, &want);
    }
}
