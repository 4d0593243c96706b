//! `flix bench-train --tiny` end to end on the CPU: the JSON report describes the run asked for
//! and its loss is that of a near-uniform model over the tiny vocabulary (random weights, B = 0
//! adapters after a few small steps). Timings are not checked (no performance assertions).

use std::process::Command;

use serde_json::Value;

fn flix(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flix"))
        .args(args)
        .output()
        .expect("run flix")
}

#[test]
fn tiny_cpu_run_reports_its_shape_throughput_and_loss() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("train.json");
    let out = flix(&[
        "bench-train",
        "--device",
        "cpu",
        "--tiny",
        "--batch",
        "3",
        "--seq-len",
        "20",
        "--warmup",
        "1",
        "--steps",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tokens/s"), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["device"], "cpu");
    assert_eq!(report["dtype"], "f32");
    assert_eq!(
        (report["batch"].as_u64(), report["seq_len"].as_u64()),
        (Some(3), Some(20))
    );
    assert!(report["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        report["peak_memory_gib"].is_null(),
        "no device memory on the CPU"
    );
    // Random N(0, 0.02²) weights give near-uniform predictions over 512 tokens: ln 512 ≈ 6.24.
    let loss = report["last_loss"].as_f64().unwrap();
    assert!((loss - 512f64.ln()).abs() < 0.5, "loss {loss}");
}

#[test]
fn bf16_on_the_cpu_and_unknown_dtypes_are_errors() {
    let out = flix(&[
        "bench-train",
        "--device",
        "cpu",
        "--tiny",
        "--dtype",
        "bf16",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bf16"));
    let out = flix(&["bench-train", "--device", "cpu", "--tiny", "--dtype", "f16"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown dtype"));
}
