//! [`LeaseStore`] on a real `coordination.k8s.io/v1` Lease, fed by the replica's shared,
//! label-narrowed Lease watch ([`LeaseHub`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use super::lease::{LeaseRecord, LeaseStore, StoreError};
use super::lease_hub::{LeaseHub, LeaseSubscription};

/// Label put on the Leases the operator writes: it narrows the shared Lease watch, and tells
/// humans (and cleanup checks) whose Lease it is.
pub const MANAGED_BY_LABEL: (&str, &str) =
    ("app.kubernetes.io/managed-by", crate::api::FIELD_MANAGER);

/// A Lease in the API server.
pub struct KubeLeaseStore {
    api: Api<Lease>,
    namespace: String,
    name: String,
    sub: LeaseSubscription,
    /// The Lease as last read carried [`MANAGED_BY_LABEL`], so the shared watch sees it.
    labelled: AtomicBool,
    /// Metadata of the Lease as last read, so updates keep foreign labels and annotations
    /// (a full-object update, like client-go's).
    meta: std::sync::Mutex<Option<ObjectMeta>>,
    /// An existing Lease without [`MANAGED_BY_LABEL`] may be written (taken over).
    adopt: bool,
    /// The Lease as last read exists and lacks [`MANAGED_BY_LABEL`].
    foreign: AtomicBool,
}

/// Maps a kube error to what election logic branches on.
pub fn store_error(e: kube::Error, namespace: &str, creating: bool) -> StoreError {
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            let kind = s.details.as_ref().map(|d| d.kind.as_str()).unwrap_or("");
            if creating || kind == "namespaces" {
                StoreError::NamespaceNotFound(namespace.to_string())
            } else {
                StoreError::NotFound
            }
        }
        kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists" => {
            StoreError::AlreadyExists
        }
        kube::Error::Api(s) if s.code == 409 => StoreError::Conflict,
        kube::Error::Api(s) if s.code == 403 => StoreError::Forbidden(s.message),
        // A namespace being deleted refuses new objects.
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => StoreError::Other(s.message),
        other => StoreError::Other(other.to_string()),
    }
}

/// The election fields of a Lease.
pub fn to_record(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        lease_duration_seconds: spec.lease_duration_seconds,
        acquire_time: spec.acquire_time.map(|t| t.0),
        renew_time: spec.renew_time.map(|t| t.0),
        lease_transitions: spec.lease_transitions,
        resource_version: lease.metadata.resource_version.clone(),
    }
}

fn has_label(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL.0))
        .is_some_and(|v| v == MANAGED_BY_LABEL.1)
}

impl KubeLeaseStore {
    /// A store for `namespace/name` with a watch of its own (a hub with one subscriber). Must
    /// be called inside a tokio runtime.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        let hub = LeaseHub::new(client.clone());
        Self::with_hub(client, &hub, namespace, name)
    }

    /// A store for `namespace/name` fed by the shared watches of `hub`. Must be called inside a
    /// tokio runtime.
    pub fn with_hub(
        client: kube::Client,
        hub: &Arc<LeaseHub>,
        namespace: &str,
        name: &str,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            sub: hub.subscribe(namespace, name),
            labelled: AtomicBool::new(false),
            meta: std::sync::Mutex::new(None),
            adopt: false,
            foreign: AtomicBool::new(false),
        }
    }

    /// Lets this store write an existing Lease that the operator did not create (one without
    /// [`MANAGED_BY_LABEL`]); by default such a Lease is only read, and updates are refused
    /// with [`StoreError::NotOwned`].
    pub fn adopting(mut self, adopt: bool) -> Self {
        self.adopt = adopt;
        self
    }

    fn remember(&self, lease: Lease) -> LeaseRecord {
        let rec = to_record(&lease);
        let labelled = has_label(&lease.metadata);
        self.labelled.store(labelled, Ordering::Release);
        self.foreign.store(!labelled, Ordering::Release);
        if let Ok(mut m) = self.meta.lock() {
            *m = Some(lease.metadata);
        }
        rec
    }

    fn to_lease(&self, rec: &LeaseRecord) -> Lease {
        let known = self.meta.lock().ok().and_then(|m| m.clone());
        let metadata = match known {
            Some(mut m) => {
                m.resource_version = rec.resource_version.clone();
                m.managed_fields = None;
                // Every Lease we write joins the shared watch.
                m.labels.get_or_insert_with(BTreeMap::new).insert(
                    MANAGED_BY_LABEL.0.to_string(),
                    MANAGED_BY_LABEL.1.to_string(),
                );
                m
            }
            None => ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version: rec.resource_version.clone(),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.0.to_string(),
                    MANAGED_BY_LABEL.1.to_string(),
                )])),
                ..ObjectMeta::default()
            },
        };
        Lease {
            metadata,
            spec: Some(LeaseSpec {
                holder_identity: rec.holder.clone(),
                lease_duration_seconds: rec.lease_duration_seconds,
                acquire_time: rec.acquire_time.map(MicroTime),
                renew_time: rec.renew_time.map(MicroTime),
                lease_transitions: rec.lease_transitions,
                ..LeaseSpec::default()
            }),
        }
    }
}

impl LeaseStore for KubeLeaseStore {
    async fn get(&self) -> Result<LeaseRecord, StoreError> {
        self.api
            .get(&self.name)
            .await
            .map(|l| self.remember(l))
            .map_err(|e| store_error(e, &self.namespace, false))
    }

    async fn create(&self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        let mut rec = record.clone();
        rec.resource_version = None;
        if let Ok(mut m) = self.meta.lock() {
            *m = None;
        }
        self.foreign.store(false, Ordering::Release);
        self.api
            .create(&PostParams::default(), &self.to_lease(&rec))
            .await
            .map(|l| self.remember(l))
            .map_err(|e| store_error(e, &self.namespace, true))
    }

    async fn update(&self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        if self.foreign.load(Ordering::Acquire) && !self.adopt {
            return Err(StoreError::NotOwned(format!(
                "Lease {}/{} was not created by manager-operator (no {}={} label)",
                self.namespace, self.name, MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1
            )));
        }
        self.api
            .replace(&self.name, &PostParams::default(), &self.to_lease(record))
            .await
            .map(|l| self.remember(l))
            .map_err(|e| store_error(e, &self.namespace, false))
    }

    fn subscribe(&self) -> Option<watch::Receiver<Option<LeaseRecord>>> {
        Some(self.sub.receiver())
    }

    fn watch_covers(&self) -> bool {
        self.labelled.load(Ordering::Acquire)
    }

    fn foreign(&self) -> bool {
        self.foreign.load(Ordering::Acquire)
    }
}
