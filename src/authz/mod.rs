//! Authorization helpers for every place that asks the API server's authorizer: the webhook's
//! Lease checks, the controller's cross-namespace Lease check, the workers' preflight and the
//! secure metrics server.
//!
//! * [`review_as`] builds the `SubjectAccessReview` for a user (copied from a request's
//!   `userInfo` or a TokenReview) and a resource or non-resource attribute;
//! * [`verdict`] is the one reading of the answer (`SubjectAccessReviewStatus`, the status of
//!   both SubjectAccessReviews and SelfSubjectAccessReviews);
//! * [`cache`] keeps answers for a short time in a bounded map.
//!
//! The subtle case of [`verdict`]: `allowed: false` with an `evaluationError` and without `denied: true` means
//! the authorizer *failed*, not that it said no. Callers that can tell the user "try again" or
//! "the authorizer is broken" need to keep the two apart.

pub mod cache;

use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    SubjectAccessReviewStatus,
};

/// What a review asks about.
#[derive(Clone, Debug, PartialEq)]
pub enum Attributes {
    /// A verb on a resource (e.g. `create` on `leases.coordination.k8s.io` in a namespace).
    Resource(Box<ResourceAttributes>),
    /// A verb on a non-resource URL (e.g. `get` on `/metrics`).
    NonResource(NonResourceAttributes),
}

/// The `SubjectAccessReview` asking whether `user` (username, groups, uid and extra) may do
/// what `attributes` say.
pub fn review_as(user: &UserInfo, attributes: Attributes) -> SubjectAccessReview {
    let (resource_attributes, non_resource_attributes) = match attributes {
        Attributes::Resource(r) => (Some(*r), None),
        Attributes::NonResource(n) => (None, Some(n)),
    };
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes,
            non_resource_attributes,
        },
        ..SubjectAccessReview::default()
    }
}

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
