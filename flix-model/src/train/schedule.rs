//! The learning rate: linear warmup from 0, then cosine decay to `min_ratio` × the peak.

/// Learning rate of step `step` (counting from 1) of `total`.
pub fn learning_rate(peak: f64, step: u64, total: u64, warmup: u64, min_ratio: f64) -> f64 {
    if warmup > 0 && step <= warmup {
        return peak * step as f64 / warmup as f64;
    }
    let decay_steps = total.saturating_sub(warmup).max(1);
    let progress = (step.saturating_sub(warmup) as f64 / decay_steps as f64).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    peak * (min_ratio + (1.0 - min_ratio) * cosine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let lr = |s| learning_rate(1.0, s, 110, 10, 0.1);
        assert!((lr(1) - 0.1).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        // Half-way through the decay the cosine is at its midpoint.
        assert!((lr(60) - 0.55).abs() < 1e-12);
        assert!((lr(110) - 0.1).abs() < 1e-12);
        assert!((2..=110).all(|s| s <= 10 || lr(s) <= lr(s - 1)));
        assert_eq!(learning_rate(2.0, 1, 1, 0, 0.0), 0.0);
    }
}
