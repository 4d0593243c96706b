//! Opt-in time per op, for finding where a training step or a benchmark spends its time when no
//! GPU profiler is at hand.
//!
//! Off by default and then free (one relaxed load per op). With `FLIX_PROFILE=1` in the
//! environment, every public op opens a [`Scope`]: the device is synchronized when the scope opens
//! (so queued work of earlier ops is not billed to it) and when it closes, and the wall time in
//! between is added to the op's total. Synchronizing after every op removes the overlap of host
//! launches with device work, so the sum is an upper bound of an unprofiled run's time; the shares
//! are what to read. Scopes nest (the cross-entropy runs GEMMs): only the outermost one counts.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use crate::Device;

static ENABLED: AtomicBool = AtomicBool::new(false);
static READ_ENV: Once = Once::new();
static TOTALS: Mutex<BTreeMap<&'static str, (u64, Duration)>> = Mutex::new(BTreeMap::new());

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether ops are being timed: `FLIX_PROFILE` set to anything but `0` or empty, or
/// [`set_enabled`].
pub fn enabled() -> bool {
    READ_ENV.call_once(|| {
        let on = std::env::var("FLIX_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
        if on {
            ENABLED.store(true, Ordering::Relaxed);
        }
    });
    ENABLED.load(Ordering::Relaxed)
}

/// Turns timing on or off from code (the environment variable is read first either way).
pub fn set_enabled(on: bool) {
    let _ = enabled();
    ENABLED.store(on, Ordering::Relaxed);
}

/// The timing of one op call; see the module documentation.
pub struct Scope {
    /// Whether this scope counted itself in the nesting depth (undone on drop, even if timing
    /// was switched off meanwhile).
    nested: bool,
    open: Option<(&'static str, Device, Instant)>,
}

/// Opens the scope of op `name` running on `device`.
pub fn scope(name: &'static str, device: &Device) -> Scope {
    if !enabled() {
        return Scope {
            nested: false,
            open: None,
        };
    }
    let outermost = DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get() == 1
    });
    if !outermost {
        return Scope {
            nested: true,
            open: None,
        };
    }
    // A failed synchronization shows up again, as an error, in the op itself.
    let _ = device.synchronize();
    Scope {
        nested: true,
        open: Some((name, device.clone(), Instant::now())),
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if self.nested {
            DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
        if let Some((name, device, start)) = self.open.take() {
            let _ = device.synchronize();
            let elapsed = start.elapsed();
            if let Ok(mut totals) = TOTALS.lock() {
                let entry = totals.entry(name).or_insert((0, Duration::ZERO));
                entry.0 += 1;
                entry.1 += elapsed;
            }
        }
    }
}

/// One op's totals since the last [`take`].
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    pub op: &'static str,
    pub calls: u64,
    pub total: Duration,
}

/// The totals gathered so far, largest first, and resets them.
pub fn take() -> Vec<OpTime> {
    let mut rows: Vec<OpTime> = match TOTALS.lock() {
        Ok(mut totals) => std::mem::take(&mut *totals)
            .into_iter()
            .map(|(op, (calls, total))| OpTime { op, calls, total })
            .collect(),
        Err(_) => Vec::new(),
    };
    rows.sort_by_key(|r| std::cmp::Reverse(r.total));
    rows
}

/// `rows` as a table: op, calls, total ms, ms per call, share of the sum.
pub fn format(rows: &[OpTime]) -> String {
    let sum: f64 = rows.iter().map(|r| r.total.as_secs_f64()).sum();
    let mut out = format!(
        "{:<28} {:>7} {:>11} {:>10} {:>6}\n",
        "op (FLIX_PROFILE)", "calls", "total ms", "ms/call", "share"
    );
    for r in rows {
        let ms = r.total.as_secs_f64() * 1e3;
        out += &format!(
            "{:<28} {:>7} {:>11.2} {:>10.4} {:>5.1}%\n",
            r.op,
            r.calls,
            ms,
            ms / r.calls.max(1) as f64,
            100.0 * r.total.as_secs_f64() / sum.max(f64::MIN_POSITIVE)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outermost_scopes_are_counted_once_each() {
        set_enabled(true);
        let _ = take();
        {
            let _outer = scope("outer", &Device::Cpu);
            let _inner = scope("inner", &Device::Cpu);
            std::thread::sleep(Duration::from_millis(2));
        }
        {
            let _outer = scope("outer", &Device::Cpu);
        }
        // Switching timing off inside a scope must not leave the nesting count behind.
        {
            let _open = scope("outer", &Device::Cpu);
            set_enabled(false);
        }
        set_enabled(true);
        {
            let _after = scope("after", &Device::Cpu);
        }
        set_enabled(false);
        let _ignored = scope("off", &Device::Cpu);
        // Other tests of this binary may run ops meanwhile: look at this test's names only.
        let rows = take();
        let outer = rows
            .iter()
            .find(|r| r.op == "outer")
            .expect("outer was timed");
        assert_eq!(outer.calls, 3);
        assert!(rows.iter().any(|r| r.op == "after"), "{rows:?}");
        assert!(outer.total >= Duration::from_millis(2));
        assert!(
            !rows.iter().any(|r| r.op == "inner" || r.op == "off"),
            "{rows:?}"
        );
        assert!(format(&rows).contains("outer"));
    }
}
