//! Short-lived, bounded caches of review answers.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long review answers are cached by default.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);
/// Entries per cache by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// The size and lifetime of a review cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long an answer (positive or negative) is reused.
    pub ttl: Duration,
    /// Entries per cache; when full, expired entries go first, then the oldest.
    pub capacity: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_CACHE_TTL,
            capacity: DEFAULT_CACHE_CAPACITY,
        }
    }
}

/// A bounded map whose entries expire `ttl` after insertion: the secure metrics server's
/// TokenReview and SubjectAccessReview answers, the controller's Lease access reviews.
pub struct TtlCache<K, V> {
    config: CacheConfig,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        Self {
            config,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value for `key` while it has not expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((expires, v)) if *expires > Instant::now() => Some(v.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` for the cache's ttl (nothing when the ttl or the capacity is zero); when
    /// full, expired entries go first, then the oldest.
    pub fn insert(&self, key: K, value: V) {
        if self.config.capacity == 0 || self.config.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.config.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (expires, _)| *expires > now);
            while entries.len() >= self.config.capacity {
                let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (expires, _))| *expires)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (now + self.config.ttl, value));
    }

    /// Entries held, expired or not.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
