//! The memory estimate counts the adapter parameters a run really allocates: compared with the
//! tensors attached to the model, for every method and a subset of target modules.

mod common;

use common::fixture;
use flix_model::train::memory::{adapter_params, estimate};
use flix_model::train::trainables::trainables;
use flix_model::train::{Method, TrainSpec, Trainer};

#[test]
fn the_estimate_counts_exactly_the_adapters_attached() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    for (i, method) in [Method::Flix, Method::FlixShared, Method::Lora]
        .into_iter()
        .enumerate()
    {
        let features = common::lang_task_features_of_ranks_2_and_3();
        let mut spec = TrainSpec::new(base.clone(), vec![train.clone()], features, method);
        spec.targets = vec!["k".into(), "o".into(), "up".into()];
        if method != Method::Flix {
            spec.shared_rank = Some(3);
        }
        let mut t = Trainer::new(spec, &tmp.path().join(format!("run{i}"))).unwrap();
        let names: Vec<String> = t
            .layout
            .adapter_types()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let counted = adapter_params(&t.model, &t.layout);
        let layout = t.layout.clone();
        let real: usize = trainables(&mut t.model, false, &names)
            .unwrap()
            .iter()
            .map(|p| p.value.shape().iter().product::<usize>())
            .sum();
        assert_eq!(counted, real as u128, "{method}");
        let e = estimate(&t.model, &layout, 100);
        assert_eq!(e.param_bytes, 16 * real as u128, "{method}");
        // Activations grow with the micro-batch: twice the tokens, twice the bytes.
        assert_eq!(
            estimate(&t.model, &layout, 200).activation_bytes,
            2 * e.activation_bytes
        );
    }
}

/// The logits kept for the backward are counted as f32 for every token of the micro-batch, and
/// not at all when the model's budget keeps none.
#[test]
fn the_estimate_counts_the_kept_logits_within_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, train) = fixture(tmp.path());
    let features = common::lang_task_features_of_ranks_2_and_3();
    let spec = TrainSpec::new(base, vec![train], features, Method::Flix);
    let mut t = Trainer::new(spec, &tmp.path().join("run")).unwrap();
    let vocab = t.model.config.vocab_size as u128;
    let e = estimate(&t.model, &t.layout, 100);
    assert_eq!(e.kept_logits_bytes, 100 * vocab * 4);
    assert_eq!(
        e.total(),
        e.param_bytes + e.activation_bytes + e.kept_logits_bytes
    );
    t.model.logits_budget_bytes = 0;
    assert_eq!(estimate(&t.model, &t.layout, 100).kept_logits_bytes, 0);
}
