//! The ManagerConfig controller (docs/design.md §2.2, §2.3, §3): reconciles every ManagerConfig into a
//! [`Manager`](crate::manager::runtime::Manager) in this process and keeps it in step.
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
//!
//! One concern per file:
//!
//! * [`registry`]: what this replica keeps per config, asked by intent (admit, started, failed,
//!   recovered, vanished, waiting), unit-tested with a fake manager;
//! * [`reconcile`]: one reconcile — deletion, a new spec, the tenant checks, the start;
//! * [`observer`]: follows a started manager and keeps status, Events and metrics in step;
//! * [`report`]: status (server-side apply, only when it differs) and Event writing, and a
//!   failed start's metric, status, Event and backoff;
//! * [`status`]: the pure status computation;
//! * [`finalizer`]: the workers' finalizers and the legacy ManagerConfig finalizer;
//! * [`sweep`]: stops managers of vanished configs, restarts configs whose wait is over, and
//!   tells placement when every config was reconciled once;
//! * [`lease_access`]: cross-namespace Lease access of a config's service account;
//! * `env`: how managers reach the cluster;
//! * this module: the shared context and the driver ([`run`]).

pub mod env;
pub mod finalizer;
pub mod lease_access;
pub mod observer;
pub mod reconcile;
pub mod registry;
pub mod report;
pub mod status;
pub mod sweep;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::ManagerConfig;
use crate::manager::runtime::ManagerIdentity;
use crate::metrics::Metrics;
use crate::placement::membership::{self, MembershipConfig};
use crate::placement::{KeySource, PlacementService};
use crate::validation::HookPolicy;
use env::KubeEnv;
use registry::{Entry, Registry};

/// The single field manager for status writes.
pub use crate::api::FIELD_MANAGER;
pub use finalizer::FINALIZER;
pub use reconcile::Error;
pub use registry::{MAX_BACKOFF, backoff};
pub use report::{EVENT_NOTE_MAX_BYTES, truncate_note};
pub use sweep::SWEEP_INTERVAL;

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
    registry: Registry<ObjectRef<ManagerConfig>>,
    store: Arc<std::sync::OnceLock<Store<ManagerConfig>>>,
    trigger: futures::channel::mpsc::UnboundedSender<ObjectRef<ManagerConfig>>,
}

impl Ctx {
    /// Asks the controller to reconcile `key` again (used by observers, and by the sweep for
    /// configs whose wait for a Lease or for namespace room is over).
    pub fn retrigger(&self, key: ObjectRef<ManagerConfig>) {
        let _ = self.trigger.unbounded_send(key);
    }

    /// Stops every manager (graceful, leases released), concurrently and bounded.
    pub async fn stop_all(&self) {
        let (entries, holding) = self.registry.drain().await;
        self.metrics
            .handovers_total
            .with_label_values(&["shutdown"])
            .inc_by(u64::try_from(holding).unwrap_or(0));
        futures::future::join_all(entries.into_iter().map(Entry::stop)).await;
    }

    /// Healthy unless some manager believes it leads but has not renewed within its lease.
    pub async fn leaders_healthy(&self) -> bool {
        self.registry.leaders_healthy().await
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
        registry: Registry::default(),
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
        placement_tasks.push(tokio::spawn(sweep::ready_for_work(
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
    let sweeper = tokio::spawn(sweep::sweep_vanished(
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
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
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
