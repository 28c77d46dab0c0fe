//! Fencing: the token that says "this process may act as leader, until this instant".
//!
//! A [`Fence`] is handed to workers when leadership is acquired. It is valid while it has not
//! been revoked *and* the monotonic clock is before its deadline (last successful renew sent +
//! `renewDeadline`, always earlier than the moment any other candidate may take the lease).
//! Workers call [`Fence::check`] right before every side effect, so a process that was paused
//! (SIGSTOP, a long stall) finds its fence expired on the clock the moment it resumes, even
//! before the elector's timer has had a chance to run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Inner {
    token: i64,
    base: Instant,
    /// Deadline as nanoseconds after `base`.
    deadline_nanos: AtomicU64,
    revoked: CancellationToken,
}

/// The fencing token of one leadership term.
#[derive(Clone, Debug)]
pub struct Fence(Arc<Inner>);

/// Why a fence no longer allows work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// Leadership was given up or lost.
    #[error("leadership term {0} has ended")]
    Revoked(i64),
    /// The renew deadline passed on the monotonic clock (e.g. after a process pause).
    #[error("leadership term {0} expired: no successful renew within renewDeadline")]
    Expired(i64),
}

impl Fence {
    /// A fence for term `token`, valid until `deadline`.
    pub fn new(token: i64, deadline: Instant) -> Self {
        let base = Instant::now();
        let f = Fence(Arc::new(Inner {
            token,
            base,
            deadline_nanos: AtomicU64::new(0),
            revoked: CancellationToken::new(),
        }));
        f.extend(deadline);
        f
    }

    /// The fencing token (the Lease's `leaseTransitions` at acquisition).
    pub fn token(&self) -> i64 {
        self.0.token
    }

    /// The instant after which the fence is invalid.
    pub fn deadline(&self) -> Instant {
        self.0.base + std::time::Duration::from_nanos(self.0.deadline_nanos.load(Ordering::Acquire))
    }

    /// Moves the deadline later (never earlier) after a successful renew.
    pub fn extend(&self, deadline: Instant) {
        let nanos = u64::try_from(deadline.saturating_duration_since(self.0.base).as_nanos())
            .unwrap_or(u64::MAX);
        self.0.deadline_nanos.fetch_max(nanos, Ordering::AcqRel);
    }

    /// Ends the term: every holder sees it invalid from now on.
    pub fn revoke(&self) {
        self.0.revoked.cancel();
    }

    /// Ok while this process may act as leader.
    pub fn check(&self) -> Result<i64, FenceError> {
        if self.0.revoked.is_cancelled() {
            return Err(FenceError::Revoked(self.0.token));
        }
        if Instant::now() >= self.deadline() {
            return Err(FenceError::Expired(self.0.token));
        }
        Ok(self.0.token)
    }

    /// True once [`Fence::revoke`] was called (the term is over even if the deadline is not).
    pub fn is_revoked(&self) -> bool {
        self.0.revoked.is_cancelled()
    }

    /// True while [`Fence::check`] is Ok.
    pub fn is_valid(&self) -> bool {
        self.check().is_ok()
    }

    /// Resolves when the term is revoked (workers select on it to stop).
    pub async fn revoked(&self) {
        self.0.revoked.cancelled().await;
    }

    /// A cancellation token cancelled when the term is revoked.
    pub fn revoked_token(&self) -> CancellationToken {
        self.0.revoked.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn valid_until_deadline_then_expired() {
        let f = Fence::new(7, Instant::now() + Duration::from_secs(2));
        assert_eq!(f.check(), Ok(7));
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(f.is_valid());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(f.check(), Err(FenceError::Expired(7)));
        f.extend(Instant::now() + Duration::from_secs(1));
        assert!(f.is_valid());
        // Extending to an earlier instant never shortens.
        f.extend(Instant::now());
        assert!(f.is_valid());
        f.revoke();
        assert_eq!(f.check(), Err(FenceError::Revoked(7)));
    }
}
