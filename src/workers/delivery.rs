//! Delivery: what one term's reconciles share (`Shared`), the reconcile of one object (fence
//! check, finalizer, hook call with its retries, deletions through tombstones) and its metrics.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DynamicObject, TypeMeta};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use prometheus::{Histogram, HistogramVec, IntCounter, IntGauge};
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use super::backoff::RetryBackoff;
use super::hook::{HookError, HookReply, HookRequest, ManagerRef, TypedObject};
use crate::manager::fence::{Fence, FenceError};

use super::{HttpCell, deletions, errors, finalizer, hook, lock, signing};

pub(crate) struct WorkerMetrics {
    pub(crate) success: IntCounter,
    pub(crate) error: IntCounter,
    pub(crate) duration: Histogram,
    pub(crate) active: IntGauge,
    pub(crate) queue: IntGauge,
    pub(crate) hook: HistogramVec,
}

/// What every reconcile of one term shares.
pub(crate) struct Shared {
    pub(crate) manager: ManagerRef,
    pub(crate) worker: String,
    pub(crate) identity: String,
    pub(crate) fence: Fence,
    pub(crate) http: HttpCell,
    pub(crate) url: Url,
    pub(crate) timeout: Duration,
    pub(crate) resync: Option<Duration>,
    /// apiVersion/kind, filled in when the API server left them out (list items).
    pub(crate) types: TypeMeta,
    pub(crate) backoff: RetryBackoff,
    /// Object key → resourceVersion last delivered successfully.
    pub(crate) delivered: Mutex<HashMap<String, String>>,
    /// Object keys with a hook call in flight.
    pub(crate) in_flight: Mutex<HashSet<String>>,
    pub(crate) metrics: Option<WorkerMetrics>,
    /// The config's hook-call permits (shared by its workers).
    pub(crate) hook_slots: Arc<tokio::sync::Semaphore>,
    /// Delivery ids (`webhook-id`) of objects whose delivery is pending or being retried.
    pub(crate) ids: signing::DeliveryIds,
    /// The signing keys, when the worker signs its calls.
    pub(crate) keys: Option<signing::KeyCell>,
    /// The worker's finalizer (finalize mode).
    pub(crate) finalizer: Option<String>,
    /// The watched resource, as the service account (finalizer patches).
    pub(crate) api: Api<DynamicObject>,
    /// Deletions waiting for their `Deleted` call.
    pub(crate) tombstones: deletions::Tombstones,
    /// Deletion deliveries at once (the worker's concurrency).
    pub(crate) deletion_slots: tokio::sync::Semaphore,
    /// Where the last hook error is shown (`status.workers[].lastHookError`).
    pub(crate) hook_errors: errors::HookErrors,
}

impl Shared {
    pub(crate) fn forget(&self, k: &str) {
        self.backoff.reset(k);
        lock(&self.delivered).remove(k);
        self.ids.delivered(k);
    }

    /// The hook client of this moment (replaced when the TLS settings change).
    pub(crate) fn http(&self) -> hook::HookClient {
        self.http.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Recomputes `queue_depth` and drops bookkeeping of objects that are gone.
    pub(crate) fn refresh(&self, store: &Store<DynamicObject>) {
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
pub(crate) struct InFlight<'a> {
    shared: &'a Shared,
    key: String,
}

impl<'a> InFlight<'a> {
    /// Claims `key` for a `Sync` call: `None` while a deletion of it waits for delivery (the
    /// object was deleted and created again; the deletion goes first). kube-runtime never runs
    /// two reconciles of one object at once, so a running `Deleted` call is the only rival.
    pub(crate) fn sync(shared: &'a Shared, key: &str) -> Option<Self> {
        let mut in_flight = lock(&shared.in_flight);
        if shared.tombstones.contains(key) || in_flight.contains(key) {
            return None;
        }
        in_flight.insert(key.to_string());
        drop(in_flight);
        Some(Self::counted(shared, key))
    }

    /// Claims `key` for a best-effort `Deleted` call: `None` while a call of it is in flight.
    pub(crate) fn deletion(shared: &'a Shared, key: &str) -> Option<Self> {
        if !lock(&shared.in_flight).insert(key.to_string()) {
            return None;
        }
        Some(Self::counted(shared, key))
    }

    pub(crate) fn counted(shared: &'a Shared, key: &str) -> Self {
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

pub(crate) fn key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

pub(crate) fn object_key(o: &DynamicObject) -> String {
    key(
        o.metadata.namespace.as_deref(),
        o.metadata.name.as_deref().unwrap_or(""),
    )
}

/// A finalizer patch's error as a reconcile error (403: the worker cannot work).
pub(crate) fn finalizer_error(s: &Shared, e: kube::Error) -> ReconcileError {
    match e {
        kube::Error::Api(st) if st.code == 403 => ReconcileError::FinalizerForbidden(format!(
            "worker {}: finalize: true needs patch on the watched objects, and the service \
             account may not ({})",
            s.worker, st.message
        )),
        e => ReconcileError::Finalizer(e.to_string()),
    }
}

pub(crate) async fn reconcile(
    obj: Arc<DynamicObject>,
    s: Arc<Shared>,
) -> Result<Action, ReconcileError> {
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
pub(crate) async fn call_hook(
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
pub(crate) async fn deliver_deletion(s: Arc<Shared>, k: String) {
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
/// for a status outside 100..=599, `refused` when the hook policy refused the destination,
/// `error` for no answer), so a hook answering many distinct
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

pub(crate) fn error_policy(
    _obj: Arc<DynamicObject>,
    err: &ReconcileError,
    _s: Arc<Shared>,
) -> Action {
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
