//! Generation with the KV cache, against independent references: greedy continuations computed
//! by `transformers` + `peft` (full recomputation), and, for mixed-feature batches with sampling,
//! our own model recomputing every step from scratch without a cache, one sequence at a time.

use std::path::{Path, PathBuf};

use flix_core::TypeShape;
use flix_kernels::{DType, Device, Tensor};
use flix_model::llama::sample;
use flix_model::{
    load_peft_lora, AdapterSpec, AdapterType, Batch, Decoder, FinishReason, GenerationConfig,
    LlamaModel, Sequence, SequenceId, SequenceParams, TargetModule, MAX_TOP_LOGPROBS,
};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

#[test]
fn greedy_matches_transformers_with_peft_lora() {
    let text = std::fs::read_to_string(fixture_dir().join("inputs.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let cases = json["greedy_with_lora"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["prompt"])).collect();
    let want: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["new_tokens"])).collect();

    let mut model = LlamaModel::load(&fixture_dir(), &Device::Cpu).unwrap();
    let lora = load_peft_lora(&mut model, &fixture_dir().join("lora")).unwrap();
    let features = vec![lora.features(); prompts.len()];
    let cfg = GenerationConfig {
        max_new_tokens: 6,
        ..GenerationConfig::default()
    };
    let got = model
        .generate(&prompts, Some(features.as_slice()), &cfg)
        .unwrap();
    assert_eq!(got, want);
}

const TYPES: [TypeShape; 2] = [
    TypeShape {
        rank: 2,
        num_values: 3,
    },
    TypeShape {
        rank: 3,
        num_values: 2,
    },
];

fn model_with_adapters() -> LlamaModel {
    let mut model = LlamaModel::load(&fixture_dir(), &Device::Cpu).unwrap();
    let spec = AdapterSpec {
        types: TYPES
            .iter()
            .map(|t| AdapterType {
                rank: t.rank,
                alpha: 8.0,
                num_values: t.num_values,
            })
            .collect(),
        targets: TargetModule::ALL.to_vec(),
        seed: 5,
    };
    model.attach_adapters(&spec).unwrap();
    let mut salt = 0u64;
    for layer in 0..model.config.num_hidden_layers {
        for module in TargetModule::ALL {
            for ty in &mut model
                .linear_mut(layer, module)
                .unwrap()
                .adapter
                .as_mut()
                .unwrap()
                .layers
                .types
            {
                let shape = ty.b.shape().to_vec();
                salt += 1;
                let vals: Vec<f32> = (0..shape.iter().product::<usize>())
                    .map(|i| {
                        (((i as u64 * 2654435761 + salt * 131) % 1000) as f32 / 1000.0 - 0.5) * 0.4
                    })
                    .collect();
                ty.b = Tensor::from_f32(&Device::Cpu, DType::F32, &shape, &vals).unwrap();
            }
        }
    }
    model
}

/// No cache: run the whole sequence so far each step and sample from its last row.
fn reference_generate(
    model: &LlamaModel,
    prompt: &[u32],
    slots: &[i32],
    index: u64,
    cfg: &GenerationConfig,
) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    let mut new = Vec::new();
    for step in 0..cfg.max_new_tokens as u64 {
        let batch = Batch::new(&[Sequence {
            tokens: ids.clone(),
            targets: vec![-1; ids.len()],
            features: slots.to_vec(),
        }])
        .unwrap();
        let batch = model.upload(&batch).unwrap();
        let logits = model.logits(&batch).unwrap().to_f32_vec().unwrap();
        let vocab = model.config.vocab_size;
        let next = sample(&logits[(ids.len() - 1) * vocab..], cfg, index, step);
        new.push(next);
        ids.push(next);
        if cfg.eos_token_ids.contains(&next) {
            break;
        }
    }
    new
}

#[test]
fn cached_mixed_feature_generation_equals_recomputation() {
    let model = model_with_adapters();
    let prompts = vec![vec![1, 17, 42, 99, 5], vec![1, 88], vec![4, 9, 100]];
    let slots = vec![vec![0, 1], vec![2, -1], vec![-1, 0]];
    let features = slots.as_slice();
    for cfg in [
        GenerationConfig {
            max_new_tokens: 5,
            ..GenerationConfig::default()
        },
        GenerationConfig {
            max_new_tokens: 5,
            temperature: 1.5,
            top_p: 0.9,
            seed: 11,
            eos_token_ids: vec![],
        },
    ] {
        let got = model.generate(&prompts, Some(features), &cfg).unwrap();
        for (i, prompt) in prompts.iter().enumerate() {
            let want = reference_generate(&model, prompt, &slots[i], i as u64, &cfg);
            assert_eq!(got[i], want, "sequence {i} with {cfg:?}");
        }
    }
    // Stopping at an end-of-sequence token: sequence 0's first greedy token ends it alone.
    let greedy = model
        .generate(
            &prompts,
            Some(features),
            &GenerationConfig {
                max_new_tokens: 5,
                ..GenerationConfig::default()
            },
        )
        .unwrap();
    let eos = greedy[0][0];
    let cfg = GenerationConfig {
        max_new_tokens: 5,
        eos_token_ids: vec![eos],
        ..GenerationConfig::default()
    };
    let stopped = model.generate(&prompts, Some(features), &cfg).unwrap();
    assert_eq!(stopped[0], vec![eos]);
    for i in 1..3 {
        let cut = greedy[i]
            .iter()
            .position(|&t| t == eos)
            .map_or(5, |p| p + 1);
        assert_eq!(stopped[i], greedy[i][..cut]);
    }
}

#[test]
fn sampling_rules() {
    let logits = [0.1f32, 2.0, -1.0, 1.9, 0.0];
    let greedy = GenerationConfig::default();
    assert_eq!(sample(&logits, &greedy, 0, 0), 1);
    // A tiny nucleus keeps only the most likely token.
    let narrow = GenerationConfig {
        temperature: 1.0,
        top_p: 1e-6,
        ..GenerationConfig::default()
    };
    for step in 0..20 {
        assert_eq!(sample(&logits, &narrow, 3, step), 1);
    }
    // top_p = 0.6 keeps tokens 1 and 3 (0.45 + 0.40 of the mass) and nothing else; both appear.
    let nucleus = GenerationConfig {
        temperature: 1.0,
        top_p: 0.6,
        seed: 2,
        ..GenerationConfig::default()
    };
    let draws: Vec<u32> = (0..200).map(|s| sample(&logits, &nucleus, 0, s)).collect();
    assert!(draws.iter().all(|&t| t == 1 || t == 3));
    assert!(draws.contains(&1) && draws.contains(&3));
    // Same (seed, sequence, step), same token.
    assert_eq!(
        draws,
        (0..200)
            .map(|s| sample(&logits, &nucleus, 0, s))
            .collect::<Vec<_>>()
    );
}

/// Continuous batching: sequences that join at different steps, with their own sampling
/// settings, next to one that is cancelled (its cache slot then reused), each get exactly what
/// they get alone without a cache.
#[test]
fn decoder_sequences_joining_and_leaving_equal_each_alone() {
    let model = model_with_adapters();
    let mut decoder = Decoder::new(&model);
    let params = |prompt: Vec<u32>, slots: Vec<i32>, temperature: f32, seed: u64, stream: u64| {
        SequenceParams {
            prompt,
            slots,
            max_new_tokens: 4,
            temperature,
            top_p: 0.95,
            seed,
            stream,
            eos_token_ids: vec![],
            logprobs: None,
            prompt_logprobs: false,
        }
    };
    // (step at which it joins, its parameters)
    let joins = [
        (0, params(vec![1, 17, 42, 99, 5], vec![0, 1], 0.0, 0, 0)),
        (0, params(vec![1, 88], vec![2, -1], 1.3, 7, 0)),
        (1, params(vec![4, 9, 100], vec![-1, 0], 0.0, 0, 3)),
        (2, params(vec![1, 2, 3, 4, 5, 6, 7], vec![1], 0.8, 9, 5)),
        (3, params(vec![60], vec![], 1.0, 2, 1)),
    ];
    let doomed = decoder
        .add(params(vec![5, 6, 7], vec![0, 0], 0.0, 0, 0))
        .unwrap();
    let mut ids = Vec::new();
    let mut got: std::collections::HashMap<SequenceId, Vec<u32>> = Default::default();
    let mut finished = Vec::new();
    for step in 0.. {
        for (_, p) in joins.iter().filter(|(at, _)| *at == step) {
            ids.push(decoder.add(p.clone()).unwrap());
        }
        if step == 1 {
            assert!(decoder.cancel(doomed));
            assert!(!decoder.cancel(doomed), "a cancelled sequence is gone");
        }
        if decoder.is_empty() && step > 3 {
            break;
        }
        for event in decoder.step().unwrap() {
            got.entry(event.id).or_default().push(event.token);
            if let Some(reason) = event.finished {
                assert_eq!(reason, FinishReason::Length);
                finished.push(event.id);
            }
        }
    }
    assert_eq!(
        got[&doomed].len(),
        1,
        "the cancelled sequence got one token before it left"
    );
    assert_eq!(decoder.cached_tokens(), 0);
    for ((_, p), id) in joins.iter().zip(&ids) {
        let cfg = GenerationConfig {
            max_new_tokens: p.max_new_tokens,
            temperature: p.temperature,
            top_p: p.top_p,
            seed: p.seed,
            eos_token_ids: vec![],
        };
        let want = reference_generate(&model, &p.prompt, &p.slots, p.stream, &cfg);
        assert_eq!(got[id], want, "sequence {p:?}");
        assert!(finished.contains(id));
    }
}

/// A sequence whose prompt and output fill the model's context stops there (Length), and a
/// prompt that leaves no room, an empty prompt, a token outside the vocabulary, a slot outside
/// its type's values and bad sampling settings are refused.
#[test]
fn decoder_stops_at_the_context_and_refuses_bad_sequences() {
    let model = model_with_adapters();
    let context = model.config.max_position_embeddings;
    let mut decoder = Decoder::new(&model);
    let ok = SequenceParams {
        prompt: vec![3; context - 2],
        slots: vec![0, 1],
        max_new_tokens: 100,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stream: 0,
        eos_token_ids: vec![],
        logprobs: None,
        prompt_logprobs: false,
    };
    let id = decoder.add(ok.clone()).unwrap();
    let mut events = Vec::new();
    while !decoder.is_empty() {
        events.extend(decoder.step().unwrap());
    }
    assert_eq!(events.len(), 2, "context {context}, prompt {}", context - 2);
    assert_eq!(events[1].id, id);
    assert_eq!(events[1].finished, Some(FinishReason::Length));

    let vocab = model.config.vocab_size as u32;
    let bad = [
        SequenceParams {
            prompt: vec![3; context - 1 + 1],
            ..ok.clone()
        },
        SequenceParams {
            prompt: vec![],
            ..ok.clone()
        },
        SequenceParams {
            prompt: vec![1, vocab],
            ..ok.clone()
        },
        SequenceParams {
            slots: vec![0, 2],
            ..ok.clone()
        },
        SequenceParams {
            slots: vec![0, 0, 0],
            ..ok.clone()
        },
        SequenceParams {
            max_new_tokens: 0,
            ..ok.clone()
        },
        SequenceParams {
            temperature: f32::NAN,
            ..ok.clone()
        },
        SequenceParams {
            top_p: 0.0,
            ..ok.clone()
        },
        SequenceParams {
            logprobs: Some(MAX_TOP_LOGPROBS + 1),
            ..ok.clone()
        },
        SequenceParams {
            prompt_logprobs: true,
            ..ok.clone()
        },
    ];
    for p in bad {
        let err = decoder.add(p.clone()).unwrap_err();
        assert!(!err.to_string().is_empty(), "{p:?}");
    }
    assert!(decoder.is_empty(), "refused sequences never joined");
}

/// The log-probabilities the decoder reports with each token (cached decoding, in a batch with
/// another sequence), and with the prompt's tokens when asked, against a log-softmax in f64 of
/// the logits of the whole sequence, computed without a cache; the alternatives are the most
/// likely tokens of that row, in order.
#[test]
fn decoder_logprobs_are_the_log_softmax_of_the_uncached_logits() {
    let model = model_with_adapters();
    let vocab = model.config.vocab_size;
    let mut decoder = Decoder::new(&model);
    let sequence = |prompt: Vec<u32>, slots: Vec<i32>, temperature: f32, logprobs| SequenceParams {
        prompt,
        slots,
        max_new_tokens: 5,
        temperature,
        top_p: 1.0,
        seed: 3,
        stream: 0,
        eos_token_ids: vec![],
        logprobs,
        prompt_logprobs: false,
    };
    let asked = [
        sequence(vec![1, 17, 42], vec![0, 1], 0.0, Some(3)),
        SequenceParams {
            prompt_logprobs: true,
            ..sequence(vec![1, 88, 7, 31], vec![2, -1], 1.5, Some(0))
        },
    ];
    let quiet = decoder
        .add(sequence(vec![5, 6], vec![1, 0], 0.0, None))
        .unwrap();
    let ids: Vec<SequenceId> = asked
        .iter()
        .map(|p| decoder.add(p.clone()).unwrap())
        .collect();
    let mut events: std::collections::HashMap<SequenceId, Vec<_>> = Default::default();
    while !decoder.is_empty() {
        for event in decoder.step().unwrap() {
            events.entry(event.id).or_default().push(event);
        }
    }
    assert!(events[&quiet].iter().all(|e| e.logprobs.is_none()));
    for (p, id) in asked.iter().zip(&ids) {
        // (row of the whole sequence's logits, token it predicts, what the decoder reported)
        let mut checks = Vec::new();
        let first = &events[id][0];
        if p.prompt_logprobs {
            assert_eq!(first.prompt_logprobs.len(), p.prompt.len() - 1);
            for (j, got) in first.prompt_logprobs.iter().enumerate() {
                checks.push((j, p.prompt[j + 1], got.clone()));
            }
        } else {
            assert!(first.prompt_logprobs.is_empty());
        }
        for (i, event) in events[id].iter().enumerate() {
            assert!(
                i == 0 || event.prompt_logprobs.is_empty(),
                "only the first event"
            );
            let at = p.prompt.len() - 1 + i;
            checks.push((at, event.token, event.logprobs.clone().unwrap()));
        }
        let generated: Vec<u32> = events[id].iter().map(|e| e.token).collect();
        let tokens = [p.prompt.clone(), generated].concat();
        let batch = Batch::new(&[Sequence {
            tokens: tokens.clone(),
            targets: vec![-1; tokens.len()],
            features: p.slots.clone(),
        }])
        .unwrap();
        let all = model
            .logits(&model.upload(&batch).unwrap())
            .unwrap()
            .to_f32_vec()
            .unwrap();
        for (at, token, got) in checks {
            let row = &all[at * vocab..(at + 1) * vocab];
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &l| m.max(l as f64));
            let log_total = max
                + row
                    .iter()
                    .map(|&l| (l as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            let want = |t: u32| row[t as usize] as f64 - log_total;
            assert!(
                (got.logprob as f64 - want(token)).abs() < 1e-4,
                "{p:?}: token {token} at {at}: logprob {} against {}",
                got.logprob,
                want(token)
            );
            let mut order: Vec<u32> = (0..vocab as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            let k = p.logprobs.unwrap();
            assert_eq!(got.top.len(), k);
            for (&(t, lp), &t_want) in got.top.iter().zip(&order) {
                assert_eq!(t, t_want, "{p:?}: the alternatives in order");
                assert!((lp as f64 - want(t)).abs() < 1e-4);
            }
            if p.temperature == 0.0 && k > 0 && at >= p.prompt.len() - 1 {
                assert_eq!(got.top[0].0, token, "greedy picks the most likely");
            }
        }
    }
}
