//! Scenario 3: startup error surfacing with the webhook off.
//!
//! One replica runs with `--disable-webhook` (no webhook is registered either), so broken
//! configs are stored. The harness watches ManagerConfigs (a kube-runtime watcher, synced
//! before the first create), creates N broken configs (8 creates in flight), and times, per
//! config, from sending the create to the first watch event showing `Ready=False` with the
//! expected reason.
//!
//! * `InvalidSpec`: a `labelSelector` that does not parse (`app in (`). The CRD's CEL rules
//!   reject the classic lease-timing mistakes before they are stored, so a config the runtime
//!   validation must catch has to break a rule CEL cannot express.
//! * `LeaseNamespaceNotFound`: `leaseNamespace` names a namespace that does not exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::util::{self, Csv, Operator, OperatorOpts, Result, f, ms};

#[derive(Default)]
struct Seen {
    /// "name/reason" → when first seen with Ready=False and that reason.
    first: HashMap<String, Instant>,
    /// name → the first Ready=False reason seen (diagnostics).
    first_reason: HashMap<String, String>,
}

/// Runs both kinds with `n` configs each and writes `out`.
pub async fn run(o: &OperatorOpts, ns: &str, n: usize, out: &std::path::Path) -> Result<()> {
    let client = util::client(&o.kubeconfig).await?;
    let extra = util::no_webhook_args(ns);
    let mut op = Operator::spawn(o, "bench-surfacing", &extra)?;
    op.wait_ready(Duration::from_secs(60)).await?;

    let api = util::mc_api(&client, ns);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    let watch_task = util::watch_objects(api.clone(), move |obj, now| {
        if let Some(reason) = util::condition_reason(obj, "Ready", "False") {
            let mut g = s2.lock().unwrap_or_else(|e| e.into_inner());
            let name = obj.metadata.name.clone().unwrap_or_default();
            g.first.entry(format!("{name}/{reason}")).or_insert(now);
            g.first_reason.entry(name).or_insert(reason);
        }
    })
    .await?;

    util::warm_up_mc(&api, ns).await?;

    let mut csv = Csv::new(
        out,
        &[
            "reason",
            "index",
            "name",
            "create_ms",
            "latency_ms",
            "latency_after_create_ms",
            "first_ready_false_reason",
            "load1",
        ],
    );
    for (reason, prefix) in [
        ("InvalidSpec", "invalid"),
        ("LeaseNamespaceNotFound", "nolease"),
    ] {
        let load1 = util::loadavg().0;
        let objs: Vec<(String, serde_json::Value)> = (0..n)
            .map(|i| {
                let name = format!("{prefix}-{i:04}");
                let mut le = json!({"leaseDuration": "15s"});
                let mut selector = "bench=surfacing".to_string();
                if reason == "InvalidSpec" {
                    selector = "app in (".into();
                } else {
                    le["leaseNamespace"] = json!("no-such-namespace");
                }
                let v = json!({
                    "apiVersion": "manager-operator.io/v1alpha1",
                    "kind": "ManagerConfig",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {
                        "leaderElection": le,
                        "workers": [{
                            "name": "w",
                            "watch": {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": selector},
                            "hook": {"url": "http://127.0.0.1:9/hook"}
                        }]
                    }
                });
                (name, v)
            })
            .collect();
        let created: Vec<(String, Instant, Instant)> = futures::stream::iter(objs)
            .map(|(name, v)| {
                let api = api.clone();
                async move {
                    let obj = util::dynamic(v)?;
                    let sent = Instant::now();
                    util::create_idempotent(&api, &obj).await?;
                    Ok::<_, util::Error>((name, sent, Instant::now()))
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = {
                let g = seen.lock().unwrap_or_else(|e| e.into_inner());
                created
                    .iter()
                    .all(|(name, _, _)| g.first.contains_key(&format!("{name}/{reason}")))
            };
            if done || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let g = seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut lat = Vec::new();
        let mut sorted = created.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (name, sent, done)) in sorted.iter().enumerate() {
            let first_reason = g.first_reason.get(name).cloned();
            let (seen_reason, latency, after) = match g.first.get(&format!("{name}/{reason}")) {
                Some(at) => (
                    first_reason.unwrap_or_default(),
                    ms(at.saturating_duration_since(*sent)),
                    ms(at.saturating_duration_since(*done)),
                ),
                None => (
                    format!("timeout(first:{})", first_reason.unwrap_or_default()),
                    f64::NAN,
                    f64::NAN,
                ),
            };
            lat.push(latency);
            csv.row(&[
                reason.into(),
                i.to_string(),
                name.clone(),
                f(ms(done.saturating_duration_since(*sent))),
                f(latency),
                f(after),
                seen_reason,
                f(load1),
            ]);
        }
        eprintln!(
            "[bench] {reason}: {} configs, p50 {:.0} ms, p99 {:.0} ms",
            lat.len(),
            util::median(&lat),
            util::percentile(&lat, 99.0)
        );
    }
    csv.save()?;
    watch_task.abort();
    op.stop().await;
    Ok(())
}
