//! failover and handoff side by side: the operator's scenarios 1 and 2 against two
//! `cr-manager` replicas (controller-runtime, current release) with the same Lease timings
//! (leaseDuration 3s, renewDeadline 2s, retryPeriod 500ms) whose leader-only Runnable calls the
//! same hook (at once when it starts, then every second).
//!
//! A round: for SIGKILL, then SIGTERM (releaseOnCancel / LeaderElectionReleaseOnCancel), one
//! operator trial (the whole of [`crate::failover::run`] with one trial: two fresh replicas, a
//! fresh ManagerConfig) then one controller-runtime trial (two fresh processes on a fresh
//! Lease), so the two alternate A B A B and drift of the machine falls on both. Both time signal
//! → the first hook call by the other replica.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::failover::{self, Mode};
use crate::hook::Hook;
use crate::peers::{self, Peer};
use crate::util::{self, Csv, OperatorOpts, Result, f, fail, ms, within};

/// The operator scenario's timings, for cr-manager.
const TIMINGS: (&str, &str, &str) = ("3s", "2s", "500ms");

struct Trial {
    latency_ms: f64,
    victim_exit_ms: f64,
}

/// One controller-runtime trial: two replicas on a fresh Lease, signal the leader.
async fn cr_trial(
    o: &OperatorOpts,
    ns: &str,
    bin: &Path,
    hook: &Hook,
    mode: Mode,
    round: usize,
) -> Result<Trial> {
    let lease = format!("cr-failover-{}-{round}", mode.label().to_lowercase());
    let ids = ["cr-a", "cr-b"];
    let mut ps = Vec::new();
    for id in ids {
        let args = peers::manager_args(
            &o.kubeconfig,
            ns,
            &lease,
            id,
            TIMINGS,
            mode == Mode::Graceful,
            Some((&hook.url, "1s")),
        );
        let log = o.log_dir.join(format!("cr-manager-{id}.log"));
        ps.push(Peer::spawn(bin, &args, &log)?);
    }
    // The leader: the replica whose Runnable started and calls the hook.
    let mark0 = hook.log_len();
    let leader = within(
        Duration::from_secs(60),
        "a controller-runtime leader",
        async {
            loop {
                if let Some(c) = hook.log_since(mark0).into_iter().next() {
                    return Ok(c.holder);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await?;
    let victim = match ids.iter().position(|id| *id == leader) {
        Some(i) => i,
        None => return fail(format!("hook call from {leader}, not one of ours")),
    };
    let standby = 1 - victim;
    // Let the standby retry a few times, then land anywhere in a 1 s cycle (as the operator's).
    let extra = rand::rng().random::<f64>();
    tokio::time::sleep(Duration::from_millis(1000) + Duration::from_secs_f64(extra)).await;
    let mark = hook.log_len();
    let t0 = Instant::now();
    ps[victim].signal(mode.signal())?;
    let new_holder = ids[standby].to_string();
    let victim_p = &mut ps[victim];
    let exit_fut = victim_p.wait_exit(Duration::from_secs(30));
    let first_fut = within(
        Duration::from_secs(60),
        "the new controller-runtime leader's first hook call",
        async { Ok(hook.first_call_by(mark, &new_holder).await) },
    );
    let (first, exit) = tokio::join!(first_fut, exit_fut);
    let first = first?;
    let victim_exit = exit.map_or(f64::NAN, |(_, at)| ms(at.saturating_duration_since(t0)));
    for p in ps {
        p.kill().await;
    }
    Ok(Trial {
        latency_ms: ms(first.at.saturating_duration_since(t0)),
        victim_exit_ms: victim_exit,
    })
}

/// One operator trial: [`failover::run`] with one trial into a scratch CSV.
async fn operator_trial(o: &OperatorOpts, ns: &str, mode: Mode) -> Result<Trial> {
    let tmp = o.log_dir.join("operator-trial.csv");
    failover::run(o, ns, mode, 1, &tmp).await?;
    let rows = util::read_csv(&tmp)?;
    let r = rows.first().ok_or("the operator trial wrote no row")?;
    let num = |k: &str| {
        r.get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    Ok(Trial {
        latency_ms: num("latency_ms"),
        victim_exit_ms: num("victim_exit_ms"),
    })
}

/// Runs `rounds` rounds; writes `out`.
pub async fn run(
    o: &OperatorOpts,
    ns: &str,
    cr_bin: &Path,
    cr_version: &str,
    rounds: usize,
    out: &Path,
) -> Result<()> {
    let client = util::client(&o.kubeconfig).await?;
    util::target_configmap(&client, ns, "failover-target", "failover").await?;
    let hook = Hook::start(true).await?;
    let mut csv = Csv::new(
        out,
        &[
            "round",
            "signal",
            "impl",
            "lease_duration",
            "renew_deadline",
            "retry_period",
            "latency_ms",
            "victim_exit_ms",
            "load1",
        ],
    );
    let cr_name = format!("controller-runtime {cr_version}");
    for round in 1..=rounds {
        for mode in [Mode::Crash, Mode::Graceful] {
            for which in ["operator", "cr"] {
                let load1 = util::loadavg().0;
                let (name, t) = if which == "operator" {
                    (
                        "manager-operator".to_string(),
                        operator_trial(o, ns, mode).await?,
                    )
                } else {
                    (
                        cr_name.clone(),
                        cr_trial(o, ns, cr_bin, &hook, mode, round).await?,
                    )
                };
                eprintln!(
                    "[bench] peer-failover round {round}/{rounds} {}: {name} {:.0} ms",
                    mode.label(),
                    t.latency_ms
                );
                csv.row(&[
                    round.to_string(),
                    mode.label().into(),
                    name,
                    TIMINGS.0.into(),
                    TIMINGS.1.into(),
                    TIMINGS.2.into(),
                    f(t.latency_ms),
                    f(t.victim_exit_ms),
                    f(load1),
                ]);
                csv.save()?;
            }
        }
    }
    Ok(())
}
