//! The manager runtime on the real control plane: election on a real Lease, takeover times,
//! foreign holders, and every startup failure of `Manager::start`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use manager_operator::api::ManagerConfig;
use manager_operator::api::conditions::StartupFailure;
use manager_operator::manager::election::system_wall_clock;
use manager_operator::manager::kube_store::KubeLeaseStore;
use manager_operator::manager::runtime::{
    Failure, Manager, ManagerEnv, ManagerIdentity, ManagerState, ManagerTelemetry, RunContext,
    Runnable,
};
use manager_operator::validation::{HookPolicy, ResolvedConfig};
use prometheus::IntGauge;
use support::{TIMEOUT, wait_for};

/// Who is running workers right now, per identity.
#[derive(Default)]
struct Activity {
    running: Mutex<Vec<(String, i64)>>,
}

struct Recorder {
    identity: String,
    activity: Arc<Activity>,
}

impl Runnable for Recorder {
    fn name(&self) -> String {
        "recorder".into()
    }
    fn run(&self, mut ctx: RunContext) -> BoxFuture<'static, Result<(), Failure>> {
        let id = self.identity.clone();
        let activity = self.activity.clone();
        Box::pin(async move {
            let token = ctx.fence.token();
            activity.running.lock().unwrap().push((id.clone(), token));
            ctx.ready();
            ctx.stop.cancelled().await;
            activity.running.lock().unwrap().retain(|(i, _)| *i != id);
            Ok(())
        })
    }
}

struct Env {
    client: kube::Client,
    identity: String,
    activity: Arc<Activity>,
    tasks: IntGauge,
}

impl ManagerEnv for Env {
    type Store = KubeLeaseStore;
    fn lease_store(&self, cfg: &ResolvedConfig) -> Arc<KubeLeaseStore> {
        Arc::new(
            KubeLeaseStore::new(
                self.client.clone(),
                &cfg.election.lease_namespace,
                &cfg.election.lease_name,
            )
            .adopting(cfg.election.adopt_existing_lease),
        )
    }
    fn runnables(&self, _: &ResolvedConfig) -> Result<Vec<Arc<dyn Runnable>>, Failure> {
        Ok(vec![Arc::new(Recorder {
            identity: self.identity.clone(),
            activity: self.activity.clone(),
        })])
    }
    fn telemetry(&self, _: &ResolvedConfig) -> ManagerTelemetry {
        ManagerTelemetry {
            tasks: Some(self.tasks.clone()),
            ..ManagerTelemetry::default()
        }
    }
}

fn config(ns: &str, extra_le: &str) -> ManagerConfig {
    let text = format!(
        "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\nmetadata: {{name: mgr, namespace: {ns}}}\n\
         spec:\n  leaderElection: {{leaseDuration: 3s, renewDeadline: 2s, retryPeriod: 500ms{extra_le}}}\n  \
         startupTimeout: 10s\n  gracefulShutdownTimeout: 5s\n  \
         workers: [{{name: w, watch: {{apiVersion: v1, kind: ConfigMap}}, hook: {{url: 'http://h.svc/'}}}}]\n"
    );
    serde_yaml::from_str(&text).expect("test config parses")
}

fn me(id: &str) -> ManagerIdentity {
    ManagerIdentity {
        identity: id.into(),
        wall_clock: system_wall_clock(),
    }
}

fn env(client: &kube::Client, id: &str, activity: &Arc<Activity>, tasks: &IntGauge) -> Env {
    Env {
        client: client.clone(),
        identity: id.into(),
        activity: activity.clone(),
        tasks: tasks.clone(),
    }
}

fn running(activity: &Activity) -> Vec<(String, i64)> {
    activity.running.lock().unwrap().clone()
}

async fn lease(client: &kube::Client, ns: &str) -> Option<Lease> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt("mgr")
        .await
        .ok()
        .flatten()
}

fn holder(l: &Option<Lease>) -> Option<String> {
    l.as_ref()
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

/// Waits until exactly one identity runs workers, returns it with its token.
async fn single_leader(activity: &Arc<Activity>) -> (String, i64) {
    wait_for("exactly one leader running workers", TIMEOUT, || async {
        let r = running(activity);
        if r.len() == 1 {
            Ok(r[0].clone())
        } else {
            Err(format!("running: {r:?}"))
        }
    })
    .await
    .expect("one leader")
}

#[tokio::test]
async fn three_candidates_one_leader_crash_and_graceful_takeover() {
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "mgr-elect").await;
    let activity = Arc::new(Activity::default());
    let tasks = IntGauge::new("t", "t").unwrap();
    // A retryPeriod long enough that polling alone could not explain a fast graceful takeover:
    // candidates must learn of the release from their Lease watch (see the check below).
    let mc = config(&ns, "").tap_mut(|m| m.spec.leader_election.retry_period = "1600ms".into());
    let mut managers = Vec::new();
    for id in ["a", "b", "c"] {
        let m = Manager::start(
            &mc,
            &HookPolicy::default(),
            &me(id),
            &env(&client, id, &activity, &tasks),
        )
        .await
        .expect("start");
        managers.push((id.to_string(), Some(m)));
    }
    let (leader, token) = single_leader(&activity).await;
    // Stays single for a few renew periods.
    for _ in 0..20 {
        assert!(
            running(&activity).len() <= 1,
            "two leaders: {:?}",
            running(&activity)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        holder(&lease(&client, &ns).await).as_deref(),
        Some(leader.as_str())
    );
    let l = lease(&client, &ns).await.unwrap();
    assert_eq!(
        l.spec.as_ref().unwrap().lease_transitions.map(i64::from),
        Some(token),
        "token is leaseTransitions"
    );
    assert_eq!(l.spec.as_ref().unwrap().lease_duration_seconds, Some(3));

    // Crash: drop the leader's manager (tasks aborted, no release).
    let idx = managers.iter().position(|(id, _)| *id == leader).unwrap();
    let crashed = managers[idx].1.take().unwrap();
    let t = Instant::now();
    drop(crashed);
    activity
        .running
        .lock()
        .unwrap()
        .retain(|(i, _)| *i != leader);
    let (leader2, token2) = single_leader(&activity).await;
    let crash_takeover = t.elapsed();
    eprintln!("crash takeover: {crash_takeover:?} (leaseDuration 3s)");
    assert_ne!(leader2, leader);
    assert!(token2 > token, "fencing token moves forward");
    assert!(
        crash_takeover < Duration::from_secs(4),
        "crash takeover took {crash_takeover:?} > leaseDuration + 1s"
    );

    // Graceful stop with releaseOnCancel: the standby takes over at once.
    let idx = managers.iter().position(|(id, _)| *id == leader2).unwrap();
    let m = managers[idx].1.take().unwrap();
    let t = Instant::now();
    assert_eq!(m.shutdown().await, ManagerState::Stopped);
    let stop_took = t.elapsed();
    let (leader3, token3) = single_leader(&activity).await;
    let graceful_takeover = t.elapsed();
    eprintln!("graceful takeover: {graceful_takeover:?} (shutdown itself {stop_took:?})");
    assert_ne!(leader3, leader2);
    assert!(token3 > token2);
    // Not a speed target (those are benchmarks) but a behaviour: a candidate that only polled
    // would need at least one retryPeriod (1.6 s) to notice the release; one that watches the
    // Lease takes it within a few API round trips (20-150 ms measured).
    assert!(
        graceful_takeover < Duration::from_millis(1200),
        "graceful takeover took {graceful_takeover:?}: did the candidates miss the release on \
         their Lease watch and wait for a retryPeriod (1.6 s) poll?"
    );

    for (_, m) in managers.iter_mut() {
        if let Some(m) = m.take() {
            m.shutdown().await;
        }
    }
    assert_eq!(tasks.get(), 0, "every task of every manager is gone");
}

#[tokio::test]
async fn foreign_client_go_holder_is_respected_until_expiry_by_observation() {
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "mgr-foreign").await;
    // A Lease as client-go writes it, with a renewTime far in the past on the wall clock: only
    // observation on our own clock may expire it.
    let yaml = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: mgr, namespace: {ns}}}\n\
         spec:\n  holderIdentity: client-go-pod_1234\n  leaseDurationSeconds: 5\n  \
         acquireTime: \"2020-01-01T00:00:00.000000Z\"\n  renewTime: \"2020-01-01T00:00:00.000000Z\"\n  leaseTransitions: 6\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("lease.yaml");
    std::fs::write(&f, yaml).unwrap();
    support::kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    let activity = Arc::new(Activity::default());
    let tasks = IntGauge::new("t", "t").unwrap();
    let t = Instant::now();
    // A Lease the operator did not create: taken over only with the opt-in (docs/security.md).
    let m = Manager::start(
        &config(&ns, ", adoptExistingLease: true"),
        &HookPolicy::default(),
        &me("a"),
        &env(&client, "a", &activity, &tasks),
    )
    .await
    .expect("start");
    let (_, token) = single_leader(&activity).await;
    let waited = t.elapsed();
    eprintln!("foreign lease (5s) taken after {waited:?}");
    assert!(
        waited >= Duration::from_secs(5),
        "took a live foreign lease after {waited:?}"
    );
    assert!(waited < Duration::from_secs(7), "late: {waited:?}");
    assert_eq!(token, 7);
    m.shutdown().await;
    assert_eq!(tasks.get(), 0);
}

#[tokio::test]
async fn deleted_or_stolen_lease_stops_workers_and_campaigns_again() {
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "mgr-steal").await;
    let activity = Arc::new(Activity::default());
    let tasks = IntGauge::new("t", "t").unwrap();
    let m = Manager::start(
        &config(&ns, ""),
        &HookPolicy::default(),
        &me("a"),
        &env(&client, "a", &activity, &tasks),
    )
    .await
    .expect("start");
    let mut state = m.state();
    single_leader(&activity).await;

    support::kubectl_ok(&["-n", &ns, "delete", "lease", "mgr"]);
    wait_for(
        "workers stopped after the lease was deleted",
        TIMEOUT,
        || async {
            if running(&activity).is_empty() {
                Ok(())
            } else {
                Err("still running".into())
            }
        },
    )
    .await
    .unwrap();
    let (_, t2) = single_leader(&activity).await;

    support::kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "lease",
        "mgr",
        "--type=merge",
        "-p",
        &format!(
            "{{\"spec\":{{\"holderIdentity\":\"thief\",\"leaseTransitions\":{}}}}}",
            t2 + 1
        ),
    ]);
    wait_for(
        "workers stopped after the lease was stolen",
        TIMEOUT,
        || async {
            if running(&activity).is_empty() {
                Ok(())
            } else {
                Err("still running".into())
            }
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        *state.borrow_and_update(),
        ManagerState::Candidate
            | ManagerState::Leading { .. }
            | ManagerState::Starting { .. }
            | ManagerState::Running { .. }
    ));
    // The thief never renews: we lead again after leaseDuration, with a newer token.
    let (_, t3) = single_leader(&activity).await;
    assert!(t3 > t2 + 1);
    m.shutdown().await;
    assert_eq!(tasks.get(), 0);
}

async fn start_err(
    client: &kube::Client,
    mc: &ManagerConfig,
    tasks: &IntGauge,
) -> (Failure, Duration) {
    let activity = Arc::new(Activity::default());
    let t = Instant::now();
    let r = Manager::start(
        mc,
        &HookPolicy::default(),
        &me("a"),
        &env(client, "a", &activity, tasks),
    )
    .await;
    let took = t.elapsed();
    match r {
        Ok(_) => panic!("start should fail"),
        Err(f) => {
            assert!(running(&activity).is_empty());
            (f, took)
        }
    }
}

#[tokio::test]
async fn start_failures_are_returned_promptly_and_leave_nothing() {
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "mgr-fail").await;
    let tasks = IntGauge::new("t", "t").unwrap();
    let live_before = tasks.get();

    // The seed bug, validation bypassed at the call site (as if the webhook were off).
    let bad: ManagerConfig = config(&ns, "").tap_mut(|m| {
        m.spec.leader_election.lease_duration = "5s".into();
        m.spec.leader_election.renew_deadline = "6s".into();
    });
    let (f, took) = start_err(&client, &bad, &tasks).await;
    eprintln!("InvalidSpec surfaced in {took:?}");
    assert_eq!(f.reason, StartupFailure::InvalidSpec);
    assert!(f.message.contains("spec.leaderElection.renewDeadline"));
    assert!(took < Duration::from_secs(1));

    let missing = config(&ns, ", leaseNamespace: no-such-ns-for-mgr-test");
    let (f, took) = start_err(&client, &missing, &tasks).await;
    eprintln!("LeaseNamespaceNotFound surfaced in {took:?}");
    assert_eq!(
        f.reason,
        StartupFailure::LeaseNamespaceNotFound,
        "{}",
        f.message
    );
    assert!(took < Duration::from_secs(5));

    let unprivileged = support::unprivileged_client().await;
    let (f, took) = start_err(&unprivileged, &config(&ns, ""), &tasks).await;
    eprintln!("LeaseForbidden surfaced in {took:?}");
    assert_eq!(f.reason, StartupFailure::LeaseForbidden, "{}", f.message);
    assert!(took < Duration::from_secs(5));

    assert_eq!(
        tasks.get(),
        live_before,
        "a failed start leaves zero live tasks"
    );
    assert!(lease(&client, &ns).await.is_none() || holder(&lease(&client, &ns).await).is_none());
}

trait TapMut: Sized {
    fn tap_mut(self, f: impl FnOnce(&mut Self)) -> Self;
}
impl<T> TapMut for T {
    fn tap_mut(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
