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

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};
use manager_operator::api::ManagerConfig;
use support::{TIMEOUT, kubectl_ok, wait_for};

/// The name the hook URL uses; the operator answers it with 127.0.0.1 (`--hook-resolve`).
const HOOK_NAME: &str = "hook.test.invalid";

async fn http_get(url: &str) -> Result<(u16, String), String> {
    let r = support::loopback_http()
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let code = r.status().as_u16();
    let body = r.text().await.map_err(|e| e.to_string())?;
    Ok((code, body))
}

/// One `manager-operator run` process for one namespace, webhook off. SIGKILLed on drop.
struct Operator {
    child: Option<Child>,
    metrics: SocketAddr,
    health: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    async fn start(identity: &str, ns: &str, extra: &[&str]) -> Operator {
        for attempt in 0.. {
            let mut op = Self::spawn(identity, ns, extra);
            match op.wait_ready().await {
                Ok(()) => return op,
                Err(e) if attempt < 3 && op.log_text().contains("cannot listen") => {
                    eprintln!("[operator {identity}] port taken, retrying: {e}");
                }
                Err(e) => panic!(
                    "operator {identity} did not become ready: {e}\n{}",
                    support::log_tail(&op.log, 80)
                ),
            }
        }
        unreachable!()
    }

    fn spawn(identity: &str, ns: &str, extra: &[&str]) -> Operator {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join(format!("{identity}.log"));
        let file = File::create(&log).expect("log file");
        let addr = || -> SocketAddr {
            format!("127.0.0.1:{}", support::free_port())
                .parse()
                .expect("addr")
        };
        let (metrics, health) = (addr(), addr());
        let child = Command::new(env!("CARGO_BIN_EXE_manager-operator"))
            .arg("run")
            .args(["--identity", identity])
            .arg("--kubeconfig")
            .arg(support::kubeconfig_path())
            .args(["--metrics-bind-address", &metrics.to_string()])
            .args(["--health-probe-bind-address", &health.to_string()])
            .args(["--watch-namespace", ns])
            .arg("--disable-webhook")
            .args(extra)
            .args(["--log-format", "text"])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawning manager-operator run");
        Operator {
            child: Some(child),
            metrics,
            health,
            log,
            _dir: dir,
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let t = Instant::now();
        let url = format!("http://{}/readyz", self.health);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(s)) = c.try_wait()
            {
                return Err(format!("exited with {s}"));
            }
            if let Ok((200, _)) = http_get(&url).await {
                return Ok(());
            }
            if t.elapsed() > TIMEOUT {
                return Err(format!("/readyz not 200 after {TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn metrics_text(&self) -> String {
        http_get(&format!("http://{}/metrics", self.metrics))
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- operator log tail ---\n{}\n--- end ---",
                support::log_tail(&self.log, 60)
            );
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A hook server on 127.0.0.1 counting the calls it receives.
struct Hook {
    calls: Arc<AtomicUsize>,
    port: u16,
}

async fn handle(State(calls): State<Arc<AtomicUsize>>, _body: String) -> StatusCode {
    calls.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

impl Hook {
    async fn start() -> Hook {
        let calls = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route("/hook", post(handle))
            .with_state(calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Hook { calls, port }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn apply_yaml(yaml: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let f = dir.path().join("obj.yaml");
    std::fs::write(&f, yaml).expect("write");
    kubectl_ok(&["apply", "-f", f.to_str().expect("path")]);
}

/// Service account `sa` in `ns` may get, list and watch ConfigMaps there.
fn grant_configmaps(ns: &str, sa: &str) {
    apply_yaml(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {sa}, namespace: {ns}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata: {{name: {sa}-cms, namespace: {ns}}}\nrules:\n\
         - apiGroups: ['']\n  resources: [configmaps]\n  verbs: [get, list, watch]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: {sa}-cms, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {sa}-cms}}\n\
         subjects: [{{kind: ServiceAccount, name: {sa}, namespace: {ns}}}]\n"
    ));
}

fn config(ns: &str, name: &str, sa: &str, url: &str, selector: &str) -> String {
    format!(
        "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  serviceAccountName: {sa}\n  \
         leaderElection: {{leaseDuration: 3s, renewDeadline: 2s, retryPeriod: 500ms}}\n  \
         startupTimeout: 20s\n  gracefulShutdownTimeout: 5s\n  workers:\n  \
         - {{name: cms, watch: {{apiVersion: v1, kind: ConfigMap, labelSelector: '{selector}'}}, \
         hook: {{url: '{url}', timeout: 2s}}}}\n"
    )
}

async fn create_cms(client: &kube::Client, ns: &str, n: usize) {
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
    for i in 0..n {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("cm-{i}")),
                labels: Some([("app".to_string(), "hooked".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &cm)
            .await
            .expect("creating a ConfigMap");
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
    let label = format!("code=\"{code}\"");
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("manager_operator_hook_request_duration_seconds_count{")
                && l.contains(&label)
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_refused_at_connect_time_unless_loopback_is_allowed() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "hooks-dns").await;
    grant_configmaps(&ns, "worker");
    let hook = Hook::start().await;
    let url = format!("http://{HOOK_NAME}:{}/hook", hook.port);
    let resolve = format!("{HOOK_NAME}=127.0.0.1");
    create_cms(&client, &ns, 4).await;
    apply_yaml(&config(&ns, "by-name", "worker", &url, "app=hooked"));
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);

    // 1. Without --hook-allow-loopback: the URL passes (a name), the connection does not.
    let t0 = Instant::now();
    let op = Operator::start("hooks-strict", &ns, &["--hook-resolve", &resolve]).await;
    wait_condition(&api, "by-name", "Ready", "True", "Running", TIMEOUT).await;
    let refused = wait_for("refused hook calls counted", TIMEOUT, || async {
        let n = hook_count(&op.metrics_text().await, "refused");
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
        support::log_tail(&op.log, 30)
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
    let metrics = op.metrics_text().await;
    assert_eq!(
        hook_count(&metrics, "200"),
        0.0,
        "no successful call was counted"
    );
    assert_eq!(hook.calls(), 0, "no call reached the hook");
    eprintln!(
        "[timing] refused by resolved address: {refused} refusals counted, Degraded=True after {took:?} ({}); 0 calls reached the hook",
        degraded.message
    );
    drop(op);

    // 2. With --hook-allow-loopback: the same config's calls arrive.
    let t1 = Instant::now();
    let op = Operator::start(
        "hooks-loopback",
        &ns,
        &["--hook-resolve", &resolve, "--hook-allow-loopback"],
    )
    .await;
    wait_for("calls reach the hook", TIMEOUT, || async {
        if hook.calls() >= 4 {
            Ok(())
        } else {
            Err(format!("{} calls so far", hook.calls()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hook_count(&op.metrics_text().await, "refused"), 0.0);
    eprintln!(
        "[timing] with --hook-allow-loopback: {} calls arrived within {:?}",
        hook.calls(),
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
    let hook = Hook::start().await;
    let url = format!("http://127.0.0.1:{}/hook", hook.port);
    apply_yaml(&config(&ns, "long-note", &sa, &url, "app=x"));
    let _op = Operator::start("hooks-note", &ns, &["--hook-allow-loopback"]).await;
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
    let hook = Hook::start().await;
    let url = format!("http://127.0.0.1:{}/hook", hook.port);
    // The webhook is off (as if bypassed): the operator itself must refuse the config.
    let yaml = config(&ns, "secrets-http", "default", &url, "app=x")
        .replace("kind: ConfigMap", "kind: Secret");
    apply_yaml(&yaml);
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    let op = Operator::start("hooks-secrets", &ns, &["--hook-allow-loopback"]).await;
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
    let _op = Operator::start(
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
    assert_eq!(hook.calls(), 0);
    eprintln!("[secrets] http hook for Secrets: HookRejected without the flag; with it, accepted");
}
