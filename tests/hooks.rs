//! Hook destinations on the real control plane: `manager-operator run` processes against the
//! local kube-apiserver, a hook server on 127.0.0.1, and a hook URL whose host NAME resolves to
//! 127.0.0.1 (`--hook-resolve hook.test.invalid=127.0.0.1`, the test-only fixed DNS answer; no
//! DNS query leaves the machine, nothing leaves 127.0.0.0/8).
//!
//! * without `--hook-allow-loopback` the name passes the URL check (a name, allowed host
//!   pattern `*`) but the connection is refused by resolved address: no call reaches the hook,
//!   `hook_request_duration_seconds{code="refused"}` counts the refusals, the log names the
//!   address and the rule, and the config turns `Degraded=True HookErrors`;
//! * with `--hook-allow-loopback` the same config's calls arrive.
//!
//! Also here: a startup failure whose message is longer than the API server's 1 KiB Event note
//! limit still produces its Warning Event (note cut, full text in the condition).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::ListParams;
use manager_operator::api::ManagerConfig;
use support::prom::{parse_prometheus, sum_of};
use support::rbac::{create_configmap, grant, service_account};
use support::{ManagerConfigBuilder, Operator, RecordingHook, TIMEOUT, WorkerBuilder, wait_for};

/// The name the hook URL uses; the operator answers it with 127.0.0.1 (`--hook-resolve`).
const HOOK_NAME: &str = "hook.test.invalid";

/// One `manager-operator run` process for one namespace, webhook off, WITHOUT
/// `--hook-allow-loopback` unless `extra` has it.
async fn start_operator(identity: &str, ns: &str, extra: &[&str]) -> Operator {
    support::operator()
        .identity(identity)
        .namespace(ns)
        .no_hook_allow_loopback()
        .args(extra)
        .start()
        .await
}

/// Service account `sa` in `ns` may get, list and watch ConfigMaps there.
fn grant_configmaps(ns: &str, sa: &str) {
    service_account(ns, sa);
    grant(
        ns,
        sa,
        &format!("{sa}-cms"),
        "- apiGroups: ['']\n  resources: [configmaps]\n  verbs: [get, list, watch]\n",
    );
}

/// Config `name` with one worker `cms` watching `kind` objects matching `selector`.
fn config(
    ns: &str,
    name: &str,
    sa: &str,
    url: &str,
    kind: &str,
    selector: &str,
) -> ManagerConfigBuilder {
    ManagerConfigBuilder::new(ns, name)
        .service_account(sa)
        .worker(
            WorkerBuilder::new("cms")
                .watch("v1", kind)
                .selector(selector)
                .hook(url)
                .timeout("2s"),
        )
}

async fn create_cms(client: &kube::Client, ns: &str, n: usize) {
    for i in 0..n {
        create_configmap(client, ns, &format!("cm-{i}"), &[("app", "hooked")]).await;
    }
}

fn condition<'a>(mc: &'a ManagerConfig, ty: &str) -> Option<&'a Condition> {
    mc.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == ty))
}

async fn wait_condition(
    api: &Api<ManagerConfig>,
    name: &str,
    ty: &str,
    status: &str,
    reason: &str,
    timeout: Duration,
) -> Condition {
    wait_for(
        &format!("{name}: {ty}={status} {reason}"),
        timeout,
        || async {
            let mc = api.get(name).await.map_err(|e| e.to_string())?;
            match condition(&mc, ty) {
                Some(c) if c.status == status && c.reason == reason => Ok(c.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Sum of the `_count` series of `hook_request_duration_seconds` with `code`.
fn hook_count(metrics: &str, code: &str) -> f64 {
    sum_of(
        &parse_prometheus(metrics),
        "manager_operator_hook_request_duration_seconds_count",
        &[("code", code)],
    )
}

/// `/metrics` of `op`, empty when it does not answer.
async fn metrics_of(op: &Operator) -> String {
    op.try_metrics_text().await.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_refused_at_connect_time_unless_loopback_is_allowed() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "hooks-dns").await;
    grant_configmaps(&ns, "worker");
    let hook = RecordingHook::start().await;
    let url = format!("http://{HOOK_NAME}:{}/hook", hook.addr.port());
    let resolve = format!("{HOOK_NAME}=127.0.0.1");
    create_cms(&client, &ns, 4).await;
    config(&ns, "by-name", "worker", &url, "ConfigMap", "app=hooked").apply();
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);

    // 1. Without --hook-allow-loopback: the URL passes (a name), the connection does not.
    let t0 = Instant::now();
    let op = start_operator("hooks-strict", &ns, &["--hook-resolve", &resolve]).await;
    wait_condition(&api, "by-name", "Ready", "True", "Running", TIMEOUT).await;
    let refused = wait_for("refused hook calls counted", TIMEOUT, || async {
        let n = hook_count(&metrics_of(&op).await, "refused");
        if n >= 4.0 {
            Ok(n)
        } else {
            Err(format!("{n} refused so far"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let log = op.log_text();
    let expected = format!(
        "hook destination refused: {HOOK_NAME} resolved only to refused addresses: address 127.0.0.1 is in 127.0.0.0/8 [rule loopback"
    );
    assert!(
        log.contains(&expected),
        "the log names the name, the address and the rule:\n{}",
        op.log_tail(30)
    );
    let degraded = wait_condition(
        &api,
        "by-name",
        "Degraded",
        "True",
        "HookErrors",
        Duration::from_secs(90),
    )
    .await;
    let took = t0.elapsed();
    let metrics = metrics_of(&op).await;
    assert_eq!(
        hook_count(&metrics, "200"),
        0.0,
        "no successful call was counted"
    );
    assert_eq!(hook.count(), 0, "no call reached the hook");
    eprintln!(
        "[timing] refused by resolved address: {refused} refusals counted, Degraded=True after {took:?} ({}); 0 calls reached the hook",
        degraded.message
    );
    drop(op);

    // 2. With --hook-allow-loopback: the same config's calls arrive.
    let t1 = Instant::now();
    let op = start_operator(
        "hooks-loopback",
        &ns,
        &["--hook-resolve", &resolve, "--hook-allow-loopback"],
    )
    .await;
    wait_for("calls reach the hook", TIMEOUT, || async {
        if hook.count() >= 4 {
            Ok(())
        } else {
            Err(format!("{} calls so far", hook.count()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hook_count(&metrics_of(&op).await, "refused"), 0.0);
    eprintln!(
        "[timing] with --hook-allow-loopback: {} calls arrived within {:?}",
        hook.count(),
        t1.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_failure_longer_than_the_event_note_limit_still_has_its_event() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "hooks-note").await;
    // A 253-character service account that may not list ConfigMaps: WatchForbidden names it
    // several times, so the message is well over 1 KiB.
    let sa = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(sa.len(), 253);
    let hook = RecordingHook::start().await;
    let url = format!("http://127.0.0.1:{}/hook", hook.addr.port());
    config(&ns, "long-note", &sa, &url, "ConfigMap", "app=x").apply();
    let _op = start_operator("hooks-note", &ns, &["--hook-allow-loopback"]).await;
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    let ready = wait_condition(
        &api,
        "long-note",
        "Ready",
        "False",
        "WatchForbidden",
        TIMEOUT,
    )
    .await;
    assert!(
        ready.message.len() > 1024,
        "the condition keeps the full text ({} bytes)",
        ready.message.len()
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let note = wait_for("a WatchForbidden Warning Event", TIMEOUT, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("WatchForbidden")
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding
                        .as_ref()
                        .is_some_and(|r| r.name.as_deref() == Some("long-note"))
            })
            .and_then(|e| e.note.clone())
            .ok_or_else(|| format!("{} events, none WatchForbidden", list.items.len()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(note.len() <= 1024, "note is {} bytes", note.len());
    assert!(note.ends_with('…'), "{note}");
    assert!(
        ready.message.starts_with(note.trim_end_matches('…')),
        "the note is the start of the condition's message"
    );
    eprintln!(
        "[note] condition message {} bytes, Event note {} bytes",
        ready.message.len(),
        note.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_to_a_plain_http_hook_are_refused_at_runtime_unless_allowed() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "hooks-secrets").await;
    let hook = RecordingHook::start().await;
    let url = format!("http://127.0.0.1:{}/hook", hook.addr.port());
    // The webhook is off (as if bypassed): the operator itself must refuse the config.
    config(&ns, "secrets-http", "default", &url, "Secret", "app=x").apply();
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    let op = start_operator("hooks-secrets", &ns, &["--hook-allow-loopback"]).await;
    let c = wait_condition(
        &api,
        "secrets-http",
        "Ready",
        "False",
        "HookRejected",
        TIMEOUT,
    )
    .await;
    assert!(
        c.message.contains("--hook-allow-insecure-secrets") && c.message.contains("v1/Secret"),
        "{}",
        c.message
    );
    drop(op);
    // With the flag the config is accepted (and then fails only because "default" may not
    // list Secrets: the operator's own rights never leak to the tenant).
    let _op = start_operator(
        "hooks-secrets-allowed",
        &ns,
        &["--hook-allow-loopback", "--hook-allow-insecure-secrets"],
    )
    .await;
    wait_condition(
        &api,
        "secrets-http",
        "Ready",
        "False",
        "WatchForbidden",
        TIMEOUT,
    )
    .await;
    assert_eq!(hook.count(), 0);
    eprintln!("[secrets] http hook for Secrets: HookRejected without the flag; with it, accepted");
}
