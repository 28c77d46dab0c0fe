//! Who may point a ManagerConfig at a Lease in another namespace (docs/design.md §6): decided by
//! `authorization.k8s.io/v1` SubjectAccessReviews for the *requesting* user, behind a small
//! trait so the admission handler can be tested without a cluster.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview};
use kube::api::{Api, PostParams};

use crate::authz::{Attributes, Verdict, review_as};

/// The verbs a user needs on `leases.coordination.k8s.io` in a namespace before a ManagerConfig
/// may elect its leader on a Lease there.
pub const LEASE_VERBS: [&str; 2] = ["create", "update"];

/// Why an access review could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum AccessReviewError {
    /// The API server refused or failed the SubjectAccessReview.
    #[error("the SubjectAccessReview for verb {verb:?} failed: {source}")]
    Api {
        /// The verb under review.
        verb: &'static str,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server did not answer in time.
    #[error("the SubjectAccessReview did not complete within {0:?}")]
    Timeout(Duration),
    /// The API server evaluated the review with an error.
    #[error("the authorizer could not evaluate verb {verb:?}: {message}")]
    Evaluation {
        /// The verb under review.
        verb: &'static str,
        /// The evaluation error.
        message: String,
    },
}

/// Decides whether a user may manage Leases in a namespace.
pub trait AccessReviewer: Send + Sync {
    /// `Ok(true)` when `user` may create **and** update `leases.coordination.k8s.io` in
    /// `namespace`.
    fn may_manage_leases<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<bool, AccessReviewError>>;
}

/// The real reviewer: one `SubjectAccessReview` per verb, as the requesting user (username,
/// groups, uid and extra copied from the AdmissionRequest's `userInfo`).
#[derive(Clone)]
pub struct SubjectAccessReviewer {
    client: kube::Client,
    timeout: Duration,
}

impl SubjectAccessReviewer {
    /// A reviewer that creates SubjectAccessReviews with `client` (the operator's identity needs
    /// `create` on `subjectaccessreviews.authorization.k8s.io`). Each review is bounded by 3 s so
    /// the admission answer stays within the webhook's 5 s timeout.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            timeout: Duration::from_secs(3),
        }
    }

    /// The review for one verb.
    pub fn review_for(user: &UserInfo, namespace: &str, verb: &str) -> SubjectAccessReview {
        review_as(
            user,
            Attributes::Resource(Box::new(ResourceAttributes {
                group: Some("coordination.k8s.io".into()),
                resource: Some("leases".into()),
                namespace: Some(namespace.into()),
                verb: Some(verb.into()),
                ..ResourceAttributes::default()
            })),
        )
    }

    async fn check(&self, user: &UserInfo, namespace: &str) -> Result<bool, AccessReviewError> {
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        for verb in LEASE_VERBS {
            let review = Self::review_for(user, namespace, verb);
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|source| AccessReviewError::Api {
                    verb,
                    source: Box::new(source),
                })?;
            match crate::authz::verdict(answer.status) {
                Verdict::Allowed => {}
                Verdict::Denied { .. } => return Ok(false),
                Verdict::Unevaluated { message } => {
                    tracing::warn!(%namespace, verb, %message, "SubjectAccessReview evaluation error");
                    return Err(AccessReviewError::Evaluation { verb, message });
                }
            }
        }
        Ok(true)
    }
}

impl AccessReviewer for SubjectAccessReviewer {
    fn may_manage_leases<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<bool, AccessReviewError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.check(user, namespace)).await {
                Ok(result) => result,
                Err(_) => Err(AccessReviewError::Timeout(self.timeout)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_copies_the_requesting_user() {
        let user = UserInfo {
            username: Some("alice".into()),
            groups: Some(vec!["team-a".into(), "system:authenticated".into()]),
            uid: Some("1234".into()),
            extra: Some([("scopes".to_string(), vec!["x".to_string()])].into()),
        };
        let sar = SubjectAccessReviewer::review_for(&user, "leases-ns", "update");
        assert_eq!(sar.spec.user.as_deref(), Some("alice"));
        assert_eq!(sar.spec.groups, user.groups);
        assert_eq!(sar.spec.uid.as_deref(), Some("1234"));
        assert_eq!(sar.spec.extra, user.extra);
        let ra = sar.spec.resource_attributes.expect("resource attributes");
        assert_eq!(ra.group.as_deref(), Some("coordination.k8s.io"));
        assert_eq!(ra.resource.as_deref(), Some("leases"));
        assert_eq!(ra.namespace.as_deref(), Some("leases-ns"));
        assert_eq!(ra.verb.as_deref(), Some("update"));
    }
}
