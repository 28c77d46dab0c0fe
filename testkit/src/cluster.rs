//! The real local control plane (etcd + kube-apiserver + kube-controller-manager started by
//! `hack/cluster.sh`), found through environment variables that `hack/with-cluster.sh` (and so
//! `make test`) exports:
//!
//! * `MO_KUBECONFIG` – admin kubeconfig (`system:masters`), required;
//! * `MO_CLUSTER_DIR` – the cluster directory (holds `kubeconfig-unprivileged`, logs, `env`);
//! * `MO_BIN_DIR` – the tools bin dir with `kubectl`.
//!
//! When they are missing the helpers panic with an explanation: integration tests never skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::wait::TIMEOUT;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

const HOW_TO_RUN: &str = "integration tests need the real local control plane.\n\
     Run them with `make test`, or `hack/with-cluster.sh cargo test --all-targets`,\n\
     or against a running cluster: `hack/cluster.sh up DIR && source DIR/env && cargo test`.\n\
     (Unit tests alone: `make unit` / `cargo test --lib --bins`.)";

fn env_path(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!("\n\n*** {var} is not set: {HOW_TO_RUN}\n\n"),
    }
}

/// Path of the admin kubeconfig (`MO_KUBECONFIG`).
pub fn kubeconfig_path() -> PathBuf {
    let p = env_path("MO_KUBECONFIG");
    assert!(
        p.is_file(),
        "\n\n*** MO_KUBECONFIG={} does not exist: {HOW_TO_RUN}\n\n",
        p.display()
    );
    p
}

/// The cluster directory (`MO_CLUSTER_DIR`).
pub fn cluster_dir() -> PathBuf {
    env_path("MO_CLUSTER_DIR")
}

/// Path of the unprivileged user's kubeconfig (user `mo-unprivileged`, no groups).
pub fn unprivileged_kubeconfig_path() -> PathBuf {
    let p = cluster_dir().join("kubeconfig-unprivileged");
    assert!(
        p.is_file(),
        "\n\n*** {} does not exist: {HOW_TO_RUN}\n\n",
        p.display()
    );
    p
}

/// Path of the tools-bin `kubectl` (`MO_BIN_DIR/kubectl`).
pub fn kubectl_bin() -> PathBuf {
    let p = env_path("MO_BIN_DIR").join("kubectl");
    assert!(
        p.is_file(),
        "\n\n*** {} does not exist: {HOW_TO_RUN}\n\n",
        p.display()
    );
    p
}

/// The repository root (for `crds/`, `samples/`): the parent of this crate's directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ lives in the repository root")
        .to_path_buf()
}

/// The client configuration of the kubeconfig at `path` (installs rustls' ring provider
/// first), for code that builds its own clients from it (e.g. the operator's `WorkerEnv`).
pub async fn config_from(path: &Path) -> kube::Config {
    // kube is built with ring; make sure rustls has a process-wide provider.
    manager_operator::tls::install_default_provider();
    let kubeconfig = Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", path.display()));
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("loading kubeconfig {}: {e}", path.display()))
}

/// A client for the kubeconfig at `path` (installs rustls' ring provider first).
pub async fn client_from(path: &Path) -> kube::Client {
    kube::Client::try_from(config_from(path).await).expect("building kube client")
}

/// A client acting as `admin` (group `system:masters`).
pub async fn admin_client() -> kube::Client {
    client_from(&kubeconfig_path()).await
}

/// A client acting as `mo-unprivileged` (authenticated, no RBAC grants).
pub async fn unprivileged_client() -> kube::Client {
    client_from(&unprivileged_kubeconfig_path()).await
}

/// Runs the tools-bin `kubectl` with the given kubeconfig. Never panics on a non-zero exit;
/// inspect `status`/`stderr` (or use [`kubectl_ok`]).
pub fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(kubectl_bin());
    cmd.arg("--kubeconfig").arg(kubeconfig);
    if let Ok(dir) = std::env::var("MO_CLUSTER_DIR") {
        // Keep kubectl's discovery cache with the cluster, not in ~/.kube.
        cmd.arg("--cache-dir")
            .arg(Path::new(&dir).join("kubectl-cache"));
    }
    cmd.args(args)
        .output()
        .unwrap_or_else(|e| panic!("running kubectl {args:?}: {e}"))
}

/// Runs `kubectl` as admin.
pub fn kubectl(args: &[&str]) -> Output {
    kubectl_as(&kubeconfig_path(), args)
}

/// Runs `kubectl` as admin, panics (showing stdout/stderr) unless it succeeds; returns stdout.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {} failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates a namespace named `<prefix>-<random suffix>` and returns its name.
pub async fn fresh_namespace(client: &kube::Client, prefix: &str) -> String {
    let suffix: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..6)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect()
    };
    let name = format!("{prefix}-{suffix}");
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("manager-operator.io/test".to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// The CRD's name.
pub const CRD_NAME: &str = "managerconfigs.manager-operator.io";

/// Installs `crds/managerconfig.yaml` (server-side apply) and waits until it is Established.
/// Safe to call from any number of tests, threads and test binaries at once: it runs once per
/// process (later callers get the first outcome), and the apply itself is idempotent (same
/// field manager, conflicts forced). Only transient errors (a concurrent first apply from
/// another test binary, a connection hiccup) are retried; an invalid CRD fails at once.
pub fn ensure_crd() {
    static STATE: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = state.get_or_insert_with(install_crd).clone();
    drop(state);
    if let Err(e) = outcome {
        panic!("\n\n*** installing crds/managerconfig.yaml failed:\n{e}\n\n");
    }
}

fn install_crd() -> Result<(), String> {
    let file = repo_root().join("crds/managerconfig.yaml");
    let file = file.to_str().expect("utf-8 path");
    let start = Instant::now();
    loop {
        let out = kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=mo-tests",
            "-f",
            file,
        ]);
        if out.status.success() {
            break;
        }
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let transient = [
            "conflict",
            "already exists",
            "the object has been modified",
            "connection refused",
            "timeout",
        ]
        .iter()
        .any(|t| stderr.to_lowercase().contains(t));
        if !transient || start.elapsed() >= TIMEOUT {
            return Err(stderr);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        &format!("crd/{CRD_NAME}"),
    ]);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "CRD not Established: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `kubectl apply -f` of `yaml` (any number of `---`-separated documents, or JSON) as admin;
/// panics unless it succeeds.
pub fn apply_yaml(yaml: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let f = dir.path().join("obj.yaml");
    std::fs::write(&f, yaml).expect("writing the manifest");
    kubectl_ok(&["apply", "-f", f.to_str().expect("utf-8 path")]);
}
