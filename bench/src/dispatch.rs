//! Scenario 6: dispatch throughput, and the same work done by a bare kube-runtime controller.
//!
//! N ConfigMaps (label `bench=dispatch`, `data.gen` = a generation counter, ~100 bytes of
//! payload) exist before anything watches them. For each implementation and concurrency C, a
//! fresh process:
//!
//! * `operator`: `manager-operator run`; after `/readyz` the harness reads its RSS (baseline)
//!   and creates one ManagerConfig with one worker (concurrency C) watching them;
//! * `bare`: `mo-bench bare-controller` (a kube-runtime `Controller<ConfigMap>` with
//!   concurrency C that POSTs the same JSON body to the same hook, without election, fencing,
//!   impersonation, metrics or bookkeeping); it prints `ready` after building its client, the
//!   harness reads its RSS, then tells it to start.
//!
//! Initial sync: objects/s = N / (last first-delivery − first delivery) as seen by the hook;
//! also from the start signal. Memory per object = (RSS after sync, 2 s later − baseline) / N.
//! Update burst: the harness patches every object's `data.gen` (32 patches in flight) and
//! measures objects/s = N / (last delivery of the new generation − first patch sent), with the
//! write rate alongside: when delivery finishes right after the last write, the burst was
//! write-bound (API server), not dispatch-bound.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::hook::Hook;
use crate::util::{self, Csv, Operator, OperatorOpts, Result, f, fail};

/// Settings.
pub struct Settings {
    /// Number of ConfigMaps.
    pub objects: usize,
    /// Concurrency levels.
    pub levels: Vec<usize>,
    /// Implementations to run: "operator", "bare".
    pub impls: Vec<String>,
    /// When set: `perf record` the operator at this concurrency into this file.
    pub perf: Option<(usize, std::path::PathBuf)>,
}

const SELECTOR: &str = "bench=dispatch";
const WRITERS: usize = 32;

async fn create_objects(api: &Api<ConfigMap>, n: usize) -> Result<f64> {
    let existing = api
        .list(&ListParams::default().labels(SELECTOR))
        .await?
        .items
        .len();
    let t = Instant::now();
    futures::stream::iter(existing..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("obj-{i:06}"), "labels": {"bench": "dispatch"}},
                    "data": {"gen": "1", "payload": "x".repeat(100)}
                }))?;
                util::create_idempotent(&api, &cm).await?;
                Ok::<_, util::Error>(())
            }
        })
        .buffer_unordered(WRITERS)
        .try_collect::<Vec<_>>()
        .await?;
    Ok((n - existing) as f64 / t.elapsed().as_secs_f64())
}

/// Patches every object to generation `g`; returns (first patch sent, last patch answered).
async fn bump(api: &Api<ConfigMap>, n: usize, g: u64) -> Result<(Instant, Instant)> {
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let p = json!({"data": {"gen": g.to_string()}});
                api.patch(
                    &format!("obj-{i:06}"),
                    &PatchParams::default(),
                    &Patch::Merge(&p),
                )
                .await?;
                Ok::<_, util::Error>(())
            }
        })
        .buffer_unordered(WRITERS)
        .try_collect::<Vec<_>>()
        .await?;
    Ok((t, Instant::now()))
}

async fn wait_gen(
    hook: &Hook,
    g: u64,
    n: usize,
    within: Duration,
) -> Result<crate::hook::GenProgress> {
    let until = Instant::now() + within;
    loop {
        if let Some(p) = hook.progress(g)
            && p.objects >= n
        {
            return Ok(p);
        }
        if Instant::now() > until {
            let got = hook.progress(g).map_or(0, |p| p.objects);
            return fail(format!(
                "only {got}/{n} objects delivered at generation {g} within {within:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

enum Proc {
    Operator(Operator),
    Bare(tokio::process::Child, u32),
}

impl Proc {
    fn pid(&self) -> u32 {
        match self {
            Proc::Operator(o) => o.pid,
            Proc::Bare(_, pid) => *pid,
        }
    }
}

/// Runs every implementation × concurrency; writes `dispatch.csv` into `out_dir`.
pub async fn run(o: &OperatorOpts, ns: &str, s: &Settings, out_dir: &Path) -> Result<()> {
    let client = util::client(&o.kubeconfig).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let n = s.objects;
    eprintln!("[bench] creating {n} ConfigMaps");
    let create_rate = create_objects(&cms, n).await?;
    eprintln!("[bench] created at {create_rate:.0}/s");
    let hook = Hook::start(false).await?;
    let mcs = util::mc_api(&client, ns);
    let mut g: u64 = 1;

    let mut csv = Csv::new(
        out_dir.join("dispatch.csv"),
        &[
            "impl",
            "concurrency",
            "objects",
            "initial_s",
            "initial_obj_per_s",
            "initial_from_start_s",
            "update_s",
            "update_obj_per_s",
            "update_write_obj_per_s",
            "update_lag_after_last_write_s",
            "rss_base_mib",
            "rss_synced_mib",
            "bytes_per_object",
            "cpu_s",
            "cpu_us_per_delivery",
            "hook_calls",
            "create_obj_per_s",
            "load1",
        ],
    );
    // Every measured run, then (when asked) one more operator run under `perf record`, which
    // is not reported: sampling slows the process it profiles.
    let mut runs: Vec<(String, usize, bool)> = Vec::new();
    for imp in &s.impls {
        for &c in &s.levels {
            runs.push((imp.clone(), c, false));
        }
    }
    if let Some((pc, _)) = &s.perf {
        runs.push(("operator".to_string(), *pc, true));
    }
    {
        for (imp, c, profiled) in &runs {
            let (imp, c, profiled) = (imp, *c, *profiled);
            hook.reset();
            let load1 = util::loadavg().0;
            let mut proc_ = match imp.as_str() {
                "operator" => {
                    let extra = util::no_webhook_args(ns);
                    let mut op = Operator::spawn(o, &format!("bench-dispatch-c{c}"), &extra)?;
                    op.wait_ready(Duration::from_secs(60)).await?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Proc::Operator(op)
                }
                "bare" => {
                    let exe = std::env::current_exe()?;
                    let log = std::fs::File::create(o.log_dir.join(format!("bare-c{c}.log")))?;
                    let mut cmd = tokio::process::Command::new(exe);
                    cmd.arg("bare-controller")
                        .arg("--kubeconfig")
                        .arg(&o.kubeconfig)
                        .args([
                            "--namespace",
                            ns,
                            "--selector",
                            SELECTOR,
                            "--hook",
                            &hook.url,
                        ])
                        .arg("--concurrency")
                        .arg(c.to_string())
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(log)
                        .kill_on_drop(true);
                    util::die_with_parent(&mut cmd);
                    let mut child = cmd.spawn()?;
                    let pid = child.id().ok_or("bare controller exited")?;
                    let out = child.stdout.take().ok_or("no stdout")?;
                    let mut lines = BufReader::new(out).lines();
                    util::within(
                        Duration::from_secs(30),
                        "the bare controller to start",
                        async {
                            match lines.next_line().await? {
                                Some(l) if l.trim() == "ready" => Ok(()),
                                other => fail(format!("bare controller said {other:?}")),
                            }
                        },
                    )
                    .await?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Proc::Bare(child, pid)
                }
                other => return fail(format!("unknown implementation {other}")),
            };
            let pid = proc_.pid();
            let rss_base = util::rss_mib(pid).unwrap_or(f64::NAN);
            let cpu0 = util::cpu_seconds(pid).unwrap_or(f64::NAN);

            let perf = match &s.perf {
                Some((_, file)) if profiled => Some(util::perf_start(pid, file).await?),
                _ => None,
            };

            let t_start = Instant::now();
            let name = format!("dispatch-c{c}");
            match &mut proc_ {
                Proc::Operator(_) => {
                    let mc = util::dynamic(json!({
                        "apiVersion": "manager-operator.io/v1alpha1",
                        "kind": "ManagerConfig",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {
                            "startupTimeout": "5m",
                            "workers": [{
                                "name": "w",
                                "concurrency": c,
                                "watch": {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": SELECTOR},
                                "hook": {"url": hook.url, "timeout": "10s"}
                            }]
                        }
                    }))?;
                    mcs.create(&PostParams::default(), &mc).await?;
                }
                Proc::Bare(child, _) => {
                    let stdin = child.stdin.as_mut().ok_or("no stdin")?;
                    stdin.write_all(b"go\n").await?;
                    stdin.flush().await?;
                }
            }
            let budget = Duration::from_secs(120 + (n as u64) / 20);
            let init = wait_gen(&hook, g, n, budget).await?;
            let initial_s = init
                .last
                .saturating_duration_since(init.first)
                .as_secs_f64();
            let from_start = init.last.saturating_duration_since(t_start).as_secs_f64();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss_synced = util::rss_mib(pid).unwrap_or(f64::NAN);

            g += 1;
            let (w0, w1) = bump(&cms, n, g).await?;
            let upd = wait_gen(&hook, g, n, budget).await?;
            let update_s = upd.last.saturating_duration_since(w0).as_secs_f64();
            let write_s = w1.saturating_duration_since(w0).as_secs_f64();
            let lag = upd.last.saturating_duration_since(w1).as_secs_f64();
            let cpu1 = util::cpu_seconds(pid).unwrap_or(f64::NAN);
            let calls = hook.calls();

            if let Some(p) = perf {
                util::perf_stop(p).await;
            }

            let row = [
                imp.clone(),
                c.to_string(),
                n.to_string(),
                f(initial_s),
                f(n as f64 / initial_s),
                f(from_start),
                f(update_s),
                f(n as f64 / update_s),
                f(n as f64 / write_s),
                f(lag),
                f(rss_base),
                f(rss_synced),
                f((rss_synced - rss_base) * 1024.0 * 1024.0 / n as f64),
                f(cpu1 - cpu0),
                f((cpu1 - cpu0) * 1e6 / calls.max(1) as f64),
                calls.to_string(),
                f(create_rate),
                f(load1),
            ];
            eprintln!(
                "[bench] dispatch {imp} c={c}: initial {} obj/s ({} s from start), update {} obj/s (writes {} obj/s, lag {} s), {} B/object",
                row[4], row[5], row[7], row[8], row[9], row[12]
            );
            if profiled {
                eprintln!("[bench] (that run was profiled with perf and is not reported)");
            } else {
                csv.row(&row);
                csv.save()?;
            }

            match proc_ {
                Proc::Operator(op) => {
                    util::delete_mc_and_wait(&mcs, &name, Duration::from_secs(60)).await?;
                    op.stop().await;
                }
                Proc::Bare(mut child, pid) => {
                    let _ = util::signal(pid, libc::SIGTERM);
                    if tokio::time::timeout(Duration::from_secs(10), child.wait())
                        .await
                        .is_err()
                    {
                        let _ = child.kill().await;
                    }
                }
            }
        }
    }
    Ok(())
}
