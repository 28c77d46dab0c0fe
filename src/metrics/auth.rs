//! The auth layer of the secure metrics server (`manager-operator run --metrics-secure`,
//! docs/design.md §6): `/metrics` readable only with a bearer token that the API server
//! authenticates (`TokenReview`, `authentication.k8s.io/v1`) and authorizes
//! (`SubjectAccessReview`, `authorization.k8s.io/v1`, the request's path as a non-resource URL
//! and its lower-cased method as the verb, so a scrape needs `get` on `/metrics`) —
//! controller-runtime's `filters.WithAuthenticationAndAuthorization`.
//!
//! | request                                                   | answer |
//! |-----------------------------------------------------------|--------|
//! | no `Authorization: Bearer <token>` header                 | 401    |
//! | the TokenReview does not authenticate the token           | 401    |
//! | authenticated, the SubjectAccessReview does not allow it  | 403    |
//! | authenticated and allowed                                 | the metrics (200) |
//! | a review could not be made (API error, timeout)           | 503    |
//!
//! Answers of both reviews are cached, positive and negative alike, for [`CacheConfig::ttl`]
//! (10 s) in bounded caches ([`CacheConfig::capacity`] entries each), so a scrape does not cost
//! two API calls every time; failed reviews are not cached. At most [`MAX_REVIEWS_IN_FLIGHT`]
//! reviews run at once, so a flood of made-up tokens cannot turn into a flood of API calls.
//!
//! The reviews sit behind the [`MetricsReviewer`] trait ([`KubeReviewer`] asks the API server),
//! so the decision is unit-tested with a fake. The TLS server is in [`super::secure`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http::{HeaderMap, StatusCode, header};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{NonResourceAttributes, SubjectAccessReview};
use kube::api::{Api, PostParams};
use tokio::sync::Semaphore;

use crate::authz::cache::{CacheConfig, TtlCache};
use crate::authz::{Attributes, Verdict, review_as, verdict};

/// Longest bearer token sent for review; longer ones are refused (401) without a review.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Reviews (TokenReviews plus SubjectAccessReviews) running at once.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 8;
/// Bound on one review call to the API server.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a review could not be answered (the request gets 503; nothing is cached).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The API server refused or failed the review.
    #[error("the {kind} failed: {source}")]
    Api {
        /// `TokenReview` or `SubjectAccessReview`.
        kind: &'static str,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server did not answer in time.
    #[error("the {kind} did not complete within {after:?}")]
    Timeout {
        /// `TokenReview` or `SubjectAccessReview`.
        kind: &'static str,
        /// The bound.
        after: Duration,
    },
    /// The authorizer failed to evaluate the SubjectAccessReview (it did not say no).
    #[error("the authorizer could not evaluate the SubjectAccessReview: {0}")]
    Evaluation(String),
}

/// What the TokenReview said about a token.
#[derive(Clone, Debug, PartialEq)]
pub enum Authentication {
    /// The token belongs to this user.
    Authenticated(UserInfo),
    /// The token is not valid (the API server's reason, possibly empty).
    Unauthenticated(String),
}

/// What the SubjectAccessReview said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorization {
    /// The user may.
    Allowed,
    /// The user may not (the authorizer's reason, possibly empty).
    Denied(String),
}

/// Authenticates bearer tokens and authorizes users for non-resource URLs.
pub trait MetricsReviewer: Send + Sync {
    /// Who `token` belongs to (a `TokenReview`).
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Authentication, ReviewError>>;

    /// Whether `user` may `verb` the non-resource URL `path` (a `SubjectAccessReview`).
    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        path: &'a str,
        verb: &'a str,
    ) -> BoxFuture<'a, Result<Authorization, ReviewError>>;
}

/// The real reviewer: TokenReviews and SubjectAccessReviews created with the operator's client
/// (which needs `create` on `tokenreviews.authentication.k8s.io` and
/// `subjectaccessreviews.authorization.k8s.io`), each bounded by [`REVIEW_TIMEOUT`].
#[derive(Clone)]
pub struct KubeReviewer {
    client: kube::Client,
    timeout: Duration,
}

impl KubeReviewer {
    /// A reviewer using `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            timeout: REVIEW_TIMEOUT,
        }
    }

    /// The TokenReview for `token` (no audiences: the API server's own).
    pub fn token_review(token: &str) -> TokenReview {
        TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..TokenReview::default()
        }
    }

    /// The SubjectAccessReview for `user` doing `verb` on the non-resource URL `path`.
    pub fn access_review(user: &UserInfo, path: &str, verb: &str) -> SubjectAccessReview {
        review_as(
            user,
            Attributes::NonResource(NonResourceAttributes {
                path: Some(path.to_string()),
                verb: Some(verb.to_string()),
            }),
        )
    }

    async fn bounded<T>(
        &self,
        kind: &'static str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ReviewError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ReviewError::Api {
                kind,
                source: Box::new(e),
            }),
            Err(_) => Err(ReviewError::Timeout {
                kind,
                after: self.timeout,
            }),
        }
    }
}

impl MetricsReviewer for KubeReviewer {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Authentication, ReviewError>> {
        Box::pin(async move {
            let api: Api<TokenReview> = Api::all(self.client.clone());
            let review = Self::token_review(token);
            let answer = self
                .bounded("TokenReview", api.create(&PostParams::default(), &review))
                .await?;
            let status = answer.status.unwrap_or_default();
            Ok(match (status.authenticated, status.user) {
                (Some(true), Some(user)) => Authentication::Authenticated(user),
                _ => Authentication::Unauthenticated(status.error.unwrap_or_default()),
            })
        })
    }

    fn authorize<'a>(
        &'a self,
        user: &'a UserInfo,
        path: &'a str,
        verb: &'a str,
    ) -> BoxFuture<'a, Result<Authorization, ReviewError>> {
        Box::pin(async move {
            let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
            let review = Self::access_review(user, path, verb);
            let answer = self
                .bounded(
                    "SubjectAccessReview",
                    api.create(&PostParams::default(), &review),
                )
                .await?;
            match verdict(answer.status) {
                Verdict::Allowed => Ok(Authorization::Allowed),
                Verdict::Denied { reason } => Ok(Authorization::Denied(reason)),
                Verdict::Unevaluated { message } => Err(ReviewError::Evaluation(message)),
            }
        })
    }
}

/// What the authorization cache is keyed by: everything the SubjectAccessReview carries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct AccessKey {
    username: Option<String>,
    uid: Option<String>,
    groups: Option<Vec<String>>,
    extra: Option<BTreeMap<String, Vec<String>>>,
    path: String,
    verb: String,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403 or 503.
    pub status: StatusCode,
    /// The body (one line).
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.message),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"manager-operator metrics\""),
            );
        }
        response
    }
}

/// The bearer token of `Authorization: Bearer <token>` (scheme case-insensitive), if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty() && !token.contains(char::is_whitespace)).then_some(token)
}

fn user_name(user: &UserInfo) -> &str {
    user.username.as_deref().unwrap_or("<unnamed>")
}

/// Authentication and authorization of metrics requests, with caches; cheap to clone.
#[derive(Clone)]
pub struct MetricsAuth {
    inner: Arc<Inner>,
}

struct Inner {
    reviewer: Arc<dyn MetricsReviewer>,
    tokens: TtlCache<String, Authentication>,
    access: TtlCache<AccessKey, Authorization>,
    reviews: Semaphore,
}

impl MetricsAuth {
    /// Decides with `reviewer`, caching as `cache` says.
    pub fn new(reviewer: Arc<dyn MetricsReviewer>, cache: CacheConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                reviewer,
                tokens: TtlCache::new(cache),
                access: TtlCache::new(cache),
                reviews: Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
            }),
        }
    }

    async fn review<T>(
        &self,
        call: BoxFuture<'_, Result<T, ReviewError>>,
    ) -> Result<T, ReviewError> {
        // Closed never; a permit bounds the API calls made for scrapes at once.
        let _permit = self.inner.reviews.acquire().await;
        call.await
    }

    async fn authenticate(&self, token: &str) -> Result<Authentication, ReviewError> {
        if let Some(hit) = self.inner.tokens.get(&token.to_string()) {
            return Ok(hit);
        }
        let answer = self.review(self.inner.reviewer.authenticate(token)).await?;
        self.inner.tokens.insert(token.to_string(), answer.clone());
        Ok(answer)
    }

    async fn authorize(
        &self,
        user: &UserInfo,
        path: &str,
        verb: &str,
    ) -> Result<Authorization, ReviewError> {
        let key = AccessKey {
            username: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
            path: path.to_string(),
            verb: verb.to_string(),
        };
        if let Some(hit) = self.inner.access.get(&key) {
            return Ok(hit);
        }
        let answer = self
            .review(self.inner.reviewer.authorize(user, path, verb))
            .await?;
        self.inner.access.insert(key, answer.clone());
        Ok(answer)
    }

    /// The user behind a request for `path` with `method`, or why it is refused.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        method: &http::Method,
        path: &str,
    ) -> Result<UserInfo, Refusal> {
        let Some(token) = bearer_token(headers) else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: send a bearer token (Authorization: Bearer <token>)",
            ));
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: the bearer token is too long",
            ));
        }
        let user = match self.authenticate(token).await {
            Ok(Authentication::Authenticated(user)) => user,
            Ok(Authentication::Unauthenticated(reason)) => {
                tracing::debug!(%reason, "metrics request with an invalid token");
                return Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized: the token was not authenticated",
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot authenticate a metrics request");
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("Authentication failed: {e}"),
                ));
            }
        };
        let verb = method.as_str().to_ascii_lowercase();
        match self.authorize(&user, path, &verb).await {
            Ok(Authorization::Allowed) => Ok(user),
            Ok(Authorization::Denied(reason)) => {
                tracing::debug!(user = %user_name(&user), %path, %verb, %reason, "metrics request denied");
                Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "Authorization denied for user {}: {verb} on the non-resource URL {path} is not allowed",
                        user_name(&user)
                    ),
                ))
            }
            Err(e) => {
                tracing::warn!(user = %user_name(&user), error = %e, "cannot authorize a metrics request");
                Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("Authorization for user {} failed: {e}", user_name(&user)),
                ))
            }
        }
    }
}

/// axum middleware: passes the request on only when [`MetricsAuth::check`] allows it.
pub async fn require(State(auth): State<MetricsAuth>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    match auth.check(request.headers(), request.method(), &path).await {
        Ok(_) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// `router` behind [`require`].
pub fn protect(router: Router, auth: MetricsAuth) -> Router {
    router.layer(axum::middleware::from_fn_with_state(auth, require))
}

#[cfg(test)]
pub(crate) mod tests;
