//! `flix bench` end to end on the CPU: the shape list it exports for the peer script, and a run
//! of the tiny shape set with its JSON report. Timings are not checked (no performance
//! assertions in tests), only that every number is there and consistent.

use std::process::Command;

use serde_json::Value;

fn flix(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_flix"))
        .args(args)
        .output()
        .expect("run flix");
    assert!(
        out.status.success(),
        "flix {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn list_shapes_exports_every_segment_of_the_reference_batch() {
    let out = flix(&["bench", "--list-shapes", "--shapes", "all"]);
    let shapes: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let shapes = shapes.as_array().expect("a list");
    assert_eq!(shapes.len(), 11);
    let reference = &shapes[0];
    assert_eq!(reference["name"], "reference");
    assert_eq!(
        (reference["tokens"].as_u64(), reference["d_in"].as_u64()),
        (Some(8192), Some(4096))
    );
    let batch = reference["batch"].as_array().expect("batch");
    assert_eq!(batch.len(), 64);
    let tokens: u64 = batch.iter().map(|s| s["len"].as_u64().unwrap()).sum();
    assert_eq!(tokens, 8192);
    for segment in batch {
        let slots = segment["slots"].as_array().unwrap();
        assert_eq!(slots.len(), 2);
        assert!(slots[0].as_i64().unwrap() < 90 && slots[1].as_i64().unwrap() < 10);
    }
    let zipf = shapes
        .iter()
        .find(|s| s["name"] == "zipf")
        .expect("zipf shape");
    assert!(
        zipf["lengths"]["zipf"]["s"].as_f64().is_some(),
        "{}",
        zipf["lengths"]
    );
}

#[test]
fn tiny_cpu_run_prints_the_table_and_writes_consistent_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = flix(&[
        "bench",
        "--device",
        "cpu",
        "--shapes",
        "tiny",
        "--warmup",
        "1",
        "--iters",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("tiny-zipf") && table.contains("b/a"),
        "{table}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["dtype"], "f32");
    assert!(report["copy_bytes_per_s"].as_f64().unwrap() > 0.0);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        for timing in [&row["forward"], &row["forward_backward"]] {
            let (base, flix, ratio) = (
                timing["base_ms"].as_f64().unwrap(),
                timing["flix_ms"].as_f64().unwrap(),
                timing["ratio"].as_f64().unwrap(),
            );
            assert!(base > 0.0 && flix > 0.0 && timing["adapters_ms"].as_f64().unwrap() > 0.0);
            assert!((ratio - flix / base).abs() < 1e-9 * ratio, "{timing}");
        }
    }
}

#[test]
fn unknown_shape_sets_and_dtypes_are_errors() {
    for args in [
        &["bench", "--shapes", "huge"][..],
        &["bench", "--shapes", "tiny", "--dtype", "f16"][..],
        &["bench", "--shapes", "tiny", "--dtype", "bf16"][..], // bf16 needs CUDA
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flix"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "flix {args:?} should fail");
    }
}

/// `flix bench-attention` on a small CPU shape set: one row per (batch, head_dim, window), its
/// FLOP rate consistent with its time and the visible pairs of the causal (windowed) mask.
#[test]
fn bench_attention_reports_every_configuration_with_consistent_rates() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("attention.json");
    flix(&[
        "bench-attention",
        "--device",
        "cpu",
        "--batches",
        "2x24,1x40",
        "--head-dims",
        "8,16",
        "--windows",
        "none,5",
        "--heads",
        "4",
        "--kv-heads",
        "2",
        "--warmup",
        "0",
        "--iters",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 2 * 2);
    for row in rows {
        let (n, len, hd) = (
            row["sequences"].as_u64().unwrap(),
            row["seq_len"].as_u64().unwrap(),
            row["head_dim"].as_u64().unwrap(),
        );
        let window = row["window"].as_u64();
        let pairs: u64 = (0..len)
            .map(|i| (i + 1).min(window.unwrap_or(u64::MAX)))
            .sum();
        let flop = 4.0 * (n * pairs * hd * 4) as f64;
        let ms = row["forward_ms"].as_f64().unwrap();
        let tflops = row["forward_tflops"].as_f64().unwrap();
        assert!(ms > 0.0 && (tflops - flop / (ms * 1e-3) / 1e12).abs() <= 1e-9 * tflops.max(1.0));
        let bwd = row["backward_tflops"].as_f64().unwrap();
        let bwd_ms = row["backward_ms"].as_f64().unwrap();
        assert!((bwd - 2.5 * flop / (bwd_ms * 1e-3) / 1e12).abs() <= 1e-9 * bwd.max(1.0));
    }
    // A bad shape option is refused before anything runs.
    let out = Command::new(env!("CARGO_BIN_EXE_flix"))
        .args(["bench-attention", "--device", "cpu", "--batches", "8"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SEQUENCESxLENGTH"));
}
