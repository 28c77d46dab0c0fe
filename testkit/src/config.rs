//! Typed ManagerConfig builders over [`manager_operator::api`]: tests state only what differs
//! from the fast defaults of the integration tests, and get the CRD struct (or its JSON for
//! `kubectl apply`).
//!
//! Defaults of [`ManagerConfigBuilder::new`]: service account `worker`, leader election
//! leaseDuration 3s / renewDeadline 2s / retryPeriod 500ms, startupTimeout 20s,
//! gracefulShutdownTimeout 5s, no workers. Everything not set is the API type's default (the
//! same the CRD defaults to).
//!
//! ```
//! use manager_operator_testkit::{ManagerConfigBuilder, WorkerBuilder};
//! let mc = ManagerConfigBuilder::new("ns-1", "good")
//!     .worker(
//!         WorkerBuilder::new("cms")
//!             .watch("v1", "ConfigMap")
//!             .selector("app=good")
//!             .hook("http://127.0.0.1:8080/hook")
//!             .timeout("2s"),
//!     )
//!     .build();
//! assert_eq!(mc.spec.leader_election.lease_duration, "3s");
//! assert_eq!(mc.spec.workers[0].watch.label_selector.as_deref(), Some("app=good"));
//! ```

use manager_operator::api::{
    CaBundleRef, HookSpec, ManagerConfig, ManagerConfigSpec, SecretNameRef, SigningSecretRef,
    WorkerSpec,
};
use serde_json::json;

/// Builds one `ManagerConfig`.
#[derive(Clone, Debug)]
pub struct ManagerConfigBuilder {
    mc: ManagerConfig,
}

impl ManagerConfigBuilder {
    /// `ManagerConfig` `ns/name` with the fast test defaults (see the module docs).
    pub fn new(ns: &str, name: &str) -> ManagerConfigBuilder {
        let mut spec: ManagerConfigSpec = serde_json::from_value(json!({ "workers": [] }))
            .expect("the API defaults of an empty spec");
        spec.service_account_name = "worker".into();
        spec.startup_timeout = "20s".into();
        spec.graceful_shutdown_timeout = "5s".into();
        let mut mc = ManagerConfig::new(name, spec);
        mc.metadata.namespace = Some(ns.into());
        ManagerConfigBuilder { mc }.lease("3s", "2s", "500ms")
    }

    /// `spec.serviceAccountName`.
    pub fn service_account(mut self, sa: &str) -> Self {
        self.mc.spec.service_account_name = sa.into();
        self
    }

    /// `spec.leaderElection`'s leaseDuration, renewDeadline and retryPeriod.
    pub fn lease(mut self, duration: &str, renew: &str, retry: &str) -> Self {
        let le = &mut self.mc.spec.leader_election;
        le.lease_duration = duration.into();
        le.renew_deadline = renew.into();
        le.retry_period = retry.into();
        self
    }

    /// `spec.leaderElection.leaseName`.
    pub fn lease_name(mut self, name: &str) -> Self {
        self.mc.spec.leader_election.lease_name = Some(name.into());
        self
    }

    /// `spec.leaderElection.leaseNamespace` (`None`: the config's namespace).
    pub fn lease_namespace(mut self, ns: Option<&str>) -> Self {
        self.mc.spec.leader_election.lease_namespace = ns.map(Into::into);
        self
    }

    /// `spec.leaderElection.adoptExistingLease: true`.
    pub fn adopt_existing_lease(mut self) -> Self {
        self.mc.spec.leader_election.adopt_existing_lease = true;
        self
    }

    /// `spec.startupTimeout`.
    pub fn startup_timeout(mut self, timeout: &str) -> Self {
        self.mc.spec.startup_timeout = timeout.into();
        self
    }

    /// `spec.gracefulShutdownTimeout`.
    pub fn graceful_shutdown_timeout(mut self, timeout: &str) -> Self {
        self.mc.spec.graceful_shutdown_timeout = timeout.into();
        self
    }

    /// Appends a `spec.workers[]` entry.
    pub fn worker(mut self, worker: WorkerBuilder) -> Self {
        self.mc.spec.workers.push(worker.build());
        self
    }

    /// The CRD struct.
    pub fn build(self) -> ManagerConfig {
        self.mc
    }

    /// The object as JSON (with apiVersion and kind), for `kubectl apply -f`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.mc).expect("a ManagerConfig serializes")
    }

    /// `kubectl apply` of the object as admin; panics unless it succeeds.
    pub fn apply(&self) {
        crate::cluster::apply_yaml(&self.to_json());
    }
}

/// Builds one `spec.workers[]` entry. Default: watches `v1` ConfigMaps, hook URL empty (set it
/// with [`WorkerBuilder::hook`]), the API defaults for the rest.
#[derive(Clone, Debug)]
pub struct WorkerBuilder {
    w: WorkerSpec,
}

impl WorkerBuilder {
    /// A worker named `name`.
    pub fn new(name: &str) -> WorkerBuilder {
        let w = serde_json::from_value(json!({
            "name": name,
            "watch": {"apiVersion": "v1", "kind": "ConfigMap"},
            "hook": {"url": ""},
        }))
        .expect("the API defaults of a worker");
        WorkerBuilder { w }
    }

    /// `watch.apiVersion` and `watch.kind`.
    pub fn watch(mut self, api_version: &str, kind: &str) -> Self {
        self.w.watch.api_version = api_version.into();
        self.w.watch.kind = kind.into();
        self
    }

    /// `watch.labelSelector` (an empty string: none).
    pub fn selector(mut self, selector: &str) -> Self {
        self.w.watch.label_selector = (!selector.is_empty()).then(|| selector.into());
        self
    }

    /// `watch.namespace`.
    pub fn watch_namespace(mut self, ns: &str) -> Self {
        self.w.watch.namespace = Some(ns.into());
        self
    }

    /// `concurrency`.
    pub fn concurrency(mut self, n: u16) -> Self {
        self.w.concurrency = n;
        self
    }

    /// `resyncPeriod`.
    pub fn resync(mut self, period: &str) -> Self {
        self.w.resync_period = Some(period.into());
        self
    }

    /// `finalize: true`.
    pub fn finalize(mut self) -> Self {
        self.w.finalize = true;
        self
    }

    /// `hook.url`.
    pub fn hook(mut self, url: &str) -> Self {
        self.w.hook.url = url.into();
        self
    }

    /// `hook.timeout`.
    pub fn timeout(mut self, timeout: &str) -> Self {
        self.w.hook.timeout = timeout.into();
        self
    }

    /// `hook.signingSecretRef`.
    pub fn signing_secret(mut self, name: &str, key: &str) -> Self {
        self.w.hook.signing_secret_ref = Some(SigningSecretRef {
            name: name.into(),
            key: key.into(),
        });
        self
    }

    /// `hook.caBundle` (PEM).
    pub fn ca_bundle(mut self, pem: &str) -> Self {
        self.w.hook.ca_bundle = Some(pem.into());
        self
    }

    /// `hook.caBundleRef` (`kind` `ConfigMap` or `Secret`, its `name` and `key`).
    pub fn ca_bundle_ref(mut self, kind: &str, name: &str, key: &str) -> Self {
        self.w.hook.ca_bundle_ref = Some(CaBundleRef {
            kind: kind.into(),
            name: name.into(),
            key: key.into(),
        });
        self
    }

    /// `hook.clientCertSecretRef`.
    pub fn client_cert_secret(mut self, name: &str) -> Self {
        self.w.hook.client_cert_secret_ref = Some(SecretNameRef { name: name.into() });
        self
    }

    /// Replaces the whole `hook`.
    pub fn hook_spec(mut self, hook: HookSpec) -> Self {
        self.w.hook = hook;
        self
    }

    /// The API struct.
    pub fn build(self) -> WorkerSpec {
        self.w
    }
}
