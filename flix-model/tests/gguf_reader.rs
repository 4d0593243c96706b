//! The GGUF reader against files written by llama.cpp's `gguf` Python package
//! (`scripts/make_gguf_fixtures.py`): every tensor type is converted to exactly what gguf-py's
//! dequantization gives, every metadata value reads back as written, and corrupt files built here
//! from the valid ones are refused with the error that names the problem, never a panic.

use std::path::{Path, PathBuf};

use flix_model::gguf::{GgmlType, GgufFile, GgufModel, MetaType, MetaValue};
use flix_model::TensorSource;
use safetensors::SafeTensors;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// Parses `bytes` as a GGUF file and returns the error message (the file must be refused).
fn open_err(bytes: Vec<u8>) -> String {
    match GgufFile::from_bytes(bytes, Path::new("corrupt.gguf")) {
        Ok(f) => panic!("a corrupt file was accepted: {f:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(message: &str, part: &str) {
    assert!(
        message.contains(part),
        "error message {message:?} should contain {part:?}"
    );
}

/// Where `needle` first occurs in `bytes`.
fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Byte positions of the fields of the tensor info of `name` (a name that occurs once, preceded
/// by its u64 length).
struct InfoAt {
    dims: usize,
    ne0: usize,
    ggml_type: usize,
    offset: usize,
}

fn info_at(bytes: &[u8], name: &str) -> InfoAt {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    let dims = find(bytes, &needle) + needle.len();
    let n_dims = u32::from_le_bytes(bytes[dims..dims + 4].try_into().unwrap()) as usize;
    let ggml_type = dims + 4 + 8 * n_dims;
    InfoAt {
        dims,
        ne0: dims + 4,
        ggml_type,
        offset: ggml_type + 4,
    }
}

#[test]
fn every_tensor_type_matches_gguf_py_dequantization() {
    let file = GgufFile::open(&fixture("quant_types.gguf")).unwrap();
    let expected_bytes = read("quant_types.expected.safetensors");
    let expected = SafeTensors::deserialize(&expected_bytes).unwrap();
    let mut checked = 0;
    for (name, view) in expected.tensors() {
        let want: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let (shape, got) = file.tensor_f32(&name).unwrap();
        assert_eq!(shape, view.shape(), "shape of {name}");
        assert_eq!(got.len(), want.len(), "length of {name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // Bit-exact: the same f32 operations in the same order as ggml / gguf-py.
            assert!(
                g.to_bits() == w.to_bits(),
                "{name}[{i}]: got {g}, gguf-py gives {w}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 16, "every converted type has a reference");
}

#[test]
fn tensor_infos_are_row_major_aligned_and_typed() {
    let file = GgufFile::open(&fixture("quant_types.gguf")).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    let want = [
        ("f32", GgmlType::F32, vec![3, 64]),
        ("f16", GgmlType::F16, vec![3, 64]),
        ("bf16", GgmlType::BF16, vec![3, 64]),
        ("q8_0", GgmlType::Q8_0, vec![3, 64]),
        ("q4_0", GgmlType::Q4_0, vec![3, 64]),
        ("q5_0", GgmlType::Q5_0, vec![3, 64]),
        ("q4_1", GgmlType::Q4_1, vec![3, 64]),
        ("q4_k", GgmlType::Q4_K, vec![2, 512]),
        ("q5_k", GgmlType::Q5_K, vec![2, 512]),
        ("q6_k", GgmlType::Q6_K, vec![2, 512]),
        ("f32_3d", GgmlType::F32, vec![2, 3, 4]),
        ("q5_1", GgmlType::Q5_1, vec![3, 64]),
        ("iq4_nl", GgmlType::IQ4_NL, vec![3, 64]),
        ("q2_k", GgmlType::Q2_K, vec![2, 512]),
        ("q3_k", GgmlType::Q3_K, vec![2, 512]),
        ("iq4_xs", GgmlType::IQ4_XS, vec![2, 512]),
        ("iq2_xxs", GgmlType::IQ2_XXS, vec![1, 256]),
    ];
    let tensors = file.tensors();
    assert_eq!(tensors.len(), want.len());
    let mut end = file.data_offset();
    for (info, (name, ty, shape)) in tensors.iter().zip(&want) {
        assert_eq!(&info.name, name);
        assert_eq!(info.ggml_type, *ty, "{name}");
        assert_eq!(&info.shape, shape, "{name}");
        let blocks = (shape.iter().product::<usize>() / ty.block_size()) as u64;
        assert_eq!(info.byte_len, blocks * ty.block_bytes() as u64, "{name}");
        assert_eq!(info.offset % 32, 0, "{name} is aligned");
        assert!(info.offset >= end, "{name} follows the previous tensor");
        end = info.offset + info.byte_len;
    }
    // The data ends with the last tensor, padded to the alignment.
    assert_eq!(
        end.next_multiple_of(32),
        std::fs::metadata(fixture("quant_types.gguf"))
            .unwrap()
            .len()
    );
}

#[test]
fn unsupported_types_and_missing_tensors_are_named() {
    let file = GgufFile::open(&fixture("quant_types.gguf")).unwrap();
    let err = file.tensor_f32("iq2_xxs").unwrap_err().to_string();
    assert_contains(&err, "tensor `iq2_xxs` has GGML type 16 (IQ2_XXS)");
    assert_contains(&err, "cannot be converted");
    let err = file.tensor_f32("nope").unwrap_err().to_string();
    assert_contains(&err, "no tensor named `nope`");
}

/// Compares a metadata value with the JSON the script wrote for it.
fn assert_value(key: &str, got: &MetaValue, want: &Value) {
    match got {
        MetaValue::F32(x) => assert_eq!(f64::from(*x), want.as_f64().unwrap(), "{key}"),
        MetaValue::F64(x) => assert_eq!(*x, want.as_f64().unwrap(), "{key}"),
        MetaValue::Bool(b) => assert_eq!(Some(*b), want.as_bool(), "{key}"),
        MetaValue::String(s) => assert_eq!(Some(s.as_str()), want.as_str(), "{key}"),
        MetaValue::Array { values, .. } => {
            let want = want.as_array().unwrap();
            assert_eq!(values.len(), want.len(), "{key}: length");
            for (i, (g, w)) in values.iter().zip(want).enumerate() {
                assert_value(&format!("{key}[{i}]"), g, w);
            }
        }
        int => {
            let got = int.as_i128().unwrap();
            let want = want
                .as_i64()
                .map(i128::from)
                .or(want.as_u64().map(i128::from))
                .unwrap();
            assert_eq!(got, want, "{key}");
        }
    }
}

#[test]
fn every_metadata_value_type_reads_back() {
    let file = GgufFile::open(&fixture("metadata.gguf")).unwrap();
    let expected: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture("metadata.json")).unwrap()).unwrap();
    assert_eq!(file.metadata().len(), expected.len());
    for (key, want) in &expected {
        let got = file
            .metadata()
            .get(key)
            .unwrap_or_else(|| panic!("missing {key}"));
        let ty = want["type"].as_str().unwrap();
        assert_eq!(got.meta_type().name(), ty, "type of {key}");
        if let (MetaValue::Array { element, .. }, Some(e)) = (got, want.get("element")) {
            assert_eq!(Some(element.name()), e.as_str(), "element type of {key}");
        }
        assert_value(key, got, &want["value"]);
    }
    // Nested arrays keep their inner element types (gguf-py writes Python ints as int32).
    let Some(MetaValue::Array { values, .. }) = file.metadata().get("test.array_nested") else {
        panic!("test.array_nested is not an array");
    };
    assert!(values.iter().all(|v| matches!(
        v,
        MetaValue::Array {
            element: MetaType::I32,
            ..
        }
    )));
    // Keys come in file order.
    let keys: Vec<&str> = file.metadata().iter().map(|(k, _)| k).collect();
    assert_eq!(keys.first(), Some(&"general.architecture"));
    assert_eq!(keys.get(1), Some(&"test.u8"));
}

#[test]
fn typed_getters_name_the_key_and_both_types() {
    let file = GgufFile::open(&fixture("metadata.gguf")).unwrap();
    assert_eq!(file.get_u32("test.u32").unwrap(), 4_000_000_000);
    assert_eq!(file.get_u64("test.u64").unwrap(), u64::MAX);
    assert_eq!(file.get_i32("test.i32").unwrap(), -2_000_000_000);
    assert_eq!(file.get_f64("test.f64").unwrap(), -0.1234567890123);
    assert!(file.get_bool("test.bool_true").unwrap());
    assert_eq!(file.get_str("test.string").unwrap(), "hello GGUF");
    assert_eq!(
        file.get_str_array("test.array_string").unwrap(),
        ["a", "", "ünï"]
    );
    assert_eq!(file.get_usize("test.u16").unwrap(), 60000);
    assert_eq!(file.get_float("test.f32").unwrap(), f64::from(1.2345678f32));

    let err = file.get_u32("test.string").unwrap_err().to_string();
    assert_contains(
        &err,
        "metadata key `test.string` should be uint32, found string",
    );
    let err = file.get_str_array("test.array_u8").unwrap_err().to_string();
    assert_contains(&err, "should be array of string, found array of uint8");
    let err = file.get_f32("test.absent").unwrap_err().to_string();
    assert_contains(&err, "metadata key `test.absent` is missing");
    let err = file.get_usize("test.i8").unwrap_err().to_string();
    assert_contains(&err, "`test.i8` is -100, expected a non-negative size");
}

#[test]
fn version_2_reads_like_version_3_and_others_are_refused() {
    let valid = read("quant_types.gguf");
    let mut v2 = valid.clone();
    put_u32(&mut v2, 4, 2);
    let file = GgufFile::from_bytes(v2, Path::new("v2.gguf")).unwrap();
    assert_eq!(file.version(), 2);
    assert_eq!(file.tensors().len(), 17);

    let mut v1 = valid.clone();
    put_u32(&mut v1, 4, 1);
    assert_contains(&open_err(v1), "at byte 4: GGUF version 1 is not supported");
    let mut v9 = valid.clone();
    put_u32(&mut v9, 4, 9);
    assert_contains(&open_err(v9), "unsupported GGUF version 9");
    let mut big = valid.clone();
    big[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_contains(&open_err(big), "big-endian GGUF");
}

#[test]
fn corrupt_headers_are_refused_with_their_offset() {
    let valid = read("metadata.gguf");

    let mut bad_magic = valid.clone();
    bad_magic[0] = b'X';
    assert_contains(&open_err(bad_magic), "at byte 0: bad magic");

    assert_contains(
        &open_err(valid[..10].to_vec()),
        "at byte 8: the count of tensor infos needs 8 bytes but the file ends 2 bytes later",
    );

    // Counts whose smallest possible content is larger than the file: refused before allocating.
    let mut tensors = valid.clone();
    put_u64(&mut tensors, 8, 1 << 40);
    assert_contains(
        &open_err(tensors),
        "tensor infos: count 1099511627776 needs at least",
    );
    let mut kvs = valid.clone();
    put_u64(&mut kvs, 16, u64::MAX);
    assert_contains(
        &open_err(kvs),
        "metadata entries: count 18446744073709551615",
    );

    // The first key's length (byte 24) past the end of the file.
    let mut long_key = valid.clone();
    put_u64(&mut long_key, 24, 1 << 50);
    assert_contains(
        &open_err(long_key),
        "at byte 24: metadata key 0 has length 1125899906842624, past the end of the file",
    );

    // The first key is general.architecture; its value type follows it.
    let type_at = 24 + 8 + "general.architecture".len();
    let mut unknown_type = valid.clone();
    put_u32(&mut unknown_type, type_at, 13);
    assert_contains(
        &open_err(unknown_type),
        &format!("at byte {type_at}: metadata key `general.architecture` has unknown metadata value type 13"),
    );

    // An array count past the end: test.array_u64 = (type 9, element type 10, count, ...).
    let key = b"test.array_u64";
    let count_at = find(&valid, key) + key.len() + 8;
    assert_eq!(get_u64(&valid, count_at), 3);
    let mut long_array = valid.clone();
    put_u64(&mut long_array, count_at, 1 << 60);
    assert_contains(
        &open_err(long_array),
        "the elements of metadata key `test.array_u64`: count 1152921504606846976 needs at least",
    );

    // Duplicate keys: rename test.i8 to test.u8.
    let mut dup = valid.clone();
    let at = find(&dup, b"test.i8");
    dup[at + 5] = b'u';
    assert_contains(&open_err(dup), "duplicate metadata key `test.u8`");

    // A bool that is neither 0 nor 1; a string that is not UTF-8.
    let key = b"test.bool_false";
    let value_at = find(&valid, key) + key.len() + 4;
    let mut bad_bool = valid.clone();
    bad_bool[value_at] = 7;
    assert_contains(&open_err(bad_bool), "is a bool stored as 7");
    let mut bad_utf8 = valid.clone();
    let at = find(&bad_utf8, b"hello GGUF");
    bad_utf8[at] = 0xFF;
    assert_contains(
        &open_err(bad_utf8),
        "metadata key `test.string` is not valid UTF-8",
    );

    // Truncated inside the metadata.
    let cut = find(&valid, b"test.array_string");
    let err = open_err(valid[..cut].to_vec());
    assert_contains(
        &err,
        "metadata key 22 has length 17, past the end of the file",
    );
    assert_contains(&err, "is it truncated?");
}

#[test]
fn corrupt_tensor_infos_are_refused_naming_the_tensor() {
    let valid = read("quant_types.gguf");

    // Data past the end of the file: cut 8 bytes into the last tensor's data.
    let file = GgufFile::from_bytes(valid.clone(), Path::new("valid.gguf")).unwrap();
    let last_tensor = file.tensors().last().unwrap();
    let cut = (last_tensor.offset + last_tensor.byte_len) as usize - 8;
    let err = open_err(valid[..cut].to_vec());
    assert_contains(&err, &format!("tensor `{}`: data at", last_tensor.name));
    assert_contains(&err, "runs past the end of the file");

    // Unaligned offset.
    let q8 = info_at(&valid, "q8_0");
    let mut unaligned = valid.clone();
    let offset = get_u64(&valid, q8.offset);
    put_u64(&mut unaligned, q8.offset, offset + 4);
    assert_contains(
        &open_err(unaligned),
        &format!(
            "tensor `q8_0` has data offset {}, not a multiple of the alignment 32",
            offset + 4
        ),
    );

    // Overlap: q8_0 moved onto bf16's data.
    let bf16 = info_at(&valid, "bf16");
    let mut overlap = valid.clone();
    put_u64(&mut overlap, q8.offset, get_u64(&valid, bf16.offset));
    let err = open_err(overlap);
    assert_contains(&err, "tensors `bf16`");
    assert_contains(&err, "and `q8_0`");
    assert_contains(&err, "overlap");

    // A shape whose byte length no longer fits where the data is: q8_0's first dimension grown
    // from 64 to 96 makes it run into the next tensor.
    let mut grown = valid.clone();
    put_u64(&mut grown, q8.ne0, 96);
    assert_contains(&open_err(grown), "overlap");

    // A first dimension that is not a multiple of the block size.
    let mut ragged = valid.clone();
    put_u64(&mut ragged, q8.ne0, 48);
    assert_contains(
        &open_err(ragged),
        "tensor `q8_0`: dimensions [48, 3]: the first (innermost) dimension 48 is not a multiple of Q8_0's block size 32",
    );

    // Unknown and retired GGML types, by number and name when there is one.
    let mut unknown = valid.clone();
    put_u32(&mut unknown, q8.ggml_type, 99);
    assert_contains(
        &open_err(unknown),
        "tensor `q8_0` has unknown GGML type 99 (unknown)",
    );
    let mut retired = valid.clone();
    put_u32(&mut retired, q8.ggml_type, 4);
    assert_contains(
        &open_err(retired),
        "type 4 (Q4_2, no longer supported by ggml)",
    );

    // Dimension count out of range.
    let mut dims = valid.clone();
    put_u32(&mut dims, q8.dims, 9);
    assert_contains(
        &open_err(dims),
        "tensor `q8_0` has 9 dimensions, expected 1 to 4",
    );

    // Duplicate tensor names: f16 renamed f32.
    let mut dup = valid.clone();
    let f16 = info_at(&valid, "f16");
    dup[f16.dims - 1] = b'2';
    dup[f16.dims - 2] = b'3';
    assert_contains(&open_err(dup), "duplicate tensor name `f32`");

    // Sizes that overflow.
    let mut huge = valid.clone();
    put_u64(&mut huge, q8.ne0, 1 << 62);
    put_u64(&mut huge, q8.ne0 + 8, 1 << 62);
    assert_contains(&open_err(huge), "overflow");
}

/// Opens `bytes` and, when that works, converts every tensor, as a file and as a model; the
/// outcome (error or not) does not matter, only that nothing panics.
fn open_and_load(bytes: Vec<u8>) {
    let Ok(file) = GgufFile::from_bytes(bytes, Path::new("fuzz.gguf")) else {
        return;
    };
    let names: Vec<String> = file.tensors().iter().map(|t| t.name.clone()).collect();
    for name in &names {
        let _ = file.tensor_f32(name);
    }
    if let Ok(model) = GgufModel::from_file(file) {
        let _ = model.hf_config();
        for name in model.tensor_names() {
            let shape = model
                .gguf_name(&name)
                .and_then(|g| model.file().tensor_info(g))
                .map(|info| info.shape.clone())
                .unwrap_or_default();
            let _ = model.load_f32(&name, &shape);
        }
    }
}

#[test]
fn truncations_and_flipped_bytes_never_panic() {
    for name in [
        "quant_types.gguf",
        "metadata.gguf",
        "tiny-qwen2.gguf",
        "tiny-llama.gguf",
    ] {
        let valid = read(name);
        // Every truncation of the header region, then every 61st length.
        let header_end = valid.len().min(2048);
        for len in (0..header_end).chain((header_end..valid.len()).step_by(61)) {
            open_and_load(valid[..len].to_vec());
        }
        // Flipped bits and extreme bytes at every position of the header region.
        for at in 0..header_end {
            for patch in [|b: u8| b ^ 0x01, |b: u8| b ^ 0x80, |_| 0xFF, |_| 0x00] {
                let mut bytes = valid.clone();
                bytes[at] = patch(bytes[at]);
                open_and_load(bytes);
            }
        }
    }
}
