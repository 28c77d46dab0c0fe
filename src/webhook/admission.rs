//! The admission routes, served over TLS by [`crate::tls::server::serve_tls`].
//!
//! * `POST /validate-managerconfig` ([`super::VALIDATE_PATH`]) answers AdmissionReviews;
//!   anything else is 404 (405 for another method on that path).
//! * Limits: bodies over 3 MiB (the API server's own request limit) get 413; a client that does
//!   not finish its body within the read timeout (10 s) gets 408 (the TLS server cuts off slow
//!   handshakes and headers); at most `max_concurrent_requests` reviews run at once (others
//!   wait up to 2 s, then get 503).
//! * Memory: a body is read only once its request holds one of the `max_concurrent_requests`
//!   permits **and** its share of `max_body_bytes_in_flight` (the declared `Content-Length`, or
//!   `max_body_bytes` when undeclared), so bodies being read or decoded at once never exceed
//!   that budget, whatever the number of connections; with the TLS server's small HTTP/2
//!   windows a client cannot park megabytes in the server's buffers before its request is
//!   admitted. See docs/reliability.md for the measured peak RSS under 32 parallel 3 MiB
//!   reviews.
//! * Records `admission_requests_total{operation,allowed}` for answered reviews,
//!   `admission_request_errors_total{code}` for HTTP errors, and `admission_duration_seconds`
//!   for both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::Semaphore;

use super::VALIDATE_PATH;
use super::access::AccessReviewer;
use super::handler::{self, Outcome};
use crate::metrics::Metrics;
use crate::tls::ServerLimits;
use crate::validation::HookPolicy;

/// Budget permits are counted in KiB (a `Semaphore` holds fewer than 2^61 permits anyway).
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .max(1)
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
    pub claims: Option<Arc<dyn crate::claims::LeaseClaims>>,
    /// Spec limits of the operator (workers, timing floors), checked at admission too.
    pub tenant_limits: Option<crate::limits::TenantLimits>,
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

#[cfg(test)]
mod tests;
