//! Every bad-checkpoint case, on small files written with the safetensors crate.

use std::collections::HashMap;

use safetensors::tensor::TensorView;

use super::*;

fn bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `tensors` (name, dtype, shape, raw bytes) to `path`.
fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn ok_file(dir: &Path) {
    let bf: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
        .collect();
    let hf: Vec<u8> = [0.25f32, 3.0]
        .iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect();
    write(
        &dir.join(SINGLE_FILE),
        &[
            (
                "a",
                Dtype::F32,
                vec![2, 3],
                bytes_f32(&[1., 2., 3., 4., 5., 6.]),
            ),
            ("b", Dtype::BF16, vec![2], bf),
            ("c", Dtype::F16, vec![2], hf),
            ("ids", Dtype::I64, vec![1], 7i64.to_le_bytes().to_vec()),
        ],
    );
}

fn err_text<T: std::fmt::Debug>(r: Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn reads_f32_bf16_f16() {
    let dir = tempfile::tempdir().unwrap();
    ok_file(dir.path());
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(
        ck.load_f32("a", &[2, 3]).unwrap(),
        vec![1., 2., 3., 4., 5., 6.]
    );
    assert_eq!(ck.load_f32("b", &[2]).unwrap(), vec![1.5, -2.0]);
    assert_eq!(ck.load_f32("c", &[2]).unwrap(), vec![0.25, 3.0]);
}

#[test]
fn missing_tensor_wrong_shape_wrong_dtype_name_tensor_and_file() {
    let dir = tempfile::tempdir().unwrap();
    ok_file(dir.path());
    let ck = Checkpoint::open(dir.path()).unwrap();
    let e = err_text(ck.load_f32("model.norm.weight", &[4]));
    assert!(
        e.contains("`model.norm.weight`") && e.contains("missing") && e.contains(SINGLE_FILE),
        "{e}"
    );
    let e = err_text(ck.load_f32("a", &[3, 2]));
    assert!(
        e.contains("`a`")
            && e.contains("[2, 3]")
            && e.contains("expected [3, 2]")
            && e.contains(SINGLE_FILE),
        "{e}"
    );
    let e = err_text(ck.load_f32("ids", &[1]));
    assert!(
        e.contains("`ids`") && e.contains("I64") && e.contains("BF16, F16, F32"),
        "{e}"
    );
}

#[test]
fn truncated_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    ok_file(dir.path());
    let path = dir.path().join(SINGLE_FILE);
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 3]).unwrap();
    let e = err_text(Checkpoint::open(dir.path()));
    assert!(e.contains(SINGLE_FILE) && e.contains("truncated"), "{e}");
    // Cut inside the header too.
    std::fs::write(&path, &full[..20]).unwrap();
    let e = err_text(Checkpoint::open(dir.path()));
    assert!(e.contains(SINGLE_FILE), "{e}");
}

#[test]
fn no_weights_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let e = err_text(Checkpoint::open(dir.path()));
    assert!(e.contains(SINGLE_FILE) && e.contains(INDEX_FILE), "{e}");
    assert!(!e.contains("pickle"), "{e}");
    // A PyTorch pickle is named as what is there but not read.
    std::fs::write(dir.path().join("pytorch_model.bin"), b"not read").unwrap();
    let e = err_text(Checkpoint::open(dir.path()));
    assert!(
        e.contains("pytorch_model.bin (PyTorch pickle) is not read") && e.contains("safetensors"),
        "{e}"
    );
}

fn write_index(dir: &Path, map: &[(&str, &str)]) {
    let weight_map: HashMap<&str, &str> = map.iter().copied().collect();
    let json = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join(INDEX_FILE), json.to_string()).unwrap();
}

#[test]
fn sharded_checkpoint_loads_across_files() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("model-00001-of-00002.safetensors"),
        &[("x", Dtype::F32, vec![1], bytes_f32(&[1.0]))],
    );
    write(
        &dir.path().join("model-00002-of-00002.safetensors"),
        &[("y", Dtype::F32, vec![2], bytes_f32(&[2.0, 3.0]))],
    );
    write_index(
        dir.path(),
        &[
            ("x", "model-00001-of-00002.safetensors"),
            ("y", "model-00002-of-00002.safetensors"),
        ],
    );
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.load_f32("x", &[1]).unwrap(), vec![1.0]);
    assert_eq!(ck.load_f32("y", &[2]).unwrap(), vec![2.0, 3.0]);
    assert_eq!(ck.names(), vec!["x", "y"]);
}

#[test]
fn sharded_errors_missing_shard_and_index_disagreement() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("s1.safetensors"),
        &[("x", Dtype::F32, vec![1], bytes_f32(&[1.0]))],
    );
    write_index(
        dir.path(),
        &[("x", "s1.safetensors"), ("y", "s2.safetensors")],
    );
    let e = err_text(Checkpoint::open(dir.path()));
    assert!(e.contains("s2.safetensors"), "{e}");

    write(
        &dir.path().join("s2.safetensors"),
        &[("z", Dtype::F32, vec![1], bytes_f32(&[1.0]))],
    );
    let e = err_text(Checkpoint::open(dir.path()));
    assert!(
        e.contains("`y`") && e.contains("s2.safetensors") && e.contains("not in this file"),
        "{e}"
    );

    // The same tensor in two shards.
    write(
        &dir.path().join("s2.safetensors"),
        &[("x", Dtype::F32, vec![1], bytes_f32(&[1.0]))],
    );
    write_index(
        dir.path(),
        &[("x", "s1.safetensors"), ("w", "s2.safetensors")],
    );
    let e = err_text(Checkpoint::open(dir.path()));
    assert!(e.contains("`x`") && e.contains("also appears"), "{e}");
}
