//! admission side by side: the operator's webhook (as in scenario 4: URL mode on
//! 127.0.0.1, its self-managed ECDSA P-256 certificate) against `cr-webhook` (a
//! controller-runtime webhook server validating the same leader-election rules, TLS with an
//! ECDSA P-256 certificate for 127.0.0.1 from a CA made by `openssl`), hit by the same load client
//! ([`crate::admission::load`]: C tasks on HTTP/1.1 keep-alive connections, back to back) with
//! the same two AdmissionReview v1 bodies at the same concurrencies. For each review and
//! concurrency the two alternate A B A B (`reps` times each). Server CPU per request: the
//! server process's user + system CPU over the run (warm-up included) ÷ requests sent.

use std::path::Path;
use std::time::Duration;

use crate::admission;
use crate::peers::Peer;
use crate::util::{self, Csv, Operator, OperatorOpts, Result, f, fail};

/// Settings of the scenario.
pub struct Settings {
    pub levels: Vec<usize>,
    pub seconds: f64,
    pub warmup: f64,
    /// Runs of each implementation per (review, concurrency), alternating.
    pub reps: usize,
    /// The cr-webhook binary and its controller-runtime version.
    pub cr_webhook: std::path::PathBuf,
    pub cr_version: String,
}

fn openssl(args: &[&str], dir: &Path) -> Result<()> {
    let st = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if !st.success() {
        return fail(format!("openssl {} failed", args.join(" ")));
    }
    Ok(())
}

/// A CA and an ECDSA P-256 serving certificate for 127.0.0.1 signed by it, in `dir` (ca.crt,
/// tls.crt, tls.key); returns the CA certificate (PEM).
fn certificates(dir: &Path) -> Result<Vec<u8>> {
    std::fs::create_dir_all(dir)?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "1",
        "-subj",
        "/CN=mo-bench-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&ca, dir)?;
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
    ]);
    openssl(&csr, dir)?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "tls.crt",
        ],
        dir,
    )?;
    Ok(std::fs::read(dir.join("ca.crt"))?)
}

/// Runs the scenario; writes `peer-admission.csv` into `out_dir`.
pub async fn run(o: &OperatorOpts, ns: &str, s: &Settings, out_dir: &Path) -> Result<()> {
    let client = util::client(&o.kubeconfig).await?;
    // The operator's webhook, as in scenario 4.
    let port = util::free_port()?;
    let extra = admission::webhook_args(ns, port);
    let mut op = Operator::spawn(o, "bench-peer-admission", &extra)?;
    op.wait_ready(Duration::from_secs(60)).await?;
    let op_http = admission::https_client(&admission::ca_bundle(&client).await?)?;
    let op_url = format!("https://127.0.0.1:{port}/validate-managerconfig");

    // cr-webhook.
    let cert_dir = o.log_dir.join("cr-webhook-certs");
    let cr_ca = certificates(&cert_dir)?;
    let cr_port = util::free_port()?;
    let cr_args: Vec<String> = vec![
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        cr_port.to_string(),
        "--cert-dir".into(),
        cert_dir.display().to_string(),
    ];
    let cr = Peer::spawn(&s.cr_webhook, &cr_args, &o.log_dir.join("cr-webhook.log"))?;
    let cr_http = admission::https_client(&cr_ca)?;
    let cr_url = format!("https://127.0.0.1:{cr_port}/validate");

    let valid = admission::review(
        &admission::manager_config("bench-valid", ns, true),
        ns,
        "uid-valid",
    );
    let invalid = admission::review(
        &admission::manager_config("bench-invalid", ns, false),
        ns,
        "uid-invalid",
    );
    let cr_name = format!("controller-runtime {}", s.cr_version);
    let impls = [
        ("manager-operator", &op_http, &op_url, op.pid),
        (cr_name.as_str(), &cr_http, &cr_url, cr.pid),
    ];
    // Both answer both reviews as intended (cr-webhook: once it listens).
    for (name, http, url, _) in &impls {
        for (body, want) in [(&valid, true), (&invalid, false)] {
            let b = bytes::Bytes::from(serde_json::to_vec(body)?);
            let answer = util::within(Duration::from_secs(30), "the webhook to answer", async {
                loop {
                    match admission::post(http, url, &b).await {
                        Ok(a) => return Ok(a),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
            .await?;
            let allowed = answer["response"]["allowed"].as_bool();
            if allowed != Some(want) {
                return fail(format!(
                    "{name} answered allowed={allowed:?}, expected {want}: {answer}"
                ));
            }
            if !want {
                eprintln!(
                    "[bench] {name} denied: {}",
                    answer["response"]["status"]["message"]
                );
            }
        }
    }

    let mut csv = Csv::new(
        out_dir.join("peer-admission.csv"),
        &[
            "impl",
            "review",
            "concurrency",
            "rep",
            "requests",
            "errors",
            "seconds",
            "rps",
            "p50_ms",
            "p99_ms",
            "server_cpu_us_per_req",
            "server_rss_mib",
            "load1",
        ],
    );
    for (review, body) in [("valid", &valid), ("invalid", &invalid)] {
        let b = bytes::Bytes::from(serde_json::to_vec(body)?);
        for &c in &s.levels {
            for rep in 1..=s.reps {
                for (name, http, url, pid) in &impls {
                    let load1 = util::loadavg().0;
                    let cpu0 = util::cpu_seconds(*pid).unwrap_or(f64::NAN);
                    let r = admission::load(
                        http,
                        url,
                        b.clone(),
                        c,
                        Duration::from_secs_f64(s.warmup),
                        Duration::from_secs_f64(s.seconds),
                    )
                    .await;
                    let cpu = util::cpu_seconds(*pid).unwrap_or(f64::NAN) - cpu0;
                    let l = &r.latencies_ms;
                    let rss = util::rss_mib(*pid).unwrap_or(f64::NAN);
                    eprintln!(
                        "[bench] peer-admission {review} c={c} rep {rep}: {name} {:.0} req/s p50 {:.2} ms p99 {:.2} ms",
                        l.len() as f64 / r.seconds,
                        util::percentile(l, 50.0),
                        util::percentile(l, 99.0)
                    );
                    csv.row(&[
                        name.to_string(),
                        review.into(),
                        c.to_string(),
                        rep.to_string(),
                        l.len().to_string(),
                        r.errors.to_string(),
                        f(r.seconds),
                        f(l.len() as f64 / r.seconds),
                        f(util::percentile(l, 50.0)),
                        f(util::percentile(l, 99.0)),
                        f(cpu * 1e6 / r.total.max(1) as f64),
                        f(rss),
                        f(load1),
                    ]);
                }
            }
        }
    }
    csv.save()?;
    cr.kill().await;
    op.stop().await;
    Ok(())
}
