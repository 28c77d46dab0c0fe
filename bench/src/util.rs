//! Shared helpers: errors, statistics, CSV, /proc sampling, Prometheus text parsing, the
//! Kubernetes client, and operator processes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject};
use tokio::process::{Child, Command};

/// The harness's error type: a message is all a benchmark run needs.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Returns an error with this message.
pub fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(msg.into().into())
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Nearest-rank percentile (p in 0..=100) of unsorted samples; NaN when empty.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Median (nearest rank).
pub fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50.0)
}

// ---------------------------------------------------------------------------------------------
// CSV

/// A CSV file written row by row (values never contain commas or quotes here).
pub struct Csv {
    text: String,
    path: PathBuf,
}

impl Csv {
    /// A new file with this header.
    pub fn new(path: impl Into<PathBuf>, header: &[&str]) -> Self {
        Self {
            text: format!("{}\n", header.join(",")),
            path: path.into(),
        }
    }

    /// Appends one row.
    pub fn row(&mut self, values: &[String]) {
        let _ = writeln!(self.text, "{}", values.join(","));
    }

    /// Writes the file (atomically: tmp + rename).
    pub fn save(&self) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("csv.tmp");
        std::fs::write(&tmp, &self.text)?;
        std::fs::rename(&tmp, &self.path)?;
        eprintln!("[bench] wrote {}", self.path.display());
        Ok(())
    }
}

/// Formats a float for CSV (NaN stays NaN).
pub fn f(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "NaN".into()
    }
}

/// Milliseconds of a duration, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Reads a CSV file into rows of column → value.
pub fn read_csv(path: &Path) -> Result<Vec<BTreeMap<String, String>>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<String> = match lines.next() {
        Some(h) => h.split(',').map(str::to_string).collect(),
        None => return Ok(Vec::new()),
    };
    Ok(lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split(',').map(str::to_string))
                .collect()
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// /proc

/// Clock ticks per second of /proc/PID/stat.
fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// User + system CPU seconds consumed by `pid` so far (children not included).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15 (1-based).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// A `kB` field of /proc/PID/status (VmRSS, VmHWM), in MiB.
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resident set size of `pid` in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> (f64, f64, f64) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    (
        v.first().copied().unwrap_or(f64::NAN),
        v.get(1).copied().unwrap_or(f64::NAN),
        v.get(2).copied().unwrap_or(f64::NAN),
    )
}

// ---------------------------------------------------------------------------------------------
// Prometheus text: the shared test kit's parser.

pub use manager_operator_testkit::prom::{
    Buckets, Sample, delta, hist_count, hist_quantile, histogram, parse_prometheus, sum_of,
};

// ---------------------------------------------------------------------------------------------
// Kubernetes

/// A client for the kubeconfig at `path`.
pub async fn client(path: &Path) -> Result<kube::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// The ManagerConfig resource (used as a dynamic object: the harness does not link the
/// operator's crate).
pub fn mc_resource() -> ApiResource {
    ApiResource {
        group: "manager-operator.io".into(),
        version: "v1alpha1".into(),
        api_version: "manager-operator.io/v1alpha1".into(),
        kind: "ManagerConfig".into(),
        plural: "managerconfigs".into(),
    }
}

/// ManagerConfigs of `ns`.
pub fn mc_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &mc_resource())
}

/// A DynamicObject from JSON.
pub fn dynamic(v: serde_json::Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(v)?)
}

/// The `reason` of condition `type_` when its status is `status`.
pub fn condition_reason(obj: &DynamicObject, type_: &str, status: &str) -> Option<String> {
    let conds = obj.data.get("status")?.get("conditions")?.as_array()?;
    conds.iter().find_map(|c| {
        (c.get("type")?.as_str()? == type_ && c.get("status")?.as_str()? == status).then(|| {
            c.get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("")
                .to_string()
        })
    })
}

/// Deletes a ManagerConfig and waits until it is gone (the operator removes its finalizer).
pub async fn delete_mc_and_wait(
    api: &Api<DynamicObject>,
    name: &str,
    within: Duration,
) -> Result<()> {
    let _ = api.delete(name, &Default::default()).await;
    let until = Instant::now() + within;
    while Instant::now() < until {
        if api.get_opt(name).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fail(format!(
        "ManagerConfig {name} still exists after {within:?}"
    ))
}

/// Creates `obj`; an `AlreadyExists` answer counts as success (an overloaded API server may
/// time a create out after storing it, and the client's retry then finds it).
pub async fn create_idempotent<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&kube::api::PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The first writes of a new custom resource are slow (the API server builds its handler, CEL
/// programs and storage on first use, ~2 s here): warm that path up with dry-run creates, which
/// reach the same code without storing anything.
pub async fn warm_up_mc(api: &Api<DynamicObject>, ns: &str) -> Result<()> {
    for i in 0..3 {
        let warm = dynamic(serde_json::json!({
            "apiVersion": "manager-operator.io/v1alpha1",
            "kind": "ManagerConfig",
            "metadata": {"name": format!("warmup-{i}"), "namespace": ns},
            "spec": {"workers": [{
                "name": "w",
                "watch": {"apiVersion": "v1", "kind": "ConfigMap"},
                "hook": {"url": "http://127.0.0.1:9/hook"}
            }]}
        }))?;
        let pp = kube::api::PostParams {
            dry_run: true,
            ..Default::default()
        };
        let t = Instant::now();
        api.create(&pp, &warm).await?;
        eprintln!(
            "[bench] warm-up dry-run create {i}: {:.0} ms",
            ms(t.elapsed())
        );
    }
    Ok(())
}

/// The API server's /metrics.
pub async fn apiserver_metrics(client: &kube::Client) -> Result<Vec<Sample>> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    Ok(parse_prometheus(&text))
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A free TCP port on 127.0.0.1 (bound and released; a tiny race, retried by callers' checks).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    // SAFETY: kill(2) on a pid we spawned.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc == 0 {
        Ok(())
    } else {
        fail(format!(
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// Makes the child die with the harness (SIGKILL when the parent goes away).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Plain HTTP client for probes and metrics.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// What every operator process gets.
#[derive(Clone, Debug)]
pub struct OperatorOpts {
    /// The operator binary.
    pub bin: PathBuf,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Directory for logs.
    pub log_dir: PathBuf,
}

/// A running `manager-operator run` process.
pub struct Operator {
    child: Child,
    /// Its pid.
    pub pid: u32,
    /// Its Lease identity.
    pub identity: String,
    /// `/metrics` address.
    pub metrics: SocketAddr,
    /// `/readyz` address.
    pub health: SocketAddr,
    http: reqwest::Client,
}

/// The per-tenant limits (the fair shares of docs/security.md) the benchmarks lift, with the
/// values they use: the scenarios put up to 2,000 configs in one namespace and one config
/// watches up to 10,000 objects, past the defaults (100 configs per namespace, 10,000 watched
/// objects per config), and measure scale, not the limits.
const LIFTED_LIMITS: [(&str, &str); 2] = [
    ("--max-configs-per-namespace", "1000000"),
    ("--max-watched-objects-per-config", "10000000"),
];

/// The limit flags `bin run` knows (an operator built before the limits knows none, and an
/// A/B run may use one).
fn lifted_limits(bin: &Path) -> Vec<String> {
    static HELP: std::sync::Mutex<Option<(PathBuf, String)>> = std::sync::Mutex::new(None);
    let mut g = HELP.lock().unwrap_or_else(|e| e.into_inner());
    if g.as_ref().is_none_or(|(b, _)| b != bin) {
        let help = std::process::Command::new(bin)
            .args(["run", "--help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        *g = Some((bin.to_path_buf(), help));
    }
    let help = g.as_ref().map_or("", |(_, h)| h.as_str());
    LIFTED_LIMITS
        .iter()
        .filter(|(flag, _)| help.contains(flag))
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect()
}

impl Operator {
    /// Starts `manager-operator run --identity IDENTITY ...EXTRA` (loopback hooks allowed,
    /// the per-tenant limits lifted, JSON logs appended to LOG_DIR/operator-IDENTITY.log).
    pub fn spawn(o: &OperatorOpts, identity: &str, extra: &[String]) -> Result<Self> {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let health: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        std::fs::create_dir_all(&o.log_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(o.log_dir.join(format!("operator-{identity}.log")))?;
        let mut cmd = Command::new(&o.bin);
        cmd.arg("run")
            .arg("--identity")
            .arg(identity)
            .arg("--kubeconfig")
            .arg(&o.kubeconfig)
            .arg("--metrics-bind-address")
            .arg(metrics.to_string())
            .arg("--health-probe-bind-address")
            .arg(health.to_string())
            .arg("--hook-allow-loopback")
            .arg("--log-format")
            .arg("json")
            .args(lifted_limits(&o.bin))
            .args(extra)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let child = cmd.spawn()?;
        let pid = child.id().ok_or("operator exited at once")?;
        Ok(Self {
            child,
            pid,
            identity: identity.to_string(),
            metrics,
            health,
            http: http(),
        })
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let until = Instant::now() + within;
        let url = format!("http://{}/readyz", self.health);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return fail(format!(
                    "operator {} exited while starting: {status}",
                    self.identity
                ));
            }
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        fail(format!(
            "operator {} not ready within {within:?}",
            self.identity
        ))
    }

    /// Its `/metrics`, parsed.
    pub async fn metrics(&self) -> Result<Vec<Sample>> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await?
            .text()
            .await?;
        Ok(parse_prometheus(&text))
    }

    /// Sends a signal.
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        signal(self.pid, sig)
    }

    /// Waits for the process to exit; SIGKILL after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Duration {
        let t = Instant::now();
        if tokio::time::timeout(within, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "[bench] operator {} did not exit within {within:?}; killing it",
                self.identity
            );
            let _ = self.child.kill().await;
        }
        t.elapsed()
    }

    /// SIGTERM, then wait (SIGKILL after 30 s).
    pub async fn stop(mut self) {
        let _ = self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(30)).await;
    }
}

/// A gauge of an operator's `/metrics` (summed over its series); NaN when absent.
pub async fn gauge(op: &Operator, name: &str) -> f64 {
    match op.metrics().await {
        Ok(m) if m.iter().any(|s| s.name == name) => sum_of(&m, name, &[]),
        _ => f64::NAN,
    }
}

/// Waits until every replica sees `n` ready members of its placement group
/// (`manager_operator_replicas_seen`, docs/placement.md). Unless `required`, replicas without the
/// metric (an operator built before placement) pass.
pub async fn wait_members(
    ops: &[Operator],
    n: usize,
    within: Duration,
    required: bool,
) -> Result<()> {
    let until = Instant::now() + within;
    loop {
        let mut seen = Vec::new();
        for op in ops {
            seen.push(gauge(op, "manager_operator_replicas_seen").await);
        }
        if seen
            .iter()
            .all(|s| *s >= n as f64 || (!required && s.is_nan()))
        {
            return Ok(());
        }
        if Instant::now() > until {
            return fail(format!(
                "replicas do not see {n} members within {within:?} (manager_operator_replicas_seen: {seen:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a future with a deadline, turning a timeout into an error naming `what`.
pub async fn within<T>(
    d: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(d, fut).await {
        Ok(r) => r,
        Err(_) => fail(format!("timed out after {d:?}: {what}")),
    }
}

/// `perf record -F 999` of process `pid` into `file`, started and given 300 ms to attach;
/// end it with [`perf_stop`].
pub async fn perf_start(pid: u32, file: &Path) -> Result<tokio::process::Child> {
    let child = tokio::process::Command::new("perf")
        .args(["record", "-F", "999", "-o"])
        .arg(file)
        .args(["-p", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(child)
}

/// Stops a [`perf_start`] recording (SIGINT, so perf writes its file) and waits up to 30 s.
pub async fn perf_stop(mut perf: tokio::process::Child) {
    if let Some(ppid) = perf.id() {
        let _ = signal(ppid, libc::SIGINT);
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), perf.wait()).await;
}

/// Watches the objects of `api` in the background (a kube-runtime watcher, retried on errors)
/// and calls `on_object(object, arrival time)` for every version seen; returns the task once
/// the initial list has been delivered (at most 30 s). Abort the task when done.
pub async fn watch_objects<K, F>(api: Api<K>, on_object: F) -> Result<tokio::task::JoinHandle<()>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: FnMut(&K, Instant) + Send + 'static,
{
    watch_objects_with(api, kube::runtime::watcher::Config::default(), on_object).await
}

/// [`watch_objects`] with a watcher configuration (label or field selector).
pub async fn watch_objects_with<K, F>(
    api: Api<K>,
    config: kube::runtime::watcher::Config,
    mut on_object: F,
) -> Result<tokio::task::JoinHandle<()>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: FnMut(&K, Instant) + Send + 'static,
{
    use futures::TryStreamExt;
    use kube::runtime::watcher;
    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let w = watcher(api, config);
        let mut w = std::pin::pin!(w);
        loop {
            match w.try_next().await {
                Ok(Some(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj))) => {
                    on_object(&obj, Instant::now());
                }
                Ok(Some(watcher::Event::InitDone)) => {
                    let _ = synced_tx.send(true);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    eprintln!("[bench] watch error (retrying): {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    within(Duration::from_secs(30), "the watch to sync", async {
        synced_rx
            .wait_for(|synced| *synced)
            .await
            .map_err(|_| "the watch ended before it synced")?;
        Ok(())
    })
    .await?;
    Ok(task)
}

/// Operator flags of the scenarios that run without the webhook, watching only `ns`.
pub fn no_webhook_args(ns: &str) -> Vec<String> {
    vec![
        "--disable-webhook".to_string(),
        "--watch-namespace".into(),
        ns.into(),
    ]
}

/// Creates (when absent) the one ConfigMap `name`, labelled `bench=<label>`, that a scenario's
/// workers watch.
pub async fn target_configmap(
    client: &kube::Client,
    ns: &str,
    name: &str,
    label: &str,
) -> Result<()> {
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": label}},
        "data": {"gen": "1"}
    }))?;
    create_idempotent(&cms, &cm).await
}

/// The replica part of a Lease holder identity `<replica>/<ManagerConfig uid>` (placement,
/// docs/placement.md): the text before the last `/`, or the whole holder when it has none.
pub fn replica_of(holder: &str) -> &str {
    holder.rsplit_once('/').map_or(holder, |(r, _)| r)
}

/// A `--flag value` pair for an operator command line.
pub fn flag(name: &str, value: impl std::fmt::Display) -> [String; 2] {
    [name.to_string(), value.to_string()]
}
