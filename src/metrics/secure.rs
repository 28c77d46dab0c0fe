//! The secure metrics server (`--metrics-secure`): `/metrics` over TLS behind the
//! [`super::auth`] layer, on the same TLS server as the webhook ([`crate::tls::server`]: the
//! certificate is looked up per handshake, and the TLS handshake and request headers must
//! arrive within 10 s).
//!
//! The certificate comes from `--metrics-cert-dir` (`tls.crt`/`tls.key`, re-read when they
//! change) or, without a directory, is self-signed at startup for `localhost`, `127.0.0.1`,
//! `::1` and the pod's hostname and re-generated before it expires — both through
//! [`crate::tls::reload`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::auth::{MetricsAuth, MetricsReviewer, protect};
use crate::authz::cache::CacheConfig;
use crate::tls::reload::{self, CertSource, ServedCert};
use crate::tls::{CertError, CertSubject, FileCertSource, ServerLimits, ServingCert, server};

/// Lifetime of the generated self-signed certificate (re-generated when a third is left).
pub const SELF_SIGNED_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// Common name of the generated self-signed certificate.
pub const SELF_SIGNED_COMMON_NAME: &str = "manager-operator-metrics";
/// How often `--metrics-cert-dir` (or the self-signed certificate's expiry) is checked.
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// This machine's (the pod's) hostname, if it has a usable one.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 253
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
}

/// The secure metrics server's settings.
#[derive(Clone, Debug)]
pub struct SecureMetricsConfig {
    /// Where to listen.
    pub bind_address: SocketAddr,
    /// `tls.crt`/`tls.key` directory; `None` for a self-signed certificate.
    pub cert_dir: Option<PathBuf>,
    /// How often the certificate is re-checked.
    pub check_interval: Duration,
    /// Review caches.
    pub cache: CacheConfig,
    /// Connection limits (the request read timeout bounds handshakes and headers).
    pub limits: ServerLimits,
}

impl SecureMetricsConfig {
    /// Defaults for `bind_address` and `cert_dir`.
    pub fn new(bind_address: SocketAddr, cert_dir: Option<PathBuf>) -> Self {
        Self {
            bind_address,
            cert_dir,
            check_interval: CERT_CHECK_INTERVAL,
            cache: CacheConfig::default(),
            limits: ServerLimits {
                max_body_bytes: 64 * 1024,
                read_timeout: Duration::from_secs(10),
                max_concurrent_requests: 16,
                max_connections: 64,
                shutdown_grace: Duration::from_secs(5),
                max_body_bytes_in_flight: 1024 * 1024,
            },
        }
    }
}

/// Why the secure metrics server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SecureMetricsError {
    /// The certificate could not be loaded or generated.
    #[error("metrics TLS certificate: {0}")]
    Cert(#[from] CertError),
    /// rustls refused the configuration.
    #[error("cannot configure TLS for the metrics server: {0}")]
    Tls(#[from] rustls::Error),
    /// The listener could not bind.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The certificate source for `cert_dir`: its files, or without a directory a certificate
/// self-signed for `localhost`, `127.0.0.1`, `::1` and the pod's hostname.
pub fn cert_source(cert_dir: Option<&PathBuf>) -> Result<(CertSource, ServingCert), CertError> {
    match cert_dir {
        Some(dir) => CertSource::files(FileCertSource::new(dir)),
        None => CertSource::self_signed(
            SELF_SIGNED_COMMON_NAME,
            self_signed_subject(hostname().as_deref()),
            SELF_SIGNED_LIFETIME,
        ),
    }
}

/// The names the self-signed certificate covers: `localhost`, `127.0.0.1`, `::1` and
/// `hostname` (a DNS name or an IP address).
pub fn self_signed_subject(hostname: Option<&str>) -> CertSubject {
    let mut subject = CertSubject {
        dns_names: vec!["localhost".to_string()],
        ips: vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
    };
    if let Some(host) = hostname.filter(|h| *h != "localhost") {
        match host.parse::<IpAddr>() {
            Ok(ip) => subject.ips.push(ip),
            Err(_) => subject.dns_names.push(host.to_string()),
        }
    }
    subject
}

/// A started secure metrics server.
pub struct SecureMetricsServer {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// Ends after `shutdown` is cancelled and open connections finished.
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves `router` over TLS behind [`super::auth::require`] (reviews by `reviewer`) until `shutdown` is
/// cancelled. Returns once the listener is bound.
pub async fn start(
    config: SecureMetricsConfig,
    router: Router,
    reviewer: Arc<dyn MetricsReviewer>,
    shutdown: CancellationToken,
) -> Result<SecureMetricsServer, SecureMetricsError> {
    let (source, cert) = cert_source(config.cert_dir.as_ref())?;
    let served = ServedCert::new(cert.clone())?;
    let tls = server::tls_config(served.store())?;
    let bind = |source| SecureMetricsError::Bind {
        address: config.bind_address,
        source,
    };
    let listener = TcpListener::bind(config.bind_address).await.map_err(bind)?;
    let local_addr = listener.local_addr().map_err(bind)?;
    let router = protect(router, MetricsAuth::new(reviewer, config.cache));
    tracing::info!(
        address = %local_addr,
        certificate = %config.cert_dir.as_ref().map_or_else(|| "self-signed".to_string(), |d| d.display().to_string()),
        serial = %cert.serial,
        "metrics served over HTTPS with TokenReview and SubjectAccessReview authentication"
    );
    let task = tokio::spawn(async move {
        let stop_reload = shutdown.child_token();
        let reload = tokio::spawn(reload::run(
            "metrics",
            source,
            served,
            config.check_interval,
            (),
            stop_reload.clone(),
        ));
        server::serve_tls(listener, tls, router, config.limits, shutdown, "metrics").await;
        stop_reload.cancel();
        let _ = reload.await;
    });
    Ok(SecureMetricsServer { local_addr, task })
}

#[cfg(test)]
mod tests;
