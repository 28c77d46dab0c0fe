//! Per-object retry backoff for failed hook calls.
//!
//! Each object that fails gets its own exponential delay (`base`, doubling, capped at `cap`, plus
//! up to 10 % jitter: [`crate::backoff`]), independent of every other object; a success forgets
//! the object, so its next failure starts again at `base`. The map only holds objects that are
//! currently failing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay after a failure.
pub const DEFAULT_BASE: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const DEFAULT_CAP: Duration = Duration::from_secs(300);

/// The delay before retry number `attempt` (1-based), before jitter: `base * 2^(attempt-1)`,
/// at most `cap`.
pub use crate::backoff::exponential as delay_for;

/// Consecutive-failure counts per object key.
#[derive(Debug)]
pub struct RetryBackoff {
    base: Duration,
    cap: Duration,
    attempts: Mutex<HashMap<String, u32>>,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self::new(DEFAULT_BASE, DEFAULT_CAP)
    }
}

impl RetryBackoff {
    /// A backoff starting at `base`, doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.attempts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one more consecutive failure of `key`; returns the failure count and the delay
    /// before the retry (jittered).
    pub fn failure(&self, key: &str) -> (u32, Duration) {
        let mut map = self.map();
        let n = map.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        (*n, crate::backoff::delay(self.base, self.cap, *n))
    }

    /// Forgets `key` after a success (or when the object is gone).
    pub fn reset(&self, key: &str) {
        self.map().remove(key);
    }

    /// Keeps only the keys for which `keep` is true (drops objects that no longer exist).
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.map().retain(|k, _| keep(k));
    }

    /// Consecutive failures currently recorded for `key`.
    pub fn attempts(&self, key: &str) -> u32 {
        self.map().get(key).copied().unwrap_or(0)
    }

    /// Number of objects currently failing.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// True when no object is failing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(attempt, delay)` is `(n, expected + jitter)`.
    fn is(got: (u32, Duration), n: u32, expected: Duration) -> bool {
        got.0 == n && got.1 >= expected && got.1 < expected.mul_f64(1.0 + crate::backoff::JITTER)
    }

    #[test]
    fn per_object_counts_reset_on_success() {
        let r = RetryBackoff::default();
        assert!(is(r.failure("ns/a"), 1, Duration::from_millis(500)));
        assert!(is(r.failure("ns/a"), 2, Duration::from_secs(1)));
        assert!(is(r.failure("ns/b"), 1, Duration::from_millis(500)));
        assert!(is(r.failure("ns/a"), 3, Duration::from_secs(2)));
        r.reset("ns/a");
        assert_eq!(r.attempts("ns/a"), 0);
        assert!(is(r.failure("ns/a"), 1, Duration::from_millis(500)));
        assert_eq!(r.len(), 2);
        r.retain(|k| k != "ns/b");
        assert_eq!(r.attempts("ns/b"), 0);
        assert_eq!(r.len(), 1);
    }
}
