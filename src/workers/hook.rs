//! The hook call (docs/design.md §4): one JSON POST per reconcile, and what its answer means.
//!
//! Request body:
//!
//! ```json
//! {"manager": {"namespace": "team-a", "name": "inventory-sync"}, "worker": "configmaps",
//!  "fencingToken": 4, "holder": "manager-operator-5d8f9-x2x7q", "object": { ... }}
//! ```
//!
//! Headers (see [`super::signing`]): `webhook-id` (the delivery id, the same across retries of
//! one delivery), `webhook-timestamp` (unix seconds of this attempt) and, when the worker has a
//! `hook.signingSecretRef`, `webhook-signature` (Standard Webhooks HMAC-SHA256 over
//! `{id}.{timestamp}.{body}`, computed over the exact bytes sent).
//!
//! A 2xx answer is success; its body may be `{"requeueAfterSeconds": N}` (N > 0) to schedule
//! the next run, at least [`MIN_REQUEUE`] (1 s) and at most [`MAX_REQUEUE`] (24 h) later, so a
//! hook cannot make a hot loop. Any other status, a timeout (the whole exchange, body included,
//! is bounded by the hook timeout) or a connection error is a failure.
//!
//! Destinations are judged where the connection is made ([`super::dns`]): a literal address
//! before the request, every address a host name resolves to by the client's resolver. A
//! refused destination is a failure with code `refused` ([`HookError::Refused`]), naming the
//! address and the rule.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::dns::{DestinationRefused, Lookup, PolicyResolver, SystemLookup};
use super::signing::{self, KeySet};
use crate::validation::HookPolicy;

/// Largest answer body read from a hook; the rest is ignored.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest `requeueAfterSeconds` honoured (24 h, the largest resyncPeriod).
pub const MAX_REQUEUE: Duration = Duration::from_secs(86_400);
/// Longest `retryAfterSeconds` honoured on a failed call (1 h); longer asks are capped.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);
/// Shortest `requeueAfterSeconds` honoured: smaller positive values are raised to it, so a
/// hook answering `0.001` cannot make the worker call it in a hot loop.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);
/// How much of an error answer is kept for logs.
const ERROR_SNIPPET_CHARS: usize = 200;

/// Which ManagerConfig a call comes from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManagerRef {
    /// ManagerConfig namespace.
    pub namespace: String,
    /// ManagerConfig name.
    pub name: String,
}

/// The JSON body POSTed to the hook. `O` is the watched object: a JSON value when a hook reads
/// the body, a borrowed [`TypedObject`] when a worker writes it (so a call never copies the
/// object before encoding it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HookRequest<O = serde_json::Value> {
    /// The protocol version, [`PROTOCOL`] (docs/hooks.md); fields are only ever added within
    /// one version.
    #[serde(default)]
    pub api_version: String,
    /// What happened: `Sync` (the object was created, changed, resynced, requeued, or a new
    /// leader took over) or `Deleted` (the object is gone or, with `finalize`, being deleted).
    #[serde(default, rename = "type")]
    pub event_type: String,
    /// The delivery id (also the `webhook-id` header): the same for every attempt of one
    /// delivery.
    #[serde(default)]
    pub delivery_id: String,
    /// Which attempt of this delivery this call is (1 for the first).
    #[serde(default)]
    pub attempt: u32,
    /// The object's `metadata.resourceVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// The object's `metadata.generation` (absent for kinds without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The ManagerConfig.
    pub manager: ManagerRef,
    /// The worker's name (`spec.workers[].name`).
    pub worker: String,
    /// The Lease's `leaseTransitions` when this replica acquired it: hooks reject calls whose
    /// token is lower than one they have already seen.
    pub fencing_token: i64,
    /// The Lease holder identity of the calling replica.
    pub holder: String,
    /// The watched object, as the API server returned it.
    pub object: O,
}

/// The `apiVersion` of every call's body.
pub const PROTOCOL: &str = "hooks.manager-operator.io/v1";
/// The `type` of a call about an object that exists.
pub const SYNC: &str = "Sync";
/// The `type` of a call about a deleted object (`object` is its last known state).
pub const DELETED: &str = "Deleted";

/// A watched object as a hook receives it: `apiVersion` and `kind` filled in when the API
/// server left them out (list items), then the object's own fields, encoded straight from the
/// watch cache (the layout of [`kube::api::DynamicObject`]'s own encoding).
#[derive(Debug, Serialize)]
pub struct TypedObject<'a> {
    /// `apiVersion` and `kind`.
    #[serde(flatten)]
    pub types: &'a kube::api::TypeMeta,
    /// `metadata`.
    pub metadata: &'a kube::api::ObjectMeta,
    /// Every other field (`spec`, `status`, `data`, ...).
    #[serde(flatten)]
    pub data: &'a serde_json::Value,
}

/// A successful hook answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookReply {
    /// HTTP status (2xx).
    pub code: u16,
    /// `requeueAfterSeconds` from the body, when present and positive.
    pub requeue_after: Option<Duration>,
}

/// Why a hook call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The hook answered with a non-2xx status.
    #[error("hook answered HTTP {code}: {body:?}")]
    Status {
        /// HTTP status.
        code: u16,
        /// The start of the answer body.
        body: String,
        /// `retryAfterSeconds` of the answer body, within [`MIN_REQUEUE`]..=[`MAX_RETRY_AFTER`]:
        /// the retry comes then instead of after the exponential backoff.
        retry_after: Option<Duration>,
    },
    /// No complete answer within the hook timeout.
    #[error("hook did not answer within {0:?}")]
    Timeout(Duration),
    /// Connection refused, reset, TLS failure, ...
    #[error("hook request failed: {0}")]
    Transport(String),
    /// The destination (a literal address, or every address the host name resolved to) is
    /// refused by the hook policy: the message names each address and the rule. Nothing was
    /// sent.
    #[error("{0}")]
    Refused(String),
}

impl HookError {
    /// The `code` label of `hook_request_duration_seconds`: the status, or `error`.
    pub fn code_label(&self) -> String {
        match self {
            HookError::Status { code, .. } => code.to_string(),
            HookError::Timeout(_) | HookError::Transport(_) => "error".to_string(),
            HookError::Refused(_) => "refused".to_string(),
        }
    }
}

/// Reads `requeueAfterSeconds` from a 2xx body. An empty body, a body that is not JSON, a
/// missing, zero or negative value all mean "no explicit requeue"; values below
/// [`MIN_REQUEUE`] are raised to it, values above [`MAX_REQUEUE`] are capped.
pub fn parse_requeue(body: &[u8]) -> Option<Duration> {
    seconds_field(body, "requeueAfterSeconds", MAX_REQUEUE)
}

/// Reads `retryAfterSeconds` from a non-2xx body, like [`parse_requeue`] (floor
/// [`MIN_REQUEUE`], cap [`MAX_RETRY_AFTER`]).
pub fn parse_retry_after(body: &[u8]) -> Option<Duration> {
    seconds_field(body, "retryAfterSeconds", MAX_RETRY_AFTER)
}

fn seconds_field(body: &[u8], field: &str, cap: Duration) -> Option<Duration> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let secs = answer.as_object()?.get(field)?.as_f64()?;
    if !secs.is_finite() || secs <= 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        secs.clamp(MIN_REQUEUE.as_secs_f64(), cap.as_secs_f64()),
    ))
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(ERROR_SNIPPET_CHARS)
        .collect()
}

/// Describes a reqwest error with its sources (reqwest's top-level message is terse).
fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// How one call is identified and signed.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    /// `webhook-id`: the same for every retry of one delivery.
    pub id: &'a str,
    /// The keys to sign with; `None`: no `webhook-signature` header.
    pub keys: Option<&'a KeySet>,
}

/// The hook policy's refusal in a reqwest error's source chain, if any.
fn refusal(e: &reqwest::Error) -> Option<&DestinationRefused> {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<DestinationRefused>() {
            return Some(r);
        }
        src = s.source();
    }
    None
}

fn send_error(e: &reqwest::Error) -> HookError {
    match refusal(e) {
        Some(r) => HookError::Refused(r.to_string()),
        None => HookError::Transport(describe(e)),
    }
}

async fn exchange(
    http: &HookClient,
    url: &Url,
    body: &HookRequest<impl Serialize>,
    delivery: Delivery<'_>,
) -> Result<HookReply, HookError> {
    // reqwest connects to literal addresses without asking the resolver: judge them here.
    let literal = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(std::net::IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(std::net::IpAddr::V6(v6)),
        _ => None,
    };
    if let Some(ip) = literal {
        http.policy
            .judge_ip(ip)
            .map_err(|r| HookError::Refused(format!("hook destination refused: {r}")))?;
    }
    // The signature covers the exact bytes sent, so encode once.
    let bytes = serde_json::to_vec(body)
        .map_err(|e| HookError::Transport(format!("encoding the request: {e}")))?;
    let timestamp = signing::unix_now();
    let mut req = http
        .http
        .post(url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(signing::HEADER_ID, delivery.id)
        .header(signing::HEADER_TIMESTAMP, timestamp.to_string());
    if let Some(keys) = delivery.keys {
        req = req.header(
            signing::HEADER_SIGNATURE,
            keys.signature_header(delivery.id, timestamp, &bytes),
        );
    }
    let mut resp = req.body(bytes).send().await.map_err(|e| send_error(&e))?;
    let code = resp.status().as_u16();
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < MAX_ANSWER_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            Ok(None) => break,
            Err(e) => return Err(HookError::Transport(describe(&e))),
        }
    }
    buf.truncate(MAX_ANSWER_BYTES);
    if (200..300).contains(&code) {
        Ok(HookReply {
            code,
            requeue_after: parse_requeue(&buf),
        })
    } else {
        Err(HookError::Status {
            code,
            body: snippet(&buf),
            retry_after: parse_retry_after(&buf),
        })
    }
}

/// POSTs `body` to `url` with the headers of `delivery`; the whole exchange (connect, send,
/// answer body) is bounded by `timeout`.
pub async fn call(
    http: &HookClient,
    url: &Url,
    timeout: Duration,
    body: &HookRequest<impl Serialize>,
    delivery: Delivery<'_>,
) -> Result<HookReply, HookError> {
    match tokio::time::timeout(timeout, exchange(http, url, body, delivery)).await {
        Ok(r) => r,
        Err(_) => Err(HookError::Timeout(timeout)),
    }
}

/// The HTTP client hooks are called with, and the policy its destinations are judged by.
/// Cheap to clone.
#[derive(Clone)]
pub struct HookClient {
    http: reqwest::Client,
    policy: Arc<HookPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl HookClient {
    /// The policy destinations are judged by.
    pub fn policy(&self) -> &HookPolicy {
        &self.policy
    }

    /// The same client (policy, resolver, no proxy, no redirects) speaking TLS with `tls`: a
    /// worker's own CA bundle and client certificate ([`super::tls`]).
    pub fn with_tls(&self, tls: rustls::ClientConfig) -> Result<HookClient, reqwest::Error> {
        build(self.policy.clone(), self.lookup.clone(), Some(tls))
    }
}

/// The HTTP client hooks are called with: rustls on the ring provider (installed once), never
/// a proxy (hook traffic goes straight to the URL the hook policy allowed), no redirects (a
/// redirect could lead past the hook policy; a 3xx answer is a failure), and a resolver that
/// filters every address by `policy` ([`super::dns::PolicyResolver`], the system resolver).
pub fn http_client(policy: &HookPolicy) -> Result<HookClient, reqwest::Error> {
    http_client_with(policy, Arc::new(SystemLookup))
}

/// [`http_client`] looking host names up with `lookup` (fixed answers in tests, or
/// `--hook-resolve`); every answer is still judged by `policy`.
pub fn http_client_with(
    policy: &HookPolicy,
    lookup: Arc<dyn Lookup>,
) -> Result<HookClient, reqwest::Error> {
    // Another part of the process may have installed it already; that is fine.
    crate::tls::install_default_provider();
    build(Arc::new(policy.clone()), lookup, None)
}

fn build(
    policy: Arc<HookPolicy>,
    lookup: Arc<dyn Lookup>,
    tls: Option<rustls::ClientConfig>,
) -> Result<HookClient, reqwest::Error> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(PolicyResolver::new(policy.clone(), lookup.clone()))
        .user_agent(concat!("manager-operator/", env!("CARGO_PKG_VERSION")));
    if let Some(tls) = tls {
        b = b.tls_backend_preconfigured(tls);
    }
    Ok(HookClient {
        http: b.build()?,
        policy,
        lookup,
    })
}
