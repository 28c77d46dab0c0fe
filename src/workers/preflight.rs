//! A worker's start checks, all made through the impersonated client: may the operator act as
//! the service account, is the watched kind served, may the service account list and watch it.
//! Each maps to a stable [`StartupFailure`] reason with a message that says what to do.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{self, Scope, verbs};

use crate::api::conditions::StartupFailure;
use crate::manager::runtime::Failure;
use crate::validation::ResolvedWorker;

/// Bound on each API call a preflight makes.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a worker's objects live, as discovery resolved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchTarget {
    /// The resolved resource (group, version, kind, plural).
    pub resource: ApiResource,
    /// Namespace to watch; `None` for a cluster-scoped kind.
    pub namespace: Option<String>,
}

impl WatchTarget {
    /// `plural` for the core group, `plural.group` otherwise (as RBAC and kubectl name it).
    pub fn resource_name(&self) -> String {
        resource_name(&self.resource)
    }

    /// "in namespace X" or "cluster-wide".
    pub fn scope_phrase(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "cluster-wide".to_string(),
        }
    }
}

/// `plural` for the core group, `plural.group` otherwise.
pub fn resource_name(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}.{}", ar.plural, ar.group)
    }
}

/// The `apiVersion` of a worker's watch.
pub fn api_version(w: &ResolvedWorker) -> String {
    if w.group.is_empty() {
        w.version.clone()
    } else {
        format!("{}/{}", w.group, w.version)
    }
}

/// Who the worker acts as, for messages.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `system:serviceaccount:<ns>:<name>`.
    pub user: String,
    /// Service account namespace.
    pub namespace: String,
    /// Service account name.
    pub name: String,
}

/// True when an API error says the operator may not impersonate.
pub fn is_impersonation_denied(status: &kube::core::Status) -> bool {
    status.code == 403 && status.message.contains("impersonate")
}

fn impersonation_failure(who: &Identity, worker: &str, detail: &str) -> Failure {
    Failure::new(
        StartupFailure::ImpersonationForbidden,
        format!(
            "worker {worker}: the operator may not act as service account {ns}/{sa} ({detail}); \
             grant the operator's identity the verb impersonate on serviceaccounts \
             (resourceNames: [{sa}]) in namespace {ns}, e.g. `kubectl -n {ns} create role \
             impersonate-{sa} --verb=impersonate --resource=serviceaccounts --resource-name={sa}` \
             plus a RoleBinding to the operator",
            ns = who.namespace,
            sa = who.name,
        ),
    )
}

fn api_failure(worker: &str, what: &str, e: &kube::Error) -> Failure {
    Failure::new(
        StartupFailure::ApiUnavailable,
        format!(
            "worker {worker}: {what} failed: {e}; check the API server's health (the operator retries)"
        ),
    )
}

fn not_served(w: &ResolvedWorker, detail: &str) -> Failure {
    let av = api_version(w);
    Failure::new(
        StartupFailure::WatchTargetNotFound,
        format!(
            "worker {}: apiVersion {av} kind {} is not served by the API server ({detail}); \
             install the CustomResourceDefinition that defines it (and wait until it is \
             Established), or fix spec.workers[].watch.apiVersion/kind",
            w.name, w.kind
        ),
    )
}

/// Runs `fut` with [`CALL_TIMEOUT`]; a timeout is `ApiUnavailable`.
async fn bounded<T>(
    worker: &str,
    what: &str,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<Result<T, kube::Error>, Failure> {
    tokio::time::timeout(CALL_TIMEOUT, fut).await.map_err(|_| {
        Failure::new(
            StartupFailure::ApiUnavailable,
            format!(
                "worker {worker}: {what} did not answer within {CALL_TIMEOUT:?}; check the API \
                 server's health (the operator retries)"
            ),
        )
    })
}

/// Resolves the watched kind by discovery, as the service account.
pub async fn discover(
    client: &kube::Client,
    w: &ResolvedWorker,
    who: &Identity,
) -> Result<WatchTarget, Failure> {
    let gvk = GroupVersionKind::gvk(&w.group, &w.version, &w.kind);
    let what = format!("discovery of {} {}", api_version(w), w.kind);
    let (resource, caps) =
        match bounded(&w.name, &what, discovery::pinned_kind(client, &gvk)).await? {
            Ok(found) => found,
            Err(kube::Error::Api(s)) if is_impersonation_denied(&s) => {
                return Err(impersonation_failure(who, &w.name, &s.message));
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(not_served(
                    w,
                    &format!("group/version {} not found", api_version(w)),
                ));
            }
            Err(kube::Error::Discovery(d)) => {
                return Err(not_served(w, &d.to_string()));
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                return Err(Failure::new(
                    StartupFailure::WatchForbidden,
                    format!(
                        "worker {}: service account {} may not read API discovery ({}); it needs \
                     the default system:discovery ClusterRole binding for authenticated users",
                        w.name, who.user, s.message
                    ),
                ));
            }
            Err(e) => return Err(api_failure(&w.name, &what, &e)),
        };
    if !(caps.supports_operation(verbs::LIST) && caps.supports_operation(verbs::WATCH)) {
        return Err(not_served(
            w,
            &format!(
                "{} does not support list and watch",
                resource_name(&resource)
            ),
        ));
    }
    let namespace = match caps.scope {
        Scope::Namespaced => Some(w.namespace.clone()),
        Scope::Cluster => None,
    };
    Ok(WatchTarget {
        resource,
        namespace,
    })
}

/// Asks the API server, as the service account, whether it may list and watch the target.
pub async fn check_access(
    client: &kube::Client,
    w: &ResolvedWorker,
    target: &WatchTarget,
    who: &Identity,
) -> Result<(), Failure> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut denied: Vec<(&str, String)> = Vec::new();
    // finalize: true adds and removes the worker's finalizer on the watched objects.
    let needed: &[&str] = if w.finalize {
        &["list", "watch", "patch"]
    } else {
        &["list", "watch"]
    };
    for verb in needed.iter().copied() {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some(target.resource.group.clone()),
                    version: Some(target.resource.version.clone()),
                    resource: Some(target.resource.plural.clone()),
                    namespace: target.namespace.clone(),
                    verb: Some(verb.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let what = format!("SelfSubjectAccessReview for {verb}");
        let answer =
            match bounded(&w.name, &what, api.create(&PostParams::default(), &review)).await? {
                Ok(a) => a,
                Err(kube::Error::Api(s)) if is_impersonation_denied(&s) => {
                    return Err(impersonation_failure(who, &w.name, &s.message));
                }
                Err(e) => return Err(api_failure(&w.name, &what, &e)),
            };
        let verdict = crate::authz::verdict(answer.status);
        if verdict != crate::authz::Verdict::Allowed {
            denied.push((verb, verdict.explanation().to_string()));
        }
    }
    if denied.is_empty() {
        return Ok(());
    }
    let verbs: Vec<&str> = denied.iter().map(|(v, _)| *v).collect();
    let reasons: Vec<&str> = denied
        .iter()
        .map(|(_, r)| r.as_str())
        .filter(|r| !r.is_empty())
        .collect();
    let res = target.resource_name();
    let (verb_list, verb_words) = if w.finalize {
        (
            "get,list,watch,patch",
            "get, list, watch and patch (finalize: true)",
        )
    } else {
        ("get,list,watch", "get, list and watch")
    };
    let grant = match &target.namespace {
        Some(ns) => format!(
            "e.g. `kubectl -n {ns} create role {sa}-watch --verb={verb_list} --resource={res}` \
             and `kubectl -n {ns} create rolebinding {sa}-watch --role={sa}-watch \
             --serviceaccount={sans}:{sa}`",
            sa = who.name,
            sans = who.namespace,
        ),
        None => format!(
            "e.g. `kubectl create clusterrole {sa}-watch --verb={verb_list} --resource={res}` \
             and `kubectl create clusterrolebinding {sans}-{sa}-watch --clusterrole={sa}-watch \
             --serviceaccount={sans}:{sa}`",
            sa = who.name,
            sans = who.namespace,
        ),
    };
    Err(Failure::new(
        StartupFailure::WatchForbidden,
        format!(
            "worker {}: service account {} may not {} {res} {}{}; grant it {verb_words} \
             on {res} there, {grant}",
            w.name,
            who.user,
            verbs.join(" or "),
            target.scope_phrase(),
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join("; "))
            },
        ),
    ))
}

/// Classifies an error of the running watch: 403/404 end the worker with a stable reason (RBAC
/// revoked, CRD removed); anything else is transient (the watcher retries with backoff).
pub fn watch_failure(
    e: &kube::runtime::watcher::Error,
    w: &ResolvedWorker,
    target: &WatchTarget,
    who: &Identity,
) -> Option<Failure> {
    use kube::runtime::watcher::Error as W;
    let status: &kube::core::Status = match e {
        W::InitialListFailed(kube::Error::Api(s))
        | W::WatchStartFailed(kube::Error::Api(s))
        | W::WatchFailed(kube::Error::Api(s)) => s,
        W::WatchError(s) => s,
        _ => return None,
    };
    if is_impersonation_denied(status) {
        return Some(impersonation_failure(who, &w.name, &status.message));
    }
    match status.code {
        403 => Some(Failure::new(
            StartupFailure::WatchForbidden,
            format!(
                "worker {}: service account {} may no longer list/watch {} {} ({}); grant it \
                 get, list and watch on {} there",
                w.name,
                who.user,
                target.resource_name(),
                target.scope_phrase(),
                status.message,
                target.resource_name(),
            ),
        )),
        404 => Some(not_served(w, &status.message)),
        _ => None,
    }
}
