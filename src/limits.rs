//! Per-tenant limits (docs/security.md, docs/design.md §3 "one broken config never delays or stops another"):
//! how much of one operator replica a namespace or a config may take. A config over a limit
//! fails with the stable reason `LimitExceeded` (Ready=False condition, Warning Event,
//! `startup_failures_total{reason="LimitExceeded"}`), never with an OOM of the replica.
//!
//! | flag | default | enforced |
//! |---|---|---|
//! | `--max-configs-per-namespace` | 100 | at start: the oldest configs of a namespace run, the rest wait |
//! | `--max-workers-per-config` | 16 | at start and in the webhook |
//! | `--min-retry-period` | 500ms | at start and in the webhook |
//! | `--min-lease-duration` | 2s | at start and in the webhook |
//! | `--max-watched-objects-per-config` | 10000 | in each worker's reflector, while it runs |
//! | `--max-hook-calls-per-config` | 64 | a semaphore shared by the config's workers |
//! | `--max-watch-cache-bytes-per-namespace` | 32Mi | in each worker's reflector, while it runs |
//! | `--max-watch-cache-bytes` | 96Mi | in each worker's reflector, while it runs |
//! | `--max-concurrent-lists` | 4 | lists wait for a slot (see `workers::cache`) |

use std::time::Duration;

use kube::ResourceExt;

use crate::api::ManagerConfig;
use crate::api::conditions::StartupFailure;
use crate::manager::runtime::Failure;
use crate::validation::ResolvedConfig;

/// The limits, as the operator runs with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantLimits {
    /// ManagerConfigs one namespace may run (0: unlimited).
    pub max_configs_per_namespace: u32,
    /// `spec.workers` entries one config may have (0: unlimited).
    pub max_workers_per_config: u32,
    /// Smallest `spec.leaderElection.retryPeriod` accepted.
    pub min_retry_period: Duration,
    /// Smallest `spec.leaderElection.leaseDuration` accepted.
    pub min_lease_duration: Duration,
    /// Objects one config's workers may hold in their watch caches together (0: unlimited).
    pub max_watched_objects_per_config: u64,
    /// Hook calls one config's workers may have in flight together (the config gets the
    /// smaller of this and the sum of its workers' concurrency; 0: no extra cap).
    pub max_hook_calls_per_config: u32,
    /// JSON bytes the watch caches of one namespace's configs may hold on one replica (0:
    /// unlimited).
    pub max_watch_cache_bytes_per_namespace: u64,
    /// JSON bytes every watch cache of one replica may hold together (0: unlimited).
    pub max_watch_cache_bytes: u64,
    /// Lists (initial lists and re-lists) one replica runs at once (0: unlimited).
    pub max_concurrent_lists: u32,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            max_configs_per_namespace: 100,
            max_workers_per_config: 16,
            min_retry_period: Duration::from_millis(500),
            min_lease_duration: Duration::from_secs(2),
            max_watched_objects_per_config: 10_000,
            max_hook_calls_per_config: 64,
            max_watch_cache_bytes_per_namespace: DEFAULT_NAMESPACE_CACHE,
            max_watch_cache_bytes: DEFAULT_REPLICA_CACHE,
            max_concurrent_lists: 4,
        }
    }
}

/// `--max-watch-cache-bytes-per-namespace` by default: 32Mi.
const DEFAULT_NAMESPACE_CACHE: u64 = 32 << 20;
/// `--max-watch-cache-bytes` by default: 96Mi, so that with the hook calls carrying cached
/// objects and the lists in flight a replica needs about 240 MiB at worst (docs/security.md),
/// within the chart's default 512Mi memory limit.
const DEFAULT_REPLICA_CACHE: u64 = 96 << 20;

fn limit_exceeded(message: String) -> Failure {
    Failure::new(StartupFailure::LimitExceeded, message)
}

impl TenantLimits {
    /// The limits that depend on the spec alone (workers, timing floors), as messages
    /// `field: what` (empty: within limits). Shared by the runtime check and the webhook.
    pub fn spec_violations(&self, cfg: &ResolvedConfig) -> Vec<String> {
        let mut out = Vec::new();
        let workers = cfg.workers.len();
        if self.max_workers_per_config > 0 && workers > self.max_workers_per_config as usize {
            out.push(format!(
                "spec.workers: {workers} workers exceed the operator's limit of {} per \
                 ManagerConfig (--max-workers-per-config)",
                self.max_workers_per_config
            ));
        }
        if cfg.election.retry_period < self.min_retry_period {
            out.push(format!(
                "spec.leaderElection.retryPeriod: {:?} is below the operator's floor of {:?} \
                 (--min-retry-period)",
                cfg.election.retry_period, self.min_retry_period
            ));
        }
        if cfg.election.lease_duration < self.min_lease_duration {
            out.push(format!(
                "spec.leaderElection.leaseDuration: {:?} is below the operator's floor of {:?} \
                 (--min-lease-duration)",
                cfg.election.lease_duration, self.min_lease_duration
            ));
        }
        out
    }

    /// [`TenantLimits::spec_violations`] as a `LimitExceeded` failure.
    pub fn check_spec(&self, cfg: &ResolvedConfig) -> Result<(), Failure> {
        let v = self.spec_violations(cfg);
        if v.is_empty() {
            Ok(())
        } else {
            Err(limit_exceeded(v.join("; ")))
        }
    }

    /// Is `mc` among the first `max_configs_per_namespace` live configs of its namespace (by
    /// creation time, then name)? `all` is the operator's cache of every config.
    pub fn check_namespace_quota(
        &self,
        mc: &ManagerConfig,
        all: &[std::sync::Arc<ManagerConfig>],
    ) -> Result<(), Failure> {
        if self.max_configs_per_namespace == 0 {
            return Ok(());
        }
        let ns = mc.namespace().unwrap_or_default();
        let order = |o: &ManagerConfig| {
            (
                o.metadata.creation_timestamp.as_ref().map(|t| t.0),
                o.name_any(),
            )
        };
        let mine = order(mc);
        let mut live = 0usize;
        let ahead = all
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .filter(|o| o.namespace().as_deref() == Some(ns.as_str()))
            .inspect(|_| live += 1)
            .filter(|o| o.uid() != mc.uid() && order(o) < mine)
            .count();
        if ahead < self.max_configs_per_namespace as usize {
            return Ok(());
        }
        Err(limit_exceeded(format!(
            "namespace {ns} has {live} ManagerConfigs; the operator runs at most {} per \
             namespace (--max-configs-per-namespace) and {ahead} older ones come first; delete \
             some (this one starts by itself once it is within the limit)",
            self.max_configs_per_namespace
        )))
    }

    /// The hook-call permits a config with these workers gets.
    pub fn hook_calls_for(&self, cfg: &ResolvedConfig) -> usize {
        let sum: usize = cfg.workers.iter().map(|w| usize::from(w.concurrency)).sum();
        let sum = sum.max(1);
        if self.max_hook_calls_per_config == 0 {
            sum
        } else {
            sum.min(self.max_hook_calls_per_config as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{HookPolicy, resolve};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use std::sync::Arc;

    fn mc(name: &str, ns: &str, created: i64, workers: usize, retry: &str) -> ManagerConfig {
        let workers: Vec<serde_json::Value> = (0..workers)
            .map(|i| {
                serde_json::json!({"name": format!("w{i}"), "concurrency": 8,
                    "watch": {"apiVersion": "v1", "kind": "ConfigMap"},
                    "hook": {"url": "http://hook.team.svc:8080/x"}})
            })
            .collect();
        let mut mc: ManagerConfig = serde_json::from_value(serde_json::json!({
            "apiVersion": "manager-operator.io/v1alpha1", "kind": "ManagerConfig",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
            "spec": {"leaderElection": {"leaseDuration": "15s", "renewDeadline": "10s",
                "retryPeriod": retry}, "workers": workers},
        }))
        .unwrap();
        mc.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        mc
    }

    #[test]
    fn spec_limits_name_the_flag() {
        let l = TenantLimits {
            max_workers_per_config: 2,
            min_retry_period: Duration::from_secs(1),
            ..TenantLimits::default()
        };
        let cfg = resolve(&mc("a", "n", 1, 3, "500ms"), &HookPolicy::default()).unwrap();
        let f = l.check_spec(&cfg).unwrap_err();
        assert_eq!(f.reason, StartupFailure::LimitExceeded);
        assert!(f.message.contains("--max-workers-per-config"), "{f}");
        assert!(f.message.contains("--min-retry-period"), "{f}");
        let ok = resolve(&mc("a", "n", 1, 2, "2s"), &HookPolicy::default()).unwrap();
        l.check_spec(&ok).unwrap();
        // 2 workers × concurrency 8, capped at 64 → 16; a cap of 4 → 4.
        assert_eq!(l.hook_calls_for(&ok), 16);
        let capped = TenantLimits {
            max_hook_calls_per_config: 4,
            ..l
        };
        assert_eq!(capped.hook_calls_for(&ok), 4);
    }

    #[test]
    fn defaults_admit_the_test_timings() {
        let cfg = resolve(&mc("a", "n", 1, 1, "500ms"), &HookPolicy::default()).unwrap();
        TenantLimits::default().check_spec(&cfg).unwrap();
    }

    #[test]
    fn namespace_quota_keeps_the_oldest() {
        let l = TenantLimits {
            max_configs_per_namespace: 2,
            ..TenantLimits::default()
        };
        let all: Vec<Arc<ManagerConfig>> = vec![
            Arc::new(mc("c", "n", 3, 1, "2s")),
            Arc::new(mc("a", "n", 1, 1, "2s")),
            Arc::new(mc("b", "n", 2, 1, "2s")),
            Arc::new(mc("x", "other", 0, 1, "2s")),
        ];
        l.check_namespace_quota(&all[1], &all).unwrap();
        l.check_namespace_quota(&all[2], &all).unwrap();
        let f = l.check_namespace_quota(&all[0], &all).unwrap_err();
        assert_eq!(f.reason, StartupFailure::LimitExceeded);
        assert!(f.message.contains("--max-configs-per-namespace"), "{f}");
        l.check_namespace_quota(&all[3], &all).unwrap();
    }
}
