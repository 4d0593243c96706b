//! `flix train` killed mid-run and resumed with `--resume` ends with the same bytes as a run that
//! was never interrupted.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture;
use flix_model::train::checkpoint::{latest_checkpoint, OPTIMIZER_FILE, WEIGHTS_FILE};

const STEPS: &str = "300";
/// Steps of the run killed repeatedly (it checkpoints every step, so it is kept short).
const KILLED_STEPS: &str = "100";

fn train_command(
    base: &Path,
    data: &Path,
    out: &Path,
    steps: &str,
    checkpoint_every: &str,
) -> Command {
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
        steps,
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
    last_bytes(run, STEPS.parse().unwrap())
}

/// The weights and optimizer state of `run`'s latest checkpoint, which must be of step `steps`.
fn last_bytes(run: &Path, steps: u64) -> (Vec<u8>, Vec<u8>) {
    let ck = latest_checkpoint(run).unwrap().unwrap();
    assert!(ck.ends_with(format!("step-{steps:08}")), "{ck:?}");
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
    let status = train_command(&base, &data, &straight, STEPS, "10")
        .status()
        .unwrap();
    assert!(status.success());

    let killed = tmp.path().join("killed");
    let mut child = train_command(&base, &data, &killed, STEPS, "10")
        .spawn()
        .unwrap();
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
    let status = train_command(&base, &data, &straight, KILLED_STEPS, "1")
        .status()
        .unwrap();
    assert!(status.success());

    // Killed (SIGKILL) at three moments, each time while it writes a checkpoint per step, so
    // kills land inside writes; resumed after each.
    let killed = tmp.path().join("killed");
    let mut cmd = train_command(&base, &data, &killed, KILLED_STEPS, "1");
    for (round, min_steps) in [3u64, 25, 60].into_iter().enumerate() {
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
    let steps: u64 = KILLED_STEPS.parse().unwrap();
    assert!(
        last_bytes(&straight, steps) == last_bytes(&killed, steps),
        "the killed run differs"
    );
    assert_eq!(logged_steps(&killed), (1..=steps).collect::<Vec<_>>());
}
