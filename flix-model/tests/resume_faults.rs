//! Resuming a run whose directory was damaged: a lost `latest` pointer, a torn temporary of a
//! killed write, a damaged newest checkpoint, every checkpoint damaged, a hand-edited spec, a
//! base model swapped under the run. The reference is a run that was never interrupted: resuming
//! must reach its bytes exactly and log each step once, or refuse with a clear error. Loading a
//! run for evaluation, export, generation or merging (`load_trained`) falls back the same way
//! and says so.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{copy_files, fixture};
use flix_core::{FeatureConfig, TypeDefaults};
use flix_kernels::Device;
use flix_model::train::checkpoint::{latest_checkpoint, CONFIG_FILE, OPTIMIZER_FILE, WEIGHTS_FILE};
use flix_model::train::tensor_file::{load_tensors, save_tensors};
use flix_model::train::trainables::trainables;
use flix_model::train::{load_trained, Method, TrainSpec, Trained, Trainer};

const STEPS: u64 = 6;

fn spec(base: &Path, train: &Path) -> TrainSpec {
    let features = FeatureConfig::discovered(
        &["lang", "task"],
        TypeDefaults {
            rank: 2,
            alpha: 4.0,
            dropout: 0.2,
        },
    );
    let mut spec = TrainSpec::new(base.into(), vec![train.into()], features, Method::Flix);
    spec.steps = STEPS;
    spec.batch_tokens = 120;
    spec.warmup_steps = 1;
    spec.lr = 1e-2;
    spec.checkpoint_every = 2;
    spec
}

/// A run of `STEPS` steps, uninterrupted; checkpoints 4 and 6 remain.
fn full_run(base: &Path, train: &Path, run: &Path) {
    Trainer::new(spec(base, train), run)
        .unwrap()
        .run(|_| {})
        .unwrap();
}

fn final_bytes(run: &Path) -> (Vec<u8>, Vec<u8>) {
    let ck = latest_checkpoint(run).unwrap().unwrap();
    assert!(ck.ends_with(format!("step-{STEPS:08}")), "{ck:?}");
    (
        std::fs::read(ck.join(WEIGHTS_FILE)).unwrap(),
        std::fs::read(ck.join(OPTIMIZER_FILE)).unwrap(),
    )
}

/// The steps logged in `metrics.jsonl`, in order.
fn logged_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn step_dir(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(format!("step-{step:08}"))
}

/// Resumes `run` to its end; returns the notes resuming left.
fn resume_to_end(run: &Path, expected_start: u64) -> Vec<String> {
    let mut t = Trainer::resume(run).unwrap();
    assert_eq!(t.step, expected_start, "resumed from the wrong step");
    // Nothing after the step resumed from is still logged.
    assert_eq!(logged_steps(run), (1..=expected_start).collect::<Vec<_>>());
    let notes = t.resume_notes.clone();
    t.run(|_| {}).unwrap();
    notes
}

#[test]
fn a_lost_pointer_and_a_killed_write_resume_from_the_newest_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let straight = tmp.path().join("straight");
    full_run(&base, &train, &straight);

    let run = tmp.path().join("run");
    full_run(&base, &train, &run);
    // As if killed while writing step 6: its directory never got its name, the pointer is gone.
    let ck = run.join("checkpoints");
    std::fs::rename(step_dir(&run, 6), ck.join(".step-00000006.tmp")).unwrap();
    std::fs::write(ck.join(".step-00000006.tmp").join(WEIGHTS_FILE), b"torn").unwrap();
    std::fs::remove_file(ck.join("latest")).unwrap();

    let notes = resume_to_end(&run, 4);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(final_bytes(&run), final_bytes(&straight));
    assert_eq!(logged_steps(&run), (1..=STEPS).collect::<Vec<_>>());
    assert!(
        !ck.join(".step-00000006.tmp").exists(),
        "the torn write was left behind"
    );
}

type Damage = fn(&Path);

/// Ways a checkpoint gets damaged: cut short, a NaN written in, a file lost, a config garbled.
fn damages() -> [(&'static str, Damage); 4] {
    [
        ("weights cut short", |ck| {
            let path = ck.join(WEIGHTS_FILE);
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        }),
        ("a NaN in the weights", |ck| {
            let path = ck.join(WEIGHTS_FILE);
            let mut tensors: Vec<_> = load_tensors(&path).unwrap().into_values().collect();
            tensors[0].data[1] = f32::NAN;
            save_tensors(&path, &tensors).unwrap();
        }),
        ("optimizer state lost", |ck| {
            std::fs::remove_file(ck.join(OPTIMIZER_FILE)).unwrap();
        }),
        ("config garbled", |ck| {
            std::fs::write(ck.join(CONFIG_FILE), b"{\"format\": ").unwrap();
        }),
    ]
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let straight = tmp.path().join("straight");
    full_run(&base, &train, &straight);
    let expected = final_bytes(&straight);

    for (i, (what, damage)) in damages().iter().enumerate() {
        let run = tmp.path().join(format!("run{i}"));
        full_run(&base, &train, &run);
        damage(&step_dir(&run, 6));
        let notes = resume_to_end(&run, 4);
        assert!(
            notes.len() == 1 && notes[0].contains("step-00000006") && notes[0].contains("step 4"),
            "{what}: {notes:?}"
        );
        assert!(
            final_bytes(&run) == expected,
            "{what}: the resumed run differs"
        );
        assert_eq!(
            logged_steps(&run),
            (1..=STEPS).collect::<Vec<_>>(),
            "{what}"
        );
    }
}

#[test]
fn checkpoints_that_all_fail_are_an_error_not_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let run = tmp.path().join("run");
    full_run(&base, &train, &run);
    for step in [4, 6] {
        std::fs::write(step_dir(&run, step).join(WEIGHTS_FILE), b"").unwrap();
    }
    let err = Trainer::resume(&run).err().unwrap().to_string();
    assert!(
        err.contains("no checkpoint")
            && err.contains("step-00000004")
            && err.contains("step-00000006"),
        "{err}"
    );
    // The log is untouched by the refusal.
    assert_eq!(logged_steps(&run), (1..=STEPS).collect::<Vec<_>>());

    // A run killed before its first checkpoint has none: it starts over, its log emptied.
    let early = tmp.path().join("early");
    full_run(&base, &train, &early);
    std::fs::remove_dir_all(early.join("checkpoints")).unwrap();
    let t = Trainer::resume(&early).unwrap();
    assert_eq!(t.step, 0);
    assert!(logged_steps(&early).is_empty());
}

/// Edits `run`'s spec.json with `edit`.
fn edit_spec(run: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = run.join("spec.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, json.to_string()).unwrap();
}

#[test]
fn a_hand_edited_spec_or_another_base_model_is_refused_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let run = tmp.path().join("run");
    let mut t = Trainer::new(spec(&base, &train), &run).unwrap();
    t.train_step().unwrap();
    t.save_checkpoint().unwrap();
    drop(t);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("spec.json")).unwrap()).unwrap();
    // Paths are stored absolute; the base model's fingerprint is recorded.
    for path in [&saved["base"], &saved["data"][0]] {
        assert!(Path::new(path.as_str().unwrap()).is_absolute(), "{path}");
    }
    assert!(saved["base_fingerprint"].as_str().is_some(), "{saved}");

    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 4] = [
        ("negative lr", |s| s["lr"] = (-0.1).into(), "--lr"),
        ("min lr ratio", |s| s["min_lr_ratio"] = 2.0.into(), "[0, 1]"),
        ("cap 0", |s| s["cap"] = 0.into(), "--cap"),
        (
            "shared rank under flix",
            |s| s["shared_rank"] = 4.into(),
            "--shared-rank",
        ),
    ];
    for (what, edit, expected) in cases {
        edit_spec(&run, |s| *s = saved.clone());
        edit_spec(&run, edit);
        let err = Trainer::resume(&run).err().unwrap().to_string();
        assert!(
            err.contains(expected) && err.contains("spec.json"),
            "{what}: {err}"
        );
    }

    // Another base model: a copy of the base with one weight changed.
    let other = tmp.path().join("other-base");
    copy_files(&base, &other);
    let weights = other.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&weights, bytes).unwrap();
    edit_spec(&run, |s| {
        *s = saved.clone();
        s["base"] = other.display().to_string().into();
    });
    let err = Trainer::resume(&run).err().unwrap().to_string();
    assert!(
        err.contains("not the one") && err.contains("other-base"),
        "{err}"
    );

    // The original spec resumes.
    edit_spec(&run, |s| *s = saved.clone());
    assert_eq!(Trainer::resume(&run).unwrap().step, 1);
}

/// The adapter tensors of a loaded run, by name.
fn adapter_tensors(trained: &mut Trained) -> BTreeMap<String, Vec<f32>> {
    let names = trained.config.type_names();
    trainables(&mut trained.model, false, &names)
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.value.to_f32_vec().unwrap()))
        .collect()
}

#[test]
fn loading_a_run_whose_newest_checkpoint_is_damaged_falls_back_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let run = tmp.path().join("run");
    full_run(&base, &train, &run);
    let (newest, previous) = (step_dir(&run, 6), step_dir(&run, 4));
    let pristine = tmp.path().join("pristine-step-6");
    copy_files(&newest, &pristine);
    // The independent reference: the tensors step 4 wrote, read straight from its file.
    let expected: BTreeMap<String, Vec<f32>> = load_tensors(&previous.join(WEIGHTS_FILE))
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name, t.data))
        .collect();

    let intact = load_trained(&run, &Device::Cpu).unwrap();
    assert_eq!(intact.checkpoint, newest);
    assert!(intact.warnings.is_empty(), "{:?}", intact.warnings);

    for (what, damage) in damages() {
        copy_files(&pristine, &newest);
        damage(&newest);
        let mut trained = load_trained(&run, &Device::Cpu).unwrap();
        assert_eq!(trained.checkpoint, previous, "{what}");
        assert!(
            trained.warnings.len() == 1
                && trained.warnings[0].contains("step-00000006")
                && trained.warnings[0].contains("step 4"),
            "{what}: {:?}",
            trained.warnings
        );
        assert_eq!(adapter_tensors(&mut trained), expected, "{what}");
    }

    // None intact: an error naming both checkpoints, never the bare base model.
    std::fs::write(previous.join(WEIGHTS_FILE), b"").unwrap();
    let err = load_trained(&run, &Device::Cpu).err().unwrap().to_string();
    assert!(
        err.contains("no checkpoint")
            && err.contains("step-00000004")
            && err.contains("step-00000006"),
        "{err}"
    );
}

/// A directory that is neither a run nor a checkpoint (a mixture root, a model directory) is
/// named as such, not reported as a missing file inside it.
#[test]
fn loading_a_directory_that_is_no_run_says_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let err = load_trained(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("neither a run directory") && err.contains("adapter_config.json"),
        "{err}"
    );
}
