//! The HTTPS admission server: axum on hyper-util over tokio-rustls.
//!
//! * `POST /validate-managerconfig` ([`super::VALIDATE_PATH`]) answers AdmissionReviews;
//!   anything else is 404 (405 for another method on that path).
//! * Limits: bodies over 3 MiB (the API server's own request limit) get 413; a client that does
//!   not finish its TLS handshake, its headers or its body within the read timeout (10 s) is cut
//!   off (408 for a stalled body); at most `max_concurrent_requests` reviews run at once (others
//!   wait up to 2 s, then get 503); at most `max_connections` connections are open.
//! * Memory: a body is read only once its request holds one of the `max_concurrent_requests`
//!   permits **and** its share of `max_body_bytes_in_flight` (the declared `Content-Length`, or
//!   `max_body_bytes` when undeclared), so bodies being read or decoded at once never exceed
//!   that budget, whatever the number of connections; HTTP/2 flow-control windows are small
//!   (64 KiB per stream, 256 KiB per connection) so a client cannot park megabytes in the
//!   server's buffers before its request is admitted. See docs/reliability.md for the measured
//!   peak RSS under 32 parallel 3 MiB reviews.
//! * The certificate is looked up on every handshake from a [`CertStore`], so a rotated
//!   certificate is served by the next handshake without a restart.
//! * On cancellation it stops accepting, lets in-flight requests finish (bounded by the
//!   shutdown grace period) and returns.
//! * Records `admission_requests_total{operation,allowed}` and `admission_duration_seconds`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
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

use super::VALIDATE_PATH;
use super::access::AccessReviewer;
use super::handler::{self, Outcome};
use crate::metrics::Metrics;
use crate::validation::HookPolicy;

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

/// Budget permits are counted in KiB (a `Semaphore` holds fewer than 2^61 permits anyway).
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .max(1)
}

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

/// Everything a request needs.
#[derive(Clone)]
pub struct AdmissionState {
    /// The hook policy used by validation.
    pub policy: Arc<HookPolicy>,
    /// Decides cross-namespace Lease access.
    pub reviewer: Arc<dyn AccessReviewer>,
    /// Metrics to record into, if any.
    pub metrics: Option<Metrics>,
    /// Limits.
    pub limits: ServerLimits,
    /// Stored configs, to refuse a second config on a used Lease (None: not checked).
    pub claims: Option<Arc<dyn handler::LeaseClaims>>,
    /// Spec limits of the operator (workers, timing floors), checked at admission too.
    pub tenant_limits: Option<crate::controller::limits::TenantLimits>,
    slots: Arc<Semaphore>,
    /// [`ServerLimits::max_body_bytes_in_flight`], in KiB.
    bytes: Arc<Semaphore>,
}

impl AdmissionState {
    /// State for a server with these parts.
    pub fn new(
        policy: HookPolicy,
        reviewer: Arc<dyn AccessReviewer>,
        metrics: Option<Metrics>,
        limits: ServerLimits,
    ) -> Self {
        Self {
            policy: Arc::new(policy),
            reviewer,
            metrics,
            slots: Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1))),
            bytes: Arc::new(Semaphore::new(kib(limits
                .max_body_bytes_in_flight
                .max(limits.max_body_bytes))
                as usize)),
            limits,
            claims: None,
            tenant_limits: None,
        }
    }
}

fn plain(status: StatusCode, message: String) -> Response {
    let o = Outcome::error(status, message);
    into_response(o)
}

fn into_response(o: Outcome) -> Response {
    (o.status, [(header::CONTENT_TYPE, o.content_type)], o.body).into_response()
}

/// Counts a request answered with an HTTP error instead of a review.
fn record_error(state: &AdmissionState, code: StatusCode, started: Instant) {
    if let Some(m) = &state.metrics {
        m.admission_request_errors_total
            .with_label_values(&[code.as_str()])
            .inc();
        m.admission_duration_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

fn record(state: &AdmissionState, operation: &str, allowed: bool, started: Instant) {
    if let Some(m) = &state.metrics {
        m.admission_requests_total
            .with_label_values(&[operation, if allowed { "true" } else { "false" }])
            .inc();
        m.admission_duration_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

async fn validate(State(state): State<AdmissionState>, request: Request) -> Response {
    let started = Instant::now();
    let limits = state.limits;
    let too_large = || {
        format!(
            "the request body is larger than {} bytes (the API server's limit)",
            limits.max_body_bytes
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        record_error(&state, StatusCode::PAYLOAD_TOO_LARGE, started);
        return plain(StatusCode::PAYLOAD_TOO_LARGE, too_large());
    }
    // Admission first, then the body: a request that is not admitted costs no body memory.
    let wait = Duration::from_secs(2);
    let busy = |state: &AdmissionState| {
        record_error(state, StatusCode::SERVICE_UNAVAILABLE, started);
        plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many admission reviews in flight; retry".into(),
        )
    };
    let _permit = match tokio::time::timeout(wait, state.slots.acquire()).await {
        Ok(Ok(p)) => p,
        _ => return busy(&state),
    };
    let share = kib(declared.map_or(limits.max_body_bytes, |n| {
        usize::try_from(n).unwrap_or(limits.max_body_bytes)
    }));
    let _bytes =
        match tokio::time::timeout(limits.read_timeout, state.bytes.acquire_many(share)).await {
            Ok(Ok(p)) => p,
            _ => return busy(&state),
        };
    let body = Limited::new(request.into_body(), limits.max_body_bytes);
    let bytes = match tokio::time::timeout(limits.read_timeout, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                record_error(&state, StatusCode::PAYLOAD_TOO_LARGE, started);
                return plain(StatusCode::PAYLOAD_TOO_LARGE, too_large());
            }
            record_error(&state, StatusCode::BAD_REQUEST, started);
            return plain(
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            );
        }
        Err(_) => {
            record_error(&state, StatusCode::REQUEST_TIMEOUT, started);
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body was not received within {:?}",
                    limits.read_timeout
                ),
            );
        }
    };
    let outcome = handler::review_with_limits(
        &bytes,
        &state.policy,
        state.reviewer.as_ref(),
        state.claims.as_deref(),
        state.tenant_limits.as_ref(),
    )
    .await;
    drop(bytes);
    if outcome.status == StatusCode::OK {
        record(&state, outcome.operation, outcome.allowed, started);
    } else {
        record_error(&state, outcome.status, started);
    }
    if outcome.status != StatusCode::OK {
        tracing::info!(status = %outcome.status, detail = %outcome.body_text().trim_end(), "bad admission request");
    }
    into_response(outcome)
}

async fn not_found(request: Request) -> Response {
    plain(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint {}: admission reviews go to POST {VALIDATE_PATH}",
            request.uri().path()
        ),
    )
}

/// The router: `POST /validate-managerconfig`.
pub fn router(state: AdmissionState) -> Router {
    Router::new()
        .route(VALIDATE_PATH, post(validate))
        .fallback(not_found)
        .with_state(state)
}

/// A rustls server configuration that takes its certificate from `certs` on every handshake
/// (TLS 1.2 and 1.3, ALPN h2 and http/1.1).
pub fn tls_config(certs: Arc<CertStore>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` over TLS on `listener` until `shutdown` is cancelled; then stops accepting,
/// gives open connections `limits.shutdown_grace` to finish, and returns.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    serve_tls(listener, tls, router, limits, shutdown, "admission webhook").await;
}

/// [`serve`] for any router (the secure metrics server reuses it); `name` labels the logs.
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

#[cfg(test)]
mod tests;
