//! The `ManagerConfig` custom resource: spec types, defaults and the CEL rules the API server
//! enforces by itself (docs/design.md §2, §2.1). The doc comments here become the CRD's schema
//! descriptions, so `kubectl explain` shows them.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::status::ManagerConfigStatus;

/// Regular expression for a positive Go duration (no sign; `"0"` alone is not allowed here).
pub const DURATION_PATTERN: &str = r"^(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$";
/// DNS-1123 label (names of workers, namespaces).
pub const DNS1123_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A key of a Secret's or ConfigMap's data.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// DNS-1123 subdomain (object names such as the Lease's).
pub const DNS1123_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Declares a leader-elected manager: the Lease it elects a leader on, and the workers that run
/// on the leader. The operator runs one such manager per ManagerConfig inside its own process and
/// reports every startup failure in `status.conditions`, as an Event and as a metric.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "manager-operator.io",
    version = "v1alpha1",
    kind = "ManagerConfig",
    plural = "managerconfigs",
    shortname = "mc",
    namespaced,
    status = "ManagerConfigStatus",
    category = "manager-operator",
    doc = "A leader-elected manager: the Lease its replicas elect a leader on (spec.leaderElection) and the workers that run on the leader (spec.workers), each watching one kind of object and calling an HTTP hook with a fencing token. manager-operator runs the manager inside its own process and reports every startup failure in status.conditions, as an Event and as a metric.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Leader","type":"string","jsonPath":".status.leader"}"#,
    printcolumn = r#"{"name":"Workers","type":"string","jsonPath":".status.workersSummary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ManagerConfigSpec {
    /// ServiceAccount (in this namespace) that the workers act as: the operator impersonates it
    /// to list and watch the watched resource, so a config can only watch what this account may
    /// watch. Default "default".
    #[serde(default = "default_service_account")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN_PATTERN))]
    pub service_account_name: String,

    /// Lease-based leader election of this manager (client-go semantics). Rules:
    /// leaseDuration > renewDeadline > 1.2 × retryPeriod, leaseDuration whole seconds.
    #[serde(default)]
    pub leader_election: LeaderElectionSpec,

    /// Upper bound on the time from "elected leader" to "all workers running" (initial lists
    /// synced); past it the start fails with reason StartupTimeout. Go duration, 1s to 1h.
    /// Default "60s".
    #[serde(default = "default_startup_timeout")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('1h')").message("spec.startupTimeout must be between 1s and 1h"))]
    pub startup_timeout: String,

    /// How long workers get to finish in-flight reconciles when they stop (lease lost, config
    /// changed or deleted, operator shutdown). Go duration, 1s to 10m. Default "30s".
    #[serde(default = "default_graceful_shutdown_timeout")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('10m')").message("spec.gracefulShutdownTimeout must be between 1s and 10m"))]
    pub graceful_shutdown_timeout: String,

    /// The workers that run while this manager leads; 1 to 32 entries with unique names.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub workers: Vec<WorkerSpec>,
}

/// Leader election on a `coordination.k8s.io/v1` Lease, interoperable with client-go.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("duration(self.leaseDuration) > duration(self.renewDeadline)").message("spec.leaderElection.renewDeadline must be less than leaseDuration").field_path(".renewDeadline"),
    validation = kube::core::Rule::new("duration(self.renewDeadline) + duration(self.renewDeadline) + duration(self.renewDeadline) + duration(self.renewDeadline) + duration(self.renewDeadline) > duration(self.retryPeriod) + duration(self.retryPeriod) + duration(self.retryPeriod) + duration(self.retryPeriod) + duration(self.retryPeriod) + duration(self.retryPeriod)").message("spec.leaderElection.renewDeadline must be greater than 1.2 × retryPeriod (client-go jitter factor)").field_path(".renewDeadline")
)]
pub struct LeaderElectionSpec {
    /// Name of the Lease. Default: the ManagerConfig's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN_PATTERN))]
    pub lease_name: Option<String>,

    /// Namespace of the Lease. Default: the ManagerConfig's namespace. A different namespace is
    /// admitted only when the requesting user may create and update Leases there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL_PATTERN))]
    pub lease_namespace: Option<String>,

    /// How long a lease is valid after its last renewal: standby candidates wait this long,
    /// measured on their own monotonic clock from the last change they saw, before taking over.
    /// Must be greater than renewDeadline and a whole number of seconds (the Lease stores
    /// integer seconds), 1s to 1h. Default "15s".
    #[serde(default = "default_lease_duration")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('1h')").message("spec.leaderElection.leaseDuration must be between 1s and 1h"))]
    #[x_kube(validation = kube::core::Rule::new("duration(self).getMilliseconds() % 1000 == 0").message("spec.leaderElection.leaseDuration must be a whole number of seconds"))]
    pub lease_duration: String,

    /// How long the leader keeps trying to renew before it gives up leadership and stops its
    /// workers. Must be less than leaseDuration and greater than 1.2 × retryPeriod.
    /// Default "10s".
    #[serde(default = "default_renew_deadline")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = kube::core::Rule::new("duration(self) > duration('0s')").message("spec.leaderElection.renewDeadline must be greater than 0"))]
    pub renew_deadline: String,

    /// How often the leader renews and a candidate retries. At least 100ms; renewDeadline must
    /// be greater than 1.2 × retryPeriod. Default "2s".
    #[serde(default = "default_retry_period")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('100ms')").message("spec.leaderElection.retryPeriod must be at least 100ms"))]
    pub retry_period: String,

    /// On a graceful stop the leader stops its workers, then clears the Lease so a standby
    /// takes over at once instead of waiting for leaseDuration. Default true.
    #[serde(default = "default_true")]
    pub release_on_cancel: bool,

    /// Take over an existing Lease that the operator did not create (one without the
    /// `app.kubernetes.io/managed-by: manager-operator` label), e.g. when migrating from a
    /// client-go controller that elects on it. Without it such a Lease is never written and
    /// the config fails with reason LeaseNotOwned. The Lease is still taken only after its
    /// holder lets it expire or releases it. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt_existing_lease: bool,
}

impl Default for LeaderElectionSpec {
    fn default() -> Self {
        Self {
            lease_name: None,
            lease_namespace: None,
            lease_duration: default_lease_duration(),
            renew_deadline: default_renew_deadline(),
            retry_period: default_retry_period(),
            release_on_cancel: true,
            adopt_existing_lease: false,
        }
    }
}

/// One controller over a watched resource: every object is POSTed to the hook.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// Worker name: a DNS-1123 label, unique within spec.workers.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL_PATTERN))]
    pub name: String,

    /// Number of concurrent reconciles, 1 to 64 (one object is never reconciled twice at
    /// once). Default 1.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 64), extend("format" = "int32"))]
    pub concurrency: u16,

    /// The resource the workers reconcile.
    pub watch: WatchSpec,

    /// Optional: re-dispatch every object this often even when nothing changed. Go duration,
    /// 1s to 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = kube::core::Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('24h')").message("spec.workers[].resyncPeriod must be between 1s and 24h"))]
    pub resync_period: Option<String>,

    /// Where each object is sent.
    pub hook: HookSpec,

    /// Guarantee that the hook hears of every deletion: the worker adds the finalizer
    /// `hooks.manager-operator.io/<...>` to each watched object (as spec.serviceAccountName,
    /// which then needs `patch` on the watched resource) and removes it only after the hook
    /// answered 2xx to the object's `Deleted` call, whichever replica leads then. The finalizer
    /// is removed from every object when the worker, the ManagerConfig or this setting goes
    /// away. Without it (the default), deletions are delivered best effort: by the leader that
    /// sees them, lost if it stops before the hook answers. See docs/hooks.md.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finalize: bool,
}

/// The watched resource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WatchSpec {
    /// API version of the watched kind, e.g. "v1" or "apps/v1".
    #[schemars(length(min = 1, max = 317))]
    #[schemars(regex(
        pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?v[0-9]+((alpha|beta)[0-9]+)?$"
    ))]
    pub api_version: String,

    /// Kind of the watched resource, e.g. "ConfigMap".
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Z][A-Za-z0-9]*$"))]
    pub kind: String,

    /// Namespace to watch. Default: the ManagerConfig's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL_PATTERN))]
    pub namespace: Option<String>,

    /// Optional label selector, e.g. "app=inventory,tier in (a,b)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub label_selector: Option<String>,
}

/// The HTTP endpoint each object is POSTed to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HookSpec {
    /// Absolute http or https URL, allowed by the operator's hook policy (link-local and cloud
    /// metadata addresses are always refused; loopback only when the operator allows it).
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''").message("spec.workers[].hook.url must be an absolute http or https URL"))]
    pub url: String,

    /// Per-request timeout, greater than 0 and at most 30s. Default "10s".
    #[serde(default = "default_hook_timeout")]
    #[schemars(length(max = 64), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = kube::core::Rule::new("duration(self) > duration('0s') && duration(self) <= duration('30s')").message("spec.workers[].hook.timeout must be greater than 0 and at most 30s"))]
    pub timeout: String,

    /// Optional: sign every call to this hook (Standard Webhooks: `webhook-id`,
    /// `webhook-timestamp`, `webhook-signature` headers, HMAC-SHA256; see docs/hooks.md). Names a
    /// key of a Secret in the ManagerConfig's namespace, read as spec.serviceAccountName (which
    /// needs `get` on it). The value is `whsec_<base64>` (Standard Webhooks form) or the raw key
    /// bytes, at least 24 bytes of key either way. During a rotation the key `<key>.previous` may
    /// hold the old secret: calls then carry both signatures. The Secret is re-read
    /// periodically, so a rotation needs no restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SigningSecretRef>,

    /// Optional, https only: PEM CA certificates that verify the hook's serving certificate
    /// instead of the public roots (e.g. a cert-manager or in-house CA). At most 64 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,

    /// Optional, https only: a key of a ConfigMap or Secret in the ManagerConfig's namespace
    /// holding PEM CA certificates (e.g. cert-manager's `ca.crt`), read as
    /// spec.serviceAccountName and re-read periodically. Added to caBundle when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<CaBundleRef>,

    /// Optional, https only: a Secret of type kubernetes.io/tls in the ManagerConfig's
    /// namespace whose `tls.crt`/`tls.key` the worker presents as its client certificate
    /// (mutual TLS), read as spec.serviceAccountName and re-read periodically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret_ref: Option<SecretNameRef>,
}

/// A key of a ConfigMap or Secret holding PEM CA certificates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    /// `ConfigMap` or `Secret`.
    #[schemars(regex(pattern = r"^(ConfigMap|Secret)$"))]
    pub kind: String,

    /// Name of the ConfigMap or Secret (in the ManagerConfig's namespace).
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN_PATTERN))]
    pub name: String,

    /// The key holding the PEM certificates, e.g. `ca.crt`.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
}

/// A Secret in the ManagerConfig's namespace, by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretNameRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// A key of a Secret in the ManagerConfig's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SigningSecretRef {
    /// Name of the Secret (in the ManagerConfig's namespace).
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN_PATTERN))]
    pub name: String,

    /// Key in the Secret's data holding the current signing secret. At most 244 characters, so
    /// that `<key>.previous` (the previous secret during a rotation) is a valid key too.
    #[schemars(length(min = 1, max = 244), regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
}

fn default_service_account() -> String {
    "default".into()
}
fn default_startup_timeout() -> String {
    "60s".into()
}
fn default_graceful_shutdown_timeout() -> String {
    "30s".into()
}
fn default_lease_duration() -> String {
    "15s".into()
}
fn default_renew_deadline() -> String {
    "10s".into()
}
fn default_retry_period() -> String {
    "2s".into()
}
fn default_true() -> bool {
    true
}
fn default_concurrency() -> u16 {
    1
}
fn default_hook_timeout() -> String {
    "10s".into()
}
