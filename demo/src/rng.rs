//! A small deterministic random number generator for the demo mixture.
//!
//! The demo must give the same bytes for the same seed on every machine and every Rust version, so
//! it cannot lean on `std`'s hasher (whose algorithm is unspecified). SplitMix64 (Steele, Lea and
//! Flood, 2014) is enough for picking numbers and dates; FNV-1a turns names into stream seeds.

/// SplitMix64: one 64-bit state, one add and a finaliser per draw.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent stream for one named purpose (e.g. `["eng", "date", "train"]`), so that
    /// changing one cell's size never changes the examples of another cell.
    pub(crate) fn for_stream(seed: u64, names: &[&str]) -> Self {
        let mut hash = fnv1a(0xcbf2_9ce4_8422_2325, &seed.to_le_bytes());
        for name in names {
            // A separator byte keeps ["ab", "c"] and ["a", "bc"] apart.
            hash = fnv1a(hash, name.as_bytes());
            hash = fnv1a(hash, &[0xff]);
        }
        Self::new(hash)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (multiply-high; the bias is below 2^-50 for the small `n` used here).
    /// Returns 0 when `n` is 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Fisher-Yates shuffle.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // First outputs for seed 1234567 from the reference C implementation (Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
        assert_eq!(rng.next_u64(), 9817491932198370423);
    }

    #[test]
    fn below_stays_in_range_and_shuffle_is_a_permutation() {
        let mut rng = SplitMix64::new(7);
        for n in 1..50u64 {
            assert!(rng.below(n) < n);
        }
        let mut items: Vec<u32> = (0..100).collect();
        rng.shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(items, sorted, "a shuffle of 100 items left them in order");
    }

    #[test]
    fn streams_differ_by_name() {
        let a = SplitMix64::for_stream(1, &["eng", "date"]).next_u64();
        let b = SplitMix64::for_stream(1, &["eng", "datf"]).next_u64();
        let c = SplitMix64::for_stream(1, &["engd", "ate"]).next_u64();
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
