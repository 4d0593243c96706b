//! Behaviour of the model on mixed-feature packed batches, against independent references:
//! - packing: the logits of a packed batch equal the logits of each sequence run alone (attention
//!   never crosses a boundary, positions restart, each sequence sees only its own adapters);
//! - gradients of adapters (several types, absent features, an unused value) against central
//!   finite differences of the model's own loss.

use std::path::{Path, PathBuf};

use flix_core::TypeShape;
use flix_kernels::tolerance::Tolerance;
use flix_kernels::{DType, Device, DeviceBatch, Tensor};
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

/// The runs of every test body: the CPU in f32 always; CUDA in f32 and bf16 when a GPU is
/// present (skipped with a message otherwise; with FLIX_REQUIRE_GPU=1 a missing GPU fails).
fn runs() -> Vec<(Device, DType)> {
    let mut out = vec![(Device::Cpu, DType::F32)];
    match Device::cuda(0) {
        Ok(d) => out.extend([(d.clone(), DType::F32), (d, DType::BF16)]),
        Err(e) => {
            if std::env::var("FLIX_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("FLIX_REQUIRE_GPU=1 but CUDA is unavailable: {e}");
            }
            eprintln!("SKIPPED the CUDA runs of this test: {e}");
        }
    }
    out
}

/// bf16 weights and activations (f32 accumulation) against f32 results: a few percent of the
/// tensor's scale.
const BF16_MODEL: Tolerance = Tolerance::new(5e-2, 5e-2);

fn tolerance(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance::F32,
        DType::BF16 => BF16_MODEL,
    }
}

/// The fixture model with two feature types on every projection, B set to nonzero values.
fn model_with_adapters(device: &Device, dtype: DType) -> LlamaModel {
    let mut model = LlamaModel::load_as(&fixture_dir(), device, dtype).unwrap();
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
                ty.b = Tensor::from_f32(device, DType::F32, &shape, &vals).unwrap();
            }
        }
    }
    model
}

fn sequences() -> Vec<Sequence> {
    vec![
        Sequence::prompt_and_target(vec![1, 17, 42, 99, 5, 63], 2).with_features(vec![0, 1]),
        Sequence::prompt_and_target(vec![1, 88, 7, 31], 1).with_features(vec![2, -1]),
        Sequence::prompt_and_target(vec![4, 9, 100, 12, 77], 3).with_features(vec![-1, 0]),
    ]
}

/// `seqs` packed and bound to the model's device, with their FLix plan.
fn upload(model: &LlamaModel, seqs: &[Sequence]) -> DeviceBatch {
    model.upload(&Batch::new(seqs).unwrap()).unwrap()
}

#[test]
fn packed_logits_equal_each_sequence_run_alone() {
    for (device, dtype) in runs() {
        packed_equals_alone(&device, dtype);
    }
}

fn packed_equals_alone(device: &Device, dtype: DType) {
    let model = model_with_adapters(device, dtype);
    let tol = tolerance(dtype);
    let names: Vec<String> = model.adapters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 14);
    assert_eq!(names[0], "model.layers.0.self_attn.q_proj");
    assert_eq!(names[13], "model.layers.1.mlp.down_proj");
    let seqs = sequences();
    let batch = upload(&model, &seqs);
    let packed = model.logits(&batch).unwrap().to_f32_vec().unwrap();
    let vocab = model.config.vocab_size;
    for (s, one) in seqs.iter().enumerate() {
        let b1 = upload(&model, std::slice::from_ref(one));
        let alone = model.logits(&b1).unwrap().to_f32_vec().unwrap();
        let rows = &packed[batch.starts()[s] * vocab..batch.starts()[s + 1] * vocab];
        tol.check_scaled(&format!("{device} {dtype} sequence {s}"), rows, &alone)
            .unwrap();
    }
    // The features matter: sequence 0 under other features gives other logits.
    let swapped = seqs[0].clone().with_features(vec![1, 0]);
    let b2 = upload(&model, &[swapped]);
    let other = model.logits(&b2).unwrap().to_f32_vec().unwrap();
    assert!(tol
        .check_scaled("swapped", &other, &packed[..other.len()])
        .is_err());
}

#[test]
fn adapter_gradients_match_finite_differences() {
    let cpu_grads = gradients_against_finite_differences(&Device::Cpu);
    for (device, dtype) in runs().into_iter().skip(1) {
        match dtype {
            DType::F32 => {
                gradients_against_finite_differences(&device);
            }
            // bf16 is too coarse for finite differences: its gradients are held to the CPU's.
            DType::BF16 => {
                let mut model = model_with_adapters(&device, dtype);
                let batch = upload(&model, &sequences());
                model.forward_backward(&batch).unwrap();
                for (i, grad) in adapter_grads(&mut model).iter().enumerate() {
                    BF16_MODEL
                        .check_scaled(&format!("{device} bf16 gradient {i}"), grad, &cpu_grads[i])
                        .unwrap();
                }
            }
        }
    }
}

/// Every adapter gradient of the model (dA then dB per type, layer by layer) on the host.
fn adapter_grads(model: &mut LlamaModel) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for layer in 0..model.config.num_hidden_layers {
        for module in TargetModule::ALL {
            let g = &model
                .linear_mut(layer, module)
                .unwrap()
                .adapter
                .as_ref()
                .unwrap()
                .grads;
            for k in 0..g.da.len() {
                out.push(g.da[k].to_f32_vec().unwrap());
                out.push(g.db[k].to_f32_vec().unwrap());
            }
        }
    }
    out
}

/// Checks probes of the f32 model's adapter gradients on `device` against central differences
/// of its own loss; returns all its adapter gradients.
fn gradients_against_finite_differences(device: &Device) -> Vec<Vec<f32>> {
    let mut model = model_with_adapters(device, DType::F32);
    let seqs = sequences();
    let batch = upload(&model, &seqs);
    model.forward_backward(&batch).unwrap();

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
            let mut probe = model_with_adapters(device, DType::F32);
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
            *t = Tensor::from_f32(device, DType::F32, t.shape(), &v).unwrap();
            let s = probe.score(&batch).unwrap();
            losses[slot] = s.loss_sum / s.count as f64;
        }
        let numeric = (losses[0] - losses[1]) / (2.0 * h as f64);
        tol.check(
            &format!("{device} layer {layer} {module:?} type {k} {which}[{idx}]"),
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
    adapter_grads(&mut model)
}
