//! The controller's periodic work beside reconciles: the sweep that stops managers of configs
//! gone from the cache and restarts configs whose wait is over, and the readiness placement
//! waits for.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::{ObjectRef, Store};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Ctx;
use super::finalizer::spawn_release;
use crate::api::ManagerConfig;

/// How often managers of ManagerConfigs that vanished from the cache are looked for.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Stops managers whose ManagerConfig is no longer in the cache: the way a deletion stops a
/// manager (ManagerConfigs carry no finalizer of ours, and kube-runtime does not reconcile
/// deleted objects), on every replica, also when its watch re-listed meanwhile. The workers'
/// finalizers (finalize mode) are released as the config goes.
pub(super) async fn sweep_vanished(
    ctx: Arc<Ctx>,
    store: Store<ManagerConfig>,
    mut synced: tokio::sync::watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        r = synced.wait_for(|s| *s) => if r.is_err() { return },
        _ = shutdown.cancelled() => return,
    }
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let gone = ctx.registry.take_vanished(|k| store.get(k).is_some()).await;
        for (key, entry) in gone {
            let running = entry.has_manager();
            let finalizing = entry.stop().await;
            spawn_release(&ctx, finalizing, None);
            let ns = key.namespace.clone().unwrap_or_default();
            ctx.metrics.forget_manager(&ns, &key.name);
            ctx.env.hook_errors.forget(&ns, &key.name, &[]);
            if running {
                info!(namespace = %ns, name = %key.name, "manager stopped: ManagerConfig no longer exists");
            }
        }
        // Configs refused with LeaseInUse start as soon as the Lease is theirs, not at their
        // next backoff retry (up to a minute later).
        let waiting = ctx.registry.waiting_for_lease().await;
        // Configs refused by --max-configs-per-namespace start as soon as their namespace has
        // room (an older config was deleted).
        let quota = ctx.registry.waiting_for_quota().await;
        if !quota.is_empty() {
            let all = store.state();
            for key in quota {
                if let Some(mc) = store.get(&key)
                    && ctx.limits.check_namespace_quota(&mc, &all).is_ok()
                {
                    ctx.registry.retry_now(&key).await;
                    ctx.retrigger(key);
                }
            }
        }
        if !waiting.is_empty() {
            let all = store.state();
            for key in waiting {
                if let Some(mc) = store.get(&key)
                    && crate::claims::rival_owner(&mc, &all, None).is_none()
                {
                    ctx.registry.retry_now(&key).await;
                    ctx.retrigger(key);
                }
            }
        }
    }
}

/// Tells membership "ready" once the ManagerConfig cache has synced and every config in it has
/// been reconciled once (its manager started, or its failure recorded): only then can this
/// replica take the configs placement hands it without leaving them to a standby.
pub(super) async fn ready_for_work(
    ctx: Arc<Ctx>,
    store: Store<ManagerConfig>,
    mut synced: tokio::sync::watch::Receiver<bool>,
    ready: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
) {
    tokio::select! {
        r = synced.wait_for(|s| *s) => if r.is_err() { return },
        _ = stop.cancelled() => return,
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let all = store.state();
        let keys: Vec<ObjectRef<ManagerConfig>> = all
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .map(|o| ObjectRef::from_obj(&**o))
            .collect();
        let done = ctx.registry.contains_all(keys.iter()).await;
        if done {
            info!(
                configs = all.len(),
                "every ManagerConfig reconciled once: ready for placement"
            );
            ready.send_replace(true);
            // Keep the sender (and so membership's "ready") alive until stop.
            stop.cancelled().await;
            return;
        }
    }
}
