//! The controller-runtime peers (bench/peers/, built by bench/peers/build.sh): a
//! running `cr-manager` or `cr-webhook` process whose stdout JSON events are recorded with the
//! harness's clock.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

use crate::util::{self, Result};

/// One stdout line of a peer: `{"event": ..., ...}`.
#[derive(Clone, Debug)]
pub struct Event {
    /// The parsed line.
    pub json: serde_json::Value,
}

impl Event {
    /// Its `event` field.
    pub fn name(&self) -> &str {
        self.json["event"].as_str().unwrap_or("")
    }
}

/// A running peer process.
pub struct Peer {
    child: Child,
    /// Its pid.
    pub pid: u32,
    /// When it was spawned.
    pub spawned: Instant,
    events: Arc<Mutex<Vec<Event>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Peer {
    /// Starts `bin ARGS` with stderr appended to `log` and stdout parsed into events.
    pub fn spawn(bin: &Path, args: &[String], log: &Path) -> Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        util::die_with_parent(&mut cmd);
        let spawned = Instant::now();
        let mut child = cmd.spawn()?;
        let pid = child.id().ok_or("peer exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let events: Arc<Mutex<Vec<Event>>> = Arc::default();
        let e2 = events.clone();
        let reader = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(json) = serde_json::from_str(&line) {
                    e2.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Event { json });
                }
            }
        });
        Ok(Self {
            child,
            pid,
            spawned,
            events,
            reader,
        })
    }

    /// The events seen so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The first event named `name`.
    pub fn event(&self, name: &str) -> Option<Event> {
        self.events().into_iter().find(|e| e.name() == name)
    }

    /// Sends a signal.
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        util::signal(self.pid, sig)
    }

    /// Waits up to `within` for the process to exit: its exit code (-signal when killed by
    /// one) and when the harness saw it exit, or `None` while it still runs.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<(i32, Instant)> {
        use std::os::unix::process::ExitStatusExt;
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => {
                let at = Instant::now();
                // Let the reader drain the last lines.
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.reader).await;
                Some((
                    status
                        .code()
                        .unwrap_or_else(|| -status.signal().unwrap_or(0)),
                    at,
                ))
            }
            _ => None,
        }
    }

    /// SIGKILL and reap.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
        self.reader.abort();
    }
}

/// The last non-empty line of a log file (a peer's error), commas and quotes made CSV-safe.
pub fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(csv_safe)
        .unwrap_or_default()
}

/// Text for one CSV cell: no commas, quotes or line breaks.
pub fn csv_safe(s: &str) -> String {
    s.replace(',', ";")
        .replace(['"', '\n', '\r'], " ")
        .trim()
        .to_string()
}

/// The `cr-manager` command line.
#[allow(clippy::too_many_arguments)]
pub fn manager_args(
    kubeconfig: &Path,
    ns: &str,
    lease: &str,
    identity: &str,
    timings: (&str, &str, &str),
    release_on_cancel: bool,
    hook: Option<(&str, &str)>,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--lease-namespace".into(),
        ns.into(),
        "--lease-name".into(),
        lease.into(),
        "--identity".into(),
        identity.into(),
        "--lease-duration".into(),
        timings.0.into(),
        "--renew-deadline".into(),
        timings.1.into(),
        "--retry-period".into(),
        timings.2.into(),
        format!("--release-on-cancel={release_on_cancel}"),
    ];
    if let Some((url, every)) = hook {
        a.extend([
            "--hook-url".into(),
            url.into(),
            "--hook-every".into(),
            every.into(),
        ]);
    }
    a
}
