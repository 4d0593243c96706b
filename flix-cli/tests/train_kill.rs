//! `flix train` killed mid-run and resumed with `--resume` ends with the same bytes as a run that
//! was never interrupted.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture;
use flix_model::train::checkpoint::{latest_checkpoint, OPTIMIZER_FILE, WEIGHTS_FILE};

const STEPS: &str = "300";

fn train_command(base: &Path, data: &Path, out: &Path, checkpoint_every: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flix"));
    cmd.args([
        "train",
        "--method",
        "flix",
        "--rank",
        "2",
        "--dropout",
        "0.3",
    ])
    .args([
        "--steps",
        STEPS,
        "--batch-tokens",
        "64",
        "--checkpoint-every",
        checkpoint_every,
    ])
    .args(["--lr", "0.01", "--seed", "5"])
    .arg("--base")
    .arg(base)
    .arg("--data")
    .arg(data)
    .arg("--out")
    .arg(out)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

fn final_bytes(run: &Path) -> (Vec<u8>, Vec<u8>) {
    let ck = latest_checkpoint(run).unwrap().unwrap();
    assert!(ck.ends_with(format!("step-{:08}", STEPS.parse::<u64>().unwrap())));
    (
        std::fs::read(ck.join(WEIGHTS_FILE)).unwrap(),
        std::fs::read(ck.join(OPTIMIZER_FILE)).unwrap(),
    )
}

#[test]
fn a_killed_run_resumes_to_identical_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, data) = fixture(tmp.path());

    let straight = tmp.path().join("straight");
    let status = train_command(&base, &data, &straight, "10")
        .status()
        .unwrap();
    assert!(status.success());

    let killed = tmp.path().join("killed");
    let mut child = train_command(&base, &data, &killed, "10").spawn().unwrap();
    let start = Instant::now();
    while latest_checkpoint(&killed).ok().flatten().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let finished_early = child.try_wait().unwrap().is_some();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!finished_early, "the run ended before it could be killed");
    let ck = latest_checkpoint(&killed).unwrap().unwrap();
    assert!(
        !ck.ends_with(format!("step-{STEPS:0>8}")),
        "killed too late: {ck:?}"
    );

    let status = Command::new(env!("CARGO_BIN_EXE_flix"))
        .arg("train")
        .arg("--resume")
        .arg(&killed)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (w1, o1) = final_bytes(&straight);
    let (w2, o2) = final_bytes(&killed);
    assert!(w1 == w2, "adapters differ after kill and resume");
    assert!(o1 == o2, "optimizer state differs after kill and resume");
}

/// The steps logged in `run`'s metrics.jsonl, in order.
fn logged_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let json: serde_json::Value = serde_json::from_str(l).unwrap();
            json["step"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn kills_while_checkpointing_every_step_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, data) = fixture(tmp.path());
    let straight = tmp.path().join("straight");
    let status = train_command(&base, &data, &straight, "1")
        .status()
        .unwrap();
    assert!(status.success());

    // Killed (SIGKILL) at three moments, each time while it writes a checkpoint per step, so
    // kills land inside writes; resumed after each.
    let killed = tmp.path().join("killed");
    let mut cmd = train_command(&base, &data, &killed, "1");
    for (round, min_steps) in [5u64, 40, 120].into_iter().enumerate() {
        let mut child = if round == 0 {
            cmd.spawn().unwrap()
        } else {
            Command::new(env!("CARGO_BIN_EXE_flix"))
                .arg("train")
                .arg("--resume")
                .arg(&killed)
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let start = Instant::now();
        let reached = |run: &Path| {
            latest_checkpoint(run)
                .ok()
                .flatten()
                .and_then(|ck| {
                    ck.file_name()?
                        .to_str()?
                        .strip_prefix("step-")?
                        .parse()
                        .ok()
                })
                .is_some_and(|step: u64| step >= min_steps)
        };
        while !reached(&killed) {
            assert!(start.elapsed() < Duration::from_secs(120), "no progress");
            std::thread::sleep(Duration::from_millis(1));
        }
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            !finished,
            "round {round}: the run ended before it could be killed"
        );
    }
    let status = Command::new(env!("CARGO_BIN_EXE_flix"))
        .arg("train")
        .arg("--resume")
        .arg(&killed)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        final_bytes(&straight) == final_bytes(&killed),
        "the killed run differs"
    );
    let steps: u64 = STEPS.parse().unwrap();
    assert_eq!(logged_steps(&killed), (1..=steps).collect::<Vec<_>>());
}
