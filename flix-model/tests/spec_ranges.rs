//! Every numeric setting of a training spec is accepted exactly on its documented range (the
//! option's help and the message it gives), whatever the value: negative, zero, NaN, infinite.
//! The ranges below are written from the documentation, not from the code.

use flix_core::{FeatureConfig, TypeDefaults};
use flix_model::train::spec::MAX_BATCH_TOKENS;
use flix_model::train::{Method, TrainSpec};
use proptest::prelude::*;

fn spec() -> TrainSpec {
    let features = FeatureConfig::discovered(&["lang", "task"], TypeDefaults::default());
    TrainSpec::new(
        "base".into(),
        vec!["d.jsonl".into()],
        features,
        Method::Flix,
    )
}

/// Any f64, with the edges and special values drawn often.
fn any_number() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(1.0),
        Just(f64::MIN_POSITIVE),
        Just(-f64::MIN_POSITIVE),
        -2.0..2.0f64,
        any::<f64>(),
    ]
}

/// Checks that `spec` with `set` applied validates exactly when `in_range`, and that a refusal
/// names `option`.
fn accepted_exactly_in_range(
    option: &str,
    value: f64,
    in_range: bool,
    set: impl FnOnce(&mut TrainSpec),
) -> Result<(), TestCaseError> {
    let mut s = spec();
    set(&mut s);
    match s.validate() {
        Ok(()) => prop_assert!(in_range, "{option} {value} was accepted"),
        Err(e) => {
            prop_assert!(!in_range, "{option} {value} was refused: {e}");
            prop_assert!(e.to_string().contains(option), "{e}");
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn min_lr_ratio_is_a_fraction(v in any_number()) {
        accepted_exactly_in_range("--min-lr-ratio", v, (0.0..=1.0).contains(&v), |s| s.min_lr_ratio = v)?;
    }

    #[test]
    fn weight_decay_is_finite_and_not_negative(v in any_number()) {
        accepted_exactly_in_range("--weight-decay", v, v.is_finite() && v >= 0.0, |s| s.weight_decay = v)?;
    }

    #[test]
    fn clip_is_finite_and_not_negative(v in any_number()) {
        accepted_exactly_in_range("--clip", v, v.is_finite() && v >= 0.0, |s| s.max_grad_norm = v)?;
    }

    #[test]
    fn temperature_is_finite_and_positive(v in any_number()) {
        accepted_exactly_in_range("--temperature", v, v.is_finite() && v > 0.0, |s| s.temperature = v)?;
    }

    #[test]
    fn learning_rate_is_finite_and_positive(v in any_number()) {
        accepted_exactly_in_range("--lr", v, v.is_finite() && v > 0.0, |s| s.lr = v)?;
    }

    #[test]
    fn alpha_is_finite_and_positive(v in any_number()) {
        // At the default rank (16) the scale alpha / rank stays far below its cap for |v| < 2.
        let in_range = v.is_finite() && v > 0.0 && v / 16.0 <= 1e4;
        accepted_exactly_in_range("alpha", v, in_range, |s| s.features.defaults.alpha = v)?;
    }

    #[test]
    fn counts_are_at_least_one(cap in 0usize..3, tokens in prop_oneof![Just(0usize), Just(usize::MAX), 1usize..10_000]) {
        accepted_exactly_in_range("--cap", cap as f64, cap >= 1, |s| s.cap = Some(cap))?;
        let in_range = (1..=MAX_BATCH_TOKENS).contains(&tokens);
        accepted_exactly_in_range("--batch-tokens", tokens as f64, in_range, |s| s.batch_tokens = tokens)?;
    }
}

#[test]
fn options_of_other_methods_are_refused() {
    for method in [Method::Flix, Method::Full] {
        let mut s = spec();
        s.method = method;
        s.shared_rank = Some(4);
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("--shared-rank") && err.contains(method.name()),
            "{err}"
        );
        s.shared_rank = None;
        s.match_compute = true;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("--match-compute"), "{err}");
    }
    for method in [Method::Lora, Method::FlixShared] {
        let mut s = spec();
        s.method = method;
        s.shared_rank = Some(4);
        s.validate().unwrap();
    }
    let mut s = spec();
    s.method = Method::Lora;
    s.match_compute = true;
    s.validate().unwrap();
}
