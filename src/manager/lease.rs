//! The Lease record and the store it lives in.
//!
//! [`LeaseStore`] is the seam between the election state machine and the API server: the real
//! implementation ([`super::kube_store::KubeLeaseStore`]) talks to `coordination.k8s.io/v1`
//! Leases; unit tests use an in-memory store with injected faults.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use thiserror::Error;
use tokio::sync::watch;

/// The fields of a Lease that leader election reads and writes, with client-go's meaning.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    /// `spec.holderIdentity`; `None` or empty means free.
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds` the holder advertises.
    pub lease_duration_seconds: Option<i32>,
    /// `spec.acquireTime` (MicroTime).
    pub acquire_time: Option<Timestamp>,
    /// `spec.renewTime` (MicroTime).
    pub renew_time: Option<Timestamp>,
    /// `spec.leaseTransitions`: incremented on every change of holder; our fencing token.
    pub lease_transitions: Option<i32>,
    /// `metadata.resourceVersion`, for optimistic concurrency.
    pub resource_version: Option<String>,
}

impl LeaseRecord {
    /// The holder, when not empty.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }

    /// Same content, ignoring the resource version.
    pub fn same_content(&self, other: &LeaseRecord) -> bool {
        self.holder == other.holder
            && self.lease_duration_seconds == other.lease_duration_seconds
            && self.acquire_time == other.acquire_time
            && self.renew_time == other.renew_time
            && self.lease_transitions == other.lease_transitions
    }
}

/// Why a store call failed. The variants are what election logic branches on.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StoreError {
    /// The Lease does not exist.
    #[error("lease not found")]
    NotFound,
    /// Create lost a race: the Lease exists already.
    #[error("lease already exists")]
    AlreadyExists,
    /// Update lost a race: the resourceVersion is stale.
    #[error("lease was modified concurrently (resourceVersion conflict)")]
    Conflict,
    /// The Lease's namespace does not exist.
    #[error("lease namespace {0:?} does not exist")]
    NamespaceNotFound(String),
    /// RBAC forbids the call.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The call did not answer within its timeout.
    #[error("lease API call timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The Lease exists, was not created by the operator, and the config does not adopt it:
    /// the store refuses to write it.
    #[error("not owned: {0}")]
    NotOwned(String),
    /// Anything else (connection refused, 5xx, ...): transient.
    #[error("lease API call failed: {0}")]
    Other(String),
}

/// Where the Lease lives. Implementations must give each call its own timeout (the caller also
/// bounds it) and must never block forever.
pub trait LeaseStore: Send + Sync + 'static {
    /// Reads the Lease.
    fn get(&self) -> impl Future<Output = Result<LeaseRecord, StoreError>> + Send;
    /// Creates the Lease; `AlreadyExists` when someone else did first.
    fn create(
        &self,
        record: &LeaseRecord,
    ) -> impl Future<Output = Result<LeaseRecord, StoreError>> + Send;
    /// Replaces the Lease (full object) iff its resourceVersion still equals
    /// `record.resource_version`; `Conflict` otherwise, `NotFound` when it was deleted.
    fn update(
        &self,
        record: &LeaseRecord,
    ) -> impl Future<Output = Result<LeaseRecord, StoreError>> + Send;
    /// A stream of the Lease as a watch sees it (`None` when deleted), if this store watches.
    /// Candidates use it to take over a released lease at once.
    fn subscribe(&self) -> Option<watch::Receiver<Option<LeaseRecord>>>;

    /// True when the watch behind [`LeaseStore::subscribe`] sees every change of this Lease
    /// (a label-narrowed watch does not see a Lease without the label). A follower polls only
    /// when this is false.
    fn watch_covers(&self) -> bool {
        true
    }

    /// True when the Lease as last read exists and was not created by the operator (it lacks
    /// the `app.kubernetes.io/managed-by=manager-operator` label). Such a Lease is written only
    /// when the config adopts it.
    fn foreign(&self) -> bool {
        false
    }

    /// A background task that feeds [`LeaseStore::subscribe`] (e.g. a watch), owned and
    /// cancelled by the manager. None when the store needs none.
    fn background(self: Arc<Self>) -> Option<futures::future::BoxFuture<'static, ()>> {
        None
    }
}
