//! Interop with a real client-go elector: `hack/clientgo-elector` (client-go's
//! `tools/leaderelection` on a `resourcelock.LeaseLock`, built by `hack/tools-clientgo.sh`) and
//! the operator binary (`manager-operator run`) campaign for the same Lease on the real local
//! control plane: the ManagerConfig names it with `spec.leaderElection.leaseName`.
//!
//! Both sides call one hook recorder on 127.0.0.1 while they lead — the operator's workers with
//! every dispatched object (resync every second), the Go elector every 100 ms with the
//! `leaseTransitions` it just read — so "never two leaders at once" is checked the same way for
//! both: calls of different holders never overlap in time, the fencing token never goes
//! backwards, and one token belongs to one holder.
//!
//! Holder identities are compared by their replica part (the text before the last `/`, if any),
//! so the tests hold whether the operator writes `<replica>` or `<replica>/<config uid>` into
//! the Lease. Each test prints `[timing] ...` lines (see docs/interop.md).

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use manager_operator::api::ManagerConfig;
use serde_json::Value;
use support::hook::holders;
use support::operator::sigterm;
use support::{Call, Operator, RecordingHook, TIMEOUT, apply_yaml, prom, rbac, wait_for};

/// The service account the workers act as (may watch ConfigMaps).
const SA: &str = "worker";
/// The config's name; its Lease is [`LEASE`] (set with `spec.leaderElection.leaseName`).
const CONFIG: &str = "mgr";
/// The Lease both electors campaign for.
const LEASE: &str = "shared-lease";
/// Timings of both sides: leaseDuration 3s, renewDeadline 2s, retryPeriod 500ms.
const LEASE_DURATION: Duration = Duration::from_secs(3);
/// client-go's candidate polls every retryPeriod × [1, 2.2) (jitter factor 1.2).
const CLIENT_GO_MAX_RETRY: Duration = Duration::from_millis(1100);

/// The holder's replica part: the text before the last `/`, or all of it.
fn replica_part(holder: &str) -> &str {
    holder.rsplit_once('/').map_or(holder, |(r, _)| r)
}

/// Reaps `child` into `exited` if it has exited.
fn try_exit(child: &mut Option<Child>, exited: &mut Option<ExitStatus>) -> Option<ExitStatus> {
    if exited.is_none()
        && let Some(c) = child.as_mut()
        && let Ok(Some(s)) = c.try_wait()
    {
        *exited = Some(s);
    }
    *exited
}

/// Waits until `/metrics` of `op` shows its manager of config `ns/CONFIG` campaigning without
/// leading: `managers{state="candidate"}` 1 and `leader{namespace,name}` 0.
async fn wait_candidate(op: &Operator, ns: &str) {
    wait_for(
        &format!("operator {} to be a candidate", op.identity()),
        TIMEOUT,
        || async {
            let text = op.try_metrics_text().await?;
            let candidates = prom::value(
                &text,
                "manager_operator_managers",
                &[("state", "candidate")],
            );
            let leader = prom::value(
                &text,
                "manager_operator_leader",
                &[("namespace", ns), ("name", CONFIG)],
            );
            match (candidates, leader) {
                (Some(c), Some(l)) if c >= 1.0 && l == 0.0 => Ok(()),
                other => Err(format!("managers{{state=candidate}}, leader: {other:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.log_tail(60)));
}

// ---------------------------------------------------------------------------------------------
// The client-go elector process.

/// Path of the `clientgo-elector` binary: `$MO_CLIENTGO_ELECTOR`, else what
/// `hack/tools-clientgo.sh bin` prints (it builds the binary when missing; once per process).
fn elector_bin() -> PathBuf {
    static BIN: Mutex<Option<Result<PathBuf, String>>> = Mutex::new(None);
    let mut bin = BIN.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = bin.get_or_insert_with(|| {
        if let Some(p) = std::env::var_os("MO_CLIENTGO_ELECTOR").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let script = support::repo_root().join("hack/tools-clientgo.sh");
        let out = Command::new(&script)
            .arg("bin")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!("{} bin failed: {}", script.display(), out.status));
        }
        Ok(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    });
    match outcome {
        Ok(p) if p.is_file() => p.clone(),
        Ok(p) => panic!(
            "\n\n*** the client-go elector {} does not exist (run hack/tools-clientgo.sh)\n\n",
            p.display()
        ),
        Err(e) => panic!("\n\n*** building the client-go elector failed: {e}\n\n"),
    }
}

/// One line the elector printed, and when the test read it.
#[derive(Clone, Debug)]
struct GoEvent {
    at: Instant,
    v: Value,
}

impl GoEvent {
    fn event(&self) -> &str {
        self.v["event"].as_str().unwrap_or("")
    }
}

/// One `clientgo-elector` process, SIGKILLed on drop. Its stdout (JSON lines) is parsed into
/// [`GoEvent`]s and also kept in a file; klog's stderr goes to another file.
struct GoElector {
    identity: String,
    child: Option<Child>,
    events: Arc<Mutex<Vec<GoEvent>>>,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
    _dir: tempfile::TempDir,
    exited: Option<ExitStatus>,
}

impl GoElector {
    fn start(identity: &str, ns: &str, hook_url: &str) -> GoElector {
        let dir = tempfile::tempdir().expect("temp dir");
        let stdout_log = dir.path().join(format!("{identity}.stdout"));
        let stderr_log = dir.path().join(format!("{identity}.stderr"));
        let mut child = Command::new(elector_bin())
            .arg("--kubeconfig")
            .arg(support::kubeconfig_path())
            .args(["--namespace", ns, "--name", LEASE, "--identity", identity])
            .args(["--lease-duration", "3s", "--renew-deadline", "2s"])
            .args(["--retry-period", "500ms", "--release-on-cancel"])
            .args(["--hook-url", hook_url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_log).expect("stderr log"))
            .spawn()
            .expect("spawning clientgo-elector");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let (sink, mut copy) = (events.clone(), File::create(&stdout_log).unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = Instant::now();
                let _ = writeln!(copy, "{line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(GoEvent { at, v });
                }
            }
        });
        eprintln!(
            "[client-go {identity}] started (stdout {}, stderr {})",
            stdout_log.display(),
            stderr_log.display()
        );
        GoElector {
            identity: identity.to_string(),
            child: Some(child),
            events,
            stdout_log,
            stderr_log,
            _dir: dir,
            exited: None,
        }
    }

    fn events(&self) -> Vec<GoEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Waits for an event printed after `after` that satisfies `pred`.
    async fn wait_event(
        &self,
        what: &str,
        after: Instant,
        pred: impl Fn(&GoEvent) -> bool,
    ) -> GoEvent {
        wait_for(
            &format!("client-go {}: {what}", self.identity),
            TIMEOUT,
            || {
                let found = self.events().into_iter().find(|e| e.at > after && pred(e));
                let n = self.events().len();
                async move { found.ok_or_else(|| format!("{n} events so far")) }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tails()))
    }

    fn sigterm(&self) {
        sigterm(self.child.as_ref().expect("running").id());
    }

    fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            if let Ok(s) = c.wait() {
                self.exited = Some(s);
            }
        }
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        let s = wait_for(
            &format!("client-go {} to exit", self.identity),
            TIMEOUT,
            || {
                let s = try_exit(&mut self.child, &mut self.exited);
                async move { s.ok_or_else(|| "still running".to_string()) }
            },
        )
        .await;
        s.unwrap_or_else(|e| panic!("{e}\n{}", self.log_tails()))
    }

    fn log_tails(&self) -> String {
        format!(
            "--- stdout tail of client-go {} ---\n{}\n--- stderr tail ---\n{}\n--- end ---",
            self.identity,
            support::log_tail(&self.stdout_log, 20),
            support::log_tail(&self.stderr_log, 40)
        )
    }
}

impl Drop for GoElector {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
        self.kill9();
    }
}

/// Never two leaders at once ([`support::hook::assert_one_holder_at_a_time`]: no overlap,
/// tokens monotonic, one token per holder, one source per holder), then a note of the order.
fn assert_one_holder_at_a_time(calls: &[Call]) {
    support::hook::assert_one_holder_at_a_time(calls);
    let mut sorted = calls.to_vec();
    sorted.sort_by_key(|c| c.start);
    eprintln!(
        "[interop] {} hook calls, holders in order {:?}: no overlap, tokens monotonic",
        sorted.len(),
        holders(&sorted)
    );
}

// ---------------------------------------------------------------------------------------------
// Cluster helpers.

/// A test namespace with the `worker` service account (may watch ConfigMaps), one ConfigMap
/// for the workers to dispatch, and a hook recorder.
struct Fixture {
    client: kube::Client,
    ns: String,
    api: Api<ManagerConfig>,
    hook: RecordingHook,
}

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        support::ensure_crd();
        let client = support::admin_client().await;
        let ns = support::fresh_namespace(&client, prefix).await;
        rbac::service_account(&ns, SA);
        rbac::grant_watch(&ns, SA, "configmaps");
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("tick".into()),
                labels: Some([("app".to_string(), "interop".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
        let hook = RecordingHook::builder()
            // A little work, so that calls have a duration that could overlap.
            .delay(Duration::from_millis(20))
            .start()
            .await;
        let api = Api::namespaced(client.clone(), &ns);
        Fixture {
            client,
            ns,
            api,
            hook,
        }
    }

    /// The ManagerConfig: Lease [`LEASE`], timings as the Go elector's, resync every second.
    fn apply_config(&self) {
        apply_yaml(&format!(
            "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\n\
             metadata: {{name: {CONFIG}, namespace: {ns}}}\nspec:\n  serviceAccountName: {SA}\n  \
             leaderElection: {{leaseName: {LEASE}, adoptExistingLease: true, leaseDuration: 3s, renewDeadline: 2s, \
             retryPeriod: 500ms}}\n  startupTimeout: 20s\n  gracefulShutdownTimeout: 5s\n  \
             workers:\n    - name: cms\n      watch: {{apiVersion: v1, kind: ConfigMap, \
             labelSelector: 'app=interop'}}\n      resyncPeriod: 1s\n      \
             hook: {{url: '{url}', timeout: 2s}}\n",
            ns = self.ns,
            url = self.hook.url
        ));
    }

    async fn lease_spec(&self) -> Option<LeaseSpec> {
        Api::<Lease>::namespaced(self.client.clone(), &self.ns)
            .get_opt(LEASE)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
    }

    /// The Lease's holder (replica part), `None` when free or missing.
    async fn lease_holder(&self) -> Option<String> {
        self.lease_spec()
            .await
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty())
            .map(|h| replica_part(&h).to_string())
    }

    /// Waits until the Lease's holder (replica part) is `who`.
    async fn wait_lease_holder(&self, who: &str) -> Duration {
        let t = Instant::now();
        wait_for(&format!("Lease held by {who}"), TIMEOUT, || async {
            match self.lease_holder().await {
                Some(h) if h == who => Ok(()),
                h => Err(format!("holder {h:?}")),
            }
        })
        .await
        .unwrap();
        t.elapsed()
    }

    /// Waits until the config's Ready condition has `reason` and `status.leader` (replica
    /// part) is `leader`.
    async fn wait_config(&self, reason: &str, leader: &str) -> ManagerConfig {
        wait_for(
            &format!("{CONFIG}: Ready reason {reason}, leader {leader}"),
            TIMEOUT,
            || async {
                let mc = self.api.get(CONFIG).await.map_err(|e| e.to_string())?;
                let ready = condition(&mc, "Ready").map(|c| (c.reason.clone(), c.message.clone()));
                let status_leader = mc.status.as_ref().and_then(|s| s.leader.clone());
                match (&ready, &status_leader) {
                    (Some((r, _)), Some(l)) if r == reason && replica_part(l) == leader => Ok(mc),
                    _ => Err(format!("Ready {ready:?}, status.leader {status_leader:?}")),
                }
            },
        )
        .await
        .unwrap()
    }

    /// Samples the Lease's renewTime `n` times while `holder` holds it and reports whether
    /// the written values carry sub-second digits.
    async fn renew_time_precision(&self, holder: &str, n: usize) -> Vec<String> {
        let seen: Mutex<Vec<String>> = Mutex::new(Vec::new());
        wait_for(
            &format!("{n} renewTimes written by {holder}"),
            TIMEOUT,
            || async {
                let spec = self.lease_spec().await.ok_or("no Lease")?;
                let h = spec.holder_identity.unwrap_or_default();
                if replica_part(&h) != holder {
                    return Err(format!("held by {h:?}"));
                }
                let t = spec.renew_time.ok_or("no renewTime")?.0;
                let s = format!("{t}");
                let mut seen = seen.lock().unwrap();
                if seen.last() != Some(&s) {
                    seen.push(s);
                }
                if seen.len() >= n {
                    Ok(())
                } else {
                    Err(format!("{} distinct so far", seen.len()))
                }
            },
        )
        .await
        .unwrap();
        seen.into_inner().unwrap()
    }
}

/// Ready's reason and `status.leader`, for the notes.
async fn status_summary(api: &Api<ManagerConfig>) -> String {
    match api.get(CONFIG).await {
        Ok(mc) => format!(
            "Ready {:?}, status.leader {:?}",
            condition(&mc, "Ready").map(|c| (&c.reason, &c.message)),
            mc.status.as_ref().and_then(|s| s.leader.as_ref())
        ),
        Err(e) => format!("reading {CONFIG}: {e}"),
    }
}

fn condition<'a>(mc: &'a ManagerConfig, ty: &str) -> Option<&'a Condition> {
    mc.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == ty))
}

/// True when an RFC 3339 timestamp has a non-zero fractional second.
fn has_subsecond(ts: &str) -> bool {
    ts.split_once('.').is_some_and(|(_, frac)| {
        frac.trim_end_matches('Z')
            .chars()
            .take_while(char::is_ascii_digit)
            .any(|c| c != '0')
    })
}

fn token_of(e: &GoEvent) -> i64 {
    e.v["token"].as_i64().unwrap_or(-1)
}

// ---------------------------------------------------------------------------------------------
// (a) client-go holds the Lease first; on SIGTERM it releases and the operator takes over.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_go_leads_first_and_its_release_hands_over_to_the_operator() {
    let fx = Fixture::new("interop-a").await;
    let go_id = format!("client-go-{}", fx.ns);
    let op_id = format!("{}-op", fx.ns);
    let t0 = Instant::now();
    let mut go = GoElector::start(&go_id, &fx.ns, &fx.hook.url);
    go.wait_event("started_leading", t0, |e| e.event() == "started_leading")
        .await;
    eprintln!(
        "[timing] client-go acquired the (new) Lease {:?} after start",
        t0.elapsed()
    );
    fx.wait_lease_holder(&go_id).await;
    let renews = fx.renew_time_precision(&go_id, 4).await;
    eprintln!("[interop] renewTime written by client-go: {renews:?}");
    assert!(
        renews.iter().any(|t| has_subsecond(t)),
        "client-go writes renewTime as a MicroTime with sub-second digits: {renews:?}"
    );

    let op = support::operator()
        .identity(&op_id)
        .namespace(&fx.ns)
        .start()
        .await;
    fx.apply_config();
    // The operator campaigns; while it waits, client-go keeps leading and alone calls the hook.
    wait_candidate(&op, &fx.ns).await;
    let waited = Instant::now();
    let go_calls = fx.hook.wait_calls_from(&go_id, 20, waited).await;
    assert!(
        fx.hook.calls().iter().all(|c| c.holder == go_id),
        "only client-go calls the hook: {:?}",
        holders(&fx.hook.calls())
    );
    let go_token = go_calls.last().unwrap().token;
    // No replica of ours leads, so nobody writes the config's status (see docs/interop.md).
    eprintln!(
        "[interop] (a) status while client-go holds the Lease: {}",
        status_summary(&fx.api).await
    );
    let spec = fx.lease_spec().await.unwrap();
    assert_eq!(
        i64::from(spec.lease_transitions.unwrap_or(0)),
        go_token,
        "client-go's token is the Lease's leaseTransitions"
    );

    let sent = Instant::now();
    go.sigterm();
    let first = fx
        .hook
        .wait_call("a call from the operator", sent, |c| c.holder == op_id)
        .await;
    let status = go.wait_exit().await;
    assert!(
        status.success(),
        "client-go exits 0 after SIGTERM: {status}"
    );
    let stopped = go
        .events()
        .into_iter()
        .find(|e| e.event() == "stopped_leading")
        .expect("client-go reported stopped_leading");
    fx.wait_lease_holder(&op_id).await;
    let first_call = first.start - sent;
    eprintln!(
        "[timing] (a) SIGTERM of client-go -> released (stopped_leading printed) after {:?}; \
         first operator hook call {:?} after SIGTERM, {:?} after the release; token \
         {go_token} -> {}",
        stopped.at - sent,
        first_call,
        first.start.saturating_duration_since(stopped.at),
        first.token
    );
    assert!(
        first.token > go_token,
        "the fencing token grows: {go_token} -> {}",
        first.token
    );
    assert!(
        first_call < LEASE_DURATION,
        "a released lease is taken over before it could have expired: {first_call:?}"
    );
    fx.wait_config("Running", &op_id).await;
    let renews = fx.renew_time_precision(&op_id, 3).await;
    eprintln!("[interop] renewTime written by the operator: {renews:?}");
    fx.hook.wait_calls_from(&op_id, 2, Instant::now()).await;
    assert_one_holder_at_a_time(&fx.hook.calls());
    drop(op);
}

// ---------------------------------------------------------------------------------------------
// (b) The operator leads first; on SIGTERM it releases and client-go takes over.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_leads_first_and_its_release_hands_over_to_client_go() {
    let fx = Fixture::new("interop-b").await;
    let go_id = format!("client-go-{}", fx.ns);
    let op_id = format!("{}-op", fx.ns);
    let mut op = support::operator()
        .identity(&op_id)
        .namespace(&fx.ns)
        .start()
        .await;
    fx.apply_config();
    fx.wait_config("Running", &op_id).await;
    fx.wait_lease_holder(&op_id).await;

    let t0 = Instant::now();
    let mut go = GoElector::start(&go_id, &fx.ns, &fx.hook.url);
    let seen = go
        .wait_event("new_leader = the operator", t0, |e| {
            e.event() == "new_leader" && replica_part(e.v["holder"].as_str().unwrap_or("")) == op_id
        })
        .await;
    eprintln!(
        "[interop] client-go sees leader {} and waits",
        seen.v["holder"]
    );
    // While client-go waits, the operator keeps leading and only it calls the hook.
    let op_calls = fx.hook.wait_calls_from(&op_id, 3, seen.at).await;
    assert!(
        !go.events().iter().any(|e| e.event() == "started_leading"),
        "client-go must not lead while the operator does"
    );
    let op_token = op_calls.last().unwrap().token;

    let sent = Instant::now();
    op.sigterm();
    let started = go
        .wait_event("started_leading", sent, |e| e.event() == "started_leading")
        .await;
    let first = fx
        .hook
        .wait_call("a call from client-go", sent, |c| c.holder == go_id)
        .await;
    let status = op.wait_exit(TIMEOUT).await;
    assert!(
        status.success(),
        "the operator exits 0 after SIGTERM: {status}"
    );
    eprintln!(
        "[timing] (b) SIGTERM of the operator (release) -> client-go started leading after \
         {:?}, first client-go hook call after {:?}; token {op_token} -> {}",
        started.at - sent,
        first.start - sent,
        first.token
    );
    assert!(
        first.token > op_token,
        "the fencing token grows: {op_token} -> {}",
        first.token
    );
    assert!(
        started.at - sent < LEASE_DURATION,
        "a released lease is taken over before it could have expired (client-go polls every \
         retryPeriod × [1, 2.2)): {:?}",
        started.at - sent
    );
    fx.wait_lease_holder(&go_id).await;
    fx.hook.wait_calls_from(&go_id, 5, Instant::now()).await;
    assert_one_holder_at_a_time(&fx.hook.calls());
    go.sigterm();
    assert!(go.wait_exit().await.success());
}

// ---------------------------------------------------------------------------------------------
// (c) Crashes: kill -9 of the holder in each direction; the other takes over after expiry.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_either_holder_lets_the_other_take_over_after_expiry() {
    let fx = Fixture::new("interop-c").await;
    let go_id = format!("client-go-{}", fx.ns);
    let op_id = format!("{}-op", fx.ns);

    // 1. The operator leads, client-go waits; kill -9 of the operator.
    let mut op = support::operator()
        .identity(&op_id)
        .namespace(&fx.ns)
        .start()
        .await;
    fx.apply_config();
    fx.wait_config("Running", &op_id).await;
    let t0 = Instant::now();
    let mut go = GoElector::start(&go_id, &fx.ns, &fx.hook.url);
    let seen = go
        .wait_event("new_leader = the operator", t0, |e| {
            e.event() == "new_leader" && replica_part(e.v["holder"].as_str().unwrap_or("")) == op_id
        })
        .await;
    let op_calls = fx.hook.wait_calls_from(&op_id, 3, seen.at).await;
    let op_token = op_calls.last().unwrap().token;
    let killed = Instant::now();
    op.kill9();
    let started = go
        .wait_event("started_leading", killed, |e| {
            e.event() == "started_leading"
        })
        .await;
    let first = fx
        .hook
        .wait_call("a call from client-go", killed, |c| c.holder == go_id)
        .await;
    let leading = go
        .wait_event("leading", killed, |e| e.event() == "leading")
        .await;
    eprintln!(
        "[timing] (c1) kill -9 of the operator -> client-go started leading after {:?}, first \
         client-go hook call after {:?} (leaseDuration 3s, client-go retry ≤ {:?}); token \
         {op_token} -> {}",
        started.at - killed,
        first.start - killed,
        CLIENT_GO_MAX_RETRY,
        token_of(&leading)
    );
    assert!(first.token > op_token, "the fencing token grows: {first:?}");
    assert!(
        started.at - killed <= LEASE_DURATION + CLIENT_GO_MAX_RETRY + Duration::from_secs(2),
        "client-go takes over about leaseDuration after the crash: {:?}",
        started.at - killed
    );
    fx.wait_lease_holder(&go_id).await;

    // 2. client-go leads, a new operator waits; kill -9 of client-go.
    let op2_id = format!("{}-op2", fx.ns);
    let op2 = support::operator()
        .identity(&op2_id)
        .namespace(&fx.ns)
        .start()
        .await;
    wait_candidate(&op2, &fx.ns).await;
    let go_calls = fx.hook.wait_calls_from(&go_id, 10, Instant::now()).await;
    eprintln!(
        "[interop] (c2) status while client-go holds the Lease: {}",
        status_summary(&fx.api).await
    );
    let go_token = go_calls.last().unwrap().token;
    assert!(
        fx.hook.calls().iter().all(|c| c.holder != op2_id),
        "the new operator must not lead while client-go does"
    );
    let killed = Instant::now();
    go.kill9();
    let first = fx
        .hook
        .wait_call("a call from the new operator", killed, |c| {
            c.holder == op2_id
        })
        .await;
    let takeover = first.start - killed;
    eprintln!(
        "[timing] (c2) kill -9 of client-go -> first hook call of the operator after \
         {takeover:?} (leaseDuration 3s); token {go_token} -> {}",
        first.token
    );
    assert!(first.token > go_token, "the fencing token grows: {first:?}");
    // Expiry counts from the last renewal the operator saw, up to a retryPeriod (plus the
    // request) before the kill; so "waited for expiry" means well over leaseDuration - 1s.
    assert!(
        takeover >= LEASE_DURATION - Duration::from_secs(1),
        "the operator waits for the lease to expire: {takeover:?}"
    );
    assert!(
        takeover <= LEASE_DURATION + Duration::from_secs(2),
        "the operator takes over about leaseDuration after the crash: {takeover:?}"
    );
    fx.wait_config("Running", &op2_id).await;
    fx.hook.wait_calls_from(&op2_id, 2, Instant::now()).await;
    assert_one_holder_at_a_time(&fx.hook.calls());
}

#[test]
fn replica_part_is_the_text_before_the_last_slash() {
    assert_eq!(replica_part("pod-a"), "pod-a");
    assert_eq!(replica_part("pod-a/1234-uid"), "pod-a");
    assert_eq!(replica_part("a/b/uid"), "a/b");
    assert!(has_subsecond("2026-01-01T00:00:00.123456Z"));
    assert!(!has_subsecond("2026-01-01T00:00:00.000000Z"));
    assert!(!has_subsecond("2026-01-01T00:00:00Z"));
}
