//! Feature dropout (DESIGN §1): in training, each present feature of an example is dropped
//! independently with its type's probability, decided once per example per step, without
//! rescaling. The decision is a pure function of (seed, step, example index, type index): a
//! counter-based hash rather than a stateful RNG, so it is reproducible and does not depend on the
//! order in which examples are processed.

use serde::{Deserialize, Serialize};

use crate::plan::ABSENT;
use crate::registry::Registry;

/// What to do when dropout would remove every present feature of an example.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DropoutPolicy {
    /// Keep one of them (chosen deterministically): never silently train an example with no
    /// feature. The default.
    #[default]
    KeepOne,
    /// Let the example train with no feature (only the frozen base model).
    AllowEmpty,
}

/// The dropout of one training run: per-type probabilities, the policy and the seed.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureDropout {
    pub seed: u64,
    /// Drop probability per type, in slot order.
    pub probs: Vec<f64>,
    pub policy: DropoutPolicy,
}

impl FeatureDropout {
    /// The dropout the registry's types and policy describe.
    pub fn from_registry(registry: &Registry, seed: u64) -> Self {
        FeatureDropout {
            seed,
            probs: registry.types().iter().map(|t| t.dropout()).collect(),
            policy: registry.dropout_policy(),
        }
    }

    /// Drops features of example `example` at step `step` in place (dropped slots become
    /// [`ABSENT`]). Slots beyond `probs` are never dropped.
    pub fn apply(&self, step: u64, example: u64, slots: &mut [i32]) {
        let base = mix(mix(self.seed, step), example);
        let drops =
            |k: usize| unit(mix(base, k as u64)) < self.probs.get(k).copied().unwrap_or(0.0);
        let present = slots.iter().filter(|&&id| id != ABSENT).count();
        let all_dropped = slots
            .iter()
            .enumerate()
            .all(|(k, &id)| id == ABSENT || drops(k));
        // Under keep-one, when every present feature would go, the j-th present one stays, j drawn
        // from a hash stream separate from the per-type decisions.
        let kept = if present > 0 && all_dropped && self.policy == DropoutPolicy::KeepOne {
            let j = (mix(base, u64::MAX) % present as u64) as usize;
            (0..slots.len()).filter(|&k| slots[k] != ABSENT).nth(j)
        } else {
            None
        };
        for (k, slot) in slots.iter_mut().enumerate() {
            if *slot != ABSENT && drops(k) && kept != Some(k) {
                *slot = ABSENT;
            }
        }
    }
}

/// splitmix64's finaliser: a bijective mix of 64 bits with good avalanche.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a counter into a running state.
fn mix(state: u64, counter: u64) -> u64 {
    splitmix64(state ^ splitmix64(counter))
}

/// The top 53 bits of `h` as a uniform number in [0, 1).
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}
