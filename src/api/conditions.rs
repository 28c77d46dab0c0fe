//! Condition types, reasons and the transition rule (docs/design.md §2.2, §2.3).
//!
//! Reasons are a stable, machine-readable set: each is at once a `Ready=False` reason, an Event
//! reason and the value of the `reason` metric label. Never derive a reason from error text.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::fmt;

/// Condition type: the spec passed validation at runtime.
pub const ACCEPTED: &str = "Accepted";
/// Condition type: this config's workers are running on the current leader.
pub const READY: &str = "Ready";
/// Condition type: running but failing (hook errors, lease renew failures).
pub const DEGRADED: &str = "Degraded";

/// Every reason a manager start can fail with (docs/design.md §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StartupFailure {
    /// A validation rule fails at runtime (the webhook was bypassed, off, or older).
    InvalidSpec,
    /// The lease namespace does not exist.
    LeaseNamespaceNotFound,
    /// The operator may not get/create/update the Lease.
    LeaseForbidden,
    /// The operator may not impersonate `serviceAccountName`.
    ImpersonationForbidden,
    /// `watch.apiVersion`/`kind` is not served.
    WatchTargetNotFound,
    /// The service account may not list/watch the target.
    WatchForbidden,
    /// The hook URL is refused by the hook policy.
    HookRejected,
    /// Workers did not all start within `startupTimeout`.
    StartupTimeout,
    /// The API server could not be reached or answered with an unexpected error.
    ApiUnavailable,
    /// A worker stopped with an error (or panicked) after it had started.
    WorkerFailed,
    /// Another ManagerConfig already uses the Lease this one names.
    LeaseInUse,
    /// The Lease exists and was not created by the operator (no
    /// `app.kubernetes.io/managed-by=manager-operator` label), and the config does not opt in to
    /// adopting it (`spec.leaderElection.adoptExistingLease`).
    LeaseNotOwned,
    /// The config exceeds one of the operator's per-tenant limits (configs per namespace,
    /// workers per config, timing floors, watched objects).
    LimitExceeded,
    /// The hook's signing Secret cannot be read as the service account (missing, forbidden,
    /// key absent, or not a usable key).
    SigningSecretUnavailable,
    /// The hook's TLS material (caBundle, caBundleRef, clientCertSecretRef) cannot be read as
    /// the service account or is not usable.
    HookTlsUnavailable,
}

impl StartupFailure {
    /// All reasons, for documentation and for pre-registering metric label values.
    pub const ALL: [StartupFailure; 15] = [
        StartupFailure::InvalidSpec,
        StartupFailure::LeaseNamespaceNotFound,
        StartupFailure::LeaseForbidden,
        StartupFailure::ImpersonationForbidden,
        StartupFailure::WatchTargetNotFound,
        StartupFailure::WatchForbidden,
        StartupFailure::HookRejected,
        StartupFailure::StartupTimeout,
        StartupFailure::ApiUnavailable,
        StartupFailure::WorkerFailed,
        StartupFailure::LeaseInUse,
        StartupFailure::LeaseNotOwned,
        StartupFailure::LimitExceeded,
        StartupFailure::SigningSecretUnavailable,
        StartupFailure::HookTlsUnavailable,
    ];

    /// The stable CamelCase reason string.
    pub const fn as_str(self) -> &'static str {
        match self {
            StartupFailure::InvalidSpec => "InvalidSpec",
            StartupFailure::LeaseNamespaceNotFound => "LeaseNamespaceNotFound",
            StartupFailure::LeaseForbidden => "LeaseForbidden",
            StartupFailure::ImpersonationForbidden => "ImpersonationForbidden",
            StartupFailure::WatchTargetNotFound => "WatchTargetNotFound",
            StartupFailure::WatchForbidden => "WatchForbidden",
            StartupFailure::HookRejected => "HookRejected",
            StartupFailure::StartupTimeout => "StartupTimeout",
            StartupFailure::ApiUnavailable => "ApiUnavailable",
            StartupFailure::WorkerFailed => "WorkerFailed",
            StartupFailure::LeaseInUse => "LeaseInUse",
            StartupFailure::LeaseNotOwned => "LeaseNotOwned",
            StartupFailure::LimitExceeded => "LimitExceeded",
            StartupFailure::SigningSecretUnavailable => "SigningSecretUnavailable",
            StartupFailure::HookTlsUnavailable => "HookTlsUnavailable",
        }
    }

    /// What the user should do about it.
    pub const fn remedy(self) -> &'static str {
        match self {
            StartupFailure::InvalidSpec => "fix the spec fields named above",
            StartupFailure::LeaseNamespaceNotFound => {
                "create the namespace or change spec.leaderElection.leaseNamespace"
            }
            StartupFailure::LeaseForbidden => {
                "grant the operator get/create/update on leases.coordination.k8s.io in the lease namespace; for a Lease outside the ManagerConfig's namespace, also grant the config's service account get, create and update on leases there"
            }
            StartupFailure::ImpersonationForbidden => {
                "grant the operator impersonate on this serviceaccount"
            }
            StartupFailure::WatchTargetNotFound => {
                "install the CRD or fix spec.workers[].watch.apiVersion/kind"
            }
            StartupFailure::WatchForbidden => {
                "grant the service account list and watch on the watched resource"
            }
            StartupFailure::HookRejected => "use a hook URL the operator's hook policy allows",
            StartupFailure::StartupTimeout => {
                "check that the watched resource lists promptly, or raise spec.startupTimeout"
            }
            StartupFailure::ApiUnavailable => "check the API server's health; the operator retries",
            StartupFailure::WorkerFailed => {
                "see the operator's logs for the worker's error; the operator retries"
            }
            StartupFailure::LeaseInUse => {
                "give this ManagerConfig its own spec.leaderElection.leaseName, or delete the other ManagerConfig (this one starts by itself once the Lease is free)"
            }
            StartupFailure::LeaseNotOwned => {
                "name a Lease the operator manages (or a new one), or set spec.leaderElection.adoptExistingLease: true to take this Lease over (e.g. migrating from a client-go controller)"
            }
            StartupFailure::LimitExceeded => {
                "stay within the operator's per-tenant limits named above, or ask the operator's administrator to raise them"
            }
            StartupFailure::SigningSecretUnavailable => {
                "create the Secret named by spec.workers[].hook.signingSecretRef in this namespace with that key (whsec_<base64> or at least 24 raw bytes), and grant the service account get on it (resourceNames: [the Secret])"
            }
            StartupFailure::HookTlsUnavailable => {
                "fix spec.workers[].hook.caBundle/caBundleRef/clientCertSecretRef: the ConfigMap or Secret must exist in this namespace with PEM certificates (a kubernetes.io/tls Secret for the client certificate), readable by the service account"
            }
        }
    }
}

impl fmt::Display for StartupFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reasons for `Accepted` and `Ready` other than startup failures.
pub mod reason {
    /// Accepted=True.
    pub const VALID: &str = "Valid";
    /// Ready=True.
    pub const RUNNING: &str = "Running";
    /// Ready=False: another replica leads (or nobody yet).
    pub const WAITING_FOR_LEADERSHIP: &str = "WaitingForLeadership";
    /// Ready=False: elected, workers starting.
    pub const STARTING: &str = "Starting";
    /// Ready=False: stopped (deleted, or operator shutting down).
    pub const STOPPED: &str = "Stopped";
    /// Degraded=False.
    pub const HEALTHY: &str = "Healthy";
    /// Degraded=True: hook failures above threshold.
    pub const HOOK_ERRORS: &str = "HookErrors";
    /// Degraded=True: lease renewals failing.
    pub const LEASE_RENEW_FAILING: &str = "LeaseRenewFailing";
    /// Normal Event: this replica took the config's Lease.
    pub const LEADER_ELECTED: &str = "LeaderElected";
    /// Normal Event: this replica lost the config's Lease; workers stopped.
    pub const LEADERSHIP_LOST: &str = "LeadershipLost";
    /// Normal Event (and Ready=True reason's companion): workers run again after failed starts.
    pub const RECOVERED: &str = "Recovered";
    /// Warning Event: a finalize-mode worker's finalizer could not be removed from the objects
    /// it watched (the config or worker went away); the note says how to remove it by hand.
    pub const FINALIZER_NOT_REMOVED: &str = "FinalizerNotRemoved";
}

/// The desired value of one condition, without timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    /// Condition type.
    pub type_: String,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human message.
    pub message: String,
}

impl DesiredCondition {
    /// Builds a desired condition.
    pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

fn status_str(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Merges desired conditions into existing ones. `lastTransitionTime` is kept unless the
/// condition's status changes (reason or message changes alone are not transitions, as in
/// `meta.SetStatusCondition`). Conditions not named in `desired` are kept as they are.
pub fn merge_conditions(
    existing: &[Condition],
    desired: &[DesiredCondition],
    observed_generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = existing.to_vec();
    for d in desired {
        let status = status_str(d.status).to_string();
        match out.iter_mut().find(|c| c.type_ == d.type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now.clone();
                }
                c.status = status;
                c.reason = d.reason.clone();
                c.message = d.message.clone();
                c.observed_generation = observed_generation;
            }
            None => out.push(Condition {
                type_: d.type_.clone(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation,
                last_transition_time: now.clone(),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_changes_only_on_status_change() {
        let c1 = merge_conditions(
            &[],
            &[DesiredCondition::new(READY, false, "Starting", "starting")],
            Some(1),
            t(100),
        );
        assert_eq!(c1[0].last_transition_time, t(100));
        // Same status, new reason/message: time kept.
        let c2 = merge_conditions(
            &c1,
            &[DesiredCondition::new(
                READY,
                false,
                "LeaseForbidden",
                "no rbac",
            )],
            Some(2),
            t(200),
        );
        assert_eq!(c2[0].last_transition_time, t(100));
        assert_eq!(c2[0].reason, "LeaseForbidden");
        assert_eq!(c2[0].observed_generation, Some(2));
        // Status flips: time updated.
        let c3 = merge_conditions(
            &c2,
            &[DesiredCondition::new(READY, true, "Running", "ok")],
            Some(2),
            t(300),
        );
        assert_eq!(c3[0].last_transition_time, t(300));
        assert_eq!(c3[0].status, "True");
    }

    #[test]
    fn unrelated_conditions_are_kept() {
        let c1 = merge_conditions(
            &[],
            &[DesiredCondition::new(ACCEPTED, true, reason::VALID, "ok")],
            Some(1),
            t(1),
        );
        let c2 = merge_conditions(
            &c1,
            &[DesiredCondition::new(READY, true, reason::RUNNING, "ok")],
            Some(1),
            t(2),
        );
        assert_eq!(c2.len(), 2);
        assert_eq!(c2[0].type_, ACCEPTED);
    }

    #[test]
    fn reasons_are_unique_and_camel_case() {
        let mut seen = std::collections::HashSet::new();
        for r in StartupFailure::ALL {
            assert!(seen.insert(r.as_str()));
            assert!(
                r.as_str()
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase())
            );
            assert!(r.as_str().chars().all(|c| c.is_ascii_alphanumeric()));
        }
    }
}
