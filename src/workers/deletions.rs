//! Best-effort deletion delivery: the last known state of every watched object that goes away
//! while this replica leads, kept until the hook answered its `Deleted` call.
//!
//! A deletion is seen either as a watch `Delete` event or, when the watch had to list again
//! (an expired resourceVersion, a restarted API server), as an object that the new list no
//! longer holds (its last state comes from the cache). With `finalize: true` a deletion the
//! finalizer already delivered is not delivered again by this replica.
//!
//! Bounded: at most [`MAX_PENDING`] deletions wait per worker; more are dropped with a warning
//! (`finalize: true` is the guarantee; this path is best effort by design).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tracing::warn;

use super::delivery::object_key;

/// Most deletions waiting for delivery per worker.
pub const MAX_PENDING: usize = 1_000;

/// Pending deletions of one worker in one term.
pub struct Tombstones {
    pending: Mutex<HashMap<String, Arc<DynamicObject>>>,
    /// Keys seen since the watch started listing again (`None`: not listing).
    relist: Mutex<Option<HashSet<String>>>,
    /// Keys whose deletion the finalizer path delivered (finalize mode).
    finalized: Mutex<HashSet<String>>,
    finalize: bool,
    tx: mpsc::UnboundedSender<String>,
    /// For warnings: `namespace/name/worker`.
    who: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain collections: a panic while holding the lock cannot leave them inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tombstones {
    /// Tombstones announcing each new pending key on the returned receiver.
    pub fn new(finalize: bool, who: String) -> (Self, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                pending: Mutex::default(),
                relist: Mutex::default(),
                finalized: Mutex::default(),
                finalize,
                tx,
                who,
            },
            rx,
        )
    }

    /// Looks at a watch event before the cache applies it (`store` still holds the state
    /// before the event).
    pub fn observe(&self, ev: &watcher::Event<DynamicObject>, store: &Store<DynamicObject>) {
        match ev {
            watcher::Event::Delete(o) => self.deleted(o),
            watcher::Event::Init => *lock(&self.relist) = Some(HashSet::new()),
            watcher::Event::InitApply(o) => {
                if let Some(seen) = lock(&self.relist).as_mut() {
                    seen.insert(object_key(o));
                }
            }
            watcher::Event::InitDone => {
                let Some(seen) = lock(&self.relist).take() else {
                    return;
                };
                for o in store.state() {
                    if !seen.contains(&object_key(&o)) {
                        self.deleted(&o);
                    }
                }
            }
            watcher::Event::Apply(_) => {}
        }
    }

    fn deleted(&self, o: &DynamicObject) {
        let k = object_key(o);
        if self.finalize && lock(&self.finalized).remove(&k) {
            return;
        }
        let mut pending = lock(&self.pending);
        if pending.len() >= MAX_PENDING && !pending.contains_key(&k) {
            warn!(worker = %self.who, object = %k, pending = pending.len(),
                "too many deletions waiting for the hook; this one is not delivered (use finalize: true for guaranteed delivery)");
            return;
        }
        if pending.insert(k.clone(), Arc::new(o.clone())).is_none() {
            // A new key: start its delivery (a replaced one is picked up by the running one).
            let _ = self.tx.send(k);
        }
    }

    /// Marks `k`'s deletion as delivered through the finalizer (finalize mode): the watch's
    /// `Delete` event that follows is not delivered again.
    pub fn finalized(&self, k: &str) {
        lock(&self.finalized).insert(k.to_string());
    }

    /// Undoes [`Self::finalized`] (the finalizer could not be removed).
    pub fn unfinalized(&self, k: &str) {
        lock(&self.finalized).remove(k);
    }

    /// The pending deletion of `k`, if any.
    pub fn get(&self, k: &str) -> Option<Arc<DynamicObject>> {
        lock(&self.pending).get(k).cloned()
    }

    /// True when a deletion of `k` waits for delivery.
    pub fn contains(&self, k: &str) -> bool {
        lock(&self.pending).contains_key(k)
    }

    /// Drops `k`'s deletion once `delivered` (the version the hook answered) is still the
    /// pending one; `false` when a newer deletion of `k` replaced it meanwhile.
    pub fn delivered(&self, k: &str, delivered: &DynamicObject) -> bool {
        let mut pending = lock(&self.pending);
        match pending.get(k) {
            Some(o) if o.metadata.resource_version == delivered.metadata.resource_version => {
                pending.remove(k);
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// Pending deletions.
    pub fn len(&self) -> usize {
        lock(&self.pending).len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys with a pending deletion.
    pub fn keys(&self) -> Vec<String> {
        lock(&self.pending).keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;

    fn cm(name: &str, rv: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "a", "resourceVersion": rv},
        }))
        .unwrap()
    }

    fn apply(w: &mut Writer<DynamicObject>, t: &Tombstones, ev: watcher::Event<DynamicObject>) {
        t.observe(&ev, &w.as_reader());
        w.apply_watcher_event(&ev);
    }

    #[test]
    fn deletions_come_from_delete_events_and_from_objects_a_relist_lost() {
        let ar = kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
        let mut w = Writer::<DynamicObject>::new(ar);
        let (t, mut rx) = Tombstones::new(false, "a/m/w".into());
        apply(&mut w, &t, watcher::Event::Init);
        apply(&mut w, &t, watcher::Event::InitApply(cm("x", "1")));
        apply(&mut w, &t, watcher::Event::InitApply(cm("y", "2")));
        apply(&mut w, &t, watcher::Event::InitApply(cm("z", "3")));
        apply(&mut w, &t, watcher::Event::InitDone);
        assert!(t.is_empty(), "the first list deletes nothing");
        apply(&mut w, &t, watcher::Event::Delete(cm("x", "4")));
        assert_eq!(rx.try_recv().unwrap(), "a/x");
        assert_eq!(
            t.get("a/x").unwrap().metadata.resource_version.as_deref(),
            Some("4")
        );
        // The watch lists again and y is gone: its last cached state is delivered.
        apply(&mut w, &t, watcher::Event::Init);
        apply(&mut w, &t, watcher::Event::InitApply(cm("z", "3")));
        apply(&mut w, &t, watcher::Event::InitDone);
        assert_eq!(rx.try_recv().unwrap(), "a/y");
        assert_eq!(
            t.get("a/y").unwrap().metadata.resource_version.as_deref(),
            Some("2")
        );
        // A newer deletion of a pending key replaces it without a second delivery.
        apply(&mut w, &t, watcher::Event::Delete(cm("x", "9")));
        assert!(rx.try_recv().is_err());
        assert!(!t.delivered("a/x", &cm("x", "4")), "a newer one is pending");
        assert!(t.delivered("a/x", &cm("x", "9")));
        assert_eq!(t.keys(), vec!["a/y".to_string()]);
    }

    #[test]
    fn finalized_deletions_are_not_delivered_twice_and_pending_ones_are_bounded() {
        let ar = kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
        let w = Writer::<DynamicObject>::new(ar);
        let (t, _rx) = Tombstones::new(true, "a/m/w".into());
        t.finalized("a/x");
        t.observe(&watcher::Event::Delete(cm("x", "4")), &w.as_reader());
        assert!(t.is_empty());
        t.observe(&watcher::Event::Delete(cm("x", "5")), &w.as_reader());
        assert!(
            t.contains("a/x"),
            "only the one the finalizer delivered is skipped"
        );
        for i in 0..MAX_PENDING + 10 {
            t.observe(
                &watcher::Event::Delete(cm(&format!("o{i}"), "1")),
                &w.as_reader(),
            );
        }
        assert_eq!(t.len(), MAX_PENDING);
    }
}
