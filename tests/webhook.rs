//! The validating admission webhook on the real control plane: registered in URL mode at
//! `https://127.0.0.1:PORT/validate-managerconfig` with the CA from its self-managed Secret and
//! `failurePolicy: Fail`, then driven with kubectl.
//!
//! Every ValidatingWebhookConfiguration here has a unique name and a `namespaceSelector` that
//! matches only this test's namespaces (label `webhook-test.manager-operator.io/run=<id>`), and
//! is deleted when the test ends (also on failure), because other tests share the cluster.
//!
//! Note on ordering: the API server runs the CRD's schema and CEL validation *before* validating
//! webhooks, so for the `samples/invalid-*.yaml` files (which CEL already rejects) the API
//! server's answer comes from CEL; the test checks that answer names the fields, and separately
//! POSTs the same objects to the webhook (over TLS, verified with the Secret's CA) to prove the
//! webhook denies them too. Configurations that CEL accepts (a cloud-metadata hook URL, a loopback
//! hook URL, a malformed label selector, a cross-namespace Lease) are denied by the webhook
//! through the API server, which proves the webhook is in the path.

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use manager_operator::metrics::Metrics;
use manager_operator::tls::CertLifetimes;
use manager_operator::validation::HookPolicy;
use manager_operator::webhook::register::parse_namespace_selector;
use manager_operator::webhook::{RunningWebhook, WebhookConfig, start_webhook};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use support::{TIMEOUT, rbac, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const RUN_LABEL: &str = "webhook-test.manager-operator.io/run";
const WEBHOOK_DENIED: &str =
    "admission webhook \"validate.managerconfigs.manager-operator.io\" denied the request";

fn random_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..8)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

fn sample_path(name: &str) -> PathBuf {
    support::repo_root().join("samples").join(name)
}

/// kubectl's result.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> Run {
    let out = support::kubectl_as(kubeconfig, args);
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn kubectl(args: &[&str]) -> Run {
    kubectl_with(&support::kubeconfig_path(), args)
}

/// Writes a manifest to a temporary `.yaml` file for `kubectl -f`.
fn manifest(value: &Value) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    std::io::Write::write_all(
        &mut f,
        serde_yaml::to_string(value).expect("yaml").as_bytes(),
    )
    .expect("write manifest");
    f
}

fn read_sample(name: &str) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(sample_path(name)).expect("sample"))
        .expect("yaml")
}

/// Deletes what a test registered, even when it fails.
struct Cleanup {
    webhook_configurations: Vec<String>,
    namespaces: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.webhook_configurations {
            let r = kubectl(&[
                "delete",
                "validatingwebhookconfiguration",
                name,
                "--ignore-not-found",
                "--wait=false",
            ]);
            if !r.ok {
                eprintln!(
                    "cleanup: deleting webhook configuration {name}: {}",
                    r.stderr
                );
            }
        }
        for ns in &self.namespaces {
            let _ = kubectl(&[
                "delete",
                "namespace",
                ns,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
    }
}

/// A namespace carrying this test run's label (so only it is matched by the webhook).
async fn labelled_namespace(client: &kube::Client, prefix: &str, run: &str) -> String {
    let ns = support::fresh_namespace(client, prefix).await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {RUN_LABEL: run}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("labelling namespace {ns}: {e}"));
    ns
}

fn webhook_config(ns: &str, secret: &str, configuration: &str, run: &str) -> WebhookConfig {
    let mut c = WebhookConfig::local(ns, secret, configuration);
    c.register = true;
    c.namespace_selector =
        Some(parse_namespace_selector(&format!("{RUN_LABEL}={run}")).expect("selector"));
    c
}

/// One registered webhook in one labelled namespace.
struct Fixture {
    client: kube::Client,
    ns: String,
    run: String,
    secret: String,
    metrics: Metrics,
    webhook: Option<RunningWebhook>,
    shutdown: CancellationToken,
    cleanup: Cleanup,
}

impl Fixture {
    async fn new(prefix: &str, tweak: impl FnOnce(&mut WebhookConfig)) -> Self {
        support::ensure_crd();
        let client = support::admin_client().await;
        let run = random_id();
        let configuration = format!("mo-webhook-test-{run}");
        let mut cleanup = Cleanup {
            webhook_configurations: vec![configuration.clone()],
            namespaces: vec![],
        };
        let ns = labelled_namespace(&client, prefix, &run).await;
        cleanup.namespaces.push(ns.clone());
        let secret = "webhook-tls".to_string();
        let mut config = webhook_config(&ns, &secret, &configuration, &run);
        tweak(&mut config);
        let metrics = Metrics::new().expect("metrics");
        let shutdown = CancellationToken::new();
        let webhook = start_webhook(
            config,
            client.clone(),
            HookPolicy::default(),
            Some(metrics.clone()),
            None,
            shutdown.clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("starting the webhook: {e}"));
        let f = Self {
            client,
            ns,
            run,
            secret,
            metrics,
            webhook: Some(webhook),
            shutdown,
            cleanup,
        };
        f.wait_until_active(&f.ns).await;
        f
    }

    fn webhook(&self) -> &RunningWebhook {
        self.webhook.as_ref().expect("running")
    }

    /// The API server picks new webhook configurations up asynchronously: wait until a
    /// configuration only the webhook refuses is refused by it.
    async fn wait_until_active(&self, ns: &str) {
        let file = sample_path("broken/hook-metadata-address.yaml");
        let file = file.to_str().expect("utf-8");
        wait_for(
            "the webhook to be called by the API server",
            TIMEOUT,
            || async {
                let r = kubectl(&["create", "--dry-run=server", "-n", ns, "-f", file]);
                if !r.ok && r.stderr.contains(WEBHOOK_DENIED) {
                    Ok(())
                } else {
                    Err(format!("ok={} stderr={}", r.ok, r.stderr.trim()))
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn secret_data(&self) -> BTreeMap<String, String> {
        secret_data(&self.client, &self.ns, &self.secret).await
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(w) = self.webhook.take() {
            tokio::time::timeout(Duration::from_secs(30), w.wait())
                .await
                .expect("the webhook stops promptly");
        }
        drop(self.cleanup);
    }
}

async fn secret_data(client: &kube::Client, ns: &str, name: &str) -> BTreeMap<String, String> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading Secret {ns}/{name}: {e}"));
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8")))
        .collect()
}

fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("PEM")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(manager_operator::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Handshakes with `addr` as 127.0.0.1, verifying with `ca_pem`; returns the served leaf.
async fn served_cert(addr: SocketAddr, ca_pem: &str) -> Result<CertificateDer<'static>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tls_connector(ca_pem)
        .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .ok_or("no certificate")?;
    Ok(certs[0].clone().into_owned())
}

fn leaf_der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM certificate")
}

/// POSTs an AdmissionReview straight to the webhook (TLS verified with `ca_pem`).
async fn post_review(addr: SocketAddr, ca_pem: &str, review: &Value) -> (u16, Value) {
    let body = serde_json::to_vec(review).expect("json");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut tls = tls_connector(ca_pem)
        .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
        .await
        .expect("TLS with the Secret's CA");
    let head = format!(
        "POST /validate-managerconfig HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("write");
    tls.write_all(&body).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

fn review_for(object: &Value, ns: &str) -> Value {
    let mut object = object.clone();
    object["metadata"]["namespace"] = json!(ns);
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": random_id(),
            "kind": {"group": "manager-operator.io", "version": "v1alpha1", "kind": "ManagerConfig"},
            "resource": {"group": "manager-operator.io", "version": "v1alpha1", "resource": "managerconfigs"},
            "name": object["metadata"]["name"], "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "admin", "groups": ["system:masters"]},
            "object": object
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_are_judged_through_the_api_server() {
    let f = Fixture::new("wh-samples", |_| {}).await;
    let ns = f.ns.clone();
    let data = f.secret_data().await;
    let ca = data.get("ca.crt").expect("ca.crt in the Secret").clone();

    // The registration: URL mode on 127.0.0.1, CA from the Secret, failurePolicy Fail.
    let vwc: Value = serde_json::from_str(&support::kubectl_ok(&[
        "get",
        "validatingwebhookconfiguration",
        &f.cleanup.webhook_configurations[0],
        "-o",
        "json",
    ]))
    .expect("json");
    let w = &vwc["webhooks"][0];
    assert_eq!(
        w["clientConfig"]["url"],
        format!(
            "https://127.0.0.1:{}/validate-managerconfig",
            f.webhook().local_addr().port()
        )
    );
    assert_eq!(w["failurePolicy"], "Fail");
    assert_eq!(
        w["namespaceSelector"]["matchLabels"][RUN_LABEL],
        f.run.as_str()
    );
    let bundle = w["clientConfig"]["caBundle"].as_str().expect("caBundle");
    let decoded =
        String::from_utf8(base64_decode(bundle).expect("caBundle is base64")).expect("utf-8");
    assert_eq!(decoded, ca, "caBundle is the Secret's ca.crt");

    // Every invalid sample is denied, naming its fields. The API server answers from CEL (it
    // validates the schema before calling webhooks); the webhook denies the same objects too.
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "invalid-lease-not-greater-than-renew.yaml",
            &["spec.leaderElection.renewDeadline"],
            &["spec.leaderElection.renewDeadline: must be less than leaseDuration (5s), got 6s"],
        ),
        (
            "invalid-renew-within-jitter.yaml",
            &["spec.leaderElection.renewDeadline"],
            &["spec.leaderElection.renewDeadline: must be greater than 1.2 × retryPeriod (2.4s"],
        ),
        (
            "invalid-zero-duration.yaml",
            &["spec.leaderElection.renewDeadline", "hook.timeout"],
            &[
                "spec.leaderElection.renewDeadline: must be greater than 0",
                "spec.workers[0].hook.timeout: must be greater than 0",
            ],
        ),
        (
            "invalid-three-rules.yaml",
            &[
                "spec.leaderElection.leaseDuration",
                "spec.leaderElection.renewDeadline",
                "spec.workers[0].concurrency",
            ],
            &[
                "spec.leaderElection.leaseDuration: must be a whole number of seconds",
                "spec.leaderElection.renewDeadline: must be less than leaseDuration",
                "spec.workers[0].concurrency: must be between 1 and 64, got 65",
            ],
        ),
    ];
    let mut invalid_files: Vec<String> = std::fs::read_dir(support::repo_root().join("samples"))
        .expect("samples")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("invalid-") && n.ends_with(".yaml"))
        .collect();
    invalid_files.sort();
    let mut covered: Vec<&str> = cases.iter().map(|c| c.0).collect();
    covered.sort();
    assert_eq!(
        invalid_files, covered,
        "every invalid sample has a case here"
    );
    for (file, api_fields, webhook_lines) in cases {
        let path = sample_path(file);
        let path = path.to_str().expect("utf-8");
        for args in [
            vec!["create", "-n", &ns, "-f", path],
            vec!["apply", "--dry-run=server", "-n", &ns, "-f", path],
        ] {
            let r = kubectl(&args);
            assert!(!r.ok, "{file} must be denied ({args:?}): {}", r.stdout);
            for field in *api_fields {
                assert!(
                    r.stderr.contains(field),
                    "{file} {args:?}: {:?} should name {field}",
                    r.stderr
                );
            }
        }
        let (status, answer) = post_review(
            f.webhook().local_addr(),
            &ca,
            &review_for(&read_sample(file), &ns),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["response"]["allowed"], false, "{file}");
        assert_eq!(answer["response"]["status"]["code"], 422);
        let message = answer["response"]["status"]["message"]
            .as_str()
            .unwrap_or("");
        for line in *webhook_lines {
            assert!(
                message.contains(line),
                "{file}: webhook says {message:?}, wanted {line:?}"
            );
        }
    }

    // CEL accepts these; only the webhook refuses them.
    let hook = sample_path("broken/hook-metadata-address.yaml");
    let hook = hook.to_str().expect("utf-8");
    for args in [
        vec!["create", "-n", &ns, "-f", hook],
        vec!["apply", "--dry-run=server", "-n", &ns, "-f", hook],
        vec![
            "apply",
            "--server-side",
            "--dry-run=server",
            "-n",
            &ns,
            "-f",
            hook,
        ],
    ] {
        let r = kubectl(&args);
        assert!(!r.ok, "{args:?}");
        eprintln!("kubectl {} said:\n{}", args.join(" "), r.stderr.trim_end());
        assert!(r.stderr.contains(WEBHOOK_DENIED), "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("spec.workers[0].hook.url: refused by the hook policy: address 169.254.169.254 is in 169.254.0.0/16 [rule link-local"),
            "{args:?}: {}",
            r.stderr
        );
    }
    let mut several = read_sample("minimal.yaml");
    several["metadata"]["name"] = json!("webhook-only-rules");
    several["spec"]["workers"][0]["hook"]["url"] = json!("http://127.0.0.1:8080/sync");
    several["spec"]["workers"][0]["watch"]["labelSelector"] = json!("app in (a");
    several["spec"]["workers"]
        .as_array_mut()
        .expect("workers")
        .push(
            json!({"name": "metadata", "watch": {"apiVersion": "v1", "kind": "Secret"},
                     "hook": {"url": "http://[fd00:ec2::254]/latest"}}),
        );
    let file = manifest(&several);
    let r = kubectl(&[
        "create",
        "-n",
        &ns,
        "-f",
        file.path().to_str().expect("utf-8"),
    ]);
    assert!(!r.ok);
    for needle in [
        WEBHOOK_DENIED,
        "spec.workers[0].hook.url: refused by the hook policy: address 127.0.0.1 is in 127.0.0.0/8 [rule loopback",
        "spec.workers[0].watch.labelSelector:",
        "spec.workers[1].hook.url: refused by the hook policy: address fd00:ec2::254 is in fd00:ec2::254/128 [rule aws-imds",
    ] {
        assert!(r.stderr.contains(needle), "{needle:?} not in {}", r.stderr);
    }

    // Valid samples are admitted; the tight one with a warning that kubectl prints.
    for s in ["minimal.yaml", "full.yaml", "tight-timings.yaml"] {
        let p = sample_path(s);
        let r = kubectl(&["create", "-n", &ns, "-f", p.to_str().expect("utf-8")]);
        assert!(r.ok, "{s} must be admitted: {}", r.stderr);
        if s == "tight-timings.yaml" {
            assert!(
                r.stderr.contains(
                    "Warning: spec.leaderElection.renewDeadline: 1.3s is within 1s of leaseDuration (2s)"
                ),
                "{}",
                r.stderr
            );
        } else {
            assert!(!r.stderr.contains("Warning"), "{s}: {}", r.stderr);
        }
    }
    let listed = support::kubectl_ok(&["get", "mc", "-n", &ns, "-o", "name"]);
    for n in ["minimal", "inventory-sync", "tight-timings"] {
        assert!(
            listed.contains(&format!("managerconfig.manager-operator.io/{n}")),
            "{listed}"
        );
    }

    // More warnings for risky settings.
    let mut risky = read_sample("minimal.yaml");
    risky["metadata"]["name"] = json!("risky");
    risky["spec"]["leaderElection"] = json!({"leaseDuration": "10m", "renewDeadline": "9m"});
    risky["spec"]["workers"][0]["concurrency"] = json!(20);
    let file = manifest(&risky);
    let r = kubectl(&[
        "create",
        "-n",
        &ns,
        "-f",
        file.path().to_str().expect("utf-8"),
    ]);
    assert!(r.ok, "risky but valid is admitted: {}", r.stderr);
    for w in [
        "Warning: spec.leaderElection.leaseDuration: 10m0s is over 5 minutes",
        "Warning: spec.workers[0].concurrency: 20 is above 16",
    ] {
        assert!(r.stderr.contains(w), "{w:?} not in {}", r.stderr);
    }

    // UPDATE: a bad change is denied by the webhook; a metadata-only change is admitted.
    let mut changed = read_sample("minimal.yaml");
    changed["spec"]["workers"][0]["hook"]["url"] = json!("http://metadata.google.internal/x");
    let file = manifest(&changed);
    let r = kubectl(&[
        "apply",
        "-n",
        &ns,
        "-f",
        file.path().to_str().expect("utf-8"),
    ]);
    assert!(!r.ok);
    assert!(r.stderr.contains(WEBHOOK_DENIED), "{}", r.stderr);
    assert!(
        r.stderr.contains("spec.workers[0].hook.url"),
        "{}",
        r.stderr
    );
    let r = kubectl(&["label", "-n", &ns, "mc/minimal", "team=a"]);
    assert!(r.ok, "metadata-only update admitted: {}", r.stderr);

    // Metrics were recorded.
    let m = f.metrics.encode().expect("metrics");
    // The series exist from start (at 0); what matters is that they counted.
    let value = |prefix: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        value("manager_operator_admission_requests_total{allowed=\"false\",operation=\"CREATE\"}")
            >= 1.0,
        "{m}"
    );
    assert!(
        value("manager_operator_admission_requests_total{allowed=\"true\",operation=\"UPDATE\"}")
            >= 1.0,
        "{m}"
    );
    assert!(
        m.contains("manager_operator_admission_duration_seconds_count"),
        "{m}"
    );
    f.stop().await;
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let v: k8s_openapi::ByteString = serde_json::from_value(json!(s)).ok()?;
    Some(v.0)
}

async fn wait_can_i(kubeconfig: &Path, verb: &str, resource: &str, ns: &str) {
    wait_for(
        &format!("RBAC: {verb} {resource} in {ns}"),
        TIMEOUT,
        || async {
            let r = kubectl_with(kubeconfig, &["auth", "can-i", verb, resource, "-n", ns]);
            if r.stdout.trim() == "yes" {
                Ok(())
            } else {
                Err(format!("{} {}", r.stdout.trim(), r.stderr.trim()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_namespace_lease_needs_lease_rights_of_the_requesting_user() {
    let mut f = Fixture::new("wh-lease", |_| {}).await;
    let client = f.client.clone();
    let ns = f.ns.clone();
    let lease_ns = support::fresh_namespace(&client, "wh-lease-target").await;
    f.cleanup.namespaces.push(lease_ns.clone());
    let user = "mo-unprivileged";
    let unprivileged = support::unprivileged_kubeconfig_path();

    // The unprivileged user may manage ManagerConfigs in the test namespace, not Leases elsewhere.
    rbac::grant_user(
        &ns,
        user,
        "mc-editor",
        &rbac::rule(
            "manager-operator.io",
            &["managerconfigs"],
            &["create", "get", "list", "update", "patch"],
        ),
    );
    wait_can_i(
        &unprivileged,
        "create",
        "managerconfigs.manager-operator.io",
        &ns,
    )
    .await;

    let mut mc = read_sample("minimal.yaml");
    mc["spec"]["leaderElection"] = json!({"leaseNamespace": lease_ns});
    let by = |name: &str| {
        let mut m = mc.clone();
        m["metadata"]["name"] = json!(name);
        manifest(&m)
    };

    // Admin (system:masters) may manage Leases anywhere: admitted.
    let file = by("admin-cross");
    let r = kubectl(&[
        "create",
        "-n",
        &ns,
        "-f",
        file.path().to_str().expect("utf-8"),
    ]);
    assert!(r.ok, "admin admitted: {}", r.stderr);

    // The unprivileged user is denied by the webhook, naming the field and the user.
    let file = by("user-cross");
    let path = file.path().to_str().expect("utf-8").to_string();
    let r = kubectl_with(&unprivileged, &["create", "-n", &ns, "-f", &path]);
    assert!(!r.ok, "unprivileged user denied");
    assert!(r.stderr.contains(WEBHOOK_DENIED), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "spec.leaderElection.leaseNamespace: user \"{user}\" may not create and update leases.coordination.k8s.io in namespace \"{lease_ns}\""
        )),
        "{}",
        r.stderr
    );
    // The same user may create one that keeps its Lease at home (no SubjectAccessReview).
    let home = {
        let mut m = read_sample("minimal.yaml");
        m["metadata"]["name"] = json!("user-home");
        manifest(&m)
    };
    let r = kubectl_with(
        &unprivileged,
        &[
            "create",
            "-n",
            &ns,
            "-f",
            home.path().to_str().expect("utf-8"),
        ],
    );
    assert!(r.ok, "same-namespace lease admitted: {}", r.stderr);

    // Granting Lease rights in the other namespace flips the answer: the review is about the
    // requesting user, not the operator.
    rbac::grant_user(
        &lease_ns,
        user,
        "lease-editor",
        &rbac::rule("coordination.k8s.io", &["leases"], &["create", "update"]),
    );
    wait_can_i(
        &unprivileged,
        "update",
        "leases.coordination.k8s.io",
        &lease_ns,
    )
    .await;
    let r = kubectl_with(&unprivileged, &["create", "-n", &ns, "-f", &path]);
    assert!(
        r.ok,
        "admitted once the user may manage Leases there: {}",
        r.stderr
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_keep_admissions_working() {
    let interval = Duration::from_secs(1);
    let f = Fixture::new("wh-rotate", |c| {
        // 12 s serving certificates (back-dated 1.2 s): rotated when less than 4.4 s are left,
        // i.e. about every 9 s.
        c.lifetimes = CertLifetimes {
            ca: Duration::from_secs(3600),
            serving: Duration::from_secs(12),
        };
        c.check_interval = interval;
    })
    .await;
    let ns = f.ns.clone();
    let addr = f.webhook().local_addr();
    let first = f.secret_data().await;
    let ca = first["ca.crt"].clone();
    let valid = sample_path("minimal.yaml");
    let valid = valid.to_str().expect("utf-8");
    let hook = sample_path("broken/hook-metadata-address.yaml");
    let hook = hook.to_str().expect("utf-8");

    // Keep admitting and denying while at least two rotations happen, without a restart.
    let started = Instant::now();
    let mut seen_serials = std::collections::BTreeSet::new();
    let mut admissions = 0;
    while started.elapsed() < Duration::from_secs(90) {
        let r = kubectl(&["create", "--dry-run=server", "-n", &ns, "-f", valid]);
        assert!(
            r.ok,
            "valid admitted after {:?}: {}",
            started.elapsed(),
            r.stderr
        );
        let r = kubectl(&["create", "--dry-run=server", "-n", &ns, "-f", hook]);
        assert!(
            !r.ok && r.stderr.contains(WEBHOOK_DENIED),
            "denied by the webhook after {:?}: {}",
            started.elapsed(),
            r.stderr
        );
        admissions += 2;
        seen_serials.insert(f.webhook().serving_cert().serial);
        if seen_serials.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen_serials.len() >= 3,
        "expected two rotations within 90 s, saw serials {seen_serials:?}"
    );

    // The Secret holds the rotated certificate, the server serves it, the CA never changed.
    let now = wait_for(
        "the server to serve the Secret's certificate",
        TIMEOUT,
        || async {
            let data = f.secret_data().await;
            let served = served_cert(addr, &ca).await?;
            if served == leaf_der(&data["tls.crt"]) {
                Ok(data)
            } else {
                Err("served certificate differs from the Secret's".into())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(now["tls.crt"], first["tls.crt"], "rotated");
    assert_eq!(now["ca.crt"], first["ca.crt"], "same CA");
    let rotations = f.metrics.webhook_certificate_rotations_total.get();
    assert!(rotations >= 2, "rotations counted: {rotations}");
    eprintln!(
        "{admissions} admission calls across {} certificates",
        seen_serials.len()
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_on_one_secret_end_up_with_one_ca() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let run = random_id();
    let ns = labelled_namespace(&client, "wh-race", &run).await;
    let mut cleanup = Cleanup {
        webhook_configurations: vec![],
        namespaces: vec![ns.clone()],
    };
    let shutdown = CancellationToken::new();
    let mut running = Vec::new();

    for round in 0..3 {
        let secret = format!("race-{round}");
        let start = |i: usize| {
            let mut c =
                WebhookConfig::local(&ns, &secret, &format!("mo-webhook-race-{run}-{round}-{i}"));
            c.check_interval = Duration::from_secs(1);
            start_webhook(
                c,
                client.clone(),
                HookPolicy::default(),
                None,
                None,
                shutdown.clone(),
            )
        };
        let (a, b, c) = tokio::join!(start(0), start(1), start(2));
        let servers: Vec<RunningWebhook> = [a, b, c]
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("round {round}: start failed: {e}")))
            .collect();
        let data = secret_data(&client, &ns, &secret).await;
        let ca = data["ca.crt"].clone();
        assert_eq!(
            ca.matches("BEGIN CERTIFICATE").count(),
            1,
            "round {round}: one CA"
        );
        for (i, s) in servers.iter().enumerate() {
            assert_eq!(
                s.ca_bundle().as_deref(),
                Some(ca.as_str()),
                "round {round}: server {i} uses the Secret's CA"
            );
            let served = served_cert(s.local_addr(), &ca).await.unwrap_or_else(|e| {
                panic!("round {round}: server {i} verifies with the Secret's CA: {e}")
            });
            assert_eq!(
                served,
                leaf_der(&data["tls.crt"]),
                "round {round}: server {i} serves the Secret's certificate"
            );
        }
        running.extend(servers);
    }

    // Replicas pick up a Secret another replica rewrote: break the serving certificate of
    // round 0's Secret; one replica repairs it, and all three end up serving the repaired one.
    let secret = "race-0";
    let original = secret_data(&client, &ns, secret).await;
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch(
            secret,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"tls.crt": "Z2FyYmFnZQ=="}})), // "garbage"
        )
        .await
        .expect("patching the Secret");
    let ca = original["ca.crt"].clone();
    for (i, s) in running.iter().take(3).enumerate() {
        wait_for(
            &format!("replica {i} to serve the repaired Secret's certificate"),
            TIMEOUT,
            || async {
                let data = secret_data(&client, &ns, secret).await;
                if data["tls.crt"] == original["tls.crt"] || !data["tls.crt"].contains("BEGIN") {
                    return Err("not repaired yet".to_string());
                }
                let served = served_cert(s.local_addr(), &ca).await?;
                if served == leaf_der(&data["tls.crt"]) {
                    Ok(())
                } else {
                    Err("serving another certificate".into())
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        secret_data(&client, &ns, secret).await["ca.crt"],
        ca,
        "the CA survived the repair"
    );

    shutdown.cancel();
    for s in running {
        tokio::time::timeout(Duration::from_secs(30), s.wait())
            .await
            .expect("stops");
    }
    cleanup.webhook_configurations.clear();
    drop(cleanup);
    let _ = Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await;
}
