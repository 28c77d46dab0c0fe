//! How managers built by the controller reach the cluster: Leases through the operator's own
//! client, workers built by a factory (the real one impersonates each config's service
//! account; tests may plug in their own).

use std::sync::Arc;

use crate::manager::election::ElectionTelemetry;
use crate::manager::kube_store::KubeLeaseStore;
use crate::manager::lease_hub::LeaseHub;
use crate::manager::runtime::{Failure, ManagerEnv, ManagerTelemetry, Placement, Runnable};
use crate::metrics::Metrics;
use crate::placement::PlacementService;
use crate::validation::ResolvedConfig;

/// Builds the runnables of one config.
pub type RunnableFactory =
    Arc<dyn Fn(&ResolvedConfig) -> Result<Vec<Arc<dyn Runnable>>, Failure> + Send + Sync>;

/// The environment of managers run by the controller.
#[derive(Clone)]
pub struct KubeEnv {
    /// Client with the operator's identity and a connection pool of its own, for Lease traffic
    /// only: renewals never queue behind the workers' lists and watches.
    pub lease_client: kube::Client,
    /// The replica's shared Lease watches (one per namespace).
    pub hub: Arc<LeaseHub>,
    /// Placement among replicas (None: always preferred).
    pub placement: Option<Arc<PlacementService>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Worker factory.
    pub runnables: RunnableFactory,
    /// The last hook error of every worker on this replica (the workers write it).
    pub hook_errors: crate::workers::errors::HookErrors,
    /// Removes a finalize-mode worker's finalizer from every object it watches (when the
    /// worker, its config or the setting goes away); `None` where workers are not real.
    pub release: Option<ReleaseFn>,
}

/// Removes the finalizer of worker `w` of `cfg` from the objects it watches; the count of
/// objects changed, or why not.
pub type ReleaseFn = Arc<
    dyn Fn(
            &ResolvedConfig,
            &crate::validation::ResolvedWorker,
        ) -> futures::future::BoxFuture<'static, Result<usize, String>>
        + Send
        + Sync,
>;

impl ManagerEnv for KubeEnv {
    type Store = KubeLeaseStore;

    fn lease_store(&self, cfg: &ResolvedConfig) -> Arc<KubeLeaseStore> {
        Arc::new(
            KubeLeaseStore::with_hub(
                self.lease_client.clone(),
                &self.hub,
                &cfg.election.lease_namespace,
                &cfg.election.lease_name,
            )
            .adopting(cfg.election.adopt_existing_lease),
        )
    }

    fn runnables(&self, cfg: &ResolvedConfig) -> Result<Vec<Arc<dyn Runnable>>, Failure> {
        (self.runnables)(cfg)
    }

    fn telemetry(&self, cfg: &ResolvedConfig) -> ManagerTelemetry {
        let m = &self.metrics;
        ManagerTelemetry {
            election: ElectionTelemetry {
                renew_duration: Some(m.lease_renew_duration_seconds.clone()),
                renew_failures: Some(
                    m.lease_renew_failures_total
                        .with_label_values(&[cfg.namespace.as_str(), cfg.name.as_str()]),
                ),
            },
            tasks: Some(m.tasks.clone()),
            startup_duration: Some(m.startup_duration_seconds.clone()),
        }
    }

    fn placement(&self, cfg: &ResolvedConfig) -> Placement {
        match &self.placement {
            None => Placement::default(),
            Some(p) => Placement {
                rank: Some(p.rank_for(&format!("{}/{}", cfg.namespace, cfg.name))),
                pacer: Some(p.pacer.clone()),
                handovers: Some(
                    self.metrics
                        .handovers_total
                        .with_label_values(&["rebalance"]),
                ),
            },
        }
    }
}
