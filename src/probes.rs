//! The health probe server's routes: `/healthz` (liveness) and `/readyz` (readiness), with what
//! each one means (docs/design.md §5).
//!
//! * `/healthz` fails only when a manager believes it leads but has not renewed its Lease
//!   within `leaseDuration` (a wedged leader: restarting the pod is the cure). A replica that
//!   cannot reach the API server is *not* unhealthy: a restart would not help it.
//! * `/readyz` fails until the ManagerConfig cache synced and the admission webhook serves,
//!   naming what is missing, so a replica takes webhook traffic only once it can answer.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::sync::watch;

use crate::controller::Ctx;

/// What the probes look at.
#[derive(Clone)]
pub struct Probes {
    /// True once the controller's ManagerConfig cache synced.
    pub controller_ready: watch::Receiver<bool>,
    /// True once the webhook serves (or when it is disabled).
    pub webhook_ready: watch::Receiver<bool>,
    /// The controller, once it runs (its leaders' renewals decide liveness).
    pub ctx: Arc<tokio::sync::OnceCell<Arc<Ctx>>>,
}

impl Probes {
    /// The `/healthz` and `/readyz` routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(self)
    }
}

async fn healthz(State(p): State<Probes>) -> (StatusCode, String) {
    match p.ctx.get() {
        Some(ctx) if !ctx.leaders_healthy().await => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "a manager believes it leads but has not renewed its lease within leaseDuration\n"
                .into(),
        ),
        _ => (StatusCode::OK, "ok\n".into()),
    }
}

async fn readyz(State(p): State<Probes>) -> (StatusCode, String) {
    let mut missing = Vec::new();
    if !*p.controller_ready.borrow() {
        missing.push("ManagerConfig cache not synced");
    }
    if !*p.webhook_ready.borrow() {
        missing.push("admission webhook not serving");
    }
    if missing.is_empty() {
        (StatusCode::OK, "ok\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", missing.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(router: &Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readiness_names_what_is_missing_until_both_are_ready() {
        let (controller_tx, controller_ready) = watch::channel(false);
        let (webhook_tx, webhook_ready) = watch::channel(false);
        let router = Probes {
            controller_ready,
            webhook_ready,
            ctx: Arc::new(tokio::sync::OnceCell::new()),
        }
        .router();
        let (code, body) = get(&router, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "ManagerConfig cache not synced; admission webhook not serving\n"
        );
        controller_tx.send_replace(true);
        let (code, body) = get(&router, "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "admission webhook not serving\n");
        webhook_tx.send_replace(true);
        assert_eq!(
            get(&router, "/readyz").await,
            (StatusCode::OK, "ok\n".into())
        );
        // Liveness does not depend on readiness (nor on the controller before it runs).
        assert_eq!(
            get(&router, "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );
        assert_eq!(get(&router, "/nothing").await.0, StatusCode::NOT_FOUND);
    }
}
