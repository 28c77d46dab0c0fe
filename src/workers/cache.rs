//! What the workers' watch caches may cost one operator replica (docs/security.md, docs/design.md §3 "one
//! broken config never delays or stops another").
//!
//! Every worker term holds a reflector cache of the objects it watches, and a hook call holds
//! one encoded copy of the object it carries. Tenants choose what they watch, so without bounds
//! one namespace's configs could fill the replica's memory. Three budgets apply, each to the
//! JSON size of the objects (what the API server sent; the decoded cache costs about as much):
//!
//! | budget | flag | over it |
//! |---|---|---|
//! | objects per config | `--max-watched-objects-per-config` | the worker stops with `LimitExceeded` |
//! | bytes per namespace (every config of it on this replica) | `--max-watch-cache-bytes-per-namespace` | the worker whose cache would grow past it stops with `LimitExceeded` |
//! | bytes per replica (every namespace) | `--max-watch-cache-bytes` | the same |
//!
//! A (re-)list counts while it fills, beside the cache it replaces. Budgets are checked when a
//! cache grows, so a worker is never stopped because another one grew. A stopped worker's
//! objects are given back at once; its config retries with the usual backoff and starts again
//! once the namespace (or replica) has room.
//!
//! Two more bounds keep the transient memory of lists small: each list page asks for about
//! [`PAGE_BYTES`] of objects (by the mean object size seen so far, [`FIRST_PAGE_SIZE`] objects
//! before any, at most 500), and at most `--max-concurrent-lists` lists run on one replica at
//! once ([`gate_lists`]; a list holds its slot from `Init` to `InitDone`). A hook call carries
//! an object of its worker's cache, and kube-runtime never reconciles one object twice at once,
//! so the encoded copies in flight stay below the config's cache size.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::api::DynamicObject;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher;
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Objects per page of a worker's first list of a kind of objects (the API server's default is
/// 500): a page is buffered whole (the response body, then the decoded objects), so the page
/// size bounds what one list holds in flight besides the cache.
pub const FIRST_PAGE_SIZE: u32 = 20;
/// Later lists of the same objects (same namespace, resource and selector) ask for pages of
/// about this many bytes, by the mean object size seen so far (1 to 500 objects a page).
pub const PAGE_BYTES: u64 = 1 << 20;
/// Mean object sizes remembered (one per namespace, resource and selector); beyond this many
/// the memory is cleared and pages start again from [`FIRST_PAGE_SIZE`].
const MAX_LEARNED: usize = 10_000;

/// Which budget a cache would exceed, with what a user needs to act on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Over {
    /// The config's workers would hold more objects than allowed.
    #[error(
        "the watch caches of this ManagerConfig's workers would hold more than {limit} objects \
         (--max-watched-objects-per-config)"
    )]
    ConfigObjects {
        /// The limit.
        limit: u64,
    },
    /// The namespace's configs on this replica would hold more bytes than allowed.
    #[error(
        "the watch caches of namespace {namespace}'s ManagerConfigs on this replica would hold \
         more than {} (--max-watch-cache-bytes-per-namespace)",
        human(*limit)
    )]
    NamespaceBytes {
        /// The namespace.
        namespace: String,
        /// The limit.
        limit: u64,
    },
    /// The replica's workers would hold more bytes than allowed.
    #[error(
        "the watch caches of this operator replica would hold more than {} \
         (--max-watch-cache-bytes)",
        human(*limit)
    )]
    ReplicaBytes {
        /// The limit.
        limit: u64,
    },
}

/// `n` bytes as a user reads them (`32Mi`, `1.5Gi`, `900`).
pub fn human(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            return if n.is_multiple_of(size) {
                format!("{}{unit}", n / size)
            } else {
                format!("{:.1}{unit}", n as f64 / size as f64)
            };
        }
    }
    n.to_string()
}

/// Parses a byte quantity the way Kubernetes writes them: `67108864`, `64Mi`, `1Gi`, `512Ki`
/// (binary suffixes only; at most 1Ti).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, mult) = match t.find(|c: char| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some(i) => {
            let mult = match &t[i..] {
                "Ki" => 1 << 10,
                "Mi" => 1 << 20,
                "Gi" => 1 << 30,
                "Ti" => 1 << 40,
                other => {
                    return Err(format!(
                        "{s:?}: unknown unit {other:?} (use a byte count or Ki, Mi, Gi, Ti)"
                    ));
                }
            };
            (&t[..i], mult)
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte quantity (like 64Mi)"))?;
    n.checked_mul(mult)
        .filter(|b| *b <= 1 << 40)
        .ok_or_else(|| format!("{s:?} is larger than 1Ti"))
}

/// The JSON size of `o`, without encoding it into memory.
pub fn json_size(o: &DynamicObject) -> u64 {
    struct Count(u64);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Encoding a decoded object cannot fail (string keys only); 0 would only under-count.
    let _ = serde_json::to_writer(&mut c, o);
    c.0
}

/// The objects one config's workers hold, against `--max-watched-objects-per-config`.
pub struct WatchBudget {
    /// The limit (0: unlimited).
    pub limit: u64,
    /// Objects held now (every worker's cache, plus a re-list's buffer while it fills).
    pub total: AtomicU64,
}

impl WatchBudget {
    /// A budget of `limit` objects (0: unlimited).
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            total: AtomicU64::new(0),
        }
    }
}

/// The bytes every watch cache of one replica holds, per namespace and in total, and the
/// replica's list slots. One per operator process, shared by every worker.
pub struct ReplicaCaches {
    per_namespace: u64,
    per_replica: u64,
    held: Mutex<Held>,
    lists: Arc<Semaphore>,
    gauge: Option<IntGauge>,
    /// Mean object size (JSON bytes) by list key (see [`ReplicaCaches::page_size`]).
    learned: Mutex<HashMap<String, u64>>,
}

#[derive(Default)]
struct Held {
    total: u64,
    namespaces: HashMap<String, u64>,
}

impl Default for ReplicaCaches {
    /// The budgets of the default [`crate::limits::TenantLimits`], no gauge.
    fn default() -> Self {
        Self::for_limits(&crate::limits::TenantLimits::default(), None)
    }
}

impl ReplicaCaches {
    /// The replica's watch-cache budgets and list slots under `limits`.
    pub fn for_limits(limits: &crate::limits::TenantLimits, gauge: Option<IntGauge>) -> Self {
        Self::new(
            limits.max_watch_cache_bytes_per_namespace,
            limits.max_watch_cache_bytes,
            limits.max_concurrent_lists,
            gauge,
        )
    }

    /// Budgets of `per_namespace` and `per_replica` bytes (0: unlimited) and `lists`
    /// concurrent lists (0: unlimited); `gauge` follows the bytes held.
    pub fn new(per_namespace: u64, per_replica: u64, lists: u32, gauge: Option<IntGauge>) -> Self {
        let lists = if lists == 0 {
            Semaphore::MAX_PERMITS
        } else {
            lists as usize
        };
        Self {
            per_namespace,
            per_replica,
            held: Mutex::new(Held::default()),
            lists: Arc::new(Semaphore::new(lists)),
            gauge,
            learned: Mutex::default(),
        }
    }

    /// The page size for a list of `key` (namespace, resource and selector): about
    /// [`PAGE_BYTES`] a page by the mean object size seen, [`FIRST_PAGE_SIZE`] before any.
    pub fn page_size(&self, key: &str) -> u32 {
        match lock(&self.learned).get(key) {
            Some(&mean) if mean > 0 => (PAGE_BYTES / mean).clamp(1, 500) as u32,
            _ => FIRST_PAGE_SIZE,
        }
    }

    /// Remembers the mean size of the `objects` (together `bytes`) a list of `key` returned.
    fn learn(&self, key: &str, objects: u64, bytes: u64) {
        if objects == 0 {
            return;
        }
        let mut learned = lock(&self.learned);
        if learned.len() >= MAX_LEARNED && !learned.contains_key(key) {
            learned.clear();
        }
        learned.insert(key.to_string(), bytes / objects);
    }

    /// Bytes held by the caches of `namespace` (0 when none).
    pub fn namespace_bytes(&self, namespace: &str) -> u64 {
        lock(&self.held)
            .namespaces
            .get(namespace)
            .copied()
            .unwrap_or(0)
    }

    /// Bytes held by every cache of the replica.
    pub fn total_bytes(&self) -> u64 {
        lock(&self.held).total
    }

    /// The replica's list slots (see [`gate_lists`]).
    pub fn list_slots(&self) -> Arc<Semaphore> {
        self.lists.clone()
    }

    /// Moves `namespace`'s bytes from `before` to `after`; when they grew past a budget, says
    /// which (the bytes stay charged until the caller gives them back).
    fn charge(&self, namespace: &str, before: u64, after: u64) -> Result<(), Over> {
        let mut held = lock(&self.held);
        let ns = held.namespaces.entry(namespace.to_string()).or_insert(0);
        *ns = ns.saturating_sub(before).saturating_add(after);
        let ns_now = *ns;
        if ns_now == 0 {
            held.namespaces.remove(namespace);
        }
        held.total = held.total.saturating_sub(before).saturating_add(after);
        if let Some(g) = &self.gauge {
            g.set(i64::try_from(held.total).unwrap_or(i64::MAX));
        }
        if after <= before {
            return Ok(());
        }
        if self.per_namespace > 0 && ns_now > self.per_namespace {
            return Err(Over::NamespaceBytes {
                namespace: namespace.to_string(),
                limit: self.per_namespace,
            });
        }
        if self.per_replica > 0 && held.total > self.per_replica {
            return Err(Over::ReplicaBytes {
                limit: self.per_replica,
            });
        }
        Ok(())
    }
}

/// One worker term's cache, charged to its config's [`WatchBudget`] and to the replica's
/// [`ReplicaCaches`]; gives everything back when dropped.
pub struct TermCache {
    config: Arc<WatchBudget>,
    replica: Arc<ReplicaCaches>,
    namespace: String,
    /// What the term lists (see [`ReplicaCaches::page_size`]).
    list_key: String,
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    /// Objects of a running (re-)list, by key, with their sizes.
    listing: HashMap<String, u64>,
    listing_bytes: u64,
    /// Objects of the cache, by key, with their sizes.
    cached: HashMap<String, u64>,
    cached_bytes: u64,
    /// What is charged now: (objects, bytes).
    charged: (u64, u64),
}

impl TermCache {
    /// A term of a config of `namespace`, listing what `list_key` names.
    pub fn new(
        config: Arc<WatchBudget>,
        replica: Arc<ReplicaCaches>,
        namespace: &str,
        list_key: &str,
    ) -> Self {
        Self {
            config,
            replica,
            namespace: namespace.to_string(),
            list_key: list_key.to_string(),
            tally: Mutex::new(Tally::default()),
        }
    }

    /// Accounts for one watcher event (before the reflector applies it): `Err` when the caches
    /// grew past a budget.
    pub fn observe(&self, ev: &watcher::Event<DynamicObject>) -> Result<(), Over> {
        let mut t = lock(&self.tally);
        match ev {
            watcher::Event::Init => {
                t.listing.clear();
                t.listing_bytes = 0;
            }
            watcher::Event::InitApply(o) => {
                let size = json_size(o);
                if let Some(old) = t.listing.insert(object_key(o), size) {
                    t.listing_bytes -= old;
                }
                t.listing_bytes += size;
            }
            watcher::Event::InitDone => {
                self.replica
                    .learn(&self.list_key, t.listing.len() as u64, t.listing_bytes);
                t.cached = std::mem::take(&mut t.listing);
                t.cached_bytes = std::mem::take(&mut t.listing_bytes);
            }
            watcher::Event::Apply(o) => {
                let size = json_size(o);
                if let Some(old) = t.cached.insert(object_key(o), size) {
                    t.cached_bytes -= old;
                }
                t.cached_bytes += size;
            }
            watcher::Event::Delete(o) => {
                if let Some(old) = t.cached.remove(&object_key(o)) {
                    t.cached_bytes -= old;
                }
            }
        }
        let now = (
            (t.listing.len() + t.cached.len()) as u64,
            t.listing_bytes + t.cached_bytes,
        );
        let before = std::mem::replace(&mut t.charged, now);
        let r = self.settle(before, now);
        if r.is_err() && !t.listing.is_empty() {
            // Stopped mid-list: the next attempt pages by what this one saw.
            self.replica
                .learn(&self.list_key, t.listing.len() as u64, t.listing_bytes);
        }
        r
    }

    fn settle(&self, before: (u64, u64), now: (u64, u64)) -> Result<(), Over> {
        let objects = if now.0 >= before.0 {
            self.config
                .total
                .fetch_add(now.0 - before.0, Ordering::AcqRel)
                .saturating_add(now.0 - before.0)
        } else {
            self.config
                .total
                .fetch_sub(before.0 - now.0, Ordering::AcqRel)
                .saturating_sub(before.0 - now.0)
        };
        let bytes = self.replica.charge(&self.namespace, before.1, now.1);
        if now.0 > before.0 && self.config.limit > 0 && objects > self.config.limit {
            return Err(Over::ConfigObjects {
                limit: self.config.limit,
            });
        }
        bytes
    }

    /// (objects, bytes) this term holds now.
    pub fn held(&self) -> (u64, u64) {
        lock(&self.tally).charged
    }
}

impl Drop for TermCache {
    fn drop(&mut self) {
        let before = std::mem::take(&mut lock(&self.tally).charged);
        let _ = self.settle(before, (0, 0));
    }
}

fn object_key(o: &DynamicObject) -> String {
    match &o.metadata.namespace {
        Some(ns) => format!("{ns}/{}", o.metadata.name.as_deref().unwrap_or("")),
        None => o.metadata.name.clone().unwrap_or_default(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain counters: a panic while holding the lock cannot leave them inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Holds one of `slots` from each (re-)list's `Init` to its `InitDone` (or error), so at most
/// that many lists buffer pages on a replica at once. The watcher lists only when polled after
/// `Init`, so waiting for the slot before passing `Init` on delays the list itself.
pub fn gate_lists<S, K>(
    events: S,
    slots: Arc<Semaphore>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    let state = (Box::pin(events), None::<OwnedSemaphorePermit>);
    futures::stream::unfold(state, move |(mut events, mut slot)| {
        let slots = slots.clone();
        async move {
            let item = events.next().await?;
            match &item {
                // A closed semaphore (never closed here) would only mean no gate.
                Ok(watcher::Event::Init) => slot = slots.acquire_owned().await.ok(),
                Ok(watcher::Event::InitDone) | Err(_) => slot = None,
                _ => {}
            }
            Some((item, (events, slot)))
        }
    })
}

/// The delays between failed watch or list attempts: 250 ms doubling to 4 s, back to the start
/// after a success. Without one, a watch that keeps failing (an API server restarting, a
/// tenant's resource that errors) retries in a hot loop that takes CPU from every tenant; the
/// cap stays low so a worker resumes within seconds once the API server is back.
#[derive(Clone, Debug, Default)]
pub struct WatchBackoff {
    failures: u32,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(250);
    const CAP: Duration = Duration::from_secs(4);
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.failures = self.failures.saturating_add(1);
        Some(crate::backoff::delay(Self::FIRST, Self::CAP, self.failures))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use kube::api::ObjectMeta;

    fn obj(name: &str, bytes: usize) -> DynamicObject {
        DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: serde_json::json!({"data": {"k": "x".repeat(bytes)}}),
        }
    }

    #[test]
    fn sizes_are_the_json_length() {
        let o = obj("a", 1000);
        assert_eq!(json_size(&o), serde_json::to_vec(&o).unwrap().len() as u64);
    }

    #[test]
    fn quantities_parse_and_print() {
        assert_eq!(parse_bytes("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("64MB").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("2Ti").unwrap_err().contains("larger than 1Ti"));
        assert!(parse_bytes("99999999999999999999").is_err());
        assert_eq!(human(32 << 20), "32Mi");
        assert_eq!(human(1536), "1.5Ki");
        assert_eq!(human(900), "900");
    }

    #[test]
    fn namespace_bytes_bound_a_namespace_not_its_neighbours() {
        let size = json_size(&obj("a", 1000));
        let replica = Arc::new(ReplicaCaches::new(3 * size, 0, 0, None));
        let a = TermCache::new(Arc::new(WatchBudget::new(0)), replica.clone(), "noisy", "k");
        let b = TermCache::new(Arc::new(WatchBudget::new(0)), replica.clone(), "noisy", "k");
        let q = TermCache::new(Arc::new(WatchBudget::new(0)), replica.clone(), "quiet", "k");
        a.observe(&watcher::Event::Apply(obj("a", 1000))).unwrap();
        a.observe(&watcher::Event::Apply(obj("b", 1000))).unwrap();
        // An update of the same object replaces its size.
        a.observe(&watcher::Event::Apply(obj("b", 1000))).unwrap();
        assert_eq!(replica.namespace_bytes("noisy"), 2 * size);
        b.observe(&watcher::Event::Init).unwrap();
        b.observe(&watcher::Event::InitApply(obj("a", 1000)))
            .unwrap();
        let err = b
            .observe(&watcher::Event::InitApply(obj("b", 1000)))
            .unwrap_err();
        assert!(matches!(err, Over::NamespaceBytes { ref namespace, .. } if namespace == "noisy"));
        assert!(
            err.to_string()
                .contains("--max-watch-cache-bytes-per-namespace"),
            "{err}"
        );
        // Another namespace has its own budget.
        q.observe(&watcher::Event::Apply(obj("a", 1000))).unwrap();
        q.observe(&watcher::Event::Apply(obj("b", 1000))).unwrap();
        // Shrinking never fails, even while over.
        a.observe(&watcher::Event::Delete(obj("a", 1000))).unwrap();
        drop(b);
        drop(a);
        assert_eq!(replica.namespace_bytes("noisy"), 0);
        assert_eq!(replica.total_bytes(), 2 * size);
        drop(q);
        assert_eq!(replica.total_bytes(), 0);
    }

    #[test]
    fn a_relist_counts_beside_the_cache_it_replaces() {
        let size = json_size(&obj("a", 100));
        let replica = Arc::new(ReplicaCaches::new(0, 3 * size, 0, None));
        let config = Arc::new(WatchBudget::new(0));
        let t = TermCache::new(config.clone(), replica.clone(), "ns", "k");
        t.observe(&watcher::Event::Init).unwrap();
        t.observe(&watcher::Event::InitApply(obj("a", 100)))
            .unwrap();
        t.observe(&watcher::Event::InitApply(obj("b", 100)))
            .unwrap();
        t.observe(&watcher::Event::InitDone).unwrap();
        assert_eq!(t.held(), (2, 2 * size));
        t.observe(&watcher::Event::Init).unwrap();
        t.observe(&watcher::Event::InitApply(obj("a", 100)))
            .unwrap();
        let err = t
            .observe(&watcher::Event::InitApply(obj("b", 100)))
            .unwrap_err();
        assert!(matches!(err, Over::ReplicaBytes { .. }), "{err}");
        // Both lists taught the page size: about PAGE_BYTES a page.
        assert_eq!(replica.page_size("k"), (PAGE_BYTES / size).min(500) as u32);
        assert_eq!(replica.page_size("other"), FIRST_PAGE_SIZE);
        assert_eq!(config.total.load(Ordering::SeqCst), 4);
        drop(t);
        assert_eq!(config.total.load(Ordering::SeqCst), 0);
        assert_eq!(replica.total_bytes(), 0);
    }

    #[test]
    fn pages_follow_the_mean_object_size() {
        let replica = ReplicaCaches::new(0, 0, 0, None);
        assert_eq!(replica.page_size("big"), FIRST_PAGE_SIZE);
        replica.learn("big", 24, 24 * 500 * 1024);
        assert_eq!(replica.page_size("big"), 2);
        replica.learn("huge", 1, 3 << 20);
        assert_eq!(replica.page_size("huge"), 1);
        replica.learn("tiny", 1000, 100_000);
        assert_eq!(replica.page_size("tiny"), 500);
    }

    #[test]
    fn config_objects_are_shared_by_its_workers() {
        let replica = Arc::new(ReplicaCaches::new(0, 0, 0, None));
        let config = Arc::new(WatchBudget::new(3));
        let a = TermCache::new(config.clone(), replica.clone(), "ns", "k");
        let b = TermCache::new(config.clone(), replica, "ns", "k");
        a.observe(&watcher::Event::Apply(obj("a", 1))).unwrap();
        a.observe(&watcher::Event::Apply(obj("b", 1))).unwrap();
        b.observe(&watcher::Event::Apply(obj("a", 1))).unwrap();
        let err = b.observe(&watcher::Event::Apply(obj("c", 1))).unwrap_err();
        assert_eq!(err, Over::ConfigObjects { limit: 3 });
        drop(a);
        assert_eq!(config.total.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn lists_wait_for_a_slot() {
        let slots = Arc::new(Semaphore::new(1));
        let list = || {
            futures::stream::iter(vec![
                Ok(watcher::Event::Init),
                Ok(watcher::Event::InitApply(1u8)),
                Ok(watcher::Event::InitDone),
                Ok(watcher::Event::Apply(2u8)),
            ])
        };
        let mut a = Box::pin(gate_lists(list(), slots.clone()));
        let mut b = Box::pin(gate_lists(list(), slots.clone()));
        assert!(matches!(a.next().await, Some(Ok(watcher::Event::Init))));
        // a lists: b cannot pass Init.
        assert!(
            b.next().now_or_never().is_none(),
            "b passed Init while a held the only slot"
        );
        assert!(matches!(
            a.next().await,
            Some(Ok(watcher::Event::InitApply(1)))
        ));
        assert!(matches!(a.next().await, Some(Ok(watcher::Event::InitDone))));
        assert!(matches!(b.next().await, Some(Ok(watcher::Event::Init))));
        assert_eq!(slots.available_permits(), 0);
        assert!(matches!(a.next().await, Some(Ok(watcher::Event::Apply(2)))));
    }

    #[test]
    fn watch_backoff_is_capped_and_resets() {
        let mut b = WatchBackoff::default();
        let near = |d: Duration, want: Duration| {
            d >= want && d < want.mul_f64(1.0 + crate::backoff::JITTER)
        };
        let first: Vec<_> = (&mut b).take(7).collect();
        assert!(near(first[0], Duration::from_millis(250)));
        assert!(near(first[4], Duration::from_secs(4)));
        assert!(near(first[6], Duration::from_secs(4)));
        b.reset();
        assert!(
            b.next()
                .is_some_and(|d| near(d, Duration::from_millis(250)))
        );
    }
}
