//! Leader election on a Lease, interoperable with client-go (docs/design.md §3), with three things
//! client-go lacks: candidates *watch* the Lease (a released lease is taken at once, an expired
//! one at the moment it expires), the leader is *fenced* (its [`Fence`] expires on the
//! monotonic clock `renewDeadline` after the last successful renew was sent, strictly before
//! anyone may take over), and release re-reads the Lease before clearing it.
//!
//! Expiry is judged like client-go: by this candidate's monotonic clock, from the moment it
//! last saw the record's content change, with the `leaseDurationSeconds` the holder advertised.
//! Wall clocks are only written (acquireTime, renewTime), never compared.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use prometheus::{Histogram, IntCounter};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::fence::Fence;
use super::lease::{LeaseRecord, LeaseStore, StoreError};

/// client-go's jitter factor for the candidate's retry loop.
pub const JITTER_FACTOR: f64 = 1.2;
/// Longest `leaseDurationSeconds` honoured from a record; a record advertising more (tampered
/// or absurd) is treated as this, so a bogus value cannot lock a lease for years.
pub const MAX_ADVERTISED_LEASE: Duration = Duration::from_secs(3600);

/// A wall clock (for the timestamps written into the Lease only).
pub type WallClock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system wall clock.
pub fn system_wall_clock() -> WallClock {
    Arc::new(Timestamp::now)
}

/// A standby waits at most this many retry periods before taking a free lease.
pub const MAX_STANDBY_STEPS: u32 = 8;

/// The holderIdentity of one manager: `<replica>/<ManagerConfig uid>`. Two configs (or two
/// generations of one) never share it, so no code path can take another manager's Lease for
/// its own; the replica part is what `status.leader` shows.
pub fn holder_identity(replica: &str, config_uid: &str) -> String {
    format!("{replica}/{config_uid}")
}

/// The replica part of a holderIdentity (the text before the last `/`), or the whole holder
/// when it has none (a client-go peer, or a manager started without a config uid).
pub fn replica_of(holder: &str) -> &str {
    holder
        .rsplit_once('/')
        .map_or(holder, |(replica, _)| replica)
}

/// The ManagerConfig uid carried by a holderIdentity of ours, if any.
pub fn config_uid_of(holder: &str) -> Option<&str> {
    holder
        .rsplit_once('/')
        .map(|(_, uid)| uid)
        .filter(|u| !u.is_empty())
}

/// Settings of one elector.
#[derive(Clone)]
pub struct ElectorConfig {
    /// This candidate's identity (holderIdentity).
    pub identity: String,
    /// leaseDuration (whole seconds).
    pub lease_duration: Duration,
    /// renewDeadline.
    pub renew_deadline: Duration,
    /// retryPeriod.
    pub retry_period: Duration,
    /// Clear the Lease on graceful stop.
    pub release_on_cancel: bool,
    /// Wall clock for acquireTime/renewTime.
    pub wall_clock: WallClock,
}

impl ElectorConfig {
    /// Per-call timeout: max(1s, renewDeadline/2).
    pub fn call_timeout(&self) -> Duration {
        std::cmp::max(Duration::from_secs(1), self.renew_deadline / 2)
    }

    /// How long after the last successful renew the leader renews again:
    /// `max(retryPeriod, min(0.6 × renewDeadline, renewDeadline − 2 × retryPeriod))`, so at least
    /// two retries (one retryPeriod apart) fit before the fence expires at renewDeadline. At the
    /// defaults (15s/10s/2s) that is every 6 s instead of every 2 s. Followers — ours and
    /// client-go's — judge expiry only by `leaseDurationSeconds` since the last change they saw,
    /// and 6 s < 10 s < 15 s, so none of them can tell the difference.
    pub fn renew_interval(&self) -> Duration {
        let rd = self.renew_deadline;
        let rp = self.retry_period;
        let want = std::cmp::min(rd.mul_f64(0.6), rd.saturating_sub(rp * 2));
        std::cmp::max(rp, want)
    }
}

/// Where this candidate stands in the replicas' placement of its Lease, and how the manager
/// asks it to hand the Lease over. Without placement every candidate is preferred (rank 0).
#[derive(Clone, Default)]
pub struct Standing {
    /// 0: preferred leader; 1: the successor, which takes an *expired* lease at once; n: waits
    /// `n` (released) or `n − 1` (expired) retry periods before taking a free lease.
    pub rank: Option<watch::Receiver<u32>>,
    /// Each new value asks the leader to release the Lease now (its workers have drained) and
    /// go on as a standby.
    pub release: Option<watch::Receiver<u64>>,
}

/// Resolves when `rx` changes; never, once its sender is gone.
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) {
    loop {
        match rx {
            Some(r) => {
                if r.changed().await.is_ok() {
                    return;
                }
                *rx = None;
            }
            None => std::future::pending::<()>().await,
        }
    }
}

/// Optional metrics the elector records.
#[derive(Clone, Default)]
pub struct ElectionTelemetry {
    /// Successful renew latency.
    pub renew_duration: Option<Histogram>,
    /// Failed renew attempts.
    pub renew_failures: Option<IntCounter>,
}

/// What the elector last saw in the Lease (for status and logs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// The holder, if any.
    pub holder: Option<String>,
    /// leaseTransitions.
    pub transitions: Option<i32>,
}

/// The elector's role, published on a watch channel.
#[derive(Clone, Debug)]
pub enum Role {
    /// Not leading.
    Candidate,
    /// Leading under this fence.
    Leading(Fence),
}

impl Role {
    /// The fence, when leading.
    pub fn fence(&self) -> Option<&Fence> {
        match self {
            Role::Leading(f) => Some(f),
            Role::Candidate => None,
        }
    }
}

/// Errors that end an election (everything else is retried).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ElectionError {
    /// The Lease's namespace does not exist.
    #[error("{0}")]
    NamespaceNotFound(String),
    /// RBAC forbids reading or writing the Lease.
    #[error("{0}")]
    Forbidden(String),
    /// The Lease was not created by the operator and the config does not adopt it.
    #[error("{0}")]
    NotOwned(String),
}

impl ElectionError {
    fn from_store(e: &StoreError) -> Option<Self> {
        match e {
            StoreError::NamespaceNotFound(ns) => Some(ElectionError::NamespaceNotFound(format!(
                "lease namespace {ns:?} does not exist"
            ))),
            StoreError::Forbidden(m) => Some(ElectionError::Forbidden(m.clone())),
            StoreError::NotOwned(m) => Some(ElectionError::NotOwned(m.clone())),
            _ => None,
        }
    }
}

/// The next record a Lease watch delivers (`None`: the Lease was deleted). When the watch
/// closes it is dropped and this never resolves again, so callers fall back to polling.
async fn next_watched(
    sub: &mut Option<watch::Receiver<Option<LeaseRecord>>>,
) -> Option<LeaseRecord> {
    loop {
        match sub {
            Some(rx) => {
                if rx.changed().await.is_ok() {
                    return rx.borrow_and_update().clone();
                }
                *sub = None;
            }
            None => std::future::pending::<()>().await,
        }
    }
}

enum Attempt {
    Acquired(Fence),
    /// Held by another until this instant (on our clock), unless the record changes.
    Held(Instant),
    /// Lost a race; try again at once.
    Retry,
    /// Transient failure; retry after the retry period.
    Failed,
}

enum TermEnd {
    Lost(String),
    Stopped,
    /// The manager asked for the Lease to go to the preferred replica.
    HandedOver,
}

/// One candidate for one Lease.
pub struct Elector<S: LeaseStore> {
    store: Arc<S>,
    cfg: ElectorConfig,
    telemetry: ElectionTelemetry,
    /// Last record seen, and when (monotonic) its content last changed.
    observed: Option<(LeaseRecord, Instant)>,
    view: watch::Sender<LeaseView>,
    role: watch::Sender<Role>,
    /// True while we hold a term (decides whether an acquire is a transition).
    leading: bool,
    /// Set before stopping to release the lease even when `release_on_cancel` is off (a failed
    /// start releases what it acquired).
    force_release: Arc<std::sync::atomic::AtomicBool>,
    /// A write of ours to the Lease may have been applied without our seeing the answer (it
    /// timed out or the connection broke): we may hold the lease without knowing it. Cleared
    /// by the next successful read.
    unsure: bool,
    /// Placement of this Lease among the replicas.
    standing: Standing,
}

impl<S: LeaseStore> Elector<S> {
    /// A new candidate.
    pub fn new(store: Arc<S>, cfg: ElectorConfig, telemetry: ElectionTelemetry) -> Self {
        let (view, _) = watch::channel(LeaseView::default());
        let (role, _) = watch::channel(Role::Candidate);
        Self {
            store,
            cfg,
            telemetry,
            observed: None,
            view,
            role,
            leading: false,
            force_release: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            unsure: false,
            standing: Standing::default(),
        }
    }

    /// Campaigns according to `standing` (preferred at once, standbys later) instead of
    /// as a preferred candidate.
    pub fn with_standing(mut self, standing: Standing) -> Self {
        self.standing = standing;
        self
    }

    fn rank(&self) -> u32 {
        self.standing.rank.as_ref().map_or(0, |r| *r.borrow())
    }

    /// How long after a lease became free (released) or expired this candidate waits before
    /// taking it: nothing for the preferred replica, nothing for the successor of an expired
    /// holder, a retry period per rank otherwise — so the replica placement chose gets it
    /// first, and a standby still takes over if that replica does not.
    fn takeover_delay(&self, released: bool) -> Duration {
        let rank = self.rank();
        let steps = if released {
            rank
        } else {
            rank.saturating_sub(1)
        };
        self.cfg.retry_period * steps.min(MAX_STANDBY_STEPS)
    }

    /// When this candidate may next write to the Lease, judged from the last record it saw:
    /// `None` when it may act now (no record yet, or the record names it).
    fn allowed_at(&self) -> Option<Instant> {
        let (rec, at) = self.observed.as_ref()?;
        match rec.holder() {
            Some(h) if h == self.cfg.identity => None,
            Some(_) => Some(*at + Self::advertised(rec) + self.takeover_delay(false)),
            None => Some(*at + self.takeover_delay(true)),
        }
    }

    /// A switch that, when set before `stop` is cancelled, makes the elector release the lease
    /// on stop whatever `release_on_cancel` says.
    pub fn release_switch(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.force_release.clone()
    }

    /// Role changes (Candidate / Leading).
    pub fn roles(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// What the elector sees in the Lease.
    pub fn views(&self) -> watch::Receiver<LeaseView> {
        self.view.subscribe()
    }

    fn observe(&mut self, rec: LeaseRecord) {
        let now = Instant::now();
        let changed = match &self.observed {
            Some((old, _)) => !old.same_content(&rec),
            None => true,
        };
        let at = match &self.observed {
            Some((_, at)) if !changed => *at,
            _ => now,
        };
        if changed
            && let Some(holder) = rec.holder()
            && holder != self.cfg.identity
            && let Some(secs) = rec.lease_duration_seconds
            && (secs <= 0 || u64::try_from(secs).is_ok_and(|s| s > MAX_ADVERTISED_LEASE.as_secs()))
        {
            warn!(
                lease_holder = holder,
                lease_duration_seconds = secs,
                honoured_seconds = Self::advertised(&rec).as_secs(),
                "the lease advertises an out-of-range leaseDurationSeconds; honouring it clamped to 0..={}s",
                MAX_ADVERTISED_LEASE.as_secs()
            );
        }
        if changed {
            self.view.send_replace(LeaseView {
                holder: rec.holder().map(str::to_string),
                transitions: rec.lease_transitions,
            });
        }
        self.observed = Some((rec, at));
    }

    fn advertised(rec: &LeaseRecord) -> Duration {
        let secs = rec.lease_duration_seconds.unwrap_or(0).max(0) as u64;
        std::cmp::min(Duration::from_secs(secs), MAX_ADVERTISED_LEASE)
    }

    /// When the lease of the last holder we observed (not us) expires on our clock.
    fn foreign_expiry(&self) -> Option<Instant> {
        let (rec, at) = self.observed.as_ref()?;
        let holder = rec.holder()?;
        (holder != self.cfg.identity).then(|| *at + Self::advertised(rec))
    }

    fn jittered_retry(&self) -> Duration {
        let f: f64 = rand::rng().random_range(0.0..JITTER_FACTOR);
        self.cfg.retry_period.mul_f64(1.0 + f)
    }

    fn next_record(&self, old: Option<&LeaseRecord>, now: Timestamp) -> LeaseRecord {
        let secs = i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let mut rec = LeaseRecord {
            holder: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(secs),
            acquire_time: Some(now),
            renew_time: Some(now),
            lease_transitions: Some(0),
            resource_version: None,
        };
        if old.is_none()
            && let Some((seen, _)) = &self.observed
        {
            // Re-creating a Lease that was deleted: the fencing token must still move forward,
            // or a fencing-aware hook would reject the new leader (and accept the old one).
            rec.lease_transitions = Some(seen.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        if let Some(old) = old {
            rec.resource_version = old.resource_version.clone();
            let old_transitions = old.lease_transitions.unwrap_or(0);
            if self.leading && old.holder() == Some(self.cfg.identity.as_str()) {
                rec.acquire_time = old.acquire_time;
                rec.lease_transitions = Some(old_transitions);
            } else {
                // A new term: every change of holder, and every re-acquisition after a term of
                // ours ended, moves the fencing token forward.
                rec.lease_transitions = Some(old_transitions.saturating_add(1));
            }
        }
        rec
    }

    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let t = self.cfg.call_timeout();
        match timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(t)),
        }
    }

    fn acquired(&mut self, rec: LeaseRecord, sent: Instant) -> Fence {
        let token = i64::from(rec.lease_transitions.unwrap_or(0));
        self.observe(rec);
        self.leading = true;
        Fence::new(token, sent + self.cfg.renew_deadline)
    }

    async fn try_acquire(&mut self) -> Result<Attempt, ElectionError> {
        let current = match self.call(self.store.get()).await {
            Ok(rec) => rec,
            Err(StoreError::NotFound) => {
                // A deleted Lease is not a released one: the holder we last saw may still act
                // until its lease expires on our clock, so wait for that before creating it.
                if let Some(expires) = self.foreign_expiry() {
                    let allowed = expires + self.takeover_delay(false);
                    if Instant::now() < allowed {
                        return Ok(Attempt::Held(allowed));
                    }
                }
                let sent = Instant::now();
                let rec = self.next_record(None, (self.cfg.wall_clock)());
                return match self.call(self.store.create(&rec)).await {
                    Ok(created) => Ok(Attempt::Acquired(self.acquired(created, sent))),
                    Err(StoreError::AlreadyExists) => Ok(Attempt::Retry),
                    Err(e) => match ElectionError::from_store(&e) {
                        Some(fatal) => Err(fatal),
                        None => {
                            debug!(error = %e, "creating the lease failed");
                            self.unsure = true;
                            Ok(Attempt::Failed)
                        }
                    },
                };
            }
            Err(e) => {
                return match ElectionError::from_store(&e) {
                    Some(fatal) => Err(fatal),
                    None => {
                        debug!(error = %e, "reading the lease failed");
                        Ok(Attempt::Failed)
                    }
                };
            }
        };
        self.unsure = false;
        self.observe(current.clone());
        if let Some(allowed) = self.allowed_at()
            && Instant::now() < allowed
        {
            return Ok(Attempt::Held(allowed));
        }
        if let Some(holder) = current.holder()
            && holder != self.cfg.identity
        {
            info!(
                lease_holder = holder,
                "lease expired by observation; taking over"
            );
        }
        let sent = Instant::now();
        let rec = self.next_record(Some(&current), (self.cfg.wall_clock)());
        match self.call(self.store.update(&rec)).await {
            Ok(updated) => Ok(Attempt::Acquired(self.acquired(updated, sent))),
            Err(StoreError::Conflict) | Err(StoreError::NotFound) => Ok(Attempt::Retry),
            Err(e) => match ElectionError::from_store(&e) {
                Some(fatal) => Err(fatal),
                None => {
                    debug!(error = %e, "acquiring the lease failed");
                    self.unsure = true;
                    Ok(Attempt::Failed)
                }
            },
        }
    }

    /// Campaigns until leading (Some) or stopped (None).
    /// Campaigns until leading (Some) or stopped (None).
    ///
    /// A follower whose watch covers the Lease sends nothing while the holder renews: each
    /// watched renewal moves its wake-up to the new expiry. Without a watch (closed, or a
    /// Lease the narrowed watch does not see) it also polls every jittered retry period.
    async fn acquire(&mut self, stop: &CancellationToken) -> Result<Option<Fence>, ElectionError> {
        let mut sub = self.store.subscribe();
        let mut rank = self.standing.rank.clone();
        loop {
            if stop.is_cancelled() {
                return Ok(None);
            }
            let covered = |sub: &Option<_>, store: &S| sub.is_some() && store.watch_covers();
            let mut wake_at = match self.try_acquire().await? {
                Attempt::Acquired(f) => return Ok(Some(f)),
                Attempt::Retry => continue,
                Attempt::Held(allowed) if covered(&sub, &self.store) => allowed,
                Attempt::Held(allowed) => {
                    std::cmp::min(allowed, Instant::now() + self.jittered_retry())
                }
                Attempt::Failed => Instant::now() + self.jittered_retry(),
            };
            // Wait until we may act, the poll interval, or a watched change or a new placement
            // that lets us act earlier.
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(None),
                    _ = sleep_until(wake_at) => break,
                    seen = next_watched(&mut sub) => {
                        match seen {
                            // Deleted: try to create it (after the last holder's expiry).
                            None => break,
                            Some(rec) => self.observe(rec),
                        }
                    }
                    _ = changed(&mut rank) => {}
                }
                // A renewal resets our observation clock; a release or a better rank brings
                // the moment we may act forward.
                match self.allowed_at() {
                    None => break,
                    Some(t) if t <= Instant::now() => break,
                    Some(t) if covered(&sub, &self.store) => wake_at = t,
                    Some(t) => wake_at = std::cmp::min(t, wake_at),
                }
            }
        }
    }

    /// Renews until the term ends.
    async fn hold(&mut self, fence: &Fence, stop: &CancellationToken) -> TermEnd {
        let mut sub = self.store.subscribe();
        let me = self.cfg.identity.clone();
        let mut releases = self.standing.release.clone();
        if let Some(r) = releases.as_mut() {
            r.borrow_and_update();
        }
        let mut immediate = false;
        let mut failed_last = false;
        loop {
            if !immediate {
                let next = if failed_last {
                    Instant::now() + self.cfg.retry_period
                } else {
                    let last_sent = fence.deadline() - self.cfg.renew_deadline;
                    std::cmp::max(Instant::now(), last_sent + self.cfg.renew_interval())
                };
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return TermEnd::Stopped,
                        _ = changed(&mut releases) => return TermEnd::HandedOver,
                        _ = sleep_until(fence.deadline()) => {
                            return TermEnd::Lost("no successful renew within renewDeadline".into())
                        }
                        _ = sleep_until(next) => break,
                        seen = next_watched(&mut sub) => {
                            // A watch event can be stale (sent before our own write); confirm
                            // with a read before giving up the term.
                            if seen.as_ref().and_then(LeaseRecord::holder) != Some(me.as_str()) {
                                match self.call(self.store.get()).await {
                                    Ok(rec) if rec.holder() == Some(me.as_str()) => {}
                                    Ok(rec) => {
                                        let who = rec.holder().unwrap_or("nobody").to_string();
                                        self.observe(rec);
                                        return TermEnd::Lost(format!("the lease is now held by {who}"));
                                    }
                                    Err(StoreError::NotFound) => {
                                        return TermEnd::Lost("the lease was deleted".into());
                                    }
                                    Err(e) => self.renew_failed(&e),
                                }
                            }
                        }
                    }
                }
            }
            immediate = false;
            // Pause detection: a process that slept through its deadline steps down before
            // doing anything else.
            if fence.check().is_err() {
                return TermEnd::Lost(
                    "renewDeadline passed (process paused or renewals failing)".into(),
                );
            }
            let Some((current, _)) = self.observed.clone() else {
                return TermEnd::Lost("no lease observed".into());
            };
            let sent = Instant::now();
            let rec = self.next_record(Some(&current), (self.cfg.wall_clock)());
            let outcome = tokio::select! {
                _ = stop.cancelled() => return TermEnd::Stopped,
                _ = sleep_until(fence.deadline()) => {
                    return TermEnd::Lost("no successful renew within renewDeadline".into())
                }
                r = self.call(self.store.update(&rec)) => r,
            };
            failed_last = outcome.is_err();
            match outcome {
                Ok(updated) => {
                    if let Some(h) = &self.telemetry.renew_duration {
                        h.observe(sent.elapsed().as_secs_f64());
                    }
                    self.observe(updated);
                    fence.extend(sent + self.cfg.renew_deadline);
                }
                Err(StoreError::Conflict) => {
                    // Someone wrote the Lease: see who.
                    match self.call(self.store.get()).await {
                        Ok(rec) if rec.holder() == Some(me.as_str()) => {
                            self.observe(rec);
                            immediate = true;
                        }
                        Ok(rec) => {
                            let who = rec.holder().unwrap_or("nobody").to_string();
                            self.observe(rec);
                            return TermEnd::Lost(format!("the lease is now held by {who}"));
                        }
                        Err(StoreError::NotFound) => {
                            return TermEnd::Lost("the lease was deleted".into());
                        }
                        Err(e) => {
                            self.renew_failed(&e);
                        }
                    }
                }
                Err(StoreError::NotFound) => return TermEnd::Lost("the lease was deleted".into()),
                Err(e) => self.renew_failed(&e),
            }
        }
    }

    fn renew_failed(&self, e: &StoreError) {
        if let Some(c) = &self.telemetry.renew_failures {
            c.inc();
        }
        warn!(error = %e, "renewing the lease failed; retrying until renewDeadline");
    }

    /// Clears the Lease like client-go (holder "", leaseDurationSeconds 1, times now,
    /// transitions kept), but only after re-reading it and seeing ourselves still the holder.
    /// Transient failures (an overloaded or restarting API server) are retried until
    /// renewDeadline; giving up is logged, and the lease then merely expires.
    async fn release(&mut self) {
        let me = self.cfg.identity.clone();
        let give_up = Instant::now() + self.cfg.renew_deadline;
        loop {
            let failure = match self.call(self.store.get()).await {
                Ok(current) => {
                    if current.holder() != Some(me.as_str()) {
                        debug!("release: lease no longer ours; nothing to clear");
                        return;
                    }
                    let now = (self.cfg.wall_clock)();
                    let rec = LeaseRecord {
                        holder: Some(String::new()),
                        lease_duration_seconds: Some(1),
                        acquire_time: Some(now),
                        renew_time: Some(now),
                        lease_transitions: current.lease_transitions,
                        resource_version: current.resource_version.clone(),
                    };
                    match self.call(self.store.update(&rec)).await {
                        Ok(updated) => {
                            info!("lease released");
                            self.observe(updated);
                            return;
                        }
                        Err(StoreError::NotFound) => return,
                        Err(e) => e,
                    }
                }
                Err(StoreError::NotFound) => return,
                Err(e) => e,
            };
            let now = Instant::now();
            if now >= give_up {
                warn!(error = %failure, "could not release the lease within renewDeadline; it stays held until it expires");
                return;
            }
            if failure != StoreError::Conflict {
                debug!(error = %failure, "releasing the lease failed; retrying");
                sleep(std::cmp::min(self.cfg.retry_period, give_up - now)).await;
            }
        }
    }

    /// Runs the election until `stop` is cancelled (then releases if configured) or a fatal
    /// error. Losing the lease never ends it: the elector becomes a candidate again.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), ElectionError> {
        loop {
            let fence = match self.acquire(&stop).await {
                Ok(Some(f)) => f,
                Ok(None) => {
                    self.release_if_maybe_ours().await;
                    return Ok(());
                }
                Err(e) => {
                    self.role.send_replace(Role::Candidate);
                    return Err(e);
                }
            };
            info!(identity = %self.cfg.identity, token = fence.token(), "acquired the lease");
            self.role.send_replace(Role::Leading(fence.clone()));
            let end = self.hold(&fence, &stop).await;
            fence.revoke();
            self.leading = false;
            self.role.send_replace(Role::Candidate);
            match end {
                TermEnd::Lost(why) => {
                    warn!(identity = %self.cfg.identity, reason = %why, "lost leadership; campaigning again");
                }
                TermEnd::HandedOver => {
                    // The workers have drained: clear the Lease for the preferred replica and
                    // go on as a standby (which waits before taking a free lease).
                    info!(identity = %self.cfg.identity, "handing the lease over");
                    self.release().await;
                    continue;
                }
                TermEnd::Stopped => {
                    if self.cfg.release_on_cancel
                        || self
                            .force_release
                            .load(std::sync::atomic::Ordering::Acquire)
                    {
                        self.release().await;
                    }
                    return Ok(());
                }
            }
            // Do not hammer the store right after losing.
            tokio::select! {
                _ = stop.cancelled() => {
                    self.release_if_maybe_ours().await;
                    return Ok(());
                }
                _ = sleep(self.cfg.retry_period) => {}
            }
        }
    }

    /// Stopping while not leading: release anyway (when configured) if the Lease may be ours
    /// after all — our last acquisition attempt got no answer but may have been applied, or
    /// the last record we saw names us. Otherwise a stopped manager (its config deleted) could
    /// leave a Lease held that nobody will ever clear. `release` re-reads first, so this costs
    /// one read and clears nothing that is not ours.
    async fn release_if_maybe_ours(&mut self) {
        let configured = self.cfg.release_on_cancel
            || self
                .force_release
                .load(std::sync::atomic::Ordering::Acquire);
        let named = self
            .observed
            .as_ref()
            .and_then(|(r, _)| r.holder())
            .is_some_and(|h| h == self.cfg.identity);
        if configured && (self.unsure || named) {
            self.release().await;
        }
    }

    /// Stops leading for a moment is not possible; to give up the lease, cancel `stop` in
    /// [`Elector::run`]. This helper exists for tests: the current observation.
    pub fn observed(&self) -> Option<&LeaseRecord> {
        self.observed.as_ref().map(|(r, _)| r)
    }
}

#[cfg(test)]
mod tests;
