//! `ManagerConfig.status` (docs/design.md §2.2).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a ManagerConfig, written by the operator replica that leads it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagerConfigStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current holder of the Lease, as seen by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,

    /// The Lease's leaseTransitions: the fencing token every hook call carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i32>,

    /// Per-worker state on the leader.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerStatus>,

    /// "running/desired" reconcile workers summed over all workers (the WORKERS column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers_summary: Option<String>,

    /// Accepted, Ready and Degraded (metav1.Condition; lastTransitionTime changes only when the
    /// status changes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// State of one worker on the leader.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// The worker's name.
    pub name: String,
    /// Configured concurrency.
    #[schemars(extend("format" = "int32"))]
    pub concurrency: u16,
    /// Reconcile workers running now.
    #[schemars(extend("format" = "int32"))]
    pub running: u16,
    /// The last failed hook call of this worker on the leader, cleared by the next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hook_error: Option<LastHookError>,
}

/// A failed hook call, as `status.workers[].lastHookError` shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastHookError {
    /// The HTTP status the hook answered, or `error` (no answer: timeout, connection or TLS
    /// failure) or `refused` (the hook policy refused the resolved address).
    pub code: String,
    /// What went wrong (at most 256 characters).
    pub message: String,
    /// The object the call was about (`namespace/name`).
    pub object: String,
    /// When the call failed.
    pub time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}
