//! One worker across leadership terms: preflight (identity, watch target, signing keys, TLS
//! material), then per term a kube-runtime controller over the watched resource whose reconciles
//! are [`super::delivery`]'s, with the watch cache budgets, the signing and TLS refreshes and
//! the errors that end the worker.

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, TypeMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::reflector;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, watcher};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::backoff::RetryBackoff;
use super::cache::{ReplicaCaches, TermCache, WatchBackoff, WatchBudget};
use super::hook::ManagerRef;
use super::preflight::{Identity, WatchTarget};
use crate::api::conditions::StartupFailure;
use crate::manager::runtime::{Failure, RunContext, Runnable};
use crate::metrics::Metrics;
use crate::validation::ResolvedWorker;

use super::delivery::{
    ReconcileError, Shared, WorkerMetrics, deliver_deletion, error_policy, key, reconcile,
};
use super::{HttpCell, cache, deletions, errors, finalizer, lock, preflight, signing, tls};

/// A worker: a [`Runnable`] running one controller per leadership term.
pub struct Worker(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) manager: ManagerRef,
    pub(crate) spec: ResolvedWorker,
    pub(crate) who: Identity,
    pub(crate) client: Result<Arc<kube::Client>, String>,
    pub(crate) http: HttpCell,
    /// The TLS material the current client was built from (custom TLS only).
    pub(crate) tls: Mutex<Option<tls::Material>>,
    pub(crate) hook_errors: errors::HookErrors,
    pub(crate) metrics: Option<Metrics>,
    pub(crate) identity: String,
    /// Resolved by preflight, reused by every term.
    pub(crate) target: Mutex<Option<WatchTarget>>,
    /// Hook calls in flight for the whole config (`--max-hook-calls-per-config`).
    pub(crate) hook_slots: Arc<tokio::sync::Semaphore>,
    /// Objects in the watch caches of the whole config (`--max-watched-objects-per-config`).
    pub(crate) watched: Arc<WatchBudget>,
    /// The bytes of every watch cache of the replica, per namespace and in total.
    pub(crate) caches: Arc<ReplicaCaches>,
    /// The hook signing keys (empty without `signingSecretRef`).
    pub(crate) keys: signing::KeyCell,
    /// How often a running worker re-reads the signing Secret.
    pub(crate) signing_refresh: Duration,
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
