//! The registry: every metric of the operator, in one [`prometheus::Registry`], prefix
//! `manager_operator_`.

use std::collections::HashMap;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics of the operator.
#[derive(Clone)]
pub struct Metrics {
    /// The registry every metric below is registered in.
    pub registry: Registry,
    /// `managers{state}`: managers per state (candidate, leading, starting, running, stopping, failed).
    pub managers: IntGaugeVec,
    /// `manager_ready{namespace,name}`: 1 when the config's workers run on this replica or
    /// another (as seen in status), 0 on failure.
    pub manager_ready: IntGaugeVec,
    /// `startup_failures_total{namespace,name,reason}`.
    pub startup_failures_total: IntCounterVec,
    /// `startup_duration_seconds`: reconcile seen → workers running.
    pub startup_duration_seconds: Histogram,
    /// `leader{namespace,name}`: 1 where this replica leads.
    pub leader: IntGaugeVec,
    /// `leader_transitions_total{namespace,name}`: leadership gained or lost by this replica.
    pub leader_transitions_total: IntCounterVec,
    /// `lease_renew_duration_seconds`.
    pub lease_renew_duration_seconds: Histogram,
    /// `lease_renew_failures_total{namespace,name}`.
    pub lease_renew_failures_total: IntCounterVec,
    /// `reconcile_total{namespace,name,worker,result}`.
    pub reconcile_total: IntCounterVec,
    /// `reconcile_duration_seconds{namespace,name,worker}`.
    pub reconcile_duration_seconds: HistogramVec,
    /// `workers_active{namespace,name,worker}`: reconciles in flight.
    pub workers_active: IntGaugeVec,
    /// `queue_depth{namespace,name,worker}`: objects waiting for a reconcile worker.
    pub queue_depth: IntGaugeVec,
    /// `hook_request_duration_seconds{code}`: hook call latency by HTTP status code class.
    pub hook_request_duration_seconds: HistogramVec,
    /// `admission_requests_total{operation,allowed}`.
    pub admission_requests_total: IntCounterVec,
    /// `admission_duration_seconds`.
    pub admission_duration_seconds: Histogram,
    /// `tasks`: live tasks owned by managers (leak detector).
    pub tasks: IntGauge,
    /// `webhook_certificate_rotations_total`.
    pub webhook_certificate_rotations_total: IntCounter,
    /// `replicas_seen`: live, ready replicas of this replica's placement group (itself included).
    pub replicas_seen: IntGauge,
    /// `managers_preferred`: configs for which placement prefers this replica.
    pub managers_preferred: IntGauge,
    /// `managers_leading`: managers this replica leads right now.
    pub managers_leading: IntGauge,
    /// `handovers_total{reason}`: leases this replica gave up on purpose (`rebalance`: placement
    /// moved the config; `shutdown`: released on SIGTERM).
    pub handovers_total: IntCounterVec,
    /// `admission_request_errors_total{code}`: requests the webhook answered with an HTTP error
    /// instead of an AdmissionReview (malformed 400, too slow 408, too large 413, overloaded 503).
    pub admission_request_errors_total: IntCounterVec,
    /// `build_info{version,revision}`: 1.
    pub build_info: IntGaugeVec,
    /// `kube_requests_total{method,code}`: Kubernetes API requests (see [`super::kube_api`]).
    pub kube_requests_total: IntCounterVec,
    /// `kube_request_duration_seconds{method}`: time to the answer's headers.
    pub kube_request_duration_seconds: HistogramVec,
    /// `controller_reconcile_errors_total{kind}`: ManagerConfig reconciles that failed (`api`:
    /// an API call of the reconciler failed; `metadata`: an object without namespace or name).
    pub controller_reconcile_errors_total: IntCounterVec,
    /// `webhook_certificate_expiration_timestamp_seconds{certificate=ca|serving}`: notAfter of
    /// the webhook's certificates, as a Unix time.
    pub webhook_certificate_expiration_timestamp_seconds: GaugeVec,
    /// `webhook_certificate_rotation_failures_total`: certificate generations, reloads or
    /// publications that failed (retried).
    pub webhook_certificate_rotation_failures_total: IntCounter,
    /// `lease_duration_seconds{namespace,name}`: the config's leaseDuration, so rules can
    /// compare how long a config has had no leader with its own timing.
    pub lease_duration_seconds: GaugeVec,
    /// `watch_cache_bytes`: JSON bytes of the objects in every worker's watch cache on this
    /// replica (lists in progress included), against `--max-watch-cache-bytes`.
    pub watch_cache_bytes: IntGauge,
}

/// Reasons of `handovers_total`.
pub const HANDOVER_REASONS: [&str; 2] = ["rebalance", "shutdown"];

const PREFIX: &str = "manager_operator";

/// The `revision` of `build_info`: `MO_REVISION` at build time (the Dockerfile and CI pass the
/// git commit), else `unknown`.
pub const REVISION: &str = match option_env!("MO_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// The `code` values of `admission_request_errors_total`.
pub const ADMISSION_ERROR_CODES: [&str; 5] = ["400", "408", "413", "500", "503"];

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

fn hopts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(PREFIX)
        .buckets(buckets)
}

/// Latency buckets from 1 ms to 30 s.
fn latency_buckets() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let m = Metrics {
            managers: IntGaugeVec::new(
                opts("managers", "Managers on this replica by state."),
                &["state"],
            )?,
            manager_ready: IntGaugeVec::new(
                opts(
                    "manager_ready",
                    "1 when the ManagerConfig's workers run, 0 when it failed or waits.",
                ),
                &["namespace", "name"],
            )?,
            startup_failures_total: IntCounterVec::new(
                opts(
                    "startup_failures_total",
                    "Failed manager starts by stable reason.",
                ),
                &["namespace", "name", "reason"],
            )?,
            startup_duration_seconds: Histogram::with_opts(hopts(
                "startup_duration_seconds",
                "Time from leadership acquired to all workers running.",
                latency_buckets(),
            ))?,
            leader: IntGaugeVec::new(
                opts(
                    "leader",
                    "1 where this replica holds the ManagerConfig's Lease.",
                ),
                &["namespace", "name"],
            )?,
            leader_transitions_total: IntCounterVec::new(
                opts(
                    "leader_transitions_total",
                    "Leadership acquired or lost by this replica.",
                ),
                &["namespace", "name"],
            )?,
            lease_renew_duration_seconds: Histogram::with_opts(hopts(
                "lease_renew_duration_seconds",
                "Duration of successful Lease renewals.",
                latency_buckets(),
            ))?,
            lease_renew_failures_total: IntCounterVec::new(
                opts(
                    "lease_renew_failures_total",
                    "Failed Lease renewal attempts.",
                ),
                &["namespace", "name"],
            )?,
            reconcile_total: IntCounterVec::new(
                opts(
                    "reconcile_total",
                    "Worker reconciles by result (success, error).",
                ),
                &["namespace", "name", "worker", "result"],
            )?,
            reconcile_duration_seconds: HistogramVec::new(
                hopts(
                    "reconcile_duration_seconds",
                    "Worker reconcile duration.",
                    latency_buckets(),
                ),
                &["namespace", "name", "worker"],
            )?,
            workers_active: IntGaugeVec::new(
                opts("workers_active", "Reconciles in flight."),
                &["namespace", "name", "worker"],
            )?,
            queue_depth: IntGaugeVec::new(
                opts("queue_depth", "Objects waiting for a reconcile worker."),
                &["namespace", "name", "worker"],
            )?,
            hook_request_duration_seconds: HistogramVec::new(
                hopts(
                    "hook_request_duration_seconds",
                    "Hook call latency by HTTP status code class (1xx..5xx, 'other', 'refused' by the hook policy, or 'error').",
                    latency_buckets(),
                ),
                &["code"],
            )?,
            admission_requests_total: IntCounterVec::new(
                opts("admission_requests_total", "Admission reviews answered."),
                &["operation", "allowed"],
            )?,
            admission_duration_seconds: Histogram::with_opts(hopts(
                "admission_duration_seconds",
                "Time to answer an admission review.",
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
                    1.0, 2.5, 5.0, 10.0, 30.0,
                ],
            ))?,
            tasks: IntGauge::with_opts(opts("tasks", "Live tasks owned by managers."))?,
            webhook_certificate_rotations_total: IntCounter::with_opts(opts(
                "webhook_certificate_rotations_total",
                "Webhook serving certificates generated or reloaded.",
            ))?,
            replicas_seen: IntGauge::with_opts(opts(
                "replicas_seen",
                "Live, ready replicas of this replica's placement group, itself included.",
            ))?,
            managers_preferred: IntGauge::with_opts(opts(
                "managers_preferred",
                "ManagerConfigs for which placement prefers this replica as leader.",
            ))?,
            managers_leading: IntGauge::with_opts(opts(
                "managers_leading",
                "Managers this replica leads.",
            ))?,
            handovers_total: IntCounterVec::new(
                opts(
                    "handovers_total",
                    "Leases this replica gave up on purpose, by reason (rebalance, shutdown).",
                ),
                &["reason"],
            )?,
            admission_request_errors_total: IntCounterVec::new(
                opts(
                    "admission_request_errors_total",
                    "Admission requests answered with an HTTP error instead of a review, by code.",
                ),
                &["code"],
            )?,
            build_info: IntGaugeVec::new(
                opts(
                    "build_info",
                    "1, labelled with the operator's version and revision.",
                ),
                &["version", "revision"],
            )?,
            kube_requests_total: IntCounterVec::new(
                opts(
                    "kube_requests_total",
                    "Kubernetes API requests by HTTP method (WATCH for watches) and answer code.",
                ),
                &["method", "code"],
            )?,
            kube_request_duration_seconds: HistogramVec::new(
                hopts(
                    "kube_request_duration_seconds",
                    "Time from a Kubernetes API request to its answer's headers.",
                    latency_buckets(),
                ),
                &["method"],
            )?,
            controller_reconcile_errors_total: IntCounterVec::new(
                opts(
                    "controller_reconcile_errors_total",
                    "ManagerConfig reconciles that failed, by kind (api, metadata).",
                ),
                &["kind"],
            )?,
            webhook_certificate_expiration_timestamp_seconds: GaugeVec::new(
                opts(
                    "webhook_certificate_expiration_timestamp_seconds",
                    "Expiry (notAfter, Unix time) of the webhook's CA and serving certificates.",
                ),
                &["certificate"],
            )?,
            webhook_certificate_rotation_failures_total: IntCounter::with_opts(opts(
                "webhook_certificate_rotation_failures_total",
                "Webhook certificate generations, reloads or publications that failed.",
            ))?,
            lease_duration_seconds: GaugeVec::new(
                opts(
                    "lease_duration_seconds",
                    "The ManagerConfig's spec.leaderElection.leaseDuration.",
                ),
                &["namespace", "name"],
            )?,
            watch_cache_bytes: IntGauge::with_opts(opts(
                "watch_cache_bytes",
                "JSON bytes of the objects in the workers' watch caches on this replica.",
            ))?,
            registry,
        };
        m.registry.register(Box::new(m.managers.clone()))?;
        m.registry.register(Box::new(m.manager_ready.clone()))?;
        m.registry
            .register(Box::new(m.startup_failures_total.clone()))?;
        m.registry
            .register(Box::new(m.startup_duration_seconds.clone()))?;
        m.registry.register(Box::new(m.leader.clone()))?;
        m.registry
            .register(Box::new(m.leader_transitions_total.clone()))?;
        m.registry
            .register(Box::new(m.lease_renew_duration_seconds.clone()))?;
        m.registry
            .register(Box::new(m.lease_renew_failures_total.clone()))?;
        m.registry.register(Box::new(m.reconcile_total.clone()))?;
        m.registry
            .register(Box::new(m.reconcile_duration_seconds.clone()))?;
        m.registry.register(Box::new(m.workers_active.clone()))?;
        m.registry.register(Box::new(m.queue_depth.clone()))?;
        m.registry
            .register(Box::new(m.hook_request_duration_seconds.clone()))?;
        m.registry
            .register(Box::new(m.admission_requests_total.clone()))?;
        m.registry
            .register(Box::new(m.admission_duration_seconds.clone()))?;
        m.registry.register(Box::new(m.tasks.clone()))?;
        m.registry
            .register(Box::new(m.webhook_certificate_rotations_total.clone()))?;
        m.registry.register(Box::new(m.replicas_seen.clone()))?;
        m.registry
            .register(Box::new(m.managers_preferred.clone()))?;
        m.registry.register(Box::new(m.managers_leading.clone()))?;
        m.registry.register(Box::new(m.handovers_total.clone()))?;
        m.registry.register(Box::new(m.watch_cache_bytes.clone()))?;
        m.registry
            .register(Box::new(m.admission_request_errors_total.clone()))?;
        m.registry.register(Box::new(m.build_info.clone()))?;
        m.registry
            .register(Box::new(m.kube_requests_total.clone()))?;
        m.registry
            .register(Box::new(m.kube_request_duration_seconds.clone()))?;
        m.registry
            .register(Box::new(m.controller_reconcile_errors_total.clone()))?;
        m.registry.register(Box::new(
            m.webhook_certificate_expiration_timestamp_seconds.clone(),
        ))?;
        m.registry.register(Box::new(
            m.webhook_certificate_rotation_failures_total.clone(),
        ))?;
        m.registry
            .register(Box::new(m.lease_duration_seconds.clone()))?;
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ... (no
        // prefix, as every Prometheus client names them).
        #[cfg(target_os = "linux")]
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), REVISION])
            .set(1);
        for code in ADMISSION_ERROR_CODES {
            m.admission_request_errors_total.with_label_values(&[code]);
        }
        for kind in ["api", "metadata"] {
            m.controller_reconcile_errors_total
                .with_label_values(&[kind]);
        }
        for reason in HANDOVER_REASONS {
            m.handovers_total.with_label_values(&[reason]);
        }
        // Counters whose label values are known up front start at 0, so `increase()`/`rate()`
        // see their first event (a series that appears at 1 shows no increase).
        for (operation, allowed) in [
            ("CREATE", "true"),
            ("CREATE", "false"),
            ("UPDATE", "true"),
            ("UPDATE", "false"),
        ] {
            m.admission_requests_total
                .with_label_values(&[operation, allowed]);
        }
        Ok(m)
    }

    /// Creates the per-ManagerConfig counters at 0 (idempotent), so the first leader transition
    /// or renew failure of a config shows up in `increase()`. Called when a manager starts.
    pub fn init_manager(&self, namespace: &str, name: &str) {
        self.leader_transitions_total
            .with_label_values(&[namespace, name]);
        self.lease_renew_failures_total
            .with_label_values(&[namespace, name]);
    }

    /// Removes every series labelled with this ManagerConfig (called once its manager has
    /// stopped for good: the config was deleted). Without it each deleted config leaves ~20
    /// series behind, and `/metrics` and the process grow with every config ever created.
    pub fn forget_manager(&self, namespace: &str, name: &str) {
        fn forget<T: MetricVecBuilder>(v: &MetricVec<T>, namespace: &str, name: &str) {
            for family in v.collect() {
                for metric in family.get_metric() {
                    let labels: HashMap<&str, &str> = metric
                        .get_label()
                        .iter()
                        .map(|l| (l.name(), l.value()))
                        .collect();
                    if labels.get("namespace") == Some(&namespace)
                        && labels.get("name") == Some(&name)
                    {
                        let _ = v.remove(&labels);
                    }
                }
            }
        }
        forget(&self.manager_ready, namespace, name);
        forget(&self.startup_failures_total, namespace, name);
        forget(&self.leader, namespace, name);
        forget(&self.leader_transitions_total, namespace, name);
        forget(&self.lease_renew_failures_total, namespace, name);
        forget(&self.reconcile_total, namespace, name);
        forget(&self.reconcile_duration_seconds, namespace, name);
        forget(&self.workers_active, namespace, name);
        forget(&self.queue_depth, namespace, name);
        forget(&self.lease_duration_seconds, namespace, name);
    }

    /// Removes the per-worker series of this ManagerConfig whose worker is not in `keep`
    /// (called when a spec change renamed or removed workers), so renaming workers again and
    /// again does not grow `/metrics`.
    pub fn forget_workers(&self, namespace: &str, name: &str, keep: &[&str]) {
        fn forget<T: MetricVecBuilder>(
            v: &MetricVec<T>,
            namespace: &str,
            name: &str,
            keep: &[&str],
        ) {
            for family in v.collect() {
                for metric in family.get_metric() {
                    let labels: HashMap<&str, &str> = metric
                        .get_label()
                        .iter()
                        .map(|l| (l.name(), l.value()))
                        .collect();
                    if labels.get("namespace") == Some(&namespace)
                        && labels.get("name") == Some(&name)
                        && labels.get("worker").is_some_and(|w| !keep.contains(w))
                    {
                        let _ = v.remove(&labels);
                    }
                }
            }
        }
        forget(&self.reconcile_total, namespace, name, keep);
        forget(&self.reconcile_duration_seconds, namespace, name, keep);
        forget(&self.workers_active, namespace, name, keep);
        forget(&self.queue_depth, namespace, name, keep);
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forget_manager_removes_only_that_configs_series() {
        let m = Metrics::new().expect("metrics register");
        for name in ["a", "b"] {
            m.init_manager("ns", name);
            m.manager_ready.with_label_values(&["ns", name]).set(1);
            m.reconcile_total
                .with_label_values(&["ns", name, "w", "success"])
                .inc();
            m.reconcile_duration_seconds
                .with_label_values(&["ns", name, "w"])
                .observe(0.1);
            m.startup_failures_total
                .with_label_values(&["ns", name, "InvalidSpec"])
                .inc();
        }
        m.forget_manager("ns", "a");
        let text = m.encode().unwrap();
        assert!(!text.contains("name=\"a\""), "{text}");
        for metric in [
            "manager_ready",
            "reconcile_total",
            "reconcile_duration_seconds_count",
            "startup_failures_total",
            "leader_transitions_total",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("manager_operator_{metric}{{"))
                        && l.contains("name=\"b\"")),
                "{metric} of b is gone:\n{text}"
            );
        }
    }

    #[test]
    fn forget_workers_keeps_only_the_named_workers() {
        let m = Metrics::new().unwrap();
        for w in ["a", "b", "c"] {
            m.reconcile_total
                .with_label_values(&["ns", "mc", w, "success"])
                .inc();
            m.queue_depth.with_label_values(&["ns", "mc", w]).set(1);
        }
        m.queue_depth
            .with_label_values(&["ns", "other", "a"])
            .set(1);
        m.forget_workers("ns", "mc", &["b"]);
        let text = m.encode().unwrap();
        assert!(
            !text.contains(r#"name="mc",namespace="ns",worker="a""#),
            "{text}"
        );
        assert!(!text.contains(r#"worker="c""#), "{text}");
        assert!(
            text.contains(r#"name="mc",namespace="ns",worker="b""#),
            "{text}"
        );
        assert!(
            text.contains(r#"name="other",namespace="ns",worker="a""#),
            "{text}"
        );
    }

    #[test]
    fn registers_and_encodes() {
        let m = Metrics::new().expect("metrics register");
        m.admission_requests_total
            .with_label_values(&["CREATE", "true"])
            .inc();
        m.startup_failures_total
            .with_label_values(&["ns", "n", "InvalidSpec"])
            .inc();
        let text = m.encode().expect("encodes");
        assert!(text.contains(
            "manager_operator_admission_requests_total{allowed=\"true\",operation=\"CREATE\"} 1"
        ));
        assert!(text.contains("manager_operator_startup_failures_total{name=\"n\",namespace=\"ns\",reason=\"InvalidSpec\"} 1"));
    }

    #[test]
    fn known_series_start_at_zero() {
        let m = Metrics::new().expect("metrics register");
        m.init_manager("ns", "n");
        let text = m.encode().expect("encodes");
        for line in [
            "manager_operator_admission_requests_total{allowed=\"false\",operation=\"CREATE\"} 0",
            "manager_operator_admission_request_errors_total{code=\"503\"} 0",
            "manager_operator_controller_reconcile_errors_total{kind=\"api\"} 0",
            "process_open_fds ",
            "manager_operator_leader_transitions_total{name=\"n\",namespace=\"ns\"} 0",
            "manager_operator_lease_renew_failures_total{name=\"n\",namespace=\"ns\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        let info = format!(
            "manager_operator_build_info{{revision=\"{REVISION}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&info), "missing {info} in\n{text}");
    }
}
