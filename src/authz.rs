//! One reading of an authorizer's answer (`SubjectAccessReviewStatus`, the status of both
//! SubjectAccessReviews and SelfSubjectAccessReviews), for every place that asks one: the
//! webhook's Lease checks, the controller's cross-namespace Lease check, the workers' preflight
//! and the secure metrics server.
//!
//! The subtle case: `allowed: false` with an `evaluationError` and without `denied: true` means
//! the authorizer *failed*, not that it said no. Callers that can tell the user "try again" or
//! "the authorizer is broken" need to keep the two apart.

use k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus;

/// What an authorizer answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed.
    Allowed,
    /// Not allowed; `reason` is the authorizer's (possibly empty) explanation, with any
    /// evaluation error appended.
    Denied {
        /// Why, as the authorizer put it.
        reason: String,
    },
    /// Not allowed because the authorizer could not evaluate the request (an
    /// `evaluationError` without `denied: true`): not a "no".
    Unevaluated {
        /// The evaluation error.
        message: String,
    },
}

/// Reads a review's status (a missing status counts as "not allowed, no reason").
pub fn verdict(status: Option<SubjectAccessReviewStatus>) -> Verdict {
    let status = status.unwrap_or_default();
    if status.allowed {
        return Verdict::Allowed;
    }
    let evaluation_error = status.evaluation_error.filter(|e| !e.is_empty());
    match evaluation_error {
        Some(message) if status.denied != Some(true) => Verdict::Unevaluated { message },
        Some(e) => Verdict::Denied {
            reason: format!("{} {e}", status.reason.unwrap_or_default())
                .trim()
                .to_string(),
        },
        None => Verdict::Denied {
            reason: status.reason.unwrap_or_default(),
        },
    }
}

impl Verdict {
    /// A one-line explanation of a refusal (empty when allowed or unexplained).
    pub fn explanation(&self) -> &str {
        match self {
            Verdict::Allowed => "",
            Verdict::Denied { reason } => reason,
            Verdict::Unevaluated { message } => message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(
        allowed: bool,
        denied: Option<bool>,
        reason: &str,
        err: &str,
    ) -> SubjectAccessReviewStatus {
        SubjectAccessReviewStatus {
            allowed,
            denied,
            reason: Some(reason.into()).filter(|r: &String| !r.is_empty()),
            evaluation_error: Some(err.into()).filter(|e: &String| !e.is_empty()),
        }
    }

    #[test]
    fn reads_every_shape_of_answer() {
        assert_eq!(verdict(Some(status(true, None, "", ""))), Verdict::Allowed);
        assert_eq!(
            verdict(Some(status(false, None, "no RBAC", ""))),
            Verdict::Denied {
                reason: "no RBAC".into()
            }
        );
        // An evaluation error without `denied`: the authorizer failed.
        assert_eq!(
            verdict(Some(status(false, None, "", "webhook authorizer down"))),
            Verdict::Unevaluated {
                message: "webhook authorizer down".into()
            }
        );
        // `denied: true` wins over an evaluation error: it is a no.
        assert_eq!(
            verdict(Some(status(
                false,
                Some(true),
                "denied by policy",
                "partial"
            ))),
            Verdict::Denied {
                reason: "denied by policy partial".into()
            }
        );
        assert_eq!(
            verdict(None),
            Verdict::Denied {
                reason: String::new()
            }
        );
        assert_eq!(
            verdict(Some(status(false, None, "x", ""))).explanation(),
            "x"
        );
    }
}
