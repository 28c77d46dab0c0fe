//! Authenticated metrics (`manager-operator run --metrics-secure`, docs/design.md §6): `/metrics` over TLS,
//! readable only with a bearer token that the API server authenticates (`TokenReview`,
//! `authentication.k8s.io/v1`) and authorizes (`SubjectAccessReview`, `authorization.k8s.io/v1`,
//! the request's path as a non-resource URL and its lower-cased method as the verb, so a scrape
//! needs `get` on `/metrics`) — controller-runtime's `filters.WithAuthenticationAndAuthorization`.
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
//! so the decision is unit-tested with a fake.
//!
//! The TLS certificate comes from `--metrics-cert-dir` (`tls.crt`/`tls.key`, re-read when they
//! change, [`FileCertSource`]) or, without a directory, is self-signed at startup for
//! `localhost`, `127.0.0.1`, `::1` and the pod's hostname ([`self_signed`]) and re-generated
//! before it expires. The server is the webhook's ([`crate::webhook::server::serve_tls`]): the
//! certificate is looked up per handshake, and the TLS handshake and request headers must arrive
//! within 10 s.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http::{HeaderMap, StatusCode, header};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::webhook::certs::{CertError, FileCertSource, FileContents, ServingCert};
use crate::webhook::server::{self, CertStore, ServerLimits};

/// How long review answers are cached by default.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);
/// Entries per cache by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;
/// Longest bearer token sent for review; longer ones are refused (401) without a review.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Reviews (TokenReviews plus SubjectAccessReviews) running at once.
pub const MAX_REVIEWS_IN_FLIGHT: usize = 8;
/// Bound on one review call to the API server.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of the generated self-signed certificate (re-generated when a third is left).
pub const SELF_SIGNED_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// How often `--metrics-cert-dir` (or the self-signed certificate's expiry) is checked.
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

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
        SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups.clone(),
                uid: user.uid.clone(),
                extra: user.extra.clone(),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_string()),
                    verb: Some(verb.to_string()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        }
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
            match crate::authz::verdict(answer.status) {
                crate::authz::Verdict::Allowed => Ok(Authorization::Allowed),
                crate::authz::Verdict::Denied { reason } => Ok(Authorization::Denied(reason)),
                crate::authz::Verdict::Unevaluated { message } => {
                    Err(ReviewError::Evaluation(message))
                }
            }
        })
    }
}

/// Review caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long an answer (positive or negative) is reused.
    pub ttl: Duration,
    /// Entries per cache; when full, expired entries go first, then the oldest.
    pub capacity: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_CACHE_TTL,
            capacity: DEFAULT_CACHE_CAPACITY,
        }
    }
}

/// A bounded map whose entries expire `ttl` after insertion (also used by the controller's
/// Lease access reviews).
pub(crate) struct TtlCache<K, V> {
    config: CacheConfig,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub(crate) fn new(config: CacheConfig) -> Self {
        Self {
            config,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((expires, v)) if *expires > Instant::now() => Some(v.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        if self.config.capacity == 0 || self.config.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.config.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (expires, _)| *expires > now);
            while entries.len() >= self.config.capacity {
                let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (expires, _))| *expires)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (now + self.config.ttl, value));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
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

/// A self-signed serving certificate for `localhost`, `127.0.0.1`, `::1` and `hostname`, valid
/// from 5 minutes ago for `lifetime`.
pub fn self_signed(hostname: Option<&str>, lifetime: Duration) -> Result<ServingCert, CertError> {
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "manager-operator-metrics");
    params.distinguished_name = dn;
    let mut sans = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    if let Some(host) = hostname.filter(|h| *h != "localhost") {
        sans.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.to_string().try_into()?),
        });
    }
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = (now - Duration::from_secs(300)).into();
    params.not_after = (now + lifetime).into();
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    ServingCert::from_pem(
        &cert.pem(),
        &key.serialize_pem(),
        None,
        "the self-signed metrics certificate",
    )
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

/// Where the certificate comes from, with what was loaded last.
pub enum CertSource {
    /// Files, re-read when their contents change.
    Files(FileCertSource, FileContents),
    /// Generated; re-generated when a third of its lifetime is left.
    SelfSigned(ServingCert),
}

impl CertSource {
    /// Loads the certificate for `cert_dir` (or generates one).
    pub fn load(cert_dir: Option<&PathBuf>) -> Result<(Self, ServingCert), CertError> {
        match cert_dir {
            Some(dir) => {
                let files = FileCertSource::new(dir);
                let (cert, contents) = files.load()?;
                Ok((Self::Files(files, contents), cert))
            }
            None => {
                let cert = self_signed(hostname().as_deref(), SELF_SIGNED_LIFETIME)?;
                Ok((Self::SelfSigned(cert.clone()), cert))
            }
        }
    }

    /// A new certificate to serve, when there is one; `Err` when the files became unusable (the
    /// current certificate stays).
    pub fn refresh(&mut self, now: SystemTime) -> Result<Option<ServingCert>, CertError> {
        match self {
            Self::Files(files, last) => {
                let contents = files.contents()?;
                if contents == *last {
                    return Ok(None);
                }
                let cert = files.parse(&contents)?;
                *last = contents;
                Ok(Some(cert))
            }
            Self::SelfSigned(current) => {
                if !current.needs_rotation(now) {
                    return Ok(None);
                }
                let cert = self_signed(hostname().as_deref(), SELF_SIGNED_LIFETIME)?;
                *current = cert.clone();
                Ok(Some(cert))
            }
        }
    }
}

async fn cert_loop(
    mut source: CertSource,
    store: Arc<CertStore>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match source.refresh(SystemTime::now()).and_then(|c| match c {
            Some(cert) => cert.certified_key().map(|k| Some((k, cert.serial))),
            None => Ok(None),
        }) {
            Ok(Some((key, serial))) => {
                store.set(key);
                tracing::info!(%serial, "metrics serving certificate reloaded");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "metrics certificate check failed; keeping the current certificate")
            }
        }
    }
}

/// A started secure metrics server.
pub struct SecureMetricsServer {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    /// Ends after `shutdown` is cancelled and open connections finished.
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves `router` over TLS behind [`require`] (reviews by `reviewer`) until `shutdown` is
/// cancelled. Returns once the listener is bound.
pub async fn start(
    config: SecureMetricsConfig,
    router: Router,
    reviewer: Arc<dyn MetricsReviewer>,
    shutdown: CancellationToken,
) -> Result<SecureMetricsServer, SecureMetricsError> {
    let (source, cert) = CertSource::load(config.cert_dir.as_ref())?;
    let store = Arc::new(CertStore::new());
    store.set(cert.certified_key()?);
    let tls = server::tls_config(store.clone())?;
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
        let reload = tokio::spawn(cert_loop(
            source,
            store,
            config.check_interval,
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
