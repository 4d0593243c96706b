//! Evaluation during training: it leaves training bit-identical, writes its records at the right
//! steps, and its per-cell losses equal a plain recomputation (one sequence at a time, f64
//! log-softmax over the logits) on the checkpoint of the same step.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::fixture;
use flix_core::{read_jsonl_files, FeatureConfig, TypeDefaults};
use flix_kernels::ops::reference::cross_entropy;
use flix_kernels::Device;
use flix_model::eval::periodic::{EvalRecord, MetricsLine, PeriodicEvalSpec};
use flix_model::train::checkpoint::{latest_checkpoint, OPTIMIZER_FILE, WEIGHTS_FILE};
use flix_model::train::data::{cell_name, prompt_text, target_text};
use flix_model::train::{load_trained, Method, TrainSpec, Trainer};
use flix_model::{Batch, Sequence};

const HELDOUT: &str = "lang=deu,task=num2words";

fn spec(base: &Path, train: &Path, eval: bool) -> TrainSpec {
    let features = FeatureConfig::discovered(
        &["lang", "task"],
        TypeDefaults {
            rank: 2,
            alpha: 4.0,
            dropout: 0.3,
        },
    );
    let mut spec = TrainSpec::new(base.into(), vec![train.into()], features, Method::Flix);
    spec.steps = 5;
    spec.batch_tokens = 120;
    spec.warmup_steps = 1;
    spec.lr = 2e-2;
    spec.checkpoint_every = 1;
    spec.holdout = vec![HELDOUT.into()];
    if eval {
        // The training file holds the held-out cell too, so it doubles as the eval file.
        let mut e = PeriodicEvalSpec::new(2, train.into());
        e.max_per_cell = Some(1);
        e.max_new_tokens = 3;
        spec.eval = Some(e);
    }
    spec
}

fn metrics(run: &Path) -> Vec<MetricsLine> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn evals(run: &Path) -> Vec<EvalRecord> {
    metrics(run)
        .into_iter()
        .filter_map(|l| match l {
            MetricsLine::Eval(e) => Some(e),
            MetricsLine::Step(_) => None,
        })
        .collect()
}

fn final_files(run: &Path) -> (Vec<u8>, Vec<u8>) {
    let ck = latest_checkpoint(run).unwrap().unwrap();
    (
        std::fs::read(ck.join(WEIGHTS_FILE)).unwrap(),
        std::fs::read(ck.join(OPTIMIZER_FILE)).unwrap(),
    )
}

/// Mean target-token loss per cell of the checkpoint `checkpoint` on `data`, one example at a
/// time through the logits, log-softmax in f64.
fn plain_losses(checkpoint: &Path, data: &Path) -> BTreeMap<String, f64> {
    let trained = load_trained(checkpoint, &Device::Cpu).unwrap();
    let (model, layout, tok) = (&trained.model, &trained.layout, &trained.tokenizer);
    let names = layout.registry.type_names();
    let vocab = model.config.vocab_size;
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for ex in read_jsonl_files(&[data.to_path_buf()], &names).unwrap() {
        let mut tokens = tok.encode(&prompt_text(&ex, &names)).unwrap();
        let prompt_len = tokens.len();
        tokens.extend(tok.encode(&target_text(&ex)).unwrap());
        tokens.push(tok.eos_id().unwrap());
        let n = tokens.len();
        let sequence = Sequence::prompt_and_target(tokens.clone(), n)
            .with_features(layout.slots(&layout.registry.encode_inference(&ex)));
        let logits = common::logits_of(model, &Batch::new(&[sequence]).unwrap());
        let entry = sums.entry(cell_name(&ex, &names)).or_default();
        for t in prompt_len - 1..n - 1 {
            let row: Vec<f64> = logits[t * vocab..(t + 1) * vocab]
                .iter()
                .map(|&v| v as f64)
                .collect();
            entry.0 += cross_entropy(&row, tokens[t + 1] as usize);
            entry.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(cell, (sum, count))| (cell, sum / count as f64))
        .collect()
}

#[test]
fn periodic_eval_leaves_training_identical_and_matches_a_plain_recomputation() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let plain = tmp.path().join("plain");
    Trainer::new(spec(&base, &train, false), &plain)
        .unwrap()
        .run(|_| {})
        .unwrap();
    let with_eval = tmp.path().join("with-eval");
    let mut shown = Vec::new();
    Trainer::new(spec(&base, &train, true), &with_eval)
        .unwrap()
        .run(|r| {
            if let Some(e) = &r.eval {
                shown.push(e.step);
            }
        })
        .unwrap();
    assert!(
        final_files(&plain) == final_files(&with_eval),
        "evaluation changed training"
    );
    // The step lines are the same too (but for the time taken).
    let step_losses = |run: &Path| -> Vec<(u64, f64, f64)> {
        metrics(run)
            .into_iter()
            .filter_map(|l| match l {
                MetricsLine::Step(s) => Some((s.step, s.loss, s.grad_norm)),
                MetricsLine::Eval(_) => None,
            })
            .collect()
    };
    assert_eq!(step_losses(&plain), step_losses(&with_eval));

    // Every second step, and the last one; each record after its step's line.
    let records = evals(&with_eval);
    let steps: Vec<u64> = records.iter().map(|r| r.step).collect();
    assert_eq!(steps, [2, 4, 5]);
    assert_eq!(shown, steps, "on_step sees each evaluation");
    let lines = metrics(&with_eval);
    for r in &records {
        let at = lines
            .iter()
            .position(|l| matches!(l, MetricsLine::Eval(e) if e.step == r.step))
            .unwrap();
        assert!(matches!(&lines[at - 1], MetricsLine::Step(s) if s.step == r.step));
    }

    let ln_vocab = (load_trained(&with_eval, &Device::Cpu)
        .unwrap()
        .model
        .config
        .vocab_size as f64)
        .ln();
    for r in &records {
        // Held-out cells are marked and averaged apart; every cell has its exact match.
        let heldout: Vec<&String> = r
            .eval
            .iter()
            .filter(|(_, c)| c.heldout)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(heldout, [HELDOUT]);
        assert_eq!(r.heldout_mean, Some(r.eval[HELDOUT].loss));
        let supervised: Vec<f64> = r
            .eval
            .values()
            .filter(|c| !c.heldout)
            .map(|c| c.loss)
            .collect();
        let mean = supervised.iter().sum::<f64>() / supervised.len() as f64;
        assert!((r.supervised_mean.unwrap() - mean).abs() < 1e-12);
        for (name, cell) in &r.eval {
            assert!(
                cell.loss > 0.0 && cell.loss < 2.0 * ln_vocab,
                "{name}: {cell:?}"
            );
            let em = cell.exact_match.unwrap();
            assert!((0.0..=1.0).contains(&em), "{name}: {cell:?}");
        }
    }

    // The losses of steps 4 and 5 against their checkpoints, recomputed independently.
    for r in &records[1..] {
        let checkpoint = with_eval
            .join("checkpoints")
            .join(format!("step-{:08}", r.step));
        let want = plain_losses(&checkpoint, &train);
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            r.eval.keys().collect::<Vec<_>>()
        );
        for (cell, loss) in &want {
            let got = r.eval[cell].loss;
            assert!(
                (got - loss).abs() <= 1e-4 * loss.abs().max(1.0),
                "step {} {cell}: eval {got}, recomputed {loss}",
                r.step
            );
        }
    }
    // Training moved the eval loss of the supervised cells.
    assert_ne!(records[0].supervised_mean, records[2].supervised_mean);
}

#[test]
fn resuming_keeps_earlier_records_and_recomputes_later_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let run = tmp.path().join("run");
    Trainer::new(spec(&base, &train, true), &run)
        .unwrap()
        .run(|_| {})
        .unwrap();
    let before = evals(&run);
    let files = final_files(&run);
    // As if killed after step 4's checkpoint: the run goes back to it.
    std::fs::write(run.join("checkpoints/latest"), "step-00000004").unwrap();
    let mut t = Trainer::resume(&run).unwrap();
    assert_eq!(t.step, 4);
    let kept: Vec<u64> = evals(&run).iter().map(|r| r.step).collect();
    assert_eq!(
        kept,
        [2, 4],
        "records up to the checkpoint stay, later ones go"
    );
    t.run(|_| {}).unwrap();
    assert_eq!(evals(&run), before);
    assert!(final_files(&run) == files);
}
