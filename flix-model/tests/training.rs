//! Training steps on the tiny fixture: AdamW over adapters only leaves every base weight
//! untouched and fits a fixed mixed-feature batch; full-parameter mode fits it too.

use std::path::{Path, PathBuf};

use flix_core::TypeShape;
use flix_kernels::ops::adamw::AdamWParams;
use flix_kernels::Device;
use flix_model::{
    AdamW, AdapterSpec, AdapterType, Batch, LlamaModel, Sequence, TargetModule, TrainMode,
};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

fn batch() -> Batch {
    let seqs = [
        Sequence::prompt_and_target(vec![1, 17, 42, 99, 5, 63, 120], 3).with_features(vec![0, 1]),
        Sequence::prompt_and_target(vec![1, 88, 7, 31, 127], 2).with_features(vec![1, -1]),
    ];
    Batch::new(&seqs).unwrap()
}

const TYPES: [TypeShape; 2] = [
    TypeShape {
        rank: 4,
        num_values: 2,
    },
    TypeShape {
        rank: 2,
        num_values: 2,
    },
];

#[test]
fn adapter_training_fits_the_batch_and_freezes_the_base() {
    let mut model = LlamaModel::load(&fixture_dir(), &Device::Cpu).unwrap();
    model.set_train_mode(TrainMode::Adapters).unwrap();
    let spec = AdapterSpec {
        types: TYPES
            .iter()
            .map(|t| AdapterType {
                rank: t.rank,
                alpha: 16.0,
                num_values: t.num_values,
            })
            .collect(),
        targets: TargetModule::ALL.to_vec(),
        seed: 1,
    };
    model.attach_adapters(&spec).unwrap();
    let before: Vec<Vec<f32>> = model
        .params_mut()
        .iter()
        .map(|p| p.value.to_f32_vec().unwrap())
        .collect();
    let batch = model.upload(&batch()).unwrap();
    let params = AdamWParams {
        lr: 1e-2,
        weight_decay: 0.0,
        ..AdamWParams::default()
    };
    let mut opt = AdamW::new(params, Some(1.0));
    let mut losses = Vec::new();
    for _ in 0..30 {
        model.zero_grad().unwrap();
        losses.push(model.forward_backward(&batch).unwrap().loss);
        let norm = opt.step(&mut model).unwrap();
        assert!(norm.is_finite() && norm > 0.0);
    }
    let first = losses[0];
    let last = *losses.last().unwrap();
    assert!(
        last < 0.5 * first,
        "loss went from {first} to {last}: {losses:?}"
    );
    let after: Vec<Vec<f32>> = model
        .params_mut()
        .iter()
        .map(|p| p.value.to_f32_vec().unwrap())
        .collect();
    assert!(before == after, "a frozen base weight changed");
    // Only the adapters are trainable: 7 projections × 2 layers × 2 types × (A, B).
    assert_eq!(model.trainable_mut().len(), 7 * 2 * 2 * 2);
}

#[test]
fn full_parameter_training_fits_the_batch() {
    let mut model = LlamaModel::load(&fixture_dir(), &Device::Cpu).unwrap();
    model.set_train_mode(TrainMode::Full).unwrap();
    let batch = model.upload(&batch()).unwrap();
    let mut opt = AdamW::new(
        AdamWParams {
            lr: 3e-3,
            ..AdamWParams::default()
        },
        None,
    );
    let mut losses = Vec::new();
    for _ in 0..20 {
        model.zero_grad().unwrap();
        losses.push(model.forward_backward(&batch).unwrap().loss);
        opt.step(&mut model).unwrap();
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(
        last < 0.5 * first,
        "loss went from {first} to {last}: {losses:?}"
    );
    assert_eq!(model.trainable_mut().len(), 1 + 2 * 9 + 2);
}

/// Two micro-batches, each scaled by 1 / (all target tokens), accumulate the gradient of the
/// mean loss over both: the same as one batch holding both sequences.
#[test]
fn gradient_accumulation_equals_one_big_batch() {
    let seqs = [
        Sequence::prompt_and_target(vec![1, 17, 42, 99, 5, 63, 120], 3),
        Sequence::prompt_and_target(vec![1, 88, 7, 31, 127], 2),
    ];
    let grads = |model: &mut LlamaModel| -> Vec<Vec<f32>> {
        model
            .params_mut()
            .iter()
            .map(|p| p.grad.as_ref().unwrap().to_f32_vec().unwrap())
            .collect()
    };
    let mut whole = LlamaModel::load(&fixture_dir(), &Device::Cpu).unwrap();
    whole.set_train_mode(TrainMode::Full).unwrap();
    let report = whole
        .forward_backward(&whole.upload(&Batch::new(&seqs).unwrap()).unwrap())
        .unwrap();

    let mut parts = LlamaModel::load(&fixture_dir(), &Device::Cpu).unwrap();
    parts.set_train_mode(TrainMode::Full).unwrap();
    let scale = 1.0 / report.targets as f32;
    for s in &seqs {
        let batch = parts
            .upload(&Batch::new(std::slice::from_ref(s)).unwrap())
            .unwrap();
        parts.forward_backward_scaled(&batch, Some(scale)).unwrap();
    }
    for (i, (a, b)) in grads(&mut whole).iter().zip(grads(&mut parts)).enumerate() {
        flix_kernels::tolerance::Tolerance::F32
            .check(&format!("parameter {i}"), &b, a)
            .unwrap();
    }
}

/// The output head's logits kept for the backward (all of them, half the vocabulary, or none:
/// recomputed) give a training step the same loss and gradients.
#[test]
fn kept_and_recomputed_logits_give_the_same_step() {
    let batch = batch();
    let step = |budget: Option<usize>| -> (f64, Vec<Vec<f32>>) {
        let mut model = LlamaModel::load(&fixture_dir(), &Device::Cpu).unwrap();
        model.set_train_mode(TrainMode::Full).unwrap();
        model.vocab_chunk = 32;
        let targets = batch.targets.iter().filter(|&&y| y >= 0).count();
        // None: half the 128-entry vocabulary, two of its four chunks.
        model.logits_budget_bytes = budget.unwrap_or(targets * 4 * 64);
        let loss = model
            .forward_backward(&model.upload(&batch).unwrap())
            .unwrap()
            .loss;
        let grads = model
            .params_mut()
            .iter()
            .map(|p| p.grad.as_ref().unwrap().to_f32_vec().unwrap())
            .collect();
        (loss, grads)
    };
    let (loss, grads) = step(Some(0));
    for (budget, what) in [(Some(usize::MAX), "all kept"), (None, "half kept")] {
        let (kept_loss, kept_grads) = step(budget);
        flix_kernels::tolerance::Tolerance::F32
            .check(&format!("{what}: loss"), &[kept_loss as f32], &[loss])
            .unwrap();
        for (i, (a, b)) in grads.iter().zip(&kept_grads).enumerate() {
            flix_kernels::tolerance::Tolerance::F32
                .check(&format!("{what}: parameter {i}"), b, a)
                .unwrap();
        }
    }
}
