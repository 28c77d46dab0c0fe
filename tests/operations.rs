//! Day-two operations (docs/logging.md, docs/metrics.md) against the real control plane and two
//! operator processes (`manager-operator run --log-format json`, placement on):
//!
//! * every log line of both replicas is one JSON object **without duplicate keys** (parsed by a
//!   strict parser: serde_json keeps the last of two equal keys silently); election lines carry
//!   the config in the span (`span.namespace`, `span.config`), failure lines carry `reason` and
//!   `detail` beside the event's own `message`;
//! * a startup failure every replica sees (`LeaseForbidden`) gets Warning Events from
//!   **one** replica only (the one placement prefers), however often both retry;
//! * the operator metrics a day-two operator needs are served: `process_*`, `build_info`,
//!   Kubernetes API requests by method and code (watches included), the config's
//!   `lease_duration_seconds`, the reconciler's error counter.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use manager_operator::api::ManagerConfig;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use support::{ManagerConfigBuilder, RecordingHook, TIMEOUT, WorkerBuilder, rbac, wait_for};

const SA: &str = "worker";

// ---------------------------------------------------------------------------------------------
// A JSON parser that refuses duplicate keys.

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.insert(k.clone(), v).is_some() {
                return Err(de::Error::custom(format!("duplicate key {k:?}")));
            }
        }
        Ok(Value::Object(out))
    }
}

fn strict(line: &str) -> Result<Value, String> {
    serde_json::from_str::<Strict>(line)
        .map(|s| s.0)
        .map_err(|e| e.to_string())
}

#[test]
fn the_strict_parser_refuses_duplicate_keys() {
    assert!(strict(r#"{"a":1,"b":{"c":2}}"#).is_ok());
    let e = strict(r#"{"span":{"name":"manager","name":"x"}}"#).unwrap_err();
    assert!(e.contains("duplicate key \"name\""), "{e}");
    assert!(strict(r#"{"message":"a","message":"b"}"#).is_err());
}

// ---------------------------------------------------------------------------------------------

/// Applies a config (leaseDuration 4s, renewDeadline 3s, retryPeriod 1s; startupTimeout and
/// gracefulShutdownTimeout left at the API defaults) with one worker (concurrency 1, resync
/// 1s) over the `ops=yes` ConfigMaps calling `hook`.
fn config(ns: &str, name: &str, lease_namespace: Option<&str>, hook: &str) {
    ManagerConfigBuilder::new(ns, name)
        .service_account(SA)
        .lease("4s", "3s", "1s")
        .lease_namespace(lease_namespace)
        .startup_timeout("60s")
        .graceful_shutdown_timeout("30s")
        .worker(
            WorkerBuilder::new("cms")
                .concurrency(1)
                .resync("1s")
                .selector("ops=yes")
                .hook(hook),
        )
        .apply();
}

async fn ready_reason(api: &Api<ManagerConfig>, name: &str) -> Option<(String, String)> {
    let mc = api.get(name).await.ok()?;
    mc.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status, c.reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_events_and_metrics_hold_up_on_two_replicas() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "ops").await;
    rbac::service_account(&ns, SA);
    rbac::grant_watch(&ns, SA, "configmaps");
    rbac::create_configmap(&client, &ns, "one", &[("ops", "yes")]).await;
    let recorder = RecordingHook::builder()
        .default_reply(200, "{}")
        .start()
        .await;
    let hook = recorder.url.clone();

    let group = ["--membership-group", ns.as_str()];
    let ops = [
        support::operator()
            .namespace(&ns)
            .identity(&format!("{ns}-a"))
            .log_format("json")
            .args(group)
            .start()
            .await,
        support::operator()
            .namespace(&ns)
            .identity(&format!("{ns}-b"))
            .log_format("json")
            .args(group)
            .start()
            .await,
    ];
    config(&ns, "good", None, &hook);
    config(&ns, "bad", Some("no-such-namespace-for-ops"), &hook);
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    wait_for("good Ready=True", TIMEOUT, || async {
        match ready_reason(&api, "good").await {
            Some((s, _)) if s == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", ops[0].tail(), ops[1].tail()));
    wait_for("good's hook called", TIMEOUT, || async {
        (recorder.count() > 0)
            .then_some(())
            .ok_or_else(|| "no call yet".to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Both replicas fail "bad" again and again (backoff 1 s, 2 s, ...): wait until each has
    // failed at least twice, then its Events must all come from one replica.
    for op in &ops {
        wait_for("both replicas failing bad twice", TIMEOUT, || async {
            op.metric(
                "manager_operator_startup_failures_total",
                &[("name", "bad"), ("reason", "LeaseForbidden")],
            )
            .await
            .filter(|v| *v >= 2.0)
            .ok_or_else(|| "not yet".to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    }
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let reporters = wait_for("a LeaseForbidden Event for bad", TIMEOUT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let reporters: BTreeSet<String> = list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("LeaseForbidden"))
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.name.as_deref() == Some("bad"))
            })
            .filter_map(|e| e.reporting_instance.clone())
            .collect();
        (!reporters.is_empty())
            .then_some(reporters)
            .ok_or_else(|| "none yet".to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[ops] LeaseForbidden Events of bad reported by {reporters:?}");
    assert_eq!(
        reporters.len(),
        1,
        "one replica reports a failure every replica sees: {reporters:?}"
    );

    // Logs: strict JSON, stable keys.
    let mut lines = 0usize;
    let mut acquired = None;
    let mut failed = None;
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    for op in &ops {
        for line in op.log_text().lines().filter(|l| !l.trim().is_empty()) {
            let v =
                strict(line).unwrap_or_else(|e| panic!("not one strict JSON object ({e}): {line}"));
            lines += 1;
            for k in ["timestamp", "level", "target", "message"] {
                assert!(v.get(k).is_some(), "no {k:?} in {line}");
            }
            for k in v
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                *keys.entry(k).or_default() += 1;
            }
            let msg = v["message"].as_str().unwrap_or_default();
            if msg == "acquired the lease" && v["span"]["config"] == "good" {
                acquired = Some(v.clone());
            }
            if msg == "manager failed to start" && v["name"] == "bad" {
                failed = Some(v.clone());
            }
        }
    }
    eprintln!("[ops] {lines} JSON log lines, keys: {keys:?}");
    let acquired = acquired.expect("an 'acquired the lease' line for good");
    eprintln!("[ops] sample election line: {acquired}");
    assert_eq!(acquired["span"]["name"], "manager", "{acquired}");
    assert_eq!(acquired["span"]["namespace"], ns.as_str(), "{acquired}");
    let failed = failed.expect("a 'manager failed to start' line for bad");
    eprintln!("[ops] sample failure line: {failed}");
    assert_eq!(failed["reason"], "LeaseForbidden", "{failed}");
    assert_eq!(failed["namespace"], ns.as_str(), "{failed}");
    assert!(
        failed["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no-such-namespace-for-ops")),
        "{failed}"
    );

    // Metrics.
    let mut leading = None;
    for op in &ops {
        for (name, labels) in [
            ("process_open_fds", vec![]),
            ("process_resident_memory_bytes", vec![]),
            ("manager_operator_build_info", vec![]),
            (
                "manager_operator_kube_requests_total",
                vec![("method", "WATCH"), ("code", "200")],
            ),
            (
                "manager_operator_kube_request_duration_seconds_count",
                vec![("method", "WATCH")],
            ),
            (
                "manager_operator_controller_reconcile_errors_total",
                vec![("kind", "api")],
            ),
        ] {
            assert!(
                op.metric(name, &labels).await.is_some(),
                "{name}{labels:?} missing\n{}",
                op.tail()
            );
        }
        if op
            .metric("manager_operator_leader{", &[("name", "good")])
            .await
            == Some(1.0)
        {
            leading = Some(op);
        }
    }
    let leading = leading.expect("a replica leads good");
    assert_eq!(
        leading
            .metric(
                "manager_operator_lease_duration_seconds",
                &[("name", "good")]
            )
            .await,
        Some(4.0)
    );
    drop(ops);
    let _ = support::kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}
