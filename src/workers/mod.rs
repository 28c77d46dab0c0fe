//! Workers (docs/design.md §4): one kube-runtime [`Controller`] over [`DynamicObject`] per
//! `spec.workers[]` entry, listing and watching as the ManagerConfig's service account
//! (impersonated), POSTing every object to the hook with the fencing token.
//!
//! [`runnables`] turns a [`ResolvedConfig`] into one [`Runnable`] per worker:
//!
//! * `preflight` (once per start, each API call bounded by [`preflight::CALL_TIMEOUT`]):
//!   discovery of the watched kind and a `SelfSubjectAccessReview` for `list` and `watch`, both
//!   as the service account. Failures: `ImpersonationForbidden`, `WatchTargetNotFound`,
//!   `WatchForbidden`, `ApiUnavailable`.
//! * `run` (one leadership term): the controller with `concurrency` reconcile workers and
//!   per-object serialization (kube-runtime never runs two reconciles of one object at once);
//!   says ready once the initial list is in the store; stops gracefully on `ctx.stop` (in-flight
//!   hook calls finish, bounded by the hook timeout). A 403/404 from the running watch (RBAC
//!   revoked, CRD deleted) ends the worker with the matching reason; other watch errors are
//!   retried by the watcher.
//! * each reconcile checks the fence, calls the hook ([`hook`]), and on failure retries with a
//!   per-object exponential backoff ([`backoff`]: 500 ms doubling to 5 min, reset on success).
//! * calls carry a delivery id that stays the same across retries and, with
//!   `hook.signingSecretRef`, Standard Webhooks signatures ([`signing`]). The Secret is read as
//!   the service account at preflight (`SigningSecretUnavailable` when it cannot be), again at
//!   the start of every term, and every [`WorkerEnv::signing_refresh`] while running, so a
//!   rotation needs no restart; a Secret that becomes unreadable while running ends the worker
//!   with `SigningSecretUnavailable` (transient API errors keep the last keys).
//!
//! Metrics (all labelled `{namespace,name,worker}` except the hook histogram):
//! `reconcile_total{result=success|error}` (one per hook call), `reconcile_duration_seconds`,
//! `workers_active` (hook calls in flight), `queue_depth` (objects in the watch cache whose
//! current `resourceVersion` has not been delivered successfully and that are not being
//! delivered right now: queued, or waiting for a retry; refreshed every second, 0 when this
//! replica does not lead) and `hook_request_duration_seconds{code}` (status or `error`).

pub mod backoff;
pub mod cache;
pub mod clients;
pub mod deletions;
pub mod dns;
pub mod errors;
pub mod finalizer;
pub mod hook;
pub mod preflight;
pub mod signing;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, TypeMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{Store, reflector};
use kube::runtime::watcher::{self, watcher};
use prometheus::{Histogram, HistogramVec, IntCounter, IntGauge};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use url::Url;

use crate::api::conditions::StartupFailure;
use crate::limits::TenantLimits;
use crate::manager::fence::{Fence, FenceError};
use crate::manager::runtime::{Failure, RunContext, Runnable};
use crate::metrics::Metrics;
use crate::validation::{ResolvedConfig, ResolvedWorker};
use backoff::RetryBackoff;
use cache::{ReplicaCaches, TermCache, WatchBackoff, WatchBudget};
use hook::{HookError, HookReply, HookRequest, ManagerRef, TypedObject};
use preflight::{Identity, WatchTarget};

/// What workers need from the operator process.
#[derive(Clone)]
pub struct WorkerEnv {
    /// The operator's own API server config; workers clone it and impersonate the config's
    /// service account.
    pub base: kube::Config,
    /// The hook HTTP client (see [`hook::http_client`]: no proxy, no redirects, destinations
    /// judged by the hook policy when connecting).
    pub http: hook::HookClient,
    /// Metrics to record into, if any.
    pub metrics: Option<Metrics>,
    /// This replica's Lease holder identity (sent to hooks as `holder`).
    pub identity: String,
    /// Impersonating clients shared by the workers acting as the same service account.
    pub clients: clients::ClientCache,
    /// Per-tenant limits (watched objects and hook calls per config).
    pub limits: TenantLimits,
    /// The replica's watch-cache budgets and list slots (one per process: see [`cache`]).
    pub caches: Arc<ReplicaCaches>,
    /// How often a running worker re-reads its hook signing Secret and TLS material
    /// ([`signing::DEFAULT_REFRESH`] unless `--hook-signing-refresh-period` says otherwise).
    pub signing_refresh: Duration,
    /// The last hook error of every worker (for `status.workers[].lastHookError`).
    pub hook_errors: errors::HookErrors,
}

/// The hook client a worker calls with: the process's, or one with the worker's own TLS
/// settings, replaced when they change.
type HttpCell = Arc<std::sync::RwLock<hook::HookClient>>;

/// Errors building the pieces workers run on.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    /// The hook HTTP client could not be built.
    #[error("building the hook HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Builds the hook HTTP client judging destinations by `policy` (see [`hook::http_client`]).
pub fn hook_http_client(
    policy: &crate::validation::HookPolicy,
) -> Result<hook::HookClient, WorkersError> {
    Ok(hook::http_client(policy)?)
}

/// The user name of a service account, as the API server authenticates it.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// `base`, acting as `user` (no group impersonation: for service accounts the API server
/// derives the groups itself, and the operator is only granted impersonate on serviceaccounts).
pub fn impersonating(base: &kube::Config, user: &str) -> kube::Config {
    let mut c = base.clone();
    c.auth_info.impersonate = Some(user.to_string());
    c.auth_info.impersonate_groups = None;
    c.auth_info.impersonate_uid = None;
    c.auth_info.impersonate_user_extra = None;
    c
}

/// One runnable per `cfg.workers` entry, each acting through the impersonating client of the
/// config's service account (shared with every other worker acting as it, see [`clients`]; a
/// client that cannot be built is reported by `preflight` as `ApiUnavailable`).
pub fn runnables(env: &WorkerEnv, cfg: &ResolvedConfig) -> Vec<Arc<dyn Runnable>> {
    let who = Identity {
        user: service_account_user(&cfg.namespace, &cfg.service_account),
        namespace: cfg.namespace.clone(),
        name: cfg.service_account.clone(),
    };
    // Shared by the config's workers: its hook calls in flight and its watched objects.
    let hook_slots = Arc::new(tokio::sync::Semaphore::new(env.limits.hook_calls_for(cfg)));
    let watched = Arc::new(WatchBudget::new(env.limits.max_watched_objects_per_config));
    cfg.workers
        .iter()
        .map(|w| {
            let client = env.clients.get(&env.base, &who.user, env.metrics.as_ref());
            Arc::new(Worker(Arc::new(Inner {
                manager: ManagerRef {
                    namespace: cfg.namespace.clone(),
                    name: cfg.name.clone(),
                },
                spec: w.clone(),
                who: who.clone(),
                client,
                http: Arc::new(std::sync::RwLock::new(env.http.clone())),
                tls: Mutex::new(None),
                hook_errors: env.hook_errors.clone(),
                metrics: env.metrics.clone(),
                identity: env.identity.clone(),
                target: Mutex::new(None),
                hook_slots: hook_slots.clone(),
                watched: watched.clone(),
                caches: env.caches.clone(),
                keys: signing::KeyCell::default(),
                signing_refresh: env.signing_refresh,
            }))) as Arc<dyn Runnable>
        })
        .collect()
}

/// Removes worker `w`'s finalizer (finalize mode) from every object it watches, acting as
/// `cfg`'s service account: when the worker, its config or its `finalize` setting goes away.
/// Returns how many objects it changed.
pub async fn release_finalizer(
    env: WorkerEnv,
    cfg: ResolvedConfig,
    w: ResolvedWorker,
) -> Result<usize, String> {
    let who = Identity {
        user: service_account_user(&cfg.namespace, &cfg.service_account),
        namespace: cfg.namespace.clone(),
        name: cfg.service_account.clone(),
    };
    let client = env
        .clients
        .get(&env.base, &who.user, env.metrics.as_ref())?;
    let client = (*client).clone();
    let target = preflight::discover(&client, &w, &who)
        .await
        .map_err(|f| f.message)?;
    let api: Api<DynamicObject> = match &target.namespace {
        Some(ns) => Api::namespaced_with(client, ns, &target.resource),
        None => Api::all_with(client, &target.resource),
    };
    let f = finalizer::name(&cfg.namespace, &cfg.name, &w.name);
    let n = tokio::time::timeout(
        Duration::from_secs(60),
        finalizer::release(&api, w.label_selector.as_deref(), &f),
    )
    .await
    .map_err(|_| format!("removing finalizer {f} took longer than 60s"))?
    .map_err(|e| format!("removing finalizer {f} as {}: {e}", who.user))?;
    if n > 0 {
        info!(namespace = %cfg.namespace, name = %cfg.name, worker = %w.name, finalizer = %f,
            objects = n, "finalizer removed from the watched objects");
    }
    Ok(n)
}

/// A worker: a [`Runnable`] running one controller per leadership term.
pub struct Worker(Arc<Inner>);

struct Inner {
    manager: ManagerRef,
    spec: ResolvedWorker,
    who: Identity,
    client: Result<Arc<kube::Client>, String>,
    http: HttpCell,
    /// The TLS material the current client was built from (custom TLS only).
    tls: Mutex<Option<tls::Material>>,
    hook_errors: errors::HookErrors,
    metrics: Option<Metrics>,
    identity: String,
    /// Resolved by preflight, reused by every term.
    target: Mutex<Option<WatchTarget>>,
    /// Hook calls in flight for the whole config (`--max-hook-calls-per-config`).
    hook_slots: Arc<tokio::sync::Semaphore>,
    /// Objects in the watch caches of the whole config (`--max-watched-objects-per-config`).
    watched: Arc<WatchBudget>,
    /// The bytes of every watch cache of the replica, per namespace and in total.
    caches: Arc<ReplicaCaches>,
    /// The hook signing keys (empty without `signingSecretRef`).
    keys: signing::KeyCell,
    /// How often a running worker re-reads the signing Secret.
    signing_refresh: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps: a panic while holding the lock cannot leave them inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn client(&self) -> Result<kube::Client, Failure> {
        self.client.as_ref().map(|c| (**c).clone()).map_err(|e| {
            Failure::new(
                StartupFailure::ApiUnavailable,
                format!(
                    "worker {}: cannot build an API client acting as {}: {e}",
                    self.spec.name, self.who.user
                ),
            )
        })
    }

    /// Reads the signing keys (if the worker signs). `Ok(true)` when they changed.
    async fn load_keys(
        &self,
        client: &kube::Client,
    ) -> Result<bool, (signing::LoadError, Failure)> {
        let Some(r) = &self.spec.signing_secret else {
            return Ok(false);
        };
        match signing::load(client, &self.manager.namespace, r, preflight::CALL_TIMEOUT).await {
            Ok(keys) => {
                let n = keys.len();
                let changed = self.keys.set(keys);
                if changed {
                    info!(namespace = %self.manager.namespace, name = %self.manager.name,
                        worker = %self.spec.name, secret = %r.name, key = %r.key, signatures = n,
                        "hook signing keys loaded");
                }
                Ok(changed)
            }
            Err(e) => {
                let f = e.failure(&self.spec.name, &self.manager.namespace, &self.who.user, r);
                Err((e, f))
            }
        }
    }

    /// Reads the worker's TLS material (custom TLS only) and builds a new hook client when it
    /// changed. `Ok(true)` when it changed.
    async fn load_tls(&self, client: &kube::Client) -> Result<bool, tls::TlsError> {
        if !self.spec.tls.is_custom() {
            return Ok(false);
        }
        let m = tls::load(
            client,
            &self.manager.namespace,
            &self.who.user,
            &self.spec.tls,
            preflight::CALL_TIMEOUT,
        )
        .await?;
        if lock(&self.tls).as_ref() == Some(&m) {
            return Ok(false);
        }
        let config = m.client_config(self.spec.tls.client_cert_secret.as_deref().unwrap_or(""))?;
        let base = self.http.read().unwrap_or_else(|e| e.into_inner()).clone();
        let http = base.with_tls(config).map_err(|e| tls::TlsError::Setup {
            what: "the hook client".into(),
            reason: e.to_string(),
        })?;
        *self.http.write().unwrap_or_else(|e| e.into_inner()) = http;
        info!(namespace = %self.manager.namespace, name = %self.manager.name,
            worker = %self.spec.name, cas = m.cas.len(), client_certificate = m.client.is_some(),
            "hook TLS settings loaded");
        *lock(&self.tls) = Some(m);
        Ok(true)
    }

    /// Re-reads the signing Secret and the TLS material every `signing_refresh` while a term
    /// runs; returns only when one can no longer be read for a reason the tenant has to fix
    /// (a transient API error keeps the last ones).
    async fn refresh_material(&self, client: &kube::Client) -> Failure {
        if self.spec.signing_secret.is_none() && !self.spec.tls.is_custom() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(self.signing_refresh).await;
            match self.load_keys(client).await {
                Ok(_) => {}
                Err((e, f)) if e.is_permanent() => return f,
                Err((e, _)) => {
                    warn!(namespace = %self.manager.namespace, name = %self.manager.name,
                        worker = %self.spec.name, error = %e,
                        "re-reading the hook signing Secret failed; signing with the last keys");
                }
            }
            match self.load_tls(client).await {
                Ok(_) => {}
                Err(e) if e.is_permanent() => return e.failure(&self.spec.name),
                Err(e) => {
                    warn!(namespace = %self.manager.namespace, name = %self.manager.name,
                        worker = %self.spec.name, error = %e,
                        "re-reading the hook TLS settings failed; keeping the last ones");
                }
            }
        }
    }

    async fn preflight(&self) -> Result<(), Failure> {
        let client = self.client()?;
        let target = preflight::discover(&client, &self.spec, &self.who).await?;
        preflight::check_access(&client, &self.spec, &target, &self.who).await?;
        self.load_keys(&client).await.map_err(|(_, f)| f)?;
        self.load_tls(&client)
            .await
            .map_err(|e| e.failure(&self.spec.name))?;
        debug!(namespace = %self.manager.namespace, name = %self.manager.name, worker = %self.spec.name,
            resource = %target.resource_name(), "worker preflight passed");
        *lock(&self.target) = Some(target);
        Ok(())
    }

    async fn target(&self, client: &kube::Client) -> Result<WatchTarget, Failure> {
        let cached = lock(&self.target).clone();
        match cached {
            Some(t) => Ok(t),
            None => {
                let t = preflight::discover(client, &self.spec, &self.who).await?;
                *lock(&self.target) = Some(t.clone());
                Ok(t)
            }
        }
    }

    fn metrics(&self) -> Option<WorkerMetrics> {
        let m = self.metrics.as_ref()?;
        let labels = |result: Option<&str>| -> Vec<String> {
            let mut v = vec![
                self.manager.namespace.clone(),
                self.manager.name.clone(),
                self.spec.name.clone(),
            ];
            v.extend(result.map(str::to_string));
            v
        };
        let l3 = labels(None);
        let l3: Vec<&str> = l3.iter().map(String::as_str).collect();
        let ok = labels(Some("success"));
        let ok: Vec<&str> = ok.iter().map(String::as_str).collect();
        let err = labels(Some("error"));
        let err: Vec<&str> = err.iter().map(String::as_str).collect();
        Some(WorkerMetrics {
            success: m.reconcile_total.with_label_values(&ok),
            error: m.reconcile_total.with_label_values(&err),
            duration: m.reconcile_duration_seconds.with_label_values(&l3),
            active: m.workers_active.with_label_values(&l3),
            queue: m.queue_depth.with_label_values(&l3),
            hook: m.hook_request_duration_seconds.clone(),
        })
    }

    /// One leadership term.
    async fn run_term(self: Arc<Self>, mut ctx: RunContext) -> Result<(), Failure> {
        let client = self.client()?;
        let target = self.target(&client).await?;
        // The Secret may have changed (or gone) since preflight, which ran when this replica
        // started campaigning: read it again; keep the last keys only on a transient error.
        match self.load_keys(&client).await {
            Ok(_) => {}
            Err((e, f)) if e.is_permanent() || self.keys.get().is_none() => return Err(f),
            Err((e, _)) => {
                warn!(namespace = %self.manager.namespace, name = %self.manager.name,
                    worker = %self.spec.name, error = %e,
                    "reading the hook signing Secret failed; signing with the keys read at preflight");
            }
        }
        match self.load_tls(&client).await {
            Ok(_) => {}
            Err(e) if e.is_permanent() || lock(&self.tls).is_none() => {
                return Err(e.failure(&self.spec.name));
            }
            Err(e) => {
                warn!(namespace = %self.manager.namespace, name = %self.manager.name,
                    worker = %self.spec.name, error = %e,
                    "reading the hook TLS settings failed; using those read at preflight");
            }
        }
        let keys = self.spec.signing_secret.as_ref().map(|_| self.keys.clone());
        let secret_client = client.clone();
        let patch_api: Api<DynamicObject> = match &target.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &target.resource),
            None => Api::all_with(client.clone(), &target.resource),
        };
        let api: Api<DynamicObject> = match &target.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &target.resource),
            None => Api::all_with(client, &target.resource),
        };
        let list_key = format!(
            "{}|{}|{}",
            target.namespace.as_deref().unwrap_or(""),
            target.resource_name(),
            self.spec.label_selector.as_deref().unwrap_or("")
        );
        let mut wc = watcher::Config::default().page_size(self.caches.page_size(&list_key));
        if let Some(sel) = &self.spec.label_selector {
            wc = wc.labels(sel);
        }
        // The reflector of `Controller::new_with`, with every event accounted for in the
        // config's and the replica's watch budgets (see [`cache`]) before the cache applies
        // it: the stream ends (and the worker fails with LimitExceeded) as soon as a cache
        // would grow past a budget, instead of growing until the replica is OOM-killed.
        let writer = Writer::<DynamicObject>::new(target.resource.clone());
        let store = writer.as_reader();
        let held = TermCache::new(
            self.watched.clone(),
            self.caches.clone(),
            &self.manager.namespace,
            &list_key,
        );
        // Which budget was exceeded (set once) and the signal for the loop below.
        let over_why: Arc<Mutex<Option<cache::Over>>> = Arc::default();
        let over = tokio_util::sync::CancellationToken::new();
        let (tombstones, mut deleted) = deletions::Tombstones::new(
            self.spec.finalize,
            format!(
                "{}/{}/{}",
                self.manager.namespace, self.manager.name, self.spec.name
            ),
        );
        let shared = Arc::new(Shared {
            manager: self.manager.clone(),
            worker: self.spec.name.clone(),
            identity: self.identity.clone(),
            fence: ctx.fence.clone(),
            http: self.http.clone(),
            url: self.spec.hook_url.clone(),
            timeout: self.spec.hook_timeout,
            resync: self.spec.resync_period,
            types: TypeMeta {
                api_version: target.resource.api_version.clone(),
                kind: target.resource.kind.clone(),
            },
            backoff: RetryBackoff::default(),
            delivered: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            metrics: self.metrics(),
            hook_slots: self.hook_slots.clone(),
            ids: signing::DeliveryIds::default(),
            keys,
            finalizer: self.spec.finalize.then(|| {
                finalizer::name(&self.manager.namespace, &self.manager.name, &self.spec.name)
            }),
            api: patch_api,
            tombstones,
            deletion_slots: tokio::sync::Semaphore::new(usize::from(self.spec.concurrency)),
            hook_errors: self.hook_errors.clone(),
        });
        let events = {
            let (why, trip) = (over_why.clone(), over.clone());
            let (seen, before) = (shared.clone(), store.clone());
            let raw = watcher(api, wc).backoff(WatchBackoff::default());
            cache::gate_lists(raw, self.caches.list_slots())
                .map_ok(move |ev| {
                    if let Err(o) = held.observe(&ev) {
                        lock(&why).get_or_insert(o);
                        trip.cancel();
                    }
                    // Deletions, seen before the cache forgets the object.
                    seen.tombstones.observe(&ev, &before);
                    ev
                })
                // Ends the stream at the first event over a budget, before the cache applies
                // it; `held` (moved into the closure above) gives everything back when the
                // stream is dropped at the end of the term.
                .take_while({
                    let over = over.clone();
                    move |_| std::future::ready(!over.is_cancelled())
                })
        };
        let counted = reflector(writer, events);
        let controller = Controller::for_stream_with(
            counted.applied_objects(),
            store.clone(),
            target.resource.clone(),
        )
        .with_config(controller::Config::default().concurrency(self.spec.concurrency))
        .graceful_shutdown_on(ctx.stop.clone().cancelled_owned());
        info!(namespace = %self.manager.namespace, name = %self.manager.name, worker = %self.spec.name,
            resource = %target.resource_name(), scope = %target.scope_phrase(),
            selector = self.spec.label_selector.as_deref().unwrap_or(""), as_user = %self.who.user,
            concurrency = self.spec.concurrency, finalize = self.spec.finalize,
            fencing_token = ctx.fence.token(), "worker starting");

        let stream = controller.run(reconcile, error_policy, shared.clone());
        let mut stream = pin!(stream);
        let mut ready = pin!(store.wait_until_ready());
        let mut is_ready = false;
        let mut drain_until: Option<Instant> = None;
        let drain_bound = self.spec.hook_timeout + Duration::from_secs(1);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();
        let mut refresher = pin!(self.refresh_material(&secret_client));
        // Deletion deliveries in progress (dropped, and so abandoned, when the term ends).
        let mut deliveries = futures::stream::FuturesUnordered::new();

        let over_limit = || {
            let why = lock(&over_why)
                .clone()
                .map(|o| o.to_string())
                .unwrap_or_else(|| "a watch-cache budget was exceeded".to_string());
            Failure::new(
                StartupFailure::LimitExceeded,
                format!(
                    "{why}; it watches {} {}{}: narrow spec.workers[].watch.labelSelector or \
                     namespace, or ask the operator's administrator to raise the limit",
                    target.resource_name(),
                    target.scope_phrase(),
                    self.spec
                        .label_selector
                        .as_deref()
                        .map(|s| format!(" with selector {s:?}"))
                        .unwrap_or_default(),
                ),
            )
        };

        let result = loop {
            tokio::select! {
                f = &mut refresher => break Err(f),
                r = &mut ready, if !is_ready => {
                    is_ready = true;
                    if r.is_ok() {
                        info!(namespace = %self.manager.namespace, name = %self.manager.name,
                            worker = %self.spec.name, objects = store.len(),
                            took_ms = started.elapsed().as_millis() as u64, "worker running: initial list synced");
                        ctx.ready();
                    }
                }
                item = stream.next() => match item {
                    // Going over the limit ends the watch stream, and with it the controller
                    // stream: this branch may be picked before the `over` one below.
                    None if over.is_cancelled() => break Err(over_limit()),
                    None if ctx.stop.is_cancelled() => break Ok(()),
                    // The watch never ends by itself: say so rather than leave the config
                    // waiting for a worker that will never be ready.
                    None => break Err(Failure::new(
                        StartupFailure::WorkerFailed,
                        format!("worker {}: the watch of {} ended unexpectedly",
                            self.spec.name, target.resource_name()),
                    )),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        if let Some(f) = self.on_error(e, &shared, &target) {
                            break Err(f);
                        }
                    }
                },
                _ = tick.tick() => shared.refresh(&store),
                Some(k) = deleted.recv(), if drain_until.is_none() => {
                    deliveries.push(deliver_deletion(shared.clone(), k));
                }
                Some(()) = deliveries.next(), if !deliveries.is_empty() => {}
                _ = over.cancelled() => break Err(over_limit()),
                _ = ctx.stop.cancelled(), if drain_until.is_none() => {
                    if !is_ready {
                        // Nothing runs before the initial list: nothing to wait for.
                        break Ok(());
                    }
                    drain_until = Some(Instant::now() + drain_bound);
                }
                _ = sleep_until_opt(drain_until), if drain_until.is_some() => {
                    warn!(namespace = %self.manager.namespace, name = %self.manager.name, worker = %self.spec.name,
                        "in-flight hook calls did not finish within the hook timeout; abandoning them");
                    break Ok(());
                }
            }
        };
        // Dropping the controller stream aborts anything still running.
        if let Some(m) = &shared.metrics {
            m.queue.set(0);
        }
        match &result {
            Ok(()) => info!(namespace = %self.manager.namespace, name = %self.manager.name,
                worker = %self.spec.name, "worker stopped"),
            Err(f) => warn!(namespace = %self.manager.namespace, name = %self.manager.name,
                worker = %self.spec.name, reason = %f.reason, detail = %f.message, "worker failed"),
        }
        result
    }

    /// Handles an error item of the controller stream; `Some` ends the worker.
    fn on_error(
        &self,
        e: controller::Error<ReconcileError, watcher::Error>,
        shared: &Shared,
        target: &WatchTarget,
    ) -> Option<Failure> {
        match e {
            controller::Error::QueueError(we) => {
                if let Some(f) = preflight::watch_failure(&we, &self.spec, target, &self.who) {
                    return Some(f);
                }
                warn!(namespace = %self.manager.namespace, name = %self.manager.name,
                    worker = %self.spec.name, error = %we, "watch error; retrying with backoff");
                None
            }
            controller::Error::ObjectNotFound(r) => {
                // Deleted while a retry was scheduled (its deletion, if pending, keeps its own
                // retry state).
                let k = key(r.namespace.as_deref(), &r.name);
                if !shared.tombstones.contains(&k) {
                    shared.forget(&k);
                }
                None
            }
            controller::Error::ReconcilerFailed(ReconcileError::FinalizerForbidden(why), _) => {
                Some(Failure::new(
                    StartupFailure::WatchForbidden,
                    format!(
                        "{why}; grant it patch on {} {}",
                        target.resource_name(),
                        target.scope_phrase()
                    ),
                ))
            }
            controller::Error::ReconcilerFailed(ReconcileError::Finalizer(why), obj) => {
                warn!(namespace = %self.manager.namespace, name = %self.manager.name,
                    worker = %self.spec.name, object = %obj.name, error = %why,
                    "updating the finalizer failed; retrying");
                None
            }
            // Logged by the reconciler itself.
            controller::Error::ReconcilerFailed(..) => None,
            controller::Error::RunnerError(re) => {
                warn!(namespace = %self.manager.namespace, name = %self.manager.name,
                    worker = %self.spec.name, error = %re, "controller runner error");
                None
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Runnable for Worker {
    fn name(&self) -> String {
        self.0.spec.name.clone()
    }

    fn preflight(&self) -> BoxFuture<'static, Result<(), Failure>> {
        let inner = self.0.clone();
        Box::pin(async move { inner.preflight().await })
    }

    fn run(&self, ctx: RunContext) -> BoxFuture<'static, Result<(), Failure>> {
        let inner = self.0.clone();
        Box::pin(inner.run_term(ctx))
    }
}

struct WorkerMetrics {
    success: IntCounter,
    error: IntCounter,
    duration: Histogram,
    active: IntGauge,
    queue: IntGauge,
    hook: HistogramVec,
}

/// What every reconcile of one term shares.
struct Shared {
    manager: ManagerRef,
    worker: String,
    identity: String,
    fence: Fence,
    http: HttpCell,
    url: Url,
    timeout: Duration,
    resync: Option<Duration>,
    /// apiVersion/kind, filled in when the API server left them out (list items).
    types: TypeMeta,
    backoff: RetryBackoff,
    /// Object key → resourceVersion last delivered successfully.
    delivered: Mutex<HashMap<String, String>>,
    /// Object keys with a hook call in flight.
    in_flight: Mutex<HashSet<String>>,
    metrics: Option<WorkerMetrics>,
    /// The config's hook-call permits (shared by its workers).
    hook_slots: Arc<tokio::sync::Semaphore>,
    /// Delivery ids (`webhook-id`) of objects whose delivery is pending or being retried.
    ids: signing::DeliveryIds,
    /// The signing keys, when the worker signs its calls.
    keys: Option<signing::KeyCell>,
    /// The worker's finalizer (finalize mode).
    finalizer: Option<String>,
    /// The watched resource, as the service account (finalizer patches).
    api: Api<DynamicObject>,
    /// Deletions waiting for their `Deleted` call.
    tombstones: deletions::Tombstones,
    /// Deletion deliveries at once (the worker's concurrency).
    deletion_slots: tokio::sync::Semaphore,
    /// Where the last hook error is shown (`status.workers[].lastHookError`).
    hook_errors: errors::HookErrors,
}

impl Shared {
    fn forget(&self, k: &str) {
        self.backoff.reset(k);
        lock(&self.delivered).remove(k);
        self.ids.delivered(k);
    }

    /// The hook client of this moment (replaced when the TLS settings change).
    fn http(&self) -> hook::HookClient {
        self.http.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Recomputes `queue_depth` and drops bookkeeping of objects that are gone.
    fn refresh(&self, store: &Store<DynamicObject>) {
        let objects = store.state();
        let mut live: HashSet<String> = HashSet::with_capacity(objects.len());
        let mut waiting: i64 = 0;
        {
            let delivered = lock(&self.delivered);
            let in_flight = lock(&self.in_flight);
            for o in &objects {
                let k = object_key(o);
                let done = match (delivered.get(&k), o.metadata.resource_version.as_ref()) {
                    (Some(d), Some(rv)) => d == rv,
                    _ => false,
                };
                if !done && !in_flight.contains(&k) {
                    waiting += 1;
                }
                live.insert(k);
            }
        }
        // Deletions waiting for the hook keep their retry state and count as queued.
        let gone = self.tombstones.keys();
        waiting += gone.len() as i64;
        live.extend(gone);
        lock(&self.delivered).retain(|k, _| live.contains(k));
        self.backoff.retain(|k| live.contains(k));
        self.ids.retain(|k| live.contains(k));
        if let Some(m) = &self.metrics {
            m.queue.set(waiting);
        }
    }
}

/// Counts a hook call in flight (gauge and set) until dropped.
struct InFlight<'a> {
    shared: &'a Shared,
    key: String,
}

impl<'a> InFlight<'a> {
    /// Claims `key` for a `Sync` call: `None` while a deletion of it waits for delivery (the
    /// object was deleted and created again; the deletion goes first). kube-runtime never runs
    /// two reconciles of one object at once, so a running `Deleted` call is the only rival.
    fn sync(shared: &'a Shared, key: &str) -> Option<Self> {
        let mut in_flight = lock(&shared.in_flight);
        if shared.tombstones.contains(key) || in_flight.contains(key) {
            return None;
        }
        in_flight.insert(key.to_string());
        drop(in_flight);
        Some(Self::counted(shared, key))
    }

    /// Claims `key` for a best-effort `Deleted` call: `None` while a call of it is in flight.
    fn deletion(shared: &'a Shared, key: &str) -> Option<Self> {
        if !lock(&shared.in_flight).insert(key.to_string()) {
            return None;
        }
        Some(Self::counted(shared, key))
    }

    fn counted(shared: &'a Shared, key: &str) -> Self {
        if let Some(m) = &shared.metrics {
            m.active.inc();
        }
        Self {
            shared,
            key: key.to_string(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(m) = &self.shared.metrics {
            m.active.dec();
        }
        lock(&self.shared.in_flight).remove(&self.key);
    }
}

/// Why a reconcile did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The leadership term is over (or may be): the hook was not called.
    #[error("not calling the hook: {0}")]
    Fenced(#[from] FenceError),
    /// The worker signs its calls but holds no keys (cannot happen after a passed preflight);
    /// the hook is not called unsigned.
    #[error("no hook signing keys loaded; not calling the hook unsigned")]
    NoSigningKeys,
    /// The hook call failed; retried after `retry_in`.
    #[error("{source} (failure {attempt}, retrying in {retry_in:?})")]
    Hook {
        /// What went wrong.
        source: HookError,
        /// Consecutive failures of this object.
        attempt: u32,
        /// Delay before the retry.
        retry_in: Duration,
    },
    /// A deletion of the object (deleted and created again) waits for its `Deleted` call,
    /// which goes first.
    #[error("a deletion of this object is still being delivered")]
    DeletionPending,
    /// The service account may not patch the watched objects (finalize mode): ends the worker.
    #[error("{0}")]
    FinalizerForbidden(String),
    /// Adding or removing the finalizer failed for another reason; retried.
    #[error("updating the finalizer: {0}")]
    Finalizer(String),
}

fn key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn object_key(o: &DynamicObject) -> String {
    key(
        o.metadata.namespace.as_deref(),
        o.metadata.name.as_deref().unwrap_or(""),
    )
}

/// A finalizer patch's error as a reconcile error (403: the worker cannot work).
fn finalizer_error(s: &Shared, e: kube::Error) -> ReconcileError {
    match e {
        kube::Error::Api(st) if st.code == 403 => ReconcileError::FinalizerForbidden(format!(
            "worker {}: finalize: true needs patch on the watched objects, and the service \
             account may not ({})",
            s.worker, st.message
        )),
        e => ReconcileError::Finalizer(e.to_string()),
    }
}

async fn reconcile(obj: Arc<DynamicObject>, s: Arc<Shared>) -> Result<Action, ReconcileError> {
    let k = object_key(&obj);
    let mut event = hook::SYNC;
    if let Some(f) = &s.finalizer {
        let deleting = obj.metadata.deletion_timestamp.is_some();
        if finalizer::has(&obj, f) {
            if deleting {
                event = hook::DELETED;
            }
        } else if !deleting {
            // Finalizer first (only the leader writes): the object comes back with it, and
            // that version is the one delivered.
            s.fence.check()?;
            finalizer::apply(&s.api, &obj, finalizer::add_patch(&obj, f))
                .await
                .map_err(|e| finalizer_error(&s, e))?;
            return Ok(Action::await_change());
        }
    }
    let Some(claim) = InFlight::sync(&s, &k) else {
        return Err(ReconcileError::DeletionPending);
    };
    let HookReply { requeue_after, .. } = call_hook(&s, &obj, &k, event, claim).await?;
    if event == hook::DELETED {
        // The hook has it: let the object go. The watch's Delete event that follows is not
        // delivered again by this replica.
        if let Some(p) = s
            .finalizer
            .as_deref()
            .and_then(|f| finalizer::remove_patch(&obj, f))
        {
            s.tombstones.finalized(&k);
            match finalizer::apply(&s.api, &obj, p).await {
                Ok(true) => {}
                // Changed meanwhile: handled again from its next version (the hook may hear
                // this deletion again, with a new delivery id).
                Ok(false) => s.tombstones.unfinalized(&k),
                Err(e) => {
                    s.tombstones.unfinalized(&k);
                    return Err(finalizer_error(&s, e));
                }
            }
        }
        return Ok(Action::await_change());
    }
    Ok(match requeue_after.or(s.resync) {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// One hook call about `obj` (`event`: `Sync` or `Deleted`), made while holding `claim`;
/// records metrics, retry state and the last error.
async fn call_hook(
    s: &Shared,
    obj: &DynamicObject,
    k: &str,
    event: &'static str,
    claim: InFlight<'_>,
) -> Result<HookReply, ReconcileError> {
    // Encoded once, straight from the watch cache, in `hook::call`: a call holds one encoded
    // copy of the object, never a clone of it.
    let object = TypedObject {
        types: obj.types.as_ref().unwrap_or(&s.types),
        metadata: &obj.metadata,
        data: &obj.data,
    };
    let rv = obj.metadata.resource_version.as_deref().unwrap_or("");
    let id = s.ids.for_attempt(k, rv);
    // Right before the side effect: is this replica still the leader?
    let token = s.fence.check()?;
    let body = HookRequest {
        api_version: hook::PROTOCOL.to_string(),
        event_type: event.to_string(),
        delivery_id: id.clone(),
        // Failures so far of this object: retries of one delivery keep its id, so this counts
        // the attempts of the delivery.
        attempt: s.backoff.attempts(k).saturating_add(1),
        resource_version: obj.metadata.resource_version.clone(),
        generation: obj.metadata.generation,
        manager: s.manager.clone(),
        worker: s.worker.clone(),
        fencing_token: token,
        holder: s.identity.clone(),
        object,
    };
    // One of the config's hook-call permits: a config cannot hold more calls (sockets, tasks,
    // buffers) than `--max-hook-calls-per-config`, whatever its workers' concurrency.
    let _permit = tokio::select! {
        p = s.hook_slots.acquire() => p.ok(),
        _ = s.fence.revoked() => return Err(ReconcileError::Fenced(FenceError::Revoked(token))),
    };
    let keys = match &s.keys {
        Some(cell) => Some(cell.get().ok_or(ReconcileError::NoSigningKeys)?),
        None => None,
    };
    let delivery = hook::Delivery {
        id: &id,
        keys: keys.as_deref(),
    };
    let _in_flight = claim;
    let http = s.http();
    let started = Instant::now();
    let result = tokio::select! {
        r = hook::call(&http, &s.url, s.timeout, &body, delivery) => r,
        // Leadership lost mid-call: abandon it (the hook can tell by the token anyway).
        _ = s.fence.revoked() => return Err(ReconcileError::Fenced(FenceError::Revoked(token))),
    };
    let took = started.elapsed().as_secs_f64();
    let code = match &result {
        Ok(r) => r.code.to_string(),
        Err(e) => e.code_label(),
    };
    if let Some(m) = &s.metrics {
        m.duration.observe(took);
        m.hook.with_label_values(&[code_class(&code)]).observe(took);
    }
    match result {
        Ok(reply) => {
            s.backoff.reset(k);
            s.ids.delivered(k);
            if event == hook::SYNC
                && let Some(rv) = &obj.metadata.resource_version
            {
                lock(&s.delivered).insert(k.to_string(), rv.clone());
            }
            if let Some(m) = &s.metrics {
                m.success.inc();
            }
            s.hook_errors
                .clear(&s.manager.namespace, &s.manager.name, &s.worker);
            debug!(namespace = %s.manager.namespace, name = %s.manager.name, worker = %s.worker,
                object = %k, event, code = %code, took_ms = (took * 1000.0) as u64,
                requeue_after = ?reply.requeue_after.or(s.resync), "hook call succeeded");
            Ok(reply)
        }
        Err(source) => {
            let (attempt, backoff) = s.backoff.failure(k);
            // The hook may say when to come back (`retryAfterSeconds`, within 1 s..1 h).
            let retry_in = match &source {
                HookError::Status {
                    retry_after: Some(d),
                    ..
                } => *d,
                _ => backoff,
            };
            if let Some(m) = &s.metrics {
                m.error.inc();
            }
            s.hook_errors.set(
                &s.manager.namespace,
                &s.manager.name,
                &s.worker,
                &code,
                &source.to_string(),
                k,
            );
            warn!(namespace = %s.manager.namespace, name = %s.manager.name, worker = %s.worker,
                object = %k, event, error = %source, attempt, retry_in_ms = retry_in.as_millis() as u64,
                "hook call failed; will retry");
            Err(ReconcileError::Hook {
                source,
                attempt,
                retry_in,
            })
        }
    }
}

/// Delivers the pending deletion of `k` (best effort): retried like any call until the hook
/// answers 2xx or the term ends; waits while a call about the same object is in flight.
async fn deliver_deletion(s: Arc<Shared>, k: String) {
    let Ok(_slot) = s.deletion_slots.acquire().await else {
        return;
    };
    // A new delivery: no retry state of earlier calls about the object.
    s.forget(&k);
    loop {
        let Some(obj) = s.tombstones.get(&k) else {
            return;
        };
        let Some(claim) = InFlight::deletion(&s, &k) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        match call_hook(&s, &obj, &k, hook::DELETED, claim).await {
            Ok(_) => {
                if s.tombstones.delivered(&k, &obj) {
                    s.forget(&k);
                    return;
                }
                // Deleted again meanwhile (a newer object of that name): deliver that too.
                s.forget(&k);
            }
            Err(ReconcileError::Fenced(_)) => return,
            Err(ReconcileError::Hook { retry_in, .. }) => tokio::time::sleep(retry_in).await,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// The `code` label of `hook_request_duration_seconds`: a fixed set (`1xx`..`5xx`, `other`
/// for a status outside 100..=599, `error` for no answer), so a hook answering many distinct
/// status codes cannot grow `/metrics`.
pub fn code_class(code: &str) -> &'static str {
    match code.parse::<u16>() {
        Ok(100..=199) => "1xx",
        Ok(200..=299) => "2xx",
        Ok(300..=399) => "3xx",
        Ok(400..=499) => "4xx",
        Ok(500..=599) => "5xx",
        Ok(_) => "other",
        // The hook policy refused the destination (by resolved address): its own series, so
        // a refusal is never mistaken for a network error.
        Err(_) if code == "refused" => "refused",
        Err(_) => "error",
    }
}

fn error_policy(_obj: Arc<DynamicObject>, err: &ReconcileError, _s: Arc<Shared>) -> Action {
    match err {
        // The term is ending; the next leader starts from a full list.
        ReconcileError::Fenced(_) => Action::await_change(),
        ReconcileError::NoSigningKeys => Action::requeue(Duration::from_secs(1)),
        ReconcileError::Hook { retry_in, .. } => Action::requeue(*retry_in),
        ReconcileError::DeletionPending => Action::requeue(Duration::from_millis(500)),
        // Ends the worker (see `on_error`).
        ReconcileError::FinalizerForbidden(_) => Action::await_change(),
        ReconcileError::Finalizer(_) => Action::requeue(Duration::from_secs(1)),
    }
}

#[cfg(test)]
mod tests;
