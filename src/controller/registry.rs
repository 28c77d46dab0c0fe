//! What this replica keeps per ManagerConfig: its running manager (if any), the generation and
//! uid it was started for, its retry backoff, the last failure and the finalize-mode spec to
//! clean up after. Everything else in the controller asks it by intent ("may this config
//! start?", "it failed", "it recovered", "which configs vanished?") and never sees the lock,
//! so each rule lives here once and is unit-tested with a fake manager.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::api::conditions::StartupFailure;
use crate::manager::runtime::{Failure, Manager, ManagerState};
use crate::validation::ResolvedConfig;

/// Retry backoff after a failed start: 1s, 2s, 4s ... (plus up to 10 % jitter) capped here.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Backoff after `failures` consecutive failed starts.
pub fn backoff(failures: u32) -> Duration {
    crate::backoff::delay(Duration::from_secs(1), MAX_BACKOFF, failures)
}

/// What the registry needs of a running manager (the real [`Manager`], or a fake in tests).
pub trait ManagerHandle: Send + Sync + 'static {
    /// False when the manager believes it leads but has not renewed within its lease.
    fn leader_healthy(&self) -> bool;
    /// True while it leads, starts or runs its workers (what a shutdown hands over).
    fn holds_work(&self) -> bool;
    /// Stops it gracefully (workers, then the lease).
    fn shutdown(self) -> BoxFuture<'static, ()>;
}

impl ManagerHandle for Manager {
    fn leader_healthy(&self) -> bool {
        Manager::leader_healthy(self)
    }

    fn holds_work(&self) -> bool {
        matches!(
            *self.state().borrow(),
            ManagerState::Leading { .. }
                | ManagerState::Starting { .. }
                | ManagerState::Running { .. }
        )
    }

    fn shutdown(self) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            Manager::shutdown(self).await;
        })
    }
}

/// Per-config state kept by this replica.
pub struct Entry<M> {
    generation: Option<i64>,
    /// The object's uid: a config deleted and created again under the same name (before the
    /// sweep noticed) is a new config even at the same generation.
    uid: Option<String>,
    manager: Option<M>,
    observer: Option<tokio::task::JoinHandle<()>>,
    failures: u32,
    next_retry: Option<Instant>,
    last_failure: Option<Failure>,
    /// Refused by `--max-configs-per-namespace`: retried as soon as the namespace has room.
    waiting_for_quota: bool,
    /// The last valid spec with `finalize: true` workers: their finalizers are removed when
    /// those workers go away.
    finalizing: Option<ResolvedConfig>,
}

impl<M: ManagerHandle> Entry<M> {
    fn new(generation: Option<i64>, uid: Option<String>) -> Self {
        Self {
            generation,
            uid,
            manager: None,
            observer: None,
            failures: 0,
            next_retry: None,
            last_failure: None,
            waiting_for_quota: false,
            finalizing: None,
        }
    }

    /// True when a manager runs (campaigns, leads or works) for the config.
    pub fn has_manager(&self) -> bool {
        self.manager.is_some()
    }

    /// Stops the manager and waits for its observer; returns the spec whose finalize-mode
    /// workers still need their finalizers released.
    pub async fn stop(mut self) -> Option<ResolvedConfig> {
        if let Some(m) = self.manager.take() {
            m.shutdown().await;
        }
        if let Some(o) = self.observer.take() {
            let _ = o.await;
        }
        self.finalizing.take()
    }
}

/// `key`'s entry, created when missing, now about the object at `generation` with `uid`.
fn for_object<K: Eq + Hash, M: ManagerHandle>(
    reg: &mut HashMap<K, Entry<M>>,
    key: K,
    generation: Option<i64>,
    uid: Option<String>,
) -> &mut Entry<M> {
    let entry = reg
        .entry(key)
        .or_insert_with(|| Entry::new(generation, None));
    entry.generation = generation;
    entry.uid = uid;
    entry
}

/// What [`Registry::admit`] decided for a reconcile.
pub enum Admission<M> {
    /// A manager for this generation and uid runs: nothing to do.
    Running,
    /// The last start failed; the next attempt is due in this long.
    RetryIn(Duration),
    /// Start a manager. `stale` is the entry of an older generation (or an older object of the
    /// same name), removed from the registry: the caller stops it first.
    Start {
        /// The entry the new start replaces, if any.
        stale: Option<Box<Entry<M>>>,
    },
}

/// The per-config entries of this replica, keyed by `K` (the config's object reference).
pub struct Registry<K, M = Manager> {
    entries: Mutex<HashMap<K, Entry<M>>>,
}

impl<K, M> Default for Registry<K, M> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, M: ManagerHandle> Registry<K, M> {
    /// Whether a reconcile of `key` at `generation`/`uid` should start a manager now.
    pub async fn admit(&self, key: &K, generation: Option<i64>, uid: Option<&str>) -> Admission<M> {
        let mut reg = self.entries.lock().await;
        match reg.get(key) {
            Some(e) if e.generation == generation && e.uid.as_deref() == uid => {
                if e.manager.is_some() {
                    return Admission::Running;
                }
                if let Some(at) = e.next_retry {
                    let now = Instant::now();
                    if at > now {
                        return Admission::RetryIn(at - now);
                    }
                }
                Admission::Start { stale: None }
            }
            Some(_) => Admission::Start {
                stale: reg.remove(key).map(Box::new),
            },
            None => Admission::Start { stale: None },
        }
    }

    /// A manager started for `key`: it is kept with its observer; backoff and quota waits end
    /// (the failure count stays until the manager's workers run, see [`Self::recovered`]).
    pub async fn started(
        &self,
        key: K,
        generation: Option<i64>,
        uid: Option<String>,
        finalizing: Option<ResolvedConfig>,
        manager: M,
        observer: tokio::task::JoinHandle<()>,
    ) {
        let mut reg = self.entries.lock().await;
        let entry = for_object(&mut reg, key, generation, uid);
        entry.finalizing = finalizing;
        entry.manager = Some(manager);
        entry.observer = Some(observer);
        entry.next_retry = None;
        entry.waiting_for_quota = false;
    }

    /// A start of `key` was refused or failed before a manager existed. `waiting_for_quota`:
    /// the namespace's config quota refused it. `finalizing` replaces the remembered spec only
    /// when given. Record the failure itself with [`Self::record_failure`].
    pub async fn start_failed(
        &self,
        key: K,
        generation: Option<i64>,
        uid: Option<String>,
        waiting_for_quota: bool,
        finalizing: Option<ResolvedConfig>,
    ) {
        let mut reg = self.entries.lock().await;
        let entry = for_object(&mut reg, key, generation, uid);
        entry.waiting_for_quota = waiting_for_quota;
        if finalizing.is_some() {
            entry.finalizing = finalizing;
        }
    }

    /// Counts a failed start of `key` and returns the delay before the next attempt.
    pub async fn record_failure(&self, key: K, generation: Option<i64>, f: &Failure) -> Duration {
        let mut reg = self.entries.lock().await;
        let entry = reg
            .entry(key)
            .or_insert_with(|| Entry::new(generation, None));
        entry.failures = entry.failures.saturating_add(1);
        let delay = backoff(entry.failures);
        entry.next_retry = Some(Instant::now() + delay);
        entry.last_failure = Some(f.clone());
        delay
    }

    /// The workers of `key` run: its failure count resets. Returns the failure it recovered
    /// from, if it had failed before.
    pub async fn recovered(&self, key: &K) -> Option<Failure> {
        let mut reg = self.entries.lock().await;
        match reg.get_mut(key) {
            Some(e) if e.failures > 0 => {
                e.failures = 0;
                e.last_failure.take()
            }
            _ => None,
        }
    }

    /// The manager of `key` ended by itself (failed after its start): the next reconcile starts
    /// a new one.
    pub async fn manager_ended(&self, key: &K) {
        if let Some(e) = self.entries.lock().await.get_mut(key) {
            e.manager = None;
        }
    }

    /// Takes `key`'s entry out (its config was deleted).
    pub async fn remove(&self, key: &K) -> Option<Entry<M>> {
        self.entries.lock().await.remove(key)
    }

    /// Takes out the entries whose config no longer `exists`.
    pub async fn take_vanished(&self, exists: impl Fn(&K) -> bool) -> Vec<(K, Entry<M>)> {
        let mut reg = self.entries.lock().await;
        let keys: Vec<K> = reg.keys().filter(|k| !exists(k)).cloned().collect();
        keys.into_iter()
            .filter_map(|k| reg.remove(&k).map(|e| (k, e)))
            .collect()
    }

    /// Configs without a manager whose last start was refused with `LeaseInUse`.
    pub async fn waiting_for_lease(&self) -> Vec<K> {
        let reg = self.entries.lock().await;
        reg.iter()
            .filter(|(_, e)| {
                e.manager.is_none()
                    && e.last_failure
                        .as_ref()
                        .is_some_and(|f| f.reason == StartupFailure::LeaseInUse)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Configs without a manager that the namespace's config quota refused.
    pub async fn waiting_for_quota(&self) -> Vec<K> {
        let reg = self.entries.lock().await;
        reg.iter()
            .filter(|(_, e)| e.manager.is_none() && e.waiting_for_quota)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// What kept `key` waiting is gone (its Lease is free, its namespace has room): the next
    /// reconcile starts it without waiting for the backoff.
    pub async fn retry_now(&self, key: &K) {
        if let Some(e) = self.entries.lock().await.get_mut(key) {
            e.next_retry = None;
            e.waiting_for_quota = false;
        }
    }

    /// True when every key has an entry (its config was reconciled at least once).
    pub async fn contains_all<'a>(&self, mut keys: impl Iterator<Item = &'a K>) -> bool
    where
        K: 'a,
    {
        let reg = self.entries.lock().await;
        keys.all(|k| reg.contains_key(k))
    }

    /// Takes every entry out (shutdown), with how many of them held work (led, started or
    /// ran workers).
    pub async fn drain(&self) -> (Vec<Entry<M>>, usize) {
        let entries: Vec<Entry<M>> = self.entries.lock().await.drain().map(|(_, e)| e).collect();
        let holding = entries
            .iter()
            .filter(|e| e.manager.as_ref().is_some_and(M::holds_work))
            .count();
        (entries, holding)
    }

    /// Healthy unless some manager believes it leads but has not renewed within its lease.
    pub async fn leaders_healthy(&self) -> bool {
        self.entries
            .lock()
            .await
            .values()
            .all(|e| e.manager.as_ref().is_none_or(M::leader_healthy))
    }
}

#[cfg(test)]
mod tests;
