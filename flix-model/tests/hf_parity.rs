//! Parity with Hugging Face `transformers` on the committed tiny Llama fixture
//! (`scripts/make_hf_fixture.py`): logits, masked loss and gradients must match what PyTorch
//! computed. Every test body runs on each available device: the CPU always, CUDA when a GPU is
//! present (skipped with a message otherwise; with FLIX_REQUIRE_GPU=1 a missing GPU fails).

use std::path::{Path, PathBuf};

use flix_kernels::Device;
use flix_model::{Batch, LlamaModel, Sequence, TrainMode};
use safetensors::SafeTensors;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

/// The devices to run on. CUDA is added when available; its absence is printed, and is a
/// failure under FLIX_REQUIRE_GPU=1.
fn devices() -> Vec<Device> {
    let mut out = vec![Device::Cpu];
    match Device::cuda(0) {
        Ok(d) => out.push(d),
        Err(e) => {
            if std::env::var("FLIX_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("FLIX_REQUIRE_GPU=1 but CUDA is unavailable: {e}");
            }
            eprintln!("skipping the CUDA run of this test: {e}");
        }
    }
    out
}

/// Relative + absolute tolerance; the failure message names the worst element.
#[derive(Clone, Copy, Debug)]
struct Tolerance {
    abs: f64,
    rel: f64,
}

/// f32 forward and backward against PyTorch's f32 (different summation orders).
const F32: Tolerance = Tolerance {
    abs: 2e-5,
    rel: 1e-3,
};

impl Tolerance {
    fn assert_close(&self, what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let mut worst: Option<(usize, f64)> = None;
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let excess = (*g as f64 - *w as f64).abs() - (self.abs + self.rel * (*w as f64).abs());
            if excess > 0.0 && worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
        if let Some((i, _)) = worst {
            panic!(
                "{what}: element {i} is {} but Hugging Face has {} ({self:?})",
                got[i], want[i]
            );
        }
    }
}

struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    fn load() -> Self {
        Self {
            bytes: std::fs::read(fixture_dir().join("expected.safetensors")).unwrap(),
        }
    }
    fn get(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
        view.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

fn fixture_batch() -> Batch {
    let text = std::fs::read_to_string(fixture_dir().join("inputs.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let seqs: Vec<Sequence> = json["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let ids = s["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            Sequence::prompt_and_target(ids, s["prompt_len"].as_u64().unwrap() as usize)
        })
        .collect();
    Batch::new(&seqs).unwrap()
}

#[test]
fn logits_and_loss_match_transformers() {
    let expected = Expected::load();
    let batch = fixture_batch();
    for device in devices() {
        let model = LlamaModel::load(&fixture_dir(), &device).unwrap();
        let logits = model.logits(&batch, None).unwrap().to_f32_vec().unwrap();
        let vocab = model.config.vocab_size;
        for s in 0..batch.num_sequences() {
            let rows = &logits[batch.starts[s] * vocab..batch.starts[s + 1] * vocab];
            F32.assert_close(
                &format!("{device} logits of sequence {s}"),
                rows,
                &expected.get(&format!("full.logits.{s}")),
            );
        }
        let scored = model.score(&batch, None).unwrap();
        let loss = scored.loss_sum / scored.count as f64;
        F32.assert_close(
            &format!("{device} loss"),
            &[loss as f32],
            &expected.get("full.loss"),
        );
    }
}

#[test]
fn full_parameter_gradients_match_transformers() {
    let expected = Expected::load();
    let batch = fixture_batch();
    for device in devices() {
        let mut model = LlamaModel::load(&fixture_dir(), &device).unwrap();
        model.set_train_mode(TrainMode::Full).unwrap();
        let report = model.forward_backward(&batch, None).unwrap();
        F32.assert_close(
            &format!("{device} loss"),
            &[report.loss as f32],
            &expected.get("full.loss"),
        );
        let mut checked = 0;
        for p in model.params_mut() {
            let grad = p.grad.as_ref().unwrap().to_f32_vec().unwrap();
            F32.assert_close(
                &format!("{device} gradient of {}", p.name),
                &grad,
                &expected.get(&format!("full.grad.{}", p.name)),
            );
            checked += 1;
        }
        // embed, 2 × (2 norms + 7 projections), final norm, head.
        assert_eq!(checked, 1 + 2 * 9 + 2);
    }
}
