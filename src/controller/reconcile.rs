//! One reconcile of one ManagerConfig: stop what a deletion or a new spec ends, refuse what
//! would hurt another tenant (a Lease another config owns, the namespace quota, the spec limits,
//! a Lease namespace the config's account may not use), then start the manager or record why it
//! could not start.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use super::Ctx;
use super::finalizer::{
    drop_legacy_finalizer, finalizers_to_release, release_finalizers, spawn_release,
};
use super::registry::Admission;
use crate::api::ManagerConfig;
use crate::api::conditions::StartupFailure;
use crate::manager::election::config_uid_of;
use crate::manager::runtime::{Failure, Manager};

/// Errors of a reconcile (transient API errors; startup failures are not errors here).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a write.
    #[error("API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The object has no namespace or name.
    #[error("ManagerConfig without namespace or name")]
    MissingMetadata,
}

impl Error {
    /// The `kind` label of `controller_reconcile_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "api",
            Error::MissingMetadata => "metadata",
        }
    }
}

/// Refuses `mc` with `LeaseInUse` when another config owns the Lease it names.
async fn check_lease_claim(ctx: &Ctx, mc: &ManagerConfig) -> Result<(), Failure> {
    let Some(store) = ctx.store.get() else {
        return Ok(());
    };
    let all = store.state();
    let (lease_ns, lease_name) = crate::claims::lease_of(mc);
    // No other config names this Lease (the usual case): no Lease read needed.
    let lease = (lease_ns.clone(), lease_name.clone());
    if !all.iter().any(|o| {
        o.metadata.deletion_timestamp.is_none()
            && o.uid() != mc.uid()
            && crate::claims::lease_of(o) == lease
    }) {
        return Ok(());
    }
    let holder = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        ctx.env.lease_client.clone(),
        &lease_ns,
    )
    .get_opt(&lease_name)
    .await
    .ok()
    .flatten()
    .and_then(|l| l.spec)
    .and_then(|s| s.holder_identity);
    let holder_uid = holder.as_deref().and_then(config_uid_of);
    match crate::claims::rival_owner(mc, &all, holder_uid) {
        None => Ok(()),
        Some(owner) => Err(Failure::new(
            StartupFailure::LeaseInUse,
            format!(
                "spec.leaderElection.leaseName: {}; only one ManagerConfig may use a Lease",
                crate::claims::in_use_message(&(lease_ns, lease_name), &owner)
            ),
        )),
    }
}

/// The checks that protect other tenants, before anything of `mc` starts: the namespace's
/// config quota, the spec limits (workers, timing floors), and — for a Lease outside the
/// config's namespace — the service account's right to use Leases there. `Err(true, _)`: the
/// namespace quota refused it.
async fn check_tenant(ctx: &Ctx, mc: &ManagerConfig) -> Result<(), (bool, Failure)> {
    if let Some(store) = ctx.store.get() {
        ctx.limits
            .check_namespace_quota(mc, &store.state())
            .map_err(|f| (true, f))?;
    }
    // An invalid spec is reported by `Manager::start` (InvalidSpec/HookRejected).
    let Ok(cfg) = crate::validation::resolve(mc, &ctx.policy) else {
        return Ok(());
    };
    ctx.limits.check_spec(&cfg).map_err(|f| (false, f))?;
    ctx.lease_access
        .check(
            &cfg.namespace,
            &cfg.service_account,
            &cfg.election.lease_namespace,
            &cfg.election.lease_name,
        )
        .await
        .map_err(|f| (false, f))
}

pub(super) async fn reconcile(mc: Arc<ManagerConfig>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = mc.namespace().ok_or(Error::MissingMetadata)?;
    let name = mc.name_any();
    let key = ObjectRef::from_obj(&*mc);
    let api: Api<ManagerConfig> = Api::namespaced(ctx.client.clone(), &ns);

    // The spec as the runtime would run it (None when invalid): which workers finalize.
    let resolve = || crate::validation::resolve(&mc, &ctx.policy).ok();
    if mc.metadata.deletion_timestamp.is_some() {
        let resolved = resolve();
        let entry = ctx.registry.remove(&key).await;
        let mut finalizing = None;
        if let Some(e) = entry {
            finalizing = e.stop().await;
            info!(namespace = %ns, name = %name, "manager stopped: ManagerConfig deleted");
        }
        ctx.metrics.forget_manager(&ns, &name);
        ctx.env.hook_errors.forget(&ns, &name, &[]);
        // Still here (another controller's finalizer, or ours from an earlier version): the
        // workers' finalizers come off the watched objects now (bounded: a failure is reported
        // and the config still goes away; deletion never hangs on this).
        if let Some(cfg) = resolved.as_ref().or(finalizing.as_ref()) {
            let all = finalizers_to_release(cfg, None);
            release_finalizers(&ctx, cfg, &all, Some(&mc)).await;
        }
        drop_legacy_finalizer(&api, &mc).await?;
        return Ok(Action::await_change());
    }

    if !drop_legacy_finalizer(&api, &mc).await? {
        // Another replica removed it first (or the object changed): the watch brings us back.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }

    let generation = mc.metadata.generation;
    let stale = match ctx
        .registry
        .admit(&key, generation, mc.metadata.uid.as_deref())
        .await
    {
        // Running (or campaigning): the observer keeps status in step.
        Admission::Running => return Ok(Action::requeue(Duration::from_secs(300))),
        Admission::RetryIn(wait) => return Ok(Action::requeue(wait)),
        Admission::Start { stale } => stale,
    };
    // Only past the early returns above: a running config's periodic reconcile resolves nothing.
    let resolved = resolve();
    if let Some(old) = stale {
        // A new spec gets a fresh start, not the old backoff.
        info!(namespace = %ns, name = %name, ?generation, "spec changed: restarting the manager");
        let finalizing = old.stop().await;
        // Finalizers of finalize-mode workers the new spec no longer has come off.
        spawn_release(&ctx, finalizing, resolved.as_ref());
        // Series of workers the new spec no longer has (renamed or removed) go away.
        let keep: Vec<&str> = mc.spec.workers.iter().map(|w| w.name.as_str()).collect();
        ctx.metrics.forget_workers(&ns, &name, &keep);
        ctx.env.hook_errors.forget(&ns, &name, &keep);
    }
    // Remembered before the start, so a start that fails still cleans up later.
    let finalizing = resolved.filter(|c| c.workers.iter().any(|w| w.finalize));

    let mut quota = false;
    let started = match check_lease_claim(&ctx, &mc).await {
        Ok(()) => match check_tenant(&ctx, &mc).await {
            Ok(()) => Manager::start(&mc, &ctx.policy, &ctx.me, &ctx.env).await,
            Err((q, f)) => {
                quota = q;
                Err(f)
            }
        },
        Err(f) => Err(f),
    };
    match started {
        Ok(manager) => {
            let state = manager.state();
            let view = manager.lease_view();
            let config = manager.config().clone();
            let observer = tokio::spawn(super::observer::observe(
                ctx.clone(),
                key.clone(),
                (*mc).clone(),
                config,
                state,
                view,
            ));
            ctx.registry
                .started(
                    key,
                    generation,
                    mc.metadata.uid.clone(),
                    finalizing,
                    manager,
                    observer,
                )
                .await;
            Ok(Action::requeue(Duration::from_secs(300)))
        }
        Err(f) => {
            ctx.registry
                .start_failed(key, generation, mc.metadata.uid.clone(), quota, finalizing)
                .await;
            let delay = ctx.record_failure(&mc, &f).await;
            Ok(Action::requeue(delay))
        }
    }
}

pub(super) fn error_policy(mc: Arc<ManagerConfig>, err: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.metrics
        .controller_reconcile_errors_total
        .with_label_values(&[err.kind()])
        .inc();
    warn!(namespace = %mc.namespace().unwrap_or_default(), name = %mc.name_any(),
        error = %err, "reconcile failed; retrying in 2s");
    Action::requeue(Duration::from_secs(2))
}
