use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::routing::get;
use http_body_util::BodyExt;
use tower::ServiceExt;

use std::collections::BTreeMap;
use std::sync::Mutex;

use axum::http::Request;
use k8s_openapi::api::authentication::v1::UserInfo;

use super::*;

/// Tokens: `good` (alice, may get /metrics), `nobody` (bob, may not), `broken` (the review
/// fails); anything else is not authenticated. `fail_authz` makes every SubjectAccessReview fail.
#[derive(Default)]
pub(crate) struct Fake {
    authn_calls: AtomicUsize,
    authz_calls: AtomicUsize,
    fail_authz: bool,
    seen: Mutex<Vec<(String, String, String)>>,
}

fn user(name: &str) -> UserInfo {
    UserInfo {
        username: Some(name.into()),
        groups: Some(vec!["system:authenticated".into()]),
        uid: Some(format!("uid-{name}")),
        extra: None,
    }
}

impl MetricsReviewer for Fake {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Authentication, ReviewError>> {
        self.authn_calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match token {
                "good" => Ok(Authentication::Authenticated(user("alice"))),
                "nobody" => Ok(Authentication::Authenticated(user("bob"))),
                "broken" => Err(ReviewError::Timeout {
                    kind: "TokenReview",
                    after: Duration::from_secs(5),
                }),
                _ => Ok(Authentication::Unauthenticated(
                    "invalid bearer token".into(),
                )),
            }
        })
    }

    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        path: &'a str,
        verb: &'a str,
    ) -> BoxFuture<'a, Result<Authorization, ReviewError>> {
        self.authz_calls.fetch_add(1, Ordering::SeqCst);
        let name = user.username.clone().unwrap_or_default();
        self.seen
            .lock()
            .unwrap()
            .push((name.clone(), path.into(), verb.into()));
        Box::pin(async move {
            if self.fail_authz {
                return Err(ReviewError::Evaluation("webhook authorizer down".into()));
            }
            if name == "alice" && path == "/metrics" && verb == "get" {
                Ok(Authorization::Allowed)
            } else {
                Ok(Authorization::Denied("no RBAC rule".into()))
            }
        })
    }
}

impl Fake {
    fn calls(&self) -> (usize, usize) {
        (
            self.authn_calls.load(Ordering::SeqCst),
            self.authz_calls.load(Ordering::SeqCst),
        )
    }
}

fn app(fake: Arc<Fake>, cache: CacheConfig) -> Router {
    let router = Router::new().route("/metrics", get(|| async { "manager_operator_up 1\n" }));
    protect(router, MetricsAuth::new(fake, cache))
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(a) = auth {
        request = request.header(header::AUTHORIZATION, a);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn no_token_is_401_without_a_review() {
    let fake = Arc::new(Fake::default());
    let app = app(fake.clone(), CacheConfig::default());
    for auth in [
        None,
        Some("Basic YWxpY2U6c2VjcmV0"),
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer two words"),
        Some("good"),
    ] {
        let (status, headers, body) = call(&app, "GET", "/metrics", auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
        assert!(
            headers
                .get(header::WWW_AUTHENTICATE)
                .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
            "{auth:?}"
        );
        assert!(!body.contains("manager_operator_"), "{auth:?}");
    }
    let long = format!("Bearer {}", "x".repeat(MAX_TOKEN_BYTES + 1));
    let (status, _, _) = call(&app, "GET", "/metrics", Some(&long)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(fake.calls(), (0, 0));
}

#[tokio::test]
async fn unauthenticated_token_is_401() {
    let fake = Arc::new(Fake::default());
    let app = app(fake.clone(), CacheConfig::default());
    let (status, _, body) = call(&app, "GET", "/metrics", Some("Bearer forged")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.contains("manager_operator_"));
    assert_eq!(
        fake.calls(),
        (1, 0),
        "no SubjectAccessReview for an unknown token"
    );
}

#[tokio::test]
async fn authenticated_but_not_authorized_is_403() {
    let fake = Arc::new(Fake::default());
    let app = app(fake.clone(), CacheConfig::default());
    let (status, _, body) = call(&app, "GET", "/metrics", Some("Bearer nobody")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("bob"), "{body}");
    assert!(!body.contains("manager_operator_"));
    assert_eq!(
        *fake.seen.lock().unwrap(),
        vec![("bob".to_string(), "/metrics".to_string(), "get".to_string())]
    );
}

#[tokio::test]
async fn authorized_token_gets_the_metrics() {
    let fake = Arc::new(Fake::default());
    let app = app(fake.clone(), CacheConfig::default());
    // The scheme is case-insensitive.
    for auth in ["Bearer good", "bearer good", "BEARER  good "] {
        let (status, _, body) = call(&app, "GET", "/metrics", Some(auth)).await;
        assert_eq!(status, StatusCode::OK, "{auth}: {body}");
        assert_eq!(body, "manager_operator_up 1\n");
    }
}

#[tokio::test]
async fn the_request_path_and_method_are_reviewed() {
    let fake = Arc::new(Fake::default());
    let app = app(fake.clone(), CacheConfig::default());
    let (status, _, _) = call(&app, "POST", "/metrics", Some("Bearer good")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "alice may get, not post");
    let (status, _, _) = call(&app, "GET", "/metrics/../other", Some("Bearer good")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let seen: BTreeSet<_> = fake.seen.lock().unwrap().iter().cloned().collect();
    assert!(seen.contains(&("alice".into(), "/metrics".into(), "post".into())));
    assert!(seen.contains(&("alice".into(), "/metrics/../other".into(), "get".into())));
}

#[tokio::test]
async fn review_failures_are_503_and_not_cached() {
    let fake = Arc::new(Fake::default());
    let app = app(fake.clone(), CacheConfig::default());
    for _ in 0..2 {
        let (status, _, body) = call(&app, "GET", "/metrics", Some("Bearer broken")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("TokenReview"), "{body}");
    }
    assert_eq!(fake.calls(), (2, 0));

    let fake = Arc::new(Fake {
        fail_authz: true,
        ..Fake::default()
    });
    let app = self::app(fake.clone(), CacheConfig::default());
    for _ in 0..2 {
        let (status, _, body) = call(&app, "GET", "/metrics", Some("Bearer good")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("alice"), "{body}");
    }
    assert_eq!(
        fake.calls(),
        (1, 2),
        "the authentication is cached, the failed authorization not"
    );
}

#[tokio::test(start_paused = true)]
async fn answers_are_cached_for_the_ttl() {
    let fake = Arc::new(Fake::default());
    let cache = CacheConfig {
        ttl: Duration::from_secs(10),
        capacity: 16,
    };
    let app = app(fake.clone(), cache);
    for _ in 0..5 {
        assert_eq!(
            call(&app, "GET", "/metrics", Some("Bearer good")).await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(&app, "GET", "/metrics", Some("Bearer nobody")).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(&app, "GET", "/metrics", Some("Bearer forged")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        fake.calls(),
        (3, 2),
        "positive and negative answers are reused"
    );

    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(
        call(&app, "GET", "/metrics", Some("Bearer good")).await.0,
        StatusCode::OK
    );
    assert_eq!(fake.calls(), (3, 2));

    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        call(&app, "GET", "/metrics", Some("Bearer good")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "GET", "/metrics", Some("Bearer forged")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(fake.calls(), (5, 3), "expired answers are asked again");
}

#[tokio::test(start_paused = true)]
async fn a_zero_ttl_disables_the_cache() {
    let fake = Arc::new(Fake::default());
    let app = app(
        fake.clone(),
        CacheConfig {
            ttl: Duration::ZERO,
            capacity: 16,
        },
    );
    for _ in 0..3 {
        assert_eq!(
            call(&app, "GET", "/metrics", Some("Bearer good")).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(fake.calls(), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn caches_are_bounded() {
    let cache: TtlCache<String, u32> = TtlCache::new(CacheConfig {
        ttl: Duration::from_secs(10),
        capacity: 3,
    });
    for i in 0..10 {
        cache.insert(format!("t{i}"), i);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.len() <= 3);
    }
    // The newest survive; the oldest were evicted.
    assert_eq!(cache.get(&"t9".to_string()), Some(9));
    assert_eq!(cache.get(&"t7".to_string()), Some(7));
    assert_eq!(cache.get(&"t0".to_string()), None);
    // Re-inserting a present key does not evict others.
    cache.insert("t9".into(), 90);
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.get(&"t8".to_string()), Some(8));

    // Expired entries go before live ones.
    tokio::time::advance(Duration::from_secs(20)).await;
    cache.insert("fresh".into(), 1);
    assert_eq!(cache.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn many_tokens_stay_within_the_capacity() {
    let fake = Arc::new(Fake::default());
    let auth = MetricsAuth::new(
        fake.clone(),
        CacheConfig {
            ttl: Duration::from_secs(10),
            capacity: 8,
        },
    );
    let mut headers = HeaderMap::new();
    for i in 0..100 {
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer forged-{i}").parse().unwrap(),
        );
        let refused = auth
            .check(&headers, &http::Method::GET, "/metrics")
            .await
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    }
    assert!(auth.inner.tokens.len() <= 8);
    assert_eq!(fake.calls(), (100, 0));
}

#[test]
fn reviews_carry_the_token_and_the_user() {
    let tr = KubeReviewer::token_review("abc");
    assert_eq!(tr.spec.token, "abc");
    assert_eq!(tr.spec.audiences, None);

    let mut u = user("system:serviceaccount:ns:prom");
    u.extra = Some(BTreeMap::from([(
        "authentication.kubernetes.io/pod-name".to_string(),
        vec!["prom-0".to_string()],
    )]));
    let sar = KubeReviewer::access_review(&u, "/metrics", "get");
    assert_eq!(sar.spec.user, u.username);
    assert_eq!(sar.spec.groups, u.groups);
    assert_eq!(sar.spec.uid, u.uid);
    assert_eq!(sar.spec.extra, u.extra);
    assert!(sar.spec.resource_attributes.is_none());
    let nra = sar
        .spec
        .non_resource_attributes
        .expect("non-resource attributes");
    assert_eq!(nra.path.as_deref(), Some("/metrics"));
    assert_eq!(nra.verb.as_deref(), Some("get"));
}
