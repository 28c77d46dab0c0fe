//! Per-config limits (docs/security.md) against the real control plane and the operator binary
//! (`manager-operator run`, webhook off, one replica watching the test's namespace):
//!
//! * `--max-watched-objects-per-config`: a config whose worker would cache more objects than
//!   the limit stops with `LimitExceeded` (Ready=False condition naming the flag, Warning
//!   Event, `startup_failures_total{reason="LimitExceeded"}`), while a config under the limit
//!   in the same namespace keeps running and calling its hook. It heals both ways: the
//!   operator restarted with a higher limit runs it, and with the old limit it starts by itself
//!   (the failed start is retried with backoff) once enough objects were deleted.
//! * `--max-watch-cache-bytes-per-namespace` and `--max-watch-cache-bytes`: with a 64Ki budget,
//!   a config whose watch cache (4 ConfigMaps of 10 KiB) fits runs, a second one of the same
//!   size is refused with `LimitExceeded` naming the budget, `manager_operator_watch_cache_bytes`
//!   shows what the replica holds (never above the budget), and the refused config starts by
//!   itself once the first one is deleted; once with each of the two budgets.
//! * `--max-hook-calls-per-config`: two workers × `concurrency: 8` of one config never have
//!   more hook calls in flight than the cap (3), measured at a slow hook; the same config
//!   without the cap reaches 16; the cap is per config (another config's calls flow beside it).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use manager_operator::api::ManagerConfig;
use support::{
    ManagerConfigBuilder, Operator, RecordingHook, TIMEOUT, WorkerBuilder, kubectl_ok, rbac,
    wait_for,
};

const SA: &str = "worker";

// ---------------------------------------------------------------------------------------------
// Objects. The hook is the kit's RecordingHook answering `200 {}`, at once or after 1 s
// (`RecordingHook::builder().delay`); `answered_since` counts the calls it answered, `peak` the
// most calls of a config in flight at once.

/// A hook answering `200 {}` after `delay`.
async fn start_hook(delay: Duration) -> RecordingHook {
    RecordingHook::builder()
        .delay(delay)
        .default_reply(200, "{}")
        .start()
        .await
}

async fn namespace_with_watcher(client: &kube::Client, prefix: &str) -> String {
    let ns = support::fresh_namespace(client, prefix).await;
    rbac::service_account(&ns, SA);
    rbac::grant_watch(&ns, SA, "configmaps");
    ns
}

async fn configmaps(client: &kube::Client, ns: &str, prefix: &str, n: usize, label: &str) {
    let label = label.split_once('=').expect("label k=v");
    for i in 0..n {
        rbac::create_configmap(client, ns, &format!("{prefix}-{i}"), &[label]).await;
    }
}

/// A config of `workers` workers (each `concurrency`, resync 1 s) watching ConfigMaps with
/// `selector`, calling `hook`; leaseDuration 2s (the default floor), so a restarted operator
/// takes the Lease back quickly.
fn config(ns: &str, name: &str, workers: usize, concurrency: u16, selector: &str, hook: &str) {
    let mut mc = ManagerConfigBuilder::new(ns, name)
        .service_account(SA)
        .lease("2s", "1s", "500ms")
        .startup_timeout("30s")
        .graceful_shutdown_timeout("5s");
    for i in 0..workers {
        mc = mc.worker(
            WorkerBuilder::new(&format!("w{i}"))
                .concurrency(concurrency)
                .resync("1s")
                .selector(selector)
                .hook(hook)
                .timeout("5s"),
        );
    }
    mc.apply();
}

fn ready(mc: &ManagerConfig) -> Option<&Condition> {
    mc.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
}

/// Waits until `name`'s Ready condition satisfies `want`; returns it and the time it took.
async fn wait_ready(
    api: &Api<ManagerConfig>,
    name: &str,
    what: &str,
    op: &Operator,
    want: impl Fn(&Condition) -> bool,
) -> (Condition, Duration) {
    let t = Instant::now();
    let c = wait_for(&format!("{name}: {what}"), TIMEOUT, || async {
        let mc = api.get(name).await.map_err(|e| e.to_string())?;
        match ready(&mc) {
            Some(c) if want(c) => Ok(c.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- operator log ---\n{}", op.tail()));
    (c, t.elapsed())
}

fn is_true(c: &Condition) -> bool {
    c.status == "True"
}

fn limit_exceeded(c: &Condition) -> bool {
    c.status == "False" && c.reason == "LimitExceeded"
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_objects_limit_stops_only_the_config_over_it_and_heals() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = namespace_with_watcher(&client, "lim-watch").await;
    let hook = start_hook(Duration::ZERO).await;
    let url = hook.url.clone();
    // 30 ConfigMaps for "over", 5 for "under"; the limit is 20 objects per config.
    configmaps(&client, &ns, "big", 30, "set=big").await;
    configmaps(&client, &ns, "small", 5, "set=small").await;
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    let limit = ["--max-watched-objects-per-config", "20"];

    let op = support::operator().namespace(&ns).args(limit).start().await;
    config(&ns, "under", 1, 2, "set=small", &url);
    config(&ns, "over", 1, 2, "set=big", &url);
    let (c, took) = wait_ready(&api, "over", "LimitExceeded", &op, limit_exceeded).await;
    eprintln!(
        "[limits] over: LimitExceeded {} ms after apply: {}",
        took.as_millis(),
        c.message
    );
    assert!(
        c.message.contains("--max-watched-objects-per-config")
            && c.message.contains("more than 20 objects"),
        "{}",
        c.message
    );
    // The Warning Event and the metric.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let note = wait_for(
        "a LimitExceeded Warning Event for over",
        TIMEOUT,
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .iter()
                .find(|e| {
                    e.type_.as_deref() == Some("Warning")
                        && e.reason.as_deref() == Some("LimitExceeded")
                        && e.regarding
                            .as_ref()
                            .is_some_and(|r| r.name.as_deref() == Some("over"))
                })
                .map(|e| e.note.clone().unwrap_or_default())
                .ok_or_else(|| format!("{} events", list.items.len()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    assert!(note.contains("--max-watched-objects-per-config"), "{note}");
    let failures = wait_for(
        "startup_failures_total{over, LimitExceeded}",
        TIMEOUT,
        || {
            let op = &op;
            async move {
                op.metric(
                    "manager_operator_startup_failures_total",
                    &[("name", "over"), ("reason", "LimitExceeded")],
                )
                .await
                .filter(|v| *v >= 1.0)
                .ok_or_else(|| "not counted yet".to_string())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    eprintln!("[limits] startup_failures_total{{name=over,reason=LimitExceeded}} = {failures}");
    // The config under the limit runs and keeps calling its hook (5 objects, resync 1 s).
    wait_ready(&api, "under", "Ready=True", &op, is_true).await;
    let since = Instant::now();
    wait_for(
        "under: 10 hook calls after over failed",
        TIMEOUT,
        || async {
            let n = hook.answered_since("under", since);
            (n >= 10).then_some(()).ok_or(format!("{n} calls"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    // Still refused: it retries with backoff, so between two refusals it is briefly Starting
    // again; wait for the refusal rather than sample one moment.
    wait_for(
        "over still LimitExceeded while under runs",
        TIMEOUT,
        || async {
            let mc = api.get("over").await.map_err(|e| e.to_string())?;
            match ready(&mc) {
                Some(c) if c.status == "True" => panic!("over became Ready: {c:?}"),
                Some(c) if limit_exceeded(c) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    drop(op);

    // Heals by raising the limit (an operator flag: a restart with the new value).
    let restarted = Instant::now();
    let op = support::operator()
        .namespace(&ns)
        .args(["--max-watched-objects-per-config", "40"])
        .start()
        .await;
    wait_ready(&api, "over", "Ready=True (limit 40)", &op, is_true).await;
    eprintln!(
        "[limits] over: Ready=True {} ms after the operator was started again with limit 40",
        restarted.elapsed().as_millis()
    );
    let since = Instant::now();
    wait_for("over: 30 hook calls with limit 40", TIMEOUT, || async {
        let n = hook.answered_since("over", since);
        (n >= 30).then_some(()).ok_or(format!("{n} calls"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    drop(op);

    // Back to 20: refused again; then heals by itself once objects are deleted (30 → 15): the
    // failed start is retried with backoff (1 s, 2 s, 4 s, … up to 60 s).
    let op = support::operator().namespace(&ns).args(limit).start().await;
    wait_ready(&api, "over", "LimitExceeded again", &op, limit_exceeded).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for i in 15..30 {
        cms.delete(&format!("big-{i}"), &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting big-{i}: {e}"));
    }
    let deleted = Instant::now();
    let (_, _) = wait_ready(&api, "over", "Ready=True after deletion", &op, is_true).await;
    eprintln!(
        "[limits] over: Ready=True {} ms after 15 of its 30 ConfigMaps were deleted (limit 20)",
        deleted.elapsed().as_millis()
    );
    let mc = api.get("under").await.expect("under");
    assert!(ready(&mc).is_some_and(is_true), "under: {:?}", ready(&mc));
    drop(op);
    let _ = support::kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

/// `n` ConfigMaps of `bytes` bytes of data labelled `set=<prefix>`.
async fn sized_configmaps(client: &kube::Client, ns: &str, prefix: &str, n: usize, bytes: usize) {
    let blob = "x".repeat(bytes);
    for i in 0..n {
        rbac::create_configmap_with_data(
            client,
            ns,
            &format!("{prefix}-{i}"),
            &[("set", prefix)],
            &[("blob", &blob)],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cache_byte_budgets_refuse_the_config_that_does_not_fit_and_heal() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = namespace_with_watcher(&client, "lim-bytes").await;
    let hook = start_hook(Duration::ZERO).await;
    let url = hook.url.clone();
    // Two sets of 4 ConfigMaps of 10 KiB: one set's cache (~41 KB of JSON) fits in 64Ki, two
    // do not.
    for set in ["a", "b", "c", "d"] {
        sized_configmaps(&client, &ns, set, 4, 10 * 1024).await;
    }
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    let budgets: [(&[&str], &str, &str, &str); 2] = [
        (
            &["--max-watch-cache-bytes-per-namespace", "64Ki"],
            "--max-watch-cache-bytes-per-namespace",
            "a",
            "b",
        ),
        (
            &[
                "--max-watch-cache-bytes-per-namespace",
                "0",
                "--max-watch-cache-bytes",
                "64Ki",
            ],
            "--max-watch-cache-bytes",
            "c",
            "d",
        ),
    ];
    for (flags, flag, first, second) in budgets {
        let op = support::operator().namespace(&ns).args(flags).start().await;
        config(&ns, first, 1, 2, &format!("set={first}"), &url);
        wait_ready(&api, first, "Ready=True", &op, is_true).await;
        let held = op
            .metric("manager_operator_watch_cache_bytes", &[])
            .await
            .expect("manager_operator_watch_cache_bytes");
        assert!(
            (40_000.0..=65_536.0).contains(&held),
            "{flag}: {first}'s cache should hold ~41 KB, the gauge says {held}"
        );
        config(&ns, second, 1, 2, &format!("set={second}"), &url);
        let (c, took) = wait_ready(&api, second, "LimitExceeded", &op, limit_exceeded).await;
        eprintln!(
            "[limits] {flag} 64Ki: {first} runs holding {held} bytes; {second} LimitExceeded {} \
             ms after apply: {}",
            took.as_millis(),
            c.message
        );
        assert!(
            c.message.contains(flag) && c.message.contains("64Ki"),
            "{}",
            c.message
        );
        // The refused worker gave its bytes back; the first still runs.
        let held_after = wait_for("the refused cache given back", TIMEOUT, || {
            let op = &op;
            async move {
                op.metric("manager_operator_watch_cache_bytes", &[])
                    .await
                    .filter(|v| *v <= 65_536.0)
                    .ok_or_else(|| "not yet".to_string())
            }
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}
{}",
                op.tail()
            )
        });
        let mc = api.get(first).await.expect("first");
        assert!(ready(&mc).is_some_and(is_true), "{first}: {:?}", ready(&mc));
        // Heals by itself once there is room.
        kubectl_ok(&["-n", &ns, "delete", "managerconfig", first, "--wait=true"]);
        let deleted = Instant::now();
        wait_ready(&api, second, "Ready=True once first is gone", &op, is_true).await;
        eprintln!(
            "[limits] {flag}: gauge {held_after} bytes after the refusal; {second} Ready=True {} \
             ms after {first} was deleted",
            deleted.elapsed().as_millis()
        );
        kubectl_ok(&["-n", &ns, "delete", "managerconfig", second, "--wait=true"]);
        drop(op);
    }
    let _ = support::kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_calls_in_flight_are_capped_per_config() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = namespace_with_watcher(&client, "lim-hooks").await;
    let hook = start_hook(Duration::from_secs(1)).await;
    // 12 ConfigMaps, each watched by both workers of "busy": 24 objects want a call at once,
    // and each call takes 1 s. "beside" (1 worker × 2) watches 4 others.
    configmaps(&client, &ns, "load", 12, "set=load").await;
    configmaps(&client, &ns, "side", 4, "set=side").await;
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    let slow = hook.url.clone();

    // Without a cap (0): 2 workers × concurrency 8 reach 16 calls in flight.
    let op = support::operator()
        .namespace(&ns)
        .args(["--max-hook-calls-per-config", "0"])
        .start()
        .await;
    config(&ns, "busy", 2, 8, "set=load", &slow);
    wait_ready(&api, "busy", "Ready=True", &op, is_true).await;
    wait_for(
        "busy: 16 calls in flight without a cap",
        TIMEOUT,
        || async {
            let p = hook.peak("busy");
            (p >= 16).then_some(()).ok_or(format!("peak {p}"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    let uncapped = hook.peak("busy");
    eprintln!("[limits] busy without a cap: peak {uncapped} hook calls in flight");
    assert_eq!(uncapped, 16, "concurrency 8 per worker still holds");
    drop(op);

    // With --max-hook-calls-per-config 3.
    hook.reset();
    let op = support::operator()
        .namespace(&ns)
        .args(["--max-hook-calls-per-config", "3"])
        .start()
        .await;
    config(&ns, "beside", 1, 2, "set=side", &slow);
    let since = Instant::now();
    wait_for("busy: 40 calls done with the cap", TIMEOUT * 2, || async {
        let n = hook.answered_since("busy", since);
        (n >= 40).then_some(()).ok_or(format!("{n} calls"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    let took = since.elapsed();
    wait_for("beside: 10 calls done", TIMEOUT, || async {
        let n = hook.answered_since("beside", since);
        (n >= 10).then_some(()).ok_or(format!("{n} calls"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    let (capped, beside) = (hook.peak("busy"), hook.peak("beside"));
    eprintln!(
        "[limits] busy with --max-hook-calls-per-config 3: peak {capped} in flight, 40 calls of \
         1 s in {} ms; beside (1 worker x 2): peak {beside}",
        took.as_millis()
    );
    assert_eq!(capped, 3, "the cap holds and is used");
    assert_eq!(
        beside, 2,
        "another config's calls are not held back by busy's cap"
    );
    drop(op);
    let _ = support::kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}
