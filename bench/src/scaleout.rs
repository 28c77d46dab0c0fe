//! Scenario 7 (docs/placement.md): placement, many managers over many replicas.
//!
//! R replicas (default 3; distinct `--identity`, one `--membership-group` in the watched
//! namespace, webhook off) and N ManagerConfigs, each with one worker watching the one
//! ConfigMap labelled `bench=scaleout` with `resyncPeriod` 1 s, so the leader of every config
//! calls the harness's hook about once a second; the hook records, per config, the terms
//! (holder, fencing token, first and last call) and every fencing violation on arrival (a token
//! lower than one already seen for that config, or one token used by two holders). The harness
//! also watches the ManagerConfigs (Ready, `status.leader`) and the Leases (holderIdentity
//! `<replica>/<uid>`), each event timestamped on arrival.
//!
//! Phases:
//! 1. all Ready, then until the Lease holders stop changing (5 s quiet) and at least `settle`
//!    (15 s) after all Ready: managers led per replica, from
//!    `manager_operator_managers_leading` and from the Lease holders;
//! 2. a replica joins: its share after `join_window` (60 s) from its start, when it first held
//!    90 % of N/(R+1), and for every config that moved, the gap: the old holder's last hook call
//!    → the new holder's first (includes up to one resync period with no call due), and the
//!    Lease leaving the old replica (release seen by the harness's watch) → the new holder's
//!    first call;
//! 3. `trials` × SIGTERM, then `trials` × SIGKILL of the replica leading the most configs: for
//!    each config it led, signal → first hook call by another replica, and signal → recovered
//!    (seen `Ready=True` with a surviving `status.leader`, and called by a survivor); the victim
//!    restarts under the same identity and the harness waits until it is given its share back
//!    before the next trial.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

use crate::hook::Hook;
use crate::util::{self, Csv, Operator, OperatorOpts, Result, f, fail, ms};

/// Settings.
pub struct Settings {
    /// Number of ManagerConfigs.
    pub configs: usize,
    /// Replicas before the join (the join adds one).
    pub replicas: usize,
    /// Seconds after the new replica's start at which its share is read.
    pub join_window: f64,
    /// `resyncPeriod` of every worker.
    pub resync: String,
    /// leaseDuration in whole seconds.
    pub lease_duration: u64,
    /// renewDeadline.
    pub renew_deadline: String,
    /// retryPeriod.
    pub retry_period: String,
    /// Trials per signal (SIGTERM, then SIGKILL).
    pub trials: usize,
    /// Least seconds between all Ready and reading the initial distribution.
    pub settle: f64,
}

const GROUP: &str = "bench-scaleout";
const PREFIX: &str = "so-";

/// What the harness's watches saw.
#[derive(Default)]
struct World {
    /// ManagerConfig → changes of (Ready=True, status.leader), in arrival order.
    configs: HashMap<String, Vec<(Instant, bool, String)>>,
    /// Lease (= ManagerConfig name) → changes of (holderIdentity, "" when none), in arrival order.
    leases: HashMap<String, Vec<(Instant, String)>>,
}

impl World {
    /// Config → replica currently holding its Lease (configs with a holder only).
    fn holders(&self) -> BTreeMap<String, String> {
        self.leases
            .iter()
            .filter_map(|(name, h)| {
                let (_, holder) = h.last()?;
                (!holder.is_empty()).then(|| (name.clone(), util::replica_of(holder).to_string()))
            })
            .collect()
    }

    fn ready_count(&self) -> usize {
        self.configs
            .values()
            .filter(|h| h.last().is_some_and(|x| x.1))
            .count()
    }

    /// Latest Lease change seen.
    fn last_lease_change(&self) -> Option<Instant> {
        self.leases
            .values()
            .filter_map(|h| h.last())
            .map(|x| x.0)
            .max()
    }
}

type Shared = Arc<Mutex<World>>;

fn lock(w: &Shared) -> std::sync::MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

fn count_by(holders: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in holders.values() {
        *out.entry(r.clone()).or_default() += 1;
    }
    out
}

/// Waits until every config has a Lease holder and no holder changed for `quiet`; returns the
/// seconds waited (NaN when `max` passed first).
async fn wait_stable(world: &Shared, n: usize, quiet: Duration, max: Duration) -> f64 {
    let t = Instant::now();
    loop {
        let (held, last) = {
            let w = lock(world);
            (w.holders().len(), w.last_lease_change())
        };
        if held >= n && last.is_none_or(|l| l.elapsed() >= quiet) {
            return t.elapsed().as_secs_f64();
        }
        if t.elapsed() > max {
            eprintln!(
                "[bench] scaleout: Lease holders still changing after {max:?} ({held}/{n} held)"
            );
            return f64::NAN;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One row per replica of `scaleout-distribution.csv`.
async fn distribution(
    csv: &mut Csv,
    phase: &str,
    ops: &[Operator],
    world: &Shared,
    n: usize,
) -> BTreeMap<String, usize> {
    let by = count_by(&lock(world).holders());
    let fair = n as f64 / ops.len() as f64;
    for op in ops {
        let leases = by.get(&op.identity).copied().unwrap_or(0);
        csv.row(&[
            phase.to_string(),
            op.identity.clone(),
            ops.len().to_string(),
            f(util::gauge(op, "manager_operator_managers_leading").await),
            leases.to_string(),
            f(util::gauge(op, "manager_operator_managers_preferred").await),
            f(util::gauge(op, "manager_operator_replicas_seen").await),
            f(fair),
            f(leases as f64 / fair),
        ]);
    }
    eprintln!("[bench] scaleout {phase}: Lease holders per replica {by:?}");
    by
}

/// Runs the scenario; writes `scaleout*.csv` in `out_dir`.
pub async fn run(
    o: &OperatorOpts,
    ns: &str,
    s: &Settings,
    out_dir: &std::path::Path,
) -> Result<()> {
    let client = util::client(&o.kubeconfig).await?;
    let hook = Hook::start_with(false, true).await?;
    util::target_configmap(&client, ns, "scaleout-target", "scaleout").await?;
    let n = s.configs;
    let t_start = Instant::now();

    let mut extra = util::no_webhook_args(ns);
    extra.extend(util::flag("--membership-group", GROUP));
    extra.extend(util::flag("--membership-namespace", ns));
    let mut ops = Vec::new();
    for i in 1..=s.replicas {
        let mut op = Operator::spawn(o, &format!("bench-r{i}"), &extra)?;
        op.wait_ready(Duration::from_secs(60)).await?;
        ops.push(op);
    }
    util::wait_members(&ops, s.replicas, Duration::from_secs(60), true).await?;

    // The harness's watches.
    let world: Shared = Arc::default();
    let w2 = world.clone();
    let mc_watch = util::watch_objects(util::mc_api(&client, ns), move |obj, now| {
        let name = obj.metadata.name.clone().unwrap_or_default();
        if !name.starts_with(PREFIX) {
            return;
        }
        let ready = util::condition_reason(obj, "Ready", "True").is_some();
        let leader = obj
            .data
            .get("status")
            .and_then(|s| s.get("leader"))
            .and_then(|l| l.as_str())
            .unwrap_or("")
            .to_string();
        let mut w = lock(&w2);
        let h = w.configs.entry(name).or_default();
        if h.last().is_none_or(|x| x.1 != ready || x.2 != leader) {
            h.push((now, ready, leader));
        }
    })
    .await?;
    let w3 = world.clone();
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let lease_watch = util::watch_objects(leases, move |l: &Lease, now| {
        let name = l.metadata.name.clone().unwrap_or_default();
        if !name.starts_with(PREFIX) {
            return;
        }
        let holder = l
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        let mut w = lock(&w3);
        let h = w.leases.entry(name).or_default();
        if h.last().is_none_or(|x| x.1 != holder) {
            h.push((now, holder));
        }
    })
    .await?;

    // Phase 1: N configs on R replicas.
    let api = util::mc_api(&client, ns);
    util::warm_up_mc(&api, ns).await?;
    let t0 = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let url = hook.url.clone();
            async move {
                let obj = util::dynamic(json!({
                    "apiVersion": "manager-operator.io/v1alpha1",
                    "kind": "ManagerConfig",
                    "metadata": {"name": format!("{PREFIX}{i:05}"), "namespace": ns},
                    "spec": {
                        "leaderElection": {
                            "leaseDuration": format!("{}s", s.lease_duration),
                            "renewDeadline": s.renew_deadline,
                            "retryPeriod": s.retry_period,
                        },
                        "workers": [{
                            "name": "w",
                            "watch": {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": "bench=scaleout"},
                            "resyncPeriod": s.resync,
                            "hook": {"url": url, "timeout": "5s"}
                        }]
                    }
                }))?;
                util::create_idempotent(&api, &obj).await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let budget = Duration::from_secs(120 + n as u64 / 2);
    let all_ready_s = loop {
        let ready = lock(&world).ready_count();
        if ready >= n {
            break t0.elapsed().as_secs_f64();
        }
        if t0.elapsed() > budget {
            eprintln!("[bench] scaleout: only {ready}/{n} Ready after {budget:?}");
            break f64::NAN;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let t_ready = Instant::now();
    let mut settle_s =
        wait_stable(&world, n, Duration::from_secs(5), Duration::from_secs(90)).await;
    // At least `settle` seconds after all Ready: a placement that is still wrong then is not a
    // transient.
    let min_settle = Duration::from_secs_f64(s.settle);
    if settle_s.is_finite() && t_ready.elapsed() < min_settle {
        tokio::time::sleep(min_settle - t_ready.elapsed()).await;
        settle_s = t_ready.elapsed().as_secs_f64();
    }
    eprintln!(
        "[bench] scaleout: {n} Ready after {all_ready_s:.1} s, holders stable {settle_s:.1} s later"
    );

    let dpath = out_dir.join("scaleout-distribution.csv");
    let mut dcsv = Csv::new(
        &dpath,
        &[
            "phase",
            "replica",
            "replicas",
            "leading_metric",
            "leading_leases",
            "preferred_metric",
            "replicas_seen",
            "fair_share",
            "share_ratio",
        ],
    );
    let initial = distribution(&mut dcsv, "initial", &ops, &world, n).await;
    dcsv.save()?;

    // Phase 2: a replica joins.
    let before = lock(&world).holders();
    let joined_id = format!("bench-r{}", s.replicas + 1);
    let t_join = Instant::now();
    let mut op = Operator::spawn(o, &joined_id, &extra)?;
    op.wait_ready(Duration::from_secs(60)).await?;
    let join_ready_s = t_join.elapsed().as_secs_f64();
    ops.push(op);
    let fair = n as f64 / ops.len() as f64;
    let mut reach90_s = f64::NAN;
    let join_end = t_join + Duration::from_secs_f64(s.join_window);
    while Instant::now() < join_end {
        let have = count_by(&lock(&world).holders())
            .get(&joined_id)
            .copied()
            .unwrap_or(0);
        if reach90_s.is_nan() && have as f64 >= 0.9 * fair {
            reach90_s = t_join.elapsed().as_secs_f64();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let joined = distribution(&mut dcsv, "joined", &ops, &world, n).await;
    dcsv.save()?;
    let joined_share = joined.get(&joined_id).copied().unwrap_or(0);
    let joined_metric = util::gauge(&ops[ops.len() - 1], "manager_operator_managers_leading").await;
    let after = lock(&world).holders();

    // Gaps of the configs that moved.
    let mpath = out_dir.join("scaleout-moves.csv");
    let mut mcsv = Csv::new(
        &mpath,
        &[
            "phase",
            "config",
            "from",
            "to",
            "last_to_first_call_ms",
            "lease_left_to_first_call_ms",
            "lease_left_to_acquired_ms",
        ],
    );
    let (mut gaps_hook, mut gaps_lease) = (Vec::new(), Vec::new());
    {
        let w = lock(&world);
        hook.with_terms(|terms| {
            for (config, from) in &before {
                let Some(to) = after.get(config) else {
                    continue;
                };
                if to == from {
                    continue;
                }
                let empty = Vec::new();
                let ts = terms.get(config).unwrap_or(&empty);
                let first_new = ts
                    .iter()
                    .filter(|t| &t.holder == to && t.first >= t_join)
                    .map(|t| t.first)
                    .min();
                let last_old = ts
                    .iter()
                    .filter(|t| &t.holder == from)
                    .map(|t| t.last)
                    .max();
                let lh = w.leases.get(config).cloned().unwrap_or_default();
                let left = lh
                    .iter()
                    .find(|(at, h)| *at >= t_join && util::replica_of(h) != from)
                    .map(|x| x.0);
                let acquired = lh
                    .iter()
                    .find(|(at, h)| *at >= t_join && util::replica_of(h) == to)
                    .map(|x| x.0);
                let diff = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
                    (Some(a), Some(b)) => {
                        ms(b.saturating_duration_since(a)) - ms(a.saturating_duration_since(b))
                    }
                    _ => f64::NAN,
                };
                let g_hook = diff(last_old, first_new);
                let g_lease = diff(left, first_new);
                gaps_hook.push(g_hook);
                gaps_lease.push(g_lease);
                mcsv.row(&[
                    "join".into(),
                    config.clone(),
                    from.clone(),
                    to.clone(),
                    f(g_hook),
                    f(g_lease),
                    f(diff(left, acquired)),
                ]);
            }
        });
    }
    mcsv.save()?;
    let t_join_end = Instant::now();
    eprintln!(
        "[bench] scaleout join: {joined_id} leads {joined_share} (metric {joined_metric}) after {} s, 90 % of N/R after {reach90_s:.1} s; {} moved, gap p99 {:.0} ms (hook) / {:.0} ms (Lease left → first call)",
        s.join_window,
        gaps_hook.len(),
        util::percentile(&gaps_hook, 99.0),
        util::percentile(&gaps_lease, 99.0)
    );

    // Phase 3: SIGTERM and SIGKILL of the replica leading the most configs.
    let fpath = out_dir.join("scaleout-failover.csv");
    let mut fcsv = Csv::new(
        &fpath,
        &[
            "signal",
            "trial",
            "victim",
            "affected",
            "lease_duration_s",
            "all_called_s",
            "all_ready_s",
            "ready_p50_s",
            "ready_p95_s",
            "call_p95_s",
            "not_recovered",
            "victim_exit_ms",
            "violations",
            "rebalanced_s",
            "load1",
        ],
    );
    let mut phases = vec![
        ("start", t_start),
        ("join", t_join),
        ("settled", t_join_end),
    ];
    for (sig, label) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
        for trial in 1..=s.trials {
            let by = count_by(&lock(&world).holders());
            let Some(victim) = ops
                .iter()
                .enumerate()
                .max_by_key(|(_, op)| by.get(&op.identity).copied().unwrap_or(0))
                .map(|(i, _)| i)
            else {
                return fail("no replicas");
            };
            let victim_id = ops[victim].identity.clone();
            let affected: Vec<String> = lock(&world)
                .holders()
                .into_iter()
                .filter(|(_, r)| *r == victim_id)
                .map(|(c, _)| c)
                .collect();
            let violations_before = hook.violations().len();
            let load1 = util::loadavg().0;
            let t0 = Instant::now();
            phases.push((label, t0));
            ops[victim].signal(sig)?;
            let deadline = t0 + Duration::from_secs(s.lease_duration + 60);
            let watch_fut = async {
                let mut called: HashMap<String, f64> = HashMap::new();
                let mut ready: HashMap<String, f64> = HashMap::new();
                while Instant::now() < deadline
                    && (called.len() < affected.len() || ready.len() < affected.len())
                {
                    hook.with_terms(|terms| {
                        for c in &affected {
                            if called.contains_key(c) {
                                continue;
                            }
                            if let Some(first) = terms.get(c).and_then(|ts| {
                                ts.iter()
                                    .filter(|t| t.holder != victim_id && t.first >= t0)
                                    .map(|t| t.first)
                                    .min()
                            }) {
                                called.insert(c.clone(), (first - t0).as_secs_f64());
                            }
                        }
                    });
                    {
                        let w = lock(&world);
                        for c in &affected {
                            if ready.contains_key(c) {
                                continue;
                            }
                            // The status in effect at the signal, then every later change:
                            // the first showing Ready=True with a surviving leader.
                            if let Some(at) = w.configs.get(c).and_then(|h| {
                                let from = h.iter().rposition(|x| x.0 <= t0).unwrap_or(0);
                                h[from..]
                                    .iter()
                                    .find(|(_, r, l)| *r && !l.is_empty() && *l != victim_id)
                                    .map(|x| x.0.max(t0))
                            }) {
                                ready.insert(c.clone(), (at - t0).as_secs_f64());
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (called, ready)
            };
            let victim_op = &mut ops[victim];
            let exit_fut = async {
                victim_op.wait_exit(Duration::from_secs(60)).await;
                t0.elapsed()
            };
            let ((called, ready), exited) = tokio::join!(watch_fut, exit_fut);
            let call_s: Vec<f64> = affected
                .iter()
                .map(|c| called.get(c).copied().unwrap_or(f64::INFINITY))
                .collect();
            // Recovered = Ready=True with a surviving leader in the status *and* a hook call by
            // a survivor (a status can lag its Lease, or be left over from an earlier term).
            let ready_s: Vec<f64> = affected
                .iter()
                .zip(&call_s)
                .map(|(c, call)| ready.get(c).copied().unwrap_or(f64::INFINITY).max(*call))
                .collect();
            let not_recovered = ready_s.iter().filter(|x| !x.is_finite()).count();
            let max_or_nan = |v: &[f64]| {
                if v.iter().all(|x| x.is_finite()) {
                    util::percentile(v, 100.0)
                } else {
                    f64::NAN
                }
            };
            let all_ready = max_or_nan(&ready_s);
            let all_called = max_or_nan(&call_s);
            let violations = hook.violations().len() - violations_before;
            eprintln!(
                "[bench] scaleout {label} {trial}/{}: {victim_id} led {}; all Ready on survivors after {all_ready:.2} s, all called after {all_called:.2} s ({not_recovered} not recovered, {violations} violations)",
                s.trials,
                affected.len()
            );

            // The victim comes back under the same identity and gets its share back.
            let t_restart = Instant::now();
            let mut op = Operator::spawn(o, &victim_id, &extra)?;
            op.wait_ready(Duration::from_secs(60)).await?;
            ops[victim] = op;
            let fair = n as f64 / ops.len() as f64;
            let rebalanced_s = loop {
                let have = count_by(&lock(&world).holders())
                    .get(&victim_id)
                    .copied()
                    .unwrap_or(0);
                if have as f64 >= 0.9 * fair {
                    break t_restart.elapsed().as_secs_f64();
                }
                if t_restart.elapsed() > Duration::from_secs(120) {
                    eprintln!(
                        "[bench] scaleout: {victim_id} holds only {have} two minutes after its restart"
                    );
                    break f64::NAN;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            wait_stable(&world, n, Duration::from_secs(3), Duration::from_secs(60)).await;
            fcsv.row(&[
                label.to_string(),
                trial.to_string(),
                victim_id.clone(),
                affected.len().to_string(),
                s.lease_duration.to_string(),
                f(all_called),
                f(all_ready),
                f(util::median(&ready_s)),
                f(util::percentile(&ready_s, 95.0)),
                f(util::percentile(&call_s, 95.0)),
                not_recovered.to_string(),
                f(ms(exited)),
                violations.to_string(),
                f(rebalanced_s),
                f(load1),
            ]);
            fcsv.save()?;
        }
    }

    // Every fencing violation, with the phase it happened in.
    let violations = hook.violations();
    let vpath = out_dir.join("scaleout-violations.csv");
    let mut vcsv = Csv::new(
        &vpath,
        &["phase", "at_s", "config", "kind", "holder", "token"],
    );
    for v in &violations {
        let phase = phases
            .iter()
            .rev()
            .find(|(_, at)| *at <= v.at)
            .map_or("start", |p| p.0);
        vcsv.row(&[
            phase.to_string(),
            f(v.at.saturating_duration_since(t_start).as_secs_f64()),
            v.config.clone(),
            v.kind.to_string(),
            v.holder.clone(),
            v.token.to_string(),
        ]);
    }
    vcsv.save()?;
    let join_violations = violations
        .iter()
        .filter(|v| v.at >= t_join && v.at < t_join_end)
        .count();

    let (imin, imax) = (
        initial.values().min().copied().unwrap_or(0),
        initial.values().max().copied().unwrap_or(0),
    );
    let spath = out_dir.join("scaleout.csv");
    let mut scsv = Csv::new(
        &spath,
        &[
            "configs",
            "replicas",
            "resync",
            "lease_duration_s",
            "renew_deadline",
            "retry_period",
            "all_ready_s",
            "settle_s",
            "initial_min",
            "initial_max",
            "initial_replicas_leading",
            "join_window_s",
            "join_ready_s",
            "joined_leases",
            "joined_metric",
            "joined_fair",
            "reach90_s",
            "moved",
            "gap_hook_p50_ms",
            "gap_hook_p99_ms",
            "gap_hook_max_ms",
            "gap_lease_p50_ms",
            "gap_lease_p99_ms",
            "gap_lease_max_ms",
            "join_violations",
            "violations",
            "hook_calls",
        ],
    );
    scsv.row(&[
        n.to_string(),
        s.replicas.to_string(),
        s.resync.clone(),
        s.lease_duration.to_string(),
        s.renew_deadline.clone(),
        s.retry_period.clone(),
        f(all_ready_s),
        f(settle_s),
        imin.to_string(),
        imax.to_string(),
        initial.len().to_string(),
        f(s.join_window),
        f(join_ready_s),
        joined_share.to_string(),
        f(joined_metric),
        f(fair),
        f(reach90_s),
        gaps_hook.len().to_string(),
        f(util::median(&gaps_hook)),
        f(util::percentile(&gaps_hook, 99.0)),
        f(util::percentile(&gaps_hook, 100.0)),
        f(util::median(&gaps_lease)),
        f(util::percentile(&gaps_lease, 99.0)),
        f(util::percentile(&gaps_lease, 100.0)),
        join_violations.to_string(),
        violations.len().to_string(),
        hook.calls().to_string(),
    ]);
    scsv.save()?;

    mc_watch.abort();
    lease_watch.abort();
    // No cleanup: the cluster is thrown away.
    for mut op in ops {
        let _ = op.signal(libc::SIGKILL);
        op.wait_exit(Duration::from_secs(10)).await;
    }
    Ok(())
}
