//! One Lease, one ManagerConfig (docs/design.md §3.1): when several configs name the same Lease, exactly
//! one of them owns it and the others are refused with `LeaseInUse` — by the admission webhook
//! and, since admission can be bypassed, at runtime before their manager touches the Lease.
//!
//! The owner is the config whose uid the Lease's current holder carries (so a running term is
//! never ended by a newcomer, whatever the timestamps say), else the oldest claimant by
//! creationTimestamp, then namespace, name and uid — an order every replica computes alike.

use std::sync::Arc;

use kube::ResourceExt;

use crate::api::ManagerConfig;

/// The Lease a config names, after defaults: (namespace, name).
pub fn lease_of(mc: &ManagerConfig) -> (String, String) {
    let le = &mc.spec.leader_election;
    let ns = le
        .lease_namespace
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| mc.namespace().unwrap_or_default());
    let name = le
        .lease_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| mc.name_any());
    (ns, name)
}

fn order_key(mc: &ManagerConfig) -> (Option<i64>, String, String, String) {
    (
        mc.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_microsecond()),
        mc.namespace().unwrap_or_default(),
        mc.name_any(),
        mc.uid().unwrap_or_default(),
    )
}

fn same_object(a: &ManagerConfig, b: &ManagerConfig) -> bool {
    match (a.uid(), b.uid()) {
        (Some(x), Some(y)) => x == y,
        _ => a.namespace() == b.namespace() && a.name_any() == b.name_any(),
    }
}

/// The other config that owns the Lease `mc` names, if it is not `mc`. `all` is every config
/// the caller knows (the cache); configs being deleted do not count. `holder_uid` is the config
/// uid carried by the Lease's current holder, when known.
pub fn rival_owner(
    mc: &ManagerConfig,
    all: &[Arc<ManagerConfig>],
    holder_uid: Option<&str>,
) -> Option<Arc<ManagerConfig>> {
    let lease = lease_of(mc);
    let rivals: Vec<&Arc<ManagerConfig>> = all
        .iter()
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter(|o| !same_object(o, mc))
        .filter(|o| lease_of(o) == lease)
        .collect();
    if rivals.is_empty() {
        return None;
    }
    if let Some(uid) = holder_uid {
        if mc.uid().as_deref() == Some(uid) {
            return None;
        }
        if let Some(o) = rivals.iter().find(|o| o.uid().as_deref() == Some(uid)) {
            return Some((*o).clone());
        }
    }
    let mine = order_key(mc);
    rivals
        .into_iter()
        // A config without a timestamp (not stored yet: admission of a create) is the youngest.
        .filter(|o| mine.0.is_none() || order_key(o) < mine)
        .min_by_key(|o| order_key(o))
        .cloned()
}

/// What the webhook knows of the stored ManagerConfigs (the operator's cache), so it can refuse
/// a second config on a Lease that another one uses.
pub trait LeaseClaims: Send + Sync {
    /// The other config that owns the Lease `mc` names, if any.
    fn rival(&self, mc: &ManagerConfig) -> Option<Arc<ManagerConfig>>;
}

/// The operator's ManagerConfig cache as the admission webhook's view of Lease claims. Until
/// the cache exists (start-up) nothing is refused on this ground; the runtime check still is.
pub struct StoreClaims(
    pub Arc<std::sync::OnceLock<kube::runtime::reflector::Store<ManagerConfig>>>,
);

impl LeaseClaims for StoreClaims {
    fn rival(&self, mc: &ManagerConfig) -> Option<Arc<ManagerConfig>> {
        let store = self.0.get()?;
        rival_owner(mc, &store.state(), None)
    }
}

/// `Lease ns/name is already used by ManagerConfig ns/name`.
pub fn in_use_message(lease: &(String, String), owner: &ManagerConfig) -> String {
    format!(
        "Lease {}/{} is already used by ManagerConfig {}/{}",
        lease.0,
        lease.1,
        owner.namespace().unwrap_or_default(),
        owner.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mc(yaml: &str) -> Arc<ManagerConfig> {
        Arc::new(serde_yaml::from_str(yaml).expect("fixture"))
    }

    fn cfg(name: &str, uid: &str, created: &str, lease: Option<&str>) -> Arc<ManagerConfig> {
        let lease = lease.map_or(String::new(), |l| format!("    leaseName: {l}\n"));
        mc(&format!(
            "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\nmetadata:\n  name: {name}\n  namespace: team-a\n  uid: {uid}\n  creationTimestamp: \"{created}\"\nspec:\n  leaderElection:\n{lease}  workers:\n  - name: w\n    watch: {{apiVersion: v1, kind: ConfigMap}}\n    hook: {{url: \"https://h.example/x\"}}\n"
        ))
    }

    #[test]
    fn lease_defaults_to_the_config() {
        let a = cfg("alpha", "u1", "2026-01-01T00:00:00Z", None);
        assert_eq!(lease_of(&a), ("team-a".into(), "alpha".into()));
    }

    #[test]
    fn the_older_config_owns_a_shared_lease() {
        let alpha = cfg("alpha", "u1", "2026-01-01T00:00:00Z", None);
        let beta = cfg("beta", "u2", "2026-01-01T00:00:05Z", Some("alpha"));
        let all = vec![alpha.clone(), beta.clone()];
        assert!(rival_owner(&alpha, &all, None).is_none());
        let owner = rival_owner(&beta, &all, None).expect("beta is refused");
        assert_eq!(owner.name_any(), "alpha");
        assert_eq!(
            in_use_message(&lease_of(&beta), &owner),
            "Lease team-a/alpha is already used by ManagerConfig team-a/alpha"
        );
    }

    #[test]
    fn the_holder_keeps_its_lease_whatever_the_timestamps() {
        // Same second, and the younger name sorts first: the running one still keeps it.
        let zeta = cfg("zeta", "u1", "2026-01-01T00:00:00Z", Some("shared"));
        let beta = cfg("beta", "u2", "2026-01-01T00:00:00Z", Some("shared"));
        let all = vec![zeta.clone(), beta.clone()];
        assert_eq!(
            rival_owner(&zeta, &all, None).map(|o| o.name_any()),
            Some("beta".into()),
            "without a holder the order decides"
        );
        assert!(rival_owner(&zeta, &all, Some("u1")).is_none());
        assert_eq!(
            rival_owner(&beta, &all, Some("u1")).map(|o| o.name_any()),
            Some("zeta".into())
        );
    }

    #[test]
    fn configs_being_deleted_and_other_leases_do_not_count() {
        let alpha = cfg("alpha", "u1", "2026-01-01T00:00:00Z", None);
        let mut gone = (*cfg("old", "u0", "2025-01-01T00:00:00Z", Some("alpha"))).clone();
        gone.metadata.deletion_timestamp = alpha.metadata.creation_timestamp.clone();
        let other = cfg("other", "u3", "2025-01-01T00:00:00Z", None);
        let all = vec![alpha.clone(), Arc::new(gone), other];
        assert!(rival_owner(&alpha, &all, None).is_none());
    }

    #[test]
    fn a_config_not_stored_yet_is_the_youngest() {
        let alpha = cfg("alpha", "u1", "2026-01-01T00:00:00Z", None);
        let mut new = (*cfg("beta", "", "2026-01-01T00:00:00Z", Some("alpha"))).clone();
        new.metadata.creation_timestamp = None;
        new.metadata.uid = None;
        let owner = rival_owner(&new, &[alpha], None).map(|o| o.name_any());
        assert_eq!(owner, Some("alpha".into()));
    }
}
