//! The demo's closing lines: supervised and held-out exact match as mean ± spread across seeds,
//! and whether they show the claim the demo exists for — FLix's held-out mean above LoRA's by more
//! than the spread across seeds, with supervised cells no worse.

/// Mean and sample standard deviation of a few per-seed scores (in %).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeanStd {
    pub mean: f64,
    /// 0 for a single score.
    pub std: f64,
    pub n: usize,
}

impl MeanStd {
    pub fn of(xs: &[f64]) -> Self {
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n.max(1) as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        Self {
            mean,
            std: var.sqrt(),
            n,
        }
    }
}

impl std::fmt::Display for MeanStd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:5.1} ± {:4.1}", self.mean, self.std)
    }
}

/// Per-seed means of one method, in %.
pub struct MethodScores {
    pub supervised: MeanStd,
    pub heldout: MeanStd,
}

/// The table of both methods and the verdict on the claim.
pub fn summary(flix: &MethodScores, lora: &MethodScores) -> String {
    let seeds = flix.heldout.n;
    format!(
        "exact match over {seeds} seed(s), mean ± std (%):\n\
         {:12} {:>14} {:>14}\n{:12} {:>14} {:>14}\n{:12} {:>14} {:>14}\n{}",
        "",
        "supervised",
        "held-out",
        "FLix",
        flix.supervised.to_string(),
        flix.heldout.to_string(),
        "LoRA",
        lora.supervised.to_string(),
        lora.heldout.to_string(),
        verdict(flix, lora),
    )
}

/// Whether FLix's held-out mean beats LoRA's by more than the larger of the two spreads across
/// seeds while its supervised mean is no lower than LoRA's less their larger spread; one seed has
/// no spread, so it cannot say.
pub fn verdict(flix: &MethodScores, lora: &MethodScores) -> String {
    let gain = flix.heldout.mean - lora.heldout.mean;
    let supervised_gain = flix.supervised.mean - lora.supervised.mean;
    if flix.heldout.n < 2 {
        return format!(
            "FLix minus LoRA: held-out {gain:+.1}, supervised {supervised_gain:+.1} points; \
             run with --seeds 3 to test the claim (a gain beyond the spread across seeds)"
        );
    }
    let spread = flix.heldout.std.max(lora.heldout.std);
    let supervised_spread = flix.supervised.std.max(lora.supervised.std);
    let above = gain > spread;
    let no_worse = supervised_gain >= -supervised_spread;
    let shown = if above && no_worse {
        "shown"
    } else if above {
        "not shown: supervised cells are worse"
    } else {
        "not shown: the held-out gain is within the spread or below zero"
    };
    format!(
        "FLix minus LoRA: held-out {gain:+.1} points (spread across seeds {spread:.1}), \
         supervised {supervised_gain:+.1} (spread {supervised_spread:.1}); \
         the claim is {shown}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(supervised: &[f64], heldout: &[f64]) -> MethodScores {
        MethodScores {
            supervised: MeanStd::of(supervised),
            heldout: MeanStd::of(heldout),
        }
    }

    #[test]
    fn mean_and_sample_std() {
        let m = MeanStd::of(&[2.0, 4.0, 6.0]);
        assert_eq!((m.mean, m.std, m.n), (4.0, 2.0, 3));
        let one = MeanStd::of(&[7.5]);
        assert_eq!((one.mean, one.std, one.n), (7.5, 0.0, 1));
    }

    #[test]
    fn the_verdict_needs_a_gain_beyond_the_spread_and_no_supervised_loss() {
        let lora = scores(&[98.0, 99.0, 100.0], &[40.0, 45.0, 50.0]); // held-out std 5
        let clear = scores(&[99.0, 99.0, 99.0], &[56.0, 56.0, 56.0]);
        assert!(verdict(&clear, &lora).ends_with("is shown"));
        let within = scores(&[99.0, 99.0, 99.0], &[48.0, 49.0, 50.0]);
        assert!(verdict(&within, &lora).contains("within the spread"));
        let worse_supervised = scores(&[90.0, 90.0, 90.0], &[60.0, 60.0, 60.0]);
        assert!(verdict(&worse_supervised, &lora).contains("supervised cells are worse"));
        let one_seed = scores(&[99.0], &[60.0]);
        assert!(verdict(&one_seed, &scores(&[99.0], &[40.0])).contains("--seeds 3"));
    }
}
