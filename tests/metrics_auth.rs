//! `manager-operator run --metrics-secure` on the real control plane (docs/design.md §6):
//! the operator binary serves `/metrics` over TLS and lets a scrape through only when the API
//! server authenticates its bearer token (TokenReview) and authorizes `get` on the non-resource
//! URL `/metrics` for it (SubjectAccessReview).
//!
//! * no token, or a token the API server does not know → 401;
//! * a ServiceAccount token without RBAC → 403;
//! * the same token once a ClusterRole with `nonResourceURLs: ["/metrics"], verbs: ["get"]` is
//!   bound to the ServiceAccount → 200 with the operator's metrics (after the 10 s deny cache).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{Operator, TIMEOUT, kubectl, kubectl_ok, wait_for};

/// Cluster-scoped RBAC objects of the test, deleted on drop.
struct ClusterRbac(String);

impl Drop for ClusterRbac {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "clusterrolebinding",
            &self.0,
            "--ignore-not-found",
        ]);
        let _ = kubectl(&["delete", "clusterrole", &self.0, "--ignore-not-found"]);
    }
}

/// `manager-operator run --metrics-secure` for `namespace`, metrics on `metrics`; not waited
/// for (the test waits for the metrics server itself).
fn start_operator(namespace: &str, metrics: SocketAddr) -> Operator {
    support::operator()
        .identity(&format!("metrics-auth-test-{namespace}"))
        .namespace(namespace)
        .no_hook_allow_loopback()
        .metrics_addr(metrics)
        .arg("--metrics-secure")
        .env("RUST_LOG", "info,manager_operator::metrics::auth=debug")
        .spawn()
}

async fn scrape(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let mut request = client.get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

async fn expect_status(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    want: u16,
    timeout: Duration,
) -> String {
    wait_for(&format!("HTTP {want} from {url}"), timeout, || async {
        match scrape(client, url, token).await? {
            (s, body) if s == want => Ok(body),
            (s, body) => Err(format!("HTTP {s}: {}", body.trim())),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn metrics_need_an_authenticated_and_authorized_token() {
    manager_operator::tls::install_default_provider();
    support::ensure_crd();
    let admin = support::admin_client().await;
    let ns = support::fresh_namespace(&admin, "metrics-auth").await;

    let metrics = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let mut operator = start_operator(&ns, metrics);
    let url = format!("https://{metrics}/metrics");
    // The certificate is self-signed (generated at startup): trust it in this test only.
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("HTTP client");

    // Unauthenticated: refused as soon as the server is up.
    let started = Instant::now();
    let body = wait_for("the metrics server to answer", TIMEOUT, || {
        let exited = operator.try_exit();
        let client = &client;
        let url = &url;
        async move {
            if let Some(status) = exited {
                panic!("the operator exited early ({status})");
            }
            scrape(client, url, None).await
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_text()));
    assert_eq!(body.0, 401, "no token: {}", body.1);
    assert!(!body.1.contains("manager_operator_"), "{}", body.1);
    eprintln!("metrics server up after {:?}", started.elapsed());

    // Plain HTTP gets nothing.
    let plain = format!("http://{metrics}/metrics");
    assert!(
        !matches!(scrape(&client, &plain, None).await, Ok((200, _))),
        "metrics must not be served over plain HTTP"
    );

    // A token the API server does not know.
    let (status, body) = scrape(&client, &url, Some("not-a-real-token"))
        .await
        .expect("scrape");
    assert_eq!(status, 401, "forged token: {body}");

    // A ServiceAccount without RBAC: authenticated, not authorized.
    kubectl_ok(&["create", "serviceaccount", "scraper", "-n", &ns]);
    let token = kubectl_ok(&["create", "token", "scraper", "-n", &ns, "--duration=10m"]);
    let token = token.trim().to_string();
    assert!(!token.is_empty());
    let body = expect_status(&client, &url, Some(&token), 403, TIMEOUT).await;
    assert!(
        body.contains(&format!("system:serviceaccount:{ns}:scraper")),
        "the 403 names the user: {body}"
    );

    // Grant get on /metrics.
    let rbac = ClusterRbac(format!("{ns}-metrics-reader"));
    kubectl_ok(&[
        "create",
        "clusterrole",
        &rbac.0,
        "--verb=get",
        "--non-resource-url=/metrics",
    ]);
    kubectl_ok(&[
        "create",
        "clusterrolebinding",
        &rbac.0,
        &format!("--clusterrole={}", rbac.0),
        &format!("--serviceaccount={ns}:scraper"),
    ]);
    let granted = Instant::now();
    let body = expect_status(&client, &url, Some(&token), 200, TIMEOUT).await;
    eprintln!(
        "authorized after {:?} (the deny answer is cached for up to 10 s)",
        granted.elapsed()
    );
    assert!(body.contains("manager_operator_"), "metrics body: {body}");

    // Still refused without a token.
    let (status, _) = scrape(&client, &url, None).await.expect("scrape");
    assert_eq!(status, 401);

    drop(rbac);
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}
