//! Which replicas are alive: one membership Lease per replica, found by one label-narrowed
//! watch, judged alive on this replica's own monotonic clock (like leader election: a member
//! is alive while its Lease changed within its `leaseDurationSeconds`, as observed here).
//!
//! A replica announces itself with `manager-operator.io/ready: "true"` only once it can take
//! work (its ManagerConfig cache synced and every config reconciled once), so configs are not
//! handed to a replica that would let them fall back to a standby. On SIGTERM it deletes its
//! Lease first: the others stop preferring it at once, before its managers release.
//!
//! When this replica cannot renew its own membership (API server down) it stops judging others
//! — it cannot see their renewals either — and keeps the last view until it can.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Label carrying the membership group on membership Leases.
pub const GROUP_LABEL: &str = "manager-operator.io/membership";
/// Annotation saying the replica takes work.
pub const READY_ANNOTATION: &str = "manager-operator.io/ready";
/// Field manager of membership writes.
pub const FIELD_MANAGER: &str = "manager-operator-membership";
/// `leaseDurationSeconds` of a membership Lease.
pub const MEMBER_LEASE_SECONDS: i32 = 10;
/// How often a replica renews its membership Lease.
pub const MEMBER_RENEW: Duration = Duration::from_secs(2);
/// A member Lease unchanged for this long (on our clock) is garbage from a crashed replica.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// Settings of this replica's membership.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// Namespace of the membership Leases.
    pub namespace: String,
    /// Group: replicas of one group share the work.
    pub group: String,
    /// This replica's identity.
    pub identity: String,
    /// The pod this replica runs in, as (name, uid): its membership Lease gets an
    /// ownerReference to it, so the garbage collector deletes the Lease with the pod even when
    /// the replica could not (killed, or its RBAC deleted first by `helm uninstall`).
    pub owner_pod: Option<(String, String)>,
}

/// The Lease name of a member: `mo-member-<identity>` made a valid object name (lowercase,
/// `[a-z0-9-.]`, ≤ 63 characters, with a hash suffix when the identity had to be changed).
pub fn member_lease_name(identity: &str) -> String {
    let cleaned: String = identity
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let base = format!("mo-member-{}", cleaned.trim_matches('-'));
    if base.len() <= 63 && cleaned == identity {
        return base;
    }
    let hash = super::ring::score("member", identity);
    let keep: String = base.chars().take(63 - 17).collect();
    format!("{}-{hash:016x}", keep.trim_end_matches('-'))
}

struct Seen {
    holder: String,
    ready: bool,
    duration: Duration,
    changed_at: Instant,
    content: (Option<String>, Option<Timestamp>, bool),
    resource_version: Option<String>,
}

/// Runs this replica's membership until `stop`: announces (and renews) its Lease, watches the
/// group's Leases, and publishes the sorted identities of the live, ready members (this
/// replica included once it is ready). `ready` says whether this replica takes work. On stop,
/// its Lease is deleted (best effort, bounded).
pub async fn run(
    client: kube::Client,
    cfg: MembershipConfig,
    ready: watch::Receiver<bool>,
    members: watch::Sender<Vec<String>>,
    stop: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let name = member_lease_name(&cfg.identity);
    let selector = format!("{GROUP_LABEL}={}", cfg.group);
    let mut stream = std::pin::pin!(
        watcher::watcher(api.clone(), watcher::Config::default().labels(&selector))
            .default_backoff()
    );
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut last_own_ok: Option<Instant> = None;
    let mut was_judging = false;
    let mut warned = false;
    let mut tick = tokio::time::interval(MEMBER_RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ready_rx = ready.clone();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let is_ready = *ready_rx.borrow_and_update();
                match announce(&api, &name, &cfg, is_ready).await {
                    Ok(()) => { last_own_ok = Some(Instant::now()); warned = false; }
                    Err(e) if !warned => {
                        warn!(error = %e, lease = %name, namespace = %cfg.namespace, "cannot renew this replica's membership Lease; placement keeps its last view");
                        warned = true;
                    }
                    Err(e) => debug!(error = %e, "membership renew failed"),
                }
                collect_garbage(&api, &seen, &name).await;
            }
            r = ready_rx.changed() => {
                if r.is_ok() && *ready_rx.borrow_and_update() {
                    // Say "ready" at once rather than at the next tick.
                    if announce(&api, &name, &cfg, true).await.is_ok() {
                        last_own_ok = Some(Instant::now());
                    }
                } else if r.is_err() {
                    // The replica is going away; keep renewing until stop.
                    ready_rx = ready.clone();
                }
            }
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l))) => observe(&mut seen, &l),
                Some(Ok(watcher::Event::Delete(l))) => { seen.remove(&l.name_any()); }
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(e)) => debug!(error = %e, "membership watch error; retrying"),
                None => break,
            },
        }
        let judging = is_judging(last_own_ok);
        if judging && !was_judging {
            // Back after our own renewals failed: we could not see the others' renewals either,
            // so their clocks restart now rather than expiring them for our outage.
            let now = Instant::now();
            for s in seen.values_mut() {
                s.changed_at = now;
            }
        }
        was_judging = judging;
        let live = live_members(&seen, &cfg.identity, *ready.borrow(), last_own_ok);
        members.send_if_modified(|m| {
            if *m != live {
                info!(members = ?live, "placement: replicas changed");
                *m = live;
                true
            } else {
                false
            }
        });
    }
    leave(&api, &name).await;
}

fn observe(seen: &mut HashMap<String, Seen>, l: &Lease) {
    let spec = l.spec.clone().unwrap_or_default();
    let ready = l
        .annotations()
        .get(READY_ANNOTATION)
        .is_some_and(|v| v == "true");
    let content = (
        spec.holder_identity.clone(),
        spec.renew_time.map(|t| t.0),
        ready,
    );
    let now = Instant::now();
    let secs = spec.lease_duration_seconds.unwrap_or(MEMBER_LEASE_SECONDS);
    let duration = Duration::from_secs(u64::try_from(secs.clamp(1, 3600)).unwrap_or(10));
    let key = l.name_any();
    let changed_at = match seen.get(&key) {
        Some(old) if old.content == content => old.changed_at,
        _ => now,
    };
    seen.insert(
        key,
        Seen {
            holder: spec.holder_identity.unwrap_or_default(),
            ready,
            duration,
            changed_at,
            content,
            resource_version: l.resource_version(),
        },
    );
}

/// True while our own membership renewals succeed (so we can see the others' too).
fn is_judging(last_own_ok: Option<Instant>) -> bool {
    last_own_ok.is_some_and(|t| Instant::now().duration_since(t) < MEMBER_RENEW * 3)
}

/// Live, ready members by identity, sorted. While our own renewals fail we cannot judge the
/// others, so nobody expires then.
fn live_members(
    seen: &HashMap<String, Seen>,
    me: &str,
    me_ready: bool,
    last_own_ok: Option<Instant>,
) -> Vec<String> {
    let now = Instant::now();
    let judging = is_judging(last_own_ok);
    let mut out: Vec<String> = seen
        .values()
        .filter(|s| s.ready && !s.holder.is_empty() && s.holder != me)
        .filter(|s| !judging || now < s.changed_at + s.duration)
        .map(|s| s.holder.clone())
        .collect();
    if me_ready {
        out.push(me.to_string());
    }
    out.sort();
    out.dedup();
    out
}

async fn announce(
    api: &Api<Lease>,
    name: &str,
    cfg: &MembershipConfig,
    ready: bool,
) -> Result<(), kube::Error> {
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now());
    let mut metadata = serde_json::json!({
        "name": name,
        "labels": BTreeMap::from([(GROUP_LABEL, cfg.group.as_str())]),
        "annotations": BTreeMap::from([(READY_ANNOTATION, if ready { "true" } else { "false" })]),
    });
    if let Some((pod, uid)) = &cfg.owner_pod {
        metadata["ownerReferences"] = serde_json::json!([
            {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}
        ]);
    }
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": cfg.identity,
            "leaseDurationSeconds": MEMBER_LEASE_SECONDS,
            "renewTime": now,
        },
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    tokio::time::timeout(
        MEMBER_RENEW,
        api.patch(name, &params, &Patch::Apply(&lease)),
    )
    .await
    .map_err(|_| kube::Error::Service("membership renew timed out".into()))?
    .map(|_| ())
}

/// Deletes member Leases of the group that have not changed for [`STALE_AFTER`] (replicas
/// that crashed), guarded by their resourceVersion so a renewal in between wins.
async fn collect_garbage(api: &Api<Lease>, seen: &HashMap<String, Seen>, own: &str) {
    let now = Instant::now();
    for (name, s) in seen {
        if name == own || now.duration_since(s.changed_at) < STALE_AFTER + s.duration {
            continue;
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: s.resource_version.clone(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => {
                info!(lease = %name, "removed the membership Lease of a replica gone for over a minute")
            }
            Err(e) => debug!(error = %e, lease = %name, "removing a stale membership Lease failed"),
        }
    }
}

/// Deletes this replica's membership Lease, bounded.
async fn leave(api: &Api<Lease>, name: &str) {
    let dp = DeleteParams::default();
    let del = api.delete(name, &dp);
    match tokio::time::timeout(Duration::from_secs(3), del).await {
        Ok(Ok(_)) => info!(lease = %name, "left the placement group"),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => {}
        Ok(Err(e)) => {
            warn!(error = %e, "leaving the placement group failed; the others will notice when the membership Lease expires")
        }
        Err(_) => warn!("leaving the placement group timed out"),
    }
    // Give the others' watches a moment to see it before leases are released.
    sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_lease_names_are_valid_object_names() {
        assert_eq!(member_lease_name("op-1"), "mo-member-op-1");
        for id in [
            "Manager_Operator.x/y",
            &"a".repeat(200),
            "-lead",
            "pod_1234abcd",
        ] {
            let n = member_lease_name(id);
            assert!(n.len() <= 63, "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
            assert!(!n.ends_with('-') && n.starts_with("mo-member-"), "{n}");
        }
        assert_ne!(member_lease_name("a_b"), member_lease_name("a.b"));
    }

    fn seen(holder: &str, ready: bool, age: Duration) -> Seen {
        Seen {
            holder: holder.into(),
            ready,
            duration: Duration::from_secs(10),
            changed_at: Instant::now() - age,
            content: (None, None, ready),
            resource_version: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn live_members_are_ready_and_recently_renewed() {
        tokio::time::advance(Duration::from_secs(100)).await;
        let mut m = HashMap::new();
        m.insert("a".into(), seen("a", true, Duration::from_secs(1)));
        m.insert("b".into(), seen("b", false, Duration::from_secs(1)));
        m.insert("c".into(), seen("c", true, Duration::from_secs(11)));
        let ok = Some(Instant::now());
        assert_eq!(live_members(&m, "me", true, ok), vec!["a", "me"]);
        assert_eq!(live_members(&m, "me", false, ok), vec!["a"]);
        // Our own renewals fail: nobody expires.
        let stale = Some(Instant::now() - Duration::from_secs(30));
        assert_eq!(live_members(&m, "me", true, stale), vec!["a", "c", "me"]);
    }
}
