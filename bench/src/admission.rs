//! Scenario 4: admission latency.
//!
//! One replica serves the webhook in URL mode on 127.0.0.1 (self-managed certificate in a
//! Secret, CA injected into the ValidatingWebhookConfiguration it registers). Two loads:
//!
//! * direct: C client tasks (C = 1, 16, 64) on HTTP/1.1 keep-alive connections POST one
//!   AdmissionReview each, back to back, for a fixed time after a warm-up; TLS verified with
//!   the injected CA. Reviews: a valid ManagerConfig (admitted) and one breaking three rules
//!   (denied with all three). Client-side latency percentiles (exact), requests/s, and the
//!   operator's own `admission_duration_seconds` (server side, bucket resolution);
//! * through the API server: P parallel `kubectl create --dry-run=server -f FILE` runs (dry
//!   run: the webhook is called, nothing is stored), half valid, half denied by the webhook
//!   only (a hook URL on the metadata address: CEL lets it through); then the API server's
//!   `apiserver_admission_webhook_admission_duration_seconds` histogram, before/after delta.

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::Api;
use serde_json::{Value, json};

use crate::util::{self, Csv, Operator, OperatorOpts, Result, f, fail};

pub const CONFIGURATION: &str = "mo-bench";
const APISERVER_METRIC: &str = "apiserver_admission_webhook_admission_duration_seconds";
const OPERATOR_METRIC: &str = "manager_operator_admission_duration_seconds";

/// Settings of the scenario.
pub struct Settings {
    /// Concurrency levels.
    pub levels: Vec<usize>,
    /// Measured seconds per level and review.
    pub seconds: f64,
    /// Warm-up seconds (not measured).
    pub warmup: f64,
    /// Objects sent through kubectl in total.
    pub burst: usize,
    /// Parallel kubectl processes.
    pub kubectl_parallel: usize,
    /// kubectl binary.
    pub kubectl: String,
    /// When set: `perf record` the operator during the valid review at the highest level.
    pub perf_out: Option<std::path::PathBuf>,
}

pub fn manager_config(name: &str, ns: &str, valid: bool) -> Value {
    if valid {
        json!({
            "apiVersion": "manager-operator.io/v1alpha1", "kind": "ManagerConfig",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "serviceAccountName": "default",
                "leaderElection": {"leaseDuration": "15s", "renewDeadline": "10s", "retryPeriod": "2s"},
                "workers": [{
                    "name": "configmaps", "concurrency": 4,
                    "watch": {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": "app=inventory"},
                    "resyncPeriod": "10m",
                    "hook": {"url": "http://inventory-hook.bench.svc:8080/sync", "timeout": "5s"}
                }]
            }
        })
    } else {
        json!({
            "apiVersion": "manager-operator.io/v1alpha1", "kind": "ManagerConfig",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "leaderElection": {"leaseDuration": "5s", "renewDeadline": "6s"},
                "workers": [{
                    "name": "configmaps",
                    "watch": {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": "app in ("},
                    "hook": {"url": "http://169.254.169.254/latest/meta-data"}
                }]
            }
        })
    }
}

pub fn review(object: &Value, ns: &str, uid: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "manager-operator.io", "version": "v1alpha1", "kind": "ManagerConfig"},
            "resource": {"group": "manager-operator.io", "version": "v1alpha1", "resource": "managerconfigs"},
            "name": object["metadata"]["name"], "namespace": ns, "operation": "CREATE",
            "userInfo": {"username": "admin", "groups": ["system:masters"]},
            "object": object
        }
    })
}

pub async fn post(client: &reqwest::Client, url: &str, body: &bytes::Bytes) -> Result<Value> {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await?;
    let status = r.status();
    let b = r.bytes().await?;
    if !status.is_success() {
        return fail(format!("HTTP {status}: {}", String::from_utf8_lossy(&b)));
    }
    Ok(serde_json::from_slice(&b)?)
}

pub struct LoadResult {
    pub latencies_ms: Vec<f64>,
    pub errors: u64,
    /// Every request sent, warm-up included (for CPU per request).
    pub total: u64,
    pub seconds: f64,
}

pub async fn load(
    client: &reqwest::Client,
    url: &str,
    body: bytes::Bytes,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> LoadResult {
    let start = Instant::now();
    let from = start + warmup;
    let end = from + measure;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let url = url.to_string();
            let body = body.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut total = 0u64;
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    let ok = match client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                    {
                        Ok(r) => {
                            let s = r.status();
                            r.bytes().await.is_ok() && s.is_success()
                        }
                        Err(_) => false,
                    };
                    total += 1;
                    if t >= from {
                        if ok {
                            lat.push(util::ms(t.elapsed()));
                        } else {
                            errors += 1;
                        }
                    }
                }
                (lat, errors, total)
            })
        })
        .collect();
    let mut out = LoadResult {
        latencies_ms: Vec::new(),
        errors: 0,
        total: 0,
        seconds: measure.as_secs_f64(),
    };
    for t in tasks {
        if let Ok((lat, e, n)) = t.await {
            out.latencies_ms.extend(lat);
            out.errors += e;
            out.total += n;
        }
    }
    out
}

pub async fn ca_bundle(client: &kube::Client) -> Result<Vec<u8>> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    util::within(
        Duration::from_secs(60),
        "the CA bundle in the webhook configuration",
        async {
            loop {
                if let Some(vwc) = api.get_opt(CONFIGURATION).await?
                    && let Some(ca) = vwc
                        .webhooks
                        .unwrap_or_default()
                        .into_iter()
                        .find_map(|w| w.client_config.ca_bundle)
                    && !ca.0.is_empty()
                {
                    return Ok(ca.0);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
    .await
}

/// Flags of an operator that serves only its webhook on `127.0.0.1:port` (registered in URL
/// mode, its certificate Secret in `ns`): the admission scenarios' operator.
pub fn webhook_args(ns: &str, port: u16) -> Vec<String> {
    [
        "--watch-namespace",
        "bench-idle",
        "--webhook-bind-address",
        &format!("127.0.0.1:{port}"),
        "--webhook-url",
        "https://127.0.0.1:0/validate-managerconfig",
        "--webhook-register",
        "--webhook-secret-namespace",
        ns,
        "--webhook-configuration-name",
        CONFIGURATION,
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

/// The load client: HTTP/1.1 keep-alive, trusting only `ca_pem`, no proxy.
pub fn https_client(ca_pem: &[u8]) -> Result<reqwest::Client> {
    let certs = reqwest::Certificate::from_pem_bundle(ca_pem)?;
    Ok(reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tls_certs_only(certs)
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// Runs the scenario; writes `admission-direct.csv` and `admission-apiserver.csv` into `out_dir`.
pub async fn run(
    o: &OperatorOpts,
    ns: &str,
    s: &Settings,
    out_dir: &std::path::Path,
) -> Result<()> {
    let client = util::client(&o.kubeconfig).await?;
    let port = util::free_port()?;
    let extra = webhook_args(ns, port);
    let mut op = Operator::spawn(o, "bench-admission", &extra)?;
    op.wait_ready(Duration::from_secs(60)).await?;
    let http = https_client(&ca_bundle(&client).await?)?;
    let url = format!("https://127.0.0.1:{port}/validate-managerconfig");

    // Both reviews answer as intended before anything is measured.
    let valid = review(&manager_config("bench-valid", ns, true), ns, "uid-valid");
    let invalid = review(
        &manager_config("bench-invalid", ns, false),
        ns,
        "uid-invalid",
    );
    for (body, want) in [(&valid, true), (&invalid, false)] {
        let b = bytes::Bytes::from(serde_json::to_vec(body)?);
        let answer = post(&http, &url, &b).await?;
        let allowed = answer["response"]["allowed"].as_bool();
        if allowed != Some(want) {
            return fail(format!(
                "the webhook answered allowed={allowed:?}, expected {want}: {answer}"
            ));
        }
        if !want {
            eprintln!(
                "[bench] invalid review denied: {}",
                answer["response"]["status"]["message"]
            );
        }
    }

    let mut csv = Csv::new(
        out_dir.join("admission-direct.csv"),
        &[
            "review",
            "concurrency",
            "requests",
            "errors",
            "seconds",
            "rps",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
            "server_p50_ms",
            "server_p99_ms",
            "server_cpu_us_per_req",
            "client_cpu_us_per_req",
            "body_bytes",
            "load1",
        ],
    );
    for (name, body) in [("valid", &valid), ("invalid", &invalid)] {
        let b = bytes::Bytes::from(serde_json::to_vec(body)?);
        for &c in &s.levels {
            let load1 = util::loadavg().0;
            let before = util::histogram(&op.metrics().await?, OPERATOR_METRIC, &[]);
            let server_cpu0 = util::cpu_seconds(op.pid).unwrap_or(f64::NAN);
            let client_cpu0 = util::cpu_seconds(std::process::id()).unwrap_or(f64::NAN);
            let r = load(
                &http,
                &url,
                b.clone(),
                c,
                Duration::from_secs_f64(s.warmup),
                Duration::from_secs_f64(s.seconds),
            )
            .await;
            let server_cpu = util::cpu_seconds(op.pid).unwrap_or(f64::NAN) - server_cpu0;
            let client_cpu =
                util::cpu_seconds(std::process::id()).unwrap_or(f64::NAN) - client_cpu0;
            let after = util::histogram(&op.metrics().await?, OPERATOR_METRIC, &[]);
            let server = util::delta(&after, &before);
            let l = &r.latencies_ms;
            let row = [
                name.to_string(),
                c.to_string(),
                l.len().to_string(),
                r.errors.to_string(),
                f(r.seconds),
                f(l.len() as f64 / r.seconds),
                f(util::percentile(l, 50.0)),
                f(util::percentile(l, 90.0)),
                f(util::percentile(l, 99.0)),
                f(util::percentile(l, 99.9)),
                f(util::percentile(l, 100.0)),
                f(util::hist_quantile(0.5, &server) * 1000.0),
                f(util::hist_quantile(0.99, &server) * 1000.0),
                // CPU over the whole run per request sent (warm-up included in both).
                f(server_cpu * 1e6 / r.total.max(1) as f64),
                f(client_cpu * 1e6 / r.total.max(1) as f64),
                b.len().to_string(),
                f(load1),
            ];
            eprintln!(
                "[bench] admission {name} c={c}: {} req, {} rps, p50 {} ms, p99 {} ms, errors {}",
                row[2], row[5], row[6], row[8], row[3]
            );
            csv.row(&row);
        }
    }
    csv.save()?;

    // The profile: one more run of valid reviews at the highest level under `perf record`,
    // not reported above (sampling slows the process it profiles).
    if let (Some(file), Some(top)) = (&s.perf_out, s.levels.iter().copied().max()) {
        let perf = util::perf_start(op.pid, file).await?;
        let r = load(
            &http,
            &url,
            bytes::Bytes::from(serde_json::to_vec(&valid)?),
            top,
            Duration::from_secs_f64(s.warmup),
            Duration::from_secs_f64(s.seconds),
        )
        .await;
        util::perf_stop(perf).await;
        eprintln!(
            "[bench] admission profiled run (valid, c={top}, not reported): {} req",
            r.latencies_ms.len()
        );
    }

    // Through the API server.
    let before = util::apiserver_metrics(&client).await?;
    let per = s.burst.div_ceil(s.kubectl_parallel.max(1));
    let mut files = Vec::new();
    for p in 0..s.kubectl_parallel.max(1) {
        let mut docs = String::new();
        for i in 0..per {
            let idx = p * per + i;
            let v = manager_config(&format!("burst-{idx:05}"), ns, true);
            let mut v = v;
            if idx % 2 == 1 {
                // Passes the CRD's CEL rules; only the webhook's hook policy refuses it.
                v["spec"]["workers"][0]["hook"]["url"] = json!("http://169.254.169.254/x");
            }
            docs.push_str("---\n");
            docs.push_str(&serde_json::to_string(&v)?);
            docs.push('\n');
        }
        let path = o.log_dir.join(format!("admission-burst-{p}.yaml"));
        std::fs::write(&path, docs)?;
        files.push(path);
    }
    let t = Instant::now();
    let runs: Vec<_> = files
        .iter()
        .map(|file| {
            tokio::process::Command::new(&s.kubectl)
                .arg("--kubeconfig")
                .arg(&o.kubeconfig)
                .args(["create", "--dry-run=server", "-o", "name", "-f"])
                .arg(file)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
        })
        .collect();
    for r in futures::future::join_all(runs).await {
        // Denied objects make kubectl exit 1; that is the point.
        r?;
    }
    let kubectl_s = t.elapsed().as_secs_f64();
    let after = util::apiserver_metrics(&client).await?;
    let mut raw = Csv::new(
        out_dir.join("admission-apiserver.csv"),
        &[
            "rejected",
            "le_s",
            "count",
            "objects",
            "kubectl_parallel",
            "kubectl_seconds",
        ],
    );
    for rejected in ["false", "true"] {
        let filter = [("rejected", rejected), ("type", "validating")];
        let d = util::delta(
            &util::histogram(&after, APISERVER_METRIC, &filter),
            &util::histogram(&before, APISERVER_METRIC, &filter),
        );
        for (le, c) in &d {
            raw.row(&[
                rejected.into(),
                if le.is_infinite() {
                    "+Inf".into()
                } else {
                    le.to_string()
                },
                f(*c),
                (per * s.kubectl_parallel.max(1)).to_string(),
                s.kubectl_parallel.to_string(),
                f(kubectl_s),
            ]);
        }
        eprintln!(
            "[bench] API server view, rejected={rejected}: {} calls, p50 ~{:.1} ms, p99 ~{:.1} ms",
            util::hist_count(&d),
            util::hist_quantile(0.5, &d) * 1000.0,
            util::hist_quantile(0.99, &d) * 1000.0
        );
    }
    raw.save()?;
    op.stop().await;
    Ok(())
}
