//! Feature dropout: the drop rate matches p, decisions are deterministic and order-independent,
//! and the keep-one policy keeps exactly one feature when all would go.

use flix_core::{DropoutPolicy, FeatureConfig, FeatureDropout, Registry, ABSENT};

const N: u64 = 20_000;

fn dropout(probs: &[f64], policy: DropoutPolicy) -> FeatureDropout {
    FeatureDropout {
        seed: 1234,
        probs: probs.to_vec(),
        policy,
    }
}

/// Fraction of examples (0..N at `step`) whose slot `k` was dropped, starting from `slots`.
fn drop_rates(d: &FeatureDropout, step: u64, slots: &[i32]) -> Vec<f64> {
    let mut dropped = vec![0u64; slots.len()];
    for ex in 0..N {
        let mut s = slots.to_vec();
        d.apply(step, ex, &mut s);
        for k in 0..s.len() {
            if slots[k] != ABSENT && s[k] == ABSENT {
                dropped[k] += 1;
            }
        }
    }
    dropped.iter().map(|&c| c as f64 / N as f64).collect()
}

/// |rate - p| within 5 standard deviations of a binomial proportion over N draws.
fn assert_close(rate: f64, p: f64, what: &str) {
    let sigma = (p * (1.0 - p) / N as f64).sqrt();
    assert!(
        (rate - p).abs() <= 5.0 * sigma + 1e-12,
        "{what}: drop rate {rate}, expected {p} ± {}",
        5.0 * sigma
    );
}

#[test]
fn drop_rate_is_p_per_type_with_allow_empty() {
    let d = dropout(&[0.1, 0.5, 0.8], DropoutPolicy::AllowEmpty);
    let rates = drop_rates(&d, 3, &[4, 0, 7]);
    for (k, (&rate, &p)) in rates.iter().zip(&d.probs).enumerate() {
        assert_close(rate, p, &format!("type {k}"));
    }
}

#[test]
fn keep_one_lowers_the_rate_only_by_the_all_dropped_case() {
    // Two present features, each dropped with p; when both would go, one of the two (either
    // with equal chance) is kept: each is dropped with probability p - p²/2.
    let p = 0.5;
    let d = dropout(&[p, p], DropoutPolicy::KeepOne);
    for rate in drop_rates(&d, 0, &[1, 2]) {
        assert_close(rate, p - p * p / 2.0, "keep-one");
    }
}

#[test]
fn keep_one_keeps_exactly_one_present_feature() {
    let d = dropout(&[1.0, 1.0, 1.0, 1.0], DropoutPolicy::KeepOne);
    let original = [3, ABSENT, 5, 0];
    let mut kept_at = [0u64; 4];
    for ex in 0..3000 {
        let mut s = original;
        d.apply(11, ex, &mut s);
        let present: Vec<usize> = (0..4).filter(|&k| s[k] != ABSENT).collect();
        assert_eq!(present.len(), 1, "example {ex}: {s:?}");
        let k = present[0];
        assert_eq!(s[k], original[k], "the kept feature keeps its value");
        kept_at[k] += 1;
    }
    assert_eq!(kept_at[1], 0, "an absent feature is never brought back");
    for k in [0, 2, 3] {
        assert!(
            kept_at[k] > 800,
            "the kept feature should be spread over the present ones: {kept_at:?}"
        );
    }
}

#[test]
fn allow_empty_can_drop_everything_and_absent_stays_absent() {
    let d = dropout(&[1.0, 1.0], DropoutPolicy::AllowEmpty);
    let mut s = [2, 9];
    d.apply(0, 0, &mut s);
    assert_eq!(s, [ABSENT, ABSENT]);

    let keep = dropout(&[1.0, 1.0], DropoutPolicy::KeepOne);
    let mut none = [ABSENT, ABSENT];
    keep.apply(0, 0, &mut none);
    assert_eq!(none, [ABSENT, ABSENT], "nothing present, nothing to keep");
}

#[test]
fn zero_probability_never_drops() {
    let d = dropout(&[0.0, 0.0], DropoutPolicy::AllowEmpty);
    assert_eq!(drop_rates(&d, 5, &[1, 1]), [0.0, 0.0]);
}

#[test]
fn decisions_depend_only_on_seed_step_and_example() {
    let d = dropout(&[0.5, 0.5, 0.5], DropoutPolicy::KeepOne);
    let run = |d: &FeatureDropout, step: u64, order: &mut dyn Iterator<Item = u64>| {
        let mut out = vec![Vec::new(); 500];
        for ex in order {
            let mut s = vec![0, 1, 2];
            d.apply(step, ex, &mut s);
            out[ex as usize] = s;
        }
        out
    };
    let forward = run(&d, 7, &mut (0..500));
    let backward = run(&d, 7, &mut (0..500).rev());
    assert_eq!(forward, backward, "order of processing does not matter");
    assert_eq!(forward, run(&d.clone(), 7, &mut (0..500)), "reproducible");
    assert_ne!(
        forward,
        run(&d, 8, &mut (0..500)),
        "another step, other decisions"
    );
    let other_seed = FeatureDropout { seed: 99, ..d };
    assert_ne!(forward, run(&other_seed, 7, &mut (0..500)), "another seed");
}

#[test]
fn dropout_follows_the_registry() {
    let config = FeatureConfig::from_json_str(
        r#"{"dropout_policy":"allow-empty","types":[{"name":"lang","dropout":0.3},{"name":"task"}]}"#,
        "test",
    )
    .unwrap();
    let d = FeatureDropout::from_registry(&Registry::from_config(&config).unwrap(), 5);
    assert_eq!(d.probs, [0.3, 0.0]);
    assert_eq!(d.policy, DropoutPolicy::AllowEmpty);
    assert_eq!(d.seed, 5);
}
