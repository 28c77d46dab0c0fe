//! Workers (SPEC §4): one kube-runtime [`Controller`] over [`DynamicObject`] per
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
//!
//! Metrics (all labelled `{namespace,name,worker}` except the hook histogram):
//! `reconcile_total{result=success|error}` (one per hook call), `reconcile_duration_seconds`,
//! `workers_active` (hook calls in flight), `queue_depth` (objects in the watch cache whose
//! current `resourceVersion` has not been delivered successfully and that are not being
//! delivered right now: queued, or waiting for a retry; refreshed every second, 0 when this
//! replica does not lead) and `hook_request_duration_seconds{code}` (status or `error`).

pub mod backoff;
pub mod clients;
pub mod hook;
pub mod preflight;

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::api::{Api, DynamicObject, TypeMeta};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use prometheus::{Histogram, HistogramVec, IntCounter, IntGauge};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use url::Url;

use crate::api::conditions::StartupFailure;
use crate::manager::fence::{Fence, FenceError};
use crate::manager::runtime::{Failure, RunContext, Runnable};
use crate::metrics::Metrics;
use crate::validation::{ResolvedConfig, ResolvedWorker};
use backoff::RetryBackoff;
use hook::{HookError, HookReply, HookRequest, ManagerRef};
use preflight::{Identity, WatchTarget};

/// What workers need from the operator process.
#[derive(Clone)]
pub struct WorkerEnv {
    /// The operator's own API server config; workers clone it and impersonate the config's
    /// service account.
    pub base: kube::Config,
    /// The hook HTTP client (see [`hook::http_client`]: no proxy, no redirects).
    pub http: reqwest::Client,
    /// Metrics to record into, if any.
    pub metrics: Option<Metrics>,
    /// This replica's Lease holder identity (sent to hooks as `holder`).
    pub identity: String,
    /// Impersonating clients shared by the workers acting as the same service account.
    pub clients: clients::ClientCache,
}

/// Errors building the pieces workers run on.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    /// The hook HTTP client could not be built.
    #[error("building the hook HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Builds the hook HTTP client (see [`hook::http_client`]).
pub fn hook_http_client() -> Result<reqwest::Client, WorkersError> {
    Ok(hook::http_client()?)
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
    cfg.workers
        .iter()
        .map(|w| {
            let client = env.clients.get(&env.base, &who.user);
            Arc::new(Worker(Arc::new(Inner {
                manager: ManagerRef {
                    namespace: cfg.namespace.clone(),
                    name: cfg.name.clone(),
                },
                spec: w.clone(),
                who: who.clone(),
                client,
                http: env.http.clone(),
                metrics: env.metrics.clone(),
                identity: env.identity.clone(),
                target: Mutex::new(None),
            }))) as Arc<dyn Runnable>
        })
        .collect()
}

/// A worker: a [`Runnable`] running one controller per leadership term.
pub struct Worker(Arc<Inner>);

struct Inner {
    manager: ManagerRef,
    spec: ResolvedWorker,
    who: Identity,
    client: Result<Arc<kube::Client>, String>,
    http: reqwest::Client,
    metrics: Option<Metrics>,
    identity: String,
    /// Resolved by preflight, reused by every term.
    target: Mutex<Option<WatchTarget>>,
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

    async fn preflight(&self) -> Result<(), Failure> {
        let client = self.client()?;
        let target = preflight::discover(&client, &self.spec, &self.who).await?;
        preflight::check_access(&client, &self.spec, &target, &self.who).await?;
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
        let api: Api<DynamicObject> = match &target.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &target.resource),
            None => Api::all_with(client, &target.resource),
        };
        let mut wc = watcher::Config::default();
        if let Some(sel) = &self.spec.label_selector {
            wc = wc.labels(sel);
        }
        let controller = Controller::new_with(api, wc, target.resource.clone())
            .with_config(controller::Config::default().concurrency(self.spec.concurrency))
            .graceful_shutdown_on(ctx.stop.clone().cancelled_owned());
        let store = controller.store();
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
        });
        info!(namespace = %self.manager.namespace, name = %self.manager.name, worker = %self.spec.name,
            resource = %target.resource_name(), scope = %target.scope_phrase(),
            selector = self.spec.label_selector.as_deref().unwrap_or(""), as_user = %self.who.user,
            concurrency = self.spec.concurrency, fencing_token = ctx.fence.token(), "worker starting");

        let stream = controller.run(reconcile, error_policy, shared.clone());
        let mut stream = pin!(stream);
        let mut ready = pin!(store.wait_until_ready());
        let mut is_ready = false;
        let mut drain_until: Option<Instant> = None;
        let drain_bound = self.spec.hook_timeout + Duration::from_secs(1);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();

        let result = loop {
            tokio::select! {
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
                    None => break Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        if let Some(f) = self.on_error(e, &shared, &target) {
                            break Err(f);
                        }
                    }
                },
                _ = tick.tick() => shared.refresh(&store),
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
                worker = %self.spec.name, reason = %f.reason, message = %f.message, "worker failed"),
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
                // Deleted while a retry was scheduled.
                shared.forget(&key(r.namespace.as_deref(), &r.name));
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
    http: reqwest::Client,
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
}

impl Shared {
    fn forget(&self, k: &str) {
        self.backoff.reset(k);
        lock(&self.delivered).remove(k);
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
        lock(&self.delivered).retain(|k, _| live.contains(k));
        self.backoff.retain(|k| live.contains(k));
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
    fn new(shared: &'a Shared, key: &str) -> Self {
        if let Some(m) = &shared.metrics {
            m.active.inc();
        }
        lock(&shared.in_flight).insert(key.to_string());
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
    /// The object could not be encoded.
    #[error("encoding the object: {0}")]
    Encode(#[from] serde_json::Error),
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

async fn reconcile(obj: Arc<DynamicObject>, s: Arc<Shared>) -> Result<Action, ReconcileError> {
    let k = object_key(&obj);
    let mut object = (*obj).clone();
    if object.types.is_none() {
        object.types = Some(s.types.clone());
    }
    let object = serde_json::to_value(&object)?;
    // Right before the side effect: is this replica still the leader?
    let token = s.fence.check()?;
    let body = HookRequest {
        manager: s.manager.clone(),
        worker: s.worker.clone(),
        fencing_token: token,
        holder: s.identity.clone(),
        object,
    };
    let _in_flight = InFlight::new(&s, &k);
    let started = Instant::now();
    let result = tokio::select! {
        r = hook::call(&s.http, &s.url, s.timeout, &body) => r,
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
        m.hook.with_label_values(&[code.as_str()]).observe(took);
    }
    match result {
        Ok(HookReply { requeue_after, .. }) => {
            s.backoff.reset(&k);
            if let Some(rv) = &obj.metadata.resource_version {
                lock(&s.delivered).insert(k.clone(), rv.clone());
            }
            if let Some(m) = &s.metrics {
                m.success.inc();
            }
            let action = match requeue_after.or(s.resync) {
                Some(d) => Action::requeue(d),
                None => Action::await_change(),
            };
            debug!(namespace = %s.manager.namespace, name = %s.manager.name, worker = %s.worker,
                object = %k, code = %code, took_ms = (took * 1000.0) as u64,
                requeue_after = ?requeue_after.or(s.resync), "hook call succeeded");
            Ok(action)
        }
        Err(source) => {
            let (attempt, retry_in) = s.backoff.failure(&k);
            if let Some(m) = &s.metrics {
                m.error.inc();
            }
            warn!(namespace = %s.manager.namespace, name = %s.manager.name, worker = %s.worker,
                object = %k, error = %source, attempt, retry_in_ms = retry_in.as_millis() as u64,
                "hook call failed; will retry");
            Err(ReconcileError::Hook {
                source,
                attempt,
                retry_in,
            })
        }
    }
}

fn error_policy(_obj: Arc<DynamicObject>, err: &ReconcileError, _s: Arc<Shared>) -> Action {
    match err {
        // The term is ending; the next leader starts from a full list.
        ReconcileError::Fenced(_) => Action::await_change(),
        ReconcileError::Encode(_) => Action::requeue(backoff::DEFAULT_CAP),
        ReconcileError::Hook { retry_in, .. } => Action::requeue(*retry_in),
    }
}

#[cfg(test)]
mod tests;
