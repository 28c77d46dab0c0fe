//! Scenarios 1 and 2: crash failover (SIGKILL) and graceful handoff (SIGTERM with
//! `releaseOnCancel: true`).
//!
//! Two operator replicas, one ManagerConfig (leaseDuration 3s, renewDeadline 2s, retryPeriod
//! 500ms) whose single worker watches one ConfigMap and calls the harness's hook. A trial:
//! find the leader (the Lease's holder, confirmed by its hook call), make sure the standby is
//! campaigning, wait a random 0..1 s (so the kill lands anywhere in the renew cycle),
//! signal the leader, and time until the first hook call from the other replica. The signalled
//! replica is then restarted under the same identity and becomes the next standby (or, with
//! placement, gets the Lease handed back when it is the config's preferred replica: each trial
//! starts once both replicas see each other and the Lease holder has not changed for 3 s).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use kube::runtime::watcher;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use rand::Rng;
use serde_json::json;

use crate::hook::Hook;
use crate::util::{self, Csv, Operator, OperatorOpts, Result, f, fail, ms, within};

/// Lease settings of the scenario.
pub const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_DEADLINE: &str = "2s";
const RETRY_PERIOD: Duration = Duration::from_millis(500);
/// The leader's renew cycle at these timings: every retryPeriod before placement; since then
/// max(retryPeriod, min(0.6 × renewDeadline, renewDeadline − 2 × retryPeriod)) = 1 s. The
/// signal lands at a random point of the longer one.
const RENEW_CYCLE: Duration = Duration::from_millis(1000);
const NAME: &str = "failover";

/// Which signal ends the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// kill -9.
    Crash,
    /// SIGTERM, lease released on the way out.
    Graceful,
}

impl Mode {
    pub fn signal(self) -> libc::c_int {
        match self {
            Mode::Crash => libc::SIGKILL,
            Mode::Graceful => libc::SIGTERM,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Mode::Crash => "SIGKILL",
            Mode::Graceful => "SIGTERM",
        }
    }
}

async fn lease(api: &Api<Lease>) -> Result<(Option<String>, i32)> {
    match api.get_opt(NAME).await? {
        Some(l) => {
            let spec = l.spec.unwrap_or_default();
            Ok((spec.holder_identity, spec.lease_transitions.unwrap_or(0)))
        }
        None => Ok((None, 0)),
    }
}

/// The replica placement (docs/placement.md) prefers as the config's leader: `Some(Some(id))` when
/// exactly one replica reports `manager_operator_managers_preferred` 1, `Some(None)` while the
/// replicas disagree, `None` for operators without placement metrics.
async fn preferred(ops: &[Operator]) -> Option<Option<String>> {
    let mut any_metric = false;
    let mut ids = Vec::new();
    for op in ops {
        let p = util::gauge(op, "manager_operator_managers_preferred").await;
        any_metric |= !p.is_nan();
        if p >= 1.0 {
            ids.push(op.identity.clone());
        }
    }
    any_metric.then(|| (ids.len() == 1).then(|| ids.remove(0)))
}

/// Waits until the Lease has a holder that placement prefers (when the operator has placement)
/// and neither holder nor transitions changed for `quiet`: a restarted replica that is the
/// config's preferred leader gets the Lease handed back a moment after it rejoins (later when
/// the holder is cooling off from an earlier handover), and a trial must not start in the
/// middle of that. Returns the holder's replica.
async fn wait_settled(
    api: &Api<Lease>,
    ops: &[Operator],
    quiet: Duration,
    max: Duration,
) -> Result<String> {
    let t = Instant::now();
    let mut last = None;
    let mut since = Instant::now();
    while t.elapsed() < max {
        let now = lease(api).await?;
        let settled = match (&now.0, preferred(ops).await) {
            (None, _) | (_, Some(None)) => false,
            (Some(_), None) => true,
            (Some(h), Some(Some(p))) => util::replica_of(h) == p,
        };
        if !settled || last.as_ref() != Some(&now) {
            last = settled.then_some(now);
            since = Instant::now();
        } else if since.elapsed() >= quiet
            && let Some((Some(h), _)) = &last
        {
            return Ok(util::replica_of(h).to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fail(format!(
        "the Lease did not settle on the preferred replica within {max:?}"
    ))
}

/// Waits until the replica's manager for the config is campaigning (state candidate).
async fn wait_candidate(op: &Operator, within_: Duration) -> Result<()> {
    let until = Instant::now() + within_;
    while Instant::now() < until {
        if let Ok(m) = op.metrics().await
            && util::sum_of(&m, "manager_operator_managers", &[("state", "candidate")]) >= 1.0
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fail(format!(
        "replica {} never became a candidate within {within_:?}",
        op.identity
    ))
}

/// Runs `trials` trials and writes `out`.
pub async fn run(
    o: &OperatorOpts,
    ns: &str,
    mode: Mode,
    trials: usize,
    out: &std::path::Path,
) -> Result<()> {
    let client = util::client(&o.kubeconfig).await?;
    let hook = Hook::start(true).await?;
    util::target_configmap(&client, ns, "failover-target", "failover").await?;

    let extra = util::no_webhook_args(ns);
    let ids = ["bench-a", "bench-b"];
    let mut ops = Vec::new();
    for id in ids {
        let mut op = Operator::spawn(o, id, &extra)?;
        op.wait_ready(Duration::from_secs(60)).await?;
        ops.push(op);
    }

    let mc = util::dynamic(json!({
        "apiVersion": "manager-operator.io/v1alpha1",
        "kind": "ManagerConfig",
        "metadata": {"name": NAME, "namespace": ns},
        "spec": {
            "leaderElection": {
                "leaseDuration": "3s", "renewDeadline": RENEW_DEADLINE, "retryPeriod": "500ms",
                "releaseOnCancel": true
            },
            "startupTimeout": "30s",
            "workers": [{
                "name": "target",
                "concurrency": 1,
                "watch": {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": "bench=failover"},
                "hook": {"url": hook.url, "timeout": "5s"}
            }]
        }
    }))?;
    let mcs = util::mc_api(&client, ns);
    mcs.create(&PostParams::default(), &mc).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);

    // The harness's own watch on the Lease: when each renewal became visible, to tell the
    // physical bound (the last renewal before the signal + leaseDuration) from the overhead.
    let renewals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let r2 = renewals.clone();
    let lw = watcher(
        leases.clone(),
        watcher::Config::default().fields(&format!("metadata.name={NAME}")),
    );
    let lease_watch = tokio::spawn(async move {
        let mut lw = std::pin::pin!(lw);
        let mut last: Option<(Option<String>, Option<String>)> = None;
        loop {
            match lw.try_next().await {
                Ok(Some(watcher::Event::Apply(l) | watcher::Event::InitApply(l))) => {
                    let spec = l.spec.unwrap_or_default();
                    let key = (
                        spec.holder_identity,
                        spec.renew_time.map(|t| format!("{:?}", t.0)),
                    );
                    if last.as_ref() != Some(&key) {
                        r2.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Instant::now());
                        last = Some(key);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });

    within(Duration::from_secs(60), "the first hook call", async {
        while hook.log_len() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    })
    .await?;

    let mut csv = Csv::new(
        out,
        &[
            "trial",
            "signal",
            "lease_duration_ms",
            "retry_period_ms",
            "victim",
            "new_leader",
            "token_before",
            "token_after",
            "latency_ms",
            "ratio_to_lease",
            "since_last_renewal_ms",
            "beyond_expiry_ms",
            "victim_exit_ms",
            "load1",
        ],
    );
    let mut rng = rand::rng();
    for trial in 1..=trials {
        util::wait_members(&ops, ops.len(), Duration::from_secs(60), false).await?;
        wait_settled(
            &leases,
            &ops,
            Duration::from_secs(1),
            Duration::from_secs(120),
        )
        .await?;
        // The leader: the Lease's holder, which must have called the hook in this term.
        let (holder, token_before) = within(Duration::from_secs(30), "a settled leader", async {
            loop {
                let (holder, token) = lease(&leases).await?;
                if let Some(h) = holder {
                    // With placement (docs/placement.md) the holder is `<replica>/<uid>`; the hook
                    // payload's holder is the replica.
                    let h = util::replica_of(&h).to_string();
                    let called = hook
                        .log_since(0)
                        .iter()
                        .any(|c| c.holder == h && c.token == i64::from(token));
                    if called {
                        return Ok((h, token));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await?;
        let victim = match ops.iter().position(|op| op.identity == holder) {
            Some(i) => i,
            None => return fail(format!("the Lease holder {holder} is not one of ours")),
        };
        let standby = 1 - victim;
        wait_candidate(&ops[standby], Duration::from_secs(30)).await?;
        // Let the standby see a few renewals, then land anywhere in the renew cycle.
        tokio::time::sleep(Duration::from_millis(1000) + RENEW_CYCLE.mul_f64(rng.random::<f64>()))
            .await;

        let mark = hook.log_len();
        let load1 = util::loadavg().0;
        let t0 = Instant::now();
        ops[victim].signal(mode.signal())?;
        let last_renewal = renewals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .find(|at| **at <= t0)
            .copied();
        let new_holder = ops[standby].identity.clone();
        let victim_op = &mut ops[victim];
        let exit_fut = async {
            victim_op.wait_exit(Duration::from_secs(40)).await;
            Instant::now()
        };
        let first_fut = within(
            Duration::from_secs(60),
            "the new leader's first hook call",
            async { Ok(hook.first_call_by(mark, &new_holder).await) },
        );
        let (first, exited_at) = tokio::join!(first_fut, exit_fut);
        let first = first?;
        let latency = first.at.saturating_duration_since(t0);
        let victim_exit = exited_at.saturating_duration_since(t0);
        // How long before the signal the last renewal was seen, and how far past
        // (that renewal + leaseDuration) the new leader's first call came (crash only).
        let since_renewal = last_renewal.map_or(f64::NAN, |at| ms(t0 - at));
        let beyond_expiry = match (mode, last_renewal) {
            (Mode::Crash, Some(at)) => {
                ms(first.at.saturating_duration_since(at + LEASE_DURATION))
                    - ms((at + LEASE_DURATION).saturating_duration_since(first.at))
            }
            _ => f64::NAN,
        };
        eprintln!(
            "[bench] {} trial {trial}/{trials}: {} -> {} in {:.0} ms (token {} -> {})",
            mode.label(),
            holder,
            new_holder,
            ms(latency),
            token_before,
            first.token
        );
        csv.row(&[
            trial.to_string(),
            mode.label().into(),
            f(ms(LEASE_DURATION)),
            f(ms(RETRY_PERIOD)),
            holder.clone(),
            new_holder,
            token_before.to_string(),
            first.token.to_string(),
            f(ms(latency)),
            f(latency.as_secs_f64() / LEASE_DURATION.as_secs_f64()),
            f(since_renewal),
            f(beyond_expiry),
            f(ms(victim_exit)),
            f(load1),
        ]);
        csv.save()?;

        // The victim comes back as the standby, under the same identity.
        let id = ops[victim].identity.clone();
        let mut op = Operator::spawn(o, &id, &extra)?;
        op.wait_ready(Duration::from_secs(60)).await?;
        ops[victim] = op;
        // With placement the preferred replica gets the Lease back. The replica that handed it
        // back then restarts too (a follower again, so nothing moves): a process doubles its
        // cool-off between handovers of one config with every handover, which would stretch
        // later trials' waits to minutes.
        if preferred(&ops).await.is_some() {
            util::wait_members(&ops, ops.len(), Duration::from_secs(60), true).await?;
            let holder = wait_settled(
                &leases,
                &ops,
                Duration::from_secs(1),
                Duration::from_secs(120),
            )
            .await?;
            if holder != ops[standby].identity {
                let old = ops.remove(standby);
                let id = old.identity.clone();
                old.stop().await;
                let mut op = Operator::spawn(o, &id, &extra)?;
                op.wait_ready(Duration::from_secs(60)).await?;
                ops.insert(standby, op);
            }
        }
    }
    lease_watch.abort();
    // Clean stop: delete the config (finalizer) while both run, then SIGTERM both.
    util::delete_mc_and_wait(&mcs, NAME, Duration::from_secs(30)).await?;
    for op in ops {
        op.stop().await;
    }
    Ok(())
}
