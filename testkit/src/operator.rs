//! `manager-operator run` as a child process: free loopback ports, a log file (its tail printed
//! when a test panics), `/readyz` waited for, SIGKILLed on drop.
//!
//! ```no_run
//! # async fn demo(bin: &str) {
//! use manager_operator_testkit::OperatorBuilder;
//! let op = OperatorBuilder::new(bin)
//!     .namespace("ns-1")
//!     .identity("ns-1-a")
//!     .args(["--hook-resolve", "hook.test.invalid=127.0.0.1"])
//!     .start()
//!     .await;
//! let metrics = op.metrics_text().await;
//! # }
//! ```
//!
//! Integration tests get a builder for the binary under test from `support::operator()`.

use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::kubeconfig_path;
use crate::net::{free_addr, http_get, log_tail};
use crate::wait::TIMEOUT;

/// How to start one `manager-operator run` process.
///
/// Defaults: identity `<namespace>-op`, the admin kubeconfig, `--disable-webhook`,
/// `--hook-allow-loopback`, `--log-format text`, `RUST_LOG=info`, `NO_COLOR=1` on top of the
/// inherited environment, free loopback ports for metrics and probes, the log in a temporary
/// directory removed on drop.
#[derive(Clone, Debug)]
pub struct OperatorBuilder {
    bin: PathBuf,
    identity: Option<String>,
    namespace: Option<String>,
    kubeconfig: Option<PathBuf>,
    disable_webhook: bool,
    hook_allow_loopback: bool,
    log_format: String,
    metrics: Option<SocketAddr>,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    env_clear: bool,
    log_dir: Option<PathBuf>,
}

impl OperatorBuilder {
    /// A builder for the operator binary at `bin`.
    pub fn new(bin: impl Into<PathBuf>) -> OperatorBuilder {
        OperatorBuilder {
            bin: bin.into(),
            identity: None,
            namespace: None,
            kubeconfig: None,
            disable_webhook: true,
            hook_allow_loopback: true,
            log_format: "text".into(),
            metrics: None,
            args: Vec::new(),
            env: vec![
                ("RUST_LOG".into(), "info".into()),
                ("NO_COLOR".into(), "1".into()),
            ],
            env_clear: false,
            log_dir: None,
        }
    }

    /// `--watch-namespace ns`; the default identity becomes `<ns>-op`.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// `--identity id` (the replica identity).
    pub fn identity(mut self, id: &str) -> Self {
        self.identity = Some(id.into());
        self
    }

    /// `--kubeconfig path` instead of the admin kubeconfig (`MO_KUBECONFIG`).
    pub fn kubeconfig(mut self, path: &Path) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// `--log-format format` (default `text`).
    pub fn log_format(mut self, format: &str) -> Self {
        self.log_format = format.into();
        self
    }

    /// With the admission webhook (the default passes `--disable-webhook`); its flags go in
    /// [`OperatorBuilder::args`].
    pub fn with_webhook(mut self) -> Self {
        self.disable_webhook = false;
        self
    }

    /// Without `--hook-allow-loopback` (on by default).
    pub fn no_hook_allow_loopback(mut self) -> Self {
        self.hook_allow_loopback = false;
        self
    }

    /// A fixed `--metrics-bind-address` instead of a free port.
    pub fn metrics_addr(mut self, addr: SocketAddr) -> Self {
        self.metrics = Some(addr);
        self
    }

    /// One more flag or value, after the defaults.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More flags and values, after the defaults.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets (or overrides) an environment variable of the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts the process with an empty environment but `PATH` and the builder's variables
    /// ([`OperatorBuilder::env`]; `RUST_LOG`, `NO_COLOR` by default), so nothing of the test's
    /// environment (`KUBECONFIG`, proxies, `MO_*`) reaches it.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self
    }

    /// Writes the log to `<dir>/operator-<identity>.log`, kept after the process is gone (e.g.
    /// in a [`crate::PrivateCluster`]'s directory, next to the control plane's logs), instead of
    /// a temporary directory.
    pub fn log_dir(mut self, dir: &Path) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    fn identity_or_default(&self) -> String {
        match (&self.identity, &self.namespace) {
            (Some(id), _) => id.clone(),
            (None, Some(ns)) => format!("{ns}-op"),
            (None, None) => "operator".into(),
        }
    }

    /// Spawns the process without waiting for it to become ready.
    pub fn spawn(&self) -> Operator {
        let identity = self.identity_or_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = match &self.log_dir {
            Some(d) => d.join(format!("operator-{identity}.log")),
            None => dir.path().join(format!("{identity}.log")),
        };
        let file = File::create(&log).expect("log file");
        let metrics = self.metrics.unwrap_or_else(free_addr);
        let health = free_addr();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .args(["--identity", &identity])
            .arg("--kubeconfig")
            .arg(self.kubeconfig.clone().unwrap_or_else(kubeconfig_path))
            .args(["--metrics-bind-address", &metrics.to_string()])
            .args(["--health-probe-bind-address", &health.to_string()]);
        if let Some(ns) = &self.namespace {
            cmd.args(["--watch-namespace", ns]);
        }
        if self.disable_webhook {
            cmd.arg("--disable-webhook");
        }
        if self.hook_allow_loopback {
            cmd.arg("--hook-allow-loopback");
        }
        cmd.args(["--log-format", &self.log_format])
            .args(&self.args);
        if self.env_clear {
            cmd.env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawning manager-operator run");
        Operator {
            identity,
            child: Some(child),
            metrics,
            health,
            log,
            _dir: dir,
            exited: None,
        }
    }

    /// Spawns the process and waits until `/readyz` answers 200. The ports are picked free and
    /// released before the operator binds them; another process may grab one in between, so a
    /// failed bind is retried with new ports. Panics (with the log's tail) otherwise.
    pub async fn start(&self) -> Operator {
        for attempt in 0.. {
            let mut op = self.spawn();
            match op.wait_ready().await {
                Ok(took) => {
                    eprintln!(
                        "[operator {}] ready in {took:?} (log {})",
                        op.identity,
                        op.log.display()
                    );
                    return op;
                }
                Err(e) if attempt < 3 && op.log_tail(50).contains("cannot listen") => {
                    eprintln!("[operator {}] port taken, retrying: {e}", op.identity);
                }
                Err(e) => panic!(
                    "operator {} did not become ready: {e}\n--- log tail ---\n{}",
                    op.identity,
                    op.log_tail(80)
                ),
            }
        }
        unreachable!()
    }
}

/// A running `manager-operator run` process. SIGKILLed on drop; its log (stderr and stdout)
/// goes to a file whose tail is printed when the test panics.
pub struct Operator {
    identity: String,
    child: Option<Child>,
    metrics: SocketAddr,
    health: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
    exited: Option<ExitStatus>,
}

impl Operator {
    /// Its replica identity (`--identity`).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The metrics address (`--metrics-bind-address`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
    }

    /// The probe address (`--health-probe-bind-address`).
    pub fn health_addr(&self) -> SocketAddr {
        self.health
    }

    /// The path of its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Waits until `/readyz` answers 200 (`Err` if the process exits first or after
    /// [`TIMEOUT`]); returns how long it took.
    pub async fn wait_ready(&mut self) -> Result<Duration, String> {
        let t = Instant::now();
        let url = format!("http://{}/readyz", self.health);
        loop {
            if let Some(status) = self.try_exit() {
                return Err(format!("exited with {status}"));
            }
            if let Ok((200, _)) = http_get(&url).await {
                return Ok(t.elapsed());
            }
            if t.elapsed() > TIMEOUT {
                return Err(format!("/readyz not 200 after {TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The exit status if the process has exited (reaps it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Some(c) = self.child.as_mut()
            && let Ok(Some(s)) = c.try_wait()
        {
            self.exited = Some(s);
        }
        self.exited
    }

    /// The exit status recorded so far (by [`Operator::try_exit`], [`Operator::kill9`] or
    /// [`Operator::wait_exit`]); `None` while not seen exiting.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.exited
    }

    /// `GET /metrics`: the body, or why not.
    pub async fn try_metrics_text(&self) -> Result<String, String> {
        http_get(&format!("http://{}/metrics", self.metrics))
            .await
            .map(|(_, body)| body)
    }

    /// `GET /metrics`; panics unless it answers 200.
    pub async fn metrics_text(&self) -> String {
        let (code, body) = http_get(&format!("http://{}/metrics", self.metrics))
            .await
            .unwrap_or_else(|e| panic!("GET /metrics of {}: {e}", self.identity));
        assert_eq!(code, 200, "/metrics of {}: {body}", self.identity);
        body
    }

    /// The value of the first `/metrics` line that starts with `prefix` and carries all
    /// `labels` (`name="value"`); `None` when there is none or `/metrics` does not answer.
    /// A prefix, not a name: `"manager_operator_leader{"` matches only labelled series; for an
    /// exact name use [`crate::prom::value`] on [`Operator::metrics_text`].
    pub async fn metric(&self, prefix: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let text = self.try_metrics_text().await.ok()?;
        text.lines()
            .filter(|l| {
                l.starts_with(prefix)
                    && labels
                        .iter()
                        .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
    }

    /// The status code of `GET /healthz` (0 when it does not answer).
    pub async fn healthz(&self) -> u16 {
        http_get(&format!("http://{}/healthz", self.health))
            .await
            .map(|(c, _)| c)
            .unwrap_or(0)
    }

    /// The status code of `GET /readyz` (0 when it does not answer).
    pub async fn readyz(&self) -> u16 {
        http_get(&format!("http://{}/readyz", self.health))
            .await
            .map(|(c, _)| c)
            .unwrap_or(0)
    }

    /// Whether the process still runs: neither reaped nor a zombie (read from
    /// `/proc/<pid>/stat`; needs no `&mut`, unlike [`Operator::try_exit`]).
    pub fn is_running(&self) -> bool {
        self.exited.is_none()
            && std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
                })
                .is_some_and(|state| state != "Z")
    }

    /// Panics (with the log's tail) if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.try_exit() {
            panic!(
                "operator {} exited ({status}); last log lines:\n{}",
                self.identity,
                self.log_tail(60)
            );
        }
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`, ...); panics when missing.
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} missing from /proc/{}/status", self.pid()))
    }

    /// Resident set size in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// Peak resident set size in KiB (`VmHWM`).
    pub fn hwm_kib(&self) -> u64 {
        self.status_kib("VmHWM")
    }

    /// `kill -9`, then reaps the process.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            if let Ok(s) = c.wait() {
                self.exited = Some(s);
            }
        }
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        sigterm(self.pid());
    }

    /// Sends `SIG<sig>` (`"STOP"`, `"CONT"`, ...); panics unless `kill` succeeds. A stopped
    /// process is still SIGKILLed on drop.
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// Waits (polling) until the process exits; panics with the log's tail after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.try_exit() {
                return s;
            }
            assert!(
                t.elapsed() < timeout,
                "operator {} still running {timeout:?} after being asked to stop\n{}",
                self.identity,
                self.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// The last 60 lines of its log.
    pub fn tail(&self) -> String {
        self.log_tail(60)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- log tail of operator {} ({}) ---\n{}\n--- end of log tail ---",
                self.identity,
                self.log.display(),
                self.log_tail(60)
            );
        }
        self.kill9();
    }
}

/// `kill -TERM pid` (with the `kill` command: the kit has no unsafe code); panics unless it
/// succeeds.
pub fn sigterm(pid: u32) {
    signal(pid, "TERM");
}

/// `kill -<sig> pid` (`sig` without the `SIG` prefix); panics unless it succeeds.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{sig} {pid}");
}
