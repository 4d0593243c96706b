//! Loading real checkpoint variants of the tiny fixture: the same weights stored as bf16 or f16
//! or split into shards give the same model (within the dtype's rounding), and a checkpoint that
//! does not fit its config fails naming the tensor, the shapes and the file.

use std::path::{Path, PathBuf};

use flix_kernels::tolerance::Tolerance;
use flix_kernels::Device;
use flix_model::{Batch, LlamaModel, Sequence};
use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

/// The fixture's tensors as (name, shape, f32 values), sorted by name.
fn fixture_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .iter()
        .map(|(name, view)| {
            let vals = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name.to_string(), view.shape().to_vec(), vals)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn encode(dtype: Dtype, vals: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::BF16 => vals
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::F16 => vals
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Writes `tensors` as one safetensors file in `dtype`.
fn write(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], dtype: Dtype) {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), encode(dtype, v)))
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A model directory with the fixture's config and the given weights file(s).
fn model_dir(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    dir
}

fn config() -> String {
    std::fs::read_to_string(fixture_dir().join("config.json")).unwrap()
}

fn logits(dir: &Path) -> Vec<f32> {
    let model = LlamaModel::load(dir, &Device::Cpu).unwrap();
    let batch = Batch::new(&[Sequence::prompt_and_target(vec![1, 17, 42, 99, 5], 2)]).unwrap();
    model
        .logits(&model.upload(&batch).unwrap())
        .unwrap()
        .to_f32_vec()
        .unwrap()
}

#[test]
fn bf16_f16_and_sharded_checkpoints_give_the_same_model() {
    let tensors = fixture_tensors();
    let reference = logits(&fixture_dir());
    // A bf16 (f16) file must give exactly the model of an f32 file holding the same rounded
    // values: the conversion is exact, so any difference is a loading bug.
    for dtype in [Dtype::BF16, Dtype::F16] {
        let rounded: Vec<_> = tensors
            .iter()
            .map(|(n, s, v)| {
                let r = v
                    .iter()
                    .map(|&x| match dtype {
                        Dtype::BF16 => bf16::from_f32(x).to_f32(),
                        _ => f16::from_f32(x).to_f32(),
                    })
                    .collect();
                (n.clone(), s.clone(), r)
            })
            .collect();
        let (low, wide) = (model_dir(&config()), model_dir(&config()));
        write(&low.path().join("model.safetensors"), &tensors, dtype);
        write(&wide.path().join("model.safetensors"), &rounded, Dtype::F32);
        let got = logits(low.path());
        assert_eq!(got, logits(wide.path()), "{dtype:?}");
        assert_ne!(got, reference, "{dtype:?} weights should round");
        Tolerance::new(0.1, 0.1)
            .check(&format!("{dtype:?} logits near f32"), &got, &reference)
            .unwrap();
    }
    // Two shards plus the index, exactly as transformers names them.
    let dir = model_dir(&config());
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    write(&dir.path().join(names[0]), first, Dtype::F32);
    write(&dir.path().join(names[1]), second, Dtype::F32);
    let map: serde_json::Map<String, serde_json::Value> = first
        .iter()
        .map(|t| (t.0.clone(), names[0].into()))
        .chain(second.iter().map(|t| (t.0.clone(), names[1].into())))
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    assert_eq!(logits(dir.path()), reference);
}

fn load_error(dir: &Path) -> String {
    match LlamaModel::load(dir, &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn checkpoints_that_do_not_fit_the_config_name_the_tensor() {
    let tensors = fixture_tensors();
    // Missing tensor: an untied config without lm_head.weight.
    let dir = model_dir(&config());
    let without: Vec<_> = tensors
        .iter()
        .filter(|t| t.0 != "lm_head.weight")
        .cloned()
        .collect();
    write(&dir.path().join("model.safetensors"), &without, Dtype::F32);
    let e = load_error(dir.path());
    assert!(
        e.contains("`lm_head.weight`") && e.contains("missing") && e.contains("model.safetensors"),
        "{e}"
    );

    // Wrong shape: the config says intermediate_size 100, the weights have 96.
    let dir =
        model_dir(&config().replace("\"intermediate_size\": 96", "\"intermediate_size\": 100"));
    write(&dir.path().join("model.safetensors"), &tensors, Dtype::F32);
    let e = load_error(dir.path());
    assert!(
        e.contains("`model.layers.0.mlp.gate_proj.weight`")
            && e.contains("[96, 64]")
            && e.contains("[100, 64]"),
        "{e}"
    );

    // Wrong dtype: integer weights for the final norm.
    let dir = model_dir(&config());
    let data: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| match n.as_str() {
            "model.norm.weight" => (
                n.clone(),
                s.clone(),
                Dtype::I32,
                v.iter().flat_map(|&x| (x as i32).to_le_bytes()).collect(),
            ),
            _ => (n.clone(), s.clone(), Dtype::F32, encode(Dtype::F32, v)),
        })
        .collect();
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, s, d, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains("`model.norm.weight`") && e.contains("I32"),
        "{e}"
    );

    // Truncated file.
    let dir = model_dir(&config());
    let full = std::fs::read(fixture_dir().join("model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        &full[..full.len() / 2],
    )
    .unwrap();
    let e = load_error(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );

    // Unsupported architecture.
    let dir =
        model_dir(&config().replace("\"model_type\": \"llama\"", "\"model_type\": \"gemma\""));
    let e = load_error(dir.path());
    assert!(e.contains("config.json") && e.contains("gemma"), "{e}");
}
