//! One impersonating API client per service account, shared by every worker acting as it.
//!
//! A `kube::Client` is not small: its own TLS configuration, HTTP connection pool and a
//! request-buffer task. Built per worker, 1,000 ManagerConfigs running as one service account
//! meant 1,000 of each on every replica. Workers acting as the same user are interchangeable,
//! so they share one client; the cache holds it weakly, so it goes away with the last worker
//! that uses it (configs deleted, namespaces gone) and churn cannot grow the cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Shared impersonating clients, keyed by the impersonated user. Cheap to clone.
#[derive(Clone, Default)]
pub struct ClientCache(Arc<Mutex<HashMap<String, Weak<kube::Client>>>>);

impl ClientCache {
    /// The client acting as `user` on `base`: the cached one while any worker still holds it,
    /// otherwise a new one (`kube::Client::try_from`), which is cached for the next worker.
    /// Its requests are counted in `metrics` (see [`crate::metrics::kube_api`]) when given.
    pub fn get(
        &self,
        base: &kube::Config,
        user: &str,
        metrics: Option<&crate::metrics::Metrics>,
    ) -> Result<Arc<kube::Client>, String> {
        // A plain map: a panic while holding the lock cannot leave it inconsistent.
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = map.get(user).and_then(Weak::upgrade) {
            return Ok(client);
        }
        // Entries of users nobody acts as any more are dropped whenever a client is built.
        map.retain(|_, weak| weak.strong_count() > 0);
        let client = Arc::new(
            crate::metrics::kube_api::client(super::impersonating(base, user), metrics)
                .map_err(|e| e.to_string())?,
        );
        map.insert(user.to_string(), Arc::downgrade(&client));
        Ok(client)
    }

    /// How many users have a live shared client (for tests and debugging).
    pub fn len(&self) -> usize {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|w| w.strong_count() > 0).count()
    }

    /// True when no user has a live shared client.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> kube::Config {
        crate::tls::install_default_provider();
        let url = "https://127.0.0.1:6443".parse().expect("a valid URL");
        kube::Config::new(url)
    }

    #[tokio::test]
    async fn one_client_per_user_while_it_is_used() {
        let cache = ClientCache::default();
        let a1 = cache
            .get(&base(), "system:serviceaccount:a:x", None)
            .expect("client");
        let a2 = cache
            .get(&base(), "system:serviceaccount:a:x", None)
            .expect("client");
        let b = cache
            .get(&base(), "system:serviceaccount:b:x", None)
            .expect("client");
        assert!(Arc::ptr_eq(&a1, &a2), "the same user shares one client");
        assert!(!Arc::ptr_eq(&a1, &b), "another user gets its own");
        assert_eq!(cache.len(), 2);
        drop((a1, a2));
        assert_eq!(cache.len(), 1, "the last user of a client takes it away");
        let a3 = cache
            .get(&base(), "system:serviceaccount:a:x", None)
            .expect("client");
        assert_eq!(cache.len(), 2);
        drop((a3, b));
        assert!(cache.is_empty());
        // Building a client prunes the dead entries: the map does not grow with churn.
        for i in 0..100 {
            drop(cache.get(&base(), &format!("system:serviceaccount:n{i}:x"), None));
        }
        assert!(cache.0.lock().expect("not poisoned").len() <= 1);
    }
}
