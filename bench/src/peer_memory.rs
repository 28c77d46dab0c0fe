//! memory per manager: the operator's marginal RSS per ManagerConfig against the RSS
//! of controller-runtime manager processes (`cr-manager`, current release), at N = 1, 10, 100
//! managers.
//!
//! * operator: one replica (webhook off); RSS with no config, then with N configs, each Ready
//!   (leaseDuration 15s, renewDeadline 10s, retryPeriod 2s; one worker watching the one
//!   ConfigMap labelled `bench=memory`, calling the harness's hook); marginal per manager =
//!   (RSS(N) − RSS(0)) ÷ N.
//! * controller-runtime: N `cr-manager` processes, each with its own Lease (same timings), each
//!   leading and calling the hook every 10 s; RSS per process (mean) and the sum.
//!
//! RSS is sampled `settle` seconds after the last manager is up (median of five samples 0.5 s
//! apart). Per rep and size the two alternate (operator N, controller-runtime N, ...).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::hook::Hook;
use crate::peers::{self, Peer};
use crate::util::{self, Csv, Operator, OperatorOpts, Result, f};

/// Settings of the scenario.
pub struct Settings {
    pub sizes: Vec<usize>,
    pub reps: usize,
    pub settle: f64,
    pub cr_manager: std::path::PathBuf,
    pub cr_version: String,
}

/// Proportional set size of `pid` in MiB (shared pages divided among the processes sharing
/// them), from /proc/PID/smaps_rollup.
fn pss_mib(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Summed RSS and PSS of `pids` (MiB), each the median of five samples 0.5 s apart.
async fn rss_sample(pids: &[u32]) -> (f64, f64) {
    let mut rss = Vec::new();
    let mut pss = Vec::new();
    for _ in 0..5 {
        rss.push(pids.iter().filter_map(|p| util::rss_mib(*p)).sum::<f64>());
        pss.push(pids.iter().filter_map(|p| pss_mib(*p)).sum::<f64>());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (util::median(&rss), util::median(&pss))
}

/// Runs the scenario; writes `out`.
pub async fn run(o: &OperatorOpts, ns: &str, s: &Settings, out: &Path) -> Result<()> {
    let client = util::client(&o.kubeconfig).await?;
    util::target_configmap(&client, ns, "memory-target", "memory").await?;
    let hook = Hook::start(false).await?;
    let mcs = util::mc_api(&client, ns);
    let ready: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let r2 = ready.clone();
    let watch = util::watch_objects(mcs.clone(), move |obj, _| {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let mut g = r2.lock().unwrap_or_else(|e| e.into_inner());
        if util::condition_reason(obj, "Ready", "True").is_some() {
            g.insert(name);
        } else {
            g.remove(&name);
        }
    })
    .await?;
    let settle = Duration::from_secs_f64(s.settle);
    let mut csv = Csv::new(
        out,
        &[
            "rep",
            "impl",
            "managers",
            "processes",
            "rss_total_mib",
            "rss_baseline_mib",
            "rss_per_manager_mib",
            "pss_total_mib",
            "pss_baseline_mib",
            "pss_per_manager_mib",
            "load1",
        ],
    );
    let cr_name = format!("controller-runtime {}", s.cr_version);
    for rep in 1..=s.reps {
        for &n in &s.sizes {
            // The operator: a fresh replica, baseline, then n configs.
            let load1 = util::loadavg().0;
            let mut op = Operator::spawn(
                o,
                &format!("bench-memory-{rep}-{n}"),
                &util::no_webhook_args(ns),
            )?;
            op.wait_ready(Duration::from_secs(60)).await?;
            tokio::time::sleep(settle).await;
            let (base, pbase) = rss_sample(&[op.pid]).await;
            let names: Vec<String> = (0..n).map(|i| format!("memory-{i:03}")).collect();
            for name in &names {
                let mc = util::dynamic(json!({
                    "apiVersion": "manager-operator.io/v1alpha1",
                    "kind": "ManagerConfig",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {
                        "leaderElection": {"leaseDuration": "15s", "renewDeadline": "10s", "retryPeriod": "2s"},
                        "workers": [{
                            "name": "w",
                            "watch": {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": "bench=memory"},
                            "hook": {"url": hook.url}
                        }]
                    }
                }))?;
                util::create_idempotent(&mcs, &mc).await?;
            }
            util::within(
                Duration::from_secs(120),
                "every memory config Ready",
                async {
                    loop {
                        let g = ready.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        if names.iter().all(|x| g.contains(x)) {
                            return Ok(());
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            )
            .await?;
            tokio::time::sleep(settle).await;
            let (total, ptotal) = rss_sample(&[op.pid]).await;
            eprintln!(
                "[bench] peer-memory rep {rep} n={n}: operator {base:.1} -> {total:.1} MiB ({:.2} MiB per manager)",
                (total - base) / n as f64
            );
            csv.row(&[
                rep.to_string(),
                "manager-operator".into(),
                n.to_string(),
                "1".into(),
                f(total),
                f(base),
                f((total - base) / n as f64),
                f(ptotal),
                f(pbase),
                f((ptotal - pbase) / n as f64),
                f(load1),
            ]);
            for name in &names {
                let _ = mcs.delete(name, &Default::default()).await;
            }
            for name in &names {
                util::delete_mc_and_wait(&mcs, name, Duration::from_secs(60)).await?;
            }
            op.stop().await;

            // controller-runtime: n processes.
            let load1 = util::loadavg().0;
            let mut ps = Vec::new();
            for i in 0..n {
                let args = peers::manager_args(
                    &o.kubeconfig,
                    ns,
                    &format!("cr-memory-{rep}-{n}-{i}"),
                    &format!("cr-{i}"),
                    ("15s", "10s", "2s"),
                    true,
                    Some((&hook.url, "10s")),
                );
                ps.push(Peer::spawn(
                    &s.cr_manager,
                    &args,
                    &o.log_dir.join("cr-memory.log"),
                )?);
            }
            util::within(
                Duration::from_secs(120),
                "every cr-manager leading",
                async {
                    loop {
                        if ps.iter().all(|p| p.event("leading").is_some()) {
                            return Ok(());
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            )
            .await?;
            tokio::time::sleep(settle).await;
            let pids: Vec<u32> = ps.iter().map(|p| p.pid).collect();
            let (total, ptotal) = rss_sample(&pids).await;
            eprintln!(
                "[bench] peer-memory rep {rep} n={n}: controller-runtime {total:.1} MiB in {n} processes ({:.2} MiB each)",
                total / n as f64
            );
            csv.row(&[
                rep.to_string(),
                cr_name.clone(),
                n.to_string(),
                n.to_string(),
                f(total),
                "0".into(),
                f(total / n as f64),
                f(ptotal),
                "0".into(),
                f(ptotal / n as f64),
                f(load1),
            ]);
            csv.save()?;
            for p in ps {
                p.kill().await;
            }
        }
    }
    watch.abort();
    Ok(())
}
