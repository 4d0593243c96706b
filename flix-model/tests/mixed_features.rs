//! Behaviour of the model on mixed-feature packed batches, against independent references:
//! - packing: the logits of a packed batch equal the logits of each sequence run alone (attention
//!   never crosses a boundary, positions restart, each sequence sees only its own adapters);
//! - gradients of adapters (several types, absent features, an unused value) against central
//!   finite differences of the model's own loss.

use std::path::{Path, PathBuf};

use flix_core::{BatchPlan, SegmentSpec, TypeShape};
use flix_kernels::tolerance::Tolerance;
use flix_kernels::{DType, Device, Tensor};
use flix_model::{AdapterSpec, AdapterType, Batch, LlamaModel, Sequence, TargetModule, TrainMode};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
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

/// The fixture model with two feature types on every projection, B set to nonzero values.
fn model_with_adapters() -> LlamaModel {
    let mut model = LlamaModel::load(&fixture_dir(), &Device::Cpu).unwrap();
    let spec = AdapterSpec {
        types: TYPES
            .iter()
            .map(|t| AdapterType {
                rank: t.rank,
                alpha: 2.0 * t.rank as f64,
                num_values: t.num_values,
            })
            .collect(),
        targets: TargetModule::ALL.to_vec(),
        seed: 3,
    };
    model.set_train_mode(TrainMode::Adapters).unwrap();
    model.attach_adapters(&spec).unwrap();
    let mut salt = 0u64;
    for layer in 0..model.config.num_hidden_layers {
        for module in TargetModule::ALL {
            let lin = model.linear_mut(layer, module).unwrap();
            for ty in &mut lin.adapter.as_mut().unwrap().layers.types {
                let shape = ty.b.shape().to_vec();
                let n: usize = shape.iter().product();
                salt += 1;
                let vals: Vec<f32> = (0..n)
                    .map(|i| {
                        (((i as u64 * 2654435761 + salt * 97) % 1000) as f32 / 1000.0 - 0.5) * 0.3
                    })
                    .collect();
                ty.b = Tensor::from_f32(&Device::Cpu, DType::F32, &shape, &vals).unwrap();
            }
        }
    }
    model
}

fn sequences() -> Vec<(Sequence, Vec<i32>)> {
    vec![
        (
            Sequence::prompt_and_target(vec![1, 17, 42, 99, 5, 63], 2),
            vec![0, 1],
        ),
        (
            Sequence::prompt_and_target(vec![1, 88, 7, 31], 1),
            vec![2, -1],
        ),
        (
            Sequence::prompt_and_target(vec![4, 9, 100, 12, 77], 3),
            vec![-1, 0],
        ),
    ]
}

fn batch_and_plan(
    model: &LlamaModel,
    seqs: &[(Sequence, Vec<i32>)],
) -> (Batch, flix_kernels::flix::DevicePlan) {
    let batch = Batch::new(&seqs.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>()).unwrap();
    let segments: Vec<SegmentSpec> = seqs
        .iter()
        .map(|(s, slots)| SegmentSpec {
            len: s.tokens.len(),
            slots: slots.clone(),
        })
        .collect();
    let plan = BatchPlan::new(&TYPES, &segments, 4).unwrap();
    (batch, model.device_plan(plan).unwrap())
}

#[test]
fn packed_logits_equal_each_sequence_run_alone() {
    let model = model_with_adapters();
    let names: Vec<String> = model.adapters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 14);
    assert_eq!(names[0], "model.layers.0.self_attn.q_proj");
    assert_eq!(names[13], "model.layers.1.mlp.down_proj");
    let seqs = sequences();
    let (batch, plan) = batch_and_plan(&model, &seqs);
    let packed = model
        .logits(&batch, Some(&plan))
        .unwrap()
        .to_f32_vec()
        .unwrap();
    let vocab = model.config.vocab_size;
    for (s, one) in seqs.iter().enumerate() {
        let (b1, p1) = batch_and_plan(&model, std::slice::from_ref(one));
        let alone = model.logits(&b1, Some(&p1)).unwrap().to_f32_vec().unwrap();
        let rows = &packed[batch.starts[s] * vocab..batch.starts[s + 1] * vocab];
        Tolerance::F32
            .check(&format!("sequence {s}"), rows, &alone)
            .unwrap();
    }
    // The features matter: sequence 0 under other features gives other logits.
    let mut swapped = seqs[0].clone();
    swapped.1 = vec![1, 0];
    let (b2, p2) = batch_and_plan(&model, &[swapped]);
    let other = model.logits(&b2, Some(&p2)).unwrap().to_f32_vec().unwrap();
    assert!(Tolerance::F32
        .check("swapped", &other, &packed[..other.len()])
        .is_err());
}

#[test]
fn adapter_gradients_match_finite_differences() {
    let mut model = model_with_adapters();
    let seqs = sequences();
    let (batch, plan) = batch_and_plan(&model, &seqs);
    model.forward_backward(&batch, Some(&plan)).unwrap();

    // (layer, module, type, which matrix, flat index).
    let probes = [
        (0, TargetModule::Q, 0, 'a', 5),
        (0, TargetModule::V, 1, 'b', 7),
        (1, TargetModule::Down, 0, 'b', 40),
        (1, TargetModule::Gate, 1, 'a', 3),
        (0, TargetModule::O, 0, 'a', 2 * 2 * 64 + 9), // value 2 of type 0 (sequence 1 only)
    ];
    let tol = Tolerance::new(3e-2, 2e-3);
    for (layer, module, k, which, idx) in probes {
        let analytic = {
            let g = &model
                .linear_mut(layer, module)
                .unwrap()
                .adapter
                .as_ref()
                .unwrap()
                .grads;
            (if which == 'a' { &g.da[k] } else { &g.db[k] })
                .to_f32_vec()
                .unwrap()[idx]
        };
        let h = 1e-2f32;
        let mut losses = [0.0f64; 2];
        for (slot, sign) in [(0, 1.0f32), (1, -1.0)] {
            let mut probe = model_with_adapters();
            let ty = &mut probe
                .linear_mut(layer, module)
                .unwrap()
                .adapter
                .as_mut()
                .unwrap()
                .layers
                .types[k];
            let t = if which == 'a' { &mut ty.a } else { &mut ty.b };
            let mut v = t.to_f32_vec().unwrap();
            v[idx] += sign * h;
            *t = Tensor::from_f32(&Device::Cpu, DType::F32, t.shape(), &v).unwrap();
            let s = probe.score(&batch, Some(&plan)).unwrap();
            losses[slot] = s.loss_sum / s.count as f64;
        }
        let numeric = (losses[0] - losses[1]) / (2.0 * h as f64);
        tol.check(
            &format!("layer {layer} {module:?} type {k} {which}[{idx}]"),
            &[analytic as f64],
            &[numeric],
        )
        .unwrap();
        assert!(
            analytic.abs() > 1e-4,
            "probe {layer} {module:?} {k} {which}: gradient too small to test"
        );
    }

    // Value 1 of type 0 belongs to no sequence: its gradients are exactly zero.
    let lin = model.linear_mut(0, TargetModule::Q).unwrap();
    let g = &lin.adapter.as_ref().unwrap().grads;
    for grad in [&g.da[0], &g.db[0]] {
        let v = grad.to_f32_vec().unwrap();
        let per_value = v.len() / 3;
        assert!(v[per_value..2 * per_value].iter().all(|&x| x == 0.0));
        assert!(v[..per_value].iter().any(|&x| x != 0.0));
    }
}
