//! The last hook error of every worker on this replica, for `status.workers[].lastHookError`
//! (set by a failed call, cleared by the next successful one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::LastHookError;

/// Longest `message` kept (characters).
pub const MESSAGE_MAX: usize = 256;

type ConfigKey = (String, String);

/// The last hook error per config and worker. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct HookErrors(Arc<Mutex<HashMap<ConfigKey, HashMap<String, LastHookError>>>>);

impl HookErrors {
    fn map(&self) -> MutexGuard<'_, HashMap<ConfigKey, HashMap<String, LastHookError>>> {
        // Plain maps: a panic while holding the lock cannot leave them inconsistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failed call of `worker` of config `namespace/name`.
    pub fn set(
        &self,
        namespace: &str,
        name: &str,
        worker: &str,
        code: &str,
        message: &str,
        object: &str,
    ) {
        let e = LastHookError {
            code: code.to_string(),
            message: bounded(message),
            object: bounded(object),
            time: Time(k8s_openapi::jiff::Timestamp::now()),
        };
        self.map()
            .entry((namespace.to_string(), name.to_string()))
            .or_default()
            .insert(worker.to_string(), e);
    }

    /// Clears the error of `worker` after a successful call.
    pub fn clear(&self, namespace: &str, name: &str, worker: &str) {
        let mut map = self.map();
        let key = (namespace.to_string(), name.to_string());
        if let Some(workers) = map.get_mut(&key) {
            workers.remove(worker);
            if workers.is_empty() {
                map.remove(&key);
            }
        }
    }

    /// The errors of config `namespace/name`, by worker name.
    pub fn for_config(&self, namespace: &str, name: &str) -> HashMap<String, LastHookError> {
        self.map()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets a config (stopped or deleted) or, with `keep`, its workers not in `keep`.
    pub fn forget(&self, namespace: &str, name: &str, keep: &[&str]) {
        let mut map = self.map();
        let key = (namespace.to_string(), name.to_string());
        if let Some(workers) = map.get_mut(&key) {
            workers.retain(|w, _| keep.contains(&w.as_str()));
            if workers.is_empty() {
                map.remove(&key);
            }
        }
    }
}

/// `s` cut to [`MESSAGE_MAX`] characters (with an ellipsis when cut).
fn bounded(s: &str) -> String {
    if s.chars().count() <= MESSAGE_MAX {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MESSAGE_MAX - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_set_bounded_cleared_and_forgotten() {
        let e = HookErrors::default();
        e.set("a", "m", "w", "503", &"x".repeat(1000), "a/o");
        e.set("a", "m", "v", "error", "timeout", "a/p");
        let got = e.for_config("a", "m");
        assert_eq!(got["w"].code, "503");
        assert_eq!(got["w"].message.chars().count(), MESSAGE_MAX);
        assert!(got["w"].message.ends_with('…'));
        e.clear("a", "m", "w");
        assert!(!e.for_config("a", "m").contains_key("w"));
        e.forget("a", "m", &["w"]);
        assert!(e.for_config("a", "m").is_empty());
        assert!(e.map().is_empty());
    }
}
