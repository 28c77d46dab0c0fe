//! Fair shares (docs/security.md, docs/design.md §3 "one broken config never delays or stops another"),
//! measured on a REAL control plane of its own (`hack/cluster.sh up <tempdir>`, so nothing else
//! runs on it) with two operator replicas (`manager-operator run`, the default tenant limits,
//! placement on, as the chart runs them).
//!
//! * **noisy** namespace: 30 ManagerConfigs (`MO_SOAK=1`: 100) at the fastest timings the
//!   default floors allow (leaseDuration 2s = `--min-lease-duration`, retryPeriod 500ms =
//!   `--min-retry-period`, renewDeadline 1s: below leaseDuration and above 1.2 × retryPeriod as
//!   the CRD requires), each with one worker (concurrency 8, resync 1s) watching the same 24
//!   ConfigMaps of 500 KiB each (12 MiB per watch cache). A third of the hooks answer after
//!   900 ms, a third fail at once (500), a third never answer within the 1 s hook timeout.
//! * **quiet** namespace: one config (leaseDuration 3s, renewDeadline 2s, retryPeriod 500ms),
//!   one worker with resync 1s over 4 small ConfigMaps, a hook that answers at once.
//!
//! Measured, and printed as `[fairness] …` lines for docs/reliability.md:
//!
//! * the quiet config's hook-call latency (a ConfigMap update every 500 ms → the hook call
//!   carrying it) and the longest gap between its hook calls, alone (baseline) and while the
//!   noisy tenant runs;
//! * the quiet config's failover: SIGKILL of its leader → the other replica's first hook call;
//! * each replica's peak RSS (`VmHWM` of `/proc/<pid>/status`) against the chart's memory limit
//!   (`resources.limits.memory` of charts/manager-operator/values.yaml), including the survivor
//!   after it took over the killed replica's share of the noisy configs.
//!
//! Bounds asserted (generous; the numbers are what docs/reliability.md reports): at least half
//! of the quiet updates delivered (later ones supersede earlier ones), quiet latency max ≤ 5 s
//! and p50 ≤ 1 s, no gap between quiet hook calls > 5 s, failover ≤ leaseDuration + 5 s; every
//! noisy config either calling its hook or refused with `LimitExceeded` (the watch-cache
//! budgets of `src/workers/cache.rs`: 12 MiB caches against 32Mi per namespace per replica), at
//! least one of each, with two replicas and again on the survivor within 180 s of the kill;
//! every replica's peak RSS (`VmHWM`) below the chart's memory limit.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use manager_operator::api::ManagerConfig;
use serde_json::json;

const NOISY: &str = "noisy";
const QUIET: &str = "quiet";
const SA: &str = "worker";
/// The large ConfigMaps every noisy config watches.
const BIG_CMS: usize = 24;
const BIG_BYTES: usize = 500 * 1024;
/// The quiet config's leaseDuration.
const QUIET_LEASE: Duration = Duration::from_secs(3);

fn soak() -> bool {
    std::env::var("MO_SOAK").is_ok_and(|v| v == "1")
}

macro_rules! report {
    ($($arg:tt)*) => { eprintln!("[fairness] {}", format!($($arg)*)) };
}

// ---------------------------------------------------------------------------------------------
// A private control plane (as in tests/reliability.rs).

struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn up() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("mo-fair-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let c = Cluster { dir };
        let t = Instant::now();
        let out = Command::new(support::repo_root().join("hack/cluster.sh"))
            .arg("up")
            .arg(&c.dir)
            .stdin(Stdio::null())
            .output()
            .expect("running hack/cluster.sh");
        assert!(
            out.status.success(),
            "hack/cluster.sh up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        report!("private cluster up in {} ms", t.elapsed().as_millis());
        c
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    async fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kc = Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kube config");
        kube::Client::try_from(config).expect("kube client")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var("MO_KEEP_CLUSTER").is_ok_and(|v| v == "1") {
            report!("MO_KEEP_CLUSTER=1: leaving {} up", self.dir.display());
            return;
        }
        let _ = Command::new(support::repo_root().join("hack/cluster.sh"))
            .arg("down")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
    }
}

// ---------------------------------------------------------------------------------------------
// Operator replicas.

struct Operator {
    id: String,
    child: Child,
    log: PathBuf,
    /// Peak RSS read just before the replica was killed.
    hwm_at_kill: Option<u64>,
}

impl Operator {
    async fn start(cluster: &Cluster, id: &str) -> Operator {
        let health = support::free_addr();
        let log = cluster.dir.join(format!("operator-{id}.log"));
        let out = File::create(&log).expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_manager-operator"))
            .arg("run")
            .args(["--identity", id])
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(["--metrics-bind-address", &support::free_addr().to_string()])
            .args(["--health-probe-bind-address", &health.to_string()])
            .args(["--disable-webhook", "--hook-allow-loopback"])
            .args(["--log-format", "text"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .expect("starting manager-operator");
        let mut op = Operator {
            id: id.to_string(),
            child,
            log,
            hwm_at_kill: None,
        };
        let t = Instant::now();
        loop {
            op.assert_alive();
            let ready = support::loopback_http()
                .get(format!("http://{health}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200);
            if ready {
                return op;
            }
            assert!(t.elapsed() < support::TIMEOUT, "{id} not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "operator {} exited ({status}); last log lines:\n{}",
                self.id,
                support::log_tail(&self.log, 60)
            );
        }
    }

    /// A field of /proc/<pid>/status in KiB (VmHWM, VmRSS).
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reading /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} missing"))
    }

    /// Peak RSS in KiB (at the kill, for a killed replica).
    fn hwm_kib(&self) -> u64 {
        self.hwm_at_kill.unwrap_or_else(|| self.status_kib("VmHWM"))
    }

    fn kill9(&mut self) {
        self.assert_alive();
        self.hwm_at_kill = Some(self.status_kib("VmHWM"));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- operator {} ({}), last 60 lines ----\n{}",
                self.id,
                self.log.display(),
                support::log_tail(&self.log, 60)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hooks. Both read only the head of the call (manager, holder, the object's name and data.seq),
// skipping the rest without building it.

#[derive(serde::Deserialize)]
struct Head {
    manager: Mgr,
    holder: String,
    object: Obj,
}

#[derive(serde::Deserialize)]
struct Mgr {
    name: String,
}

#[derive(serde::Deserialize)]
struct Obj {
    metadata: Meta,
    #[serde(default)]
    data: Option<Seq>,
}

#[derive(serde::Deserialize)]
struct Meta {
    name: String,
}

#[derive(serde::Deserialize)]
struct Seq {
    seq: Option<String>,
}

#[derive(Clone, Debug)]
struct QuietCall {
    holder: String,
    object: String,
    seq: Option<u64>,
    at: Instant,
}

#[derive(Default)]
struct NoisyState {
    /// (config, holder) pairs seen, with the last call's time.
    seen: BTreeMap<(String, String), Instant>,
    calls: u64,
}

#[derive(Clone, Default)]
struct Hooks {
    quiet: Arc<Mutex<Vec<QuietCall>>>,
    noisy: Arc<Mutex<NoisyState>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn on_quiet(State(h): State<Hooks>, body: axum::body::Bytes) -> StatusCode {
    let Ok(head) = serde_json::from_slice::<Head>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    lock(&h.quiet).push(QuietCall {
        holder: head.holder,
        object: head.object.metadata.name,
        seq: head
            .object
            .data
            .and_then(|d| d.seq)
            .and_then(|s| s.parse().ok()),
        at: Instant::now(),
    });
    StatusCode::OK
}

/// `/slow` answers after 900 ms, `/fail` 500 at once, `/hang` after 3 s (hook timeout 1 s).
async fn on_noisy(
    State(h): State<Hooks>,
    Path(mode): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    if let Ok(head) = serde_json::from_slice::<Head>(&body) {
        let mut s = lock(&h.noisy);
        s.calls += 1;
        s.seen
            .insert((head.manager.name, head.holder), Instant::now());
    }
    match mode.as_str() {
        "slow" => {
            tokio::time::sleep(Duration::from_millis(900)).await;
            StatusCode::OK
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            StatusCode::OK
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Hooks {
    /// Two listeners on 127.0.0.1 (quiet, noisy); returns their base URLs.
    async fn start(&self) -> (String, String) {
        let mut urls = Vec::new();
        for quiet in [true, false] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("hook listener");
            let addr = listener.local_addr().expect("hook address");
            let app = if quiet {
                Router::new().route("/quiet", post(on_quiet))
            } else {
                Router::new().route("/noisy/{mode}", post(on_noisy))
            }
            .layer(axum::extract::DefaultBodyLimit::max(4 << 20))
            .with_state(self.clone());
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            urls.push(format!("http://{addr}"));
        }
        (urls[0].clone(), urls[1].clone())
    }

    fn quiet_calls(&self) -> Vec<QuietCall> {
        lock(&self.quiet).clone()
    }

    /// Noisy configs called by `holder` (any holder: None).
    fn noisy_configs(&self, holder: Option<&str>) -> usize {
        let s = lock(&self.noisy);
        s.seen
            .keys()
            .filter(|(_, h)| holder.is_none_or(|x| x == h))
            .map(|(c, _)| c.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Noisy configs called at all (`None`), or by `replica` after `t`.
    fn noisy_called_since(&self, since: Option<(&str, Instant)>) -> BTreeSet<String> {
        let s = lock(&self.noisy);
        s.seen
            .iter()
            .filter(|((_, h), at)| since.is_none_or(|(who, t)| who == h && **at >= t))
            .map(|((c, _), _)| c.clone())
            .collect()
    }

    fn noisy_calls(&self) -> u64 {
        lock(&self.noisy).calls
    }
}

// ---------------------------------------------------------------------------------------------
// Objects.

async fn setup_namespace(client: &kube::Client, ns: &str) {
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    };
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(
            &pp,
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("namespace");
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &ServiceAccount {
                metadata: meta(SA),
                ..Default::default()
            },
        )
        .await
        .expect("service account");
    Api::<Role>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &Role {
                metadata: meta("watch-cms"),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["configmaps".into()]),
                    verbs: vec!["get".into(), "list".into(), "watch".into()],
                    ..Default::default()
                }]),
            },
        )
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &RoleBinding {
                metadata: meta("watch-cms"),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: "watch-cms".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: SA.into(),
                    namespace: Some(ns.into()),
                    ..Default::default()
                }]),
            },
        )
        .await
        .expect("role binding");
}

async fn configmap(client: &kube::Client, ns: &str, name: &str, label: &str, bytes: usize) {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([(label.to_string(), "yes".to_string())].into()),
            ..Default::default()
        },
        data: Some([("payload".to_string(), "x".repeat(bytes))].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap_or_else(|e| panic!("creating ConfigMap {ns}/{name}: {e}"));
}

#[allow(clippy::too_many_arguments)]
async fn config(
    client: &kube::Client,
    ns: &str,
    name: &str,
    (lease, renew, retry): (&str, &str, &str),
    selector: &str,
    concurrency: u16,
    hook: &str,
    timeout: &str,
) {
    let mc: ManagerConfig = serde_json::from_value(json!({
        "apiVersion": "manager-operator.io/v1alpha1", "kind": "ManagerConfig",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "serviceAccountName": SA,
            "leaderElection": {"leaseDuration": lease, "renewDeadline": renew, "retryPeriod": retry},
            "startupTimeout": "60s",
            "gracefulShutdownTimeout": "5s",
            "workers": [{
                "name": "cms", "concurrency": concurrency, "resyncPeriod": "1s",
                "watch": {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": selector},
                "hook": {"url": hook, "timeout": timeout},
            }],
        },
    }))
    .expect("ManagerConfig");
    Api::<ManagerConfig>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &mc)
        .await
        .unwrap_or_else(|e| panic!("creating {ns}/{name}: {e}"));
}

// ---------------------------------------------------------------------------------------------
// Measuring the quiet tenant.

/// Over `window`, updates the quiet probe ConfigMap every 500 ms and measures update → hook
/// call latency (ms, per delivered update) and the longest gap between quiet hook calls.
struct Window {
    latencies: Vec<u128>,
    sent: usize,
    max_gap: Duration,
    calls: usize,
}

async fn observe(client: &kube::Client, hooks: &Hooks, seq0: &mut u64, window: Duration) -> Window {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), QUIET);
    let start = Instant::now();
    let mut sent: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while start.elapsed() < window {
        tick.tick().await;
        *seq0 += 1;
        let patch = json!({"data": {"seq": seq0.to_string()}});
        let at = Instant::now();
        api.patch("probe", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patching the probe ConfigMap");
        sent.insert(*seq0, at);
    }
    // The last updates get a moment to arrive (bounded: measuring, not waiting for an outcome).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls = hooks.quiet_calls();
    let mut first: BTreeMap<u64, Instant> = BTreeMap::new();
    for c in &calls {
        if let Some(s) = c.seq
            && c.object == "probe"
        {
            first.entry(s).or_insert(c.at);
        }
    }
    let latencies: Vec<u128> = sent
        .iter()
        .filter_map(|(s, at)| {
            first
                .get(s)
                .map(|got| got.saturating_duration_since(*at).as_millis())
        })
        .collect();
    let in_window: Vec<Instant> = calls
        .iter()
        .map(|c| c.at)
        .filter(|&t| t >= start && t <= start + window)
        .collect();
    let mut max_gap = Duration::ZERO;
    let mut prev = start;
    for t in &in_window {
        max_gap = max_gap.max(t.saturating_duration_since(prev));
        prev = *t;
    }
    max_gap = max_gap.max((start + window).saturating_duration_since(prev));
    Window {
        latencies,
        sent: sent.len(),
        max_gap,
        calls: in_window.len(),
    }
}

fn pct(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return u128::MAX;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

impl Window {
    fn summary(&self) -> String {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        format!(
            "{} of {} updates delivered, latency p50 {} ms p99 {} ms max {} ms; {} hook calls, \
             longest gap {} ms",
            l.len(),
            self.sent,
            pct(&l, 0.5),
            pct(&l, 0.99),
            l.last().copied().unwrap_or(u128::MAX),
            self.calls,
            self.max_gap.as_millis()
        )
    }

    fn assert_bounds(&self, what: &str) {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        assert!(
            l.len() * 2 >= self.sent,
            "{what}: only {} of {} quiet updates reached the hook",
            l.len(),
            self.sent
        );
        assert!(pct(&l, 0.5) <= 1000, "{what}: {}", self.summary());
        assert!(
            l.last().is_some_and(|&m| m <= 5000),
            "{what}: {}",
            self.summary()
        );
        assert!(
            self.max_gap <= Duration::from_secs(5),
            "{what}: {}",
            self.summary()
        );
    }
}

/// The chart's memory limit in KiB (`resources.limits.memory`, e.g. `256Mi`).
fn chart_memory_limit_kib() -> u64 {
    let values =
        std::fs::read_to_string(support::repo_root().join("charts/manager-operator/values.yaml"))
            .expect("reading the chart's values.yaml");
    let v: serde_yaml::Value = serde_yaml::from_str(&values).expect("values.yaml");
    let s = v["resources"]["limits"]["memory"]
        .as_str()
        .expect("resources.limits.memory");
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().expect("memory limit number");
    match unit {
        "Mi" => n * 1024,
        "Gi" => n * 1024 * 1024,
        "Ki" => n,
        other => panic!("unexpected unit {other:?} in {s}"),
    }
}

// ---------------------------------------------------------------------------------------------

/// The quiet tenant's latency, gaps and failover, the noisy tenant held to its budgets, and
/// every replica's peak RSS below the chart's memory limit.
#[test]
fn a_noisy_namespace_does_not_starve_a_quiet_one() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(fairness());
}

async fn fairness() {
    let n_noisy = if soak() { 100 } else { 30 };
    let window = Duration::from_secs(if soak() { 60 } else { 30 });
    let limit_kib = chart_memory_limit_kib();
    let cluster = Cluster::up();
    let client = cluster.client().await;
    let crd = support::repo_root().join("crds/managerconfig.yaml");
    let crd_yaml = std::fs::read_to_string(&crd).expect("reading the CRD");
    let crd_obj: CustomResourceDefinition = serde_yaml::from_str(&crd_yaml).expect("the CRD");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd_obj)
        .await
        .expect("creating the CRD");
    support::wait_for("the CRD to be Established", support::TIMEOUT, || async {
        let crd = crds
            .get(support::CRD_NAME)
            .await
            .map_err(|e| e.to_string())?;
        crd.status
            .and_then(|s| s.conditions)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    setup_namespace(&client, NOISY).await;
    setup_namespace(&client, QUIET).await;
    let t = Instant::now();
    for i in 0..BIG_CMS {
        configmap(&client, NOISY, &format!("big-{i}"), "big", BIG_BYTES).await;
    }
    for name in ["q-0", "q-1", "q-2", "probe"] {
        configmap(&client, QUIET, name, "quiet", 16).await;
    }
    report!(
        "{BIG_CMS} ConfigMaps of {} KiB created in {} ms",
        BIG_BYTES / 1024,
        t.elapsed().as_millis()
    );
    let hooks = Hooks::default();
    let (quiet_url, noisy_url) = hooks.start().await;
    let mut ops = [
        Operator::start(&cluster, "replica-a").await,
        Operator::start(&cluster, "replica-b").await,
    ];

    // The quiet tenant alone.
    config(
        &client,
        QUIET,
        "quiet",
        ("3s", "2s", "500ms"),
        "quiet=yes",
        2,
        &format!("{quiet_url}/quiet"),
        "2s",
    )
    .await;
    support::wait_for("the quiet hook's first call", support::TIMEOUT, || async {
        (!hooks.quiet_calls().is_empty())
            .then_some(())
            .ok_or_else(|| "no call yet".to_string())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut seq = 0u64;
    let base = observe(&client, &hooks, &mut seq, Duration::from_secs(10)).await;
    report!("quiet alone (10 s): {}", base.summary());
    let hwm_base: Vec<u64> = ops.iter().map(Operator::hwm_kib).collect();
    report!("VmHWM with the quiet tenant alone: {hwm_base:?} KiB");

    // The noisy tenant.
    let t = Instant::now();
    for i in 0..n_noisy {
        let mode = ["slow", "fail", "hang"][i % 3];
        config(
            &client,
            NOISY,
            &format!("noisy-{i:03}"),
            ("2s", "1s", "500ms"),
            "big=yes",
            8,
            &format!("{noisy_url}/noisy/{mode}"),
            "1s",
        )
        .await;
    }
    let mcs: Api<ManagerConfig> = Api::namespaced(client.clone(), NOISY);
    let events: Api<Event> = Api::namespaced(client.clone(), NOISY);
    let settled = support::wait_for(
        "every noisy config calling its hook or refused with LimitExceeded",
        Duration::from_secs(300),
        || async {
            if let Some(dead) = ops.iter().find(|o| !o.alive()) {
                return Err(format!("operator {} exited", dead.id));
            }
            let s = noisy_split(&mcs, &events, &hooks, None).await?;
            (s.running + s.refused >= n_noisy)
                .then_some(s)
                .ok_or_else(|| format!("{s:?} of {n_noisy}"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    report!(
        "{n_noisy} noisy configs (24 x 500 KiB watched each, hooks slow/failing/hanging) \
         settled {} ms after the first was created: {} calling their hooks, {} refused with \
         LimitExceeded (watch-cache budgets: 32Mi per namespace, 96Mi per replica)",
        t.elapsed().as_millis(),
        settled.running,
        settled.refused
    );
    let calls0 = hooks.noisy_calls();
    let loaded = observe(&client, &hooks, &mut seq, window).await;
    let noisy_rate = (hooks.noisy_calls() - calls0) as f64 / (window.as_secs_f64() + 5.0);
    report!(
        "quiet beside {n_noisy} noisy configs ({} s): {}; noisy hook calls {noisy_rate:.0}/s",
        window.as_secs(),
        loaded.summary()
    );
    let split: Vec<usize> = ops
        .iter()
        .map(|o| hooks.noisy_configs(Some(&o.id)))
        .collect();
    let hwm_loaded: Vec<u64> = ops.iter().map(Operator::hwm_kib).collect();
    report!(
        "VmHWM under load: {hwm_loaded:?} KiB (chart limit {limit_kib} KiB); noisy configs \
         called by each replica so far: {split:?}"
    );

    // Failover of the quiet config: kill -9 its leader.
    let leader = hooks
        .quiet_calls()
        .last()
        .map(|c| c.holder.clone())
        .expect("quiet calls");
    let li = ops.iter().position(|o| o.id == leader).expect("leader");
    let other = ops[1 - li].id.clone();
    ops[li].kill9();
    let killed = Instant::now();
    let killed_wall = SystemTime::now();
    let first = support::wait_for(
        "the quiet config's first call from the other replica",
        support::TIMEOUT,
        || async {
            hooks
                .quiet_calls()
                .into_iter()
                .find(|c| c.holder == other && c.at >= killed)
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let failover = first.at.saturating_duration_since(killed);
    report!(
        "quiet failover: {leader} killed -> first hook call from {other} after {} ms \
         (leaseDuration {} s)",
        failover.as_millis(),
        QUIET_LEASE.as_secs()
    );
    // The survivor now has every noisy config too: each runs there or is refused there.
    let t = Instant::now();
    let took_over = support::wait_for(
        "the survivor calling every noisy hook or refusing the config with LimitExceeded",
        Duration::from_secs(180),
        || async {
            if !ops[1 - li].alive() {
                return Err(format!("operator {other} exited"));
            }
            let s = noisy_split(&mcs, &events, &hooks, Some((&other, killed, killed_wall))).await?;
            (s.running + s.refused >= n_noisy)
                .then_some(s)
                .ok_or_else(|| format!("{s:?} of {n_noisy}"))
        },
    )
    .await;
    report!(
        "survivor {other} settled every noisy config {:?} after the kill: {:?}",
        t.elapsed(),
        took_over.as_ref().map_err(|e| e.to_string())
    );
    let after = observe(&client, &hooks, &mut seq, Duration::from_secs(15)).await;
    report!(
        "quiet after the failover (15 s, one replica): {}",
        after.summary()
    );
    let hwm_final: Vec<(String, u64)> = ops.iter().map(|o| (o.id.clone(), o.hwm_kib())).collect();
    report!(
        "peak RSS (VmHWM) per replica: {hwm_final:?} KiB; chart limit {limit_kib} KiB \
         ({leader}'s read just before its kill)"
    );

    // Bounds.
    base.assert_bounds("quiet alone");
    loaded.assert_bounds("quiet beside the noisy tenant");
    after.assert_bounds("quiet after the failover");
    assert!(
        failover <= QUIET_LEASE + Duration::from_secs(5),
        "failover took {failover:?}"
    );
    let took_over = took_over.unwrap_or_else(|e| panic!("{e}"));
    // The noisy tenant is served within its budget, and the budget is what stops the rest.
    for (what, s) in [
        ("with two replicas", &settled),
        ("on the survivor", &took_over),
    ] {
        assert!(s.running >= 1, "{what}: no noisy config runs: {s:?}");
        assert!(
            s.refused >= 1,
            "{what}: no noisy config was refused, so the budgets were not tested: {s:?}"
        );
    }
    for (id, kib) in &hwm_final {
        assert!(
            *kib < limit_kib,
            "{id}: peak RSS {kib} KiB is not below the chart's memory limit {limit_kib} KiB"
        );
    }
}

/// How the noisy configs fare: calling their hooks, or refused with LimitExceeded.
#[derive(Debug, Clone, Copy)]
struct Split {
    running: usize,
    refused: usize,
}

/// `since = Some((replica, t))`: only calls by `replica` after `t`, and LimitExceeded Events
/// that replica emitted after `t` (wall clock), count; otherwise any call, and a Ready
/// condition with reason LimitExceeded.
async fn noisy_split(
    mcs: &Api<ManagerConfig>,
    events: &Api<Event>,
    hooks: &Hooks,
    since: Option<(&str, Instant, SystemTime)>,
) -> Result<Split, String> {
    let called = hooks.noisy_called_since(since.map(|(who, t, _)| (who, t)));
    let list = mcs
        .list(&Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let refused_by_survivor: BTreeSet<String> = match since {
        None => BTreeSet::new(),
        Some((who, _, wall)) => events
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("LimitExceeded"))
            .filter(|e| {
                e.note
                    .as_deref()
                    .is_some_and(|n| n.contains(&format!("seen by {who}")))
            })
            .filter(|e| {
                let last = e
                    .series
                    .as_ref()
                    .map(|s| s.last_observed_time.0)
                    .or(e.event_time.as_ref().map(|t| t.0));
                last.is_some_and(|t| SystemTime::from(t) >= wall)
            })
            .filter_map(|e| e.regarding.and_then(|r| r.name))
            .collect(),
    };
    let mut s = Split {
        running: 0,
        refused: 0,
    };
    for mc in list {
        let name = mc.metadata.name.clone().unwrap_or_default();
        if called.contains(&name) {
            s.running += 1;
            continue;
        }
        let refused = match since {
            Some(_) => refused_by_survivor.contains(&name),
            None => mc
                .status
                .iter()
                .flat_map(|st| st.conditions.iter())
                .any(|c| c.type_ == "Ready" && c.reason == "LimitExceeded"),
        };
        if refused {
            s.refused += 1;
        }
    }
    Ok(s)
}

impl Operator {
    /// The process runs (not gone, not a zombie).
    fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
            })
            .is_some_and(|state| state != "Z")
    }
}
