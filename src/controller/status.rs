//! Pure status computation: from what a manager reports to `ManagerConfig.status` (docs/design.md §2.2).
//! The reconciler applies the result with server-side apply only when it differs from what
//! the object already has, so there is no status churn.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::conditions::{self, DesiredCondition, reason};
use crate::api::{ManagerConfigStatus, WorkerStatus};
use crate::manager::election::{LeaseView, replica_of};
use crate::manager::runtime::{Failure, ManagerState};
use crate::validation::ResolvedConfig;

/// What this replica knows about one config.
#[derive(Clone, Debug)]
pub enum Observed<'a> {
    /// The manager runs here in this state.
    Manager {
        /// The runtime state.
        state: &'a ManagerState,
        /// The Lease as seen by the elector.
        view: &'a LeaseView,
        /// The validated config.
        config: &'a ResolvedConfig,
        /// Degraded reason and message, if any.
        degraded: Option<(&'static str, String)>,
        /// The last hook error of each worker (by name) that has one.
        hook_errors: std::collections::HashMap<String, crate::api::LastHookError>,
    },
    /// Starting failed (before or after start); retried with backoff.
    Failed(&'a Failure),
}

/// Desired conditions for an observation.
pub fn desired_conditions(obs: &Observed<'_>) -> Vec<DesiredCondition> {
    match obs {
        Observed::Failed(f) => {
            let mut out = Vec::new();
            if f.reason == conditions::StartupFailure::InvalidSpec {
                out.push(DesiredCondition::new(
                    conditions::ACCEPTED,
                    false,
                    f.reason.as_str(),
                    f.message.clone(),
                ));
            } else {
                out.push(DesiredCondition::new(
                    conditions::ACCEPTED,
                    true,
                    reason::VALID,
                    "spec passed validation",
                ));
            }
            out.push(DesiredCondition::new(
                conditions::READY,
                false,
                f.reason.as_str(),
                format!(
                    "{} (to fix: {}; retrying with backoff)",
                    f.message,
                    f.reason.remedy()
                ),
            ));
            out
        }
        Observed::Manager {
            state,
            view,
            degraded,
            ..
        } => {
            let leader = view
                .holder
                .as_deref()
                .map_or_else(|| "nobody".to_string(), |h| replica_of(h).to_string());
            let ready = match state {
                ManagerState::Running { token } => DesiredCondition::new(
                    conditions::READY,
                    true,
                    reason::RUNNING,
                    format!("workers running on leader {leader} (fencing token {token})"),
                ),
                ManagerState::Leading { .. } | ManagerState::Starting { .. } => {
                    DesiredCondition::new(
                        conditions::READY,
                        false,
                        reason::STARTING,
                        format!("{leader} leads; workers starting"),
                    )
                }
                ManagerState::Candidate => DesiredCondition::new(
                    conditions::READY,
                    false,
                    reason::WAITING_FOR_LEADERSHIP,
                    format!("waiting for leadership; current holder {leader}"),
                ),
                ManagerState::Stopping | ManagerState::Stopped => DesiredCondition::new(
                    conditions::READY,
                    false,
                    reason::STOPPED,
                    "workers stopped",
                ),
                ManagerState::Failed(f) => DesiredCondition::new(
                    conditions::READY,
                    false,
                    f.reason.as_str(),
                    format!("{} (to fix: {})", f.message, f.reason.remedy()),
                ),
            };
            let degraded = match degraded {
                Some((r, m)) => DesiredCondition::new(conditions::DEGRADED, true, r, m.clone()),
                None => DesiredCondition::new(
                    conditions::DEGRADED,
                    false,
                    reason::HEALTHY,
                    "no hook or lease renew errors",
                ),
            };
            vec![
                DesiredCondition::new(
                    conditions::ACCEPTED,
                    true,
                    reason::VALID,
                    "spec passed validation",
                ),
                ready,
                degraded,
            ]
        }
    }
}

/// The full desired status, merged with the existing one (keeping lastTransitionTime).
pub fn desired_status(
    existing: Option<&ManagerConfigStatus>,
    generation: Option<i64>,
    obs: &Observed<'_>,
    now: Time,
) -> ManagerConfigStatus {
    let existing_conditions = existing.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    let conditions = conditions::merge_conditions(
        existing_conditions,
        &desired_conditions(obs),
        generation,
        now,
    );
    match obs {
        Observed::Failed(_) => ManagerConfigStatus {
            observed_generation: generation,
            leader: existing.and_then(|s| s.leader.clone()),
            lease_transitions: existing.and_then(|s| s.lease_transitions),
            workers: vec![],
            workers_summary: Some("0/0".into()),
            conditions,
        },
        Observed::Manager {
            state,
            view,
            config,
            hook_errors,
            ..
        } => {
            let running = matches!(state, ManagerState::Running { .. });
            let workers: Vec<WorkerStatus> = config
                .workers
                .iter()
                .map(|w| WorkerStatus {
                    name: w.name.clone(),
                    concurrency: w.concurrency,
                    running: if running { w.concurrency } else { 0 },
                    last_hook_error: hook_errors.get(&w.name).cloned(),
                })
                .collect();
            let desired: u32 = workers.iter().map(|w| u32::from(w.concurrency)).sum();
            let up: u32 = workers.iter().map(|w| u32::from(w.running)).sum();
            ManagerConfigStatus {
                observed_generation: generation,
                leader: view.holder.as_deref().map(|h| replica_of(h).to_string()),
                lease_transitions: view.transitions,
                workers,
                workers_summary: Some(format!("{up}/{desired}")),
                conditions,
            }
        }
    }
}

/// True when applying `new` would change anything in `old`.
pub fn differs(old: Option<&ManagerConfigStatus>, new: &ManagerConfigStatus) -> bool {
    old != Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::StartupFailure;
    use k8s_openapi::jiff::Timestamp;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn cfg() -> ResolvedConfig {
        let mc: crate::api::ManagerConfig = serde_yaml::from_str(
            "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\nmetadata: {name: m, namespace: ns}\nspec:\n  workers: [{name: w, concurrency: 4, watch: {apiVersion: v1, kind: ConfigMap}, hook: {url: 'http://h.svc/'}}]\n",
        )
        .unwrap();
        crate::validation::resolve(&mc, &Default::default()).unwrap()
    }

    fn cond<'a>(
        s: &'a ManagerConfigStatus,
        ty: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        s.conditions.iter().find(|c| c.type_ == ty).unwrap()
    }

    #[test]
    fn failure_then_recovery_then_steady() {
        let f = Failure::new(
            StartupFailure::LeaseNamespaceNotFound,
            "lease namespace \"x\" does not exist",
        );
        let s1 = desired_status(None, Some(1), &Observed::Failed(&f), t(10));
        assert_eq!(cond(&s1, "Ready").status, "False");
        assert_eq!(cond(&s1, "Ready").reason, "LeaseNamespaceNotFound");
        assert!(cond(&s1, "Ready").message.contains("create the namespace"));
        assert_eq!(cond(&s1, "Accepted").status, "True");

        let c = cfg();
        let view = LeaseView {
            holder: Some("pod-a".into()),
            transitions: Some(3),
        };
        let running = ManagerState::Running { token: 3 };
        let obs = Observed::Manager {
            state: &running,
            view: &view,
            config: &c,
            degraded: None,
            hook_errors: Default::default(),
        };
        let s2 = desired_status(Some(&s1), Some(1), &obs, t(20));
        assert_eq!(cond(&s2, "Ready").status, "True");
        assert_eq!(cond(&s2, "Ready").last_transition_time, t(20));
        assert_eq!(
            cond(&s2, "Accepted").last_transition_time,
            t(10),
            "unchanged status keeps its time"
        );
        assert_eq!(s2.leader.as_deref(), Some("pod-a"));
        assert_eq!(s2.lease_transitions, Some(3));
        assert_eq!(s2.workers_summary.as_deref(), Some("4/4"));
        assert!(differs(Some(&s1), &s2));

        // The same observation later: nothing to write.
        let s3 = desired_status(Some(&s2), Some(1), &obs, t(30));
        assert!(!differs(Some(&s2), &s3), "no churn");
    }

    #[test]
    fn invalid_spec_is_not_accepted() {
        let f = Failure::new(StartupFailure::InvalidSpec, "spec.x: bad");
        let s = desired_status(None, Some(2), &Observed::Failed(&f), t(1));
        assert_eq!(cond(&s, "Accepted").status, "False");
        assert_eq!(cond(&s, "Accepted").reason, "InvalidSpec");
        assert_eq!(cond(&s, "Ready").reason, "InvalidSpec");
        assert_eq!(s.observed_generation, Some(2));
    }
}
