//! The manager: one per ManagerConfig (docs/design.md §3).
//!
//! [`Manager::start`] is the contract controller-runtime breaks: it returns `Result`, and every
//! error raised while starting — validation, the Lease namespace missing, RBAC on the Lease, a
//! runnable's preflight, a timeout — reaches the caller within a bounded time as a typed
//! [`Failure`] with a stable reason. Nothing is spawned until every preflight has passed, so a
//! failed start leaves nothing behind by construction.
//!
//! After a successful start the manager runs as one supervised task that owns everything
//! else: the Lease watch, the elector, and, while leading, one task per runnable in a
//! `JoinSet`. Errors after start (workers that do not come up within `startupTimeout`, RBAC
//! revoked, a worker failing) end the manager: workers are stopped, the lease is released, all
//! tasks are joined, and the state stream says `Failed` with the reason. Losing the lease only
//! stops the workers; the manager campaigns again and never exits the process.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use super::election::{
    ElectionError, ElectionTelemetry, Elector, ElectorConfig, LeaseView, Role, Standing, WallClock,
    holder_identity,
};
use super::fence::Fence;
use super::handover::{CoolOff, Pacer, SETTLE};
use super::lease::{LeaseRecord, LeaseStore, StoreError};
use crate::api::ManagerConfig;
use crate::api::conditions::StartupFailure;
use crate::validation::{self, HookPolicy, ResolvedConfig};

/// A startup (or later) failure with its stable reason and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    /// Stable reason (condition reason, Event reason, metric label).
    pub reason: StartupFailure,
    /// What happened and what to do.
    pub message: String,
}

impl Failure {
    /// Builds a failure.
    pub fn new(reason: StartupFailure, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// What a runnable gets for one leadership term.
pub struct RunContext {
    /// The term's fence: check it right before every side effect.
    pub fence: Fence,
    /// Cancelled when the runnable must stop (term over, shutdown, failure elsewhere).
    pub stop: CancellationToken,
    ready: Option<oneshot::Sender<()>>,
}

impl RunContext {
    /// Says "running" (e.g. initial list synced). The term counts as started once every
    /// runnable has said so; until then `startupTimeout` runs.
    pub fn ready(&mut self) {
        if let Some(tx) = self.ready.take() {
            let _ = tx.send(());
        }
    }
}

/// Something that runs while the manager leads: the ManagerConfig's workers.
pub trait Runnable: Send + Sync + 'static {
    /// Name, for logs and errors.
    fn name(&self) -> String;
    /// Checks run once at start, before anything is spawned (e.g. impersonation allowed, watch
    /// target served). Must be bounded; `start` also bounds it by `startupTimeout`.
    fn preflight(&self) -> BoxFuture<'static, Result<(), Failure>> {
        Box::pin(async { Ok(()) })
    }
    /// Runs one term until `ctx.stop` is cancelled, calling `ctx.ready()` once running.
    fn run(&self, ctx: RunContext) -> BoxFuture<'static, Result<(), Failure>>;
}

/// The manager's lifecycle, published on a watch channel for the reconciler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagerState {
    /// Campaigning; another replica (or nobody yet) leads.
    Candidate,
    /// Leadership acquired with this fencing token.
    Leading {
        /// Fencing token.
        token: i64,
    },
    /// Workers starting.
    Starting {
        /// Fencing token.
        token: i64,
    },
    /// Every worker running.
    Running {
        /// Fencing token.
        token: i64,
    },
    /// Workers stopping.
    Stopping,
    /// Ended with this failure; everything it spawned is gone.
    Failed(Failure),
    /// Shut down on request.
    Stopped,
}

/// Metrics a manager records.
#[derive(Clone, Default)]
pub struct ManagerTelemetry {
    /// Lease renewal metrics.
    pub election: ElectionTelemetry,
    /// Global live-task gauge (`manager_operator_tasks`).
    pub tasks: Option<IntGauge>,
    /// Elected → all workers running.
    pub startup_duration: Option<Histogram>,
}

/// Where a manager's config is placed among the replicas (see `crate::placement`).
#[derive(Clone, Default)]
pub struct Placement {
    /// This replica's rank for the config (0: preferred). None: always preferred, never hands
    /// over (placement off).
    pub rank: Option<watch::Receiver<u32>>,
    /// Paces handovers replica-wide.
    pub pacer: Option<Arc<Pacer>>,
    /// Counts handovers this manager starts because placement moved it
    /// (`handovers_total{reason="rebalance"}`).
    pub handovers: Option<IntCounter>,
}

/// What a manager needs from its surroundings: where its Lease lives and what it runs.
pub trait ManagerEnv {
    /// The Lease store type.
    type Store: LeaseStore;
    /// The Lease store for this config.
    fn lease_store(&self, cfg: &ResolvedConfig) -> Arc<Self::Store>;
    /// The runnables for this config.
    fn runnables(&self, cfg: &ResolvedConfig) -> Result<Vec<Arc<dyn Runnable>>, Failure>;
    /// Metrics for this config.
    fn telemetry(&self, _cfg: &ResolvedConfig) -> ManagerTelemetry {
        ManagerTelemetry::default()
    }
    /// Placement of this config among the replicas (default: none, always preferred).
    fn placement(&self, _cfg: &ResolvedConfig) -> Placement {
        Placement::default()
    }
}

/// Identity and clocks of the process.
#[derive(Clone)]
pub struct ManagerIdentity {
    /// holderIdentity written into Leases.
    pub identity: String,
    /// Wall clock for Lease timestamps.
    pub wall_clock: WallClock,
}

struct TaskGuard {
    live: Arc<AtomicI64>,
    gauge: Option<IntGauge>,
}

impl TaskGuard {
    fn new(live: &Arc<AtomicI64>, gauge: &Option<IntGauge>) -> Self {
        live.fetch_add(1, Ordering::AcqRel);
        if let Some(g) = gauge {
            g.inc();
        }
        Self {
            live: live.clone(),
            gauge: gauge.clone(),
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = &self.gauge {
            g.dec();
        }
    }
}

/// Wraps a future so it is counted as a live task from now until it completes or is dropped.
fn counted<F: Future + Send + 'static>(
    live: &Arc<AtomicI64>,
    gauge: &Option<IntGauge>,
    fut: F,
) -> impl Future<Output = F::Output> + Send + 'static
where
    F::Output: Send,
{
    let guard = TaskGuard::new(live, gauge);
    async move {
        let _guard = guard;
        fut.await
    }
}

/// A running manager. Call [`Manager::shutdown`] to stop it gracefully; dropping it aborts
/// its tasks without releasing the lease.
pub struct Manager {
    state: watch::Receiver<ManagerState>,
    view: watch::Receiver<LeaseView>,
    roles: watch::Receiver<Role>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    live: Arc<AtomicI64>,
    config: ResolvedConfig,
}

fn election_failure(e: ElectionError, cfg: &ResolvedConfig) -> Failure {
    let ns = &cfg.election.lease_namespace;
    match e {
        ElectionError::NamespaceNotFound(m) => {
            Failure::new(StartupFailure::LeaseNamespaceNotFound, m)
        }
        ElectionError::Forbidden(m) => Failure::new(
            StartupFailure::LeaseForbidden,
            format!(
                "the operator may not use Lease {ns}/{}: {m}",
                cfg.election.lease_name
            ),
        ),
        ElectionError::NotOwned(m) => not_owned(&m),
    }
}

/// The `LeaseNotOwned` failure for `cfg`'s Lease.
fn not_owned(detail: &str) -> Failure {
    Failure::new(
        StartupFailure::LeaseNotOwned,
        format!(
            "spec.leaderElection.leaseName: {detail}; the operator takes over a Lease it did not \
             create only when spec.leaderElection.adoptExistingLease is true (the Lease was left \
             untouched)"
        ),
    )
}

fn store_failure(e: StoreError, cfg: &ResolvedConfig) -> Failure {
    match e {
        StoreError::NamespaceNotFound(ns) => election_failure(
            ElectionError::NamespaceNotFound(format!("lease namespace {ns:?} does not exist")),
            cfg,
        ),
        StoreError::Forbidden(m) => election_failure(ElectionError::Forbidden(m), cfg),
        StoreError::NotOwned(m) => not_owned(&m),
        other => Failure::new(
            StartupFailure::ApiUnavailable,
            format!(
                "checking Lease {}/{}: {other}",
                cfg.election.lease_namespace, cfg.election.lease_name
            ),
        ),
    }
}

/// Checks that the Lease can be read, and created when absent (as a free lease, holder empty),
/// so a missing namespace or missing RBAC is reported by `start` itself.
async fn lease_preflight<S: LeaseStore>(
    store: &S,
    cfg: &ResolvedConfig,
    call_timeout: Duration,
) -> Result<(), Failure> {
    let bounded = |r: Result<Result<LeaseRecord, StoreError>, tokio::time::error::Elapsed>| match r
    {
        Ok(r) => r,
        Err(_) => Err(StoreError::Timeout(call_timeout)),
    };
    match bounded(timeout(call_timeout, store.get()).await) {
        Ok(_) if store.foreign() && !cfg.election.adopt_existing_lease => Err(not_owned(&format!(
            "Lease {}/{} exists and was not created by manager-operator (no \
                 app.kubernetes.io/managed-by=manager-operator label)",
            cfg.election.lease_namespace, cfg.election.lease_name
        ))),
        Ok(_) => Ok(()),
        Err(StoreError::NotFound) => {
            let free = LeaseRecord::default();
            match bounded(timeout(call_timeout, store.create(&free)).await) {
                Ok(_) | Err(StoreError::AlreadyExists) => Ok(()),
                Err(e) => Err(store_failure(e, cfg)),
            }
        }
        Err(e) => Err(store_failure(e, cfg)),
    }
}

impl Manager {
    /// Validates `mc` with the shared rules, runs every preflight, then starts campaigning.
    /// Returns within `startupTimeout` plus a few API-call timeouts, whatever happens.
    pub async fn start<E: ManagerEnv>(
        mc: &ManagerConfig,
        policy: &HookPolicy,
        me: &ManagerIdentity,
        env: &E,
    ) -> Result<Manager, Failure> {
        let cfg = validation::resolve(mc, policy).map_err(|v| {
            // A spec whose only fault is a hook URL the policy refuses gets its own reason.
            let reason = if v.0.iter().all(|x| x.rule == validation::Rule::HookUrl) {
                StartupFailure::HookRejected
            } else {
                StartupFailure::InvalidSpec
            };
            Failure::new(reason, v.to_string())
        })?;
        // The Lease names this manager, not only this replica: `<replica>/<config uid>`.
        let me = match mc.metadata.uid.as_deref().filter(|u| !u.is_empty()) {
            Some(uid) => ManagerIdentity {
                identity: holder_identity(&me.identity, uid),
                wall_clock: me.wall_clock.clone(),
            },
            None => me.clone(),
        };
        Self::start_resolved(cfg, &me, env).await
    }

    /// [`Manager::start`] for an already validated config.
    pub async fn start_resolved<E: ManagerEnv>(
        cfg: ResolvedConfig,
        me: &ManagerIdentity,
        env: &E,
    ) -> Result<Manager, Failure> {
        let ecfg = ElectorConfig {
            identity: me.identity.clone(),
            lease_duration: cfg.election.lease_duration,
            renew_deadline: cfg.election.renew_deadline,
            retry_period: cfg.election.retry_period,
            release_on_cancel: cfg.election.release_on_cancel,
            wall_clock: me.wall_clock.clone(),
        };
        let store = env.lease_store(&cfg);
        let runnables = env.runnables(&cfg)?;
        let telemetry = env.telemetry(&cfg);

        // Preflights: nothing is spawned yet, so returning early leaks nothing.
        lease_preflight(&*store, &cfg, ecfg.call_timeout()).await?;
        let checks = futures::future::join_all(runnables.iter().map(|r| r.preflight()));
        match timeout(cfg.startup_timeout, checks).await {
            Err(_) => {
                return Err(Failure::new(
                    StartupFailure::StartupTimeout,
                    format!(
                        "preflight checks did not finish within startupTimeout ({:?})",
                        cfg.startup_timeout
                    ),
                ));
            }
            Ok(results) => {
                if let Some(Err(f)) = results.into_iter().find(Result::is_err) {
                    return Err(f);
                }
            }
        }

        let placement = env.placement(&cfg);
        let (release_tx, release_rx) = watch::channel(0u64);
        let elector =
            Elector::new(store.clone(), ecfg, telemetry.election.clone()).with_standing(Standing {
                rank: placement.rank.clone(),
                release: Some(release_rx),
            });
        let (state_tx, state) = watch::channel(ManagerState::Candidate);
        let view = elector.views();
        let roles = elector.roles();
        let shutdown = CancellationToken::new();
        let live = Arc::new(AtomicI64::new(0));

        let supervisor = Supervisor {
            cfg: cfg.clone(),
            runnables,
            state: state_tx,
            roles: elector.roles(),
            shutdown: shutdown.clone(),
            live: live.clone(),
            telemetry: telemetry.clone(),
            placement,
            release: release_tx,
            cool_off: CoolOff::default(),
        };
        let background = store.background();
        // Every log line of the elector and the supervisor names the config. The field is
        // `config`, not `name`: in JSON the span's own name is `name` (docs/logging.md).
        let span = tracing::info_span!("manager", namespace = %cfg.namespace, config = %cfg.name);
        let fut = supervisor.run(elector, background).instrument(span);
        let task = tokio::spawn(counted(&live, &telemetry.tasks, fut));
        info!(namespace = %cfg.namespace, name = %cfg.name, identity = %me.identity, "manager started; campaigning");
        Ok(Manager {
            state,
            view,
            roles,
            shutdown,
            task: Some(task),
            live,
            config: cfg,
        })
    }

    /// The lifecycle stream.
    pub fn state(&self) -> watch::Receiver<ManagerState> {
        self.state.clone()
    }

    /// What this manager sees in its Lease (holder, transitions).
    pub fn lease_view(&self) -> watch::Receiver<LeaseView> {
        self.view.clone()
    }

    /// The validated config this manager runs.
    pub fn config(&self) -> &ResolvedConfig {
        &self.config
    }

    /// Live tasks owned by this manager (0 once it has ended).
    pub fn live_tasks(&self) -> i64 {
        self.live.load(Ordering::Acquire)
    }

    /// Leadership health (like client-go's healthz adaptor): false when this process believes
    /// it leads but has not renewed for longer than leaseDuration.
    pub fn leader_healthy(&self) -> bool {
        match self.roles.borrow().fence() {
            None => true,
            Some(f) => {
                let last_renew = f.deadline() - self.config.election.renew_deadline;
                Instant::now() <= last_renew + self.config.election.lease_duration
            }
        }
    }

    /// Resolves when the manager has ended (failed, or shut down) and returns its final state.
    pub async fn ended(&mut self) -> ManagerState {
        let mut rx = self.state.clone();
        loop {
            let s = rx.borrow_and_update().clone();
            if matches!(s, ManagerState::Failed(_) | ManagerState::Stopped) {
                if let Some(t) = self.task.take() {
                    let _ = t.await;
                }
                return s;
            }
            if rx.changed().await.is_err() {
                return self.state.borrow().clone();
            }
        }
    }

    /// Stops gracefully: workers stop (within gracefulShutdownTimeout), then the lease is
    /// released if configured; every task is joined. Bounded: past the bound, tasks are
    /// aborted. Returns the final state.
    pub async fn shutdown(mut self) -> ManagerState {
        self.shutdown.cancel();
        let bound = self.config.graceful_shutdown_timeout
            + self.config.election.renew_deadline * 2
            + Duration::from_secs(5);
        if let Some(mut task) = self.task.take()
            && timeout(bound, &mut task).await.is_err()
        {
            warn!(namespace = %self.config.namespace, name = %self.config.name, "manager did not stop in time; aborting its tasks");
            task.abort();
            let _ = task.await;
        }
        self.state.borrow().clone()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

struct Supervisor {
    cfg: ResolvedConfig,
    runnables: Vec<Arc<dyn Runnable>>,
    state: watch::Sender<ManagerState>,
    roles: watch::Receiver<Role>,
    shutdown: CancellationToken,
    live: Arc<AtomicI64>,
    telemetry: ManagerTelemetry,
    placement: Placement,
    /// Asks the elector to release the Lease (after a handover drained the workers).
    release: watch::Sender<u64>,
    cool_off: CoolOff,
}

enum TermEnd {
    Lost,
    Shutdown,
    Failed(Failure),
    /// Placement moved the config to another replica: workers drained, Lease to be released.
    HandedOver,
}

impl Supervisor {
    async fn run<S: LeaseStore>(
        self,
        elector: Elector<S>,
        background: Option<BoxFuture<'static, ()>>,
    ) {
        let release = elector.release_switch();
        let elector_stop = CancellationToken::new();
        let mut elector_fut = pin!(elector.run(elector_stop.clone()));
        // The Lease watch: it must run alongside the elector (that is what makes a candidate
        // take a released lease at once and judge expiry from the renewals it sees), so it is a
        // branch of the select below. It never completes: if the watch ever ended, polling
        // would carry on without it.
        let background = async move {
            if let Some(b) = background {
                b.await;
            }
            std::future::pending::<()>().await
        };
        let mut background = pin!(background);
        let terms_stop = CancellationToken::new();
        let mut terms = pin!(self.terms(terms_stop.clone()));

        let failure: Option<Failure> = tokio::select! {
            // The elector only ends by itself on a fatal error (RBAC revoked, namespace gone).
            r = &mut elector_fut => {
                terms_stop.cancel();
                // Keep the watch alive while workers stop.
                let _ = tokio::select! { f = &mut terms => f, _ = &mut background => None };
                match r {
                    Err(e) => Some(election_failure(e, &self.cfg)),
                    Ok(()) => None,
                }
            }
            f = &mut terms => {
                // Workers are stopped. A failed start releases what it acquired.
                if f.is_some() {
                    release.store(true, Ordering::Release);
                }
                elector_stop.cancel();
                let _ = tokio::select! { r = &mut elector_fut => r, _ = &mut background => Ok(()) };
                f
            }
            () = &mut background => None,
        };
        // `background` (the Lease watch) is dropped here with this future.
        match failure {
            Some(f) => {
                warn!(namespace = %self.cfg.namespace, name = %self.cfg.name, reason = %f.reason, detail = %f.message, "manager failed");
                self.state.send_replace(ManagerState::Failed(f));
            }
            None => {
                self.state.send_replace(ManagerState::Stopped);
            }
        }
    }

    /// Runs leadership terms until shutdown (None) or a failure (Some).
    async fn terms(&self, stop: CancellationToken) -> Option<Failure> {
        let mut roles = self.roles.clone();
        loop {
            let fence = loop {
                // A fence we revoked ourselves (handover) is not a new term.
                if let Some(f) = roles.borrow_and_update().fence().cloned()
                    && !f.is_revoked()
                {
                    break f;
                }
                self.state.send_replace(ManagerState::Candidate);
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    _ = stop.cancelled() => return None,
                    r = roles.changed() => if r.is_err() { return None },
                }
            };
            match self.term(&fence, &stop).await {
                TermEnd::Lost => {
                    self.state.send_replace(ManagerState::Candidate);
                    continue;
                }
                TermEnd::HandedOver => {
                    // Workers are drained: now the Lease may go.
                    self.release.send_modify(|n| *n += 1);
                    self.state.send_replace(ManagerState::Candidate);
                    continue;
                }
                TermEnd::Shutdown => return None,
                TermEnd::Failed(f) => return Some(f),
            }
        }
    }

    async fn term(&self, fence: &Fence, stop: &CancellationToken) -> TermEnd {
        let token = fence.token();
        self.state.send_replace(ManagerState::Leading { token });
        self.state.send_replace(ManagerState::Starting { token });
        let started_at = Instant::now();
        let run_stop = CancellationToken::new();
        let mut set: JoinSet<(String, Result<(), Failure>)> = JoinSet::new();
        let mut readies = Vec::with_capacity(self.runnables.len());
        for r in &self.runnables {
            let (tx, rx) = oneshot::channel();
            readies.push(rx);
            let ctx = RunContext {
                fence: fence.clone(),
                stop: run_stop.clone(),
                ready: Some(tx),
            };
            let name = r.name();
            let fut = r.run(ctx);
            set.spawn(counted(&self.live, &self.telemetry.tasks, async move {
                (name, fut.await)
            }));
        }
        let all_ready = futures::future::join_all(readies);
        let startup = self.cfg.startup_timeout;
        let started = tokio::select! {
            r = all_ready => {
                if r.iter().any(Result::is_err) {
                    // A runnable dropped its ready signal without saying ready: it ended.
                    Err(self.first_failure(&mut set).await)
                } else {
                    Ok(())
                }
            }
            _ = sleep(startup) => Err(TermEnd::Failed(Failure::new(
                StartupFailure::StartupTimeout,
                format!("workers did not all start within startupTimeout ({startup:?})"),
            ))),
            _ = fence.revoked() => Err(TermEnd::Lost),
            _ = self.shutdown.cancelled() => Err(TermEnd::Shutdown),
            _ = stop.cancelled() => Err(TermEnd::Shutdown),
        };
        let end = match started {
            Err(end) => end,
            Ok(()) => {
                if let Some(h) = &self.telemetry.startup_duration {
                    h.observe(started_at.elapsed().as_secs_f64());
                }
                self.state.send_replace(ManagerState::Running { token });
                tokio::select! {
                    _ = fence.revoked() => TermEnd::Lost,
                    _ = self.shutdown.cancelled() => TermEnd::Shutdown,
                    _ = stop.cancelled() => TermEnd::Shutdown,
                    f = self.first_failure(&mut set) => f,
                    () = self.handover_wanted() => {
                        // No side effect with this token from now on; the elector keeps
                        // renewing until the workers have drained, then releases.
                        fence.revoke();
                        self.cool_off.record();
                        if let Some(c) = &self.placement.handovers {
                            c.inc();
                        }
                        info!(namespace = %self.cfg.namespace, name = %self.cfg.name, token, "placement prefers another replica: handing over");
                        TermEnd::HandedOver
                    }
                }
            }
        };
        self.state.send_replace(ManagerState::Stopping);
        run_stop.cancel();
        self.drain(&mut set).await;
        end
    }

    /// Resolves when this replica should hand the config over: placement has preferred another
    /// replica for a moment, the config is not cooling off from an earlier handover, and the
    /// replica-wide pacer gives a slot. Never resolves without placement.
    async fn handover_wanted(&self) {
        let (Some(mut rank), Some(pacer)) =
            (self.placement.rank.clone(), self.placement.pacer.clone())
        else {
            return std::future::pending().await;
        };
        loop {
            if rank.wait_for(|r| *r != 0).await.is_err() {
                return std::future::pending().await;
            }
            if let Some(t) = self.cool_off.until() {
                tokio::time::sleep_until(t).await;
            }
            sleep(SETTLE).await;
            if *rank.borrow() == 0 {
                continue;
            }
            pacer.admit().await;
            if *rank.borrow_and_update() != 0 {
                return;
            }
        }
    }

    /// Waits for the first runnable to fail (Ok completions are ignored).
    async fn first_failure(&self, set: &mut JoinSet<(String, Result<(), Failure>)>) -> TermEnd {
        while let Some(res) = set.join_next().await {
            match res {
                Ok((_, Ok(()))) => continue,
                Ok((name, Err(f))) => {
                    return TermEnd::Failed(Failure::new(
                        f.reason,
                        format!("worker {name}: {}", f.message),
                    ));
                }
                Err(e) => {
                    return TermEnd::Failed(Failure::new(
                        StartupFailure::WorkerFailed,
                        format!("a worker task ended abnormally: {e}"),
                    ));
                }
            }
        }
        // Every runnable finished cleanly: nothing left to run, wait for the term to end.
        std::future::pending().await
    }

    /// Stops every runnable within gracefulShutdownTimeout, then aborts what is left.
    async fn drain(&self, set: &mut JoinSet<(String, Result<(), Failure>)>) {
        let grace = self.cfg.graceful_shutdown_timeout;
        let graceful = async { while set.join_next().await.is_some() {} };
        if timeout(grace, graceful).await.is_err() {
            warn!(namespace = %self.cfg.namespace, name = %self.cfg.name, "workers did not stop within gracefulShutdownTimeout; aborting them");
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
    }
}

#[cfg(test)]
mod tests;
