//! May a ManagerConfig's service account use a Lease outside the config's namespace?
//! (docs/design.md §6; docs/security.md, "Leases".) The operator holds Lease rights
//! cluster-wide; a config could otherwise make it contend for any Lease (kube-system's controller-manager, a node heartbeat) with the webhook off or
//! bypassed. So at runtime, before a manager starts, a Lease in another namespace is used only
//! when the config's **service account** may `get`, `create` and `update` Leases there
//! (`SubjectAccessReview` for `system:serviceaccount:<ns>:<sa>`), else `LeaseForbidden`.
//!
//! Answers (allowed or denied) are cached for [`CACHE_TTL`] in a cache of at most
//! [`CACHE_CAPACITY`] entries, so a namespace full of configs (or a config failing in a loop)
//! costs at most one review round per service account and namespace per TTL.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::api::{Api, PostParams};

use crate::api::conditions::StartupFailure;
use crate::authz::cache::{CacheConfig, TtlCache};
use crate::manager::runtime::Failure;
use crate::webhook::access::SubjectAccessReviewer;
use crate::workers::service_account_user;

/// Verbs the service account needs on `leases.coordination.k8s.io` in the Lease's namespace.
pub const SA_LEASE_VERBS: [&str; 3] = ["get", "create", "update"];
/// How long an answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Cached answers at most (one per service account and Lease namespace).
pub const CACHE_CAPACITY: usize = 4096;
/// Bound on one review round.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer of one review round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Every verb allowed.
    Allowed,
    /// These verbs are denied (with the authorizer's reason, if any).
    Denied {
        /// Denied verbs.
        verbs: Vec<&'static str>,
        /// The authorizer's reason.
        reason: String,
    },
}

/// Why a review could not be answered (transient: the start is retried as `ApiUnavailable`).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The API call failed.
    #[error("SubjectAccessReview failed: {0}")]
    Api(#[from] kube::Error),
    /// The API server did not answer in time.
    #[error("SubjectAccessReview did not answer within {0:?}")]
    Timeout(Duration),
}

/// Asks the authorizer about one user; a seam for tests.
pub trait LeaseReviewer: Send + Sync {
    /// May `user` (a service account) get, create and update Leases in `namespace`?
    fn review<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Access, ReviewError>>;
}

/// The real reviewer: one `SubjectAccessReview` per verb with the operator's client.
pub struct KubeLeaseReviewer(pub kube::Client);

impl LeaseReviewer for KubeLeaseReviewer {
    fn review<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<Access, ReviewError>> {
        Box::pin(async move {
            let api: Api<SubjectAccessReview> = Api::all(self.0.clone());
            let round = async {
                let mut denied = Vec::new();
                let mut reasons = Vec::new();
                for verb in SA_LEASE_VERBS {
                    let review = SubjectAccessReviewer::review_for(user, namespace, verb);
                    let answer = api.create(&PostParams::default(), &review).await?;
                    let verdict = crate::authz::verdict(answer.status);
                    if verdict != crate::authz::Verdict::Allowed {
                        denied.push(verb);
                        let why = verdict.explanation();
                        if !why.is_empty() {
                            reasons.push(why.to_string());
                        }
                    }
                }
                Ok::<_, ReviewError>(if denied.is_empty() {
                    Access::Allowed
                } else {
                    Access::Denied {
                        verbs: denied,
                        reason: reasons.join("; "),
                    }
                })
            };
            tokio::time::timeout(REVIEW_TIMEOUT, round)
                .await
                .map_err(|_| ReviewError::Timeout(REVIEW_TIMEOUT))?
        })
    }
}

/// The `UserInfo` the API server gives a service account's token.
pub fn service_account_info(namespace: &str, name: &str) -> UserInfo {
    UserInfo {
        username: Some(service_account_user(namespace, name)),
        groups: Some(vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ]),
        ..UserInfo::default()
    }
}

/// Cached Lease access reviews.
pub struct LeaseAccess {
    reviewer: Arc<dyn LeaseReviewer>,
    cache: TtlCache<(String, String, String), Access>,
}

impl LeaseAccess {
    /// Reviews with `reviewer`, caching answers for [`CACHE_TTL`] (at most [`CACHE_CAPACITY`]).
    pub fn new(reviewer: Arc<dyn LeaseReviewer>) -> Self {
        Self::with_cache(
            reviewer,
            CacheConfig {
                ttl: CACHE_TTL,
                capacity: CACHE_CAPACITY,
            },
        )
    }

    /// [`LeaseAccess::new`] with another cache configuration.
    pub fn with_cache(reviewer: Arc<dyn LeaseReviewer>, cache: CacheConfig) -> Self {
        Self {
            reviewer,
            cache: TtlCache::new(cache),
        }
    }

    /// `Ok` when the Lease is in the config's namespace, or the config's service account may
    /// get, create and update Leases in `lease_ns`; else `LeaseForbidden` saying why (or
    /// `ApiUnavailable` when the review itself failed).
    pub async fn check(
        &self,
        config_ns: &str,
        service_account: &str,
        lease_ns: &str,
        lease_name: &str,
    ) -> Result<(), Failure> {
        if lease_ns == config_ns {
            return Ok(());
        }
        let key = (
            config_ns.to_string(),
            service_account.to_string(),
            lease_ns.to_string(),
        );
        let access = match self.cache.get(&key) {
            Some(a) => a,
            None => {
                let user = service_account_info(config_ns, service_account);
                match self.reviewer.review(&user, lease_ns).await {
                    Ok(a) => {
                        self.cache.insert(key, a.clone());
                        a
                    }
                    Err(e) => {
                        return Err(Failure::new(
                            StartupFailure::ApiUnavailable,
                            format!(
                                "checking whether service account {config_ns}/{service_account} \
                                 may use Leases in namespace {lease_ns}: {e}"
                            ),
                        ));
                    }
                }
            }
        };
        match access {
            Access::Allowed => Ok(()),
            Access::Denied { verbs, reason } => Err(Failure::new(
                StartupFailure::LeaseForbidden,
                format!(
                    "spec.leaderElection.leaseNamespace: Lease {lease_ns}/{lease_name} is outside \
                     the ManagerConfig's namespace {config_ns}, and its service account \
                     {user} may not {verbs} leases.coordination.k8s.io in namespace \
                     {lease_ns}{why}; the operator uses a Lease in another namespace only for a \
                     config whose service account may get, create and update Leases there \
                     (e.g. `kubectl -n {lease_ns} create role {service_account}-leases \
                     --verb=get,create,update --resource=leases.coordination.k8s.io` and a \
                     RoleBinding to {user})",
                    user = service_account_user(config_ns, service_account),
                    verbs = verbs.join(", "),
                    why = if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    },
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Fake {
        allow: bool,
        calls: AtomicU32,
    }

    impl LeaseReviewer for Fake {
        fn review<'a>(
            &'a self,
            user: &'a UserInfo,
            _namespace: &'a str,
        ) -> BoxFuture<'a, Result<Access, ReviewError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            assert_eq!(
                user.username.as_deref(),
                Some("system:serviceaccount:team-a:worker")
            );
            let allow = self.allow;
            Box::pin(async move {
                Ok(if allow {
                    Access::Allowed
                } else {
                    Access::Denied {
                        verbs: vec!["get", "update"],
                        reason: String::new(),
                    }
                })
            })
        }
    }

    fn access(allow: bool) -> (Arc<Fake>, LeaseAccess) {
        let fake = Arc::new(Fake {
            allow,
            calls: AtomicU32::new(0),
        });
        let a = LeaseAccess::new(fake.clone());
        (fake, a)
    }

    #[tokio::test]
    async fn same_namespace_needs_no_review() {
        let (fake, a) = access(false);
        a.check("team-a", "worker", "team-a", "l").await.unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn denied_is_lease_forbidden_naming_the_service_account_and_cached() {
        let (fake, a) = access(false);
        for _ in 0..5 {
            let f = a
                .check("team-a", "worker", "kube-system", "kube-controller-manager")
                .await
                .unwrap_err();
            assert_eq!(f.reason, StartupFailure::LeaseForbidden);
            assert!(
                f.message
                    .contains("system:serviceaccount:team-a:worker may not get, update")
            );
            assert!(f.message.contains("kube-system/kube-controller-manager"));
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "cached");
    }

    #[tokio::test]
    async fn allowed_passes() {
        let (_, a) = access(true);
        a.check("team-a", "worker", "shared", "l").await.unwrap();
    }

    #[tokio::test]
    async fn cache_is_bounded() {
        let fake = Arc::new(Fake {
            allow: true,
            calls: AtomicU32::new(0),
        });
        let a = LeaseAccess::with_cache(
            fake.clone(),
            CacheConfig {
                ttl: Duration::from_secs(60),
                capacity: 8,
            },
        );
        for i in 0..100 {
            a.check("team-a", "worker", &format!("ns{i}"), "l")
                .await
                .unwrap();
        }
        assert!(a.cache.len() <= 8);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 100);
    }
}
