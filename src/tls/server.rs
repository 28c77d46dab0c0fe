//! The TLS server behind the admission webhook and the secure metrics endpoint: axum on
//! hyper-util over tokio-rustls.
//!
//! * The certificate is looked up on every handshake from a [`CertStore`], so a rotated
//!   certificate is served by the next handshake without a restart.
//! * A client that does not finish its TLS handshake or its headers within the read timeout
//!   (10 s) is cut off; at most `max_connections` connections are open; HTTP/2 allows
//!   `max_concurrent_requests` streams per connection, with small flow-control windows (64 KiB
//!   per stream, 256 KiB per connection) so a client cannot park megabytes in the server's
//!   buffers. Body limits are the router's business ([`ServerLimits`] carries them).
//! * On cancellation it stops accepting, lets in-flight requests finish (bounded by the
//!   shutdown grace period) and returns.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The API server's maximum request body (3 MiB); larger admission bodies get 413.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Server limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest accepted request body (default 3 MiB).
    pub max_body_bytes: usize,
    /// Bound on the TLS handshake, on reading request headers and on reading a request body
    /// (default 10 s).
    pub read_timeout: Duration,
    /// Admission reviews processed at once (default 32).
    pub max_concurrent_requests: usize,
    /// Open connections (default 256).
    pub max_connections: usize,
    /// How long in-flight requests get on shutdown (default 10 s).
    pub shutdown_grace: Duration,
    /// Request bytes being read and decoded at once, over all requests (default 8 MiB: two
    /// maximal reviews and any number of small ones). Decoding costs a multiple of the body, so
    /// this bounds the webhook's memory.
    pub max_body_bytes_in_flight: usize,
}

/// Default of [`ServerLimits::max_body_bytes_in_flight`].
pub const MAX_BODY_BYTES_IN_FLIGHT: usize = 8 * 1024 * 1024;

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: MAX_BODY_BYTES,
            read_timeout: Duration::from_secs(10),
            max_concurrent_requests: 32,
            max_connections: 256,
            shutdown_grace: Duration::from_secs(10),
            max_body_bytes_in_flight: MAX_BODY_BYTES_IN_FLIGHT,
        }
    }
}

/// The serving certificate, swappable at runtime; rustls asks it on every handshake.
#[derive(Debug, Default)]
pub struct CertStore {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertStore {
    /// An empty store (handshakes fail until [`CertStore::set`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `key` from the next handshake on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        *guard = Some(key);
    }

    /// The certificate served now.
    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

/// A rustls server configuration that takes its certificate from `certs` on every handshake
/// (TLS 1.2 and 1.3, ALPN h2 and http/1.1).
pub fn tls_config(certs: Arc<CertStore>) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` over TLS on `listener` until `shutdown` is cancelled; then stops accepting,
/// gives open connections `limits.shutdown_grace` to finish, and returns. `name` labels the logs.
pub async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
    name: &'static str,
) {
    let local: Option<SocketAddr> = listener.local_addr().ok();
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(u32::try_from(limits.max_concurrent_requests).unwrap_or(u32::MAX))
        // Small windows: a client cannot park megabytes of unread bodies in our buffers.
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(256 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(limits.read_timeout);
    tracing::info!(address = ?local, server = name, "TLS server serving");
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, server = name, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(limits.read_timeout, acceptor.accept(stream)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, server = name, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, server = name, "TLS handshake timed out");
                    return;
                }
            };
            let service = TowerToHyperService::new(router);
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, server = name, error = %e, "connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    if tokio::time::timeout(limits.shutdown_grace, conn.as_mut()).await.is_err() {
                        tracing::debug!(%peer, server = name, "connection did not finish within the shutdown grace period");
                    }
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(
        limits.shutdown_grace + Duration::from_secs(1),
        tracker.wait(),
    )
    .await
    .is_err()
    {
        tracing::warn!(
            server = name,
            "connections still open after the shutdown grace period"
        );
    }
    tracing::info!(address = ?local, server = name, "TLS server stopped");
}
