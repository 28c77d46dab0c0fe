//! Pacing of graceful handovers, so a replica that joins (or a placement that changes) never
//! makes every leader let go at once: the API server and the hooks see at most `batch`
//! handovers begin per `interval`, and a config that was just handed over waits before it is
//! handed over again (so a takeover that does not happen cannot make a config ping-pong).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

/// First pause after a handover of one config before it may be handed over again.
pub const COOL_OFF: Duration = Duration::from_secs(10);
/// Longest pause between two handovers of one config (the pause doubles each time).
pub const MAX_COOL_OFF: Duration = Duration::from_secs(300);
/// How long a manager must stay not preferred before it hands over (placement settles while a
/// replica's membership appears).
pub const SETTLE: Duration = Duration::from_millis(500);

/// Lets at most `batch` handovers begin per `interval`, replica-wide.
#[derive(Debug)]
pub struct Pacer {
    batch: u32,
    interval: Duration,
    window: Mutex<(Instant, u32)>,
}

impl Pacer {
    /// A pacer for `batch` handovers per `interval` (a batch of 0 is taken as 1).
    pub fn new(batch: u32, interval: Duration) -> Self {
        Self {
            batch: batch.max(1),
            interval,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Waits for a slot.
    pub async fn admit(&self) {
        loop {
            let wait_until = {
                let mut w = match self.window.lock() {
                    Ok(w) => w,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let now = Instant::now();
                if now >= w.0 + self.interval {
                    *w = (now, 0);
                }
                if w.1 < self.batch {
                    w.1 += 1;
                    return;
                }
                w.0 + self.interval
            };
            sleep_until(wait_until).await;
        }
    }
}

/// One config's cool-off between handovers.
#[derive(Debug)]
pub struct CoolOff(Mutex<(Option<Instant>, Duration)>);

impl Default for CoolOff {
    fn default() -> Self {
        Self(Mutex::new((None, COOL_OFF)))
    }
}

impl CoolOff {
    /// When the next handover may begin (None: now).
    pub fn until(&self) -> Option<Instant> {
        self.0.lock().ok().and_then(|g| g.0)
    }

    /// Records a handover: the next waits the current pause, which then doubles.
    pub fn record(&self) {
        if let Ok(mut g) = self.0.lock() {
            let pause = g.1;
            *g = (
                Some(Instant::now() + pause),
                std::cmp::min(pause * 2, MAX_COOL_OFF),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_most_batch_per_interval() {
        let p = Pacer::new(5, Duration::from_millis(500));
        let t0 = Instant::now();
        for _ in 0..5 {
            p.admit().await;
        }
        assert_eq!(Instant::now(), t0, "the first batch passes at once");
        p.admit().await;
        assert!(Instant::now() >= t0 + Duration::from_millis(500));
        for _ in 0..4 {
            p.admit().await;
        }
        assert!(Instant::now() < t0 + Duration::from_millis(1000));
        p.admit().await;
        assert!(Instant::now() >= t0 + Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn cool_off_doubles_up_to_the_cap() {
        let c = CoolOff::default();
        assert!(c.until().is_none());
        let t0 = Instant::now();
        c.record();
        assert_eq!(c.until(), Some(t0 + COOL_OFF));
        for _ in 0..10 {
            c.record();
        }
        assert_eq!(c.until(), Some(t0 + MAX_COOL_OFF));
    }
}
