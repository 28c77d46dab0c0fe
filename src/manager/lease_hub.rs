//! One Lease watch per namespace, shared by every manager of this replica (docs/design.md §3).
//!
//! A manager used to open its own field-selector watch on its Lease: 1,000 configs meant 1,000
//! long-lived watch connections. The hub opens one watch per namespace that has at least one
//! subscriber, narrowed by the label the operator puts on the Leases it writes
//! ([`super::kube_store::MANAGED_BY_LABEL`]), and fans each event out by
//! Lease name. A namespace's watch stops when its last subscriber is dropped.
//!
//! A Lease without the label (created by someone else and never acquired by us) is not seen;
//! the store says so ([`super::lease::LeaseStore::watch_covers`]) and its followers poll.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tracing::debug;

use super::kube_store::{MANAGED_BY_LABEL, to_record};
use super::lease::LeaseRecord;

type Senders = Arc<Mutex<HashMap<String, (watch::Sender<Option<LeaseRecord>>, usize)>>>;

struct NamespaceWatch {
    senders: Senders,
    subscribers: usize,
    task: tokio::task::JoinHandle<()>,
}

/// The replica's shared Lease watches.
pub struct LeaseHub {
    client: kube::Client,
    namespaces: Mutex<HashMap<String, NamespaceWatch>>,
}

/// A subscription to one Lease; dropping it ends the namespace's watch when it was the last.
pub struct LeaseSubscription {
    hub: Arc<LeaseHub>,
    namespace: String,
    name: String,
    rx: watch::Receiver<Option<LeaseRecord>>,
}

impl LeaseSubscription {
    /// A receiver of what the watch sees of this Lease (`None`: deleted or not seen).
    pub fn receiver(&self) -> watch::Receiver<Option<LeaseRecord>> {
        self.rx.clone()
    }
}

impl Drop for LeaseSubscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.namespace, &self.name);
    }
}

impl LeaseHub {
    /// A hub whose watches use `client` (the operator's Lease client).
    pub fn new(client: kube::Client) -> Arc<Self> {
        Arc::new(Self {
            client,
            namespaces: Mutex::new(HashMap::new()),
        })
    }

    /// Namespaces watched right now (for tests and metrics).
    pub fn watched_namespaces(&self) -> usize {
        self.namespaces.lock().map_or(0, |m| m.len())
    }

    /// Subscribes to `namespace/name`, starting the namespace's watch if needed. Must be called
    /// inside a tokio runtime.
    pub fn subscribe(self: &Arc<Self>, namespace: &str, name: &str) -> LeaseSubscription {
        let mut map = match self.namespaces.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let ns = map.entry(namespace.to_string()).or_insert_with(|| {
            let senders: Senders = Arc::default();
            let task = tokio::spawn(run_watch(
                Api::namespaced(self.client.clone(), namespace),
                senders.clone(),
            ));
            NamespaceWatch {
                senders,
                subscribers: 0,
                task,
            }
        });
        ns.subscribers += 1;
        let rx = {
            let mut senders = match ns.senders.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            let entry = senders
                .entry(name.to_string())
                .or_insert_with(|| (watch::channel(None).0, 0));
            entry.1 += 1;
            entry.0.subscribe()
        };
        LeaseSubscription {
            hub: self.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            rx,
        }
    }

    fn unsubscribe(&self, namespace: &str, name: &str) {
        let mut map = match self.namespaces.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(ns) = map.get_mut(namespace) else {
            return;
        };
        if let Ok(mut senders) = ns.senders.lock()
            && let Some(entry) = senders.get_mut(name)
        {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                senders.remove(name);
            }
        }
        ns.subscribers = ns.subscribers.saturating_sub(1);
        if ns.subscribers == 0
            && let Some(ns) = map.remove(namespace)
        {
            ns.task.abort();
        }
    }
}

impl Drop for LeaseHub {
    fn drop(&mut self) {
        if let Ok(map) = self.namespaces.get_mut() {
            for ns in map.values() {
                ns.task.abort();
            }
        }
    }
}

fn publish(senders: &Senders, name: &str, value: Option<LeaseRecord>) {
    if let Ok(s) = senders.lock()
        && let Some((tx, _)) = s.get(name)
    {
        tx.send_replace(value);
    }
}

/// The namespace's watch: label-narrowed, retried with backoff (the watch only speeds takeover
/// up; followers that see nothing fall back to their expiry timers).
async fn run_watch(api: Api<Lease>, senders: Senders) {
    let selector = format!("{}={}", MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1);
    let cfg = watcher::Config::default().labels(&selector);
    let mut stream = std::pin::pin!(watcher::watcher(api, cfg).default_backoff());
    let mut seen_in_init: HashSet<String> = HashSet::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(l)) => publish(&senders, &l.name_any(), Some(to_record(&l))),
            Ok(watcher::Event::Delete(l)) => publish(&senders, &l.name_any(), None),
            Ok(watcher::Event::Init) => seen_in_init.clear(),
            Ok(watcher::Event::InitApply(l)) => {
                let name = l.name_any();
                publish(&senders, &name, Some(to_record(&l)));
                seen_in_init.insert(name);
            }
            Ok(watcher::Event::InitDone) => {
                // Leases that vanished while the watch was down: say so once.
                let gone: Vec<String> = match senders.lock() {
                    Ok(s) => s
                        .iter()
                        .filter(|(n, (tx, _))| !seen_in_init.contains(*n) && tx.borrow().is_some())
                        .map(|(n, _)| n.clone())
                        .collect(),
                    Err(_) => Vec::new(),
                };
                for n in gone {
                    publish(&senders, &n, None);
                }
                seen_in_init.clear();
            }
            Err(e) => debug!(error = %e, "shared lease watch error; retrying"),
        }
    }
}
