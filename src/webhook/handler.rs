//! The admission decision, independent of any server: request body bytes in, HTTP status and
//! response body out.
//!
//! * A well-formed `admission.k8s.io/v1` `AdmissionReview` always gets HTTP 200 and an
//!   `AdmissionReview` response carrying the request's `uid`.
//! * ManagerConfig `CREATE`/`UPDATE`: strict decoding, then [`validation::resolve`] with the
//!   operator's hook policy, then — when `spec.leaderElection.leaseNamespace` names another
//!   namespace — a SubjectAccessReview for the requesting user. Denials list *every* problem as
//!   `field.path: message`, joined by `"; "`, with `status.code` 422 and reason `Invalid`
//!   (403/`Forbidden` when the only problem is the Lease permission). Admissions carry the
//!   warnings of [`validation::warnings`], which kubectl prints.
//! * `DELETE` and `CONNECT`, subresources (`status`), and updates that leave `spec` unchanged or
//!   that finish a deletion are allowed: there is nothing (new) to validate, and a stored config
//!   must always stay deletable.
//! * A `CREATE`/`UPDATE` of anything but a `manager-operator.io/v1alpha1` `ManagerConfig` is
//!   denied with a message saying what was received (code 400, reason `BadRequest`).
//! * Input that is not a usable AdmissionReview (not JSON, wrong `apiVersion`/`kind`, no
//!   `request`, no `object` for a CREATE/UPDATE, missing `uid`, ...) gets HTTP 400 with a
//!   plain-text explanation. Nothing here panics.

use http::StatusCode;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::response::StatusSummary;
use serde_json::Value;

use super::access::AccessReviewer;
use crate::api::ManagerConfig;
use crate::claims::LeaseClaims;
use crate::limits::TenantLimits;
use crate::validation::{self, HookPolicy, decode, names};

/// The admission review `apiVersion` this webhook speaks.
pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
/// The admission review `kind`.
pub const REVIEW_KIND: &str = "AdmissionReview";
pub use crate::api::{GROUP, VERSION};

/// What the server sends back for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// HTTP status: 200 for every well-formed review, 400 for bad input.
    pub status: StatusCode,
    /// `application/json` (a review) or `text/plain; charset=utf-8` (an error).
    pub content_type: &'static str,
    /// The response body.
    pub body: Vec<u8>,
    /// The operation, for the `operation` metric label: `CREATE`, `UPDATE`, `DELETE`,
    /// `CONNECT`, or `INVALID` for input that is not a usable review.
    pub operation: &'static str,
    /// Whether the request was admitted (false for bad input).
    pub allowed: bool,
}

/// Content type of review answers.
pub const JSON: &str = "application/json";
/// Content type of error answers.
pub const TEXT: &str = "text/plain; charset=utf-8";

impl Outcome {
    /// A plain-text HTTP error.
    pub fn error(status: StatusCode, message: impl Into<String>) -> Self {
        let mut body = message.into().into_bytes();
        body.push(b'\n');
        Self {
            status,
            content_type: TEXT,
            body,
            operation: "INVALID",
            allowed: false,
        }
    }

    /// The body as text (lossy), for logs and tests.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn operation_label(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// A review that passed the envelope checks.
struct Parsed {
    request: AdmissionRequest<DynamicObject>,
    /// `request.object` as sent, for strict decoding.
    object: Option<Value>,
    /// `request.oldObject` as sent.
    old_object: Option<Value>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks the envelope and decodes the request; `Err` is the text of an HTTP 400.
fn parse(body: &[u8]) -> Result<Parsed, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(format!(
            "the request body is empty: POST an {REVIEW_API_VERSION} {REVIEW_KIND} as JSON"
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    let Value::Object(mut review) = value else {
        return Err(format!(
            "the request body is {}, not an {REVIEW_KIND} object",
            type_name(&value)
        ));
    };
    let api_version = review.get("apiVersion").and_then(Value::as_str);
    let kind = review.get("kind").and_then(Value::as_str);
    if kind != Some(REVIEW_KIND) {
        return Err(format!(
            "the request body has kind {:?}, not {REVIEW_KIND:?}",
            kind.unwrap_or("")
        ));
    }
    if api_version != Some(REVIEW_API_VERSION) {
        return Err(format!(
            "unsupported {REVIEW_KIND} apiVersion {:?}: this webhook speaks only {REVIEW_API_VERSION:?} (set admissionReviewVersions: [v1])",
            api_version.unwrap_or("")
        ));
    }
    let mut request = match review.remove("request") {
        None | Some(Value::Null) => {
            return Err(format!(
                "the {REVIEW_KIND} has no request: nothing to review"
            ));
        }
        Some(Value::Object(r)) => r,
        Some(other) => {
            return Err(format!(
                "the {REVIEW_KIND}'s request is {}, not an object",
                type_name(&other)
            ));
        }
    };
    if request
        .get("uid")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(format!(
            "the {REVIEW_KIND}'s request has no uid: the answer could not be matched to it"
        ));
    }
    // Keep the objects as sent; decode the rest with kube's types.
    let object = request.remove("object").filter(|v| !v.is_null());
    let old_object = request.remove("oldObject").filter(|v| !v.is_null());
    review.insert("request".into(), Value::Object(request));
    let typed: AdmissionReview<DynamicObject> =
        serde_path_to_error::deserialize(Value::Object(review)).map_err(|e| {
            let path = e.path().to_string();
            format!(
                "the {REVIEW_KIND} is malformed at {path}: {}",
                e.into_inner()
            )
        })?;
    let request: AdmissionRequest<DynamicObject> = typed
        .try_into()
        .map_err(|_| format!("the {REVIEW_KIND} has no request: nothing to review"))?;
    Ok(Parsed {
        request,
        object,
        old_object,
    })
}

/// The decision for one well-formed request.
enum Decision {
    Allow {
        warnings: Vec<String>,
    },
    Deny {
        code: u16,
        reason: &'static str,
        message: String,
    },
}

fn deny_bad_request(message: String) -> Decision {
    Decision::Deny {
        code: 400,
        reason: "BadRequest",
        message,
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Decides a CREATE/UPDATE of a ManagerConfig. `Err` is the text of an HTTP 400.
async fn decide(
    parsed: &Parsed,
    policy: &HookPolicy,
    reviewer: &dyn AccessReviewer,
    claims: Option<&dyn LeaseClaims>,
    tenant_limits: Option<&TenantLimits>,
) -> Result<Decision, String> {
    let req = &parsed.request;
    match req.operation {
        Operation::Delete | Operation::Connect => {
            return Ok(Decision::Allow {
                warnings: Vec::new(),
            });
        }
        Operation::Create | Operation::Update => {}
    }
    if req.sub_resource.as_deref().is_some_and(|s| !s.is_empty()) {
        // status is written by the operator; only the main resource carries the spec.
        return Ok(Decision::Allow {
            warnings: Vec::new(),
        });
    }
    let gvk = &req.kind;
    if gvk.group != GROUP || gvk.version != VERSION || gvk.kind != decode::KIND {
        let group = if gvk.group.is_empty() {
            "core".to_string()
        } else {
            gvk.group.clone()
        };
        return Ok(deny_bad_request(format!(
            "this webhook validates only {GROUP}/{VERSION} {} objects; it was sent an object that is not a ManagerConfig ({group}/{} {}): check the webhook configuration's rules",
            decode::KIND,
            gvk.version,
            gvk.kind
        )));
    }
    let op = operation_label(&req.operation);
    let Some(object) = &parsed.object else {
        return Err(format!(
            "the {REVIEW_KIND}'s request has no object, which a {op} always carries"
        ));
    };
    if !object.is_object() {
        return Err(format!(
            "the {REVIEW_KIND}'s request.object is {}, not an object",
            type_name(object)
        ));
    }
    if let Err(v) = decode::check_type_meta(
        object.get("apiVersion").and_then(Value::as_str),
        object.get("kind").and_then(Value::as_str),
    ) {
        return Ok(deny_bad_request(format!(
            "an object that is not a ManagerConfig cannot be admitted: {}",
            v.message
        )));
    }
    if req.operation == Operation::Update {
        // Finishing a deletion (finalizers) or changing only metadata must always work, even for
        // a config stored before the webhook existed or under an older rule set.
        if str_at(object, &["metadata", "deletionTimestamp"]).is_some() {
            return Ok(Decision::Allow {
                warnings: Vec::new(),
            });
        }
        if let Some(old) = &parsed.old_object
            && old.get("spec") == object.get("spec")
        {
            return Ok(Decision::Allow {
                warnings: Vec::new(),
            });
        }
    }

    // Decoded from the borrowed value: no second copy of a large document.
    let mut mc: ManagerConfig = match decode::strict(object) {
        Ok(mc) => mc,
        Err(violations) => {
            let lines: Vec<String> = violations.iter().map(ToString::to_string).collect();
            return Ok(invalid(object, req, lines));
        }
    };
    // The API server sets these before validating admission; fall back to the request's.
    if mc.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        mc.metadata.namespace = req.namespace.clone();
    }
    if mc.metadata.name.as_deref().is_none_or(str::is_empty) && !req.name.is_empty() {
        mc.metadata.name = Some(req.name.clone());
    }

    let mut lines: Vec<String> = match validation::resolve(&mc, policy) {
        Ok(_) => Vec::new(),
        Err(violations) => violations.0.iter().map(ToString::to_string).collect(),
    };
    if let Some(limits) = tenant_limits
        && let Ok(cfg) = validation::resolve(&mc, policy)
    {
        lines.extend(limits.spec_violations(&cfg));
    }
    if let Some(owner) = claims.and_then(|c| c.rival(&mc)) {
        lines.push(format!(
            "spec.leaderElection.leaseName: {}",
            crate::claims::in_use_message(&crate::claims::lease_of(&mc), &owner)
        ));
    }
    let invalid_count = lines.len();

    let namespace = mc.metadata.namespace.clone().unwrap_or_default();
    if let Some(lease_ns) = &mc.spec.leader_election.lease_namespace
        && *lease_ns != namespace
        && !namespace.is_empty()
        && names::is_dns1123_label(lease_ns)
    {
        let user = req.user_info.username.as_deref().unwrap_or("");
        match reviewer.may_manage_leases(&req.user_info, lease_ns).await {
            Ok(true) => {}
            Ok(false) => lines.push(format!(
                "spec.leaderElection.leaseNamespace: user {user:?} may not create and update leases.coordination.k8s.io in namespace {lease_ns:?}, which a Lease outside the ManagerConfig's namespace ({namespace:?}) requires"
            )),
            Err(e) => {
                tracing::warn!(error = %e, %lease_ns, user, "lease access review failed; denying");
                lines.push(format!(
                    "spec.leaderElection.leaseNamespace: could not verify that user {user:?} may create and update leases.coordination.k8s.io in namespace {lease_ns:?}: {e}"
                ));
            }
        }
    }

    if lines.is_empty() {
        return Ok(Decision::Allow {
            warnings: validation::warnings(&mc.spec),
        });
    }
    if invalid_count == 0 {
        let name = mc.metadata.name.clone().unwrap_or_default();
        return Ok(Decision::Deny {
            code: 403,
            reason: "Forbidden",
            message: format!("ManagerConfig {name:?} is forbidden: {}", listed(lines)),
        });
    }
    Ok(invalid(object, req, lines))
}

/// Problems listed in one denial at most; the rest are counted ("… and N more").
pub const MAX_LISTED: usize = 50;

/// `lines` joined by "; ", at most [`MAX_LISTED`] of them, each at most 1 KiB.
fn listed(mut lines: Vec<String>) -> String {
    let more = lines.len().saturating_sub(MAX_LISTED);
    lines.truncate(MAX_LISTED);
    for l in &mut lines {
        if l.len() > 1024 {
            let mut cut = 1024;
            while !l.is_char_boundary(cut) {
                cut -= 1;
            }
            l.truncate(cut);
            l.push('…');
        }
    }
    let mut text = lines.join("; ");
    if more > 0 {
        text.push_str(&format!("; … and {more} more"));
    }
    text
}

fn invalid(object: &Value, req: &AdmissionRequest<DynamicObject>, lines: Vec<String>) -> Decision {
    let name = str_at(object, &["metadata", "name"])
        .filter(|n| !n.is_empty())
        .unwrap_or(&req.name);
    Decision::Deny {
        code: 422,
        reason: "Invalid",
        message: format!("ManagerConfig {name:?} is invalid: {}", listed(lines)),
    }
}

fn respond(request: &AdmissionRequest<DynamicObject>, decision: Decision) -> Outcome {
    let operation = operation_label(&request.operation);
    let mut response = AdmissionResponse::from(request);
    let allowed = match decision {
        Decision::Allow { warnings } => {
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            true
        }
        Decision::Deny {
            code,
            reason,
            message,
        } => {
            response = response.deny(message);
            response.result.code = code;
            response.result.reason = reason.to_string();
            response.result.status = Some(StatusSummary::Failure);
            false
        }
    };
    match serde_json::to_vec(&response.into_review()) {
        Ok(body) => Outcome {
            status: StatusCode::OK,
            content_type: JSON,
            body,
            operation,
            allowed,
        },
        Err(e) => Outcome::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode the AdmissionReview response: {e}"),
        ),
    }
}

/// Answers one admission request body. Never panics; see the module docs for the contract.
pub async fn review(body: &[u8], policy: &HookPolicy, reviewer: &dyn AccessReviewer) -> Outcome {
    review_with_claims(body, policy, reviewer, None).await
}

/// [`review`], also refusing a config whose Lease another stored config uses.
pub async fn review_with_claims(
    body: &[u8],
    policy: &HookPolicy,
    reviewer: &dyn AccessReviewer,
    claims: Option<&dyn LeaseClaims>,
) -> Outcome {
    review_with_limits(body, policy, reviewer, claims, None).await
}

/// [`review_with_claims`], also refusing a spec over the operator's static tenant limits
/// (workers per config, timing floors).
pub async fn review_with_limits(
    body: &[u8],
    policy: &HookPolicy,
    reviewer: &dyn AccessReviewer,
    claims: Option<&dyn LeaseClaims>,
    tenant_limits: Option<&TenantLimits>,
) -> Outcome {
    let parsed = match parse(body) {
        Ok(p) => p,
        Err(message) => return Outcome::error(StatusCode::BAD_REQUEST, message),
    };
    match decide(&parsed, policy, reviewer, claims, tenant_limits).await {
        Ok(decision) => {
            let outcome = respond(&parsed.request, decision);
            if !outcome.allowed {
                tracing::info!(
                    uid = %parsed.request.uid,
                    namespace = parsed.request.namespace.as_deref().unwrap_or(""),
                    name = %parsed.request.name,
                    operation = outcome.operation,
                    user = parsed.request.user_info.username.as_deref().unwrap_or(""),
                    "admission denied"
                );
            }
            outcome
        }
        Err(message) => {
            let mut o = Outcome::error(StatusCode::BAD_REQUEST, message);
            o.operation = operation_label(&parsed.request.operation);
            o
        }
    }
}

#[cfg(test)]
mod tests;
