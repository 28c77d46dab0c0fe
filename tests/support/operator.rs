//! `manager-operator run` as a child process for integration tests: free loopback ports, a
//! log file (its tail printed when a test panics), `/readyz` waited for, killed on drop.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TIMEOUT;

/// A running operator process.
pub struct Operator {
    child: Child,
    metrics: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// Starts `manager-operator run` for `ns` with `extra` flags and waits for /readyz.
    #[allow(dead_code)] // not every test binary uses every constructor
    pub async fn start(ns: &str, extra: &[&str]) -> Operator {
        Self::start_as(ns, &format!("{ns}-op"), "text", extra).await
    }

    /// [`Operator::start`] with replica identity `id` and `--log-format format`.
    pub async fn start_as(ns: &str, id: &str, format: &str, extra: &[&str]) -> Operator {
        for attempt in 0.. {
            let dir = tempfile::tempdir().expect("temp dir");
            let log = dir.path().join("operator.log");
            let file = File::create(&log).expect("log file");
            let metrics = super::free_addr();
            let health = super::free_addr();
            let child = Command::new(env!("CARGO_BIN_EXE_manager-operator"))
                .arg("run")
                .args(["--identity", id])
                .arg("--kubeconfig")
                .arg(super::kubeconfig_path())
                .args(["--metrics-bind-address", &metrics.to_string()])
                .args(["--health-probe-bind-address", &health.to_string()])
                .args(["--watch-namespace", ns])
                .args(["--disable-webhook", "--hook-allow-loopback"])
                .args(["--log-format", format])
                .args(extra)
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("log file"))
                .stderr(file)
                .spawn()
                .expect("spawning manager-operator run");
            let mut op = Operator {
                child,
                metrics,
                log,
                _dir: dir,
            };
            let t = Instant::now();
            let ready = loop {
                if let Ok(Some(s)) = op.child.try_wait() {
                    break Err(format!("exited with {s}"));
                }
                if let Ok((200, _)) = get(&format!("http://{health}/readyz")).await {
                    break Ok(());
                }
                if t.elapsed() > TIMEOUT {
                    break Err(format!("/readyz not 200 after {TIMEOUT:?}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            match ready {
                Ok(()) => return op,
                Err(_) if attempt < 3 && op.tail().contains("cannot listen") => continue,
                Err(e) => panic!("operator not ready: {e}\n{}", op.tail()),
            }
        }
        unreachable!()
    }

    /// Its whole log so far.
    #[allow(dead_code)]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of its log.
    pub fn tail(&self) -> String {
        super::log_tail(&self.log, 60)
    }

    /// The value of the first series of `name` carrying all `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (_, text) = get(&format!("http://{}/metrics", self.metrics))
            .await
            .ok()?;
        text.lines()
            .filter(|l| {
                l.starts_with(name)
                    && labels
                        .iter()
                        .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- operator log tail ---\n{}", self.tail());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over the loopback client: status and body.
pub async fn get(url: &str) -> Result<(u16, String), String> {
    let r = super::loopback_http()
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let code = r.status().as_u16();
    Ok((code, r.text().await.map_err(|e| e.to_string())?))
}
