use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use axum::routing::get;
use http::StatusCode;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::*;
use crate::metrics::auth::tests::Fake;

fn sans(cert: &ServingCert) -> (Vec<String>, Vec<IpAddr>) {
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, x509) = X509Certificate::from_der(der.as_ref()).unwrap();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &x509
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
    {
        match name {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()))
            }
            GeneralName::IPAddress(b) if b.len() == 16 => {
                ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()))
            }
            _ => {}
        }
    }
    (dns, ips)
}

fn self_signed(hostname: Option<&str>, lifetime: Duration) -> Result<ServingCert, CertError> {
    crate::tls::issue::self_signed(
        SELF_SIGNED_COMMON_NAME,
        &self_signed_subject(hostname),
        lifetime,
        SystemTime::now(),
    )
}

#[test]
fn self_signed_certificate_covers_localhost_and_the_hostname() {
    let cert = self_signed(Some("mo-7d9f-abc12"), SELF_SIGNED_LIFETIME).unwrap();
    let (dns, ips) = sans(&cert);
    assert_eq!(dns, vec!["localhost", "mo-7d9f-abc12"]);
    assert!(ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    assert!(ips.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert!(!cert.needs_rotation(SystemTime::now()));
    cert.certified_key().expect("usable by rustls");

    let (dns, _) = sans(&self_signed(None, SELF_SIGNED_LIFETIME).unwrap());
    assert_eq!(dns, vec!["localhost"]);
}

#[tokio::test]
async fn self_signed_certificate_is_regenerated_before_expiry() {
    let (mut source, short) = CertSource::self_signed(
        SELF_SIGNED_COMMON_NAME,
        self_signed_subject(None),
        Duration::from_secs(3600),
    )
    .unwrap();
    assert!(source.refresh(SystemTime::now()).await.unwrap().is_none());
    let later = SystemTime::now() + Duration::from_secs(3000);
    let fresh = source.refresh(later).await.unwrap().expect("re-generated");
    assert_ne!(fresh.serial, short.serial);
    assert!(fresh.not_after > short.not_after);
}

#[tokio::test]
async fn certificate_files_are_reloaded_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let write = |c: &ServingCert| {
        std::fs::write(dir.path().join("tls.crt"), &c.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &c.key_pem).unwrap();
    };
    let first = self_signed(None, SELF_SIGNED_LIFETIME).unwrap();
    write(&first);
    let (mut source, loaded) = cert_source(Some(&dir.path().to_path_buf())).unwrap();
    assert_eq!(loaded.serial, first.serial);
    assert!(
        source.refresh(SystemTime::now()).await.unwrap().is_none(),
        "unchanged"
    );

    let second = self_signed(None, SELF_SIGNED_LIFETIME).unwrap();
    write(&second);
    let reloaded = source
        .refresh(SystemTime::now())
        .await
        .unwrap()
        .expect("changed");
    assert_eq!(reloaded.serial, second.serial);

    // A broken write is reported and the last good files stay the reference.
    std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
    assert!(source.refresh(SystemTime::now()).await.is_err());
    write(&second);
    assert!(source.refresh(SystemTime::now()).await.unwrap().is_none());

    let missing = tempfile::tempdir().unwrap();
    assert!(matches!(
        cert_source(Some(&missing.path().to_path_buf())),
        Err(CertError::Read { .. })
    ));
}

#[tokio::test]
async fn secure_server_serves_tls_and_refuses_without_a_token() {
    crate::tls::install_default_provider();
    let fake = Arc::new(Fake::default());
    let shutdown = CancellationToken::new();
    let router = Router::new().route("/metrics", get(|| async { "manager_operator_up 1\n" }));
    let server = start(
        SecureMetricsConfig::new("127.0.0.1:0".parse().unwrap(), None),
        router,
        fake.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{}/metrics", server.local_addr.port());
    let refused = client.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let ok = client.get(&url).bearer_auth("good").send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.unwrap(), "manager_operator_up 1\n");
    // Plain HTTP is not served.
    let plain = format!("http://127.0.0.1:{}/metrics", server.local_addr.port());
    assert!(
        client
            .get(&plain)
            .bearer_auth("good")
            .send()
            .await
            .map(|r| r.status() != StatusCode::OK)
            .unwrap_or(true)
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("stops on shutdown")
        .unwrap();
}
