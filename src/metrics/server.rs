//! Serving: the plain `/metrics` route and the plain HTTP server that serves it (and the
//! health probes); the secure variant is [`super::secure`].

use std::net::SocketAddr;

use axum::Router;
use tokio_util::sync::CancellationToken;

use super::Metrics;

/// A listener could not bind.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct BindError {
    /// The address.
    pub address: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

impl Metrics {
    /// The plain `/metrics` route (the secure server wraps the same router in its auth
    /// layer, [`super::auth`]).
    pub fn router(self) -> axum::Router {
        async fn handler(
            axum::extract::State(m): axum::extract::State<Metrics>,
        ) -> (axum::http::StatusCode, String) {
            match m.encode() {
                Ok(text) => (axum::http::StatusCode::OK, text),
                Err(e) => (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encoding metrics failed: {e}"),
                ),
            }
        }
        axum::Router::new()
            .route("/metrics", axum::routing::get(handler))
            .with_state(self)
    }
}

/// Serves `router` over plain HTTP on `addr` until `shutdown` is cancelled. Returns once the
/// listener is bound.
pub async fn serve_plain(
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BindError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BindError {
            address: addr,
            source,
        })?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %e, %addr, "HTTP server failed");
        }
    }))
}
