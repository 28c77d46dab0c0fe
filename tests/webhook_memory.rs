//! The webhook is not a memory amplifier (docs/security.md): 32 parallel ~3 MiB AdmissionReviews
//! whose object carries 240,000 unknown fields, sent to the real operator binary's webhook,
//! leave its peak RSS (VmHWM from /proc) under 256 MiB (half the chart's default 512Mi memory
//! limit), and each denial is short (the unknown fields are counted, not listed).

mod support;

use std::time::{Duration, Instant};

const PARALLEL: usize = 32;
const FIELDS: usize = 240_000;
/// The webhook's memory bound under load: half the chart's default memory limit (512Mi), so
/// the rest of the operator keeps the other half.
const PEAK_BOUND_BYTES: u64 = 256 * 1024 * 1024;

fn review(uid: usize, ns: &str) -> Vec<u8> {
    let mut spec = String::with_capacity(FIELDS * 13);
    for i in 0..FIELDS {
        if i > 0 {
            spec.push(',');
        }
        spec.push_str(&format!("\"u{i:06}\":0"));
    }
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u-{uid}","kind":{{"group":"manager-operator.io","version":"v1alpha1","kind":"ManagerConfig"}},"resource":{{"group":"manager-operator.io","version":"v1alpha1","resource":"managerconfigs"}},"name":"big","namespace":"{ns}","operation":"CREATE","userInfo":{{"username":"tenant"}},"object":{{"apiVersion":"manager-operator.io/v1alpha1","kind":"ManagerConfig","metadata":{{"name":"big","namespace":"{ns}"}},"spec":{{{spec}}}}}}}}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_huge_reviews_stay_under_the_chart_memory_limit() {
    // Installs the rustls crypto provider the HTTP clients need.
    let _ = support::loopback_http();
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "wh-mem").await;
    let port = support::free_port();
    let mut op = support::operator()
        .identity("wh-mem")
        .namespace(&ns)
        .with_webhook()
        .no_hook_allow_loopback()
        .arg("--disable-placement")
        .args(["--webhook-bind-address", &format!("127.0.0.1:{port}")])
        .args(["--webhook-secret-namespace", &ns])
        .args(["--webhook-secret-name", "wh-mem-tls"])
        .args(["--webhook-configuration-name", &format!("{ns}-none")])
        .env("RUST_LOG", "warn")
        .start()
        .await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let idle = op.hwm_kib();

    let bodies: Vec<Vec<u8>> = (0..PARALLEL).map(|i| review(i, &ns)).collect();
    let size = bodies[0].len();
    assert!(size <= 3 * 1024 * 1024, "{size} bytes");
    let url = format!("https://127.0.0.1:{port}/validate-managerconfig");
    let started = Instant::now();
    let calls = bodies.into_iter().map(|b| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .body(b)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let code = r.status().as_u16();
            let text = r.text().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((code, text))
        })
    });
    let results = futures::future::join_all(calls).await;
    let took = started.elapsed();
    let peak = op.hwm_kib();
    op.kill9();

    let mut denied = 0;
    let mut busy = 0;
    let mut largest_answer = 0;
    for r in results {
        let (code, text) = r.unwrap().unwrap();
        largest_answer = largest_answer.max(text.len());
        match code {
            200 => {
                assert!(
                    text.contains("\"allowed\":false"),
                    "{}",
                    &text[..text.len().min(500)]
                );
                assert!(
                    text.contains("more unknown fields"),
                    "{}",
                    &text[..text.len().min(2000)]
                );
                denied += 1;
            }
            503 => busy += 1,
            other => panic!("HTTP {other}: {}", &text[..text.len().min(500)]),
        }
    }
    eprintln!(
        "[memory] {PARALLEL} parallel reviews of {size} bytes ({FIELDS} unknown fields): \
         {denied} denied, {busy} answered 503 in {took:?}; largest answer {largest_answer} bytes; \
         VmHWM idle {} MiB, peak {} MiB (bound 256 MiB)",
        idle / 1024,
        peak / 1024
    );
    assert!(denied > 0, "some reviews answered");
    assert!(
        largest_answer < 16 * 1024,
        "answers stay short: {largest_answer}"
    );
    assert!(
        peak * 1024 < PEAK_BOUND_BYTES,
        "peak RSS {} MiB must stay under 256 MiB, half the chart's 512Mi limit",
        peak / 1024
    );
    let _ = support::kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}
