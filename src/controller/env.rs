//! How managers built by the controller reach the cluster: Leases through the operator's own
//! client, workers built by a factory (the real one impersonates each config's service
//! account; tests may plug in their own).

use std::sync::Arc;

use crate::manager::election::ElectionTelemetry;
use crate::manager::kube_store::KubeLeaseStore;
use crate::manager::runtime::{Failure, ManagerEnv, ManagerTelemetry, Runnable};
use crate::metrics::Metrics;
use crate::validation::ResolvedConfig;

/// Builds the runnables of one config.
pub type RunnableFactory =
    Arc<dyn Fn(&ResolvedConfig) -> Result<Vec<Arc<dyn Runnable>>, Failure> + Send + Sync>;

/// The environment of managers run by the controller.
#[derive(Clone)]
pub struct KubeEnv {
    /// Client with the operator's identity (Leases).
    pub client: kube::Client,
    /// Metrics.
    pub metrics: Metrics,
    /// Worker factory.
    pub runnables: RunnableFactory,
}

impl ManagerEnv for KubeEnv {
    type Store = KubeLeaseStore;

    fn lease_store(&self, cfg: &ResolvedConfig) -> Arc<KubeLeaseStore> {
        Arc::new(KubeLeaseStore::new(
            self.client.clone(),
            &cfg.election.lease_namespace,
            &cfg.election.lease_name,
        ))
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
}
