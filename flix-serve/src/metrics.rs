//! The server's counters, gauges and histograms, and their Prometheus text format (version
//! 0.0.4), written by hand: a handful of series do not need a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histograms, in seconds.
const SECONDS_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Upper bounds of the batch-occupancy histogram, in sequences per step.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// counts[i]: observations <= bounds[i] (not cumulative here; summed on render).
    counts: Vec<u64>,
    /// Observations above the last bound.
    over: u64,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            over: 0,
            sum: 0.0,
        }
    }

    fn observe(&mut self, value: f64) {
        self.sum += value;
        match self.bounds.iter().position(|&b| value <= b) {
            Some(i) => self.counts[i] += 1,
            None => self.over += 1,
        }
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.over
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count());
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count());
    }
}

/// Why a sequence left the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SequenceEnd {
    /// End-of-sequence token.
    Eos,
    /// max_tokens reached.
    Length,
    /// Its client went away, or a stop string matched (the response needs no more tokens).
    Dropped,
    /// Cancelled at the end of the shutdown grace period.
    Shutdown,
    /// A decoder error failed it.
    Error,
}

impl SequenceEnd {
    fn label(self) -> &'static str {
        match self {
            SequenceEnd::Eos => "eos",
            SequenceEnd::Length => "length",
            SequenceEnd::Dropped => "dropped",
            SequenceEnd::Shutdown => "shutdown",
            SequenceEnd::Error => "error",
        }
    }
}

#[derive(Debug)]
struct Inner {
    requests_by_code: BTreeMap<u16, u64>,
    prompt_tokens: u64,
    generated_tokens: u64,
    sequences_ended: BTreeMap<SequenceEnd, u64>,
    active_sequences: usize,
    batch_sequences: Histogram,
    request_seconds: Histogram,
    first_token_seconds: Histogram,
}

/// Shared by the request handlers and the engine thread.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                requests_by_code: BTreeMap::new(),
                prompt_tokens: 0,
                generated_tokens: 0,
                sequences_ended: BTreeMap::new(),
                active_sequences: 0,
                batch_sequences: Histogram::new(&BATCH_BUCKETS),
                request_seconds: Histogram::new(&SECONDS_BUCKETS),
                first_token_seconds: Histogram::new(&SECONDS_BUCKETS),
            }),
        }
    }

    /// Runs `f` on the state. A panic elsewhere while holding the lock leaves plain counters
    /// behind, still worth reporting, so a poisoned lock is used as is.
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn request_answered(&self, status: u16) {
        self.with(|m| *m.requests_by_code.entry(status).or_default() += 1);
    }

    pub fn tokens(&self, prompt: usize, generated: usize) {
        self.with(|m| {
            m.prompt_tokens += prompt as u64;
            m.generated_tokens += generated as u64;
        });
    }

    pub fn request_latency(&self, elapsed: Duration) {
        self.with(|m| m.request_seconds.observe(elapsed.as_secs_f64()));
    }

    pub fn first_token(&self, elapsed: Duration) {
        self.with(|m| m.first_token_seconds.observe(elapsed.as_secs_f64()));
    }

    /// One decoder step over `sequences` sequences.
    pub fn step(&self, sequences: usize) {
        self.with(|m| m.batch_sequences.observe(sequences as f64));
    }

    pub fn sequence_ended(&self, how: SequenceEnd) {
        self.with(|m| *m.sequences_ended.entry(how).or_default() += 1);
    }

    pub fn set_active_sequences(&self, n: usize) {
        self.with(|m| m.active_sequences = n);
    }

    pub fn active_sequences(&self) -> usize {
        self.with(|m| m.active_sequences)
    }

    /// The Prometheus text; the queue depth and draining state are read by the caller.
    pub fn render(&self, queue_depth: usize, draining: bool) -> String {
        self.with(|m| {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "# HELP flix_requests_total Completion requests answered, by HTTP status.\n\
                 # TYPE flix_requests_total counter"
            );
            for (code, n) in &m.requests_by_code {
                let _ = writeln!(out, "flix_requests_total{{code=\"{code}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "# HELP flix_prompt_tokens_total Prompt tokens of accepted requests.\n\
                 # TYPE flix_prompt_tokens_total counter\nflix_prompt_tokens_total {}",
                m.prompt_tokens
            );
            let _ = writeln!(
                out,
                "# HELP flix_generated_tokens_total Tokens generated (completion_tokens).\n\
                 # TYPE flix_generated_tokens_total counter\nflix_generated_tokens_total {}",
                m.generated_tokens
            );
            let _ = writeln!(
                out,
                "# HELP flix_sequences_finished_total Sequences that left the decoder, by why.\n\
                 # TYPE flix_sequences_finished_total counter"
            );
            for (how, n) in &m.sequences_ended {
                let _ = writeln!(
                    out,
                    "flix_sequences_finished_total{{reason=\"{}\"}} {n}",
                    how.label()
                );
            }
            let _ = writeln!(
                out,
                "# HELP flix_active_sequences Sequences in the decoder's batch.\n\
                 # TYPE flix_active_sequences gauge\nflix_active_sequences {}",
                m.active_sequences
            );
            let _ = writeln!(
                out,
                "# HELP flix_queue_depth Requests waiting for a place in the batch.\n\
                 # TYPE flix_queue_depth gauge\nflix_queue_depth {queue_depth}"
            );
            let _ = writeln!(
                out,
                "# HELP flix_draining 1 while the server shuts down.\n\
                 # TYPE flix_draining gauge\nflix_draining {}",
                u8::from(draining)
            );
            m.batch_sequences.render(
                &mut out,
                "flix_batch_sequences",
                "Sequences per decoder step (batch occupancy).",
            );
            m.request_seconds.render(
                &mut out,
                "flix_request_duration_seconds",
                "Completion request latency, to the last token.",
            );
            m.first_token_seconds.render(
                &mut out,
                "flix_time_to_first_token_seconds",
                "Time from a request's arrival to its first generated token.",
            );
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&BATCH_BUCKETS);
        for v in [1.0, 1.0, 3.0, 1000.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"4\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"512\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_sum 1005\n"), "{out}");
        assert!(out.contains("x_count 4\n"), "{out}");
    }
}
