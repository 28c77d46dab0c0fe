//! Finalizers: the workers' finalizers on the objects they watch (finalize mode) come off when a
//! worker stops finalizing what it did (renamed, removed, `finalize` turned off, watching
//! something else) or its config goes; and the legacy finalizer earlier versions put on
//! ManagerConfigs is removed where it is found.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use tracing::warn;

use super::{Ctx, Error};
use crate::api::ManagerConfig;
use crate::api::conditions::reason;
use crate::validation::{ResolvedConfig, ResolvedWorker};

/// The finalizer earlier versions put on every ManagerConfig (deletion waited for the manager
/// to stop). It made a namespace holding a ManagerConfig stay `Terminating` for as long as no
/// operator ran, so it is no longer added, and removed where an earlier version left it.
pub const FINALIZER: &str = "manager-operator.io/stop-manager";

/// The finalize-mode workers of `old` that `new` no longer has as such (removed, renamed,
/// `finalize` turned off, or watching something else).
pub(super) fn finalizers_to_release(
    old: &ResolvedConfig,
    new: Option<&ResolvedConfig>,
) -> Vec<ResolvedWorker> {
    old.workers
        .iter()
        .filter(|w| w.finalize)
        .filter(|w| {
            !new.is_some_and(|n| {
                n.workers.iter().any(|x| {
                    x.finalize
                        && x.name == w.name
                        && (
                            &x.group,
                            &x.version,
                            &x.kind,
                            &x.namespace,
                            &x.label_selector,
                        ) == (
                            &w.group,
                            &w.version,
                            &w.kind,
                            &w.namespace,
                            &w.label_selector,
                        )
                })
            })
        })
        .cloned()
        .collect()
}

/// Removes the finalizers of `workers` of `cfg` (see [`KubeEnv::release`]); failures are
/// logged and reported as a Warning Event on `mc` when there is one.
pub(super) async fn release_finalizers(
    ctx: &Ctx,
    cfg: &ResolvedConfig,
    workers: &[ResolvedWorker],
    mc: Option<&ManagerConfig>,
) {
    let Some(release) = &ctx.env.release else {
        return;
    };
    for w in workers {
        if let Err(e) = release(cfg, w).await {
            let f = crate::workers::finalizer::name(&cfg.namespace, &cfg.name, &w.name);
            warn!(namespace = %cfg.namespace, name = %cfg.name, worker = %w.name, error = %e,
                "could not remove the worker's finalizer from the objects it watched");
            if let Some(mc) = mc {
                ctx.event(
                    mc,
                    EventType::Warning,
                    reason::FINALIZER_NOT_REMOVED,
                    "RemoveFinalizer",
                    format!(
                        "worker {}: {e}; remove it by hand: kubectl get {} -n {} -o name | xargs -I{{}} kubectl patch {{}} -n {} --type=json -p '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]' (only if {f} is the only finalizer)",
                        w.name,
                        w.kind.to_lowercase(),
                        w.namespace,
                        w.namespace
                    ),
                )
                .await;
            }
        }
    }
}

/// Releases, in the background, the finalizers of `old`'s finalize-mode workers that `new`
/// no longer has.
pub(super) fn spawn_release(
    ctx: &Arc<Ctx>,
    old: Option<ResolvedConfig>,
    new: Option<&ResolvedConfig>,
) {
    let Some(old) = old else { return };
    let gone = finalizers_to_release(&old, new);
    if gone.is_empty() {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move { release_finalizers(&ctx, &old, &gone, None).await });
}

/// Removes [`FINALIZER`], left by an earlier version, from `mc`. `Ok(false)` when the object
/// changed or went meanwhile (409, 404): it comes back through the watch.
pub(super) async fn drop_legacy_finalizer(
    api: &Api<ManagerConfig>,
    mc: &ManagerConfig,
) -> Result<bool, Error> {
    if !mc.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(true);
    }
    let remaining: Vec<&String> = mc.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = serde_json::json!({"metadata": {"finalizers": remaining, "resourceVersion": mc.resource_version()}});
    match api
        .patch(
            &mc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(workers: &str) -> ResolvedConfig {
        let mc: ManagerConfig = serde_yaml::from_str(&format!(
            "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\nmetadata: {{name: m, namespace: ns}}\nspec:\n  workers: {workers}\n"
        ))
        .unwrap();
        crate::validation::resolve(&mc, &crate::validation::HookPolicy::default()).unwrap()
    }

    fn w(name: &str, selector: &str, finalize: bool) -> String {
        format!(
            "{{name: {name}, finalize: {finalize}, watch: {{apiVersion: v1, kind: ConfigMap, labelSelector: '{selector}'}}, hook: {{url: 'http://h.svc/'}}}}"
        )
    }

    fn names(v: Vec<ResolvedWorker>) -> Vec<String> {
        v.into_iter().map(|w| w.name).collect()
    }

    #[test]
    fn finalizers_are_released_for_workers_that_stop_finalizing_what_they_did() {
        let old = cfg(&format!(
            "[{}, {}, {}, {}]",
            w("kept", "a=1", true),
            w("off", "a=1", true),
            w("moved", "a=1", true),
            w("never", "a=1", false)
        ));
        assert_eq!(
            names(finalizers_to_release(&old, None)),
            ["kept", "off", "moved"],
            "a deleted config releases every finalize worker"
        );
        let new = cfg(&format!(
            "[{}, {}, {}, {}]",
            w("kept", "a=1", true),
            w("off", "a=1", false),
            w("moved", "a=2", true),
            w("never", "a=1", true)
        ));
        assert_eq!(
            names(finalizers_to_release(&old, Some(&new))),
            ["off", "moved"]
        );
    }
}
