//! Workers (docs/design.md §4): one kube-runtime [`Controller`](kube::runtime::Controller) over
//! [`DynamicObject`] per `spec.workers[]` entry, listing and watching as the ManagerConfig's
//! service account (impersonated), POSTing every object to the hook with the fencing token.
//!
//! [`runnables`] turns a [`ResolvedConfig`] into one [`Runnable`] per worker ([`worker`]: its
//! preflight and terms; [`delivery`]: the reconcile of one object and its hook call):
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
//! replica does not lead) and `hook_request_duration_seconds{code}` (status class
//! `1xx`..`5xx`, `other`, `refused` or `error`: [`delivery::code_class`]).

pub mod backoff;
pub mod cache;
pub mod clients;
pub mod deletions;
pub mod delivery;
pub mod dns;
pub mod errors;
pub mod finalizer;
pub mod hook;
pub mod preflight;
pub mod signing;
pub mod tls;
pub mod worker;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use tracing::info;

use crate::limits::TenantLimits;
use crate::manager::runtime::Runnable;
use crate::metrics::Metrics;
use crate::validation::{ResolvedConfig, ResolvedWorker};
use cache::{ReplicaCaches, WatchBudget};
pub use delivery::{ReconcileError, code_class};
use hook::ManagerRef;
use preflight::Identity;
use worker::Inner;
pub use worker::Worker;

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

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps: a panic while holding the lock cannot leave them inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
