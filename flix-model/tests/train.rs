//! The trainer end to end on a tiny random model: resuming reaches bit-identical weights and
//! optimizer state; a non-finite loss stops with the step and cells named; bad data is an error
//! before the first step; held-out cells never reach a batch.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;

use flix_core::{FeatureConfig, TypeConfig, TypeDefaults};
use flix_model::train::checkpoint::{latest_checkpoint, OPTIMIZER_FILE, WEIGHTS_FILE};
use flix_model::train::{Method, TrainSpec, Trainer};

fn features() -> FeatureConfig {
    let mut config = FeatureConfig::discovered(
        &["lang", "task"],
        TypeDefaults {
            rank: 2,
            alpha: 4.0,
            dropout: 0.3,
        },
    );
    config.types[1] = TypeConfig {
        name: "task".into(),
        rank: Some(3),
        ..TypeConfig::default()
    };
    config
}

fn spec(base: &Path, train: &Path, method: Method) -> TrainSpec {
    let mut spec = TrainSpec::new(base.into(), vec![train.into()], features(), method);
    spec.steps = 6;
    spec.batch_tokens = 120;
    spec.grad_accum = 2;
    spec.warmup_steps = 2;
    spec.lr = 1e-2;
    spec.weight_decay = 0.01;
    spec.checkpoint_every = 3;
    spec.holdout = vec!["lang=deu,task=num2words".into()];
    spec
}

fn final_files(run: &Path) -> (Vec<u8>, Vec<u8>) {
    let ck = latest_checkpoint(run).unwrap().unwrap();
    (
        std::fs::read(ck.join(WEIGHTS_FILE)).unwrap(),
        std::fs::read(ck.join(OPTIMIZER_FILE)).unwrap(),
    )
}

#[test]
fn resumed_runs_are_bit_identical_for_every_method() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    for method in Method::ALL {
        let straight = tmp.path().join(format!("straight-{method}"));
        let mut t = Trainer::new(spec(&base, &train, method), &straight).unwrap();
        t.run(|_| {}).unwrap();

        // Half the steps, a checkpoint, the trainer dropped (as a killed process would be), then
        // a fresh process resumes from the directory alone.
        let halves = tmp.path().join(format!("halves-{method}"));
        let mut t = Trainer::new(spec(&base, &train, method), &halves).unwrap();
        for _ in 0..3 {
            t.train_step().unwrap();
        }
        t.save_checkpoint().unwrap();
        // A step that was computed but not checkpointed is lost, and recomputed on resume.
        t.train_step().unwrap();
        drop(t);
        let mut t = Trainer::resume(&halves).unwrap();
        assert_eq!(t.step, 3);
        t.run(|_| {}).unwrap();

        let (w1, o1) = final_files(&straight);
        let (w2, o2) = final_files(&halves);
        assert!(w1 == w2, "{method}: weights differ after resume");
        assert!(o1 == o2, "{method}: optimizer state differs after resume");
        // And training did change the weights: compare with the step-3 checkpoint.
        let mid = straight
            .join("checkpoints/step-00000003")
            .join(WEIGHTS_FILE);
        assert!(
            std::fs::read(mid).unwrap() != w1,
            "{method}: no training happened"
        );
    }
}

#[test]
fn heldout_cells_never_reach_a_batch_and_batches_mix_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let t = Trainer::new(spec(&base, &train, Method::Flix), &tmp.path().join("run")).unwrap();
    assert!(t
        .data
        .cell_names
        .iter()
        .all(|c| c != "lang=deu,task=num2words"));
    // 3 × 3 cells, less the generator's diagonal (no train examples) and the --holdout cell.
    assert_eq!(t.data.cell_names.len(), 5);
    let mb = t.micro_batch(0).unwrap();
    assert!(mb.batch.num_tokens() <= 120);
    let mut cells = mb.cells.clone();
    cells.dedup();
    assert!(cells.len() > 1, "one micro-batch should hold several cells");
    // FLix slots: the plan has both feature types.
    assert_eq!(mb.batch.plan().unwrap().plan().num_types(), 2);
}

#[test]
fn lora_with_match_compute_has_the_rank_of_a_full_flix_example() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let mut s = spec(&base, &train, Method::Lora);
    s.match_compute = true;
    let t = Trainer::new(s, &tmp.path().join("run")).unwrap();
    let types = t.layout.adapter_types();
    assert_eq!(types.len(), 1);
    assert_eq!(types[0].1.rank, 2 + 3);
}

#[test]
fn a_non_finite_loss_names_the_step_and_cells_and_keeps_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let mut s = spec(&base, &train, Method::Full);
    s.lr = 1e30;
    s.warmup_steps = 0;
    s.max_grad_norm = 0.0;
    s.checkpoint_every = 1;
    s.grad_accum = 1;
    let run = tmp.path().join("run");
    let mut t = Trainer::new(s, &run).unwrap();
    let err = t.run(|_| {}).unwrap_err().to_string();
    assert!(err.contains("step 2") || err.contains("step 3"), "{err}");
    assert!(err.contains("lang="), "{err}");
    assert!(err.contains("checkpoint"), "{err}");
    assert!(latest_checkpoint(&run).unwrap().is_some());
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

#[test]
fn bad_data_is_an_error_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = fixture(tmp.path());
    let good = r#"{"lang":"eng","task":"date","input":"1 2","target":"one two"}"#;
    let cases = [
        (format!("{good}\n{{\"lang\": \n"), "bad0.jsonl:2"),
        (
            r#"{"lang":"eng","task":"date","input":"1","target":""}"#.to_string(),
            "tokenizes to nothing",
        ),
        (String::new(), "no examples"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = write(&tmp.path().join(format!("bad{i}.jsonl")), text);
        // These files have no deu examples: holding out a deu cell would be the first error.
        let mut s = spec(&base, &file, Method::Flix);
        s.holdout.clear();
        let err = Trainer::new(s, &tmp.path().join(format!("run{i}")))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(expected), "case {i}: {err}");
    }
    // An unknown value of a type with a fixed list that may not grow.
    let file = write(&tmp.path().join("unknown.jsonl"), good);
    let mut s = spec(&base, &file, Method::Flix);
    s.holdout.clear();
    s.features.types[0].values = Some(vec!["deu".into()]);
    let err = Trainer::new(s, &tmp.path().join("run-unknown"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("eng"), "{err}");
}
