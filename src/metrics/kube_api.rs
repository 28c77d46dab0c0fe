//! Kubernetes API client metrics: every request the operator makes (its own client, the Lease
//! client and the workers' impersonating clients) counted by method and answer code, and timed
//! to the answer's headers — what `ApiUnavailable` and Lease renew failures are diagnosed with
//! (controller-runtime's `rest_client_requests_total` / `rest_client_request_duration_seconds`).
//!
//! Labels are bounded: `method` is the HTTP method (a watch is a `GET` with `watch=true` and is
//! labelled `WATCH`), `code` the status code (`100`..`599`) or `error` when no answer came. No
//! URL, resource or namespace label: those are per object.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use prometheus::{HistogramVec, IntCounterVec};
use tower::{Layer, Service};

/// The client builder for `config`, with the metrics layer when `metrics` is given.
pub fn client(
    config: kube::Config,
    metrics: Option<&crate::metrics::Metrics>,
) -> Result<kube::Client, kube::Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(match metrics {
        Some(m) => builder
            .with_layer(&ApiMetricsLayer {
                requests: m.kube_requests_total.clone(),
                duration: m.kube_request_duration_seconds.clone(),
            })
            .build(),
        None => builder.build(),
    })
}

/// Counts and times requests (see the module docs).
#[derive(Clone)]
pub struct ApiMetricsLayer {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl<S> Layer<S> for ApiMetricsLayer {
    type Service = ApiMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiMetrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`ApiMetricsLayer`].
#[derive(Clone)]
pub struct ApiMetrics<S> {
    inner: S,
    layer: ApiMetricsLayer,
}

/// The `method` label of a request.
pub fn method_label<B>(req: &Request<B>) -> &'static str {
    let watch = req.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1" || kv == "watch")
    });
    match req.method().as_str() {
        "GET" if watch => "WATCH",
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "OTHER",
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ApiMetrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let method = method_label(&req);
        let layer = self.layer.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let code = match &result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            layer
                .requests
                .with_label_values(&[method, code.as_str()])
                .inc();
            layer
                .duration
                .with_label_values(&[method])
                .observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    #[test]
    fn methods_are_a_fixed_set() {
        assert_eq!(
            method_label(&req("GET", "/api/v1/namespaces/a/configmaps")),
            "GET"
        );
        assert_eq!(
            method_label(&req(
                "GET",
                "/api/v1/configmaps?allowWatchBookmarks=true&watch=true&timeoutSeconds=290"
            )),
            "WATCH"
        );
        assert_eq!(method_label(&req("PATCH", "/apis/x")), "PATCH");
        assert_eq!(method_label(&req("HEAD", "/")), "OTHER");
    }

    #[tokio::test]
    async fn requests_are_counted_by_method_and_code() {
        let m = crate::metrics::Metrics::new().unwrap();
        let layer = ApiMetricsLayer {
            requests: m.kube_requests_total.clone(),
            duration: m.kube_request_duration_seconds.clone(),
        };
        let mut svc = layer.layer(tower::service_fn(|r: Request<()>| async move {
            let code = if r.method() == "DELETE" { 404 } else { 200 };
            Ok::<_, std::convert::Infallible>(Response::builder().status(code).body(()).unwrap())
        }));
        svc.call(req("GET", "/api/v1/pods")).await.unwrap();
        svc.call(req("DELETE", "/api/v1/pods/x")).await.unwrap();
        let text = m.encode().unwrap();
        assert!(
            text.contains("manager_operator_kube_requests_total{code=\"200\",method=\"GET\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("manager_operator_kube_requests_total{code=\"404\",method=\"DELETE\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("manager_operator_kube_request_duration_seconds_count{method=\"GET\"} 1")
        );
    }
}
