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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use manager_operator::api::ManagerConfig;
use serde_json::json;
use support::{ManagerConfigBuilder, Operator, PrivateCluster, WorkerBuilder, rbac};

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
// Operator replicas: the kit's `Operator` on the kit's `PrivateCluster`.

/// Replica `id` on `cluster`, ready: its own empty environment (PATH, RUST_LOG=info), the log
/// in the cluster dir.
async fn replica(cluster: &PrivateCluster, id: &str) -> Operator {
    support::operator()
        .identity(id)
        .kubeconfig(&cluster.kubeconfig())
        .log_dir(cluster.dir())
        .env_clear()
        .start()
        .await
}

// ---------------------------------------------------------------------------------------------
// Hooks. Both read only the head of the call (manager, holder, the object's name and data.seq),
// skipping the rest without building it. They stay here rather than being the kit's
// RecordingHook: the quiet one records the probe's `data.seq` (the update a call carries), the
// noisy one answers by URL path (slow / failing / hanging) to 30-100 configs whose bodies carry
// 12 MiB of ConfigMaps (a 4 MiB body limit, and nothing kept per call but the last call per
// (config, holder): recording every body would measure the recorder, not the operator).

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

/// Namespace `ns` with service account `worker`, which may watch its ConfigMaps.
fn setup_namespace(cluster: &PrivateCluster, ns: &str) {
    cluster.namespace(ns);
    cluster.apply_yaml(&format!(
        "{}---\n{}",
        rbac::service_account_yaml(ns, SA),
        rbac::grant_watch_yaml(ns, SA, "configmaps")
    ));
}

async fn configmap(client: &kube::Client, ns: &str, name: &str, label: &str, bytes: usize) {
    let payload = "x".repeat(bytes);
    rbac::create_configmap_with_data(
        client,
        ns,
        name,
        &[(label, "yes")],
        &[("payload", &payload)],
    )
    .await;
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
    let mc = ManagerConfigBuilder::new(ns, name)
        .service_account(SA)
        .lease(lease, renew, retry)
        .startup_timeout("60s")
        .graceful_shutdown_timeout("5s")
        .worker(
            WorkerBuilder::new("cms")
                .concurrency(concurrency)
                .resync("1s")
                .selector(selector)
                .hook(hook)
                .timeout(timeout),
        )
        .build();
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
    let t = Instant::now();
    let cluster = PrivateCluster::up("mo-fair-").await;
    report!("private cluster up in {} ms", t.elapsed().as_millis());
    let client = cluster.install_crd().await;
    setup_namespace(&cluster, NOISY);
    setup_namespace(&cluster, QUIET);
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
        replica(&cluster, "replica-a").await,
        replica(&cluster, "replica-b").await,
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
            if let Some(dead) = ops.iter().find(|o| !o.is_running()) {
                return Err(format!("operator {} exited", dead.identity()));
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
        .map(|o| hooks.noisy_configs(Some(o.identity())))
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
    let li = ops
        .iter()
        .position(|o| o.identity() == leader)
        .expect("leader");
    let other = ops[1 - li].identity().to_string();
    // Peak RSS read just before the kill.
    ops[li].assert_alive();
    let hwm_at_kill = ops[li].hwm_kib();
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
            if !ops[1 - li].is_running() {
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
    let hwm_final: Vec<(String, u64)> = ops
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let kib = if i == li { hwm_at_kill } else { o.hwm_kib() };
            (o.identity().to_string(), kib)
        })
        .collect();
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
