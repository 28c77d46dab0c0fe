//! One task per running manager: turns its state stream into status, Events and metrics.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::watch;
use tracing::warn;

use super::Ctx;
use super::status::Observed;
use crate::api::ManagerConfig;
use crate::api::conditions::reason;
use crate::manager::election::LeaseView;
use crate::manager::runtime::ManagerState;
use crate::validation::ResolvedConfig;

/// How often degradation (hook errors, renew failures) is re-evaluated.
pub const DEGRADED_INTERVAL: Duration = Duration::from_secs(15);
/// Hook error ratio above which a running config is Degraded.
pub const HOOK_ERROR_RATIO: f64 = 0.5;
/// Minimum reconciles in an interval before the ratio counts.
pub const HOOK_ERROR_MIN_CALLS: u64 = 5;

fn state_label(s: &ManagerState) -> &'static str {
    match s {
        ManagerState::Candidate => "candidate",
        ManagerState::Leading { .. } => "leading",
        ManagerState::Starting { .. } => "starting",
        ManagerState::Running { .. } => "running",
        ManagerState::Stopping => "stopping",
        ManagerState::Failed(_) => "failed",
        ManagerState::Stopped => "stopped",
    }
}

fn is_leading(s: &ManagerState) -> bool {
    matches!(
        s,
        ManagerState::Leading { .. } | ManagerState::Starting { .. } | ManagerState::Running { .. }
    )
}

/// Counter snapshot for degradation.
#[derive(Default, Clone, Copy)]
struct Counts {
    renew_failures: u64,
    ok: u64,
    err: u64,
}

fn counts(ctx: &Ctx, ns: &str, name: &str, cfg: &ResolvedConfig) -> Counts {
    let m = &ctx.metrics;
    let mut c = Counts {
        renew_failures: m
            .lease_renew_failures_total
            .with_label_values(&[ns, name])
            .get(),
        ..Counts::default()
    };
    for w in &cfg.workers {
        c.ok += m
            .reconcile_total
            .with_label_values(&[ns, name, &w.name, "success"])
            .get();
        c.err += m
            .reconcile_total
            .with_label_values(&[ns, name, &w.name, "error"])
            .get();
    }
    c
}

fn degradation(before: Counts, after: Counts) -> Option<(&'static str, String)> {
    let renew = after.renew_failures.saturating_sub(before.renew_failures);
    if renew > 0 {
        return Some((
            reason::LEASE_RENEW_FAILING,
            format!(
                "{renew} lease renewals failed in the last {}s",
                DEGRADED_INTERVAL.as_secs()
            ),
        ));
    }
    let err = after.err.saturating_sub(before.err);
    let total = err + after.ok.saturating_sub(before.ok);
    if total >= HOOK_ERROR_MIN_CALLS && (err as f64) / (total as f64) > HOOK_ERROR_RATIO {
        return Some((
            reason::HOOK_ERRORS,
            format!(
                "{err} of {total} hook calls failed in the last {}s",
                DEGRADED_INTERVAL.as_secs()
            ),
        ));
    }
    None
}

/// True when the Lease holder is not a manager of this config (no `<replica>/<uid>` with this
/// config's uid): a peer outside the operator leads.
fn foreign_holder(view: &LeaseView, mc: &ManagerConfig) -> bool {
    view.holder.as_deref().is_some_and(|h| {
        crate::manager::election::config_uid_of(h).map(str::to_string) != mc.metadata.uid
    })
}

/// Follows one manager until it ends.
pub async fn observe(
    ctx: Arc<Ctx>,
    key: ObjectRef<ManagerConfig>,
    initial: ManagerConfig,
    config: ResolvedConfig,
    mut state: watch::Receiver<ManagerState>,
    mut view: watch::Receiver<LeaseView>,
) {
    let ns = initial.namespace().unwrap_or_default();
    let name = initial.name_any();
    let m = ctx.metrics.clone();
    m.init_manager(&ns, &name);
    m.lease_duration_seconds
        .with_label_values(&[ns.as_str(), name.as_str()])
        .set(config.election.lease_duration.as_secs_f64());
    let mut prev: Option<ManagerState> = None;
    let mut tick = tokio::time::interval(DEGRADED_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut snapshot = counts(&ctx, &ns, &name, &config);
    let mut degraded: Option<(&'static str, String)> = None;
    let mut view_open = true;
    loop {
        let s = state.borrow_and_update().clone();
        let v = view.borrow_and_update().clone();
        let mc = ctx
            .latest(&key)
            .map(|a| (*a).clone())
            .unwrap_or_else(|| initial.clone());

        if prev.as_ref() != Some(&s) {
            if let Some(p) = &prev {
                m.managers.with_label_values(&[state_label(p)]).dec();
            }
            m.managers.with_label_values(&[state_label(&s)]).inc();
            let was_leading = prev.as_ref().is_some_and(is_leading);
            match (was_leading, is_leading(&s)) {
                (false, true) => m.managers_leading.inc(),
                (true, false) => m.managers_leading.dec(),
                _ => {}
            }
            if is_leading(&s) && !was_leading {
                let token = match &s {
                    ManagerState::Leading { token }
                    | ManagerState::Starting { token }
                    | ManagerState::Running { token } => *token,
                    _ => 0,
                };
                m.leader.with_label_values(&[&ns, &name]).set(1);
                m.leader_transitions_total
                    .with_label_values(&[&ns, &name])
                    .inc();
                m.manager_ready.with_label_values(&[&ns, &name]).set(0);
                ctx.event(
                    &mc,
                    EventType::Normal,
                    reason::LEADER_ELECTED,
                    "Elect",
                    format!(
                        "{} leads Lease {}/{} (fencing token {token})",
                        ctx.me.identity,
                        config.election.lease_namespace,
                        config.election.lease_name
                    ),
                )
                .await;
            }
            match &s {
                ManagerState::Running { token } => {
                    m.manager_ready.with_label_values(&[&ns, &name]).set(1);
                    let recovered = ctx.registry.recovered(&key).await;
                    let note = match &recovered {
                        Some(f) => format!(
                            "recovered from {}: workers running (fencing token {token})",
                            f.reason
                        ),
                        None => format!("workers running (fencing token {token})"),
                    };
                    let event_reason = if recovered.is_some() {
                        reason::RECOVERED
                    } else {
                        reason::RUNNING
                    };
                    ctx.event(&mc, EventType::Normal, event_reason, "StartWorkers", note)
                        .await;
                }
                ManagerState::Candidate if was_leading => {
                    m.leader.with_label_values(&[&ns, &name]).set(0);
                    m.leader_transitions_total
                        .with_label_values(&[&ns, &name])
                        .inc();
                    m.manager_ready.remove_label_values(&[&ns, &name]).ok();
                    ctx.event(
                        &mc,
                        EventType::Normal,
                        reason::LEADERSHIP_LOST,
                        "Elect",
                        format!(
                            "{} lost the lease; workers stopped, campaigning again",
                            ctx.me.identity
                        ),
                    )
                    .await;
                }
                ManagerState::Candidate => {
                    m.leader.with_label_values(&[&ns, &name]).set(0);
                }
                _ => {}
            }
            prev = Some(s.clone());
        }

        match &s {
            ManagerState::Failed(f) => {
                m.managers.with_label_values(&[state_label(&s)]).dec();
                m.leader.with_label_values(&[&ns, &name]).set(0);
                ctx.registry.manager_ended(&key).await;
                // Report against the generation this manager ran (the latest status is kept).
                let mut failed = mc.clone();
                failed.metadata.generation = initial.metadata.generation;
                ctx.record_failure(&failed, f).await;
                ctx.retrigger(key);
                return;
            }
            ManagerState::Stopped => {
                m.managers.with_label_values(&[state_label(&s)]).dec();
                m.leader.remove_label_values(&[&ns, &name]).ok();
                return;
            }
            _ => {}
        }

        // The leading replica writes status. When the Lease is held by someone who is not one
        // of our managers (a client-go peer), nobody of ours leads: every replica writes the
        // same WaitingForLeadership status (one field manager, only when it differs).
        if is_leading(&s) || (matches!(s, ManagerState::Candidate) && foreign_holder(&v, &mc)) {
            let obs = Observed::Manager {
                state: &s,
                view: &v,
                config: &config,
                degraded: degraded.clone(),
                hook_errors: ctx.env.hook_errors.for_config(&ns, &name),
            };
            if let Err(e) = ctx
                .write_status(&mc, initial.metadata.generation, &obs)
                .await
            {
                warn!(namespace = %ns, name = %name, error = %e, "writing status failed");
            }
        }

        tokio::select! {
            r = state.changed() => if r.is_err() { return },
            // The elector (the view's sender) ends before the manager's final state is sent:
            // a closed view must not end the observer before it has seen Stopped or Failed.
            r = view.changed(), if view_open => if r.is_err() { view_open = false },
            _ = tick.tick() => {
                let now = counts(&ctx, &ns, &name, &config);
                let d = degradation(snapshot, now);
                if d.is_some() != degraded.is_some() {
                    let (ty, reason, note) = match &d {
                        Some((r, msg)) => (EventType::Warning, *r, msg.clone()),
                        None => (EventType::Normal, reason::HEALTHY, "no longer degraded".to_string()),
                    };
                    ctx.event(&mc, ty, reason, "Observe", note).await;
                }
                degraded = d;
                snapshot = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degradation_rules() {
        let z = Counts::default();
        assert!(degradation(z, z).is_none());
        let renew = Counts {
            renew_failures: 1,
            ..z
        };
        assert_eq!(
            degradation(z, renew).map(|d| d.0),
            Some(reason::LEASE_RENEW_FAILING)
        );
        let few = Counts { err: 3, ..z };
        assert!(degradation(z, few).is_none(), "too few calls to judge");
        let bad = Counts { err: 6, ok: 4, ..z };
        assert_eq!(degradation(z, bad).map(|d| d.0), Some(reason::HOOK_ERRORS));
        let ok = Counts { err: 4, ok: 6, ..z };
        assert!(degradation(z, ok).is_none());
    }
}
