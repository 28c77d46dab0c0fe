//! Capped exponential backoff with jitter: one rule for every retry the operator schedules — a
//! ManagerConfig's failed start (the controller), a worker's failed hook call (per object) and a
//! worker's watch restart.
//!
//! The jitter follows client-go's `wait.Jitter`: a delay grows by a random fraction of itself,
//! up to [`JITTER`], and never shrinks, so a retry never comes earlier than the schedule says,
//! while many configs or objects that failed together (an API server restart, a hook outage)
//! spread their retries instead of returning in lockstep.

use std::time::Duration;

/// Largest jitter, as a fraction of the delay.
pub const JITTER: f64 = 0.1;

/// `base × 2^(attempt−1)`, at most `cap` (`attempt` is 1-based; 0 counts as 1). Saturates
/// instead of overflowing for absurd attempt counts.
pub fn exponential(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(63);
    let factor = 1u64 << exp;
    let nanos = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(nanos.saturating_mul(factor)).min(cap)
}

/// `d` plus a uniformly random amount in `[0, JITTER × d)`.
pub fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + rand::random::<f64>() * JITTER)
}

/// [`exponential`], then [`jittered`]: the delay before retry number `attempt`.
pub fn delay(base: Duration, cap: Duration, attempt: u32) -> Duration {
    jittered(exponential(base, cap, attempt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_base_up_to_cap() {
        let b = Duration::from_millis(500);
        let cap = Duration::from_secs(300);
        let seq: Vec<Duration> = (1..=12).map(|a| exponential(b, cap, a)).collect();
        assert_eq!(seq[0], Duration::from_millis(500));
        assert_eq!(seq[1], Duration::from_secs(1));
        assert_eq!(seq[2], Duration::from_secs(2));
        assert_eq!(seq[3], Duration::from_secs(4));
        assert_eq!(seq[9], Duration::from_secs(256));
        assert_eq!(seq[10], cap);
        assert_eq!(seq[11], cap);
        assert_eq!(exponential(b, cap, u32::MAX), cap);
        assert_eq!(exponential(b, cap, 0), b);
    }

    #[test]
    fn jitter_only_lengthens_and_by_at_most_ten_percent() {
        let d = Duration::from_secs(10);
        let samples: Vec<Duration> = (0..1000).map(|_| jittered(d)).collect();
        assert!(
            samples
                .iter()
                .all(|s| *s >= d && *s < d.mul_f64(1.0 + JITTER))
        );
        // Not a constant: the point is to spread retries.
        assert!(samples.iter().any(|s| *s != samples[0]));
        let max = Duration::from_secs(60);
        assert!(delay(Duration::from_secs(1), max, 40) < max.mul_f64(1.0 + JITTER));
    }
}
