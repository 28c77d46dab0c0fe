//! Scenario 5: scale. N ManagerConfigs on R replicas (one membership group; R = 1 is the
//! single-replica case), each config with one small worker (watches the one ConfigMap labelled
//! `bench=scale`, concurrency 1, a loopback hook), default lease timings (15s/10s/2s). With
//! R > 1 the configs are created once every replica sees R members.
//!
//! Measured: time from the first create to every config `Ready=True` (watch), per-config
//! create→Ready; then, after a settle period, over a steady-state window: CPU seconds per minute
//! and RSS of every replica (from /proc; RSS also before any config existed, so (RSS − RSS at
//! 0 configs) / N is the memory per idle manager), the same CPU figures for kube-apiserver and
//! etcd, the API server's request rate (`apiserver_request_total`, also every Lease verb on
//! its own), and the replicas' `lease_renew_duration_seconds` histograms (summed, window delta,
//! p50/p99 interpolated in buckets) and `lease_renew_failures_total`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use crate::hook::Hook;
use crate::util::{self, Csv, Operator, OperatorOpts, Result, f};

/// Settings.
pub struct Settings {
    /// Number of ManagerConfigs.
    pub configs: usize,
    /// Operator replicas.
    pub replicas: usize,
    /// Run number of this (configs, replicas) case.
    pub run: usize,
    /// Seconds between "all Ready" and the steady-state window.
    pub settle: f64,
    /// Steady-state window in seconds.
    pub window: f64,
    /// kube-apiserver pid (for its CPU).
    pub apiserver_pid: Option<u32>,
    /// etcd pid.
    pub etcd_pid: Option<u32>,
    /// When set: `perf record` the operator over a second steady-state window (after the
    /// measured one) into this file.
    pub perf_out: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct ReadyLog {
    ready_at: HashMap<String, Instant>,
    lost: usize,
}

fn apiserver_requests(m: &[util::Sample]) -> f64 {
    util::sum_of(m, "apiserver_request_total", &[])
}

/// A CSV at `path` with `header`, holding the rows already there whose (configs, replicas,
/// run) differ from `key` (sizes run in separate clusters and processes; rows written before
/// the replicas and run columns existed count as replicas 1, run 1).
fn keep_others(path: &std::path::Path, header: &[&str], key: &[String; 3]) -> Csv {
    let mut csv = Csv::new(path, header);
    if let Ok(rows) = util::read_csv(path) {
        for r in rows {
            let get = |k: &str, d: &str| r.get(k).cloned().unwrap_or_else(|| d.to_string());
            if [get("configs", ""), get("replicas", "1"), get("run", "1")] != *key {
                csv.row(
                    &header
                        .iter()
                        .map(|h| r.get(*h).cloned().unwrap_or_default())
                        .collect::<Vec<_>>(),
                );
            }
        }
    }
    csv
}

/// Runs one case; appends to the `scale*.csv` files in `out_dir`.
pub async fn run(
    o: &OperatorOpts,
    ns: &str,
    s: &Settings,
    out_dir: &std::path::Path,
) -> Result<()> {
    let client = util::client(&o.kubeconfig).await?;
    let hook = Hook::start(false).await?;
    util::target_configmap(&client, ns, "scale-target", "scale").await?;

    let extra = util::no_webhook_args(ns);
    let mut ops = Vec::new();
    for i in 1..=s.replicas.max(1) {
        let id = if s.replicas <= 1 {
            "bench-scale".to_string()
        } else {
            format!("bench-scale-{i}")
        };
        let mut op = Operator::spawn(o, &id, &extra)?;
        op.wait_ready(Duration::from_secs(60)).await?;
        ops.push(op);
    }
    if ops.len() > 1 {
        util::wait_members(&ops, ops.len(), Duration::from_secs(60), true).await?;
    }
    let rss_idle: Vec<f64> = ops
        .iter()
        .map(|op| util::rss_mib(op.pid).unwrap_or(f64::NAN))
        .collect();

    let api = util::mc_api(&client, ns);
    let log = Arc::new(Mutex::new(ReadyLog::default()));
    let l2 = log.clone();
    let watch_task = util::watch_objects(api.clone(), move |obj, now| {
        let mut g = l2.lock().unwrap_or_else(|e| e.into_inner());
        let name = obj.metadata.name.clone().unwrap_or_default();
        if util::condition_reason(obj, "Ready", "True").is_some() {
            g.ready_at.entry(name).or_insert(now);
        } else if g.ready_at.contains_key(&name)
            && util::condition_reason(obj, "Ready", "False").is_some()
        {
            g.lost += 1;
        }
    })
    .await?;

    util::warm_up_mc(&api, ns).await?;
    let n = s.configs;
    let load1_start = util::loadavg().0;
    let t0 = Instant::now();
    let created: Vec<(String, Instant)> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let url = hook.url.clone();
            async move {
                let name = format!("scale-{i:05}");
                let obj = util::dynamic(json!({
                    "apiVersion": "manager-operator.io/v1alpha1",
                    "kind": "ManagerConfig",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {
                        "workers": [{
                            "name": "w",
                            "watch": {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": "bench=scale"},
                            "hook": {"url": url}
                        }]
                    }
                }))?;
                let sent = Instant::now();
                util::create_idempotent(&api, &obj).await?;
                Ok::<_, util::Error>((name, sent))
            }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let create_s = t0.elapsed().as_secs_f64();
    let budget = Duration::from_secs(120 + n as u64 / 2);
    let deadline = Instant::now() + budget;
    loop {
        let ready = log.lock().unwrap_or_else(|e| e.into_inner()).ready_at.len();
        if ready >= n {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("[bench] only {ready}/{n} Ready after {budget:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (all_ready_s, per_config, ready_count) = {
        let g = log.lock().unwrap_or_else(|e| e.into_inner());
        let last = g.ready_at.values().max().copied();
        let per: Vec<(String, f64)> = created
            .iter()
            .map(|(name, sent)| {
                let v = g.ready_at.get(name).map_or(f64::NAN, |at| {
                    at.saturating_duration_since(*sent).as_secs_f64()
                });
                (name.clone(), v)
            })
            .collect();
        let all = if g.ready_at.len() >= n {
            last.map_or(f64::NAN, |l| l.saturating_duration_since(t0).as_secs_f64())
        } else {
            f64::NAN
        };
        (all, per, g.ready_at.len())
    };
    eprintln!(
        "[bench] scale {n}: {ready_count} Ready, all after {all_ready_s:.1} s; settling {} s",
        s.settle
    );
    let rss_of = |ops: &[Operator]| -> Vec<f64> {
        ops.iter()
            .map(|op| util::rss_mib(op.pid).unwrap_or(f64::NAN))
            .collect()
    };
    let cpu_of = |ops: &[Operator]| -> Vec<f64> {
        ops.iter()
            .map(|op| util::cpu_seconds(op.pid).unwrap_or(f64::NAN))
            .collect()
    };
    let rss_ready: f64 = rss_of(&ops).iter().sum();
    tokio::time::sleep(Duration::from_secs_f64(s.settle)).await;

    // Steady-state window.
    let lost_before = log.lock().unwrap_or_else(|e| e.into_inner()).lost;
    let mut m0 = Vec::new();
    for op in &ops {
        m0.push(op.metrics().await?);
    }
    let a0 = util::apiserver_metrics(&client).await?;
    let cpu0 = cpu_of(&ops);
    let api0 = s
        .apiserver_pid
        .and_then(util::cpu_seconds)
        .unwrap_or(f64::NAN);
    let etcd0 = s.etcd_pid.and_then(util::cpu_seconds).unwrap_or(f64::NAN);
    let w0 = Instant::now();
    let load1_window = util::loadavg().0;
    tokio::time::sleep(Duration::from_secs_f64(s.window)).await;
    let cpu1 = cpu_of(&ops);
    let api1 = s
        .apiserver_pid
        .and_then(util::cpu_seconds)
        .unwrap_or(f64::NAN);
    let etcd1 = s.etcd_pid.and_then(util::cpu_seconds).unwrap_or(f64::NAN);
    let secs = w0.elapsed().as_secs_f64();
    // A control-plane process that vanished (etcd stops when the disk fills up) makes every
    // number of this window meaningless; the CPU columns show it as NaN.
    for (what, pid, v) in [
        ("kube-apiserver", s.apiserver_pid, api1),
        ("etcd", s.etcd_pid, etcd1),
    ] {
        if pid.is_some() && v.is_nan() {
            eprintln!(
                "[bench] WARNING: {what} (pid {pid:?}) is gone: the control plane broke during the window"
            );
        }
    }
    let mut m1 = Vec::new();
    for op in &ops {
        m1.push(op.metrics().await?);
    }
    let a1 = util::apiserver_metrics(&client).await?;
    let rss_each = rss_of(&ops);
    let rss: f64 = rss_each.iter().sum();
    let hwm: f64 = ops
        .iter()
        .map(|op| util::status_mib(op.pid, "VmHWM:").unwrap_or(f64::NAN))
        .sum();
    let count_dir = |op: &Operator, d: &str| {
        std::fs::read_dir(format!("/proc/{}/{d}", op.pid)).map_or(0, |d| d.count())
    };
    let threads: usize = ops.iter().map(|op| count_dir(op, "task")).sum();
    let fds: usize = ops.iter().map(|op| count_dir(op, "fd")).sum();
    let lost = log.lock().unwrap_or_else(|e| e.into_inner()).lost - lost_before;

    // The profile: a second window of the same length under `perf record`, after everything
    // above was measured (sampling slows the process it profiles).
    if let Some(file) = &s.perf_out {
        let perf = util::perf_start(ops[0].pid, file).await?;
        tokio::time::sleep(Duration::from_secs_f64(s.window)).await;
        util::perf_stop(perf).await;
    }

    // Every replica's samples in one list: histograms and counters sum over replicas.
    let m0_all: Vec<util::Sample> = m0.iter().flatten().cloned().collect();
    let m1_all: Vec<util::Sample> = m1.iter().flatten().cloned().collect();
    let renew = util::delta(
        &util::histogram(
            &m1_all,
            "manager_operator_lease_renew_duration_seconds",
            &[],
        ),
        &util::histogram(
            &m0_all,
            "manager_operator_lease_renew_duration_seconds",
            &[],
        ),
    );
    let renew_failures = util::sum_of(&m1_all, "manager_operator_lease_renew_failures_total", &[])
        - util::sum_of(&m0_all, "manager_operator_lease_renew_failures_total", &[]);
    let api_rps = (apiserver_requests(&a1) - apiserver_requests(&a0)) / secs;
    let per_min = |a: f64, b: f64| (b - a) / secs * 60.0;
    let cpu: f64 = cpu0.iter().zip(&cpu1).map(|(a, b)| per_min(*a, *b)).sum();
    let ready_secs: Vec<f64> = per_config.iter().map(|x| x.1).collect();
    // Memory per idle manager: (RSS now − RSS at 0 configs) / N, over the fleet and per replica.
    let rss_growth: Vec<f64> = rss_each.iter().zip(&rss_idle).map(|(a, b)| a - b).collect();
    let rss_per_manager = rss_growth.iter().sum::<f64>() / n as f64;
    let rss_per_manager_replica = rss_growth.iter().copied().fold(f64::NAN, f64::max) / n as f64;
    // Lease requests by verb, from the API server's own counters (every client: the replicas'
    // config and membership Leases, kube-controller-manager's own election).
    let mut lease_verbs: std::collections::BTreeMap<String, f64> = Default::default();
    for (sign, samples) in [(1.0, &a1), (-1.0, &a0)] {
        for x in samples.iter().filter(|x| {
            x.name == "apiserver_request_total"
                && x.labels.get("resource").map(String::as_str) == Some("leases")
        }) {
            *lease_verbs
                .entry(x.labels.get("verb").cloned().unwrap_or_default())
                .or_default() += sign * x.value;
        }
    }
    let lease_rps = lease_verbs.values().sum::<f64>() / secs;
    let key = [n.to_string(), s.replicas.to_string(), s.run.to_string()];

    let path = out_dir.join("scale.csv");
    let header = [
        "configs",
        "replicas",
        "run",
        "ready",
        "create_s",
        "all_ready_s",
        "ready_p50_s",
        "ready_p99_s",
        "rss_idle_mib",
        "rss_ready_mib",
        "rss_mib",
        "rss_hwm_mib",
        "cpu_s_per_min",
        "apiserver_cpu_s_per_min",
        "etcd_cpu_s_per_min",
        "apiserver_rps",
        "renews_per_s",
        "renew_p50_ms",
        "renew_p99_ms",
        "renew_failures",
        "ready_lost_in_window",
        "threads",
        "fds",
        "hook_calls",
        "window_s",
        "load1_start",
        "load1_window",
        "rss_per_manager_mib",
        "rss_per_manager_replica_mib",
        "lease_rps",
        "lease_rps_per_manager",
    ];
    let mut csv = keep_others(&path, &header, &key);
    csv.row(&[
        n.to_string(),
        s.replicas.to_string(),
        s.run.to_string(),
        ready_count.to_string(),
        f(create_s),
        f(all_ready_s),
        f(util::median(&ready_secs)),
        f(util::percentile(&ready_secs, 99.0)),
        f(rss_idle.iter().sum::<f64>()),
        f(rss_ready),
        f(rss),
        f(hwm),
        f(cpu),
        f(per_min(api0, api1)),
        f(per_min(etcd0, etcd1)),
        f(api_rps),
        f(util::hist_count(&renew) / secs),
        f(util::hist_quantile(0.5, &renew) * 1000.0),
        f(util::hist_quantile(0.99, &renew) * 1000.0),
        f(renew_failures),
        lost.to_string(),
        threads.to_string(),
        fds.to_string(),
        hook.calls().to_string(),
        f(secs),
        f(load1_start),
        f(load1_window),
        f(rss_per_manager),
        f(rss_per_manager_replica),
        f(lease_rps),
        f(lease_rps / n as f64),
    ]);
    csv.save()?;

    // Every replica on its own.
    let ppath = out_dir.join("scale-replicas.csv");
    let pheader = [
        "configs",
        "replicas",
        "run",
        "replica",
        "leading",
        "rss_idle_mib",
        "rss_mib",
        "rss_per_manager_mib",
        "cpu_s_per_min",
        "fds",
        "threads",
    ];
    let mut pcsv = keep_others(&ppath, &pheader, &key);
    for (i, op) in ops.iter().enumerate() {
        let leading = if m1[i]
            .iter()
            .any(|x| x.name == "manager_operator_managers_leading")
        {
            util::sum_of(&m1[i], "manager_operator_managers_leading", &[])
        } else {
            util::sum_of(&m1[i], "manager_operator_managers", &[("state", "leading")])
        };
        pcsv.row(&[
            n.to_string(),
            s.replicas.to_string(),
            s.run.to_string(),
            op.identity.clone(),
            f(leading),
            f(rss_idle[i]),
            f(rss_each[i]),
            f(rss_growth[i] / n as f64),
            f(per_min(cpu0[i], cpu1[i])),
            count_dir(op, "fd").to_string(),
            count_dir(op, "task").to_string(),
        ]);
    }
    pcsv.save()?;

    // Lease requests by verb.
    let lpath = out_dir.join("scale-leases.csv");
    let lheader = [
        "configs",
        "replicas",
        "run",
        "verb",
        "per_s",
        "per_manager_per_s",
    ];
    let mut lcsv = keep_others(&lpath, &lheader, &key);
    for (verb, v) in lease_verbs.iter().filter(|(_, v)| **v > 0.0) {
        lcsv.row(&[
            n.to_string(),
            s.replicas.to_string(),
            s.run.to_string(),
            verb.clone(),
            f(v / secs),
            f(v / secs / n as f64),
        ]);
    }
    lcsv.save()?;

    // What the API server spent its requests on during the window, by resource and verb.
    let bpath = out_dir.join("scale-apiserver-requests.csv");
    let bheader = ["configs", "replicas", "run", "resource", "verb", "per_s"];
    let mut bcsv = keep_others(&bpath, &bheader, &key);
    let mut by: std::collections::BTreeMap<(String, String), f64> = Default::default();
    for (sign, samples) in [(1.0, &a1), (-1.0, &a0)] {
        for x in samples
            .iter()
            .filter(|x| x.name == "apiserver_request_total")
        {
            let key = (
                x.labels.get("resource").cloned().unwrap_or_default(),
                x.labels.get("verb").cloned().unwrap_or_default(),
            );
            *by.entry(key).or_default() += sign * x.value;
        }
    }
    let mut by: Vec<_> = by.into_iter().filter(|(_, v)| *v > 0.0).collect();
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    for ((resource, verb), v) in by.iter().take(12) {
        let resource = if resource.is_empty() {
            "(non-resource)"
        } else {
            resource.as_str()
        };
        bcsv.row(&[
            n.to_string(),
            s.replicas.to_string(),
            s.run.to_string(),
            resource.to_string(),
            verb.clone(),
            f(v / secs),
        ]);
    }
    bcsv.save()?;

    let rpath = out_dir.join("scale-ready.csv");
    let rheader = ["configs", "replicas", "run", "name", "create_to_ready_s"];
    let mut rcsv = keep_others(&rpath, &rheader, &key);
    for (name, v) in &per_config {
        rcsv.row(&[
            n.to_string(),
            s.replicas.to_string(),
            s.run.to_string(),
            name.clone(),
            f(*v),
        ]);
    }
    rcsv.save()?;
    eprintln!(
        "[bench] scale {n} on {} replica(s), run {}: RSS {rss:.1} MiB ({rss_per_manager:.3} MiB per manager), CPU {cpu:.2} s/min, API server {:.2} s/min at {api_rps:.0} req/s ({:.3} Lease req/s per manager), renew p99 {:.1} ms",
        s.replicas,
        s.run,
        per_min(api0, api1),
        lease_rps / n as f64,
        util::hist_quantile(0.99, &renew) * 1000.0
    );
    watch_task.abort();
    // No cleanup of the configs: the cluster is thrown away; SIGKILL spares a long graceful stop.
    for mut op in ops {
        let _ = op.signal(libc::SIGKILL);
        op.wait_exit(Duration::from_secs(10)).await;
    }
    Ok(())
}
