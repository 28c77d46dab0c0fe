//! Placement: which replica should lead each ManagerConfig (docs/design.md §3.1).
//!
//! Every replica runs the same pure computation ([`ring::assign`]) over what it sees — the
//! live, ready replicas of its group ([`membership`]) and the ManagerConfigs in its cache — and
//! publishes, per config, this replica's rank: 0 for the preferred leader, 1 for its successor,
//! and so on. There is no coordinator: replicas that see the same members and configs agree,
//! and while views differ (a replica just joined) the Lease still guarantees one holder; the
//! views converge within a membership renew period.
//!
//! The manager runtime reads the rank ([`crate::manager::runtime::Placement`]): the preferred
//! replica campaigns at once, standbys later; a leader that is no longer preferred hands over
//! (drain, then release), paced replica-wide by a [`Pacer`].

pub mod membership;
pub mod ring;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::manager::handover::Pacer;

/// How often the placement is recomputed when nothing wakes it earlier (new configs appear
/// in the cache without a notification).
pub const RECOMPUTE_INTERVAL: Duration = Duration::from_millis(500);

/// The members an assignment was computed over, and the takeover order per config key.
type LastAssignment = (Vec<String>, HashMap<String, Vec<String>>);

/// The config keys placement distributes: `namespace/name` of every ManagerConfig in the cache.
pub type KeySource = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// This replica's view of the placement, with one rank channel per config.
pub struct PlacementService {
    me: String,
    members: watch::Receiver<Vec<String>>,
    ranks: Mutex<HashMap<String, watch::Sender<u32>>>,
    /// The last assignment computed (members it was computed over, takeover order per key).
    last: Mutex<LastAssignment>,
    /// A rank channel was seeded without the load cap: recompute at the next tick even if the
    /// view did not change.
    dirty: AtomicBool,
    /// Paces this replica's handovers.
    pub pacer: Arc<Pacer>,
    replicas_seen: Option<IntGauge>,
    preferred: Option<IntGauge>,
}

/// This replica's rank in `order` (the takeover order of one config): its index, or after
/// everyone when it is not a member (not ready yet); 0 when no member is known (alone).
fn rank_in(order: &[&str], me: &str) -> u32 {
    if order.is_empty() {
        return 0;
    }
    let pos = order.iter().position(|m| *m == me).unwrap_or(order.len());
    u32::try_from(pos).unwrap_or(u32::MAX)
}

impl PlacementService {
    /// A service for replica `me`, fed by `members` (see [`membership::run`]).
    pub fn new(
        me: &str,
        members: watch::Receiver<Vec<String>>,
        pacer: Pacer,
        replicas_seen: Option<IntGauge>,
        preferred: Option<IntGauge>,
    ) -> Arc<Self> {
        Arc::new(Self {
            me: me.to_string(),
            members,
            ranks: Mutex::new(HashMap::new()),
            last: Mutex::new((Vec::new(), HashMap::new())),
            dirty: AtomicBool::new(false),
            pacer: Arc::new(pacer),
            replicas_seen,
            preferred,
        })
    }

    /// This replica's rank for `key`, kept up to date: from the last assignment when it
    /// covered the key over the current members, else its plain rendezvous rank until the next
    /// recompute (which the service then runs at its next tick, whatever else changed).
    pub fn rank_for(&self, key: &str) -> watch::Receiver<u32> {
        let mut ranks = match self.ranks.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        if let Some(tx) = ranks.get(key) {
            return tx.subscribe();
        }
        let members = self.members.borrow().clone();
        let from_last = match self.last.lock() {
            Ok(last) if last.0 == members => last.1.get(key).map(|order| {
                let order: Vec<&str> = order.iter().map(String::as_str).collect();
                rank_in(&order, &self.me)
            }),
            _ => None,
        };
        let rank = match from_last {
            Some(r) => r,
            None => {
                self.dirty.store(true, Ordering::Release);
                rank_in(&ring::ranking(&members, key), &self.me)
            }
        };
        let (tx, rx) = watch::channel(rank);
        ranks.insert(key.to_string(), tx);
        rx
    }

    /// This replica's rank for `key` now (0: placement prefers this replica), without keeping a
    /// channel: the rank of the key's channel when a manager follows it, else the one the last
    /// assignment gives, else the plain rendezvous rank.
    pub fn current_rank(&self, key: &str) -> u32 {
        if let Ok(ranks) = self.ranks.lock()
            && let Some(tx) = ranks.get(key)
        {
            return *tx.borrow();
        }
        let members = self.members.borrow().clone();
        if let Ok(last) = self.last.lock()
            && last.0 == members
            && let Some(order) = last.1.get(key)
        {
            let order: Vec<&str> = order.iter().map(String::as_str).collect();
            return rank_in(&order, &self.me);
        }
        rank_in(&ring::ranking(&members, key), &self.me)
    }

    /// Recomputes every rank from `members` and `keys`; returns how many configs prefer this
    /// replica.
    pub fn apply(&self, members: &[String], keys: &[String]) -> usize {
        let assignment = ring::assign(members, keys);
        // Holding `ranks` while publishing `last` keeps rank_for from seeding between the two.
        let mut ranks = match self.ranks.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        // Channels nobody listens to any more (the manager stopped) go.
        ranks.retain(|_, tx| tx.receiver_count() > 0);
        for (key, tx) in ranks.iter() {
            let rank = match assignment.get(key) {
                Some(order) => {
                    let order: Vec<&str> = order.iter().map(String::as_str).collect();
                    rank_in(&order, &self.me)
                }
                None => rank_in(&ring::ranking(members, key), &self.me),
            };
            tx.send_if_modified(|r| {
                let changed = *r != rank;
                *r = rank;
                changed
            });
        }
        let preferred = assignment
            .values()
            .filter(|order| order.first().is_some_and(|m| *m == self.me))
            .count();
        if let Ok(mut last) = self.last.lock() {
            *last = (members.to_vec(), assignment);
        }
        preferred
    }

    /// Recomputes on every change of members, and every [`RECOMPUTE_INTERVAL`] when the set of
    /// configs changed, until `stop`.
    pub async fn run(self: Arc<Self>, keys: KeySource, stop: CancellationToken) {
        let mut members_rx = self.members.clone();
        let mut last: Option<(Vec<String>, Vec<String>)> = None;
        let mut tick = tokio::time::interval(RECOMPUTE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                r = members_rx.changed() => if r.is_err() { return },
            }
            let members = members_rx.borrow_and_update().clone();
            let mut k = keys();
            k.sort();
            let view = (members, k);
            let dirty = self.dirty.swap(false, Ordering::AcqRel);
            if !dirty && last.as_ref() == Some(&view) {
                continue;
            }
            let preferred = self.apply(&view.0, &view.1);
            if let Some(g) = &self.replicas_seen {
                g.set(i64::try_from(view.0.len()).unwrap_or(i64::MAX));
            }
            if let Some(g) = &self.preferred {
                g.set(i64::try_from(preferred).unwrap_or(i64::MAX));
            }
            last = Some(view);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(me: &str, members: &[&str]) -> (Arc<PlacementService>, watch::Sender<Vec<String>>) {
        let (tx, rx) = watch::channel(members.iter().map(|m| m.to_string()).collect());
        (
            PlacementService::new(
                me,
                rx,
                Pacer::new(5, Duration::from_millis(500)),
                None,
                None,
            ),
            tx,
        )
    }

    #[test]
    fn ranks_follow_the_assignment_and_every_replica_agrees() {
        let members: Vec<String> = ["r0", "r1", "r2"].iter().map(|s| s.to_string()).collect();
        let keys: Vec<String> = (0..30).map(|i| format!("ns/c{i}")).collect();
        let services: Vec<_> = ["r0", "r1", "r2"]
            .iter()
            .map(|me| svc(me, &["r0", "r1", "r2"]).0)
            .collect();
        let rx: Vec<Vec<watch::Receiver<u32>>> = services
            .iter()
            .map(|s| keys.iter().map(|k| s.rank_for(k)).collect())
            .collect();
        let preferred: usize = services.iter().map(|s| s.apply(&members, &keys)).sum();
        assert_eq!(
            preferred, 30,
            "every config has exactly one preferred replica"
        );
        for (i, _) in keys.iter().enumerate() {
            let mut ranks: Vec<u32> = rx.iter().map(|r| *r[i].borrow()).collect();
            ranks.sort();
            assert_eq!(ranks, vec![0, 1, 2], "config {i}");
        }
    }

    #[test]
    fn alone_or_not_yet_a_member() {
        let (alone, _tx) = svc("me", &[]);
        assert_eq!(*alone.rank_for("ns/a").borrow(), 0);
        assert_eq!(alone.current_rank("ns/other"), 0);
        let (joining, _tx) = svc("me", &["a", "b"]);
        assert_eq!(
            *joining.rank_for("ns/a").borrow(),
            2,
            "not ready yet: after every member"
        );
    }

    #[test]
    fn a_manager_subscribing_after_the_recompute_gets_the_capped_rank() {
        // 60 configs over 3 replicas: some configs' rendezvous favourite is full, so their
        // capped rank differs from the plain one. A manager that subscribes after the
        // recompute that included its key must see the capped rank (a regression left such
        // configs on the favourite forever: 26/17/17 instead of 21/19/20).
        let members: Vec<String> = ["r0", "r1", "r2"].iter().map(|s| s.to_string()).collect();
        let keys: Vec<String> = (0..60).map(|i| format!("ns/c{i:02}")).collect();
        let assignment = ring::assign(&members, &keys);
        let (s, _tx) = svc("r0", &["r0", "r1", "r2"]);
        s.apply(&members, &keys);
        let mut differing = 0;
        for k in &keys {
            let order: Vec<&str> = assignment[k].iter().map(String::as_str).collect();
            let plain = rank_in(&ring::ranking(&members, k), "r0");
            let capped = rank_in(&order, "r0");
            differing += usize::from(plain != capped);
            assert_eq!(*s.rank_for(k).borrow(), capped, "{k}");
        }
        assert!(differing > 0, "the fixture exercises the cap");
        assert!(!s.dirty.load(Ordering::Acquire));
        // A key the last recompute did not cover: plain rank now, recompute requested.
        let _r = s.rank_for("ns/new");
        assert!(s.dirty.load(Ordering::Acquire));
    }

    #[test]
    fn unused_channels_are_dropped() {
        let (s, _tx) = svc("r0", &["r0"]);
        let rx = s.rank_for("ns/a");
        drop(rx);
        let _kept = s.rank_for("ns/b");
        s.apply(&["r0".into()], &["ns/a".into(), "ns/b".into()]);
        assert_eq!(s.ranks.lock().map(|r| r.len()).unwrap_or(0), 1);
    }
}
