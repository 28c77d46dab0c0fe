//! A control plane of one test's own (`hack/cluster.sh up <tempdir>`), for tests that kill
//! etcd or kube-apiserver, or load the cluster so hard that sharing it would disturb (or be
//! disturbed by) anything else. Torn down (`hack/cluster.sh down`) on drop, unless
//! `MO_KEEP_CLUSTER=1`.
//!
//! ```no_run
//! # async fn demo(bin: &str) {
//! use manager_operator_testkit::{OperatorBuilder, PrivateCluster, rbac};
//! let cluster = PrivateCluster::up("mo-rel-demo-").await;
//! let client = cluster.install_crd().await;
//! cluster.apply_yaml(&rbac::service_account_yaml("default", "worker"));
//! cluster.stop_component("kube-apiserver", "KILL").await;
//! cluster.start_component("kube-apiserver").await;
//! let op = OperatorBuilder::new(bin)
//!     .kubeconfig(&cluster.kubeconfig())
//!     .log_dir(cluster.dir())
//!     .start()
//!     .await;
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

use crate::cluster::{CRD_NAME, client_from, repo_root};
use crate::wait::{TIMEOUT, wait_for};

fn cluster_script() -> PathBuf {
    repo_root().join("hack/cluster.sh")
}

/// A private control plane (etcd, kube-apiserver, kube-controller-manager) in a directory of
/// its own.
pub struct PrivateCluster {
    dir: PathBuf,
}

impl PrivateCluster {
    /// Starts a cluster in a new temporary directory named `<prefix>XXXXXX` (kept for the
    /// cluster's lifetime: `hack/cluster.sh down` removes it); panics with the script's output
    /// unless it comes up.
    pub async fn up(prefix: &str) -> PrivateCluster {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temp dir")
            .keep();
        // Built before `up` so that Drop also cleans up a half-started cluster.
        let c = PrivateCluster { dir };
        let t = Instant::now();
        c.script(&["up"]).await.unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "[private cluster] {} up in {} ms",
            c.dir.display(),
            t.elapsed().as_millis()
        );
        c
    }

    /// Runs `hack/cluster.sh <args[0]> <dir> <args[1..]>`; its output, or why it failed.
    pub async fn script(&self, args: &[&str]) -> Result<String, String> {
        let out = tokio::process::Command::new(cluster_script())
            .arg(args[0])
            .arg(&self.dir)
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("running hack/cluster.sh: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "hack/cluster.sh {} {} failed ({}):\n{text}",
                args[0],
                self.dir.display(),
                out.status
            ))
        }
    }

    /// Sends `SIG<sig>` to a control-plane component (`etcd`, `kube-apiserver`,
    /// `kube-controller-manager`) and waits until it has exited.
    pub async fn stop_component(&self, name: &str, sig: &str) {
        self.script(&["stop-component", name, sig])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts a component again; returns once it serves.
    pub async fn start_component(&self, name: &str) {
        self.script(&["start-component", name])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The cluster directory (logs, `env`, kubeconfigs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig (`system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A variable of the cluster's `env` file (`MO_BIN_DIR`, ...).
    pub fn env_var(&self, var: &str) -> String {
        let env = std::fs::read_to_string(self.dir.join("env")).expect("reading DIR/env");
        env.lines()
            .filter_map(|l| l.strip_prefix(&format!("export {var}=")))
            .next_back()
            .unwrap_or_else(|| panic!("{var} missing from DIR/env"))
            .trim_matches('\'')
            .to_string()
    }

    /// Runs the cluster's `kubectl` as admin; panics unless it succeeds; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(PathBuf::from(self.env_var("MO_BIN_DIR")).join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .args(args)
            .output()
            .expect("running kubectl");
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f` of `yaml` (any number of documents) as admin; panics unless it
    /// succeeds.
    pub fn apply_yaml(&self, yaml: &str) {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = dir.path().join("obj.yaml");
        std::fs::write(&f, yaml).expect("writing the manifest");
        self.kubectl(&["apply", "-f", f.to_str().expect("utf-8 path")]);
    }

    /// Namespace `ns`; panics unless it can be applied.
    pub fn namespace(&self, ns: &str) {
        self.apply_yaml(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
        ));
    }

    /// An admin client.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig()).await
    }

    /// Installs `crds/managerconfig.yaml` (server-side apply) and waits until it is
    /// Established; returns an admin client.
    pub async fn install_crd(&self) -> kube::Client {
        let crd = repo_root().join("crds/managerconfig.yaml");
        self.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=mo-tests",
            "-f",
            crd.to_str().expect("utf-8 path"),
        ]);
        let client = self.client().await;
        // (`kubectl wait` fails outright while the new CRD has no conditions yet.)
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        wait_for("the CRD to be Established", TIMEOUT, || async {
            let crd = crds.get(CRD_NAME).await.map_err(|e| e.to_string())?;
            let established = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            established
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        client
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if std::env::var("MO_KEEP_CLUSTER").is_ok_and(|v| v == "1") {
            eprintln!(
                "[private cluster] MO_KEEP_CLUSTER=1: leaving {} up (hack/cluster.sh down DIR)",
                self.dir.display()
            );
            return;
        }
        let _ = Command::new(cluster_script())
            .arg("down")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
    }
}

/// Waits until the API server behind `client` answers `/readyz` with `ok`; panics after
/// `timeout`.
pub async fn wait_api_ready(client: &kube::Client, timeout: Duration) {
    let start = Instant::now();
    loop {
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("a request");
        let ok = tokio::time::timeout(Duration::from_secs(2), client.request_text(req))
            .await
            .is_ok_and(|r| r.is_ok_and(|t| t.trim() == "ok"));
        if ok {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "the API server did not become ready within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
