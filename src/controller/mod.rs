//! The ManagerConfig controller (docs/design.md §2.2, §2.3, §3): reconciles every ManagerConfig into a
//! [`Manager`] in this process and keeps it in step.
//!
//! * a new `metadata.generation` restarts the manager with the new spec;
//! * deletion stops it and releases its lease: the periodic sweep stops managers whose config
//!   is gone from the cache (no finalizer on the ManagerConfig, so deleting a namespace or
//!   uninstalling never waits for an operator that no longer runs);
//! * a failed start — returned by `Manager::start` or reported later by the manager — is
//!   surfaced as `Ready=False` with the stable reason, a Warning Event and
//!   `startup_failures_total`, and retried with capped exponential backoff;
//! * each config is reconciled independently (kube-runtime runs reconciles of different
//!   objects concurrently), so one broken or slow config never delays another.
//!
//! Every replica runs a candidate for every config; the replica that leads a config writes its
//! status. A failure before any lease is held is seen identically by every replica; each writes
//! the same status with the same field manager, and only when it differs, so they converge
//! without churn.

pub mod env;
pub mod lease_access;
pub mod observer;
pub mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::ManagerConfig;
use crate::api::conditions::{StartupFailure, reason};
use crate::manager::election::config_uid_of;
use crate::manager::runtime::{Failure, Manager, ManagerIdentity, ManagerState};
use crate::metrics::Metrics;
use crate::placement::membership::{self, MembershipConfig};
use crate::placement::{KeySource, PlacementService};
use crate::validation::{HookPolicy, ResolvedConfig, ResolvedWorker};
use env::KubeEnv;
use status::Observed;

/// The finalizer earlier versions put on every ManagerConfig (deletion waited for the manager
/// to stop). It made a namespace holding a ManagerConfig stay `Terminating` for as long as no
/// operator ran, so it is no longer added, and removed where an earlier version left it.
pub const FINALIZER: &str = "manager-operator.io/stop-manager";
/// The single field manager for status writes.
pub use crate::api::FIELD_MANAGER;
/// Retry backoff after a failed start: 1s, 2s, 4s ... (plus up to 10 % jitter) capped here.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Errors of a reconcile (transient API errors; startup failures are not errors here).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a write.
    #[error("API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The object has no namespace or name.
    #[error("ManagerConfig without namespace or name")]
    MissingMetadata,
}

impl Error {
    /// The `kind` label of `controller_reconcile_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "api",
            Error::MissingMetadata => "metadata",
        }
    }
}

/// Per-config state kept by this replica.
struct Entry {
    generation: Option<i64>,
    /// The object's uid: a config deleted and created again under the same name (before the
    /// sweep noticed) is a new config even at the same generation.
    uid: Option<String>,
    manager: Option<Manager>,
    observer: Option<tokio::task::JoinHandle<()>>,
    failures: u32,
    next_retry: Option<Instant>,
    last_failure: Option<Failure>,
    /// Refused by `--max-configs-per-namespace`: retried as soon as the namespace has room.
    waiting_for_quota: bool,
    /// The last valid spec with `finalize: true` workers: their finalizers are removed when
    /// those workers go away.
    finalizing: Option<ResolvedConfig>,
}

impl Entry {
    fn new(generation: Option<i64>) -> Self {
        Self {
            generation,
            uid: None,
            manager: None,
            observer: None,
            failures: 0,
            next_retry: None,
            last_failure: None,
            waiting_for_quota: false,
            finalizing: None,
        }
    }
}

/// Shared context of the controller.
pub struct Ctx {
    /// Client with the operator's own identity.
    pub client: kube::Client,
    /// Hook policy.
    pub policy: HookPolicy,
    /// This replica's identity.
    pub me: ManagerIdentity,
    /// Metrics.
    pub metrics: Metrics,
    /// Event recorder.
    pub recorder: Recorder,
    /// How managers reach the cluster.
    pub env: KubeEnv,
    /// Per-tenant limits.
    pub limits: crate::limits::TenantLimits,
    /// Cross-namespace Lease access of configs' service accounts (cached reviews).
    pub lease_access: lease_access::LeaseAccess,
    registry: Mutex<HashMap<ObjectRef<ManagerConfig>, Entry>>,
    store: Arc<std::sync::OnceLock<Store<ManagerConfig>>>,
    trigger: futures::channel::mpsc::UnboundedSender<ObjectRef<ManagerConfig>>,
}

/// The API server refuses Events whose `note` is longer than this many bytes (events.k8s.io/v1
/// `NoteLengthLimit`).
pub const EVENT_NOTE_MAX_BYTES: usize = 1024;

/// `note` cut to at most `limit` bytes on a character boundary, ending with "…" when cut. The
/// full text stays in the condition message (status has no such limit).
pub fn truncate_note(note: &str, limit: usize) -> String {
    const ELLIPSIS: &str = "…";
    if note.len() <= limit {
        return note.to_string();
    }
    let mut end = limit.saturating_sub(ELLIPSIS.len());
    while end > 0 && !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &note[..end])
}

/// Backoff after `failures` consecutive failed starts.
pub fn backoff(failures: u32) -> Duration {
    crate::backoff::delay(Duration::from_secs(1), MAX_BACKOFF, failures)
}

impl Ctx {
    /// Reference for Events.
    fn reference(mc: &ManagerConfig) -> k8s_openapi::api::core::v1::ObjectReference {
        mc.object_ref(&())
    }

    /// Publishes an Event; failures to publish are logged, never fatal.
    pub async fn event(
        &self,
        mc: &ManagerConfig,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate_note(&note, EVENT_NOTE_MAX_BYTES)),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &Self::reference(mc)).await {
            warn!(error = %e, "publishing an event failed");
        }
    }

    /// The latest cached object for `key` (falls back to the given one).
    fn latest(&self, key: &ObjectRef<ManagerConfig>) -> Option<Arc<ManagerConfig>> {
        self.store.get().and_then(|s| s.get(key))
    }

    /// Applies the status computed from `obs` when it differs from the object's.
    /// `generation` is the one the observation is about (the manager's), so a manager for an
    /// older spec never claims to have observed a newer one.
    pub async fn write_status(
        &self,
        mc: &ManagerConfig,
        generation: Option<i64>,
        obs: &Observed<'_>,
    ) -> Result<(), kube::Error> {
        let key = ObjectRef::from_obj(mc);
        let current = self.latest(&key);
        let base = current.as_deref().unwrap_or(mc);
        let existing = base.status.as_ref();
        let desired = status::desired_status(existing, generation, obs, Time(Timestamp::now()));
        if !status::differs(existing, &desired) {
            return Ok(());
        }
        let api: Api<ManagerConfig> =
            Api::namespaced(self.client.clone(), &mc.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": crate::api::KIND,
            "status": desired,
        });
        api.patch_status(
            &mc.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }

    /// Records a failed start: metric, Event, status, gauge; returns the retry delay.
    pub async fn record_failure(&self, mc: &ManagerConfig, f: &Failure) -> Duration {
        let key = ObjectRef::from_obj(mc);
        let (ns, name) = (mc.namespace().unwrap_or_default(), mc.name_any());
        self.metrics
            .startup_failures_total
            .with_label_values(&[&ns, &name, f.reason.as_str()])
            .inc();
        self.metrics
            .manager_ready
            .with_label_values(&[&ns, &name])
            .set(0);
        let delay = {
            let mut reg = self.registry.lock().await;
            let entry = reg
                .entry(key)
                .or_insert_with(|| Entry::new(mc.metadata.generation));
            entry.failures = entry.failures.saturating_add(1);
            let delay = backoff(entry.failures);
            entry.next_retry = Some(Instant::now() + delay);
            entry.last_failure = Some(f.clone());
            delay
        };
        warn!(namespace = %ns, name = %name, reason = %f.reason, detail = %f.message, retry_in = ?delay, "manager failed to start");
        // Status first: it is what controllers, `kubectl wait` and alerts watch; the Event (for
        // humans reading `kubectl describe`) follows one round trip later.
        if let Err(e) = self
            .write_status(mc, mc.metadata.generation, &Observed::Failed(f))
            .await
        {
            warn!(error = %e, "writing failure status failed");
        }
        // Every replica tries every config, so each would see (and report) the same failure:
        // only the replica placement prefers for the config emits the Event, one series per
        // cause. Without placement every replica does.
        if let Some(p) = &self.env.placement
            && p.current_rank(&format!("{ns}/{name}")) != 0
        {
            debug!(namespace = %ns, name = %name, reason = %f.reason,
                "not the preferred replica for this config: its Event is left to that replica");
            return delay;
        }
        self.event(
            mc,
            EventType::Warning,
            f.reason.as_str(),
            "StartManager",
            format!(
                "{} (to fix: {}); retrying with backoff [seen by {}]",
                f.message,
                f.reason.remedy(),
                self.me.identity
            ),
        )
        .await;
        delay
    }

    /// Asks the controller to reconcile `key` again (used by observers).
    pub fn retrigger(&self, key: ObjectRef<ManagerConfig>) {
        let _ = self.trigger.unbounded_send(key);
    }

    /// Stops every manager (graceful, leases released), concurrently and bounded.
    pub async fn stop_all(&self) {
        let entries: Vec<Entry> = self.registry.lock().await.drain().map(|(_, e)| e).collect();
        let leading = entries
            .iter()
            .filter_map(|e| e.manager.as_ref())
            .filter(|m| {
                matches!(
                    *m.state().borrow(),
                    ManagerState::Leading { .. }
                        | ManagerState::Starting { .. }
                        | ManagerState::Running { .. }
                )
            })
            .count();
        self.metrics
            .handovers_total
            .with_label_values(&["shutdown"])
            .inc_by(u64::try_from(leading).unwrap_or(0));
        let stops = entries.into_iter().map(|mut e| async move {
            if let Some(m) = e.manager.take() {
                m.shutdown().await;
            }
            if let Some(o) = e.observer.take() {
                let _ = o.await;
            }
        });
        futures::future::join_all(stops).await;
    }

    /// Healthy unless some manager believes it leads but has not renewed within its lease.
    pub async fn leaders_healthy(&self) -> bool {
        self.registry
            .lock()
            .await
            .values()
            .all(|e| e.manager.as_ref().is_none_or(Manager::leader_healthy))
    }
}

/// The finalize-mode workers of `old` that `new` no longer has as such (removed, renamed,
/// `finalize` turned off, or watching something else).
fn finalizers_to_release(
    old: &ResolvedConfig,
    new: Option<&ResolvedConfig>,
) -> Vec<ResolvedWorker> {
    old.workers
        .iter()
        .filter(|w| w.finalize)
        .filter(|w| {
            !new.is_some_and(|n| {
                n.workers.iter().any(|x| {
                    x.finalize
                        && x.name == w.name
                        && (
                            &x.group,
                            &x.version,
                            &x.kind,
                            &x.namespace,
                            &x.label_selector,
                        ) == (
                            &w.group,
                            &w.version,
                            &w.kind,
                            &w.namespace,
                            &w.label_selector,
                        )
                })
            })
        })
        .cloned()
        .collect()
}

/// Removes the finalizers of `workers` of `cfg` (see [`KubeEnv::release`]); failures are
/// logged and reported as a Warning Event on `mc` when there is one.
async fn release_finalizers(
    ctx: &Ctx,
    cfg: &ResolvedConfig,
    workers: &[ResolvedWorker],
    mc: Option<&ManagerConfig>,
) {
    let Some(release) = &ctx.env.release else {
        return;
    };
    for w in workers {
        if let Err(e) = release(cfg, w).await {
            let f = crate::workers::finalizer::name(&cfg.namespace, &cfg.name, &w.name);
            warn!(namespace = %cfg.namespace, name = %cfg.name, worker = %w.name, error = %e,
                "could not remove the worker's finalizer from the objects it watched");
            if let Some(mc) = mc {
                ctx.event(
                    mc,
                    EventType::Warning,
                    reason::FINALIZER_NOT_REMOVED,
                    "RemoveFinalizer",
                    format!(
                        "worker {}: {e}; remove it by hand: kubectl get {} -n {} -o name | xargs -I{{}} kubectl patch {{}} -n {} --type=json -p '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]' (only if {f} is the only finalizer)",
                        w.name,
                        w.kind.to_lowercase(),
                        w.namespace,
                        w.namespace
                    ),
                )
                .await;
            }
        }
    }
}

/// Releases, in the background, the finalizers of `old`'s finalize-mode workers that `new`
/// no longer has.
fn spawn_release(ctx: &Arc<Ctx>, old: Option<ResolvedConfig>, new: Option<&ResolvedConfig>) {
    let Some(old) = old else { return };
    let gone = finalizers_to_release(&old, new);
    if gone.is_empty() {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move { release_finalizers(&ctx, &old, &gone, None).await });
}

/// Removes [`FINALIZER`], left by an earlier version, from `mc`. `Ok(false)` when the object
/// changed or went meanwhile (409, 404): it comes back through the watch.
async fn drop_legacy_finalizer(
    api: &Api<ManagerConfig>,
    mc: &ManagerConfig,
) -> Result<bool, Error> {
    if !mc.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(true);
    }
    let remaining: Vec<&String> = mc.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = serde_json::json!({"metadata": {"finalizers": remaining, "resourceVersion": mc.resource_version()}});
    match api
        .patch(
            &mc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn stop_entry(mut entry: Entry) {
    if let Some(m) = entry.manager.take() {
        m.shutdown().await;
    }
    if let Some(o) = entry.observer.take() {
        let _ = o.await;
    }
}

/// How often managers of ManagerConfigs that vanished from the cache are looked for.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Stops managers whose ManagerConfig is no longer in the cache: the way a deletion stops a
/// manager (ManagerConfigs carry no finalizer of ours, and kube-runtime does not reconcile
/// deleted objects), on every replica, also when its watch re-listed meanwhile. The workers'
/// finalizers (finalize mode) are released as the config goes.
async fn sweep_vanished(
    ctx: Arc<Ctx>,
    store: Store<ManagerConfig>,
    mut synced: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        r = synced.wait_for(|s| *s) => if r.is_err() { return },
        _ = shutdown.cancelled() => return,
    }
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let gone: Vec<(ObjectRef<ManagerConfig>, Entry)> = {
            let mut reg = ctx.registry.lock().await;
            let keys: Vec<_> = reg
                .keys()
                .filter(|k| store.get(k).is_none())
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| reg.remove(&k).map(|e| (k, e)))
                .collect()
        };
        for (key, mut entry) in gone {
            let running = entry.manager.is_some();
            let finalizing = entry.finalizing.take();
            stop_entry(entry).await;
            spawn_release(&ctx, finalizing, None);
            let ns = key.namespace.clone().unwrap_or_default();
            ctx.metrics.forget_manager(&ns, &key.name);
            ctx.env.hook_errors.forget(&ns, &key.name, &[]);
            if running {
                info!(namespace = %ns, name = %key.name, "manager stopped: ManagerConfig no longer exists");
            }
        }
        // Configs refused with LeaseInUse start as soon as the Lease is theirs, not at their
        // next backoff retry (up to a minute later).
        let waiting: Vec<ObjectRef<ManagerConfig>> = {
            let reg = ctx.registry.lock().await;
            reg.iter()
                .filter(|(_, e)| {
                    e.manager.is_none()
                        && e.last_failure
                            .as_ref()
                            .is_some_and(|f| f.reason == StartupFailure::LeaseInUse)
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        // Configs refused by --max-configs-per-namespace start as soon as their namespace has
        // room (an older config was deleted).
        let quota: Vec<ObjectRef<ManagerConfig>> = {
            let reg = ctx.registry.lock().await;
            reg.iter()
                .filter(|(_, e)| e.manager.is_none() && e.waiting_for_quota)
                .map(|(k, _)| k.clone())
                .collect()
        };
        if !quota.is_empty() {
            let all = store.state();
            for key in quota {
                if let Some(mc) = store.get(&key)
                    && ctx.limits.check_namespace_quota(&mc, &all).is_ok()
                {
                    if let Some(e) = ctx.registry.lock().await.get_mut(&key) {
                        e.next_retry = None;
                        e.waiting_for_quota = false;
                    }
                    ctx.retrigger(key);
                }
            }
        }
        if !waiting.is_empty() {
            let all = store.state();
            for key in waiting {
                if let Some(mc) = store.get(&key)
                    && crate::claims::rival_owner(&mc, &all, None).is_none()
                {
                    if let Some(e) = ctx.registry.lock().await.get_mut(&key) {
                        e.next_retry = None;
                    }
                    ctx.retrigger(key);
                }
            }
        }
    }
}

/// Refuses `mc` with `LeaseInUse` when another config owns the Lease it names.
async fn check_lease_claim(ctx: &Ctx, mc: &ManagerConfig) -> Result<(), Failure> {
    let Some(store) = ctx.store.get() else {
        return Ok(());
    };
    let all = store.state();
    let (lease_ns, lease_name) = crate::claims::lease_of(mc);
    // No other config names this Lease (the usual case): no Lease read needed.
    let lease = (lease_ns.clone(), lease_name.clone());
    if !all.iter().any(|o| {
        o.metadata.deletion_timestamp.is_none()
            && o.uid() != mc.uid()
            && crate::claims::lease_of(o) == lease
    }) {
        return Ok(());
    }
    let holder = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        ctx.env.lease_client.clone(),
        &lease_ns,
    )
    .get_opt(&lease_name)
    .await
    .ok()
    .flatten()
    .and_then(|l| l.spec)
    .and_then(|s| s.holder_identity);
    let holder_uid = holder.as_deref().and_then(config_uid_of);
    match crate::claims::rival_owner(mc, &all, holder_uid) {
        None => Ok(()),
        Some(owner) => Err(Failure::new(
            StartupFailure::LeaseInUse,
            format!(
                "spec.leaderElection.leaseName: {}; only one ManagerConfig may use a Lease",
                crate::claims::in_use_message(&(lease_ns, lease_name), &owner)
            ),
        )),
    }
}

/// The checks that protect other tenants, before anything of `mc` starts: the namespace's
/// config quota, the spec limits (workers, timing floors), and — for a Lease outside the
/// config's namespace — the service account's right to use Leases there. `Err(true, _)`: the
/// namespace quota refused it.
async fn check_tenant(ctx: &Ctx, mc: &ManagerConfig) -> Result<(), (bool, Failure)> {
    if let Some(store) = ctx.store.get() {
        ctx.limits
            .check_namespace_quota(mc, &store.state())
            .map_err(|f| (true, f))?;
    }
    // An invalid spec is reported by `Manager::start` (InvalidSpec/HookRejected).
    let Ok(cfg) = crate::validation::resolve(mc, &ctx.policy) else {
        return Ok(());
    };
    ctx.limits.check_spec(&cfg).map_err(|f| (false, f))?;
    ctx.lease_access
        .check(
            &cfg.namespace,
            &cfg.service_account,
            &cfg.election.lease_namespace,
            &cfg.election.lease_name,
        )
        .await
        .map_err(|f| (false, f))
}

async fn reconcile(mc: Arc<ManagerConfig>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = mc.namespace().ok_or(Error::MissingMetadata)?;
    let name = mc.name_any();
    let key = ObjectRef::from_obj(&*mc);
    let api: Api<ManagerConfig> = Api::namespaced(ctx.client.clone(), &ns);

    // The spec as the runtime would run it (None when invalid): which workers finalize.
    let resolve = || crate::validation::resolve(&mc, &ctx.policy).ok();
    if mc.metadata.deletion_timestamp.is_some() {
        let resolved = resolve();
        let entry = ctx.registry.lock().await.remove(&key);
        let mut finalizing = None;
        if let Some(mut e) = entry {
            finalizing = e.finalizing.take();
            stop_entry(e).await;
            info!(namespace = %ns, name = %name, "manager stopped: ManagerConfig deleted");
        }
        ctx.metrics.forget_manager(&ns, &name);
        ctx.env.hook_errors.forget(&ns, &name, &[]);
        // Still here (another controller's finalizer, or ours from an earlier version): the
        // workers' finalizers come off the watched objects now (bounded: a failure is reported
        // and the config still goes away; deletion never hangs on this).
        if let Some(cfg) = resolved.as_ref().or(finalizing.as_ref()) {
            let all = finalizers_to_release(cfg, None);
            release_finalizers(&ctx, cfg, &all, Some(&mc)).await;
        }
        drop_legacy_finalizer(&api, &mc).await?;
        return Ok(Action::await_change());
    }

    if !drop_legacy_finalizer(&api, &mc).await? {
        // Another replica removed it first (or the object changed): the watch brings us back.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }

    let generation = mc.metadata.generation;
    let stale = {
        let mut reg = ctx.registry.lock().await;
        match reg.get_mut(&key) {
            Some(e) if e.generation == generation && e.uid == mc.metadata.uid => {
                if e.manager.is_some() {
                    // Running (or campaigning): the observer keeps status in step.
                    return Ok(Action::requeue(Duration::from_secs(300)));
                }
                if let Some(at) = e.next_retry {
                    let now = Instant::now();
                    if at > now {
                        return Ok(Action::requeue(at - now));
                    }
                }
                None
            }
            Some(_) => reg.remove(&key),
            None => None,
        }
    };
    // Only past the early returns above: a running config's periodic reconcile resolves nothing.
    let resolved = resolve();
    if let Some(mut old) = stale {
        // A new spec gets a fresh start, not the old backoff.
        info!(namespace = %ns, name = %name, ?generation, "spec changed: restarting the manager");
        let finalizing = old.finalizing.take();
        stop_entry(old).await;
        // Finalizers of finalize-mode workers the new spec no longer has come off.
        spawn_release(&ctx, finalizing, resolved.as_ref());
        // Series of workers the new spec no longer has (renamed or removed) go away.
        let keep: Vec<&str> = mc.spec.workers.iter().map(|w| w.name.as_str()).collect();
        ctx.metrics.forget_workers(&ns, &name, &keep);
        ctx.env.hook_errors.forget(&ns, &name, &keep);
    }
    // Remembered before the start, so a start that fails still cleans up later.
    let finalizing = resolved.filter(|c| c.workers.iter().any(|w| w.finalize));

    let mut quota = false;
    let started = match check_lease_claim(&ctx, &mc).await {
        Ok(()) => match check_tenant(&ctx, &mc).await {
            Ok(()) => Manager::start(&mc, &ctx.policy, &ctx.me, &ctx.env).await,
            Err((q, f)) => {
                quota = q;
                Err(f)
            }
        },
        Err(f) => Err(f),
    };
    match started {
        Ok(manager) => {
            let state = manager.state();
            let view = manager.lease_view();
            let config = manager.config().clone();
            let observer = tokio::spawn(observer::observe(
                ctx.clone(),
                key.clone(),
                (*mc).clone(),
                config,
                state,
                view,
            ));
            let mut reg = ctx.registry.lock().await;
            let entry = reg.entry(key).or_insert_with(|| Entry::new(generation));
            entry.generation = generation;
            entry.uid = mc.metadata.uid.clone();
            entry.finalizing = finalizing;
            entry.manager = Some(manager);
            entry.observer = Some(observer);
            entry.next_retry = None;
            entry.waiting_for_quota = false;
            Ok(Action::requeue(Duration::from_secs(300)))
        }
        Err(f) => {
            {
                let mut reg = ctx.registry.lock().await;
                let entry = reg.entry(key).or_insert_with(|| Entry::new(generation));
                entry.generation = generation;
                entry.uid = mc.metadata.uid.clone();
                entry.waiting_for_quota = quota;
                if finalizing.is_some() {
                    entry.finalizing = finalizing;
                }
            }
            let delay = ctx.record_failure(&mc, &f).await;
            Ok(Action::requeue(delay))
        }
    }
}

fn error_policy(mc: Arc<ManagerConfig>, err: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.metrics
        .controller_reconcile_errors_total
        .with_label_values(&[err.kind()])
        .inc();
    warn!(namespace = %mc.namespace().unwrap_or_default(), name = %mc.name_any(),
        error = %err, "reconcile failed; retrying in 2s");
    Action::requeue(Duration::from_secs(2))
}

/// Marks a manager that ended (failed after start) so the next reconcile restarts it.
pub(crate) async fn manager_ended(ctx: &Ctx, key: &ObjectRef<ManagerConfig>) {
    let mut reg = ctx.registry.lock().await;
    if let Some(e) = reg.get_mut(key) {
        e.manager = None;
    }
}

/// Everything [`run`] needs.
pub struct RunParams {
    /// Client with the operator's identity.
    pub client: kube::Client,
    /// Hook policy.
    pub policy: HookPolicy,
    /// This replica's identity.
    pub me: ManagerIdentity,
    /// Metrics.
    pub metrics: Metrics,
    /// Manager environment.
    pub env: KubeEnv,
    /// Cancelled to stop.
    pub shutdown: CancellationToken,
    /// Set to true once the ManagerConfig cache has synced.
    pub ready: tokio::sync::watch::Sender<bool>,
    /// Receives the context once built (health checks).
    pub ctx_out: tokio::sync::oneshot::Sender<Arc<Ctx>>,
    /// Only this namespace (None: all).
    pub namespace: Option<String>,
    /// The ManagerConfig cache, once built (shared with the admission webhook).
    pub store: Arc<std::sync::OnceLock<Store<ManagerConfig>>>,
    /// Placement among replicas (None: this replica leads whatever it wins).
    pub placement: Option<PlacementParams>,
    /// Per-tenant limits.
    pub limits: crate::limits::TenantLimits,
}

/// What placement needs from the controller's run.
pub struct PlacementParams {
    /// This replica's membership.
    pub membership: MembershipConfig,
    /// Where membership publishes the live members (read by `service`).
    pub members: tokio::sync::watch::Sender<Vec<String>>,
    /// The placement service the managers read their rank from.
    pub service: Arc<PlacementService>,
}

/// Tells membership "ready" once the ManagerConfig cache has synced and every config in it has
/// been reconciled once (its manager started, or its failure recorded): only then can this
/// replica take the configs placement hands it without leaving them to a standby.
async fn ready_for_work(
    ctx: Arc<Ctx>,
    store: Store<ManagerConfig>,
    mut synced: tokio::sync::watch::Receiver<bool>,
    ready: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
) {
    tokio::select! {
        r = synced.wait_for(|s| *s) => if r.is_err() { return },
        _ = stop.cancelled() => return,
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let all = store.state();
        let reg = ctx.registry.lock().await;
        let done = all
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .all(|o| reg.contains_key(&ObjectRef::from_obj(&**o)));
        drop(reg);
        if done {
            info!(
                configs = all.len(),
                "every ManagerConfig reconciled once: ready for placement"
            );
            ready.send_replace(true);
            // Keep the sender (and so membership's "ready") alive until stop.
            stop.cancelled().await;
            return;
        }
    }
}

/// Builds the context and runs the controller until `shutdown`, then stops every manager.
pub async fn run(p: RunParams) {
    let RunParams {
        client,
        policy,
        me,
        metrics,
        env,
        shutdown,
        ready: ready_tx,
        ctx_out: ctx_tx,
        namespace,
        store: store_cell,
        placement,
        limits,
    } = p;
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some(me.identity.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let (trigger, triggers) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        policy,
        me,
        metrics,
        recorder,
        env,
        limits,
        lease_access: lease_access::LeaseAccess::new(Arc::new(lease_access::KubeLeaseReviewer(
            client.clone(),
        ))),
        registry: Mutex::new(HashMap::new()),
        store: store_cell,
        trigger,
    });
    let _ = ctx_tx.send(ctx.clone());
    let api: Api<ManagerConfig> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let controller = Controller::new(api, watcher::Config::default().any_semantic());
    let store = controller.store();
    let _ = ctx.store.set(store.clone());
    // Placement: membership announces this replica, the service ranks it per config.
    let placement_stop = CancellationToken::new();
    let mut placement_tasks = Vec::new();
    if let Some(p) = placement {
        let (work_ready_tx, work_ready_rx) = tokio::sync::watch::channel(false);
        placement_tasks.push(tokio::spawn(ready_for_work(
            ctx.clone(),
            store.clone(),
            ready_tx.subscribe(),
            work_ready_tx,
            placement_stop.clone(),
        )));
        placement_tasks.push(tokio::spawn(membership::run(
            ctx.env.lease_client.clone(),
            p.membership,
            work_ready_rx,
            p.members,
            placement_stop.clone(),
        )));
        let keys_store = store.clone();
        let keys: KeySource = Arc::new(move || {
            keys_store
                .state()
                .iter()
                .filter(|o| o.metadata.deletion_timestamp.is_none())
                .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
                .collect()
        });
        placement_tasks.push(tokio::spawn(p.service.run(keys, placement_stop.clone())));
    }
    let sweeper = tokio::spawn(sweep_vanished(
        ctx.clone(),
        store.clone(),
        ready_tx.subscribe(),
        shutdown.clone(),
    ));
    let ready_store = store.clone();
    let ready_task = tokio::spawn(async move {
        // Re-poll: kube-runtime's DelayedInit keeps only the last waker of its oneshot, and the
        // controller polls the same readiness internally, so a single long wait may never wake.
        loop {
            match tokio::time::timeout(Duration::from_millis(200), ready_store.wait_until_ready())
                .await
            {
                Ok(Ok(())) => {
                    info!("ManagerConfig cache synced");
                    ready_tx.send_replace(true);
                    return;
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "ManagerConfig cache never synced");
                    return;
                }
                Err(_) => continue,
            }
        }
    });
    let stop = shutdown.clone();
    controller
        .reconcile_on(triggers)
        .graceful_shutdown_on(async move { stop.cancelled().await })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    ready_task.abort();
    // The sweeper ends at its next tick; a stop it is in the middle of completes first.
    let _ = sweeper.await;
    // Leave the placement group first, so the other replicas prefer themselves for our configs
    // by the time our managers release their leases.
    placement_stop.cancel();
    for t in placement_tasks {
        let _ = t.await;
    }
    info!("controller stopped; stopping every manager and releasing leases");
    ctx.stop_all().await;
}

#[cfg(test)]
mod note_tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_character_boundary_with_an_ellipsis() {
        assert_eq!(truncate_note("short", 1024), "short");
        let exact = "a".repeat(1024);
        assert_eq!(truncate_note(&exact, 1024), exact);
        let long = "a".repeat(5000);
        let t = truncate_note(&long, 1024);
        assert!(t.len() <= 1024 && t.ends_with('…'), "{}", t.len());
        assert_eq!(t.len(), 1024);
        // Multi-byte characters: never split one, never exceed the limit.
        for pad in 0..4 {
            let s = format!("{}{}", "x".repeat(pad), "é✓😀".repeat(400));
            let t = truncate_note(&s, 1024);
            assert!(t.len() <= 1024, "pad {pad}: {}", t.len());
            assert!(t.ends_with('…'));
            assert!(s.starts_with(t.trim_end_matches('…')));
        }
    }
}

#[cfg(test)]
mod finalizer_tests {
    use super::*;

    fn cfg(workers: &str) -> ResolvedConfig {
        let mc: ManagerConfig = serde_yaml::from_str(&format!(
            "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\nmetadata: {{name: m, namespace: ns}}\nspec:\n  workers: {workers}\n"
        ))
        .unwrap();
        crate::validation::resolve(&mc, &HookPolicy::default()).unwrap()
    }

    fn w(name: &str, selector: &str, finalize: bool) -> String {
        format!(
            "{{name: {name}, finalize: {finalize}, watch: {{apiVersion: v1, kind: ConfigMap, labelSelector: '{selector}'}}, hook: {{url: 'http://h.svc/'}}}}"
        )
    }

    fn names(v: Vec<ResolvedWorker>) -> Vec<String> {
        v.into_iter().map(|w| w.name).collect()
    }

    #[test]
    fn finalizers_are_released_for_workers_that_stop_finalizing_what_they_did() {
        let old = cfg(&format!(
            "[{}, {}, {}, {}]",
            w("kept", "a=1", true),
            w("off", "a=1", true),
            w("moved", "a=1", true),
            w("never", "a=1", false)
        ));
        assert_eq!(
            names(finalizers_to_release(&old, None)),
            ["kept", "off", "moved"],
            "a deleted config releases every finalize worker"
        );
        let new = cfg(&format!(
            "[{}, {}, {}, {}]",
            w("kept", "a=1", true),
            w("off", "a=1", false),
            w("moved", "a=2", true),
            w("never", "a=1", true)
        ));
        assert_eq!(
            names(finalizers_to_release(&old, Some(&new))),
            ["off", "moved"]
        );
    }
}
