//! the seed failure: leaseDuration 5s < renewDeadline 10s (retryPeriod 2s), given to
//!
//! * `cr-manager` built against controller-runtime before v0.19 (v0.18.x) and against the
//!   current release: spawned, then watched for `window` seconds: does Manager.Start return
//!   (the process exits with the error), or does it keep running without one?
//! * the operator, as a ManagerConfig with those timings:
//!   - the CRD as shipped, webhook off: the API server refuses the create (the CRD's CEL rule);
//!     time from sending the create to the refusal;
//!   - the CRD without that CEL rule (as with a CRD older than the rule, or edited), webhook
//!     off: the config is stored; time from sending the create to the first watch event with
//!     `Ready=False` and reason `InvalidSpec`;
//!   - the same CRD, webhook on: the operator's webhook refuses the create; time to the refusal.
//!
//! The controller-runtime runs and the first operator case alternate trial by trial (old, new,
//! operator, old, new, operator, ...); the last two cases need the CRD edited and then a
//! webhook registered, so they run after, each `trials` times.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::peers::{self, Peer, csv_safe};
use crate::util::{self, Csv, Operator, OperatorOpts, Result, f, fail, ms};

/// The seed failure's timings: leaseDuration < renewDeadline.
pub const TIMINGS: (&str, &str, &str) = ("5s", "10s", "2s");
const CRD: &str = "managerconfigs.manager-operator.io";
/// The CEL rule the second and third operator cases remove from the CRD.
const CEL_RULE: &str = "duration(self.leaseDuration) > duration(self.renewDeadline)";

/// A controller-runtime build under test.
pub struct CrBuild {
    /// `v0.18.5`, ...
    pub version: String,
    /// Its `cr-manager`.
    pub bin: PathBuf,
}

/// Settings of the scenario.
pub struct Settings {
    /// Old (pre-v0.19) and current controller-runtime.
    pub old: CrBuild,
    /// Current controller-runtime.
    pub new: CrBuild,
    /// Seconds a cr-manager is given to exit.
    pub window: f64,
    /// Trials per case.
    pub trials: usize,
}

fn manager_config(name: &str, ns: &str) -> Value {
    json!({
        "apiVersion": "manager-operator.io/v1alpha1",
        "kind": "ManagerConfig",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "leaderElection": {
                "leaseDuration": TIMINGS.0, "renewDeadline": TIMINGS.1, "retryPeriod": TIMINGS.2
            },
            "workers": [{
                "name": "w",
                "watch": {"apiVersion": "v1", "kind": "ConfigMap", "labelSelector": "bench=seed"},
                "hook": {"url": "http://127.0.0.1:9/hook"}
            }]
        }
    })
}

/// When a config was first seen `Ready=False`, with the reason and the message.
type Seen = (Instant, String, String);

struct Row {
    trial: usize,
    subject: String,
    setup: &'static str,
    outcome: String,
    exit_code: String,
    time_ms: f64,
    leader: String,
    message: String,
    load1: f64,
}

/// One cr-manager run: spawn, wait `window` for an exit.
async fn cr_trial(
    o: &OperatorOpts,
    ns: &str,
    b: &CrBuild,
    trial: usize,
    window: Duration,
    leases: &Api<Lease>,
) -> Result<Row> {
    let lease = format!("seed-{}-{trial}", b.version.replace('.', "-"));
    let log = o
        .log_dir
        .join(format!("cr-manager-{}-{trial}.log", b.version));
    let args = peers::manager_args(&o.kubeconfig, ns, &lease, "seed", TIMINGS, false, None);
    let load1 = util::loadavg().0;
    let mut p = Peer::spawn(&b.bin, &args, &log)?;
    let exit = p.wait_exit(window).await;
    // Did it ever lead (its leader-only Runnable started) or take the Lease?
    let leading = p.event("leading").is_some();
    let holder = leases
        .get_opt(&lease)
        .await?
        .and_then(|l| l.spec.and_then(|s| s.holder_identity));
    let leader = match (leading, holder) {
        (true, _) => "runnable started".to_string(),
        (false, Some(_)) => "Lease taken; runnable not started".to_string(),
        (false, None) => "no".to_string(),
    };
    let row = match exit {
        Some((code, at)) => {
            let message = p
                .event("start_returned")
                .or_else(|| p.event("new_manager_failed"))
                .and_then(|e| e.json["error"].as_str().map(csv_safe))
                .unwrap_or_else(|| peers::last_line(&log));
            Row {
                trial,
                subject: format!("controller-runtime {}", b.version),
                setup: "Manager.Start with leader election",
                outcome: "exited with an error".into(),
                exit_code: code.to_string(),
                time_ms: ms(at.saturating_duration_since(p.spawned)),
                leader,
                message,
                load1,
            }
        }
        None => {
            // Still running: does it stop on SIGTERM (the first signal cancels Start's context)?
            let _ = p.signal(libc::SIGTERM);
            let term = match p.wait_exit(Duration::from_secs(5)).await {
                Some((code, _)) => format!("exits on SIGTERM (code {code})"),
                None => "ignores SIGTERM for 5 s (killed)".to_string(),
            };
            let row = Row {
                trial,
                subject: format!("controller-runtime {}", b.version),
                setup: "Manager.Start with leader election",
                outcome: format!(
                    "still running; no error after {:.0} s; then {term}",
                    window.as_secs_f64()
                ),
                exit_code: String::new(),
                time_ms: f64::NAN,
                leader,
                message: match peers::last_line(&log) {
                    l if l.is_empty() => "(nothing logged)".to_string(),
                    l => format!("(last log line) {l}"),
                },
                load1,
            };
            p.kill().await;
            row
        }
    };
    eprintln!(
        "[bench] seed trial {trial}: {} -> {} ({:.0} ms) {}",
        row.subject, row.outcome, row.time_ms, row.message
    );
    Ok(row)
}

/// A create that must be refused: time from sending it to the refusal, and the message.
async fn refused_create(api: &Api<kube::api::DynamicObject>, v: Value) -> Result<(f64, String)> {
    let obj = util::dynamic(v)?;
    let t = Instant::now();
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => fail("the create was accepted"),
        Err(kube::Error::Api(s)) => Ok((ms(t.elapsed()), csv_safe(&s.message))),
        Err(e) => Err(e.into()),
    }
}

/// Removes [`CEL_RULE`] from the CRD and waits until a dry-run create of the seed config passes.
async fn drop_cel_rule(
    client: &kube::Client,
    mcs: &Api<kube::api::DynamicObject>,
    ns: &str,
) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get(CRD).await?;
    let mut v = serde_json::to_value(&crd)?;
    let mut removed = 0;
    remove_rule(&mut v, &mut removed);
    if removed == 0 {
        return fail(format!("no CEL rule {CEL_RULE:?} in the CRD"));
    }
    let crd: CustomResourceDefinition = serde_json::from_value(v)?;
    crds.replace(CRD, &PostParams::default(), &crd).await?;
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    util::within(
        Duration::from_secs(60),
        "the CRD edit to take effect",
        async {
            loop {
                let obj = util::dynamic(manager_config("seed-dry-run", ns))?;
                if mcs.create(&dry, &obj).await.is_ok() {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
    .await
}

fn remove_rule(v: &mut Value, removed: &mut usize) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(rules)) = m.get_mut("x-kubernetes-validations") {
                let before = rules.len();
                rules.retain(|r| r["rule"].as_str() != Some(CEL_RULE));
                *removed += before - rules.len();
                if rules.is_empty() {
                    m.remove("x-kubernetes-validations");
                }
            }
            for (_, x) in m.iter_mut() {
                remove_rule(x, removed);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| remove_rule(x, removed)),
        _ => {}
    }
}

/// Runs the scenario; writes `out`.
pub async fn run(o: &OperatorOpts, ns: &str, s: &Settings, out: &Path) -> Result<()> {
    let client = util::client(&o.kubeconfig).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let mcs = util::mc_api(&client, ns);
    let window = Duration::from_secs_f64(s.window);
    let mut rows = Vec::new();

    // Phase 1: old, new, operator (CRD as shipped), alternating.
    let mut op = Operator::spawn(o, "bench-seed", &util::no_webhook_args(ns))?;
    op.wait_ready(Duration::from_secs(60)).await?;
    util::warm_up_mc(&mcs, ns).await?;
    for trial in 1..=s.trials {
        rows.push(cr_trial(o, ns, &s.old, trial, window, &leases).await?);
        rows.push(cr_trial(o, ns, &s.new, trial, window, &leases).await?);
        let load1 = util::loadavg().0;
        let (t, message) =
            refused_create(&mcs, manager_config(&format!("seed-cel-{trial}"), ns)).await?;
        eprintln!("[bench] seed trial {trial}: operator (CEL) refused in {t:.0} ms: {message}");
        rows.push(Row {
            trial,
            subject: "manager-operator".into(),
            setup: "CRD as shipped; webhook off",
            outcome: "refused at create (CRD CEL rule)".into(),
            exit_code: String::new(),
            time_ms: t,
            leader: "no".into(),
            message,
            load1,
        });
    }

    // Phase 2: the CRD without the rule, webhook off: stored, then Ready=False InvalidSpec.
    drop_cel_rule(&client, &mcs, ns).await?;
    let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let s2 = seen.clone();
    let watch = util::watch_objects(mcs.clone(), move |obj, now| {
        if let Some(reason) = util::condition_reason(obj, "Ready", "False") {
            let message = obj
                .data
                .get("status")
                .and_then(|st| st.get("conditions"))
                .and_then(|c| c.as_array())
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["message"].as_str())
                .unwrap_or("")
                .to_string();
            s2.lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(obj.metadata.name.clone().unwrap_or_default())
                .or_insert((now, reason, message));
        }
    })
    .await?;
    for trial in 1..=s.trials {
        let name = format!("seed-runtime-{trial}");
        let load1 = util::loadavg().0;
        let obj = util::dynamic(manager_config(&name, ns))?;
        let t0 = Instant::now();
        mcs.create(&PostParams::default(), &obj).await?;
        let got = util::within(
            Duration::from_secs(60),
            "Ready=False on the seed config",
            async {
                loop {
                    if let Some(x) = seen.lock().unwrap_or_else(|e| e.into_inner()).get(&name) {
                        return Ok(x.clone());
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
        )
        .await?;
        let t = ms(got.0.saturating_duration_since(t0));
        eprintln!(
            "[bench] seed trial {trial}: operator (runtime) Ready=False {} in {t:.0} ms: {}",
            got.1, got.2
        );
        rows.push(Row {
            trial,
            subject: "manager-operator".into(),
            setup: "CRD without the CEL rule; webhook off",
            outcome: format!("stored; Ready=False {}", got.1),
            exit_code: String::new(),
            time_ms: t,
            leader: "no".into(),
            message: csv_safe(&got.2),
            load1,
        });
        util::delete_mc_and_wait(&mcs, &name, Duration::from_secs(30)).await?;
    }
    watch.abort();
    op.stop().await;

    // Phase 3: the same CRD, webhook on.
    let port = util::free_port()?;
    let extra = crate::admission::webhook_args(ns, port);
    let mut op = Operator::spawn(o, "bench-seed-webhook", &extra)?;
    op.wait_ready(Duration::from_secs(60)).await?;
    crate::admission::ca_bundle(&client).await?;
    // The API server picks the registration up asynchronously: wait until a dry run is refused
    // by the webhook.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    util::within(Duration::from_secs(60), "the webhook to be called", async {
        loop {
            let obj = util::dynamic(manager_config("seed-dry-run", ns))?;
            if let Err(kube::Error::Api(e)) = mcs.create(&dry, &obj).await
                && e.message.contains("admission webhook")
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await?;
    for trial in 1..=s.trials {
        let load1 = util::loadavg().0;
        let (t, message) =
            refused_create(&mcs, manager_config(&format!("seed-webhook-{trial}"), ns)).await?;
        eprintln!("[bench] seed trial {trial}: operator (webhook) refused in {t:.0} ms: {message}");
        rows.push(Row {
            trial,
            subject: "manager-operator".into(),
            setup: "CRD without the CEL rule; webhook on",
            outcome: "refused at create (operator webhook)".into(),
            exit_code: String::new(),
            time_ms: t,
            leader: "no".into(),
            message,
            load1,
        });
    }
    op.stop().await;

    let mut csv = Csv::new(
        out,
        &[
            "trial",
            "subject",
            "setup",
            "lease_duration",
            "renew_deadline",
            "retry_period",
            "outcome",
            "exit_code",
            "time_ms",
            "window_s",
            "leader",
            "message",
            "load1",
        ],
    );
    for r in rows {
        csv.row(&[
            r.trial.to_string(),
            r.subject,
            r.setup.into(),
            TIMINGS.0.into(),
            TIMINGS.1.into(),
            TIMINGS.2.into(),
            r.outcome,
            r.exit_code,
            f(r.time_ms),
            f(s.window),
            r.leader,
            r.message,
            f(r.load1),
        ]);
    }
    csv.save()
}
