use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::SystemTime;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::UserInfo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::tls::rotation::{Evaluation, evaluate};
use crate::tls::server::{CertStore, MAX_BODY_BYTES, ServerLimits, serve_tls, tls_config};
use crate::tls::{CertLifetimes, CertSubject, ServingCert};
use crate::webhook::access::AccessReviewError;

struct AllowAll;

impl AccessReviewer for AllowAll {
    fn may_manage_leases<'a>(
        &'a self,
        _user: &'a UserInfo,
        _namespace: &'a str,
    ) -> BoxFuture<'a, Result<bool, AccessReviewError>> {
        Box::pin(async { Ok(true) })
    }
}

fn new_cert() -> ServingCert {
    let subject = CertSubject {
        dns_names: vec!["localhost".into()],
        ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    };
    match evaluate(
        &BTreeMap::new(),
        &subject,
        CertLifetimes::default(),
        SystemTime::now(),
    ) {
        Ok(Evaluation::Write { cert, .. }) => cert,
        other => panic!("expected a fresh certificate, got {other:?}"),
    }
}

struct TestServer {
    addr: SocketAddr,
    store: Arc<CertStore>,
    ca: String,
    metrics: Metrics,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(limits: ServerLimits) -> TestServer {
    let cert = new_cert();
    let store = Arc::new(CertStore::new());
    store.set(cert.certified_key().expect("usable"));
    let metrics = Metrics::new().expect("metrics");
    let state = AdmissionState::new(
        HookPolicy::default(),
        Arc::new(AllowAll),
        Some(metrics.clone()),
        limits,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_tls(
        listener,
        tls_config(store.clone()).expect("tls"),
        router(state),
        limits,
        shutdown.clone(),
        "admission webhook",
    ));
    TestServer {
        addr,
        store,
        ca: cert.ca_bundle_pem.expect("bundle"),
        metrics,
        shutdown,
        task,
    }
}

fn limits() -> ServerLimits {
    ServerLimits {
        read_timeout: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(2),
        ..ServerLimits::default()
    }
}

async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
        .await
}

/// Reads until EOF (or `limit`), returning what arrived.
async fn read_all<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) -> (String, bool) {
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(limit, s.read_to_end(&mut buf))
        .await
        .is_ok();
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

async fn request(addr: SocketAddr, ca: &str, raw: &[u8]) -> String {
    let mut tls = connect(addr, ca).await.expect("tls");
    tls.write_all(raw).await.expect("write");
    let (text, closed) = read_all(&mut tls, Duration::from_secs(10)).await;
    assert!(closed, "server closed the connection: {text}");
    text
}

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn review_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"group": "manager-operator.io", "version": "v1alpha1", "kind": "ManagerConfig"},
            "resource": {"group": "manager-operator.io", "version": "v1alpha1", "resource": "managerconfigs"},
            "name": "a", "namespace": "ns", "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "manager-operator.io/v1alpha1", "kind": "ManagerConfig",
                       "metadata": {"name": "a", "namespace": "ns"},
                       "spec": {"workers": [{"name": "w", "watch": {"apiVersion": "v1", "kind": "ConfigMap"},
                                             "hook": {"url": "http://169.254.169.254/"}}]}}
        }
    }))
    .expect("json")
}

async fn stop(s: TestServer) {
    s.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), s.task)
        .await
        .expect("server stops promptly")
        .expect("server task ok");
}

#[tokio::test]
async fn answers_reviews_and_records_metrics() {
    let s = start(limits()).await;
    let text = request(
        s.addr,
        &s.ca,
        &post(crate::webhook::VALIDATE_PATH, &review_body()),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("application/json"), "{text}");
    assert!(text.contains("\"allowed\":false"), "{text}");
    assert!(text.contains("spec.workers[0].hook.url"), "{text}");

    let text = request(
        s.addr,
        &s.ca,
        &post(crate::webhook::VALIDATE_PATH, b"{nope"),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("not valid JSON"), "{text}");

    let text = request(s.addr, &s.ca, &post("/other", b"{}")).await;
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert!(text.contains("POST /validate-managerconfig"), "{text}");
    let text = request(
        s.addr,
        &s.ca,
        b"GET /validate-managerconfig HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");

    let m = s.metrics.encode().expect("encode");
    assert!(
        m.contains(
            "manager_operator_admission_requests_total{allowed=\"false\",operation=\"CREATE\"} 1"
        ),
        "{m}"
    );
    assert!(
        m.contains("manager_operator_admission_request_errors_total{code=\"400\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("manager_operator_admission_duration_seconds_count 2"),
        "{m}"
    );
    stop(s).await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let s = start(limits()).await;
    // Declared too large.
    let head = format!(
        "POST /validate-managerconfig HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{}}",
        MAX_BODY_BYTES + 1
    );
    let text = request(s.addr, &s.ca, head.as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("larger than 3145728 bytes"), "{text}");

    // Streamed (chunked, no length) past the limit.
    let mut tls = connect(s.addr, &s.ca).await.expect("tls");
    tls.write_all(
        b"POST /validate-managerconfig HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent <= MAX_BODY_BYTES {
        let head = format!("{:x}\r\n", chunk.len());
        if tls.write_all(head.as_bytes()).await.is_err()
            || tls.write_all(&chunk).await.is_err()
            || tls.write_all(b"\r\n").await.is_err()
        {
            break; // the server may stop reading once it has answered
        }
        sent += chunk.len();
    }
    let _ = tls.write_all(b"0\r\n\r\n").await;
    let (text, _) = read_all(&mut tls, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    stop(s).await;
}

#[tokio::test]
async fn stalled_clients_are_cut_off() {
    let s = start(limits()).await;
    let started = Instant::now();

    // A TCP connection that never starts TLS.
    let mut raw = TcpStream::connect(s.addr).await.expect("tcp");
    let (_, closed) = read_all(&mut raw, Duration::from_secs(5)).await;
    assert!(closed, "silent TCP client cut off");

    // TLS, then half a request line.
    let mut tls = connect(s.addr, &s.ca).await.expect("tls");
    tls.write_all(b"POST /validate-managerconfig HTTP/1.1\r\nHost:")
        .await
        .expect("write");
    let (_, closed) = read_all(&mut tls, Duration::from_secs(5)).await;
    assert!(closed, "stalled headers cut off");

    // Headers, then a body that never completes.
    let mut tls = connect(s.addr, &s.ca).await.expect("tls");
    tls.write_all(
        b"POST /validate-managerconfig HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":",
    )
    .await
    .expect("write");
    let (text, closed) = read_all(&mut tls, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(closed || !text.is_empty());

    assert!(
        started.elapsed() < Duration::from_secs(12),
        "each stall cut after about 1 s, took {:?}",
        started.elapsed()
    );
    // The server still works.
    let text = request(
        s.addr,
        &s.ca,
        &post(crate::webhook::VALIDATE_PATH, &review_body()),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    stop(s).await;
}

async fn served_certificate(addr: SocketAddr, ca: &str) -> CertificateDer<'static> {
    let tls = connect(addr, ca).await.expect("tls");
    tls.get_ref().1.peer_certificates().expect("peer certs")[0].clone()
}

#[tokio::test]
async fn certificates_swap_without_restart() {
    let s = start(limits()).await;
    // Keep a connection open across the swap.
    let mut kept = connect(s.addr, &s.ca).await.expect("tls");
    let before = served_certificate(s.addr, &s.ca).await;

    let next = new_cert();
    s.store.set(next.certified_key().expect("usable"));
    let next_ca = next.ca_bundle_pem.clone().expect("bundle");
    let after = served_certificate(s.addr, &next_ca).await;
    assert_ne!(before, after, "new handshakes see the new certificate");
    assert!(
        connect(s.addr, &s.ca).await.is_err(),
        "the old CA no longer verifies"
    );

    // The connection opened before the swap still works.
    kept.write_all(&post(crate::webhook::VALIDATE_PATH, &review_body()))
        .await
        .expect("write");
    let (text, _) = read_all(&mut kept, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    stop(s).await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let s = start(limits()).await;
    let mut tls = connect(s.addr, &s.ca).await.expect("tls");
    // Send the headers; the body follows after shutdown began.
    let body = review_body();
    let head = format!(
        "POST /validate-managerconfig HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.expect("write");
    tls.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(100)).await; // let the server start the request
    s.shutdown.cancel();
    tls.write_all(&body).await.expect("write body");
    let (text, _) = read_all(&mut tls, Duration::from_secs(5)).await;
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "in-flight request answered: {text}"
    );
    tokio::time::timeout(Duration::from_secs(10), s.task)
        .await
        .expect("server stops")
        .expect("task ok");
    assert!(
        TcpStream::connect(s.addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn http2_works() {
    let s = start(limits()).await;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(s.ca.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(s.addr).await.expect("tcp");
    let tls = connector
        .connect(ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()), tcp)
        .await
        .expect("tls");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    check_h2_preface(tls).await;
    stop(s).await;
}

/// The server speaks HTTP/2 after ALPN h2: it answers the client preface with a SETTINGS frame.
async fn check_h2_preface<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let mut frame = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut frame))
        .await
        .expect("in time")
        .expect("frame header");
    assert_eq!(frame[3], 0x4, "a SETTINGS frame");
}
