//! `Manager::start` contract and lifecycle against the in-memory Lease store.

use super::*;
use crate::manager::election::system_wall_clock;
use crate::manager::memstore::{FaultyStore, MemLease};
use std::sync::Mutex;

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Says ready at once and runs until stopped.
    Good,
    /// Never says ready.
    Stuck,
    /// Preflight fails with WatchForbidden.
    PreflightFails,
    /// Fails after being ready.
    CrashesAfterReady,
    /// Ignores stop (must be aborted after gracefulShutdownTimeout).
    IgnoresStop,
}

struct TestRunnable {
    behaviour: Behaviour,
    runs: Arc<Mutex<Vec<i64>>>,
    active: Arc<AtomicI64>,
}

impl Runnable for TestRunnable {
    fn name(&self) -> String {
        "test".into()
    }

    fn preflight(&self) -> BoxFuture<'static, Result<(), Failure>> {
        let b = self.behaviour;
        Box::pin(async move {
            if b == Behaviour::PreflightFails {
                Err(Failure::new(StartupFailure::WatchForbidden, "nope"))
            } else {
                Ok(())
            }
        })
    }

    fn run(&self, mut ctx: RunContext) -> BoxFuture<'static, Result<(), Failure>> {
        let b = self.behaviour;
        let runs = self.runs.clone();
        let active = self.active.clone();
        Box::pin(async move {
            runs.lock().unwrap().push(ctx.fence.token());
            struct Active(Arc<AtomicI64>);
            impl Drop for Active {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::AcqRel);
                }
            }
            active.fetch_add(1, Ordering::AcqRel);
            let _a = Active(active);
            match b {
                Behaviour::Stuck => std::future::pending().await,
                Behaviour::CrashesAfterReady => {
                    ctx.ready();
                    sleep(Duration::from_secs(1)).await;
                    Err(Failure::new(StartupFailure::WorkerFailed, "boom"))
                }
                Behaviour::IgnoresStop => {
                    ctx.ready();
                    std::future::pending().await
                }
                _ => {
                    ctx.ready();
                    ctx.stop.cancelled().await;
                    Ok(())
                }
            }
        })
    }
}

struct Env {
    store: Arc<FaultyStore>,
    behaviour: Behaviour,
    runs: Arc<Mutex<Vec<i64>>>,
    active: Arc<AtomicI64>,
}

impl Env {
    fn new(lease: &Arc<MemLease>, behaviour: Behaviour) -> Self {
        Self {
            store: FaultyStore::new(lease, 1).0,
            behaviour,
            runs: Arc::default(),
            active: Arc::default(),
        }
    }
}

impl ManagerEnv for Env {
    type Store = FaultyStore;
    fn lease_store(&self, _: &ResolvedConfig) -> Arc<FaultyStore> {
        self.store.clone()
    }
    fn runnables(&self, _: &ResolvedConfig) -> Result<Vec<Arc<dyn Runnable>>, Failure> {
        Ok(vec![Arc::new(TestRunnable {
            behaviour: self.behaviour,
            runs: self.runs.clone(),
            active: self.active.clone(),
        })])
    }
}

fn mc(yaml_spec: &str) -> ManagerConfig {
    let text = format!(
        "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\nmetadata: {{name: m, namespace: ns}}\nspec:\n{yaml_spec}  workers: [{{name: w, watch: {{apiVersion: v1, kind: ConfigMap}}, hook: {{url: 'http://h.svc/'}}}}]\n"
    );
    serde_yaml::from_str(&text).expect("test config parses")
}

fn me(id: &str) -> ManagerIdentity {
    ManagerIdentity {
        identity: id.into(),
        wall_clock: system_wall_clock(),
    }
}

async fn until(m: &Manager, pred: impl Fn(&ManagerState) -> bool) -> ManagerState {
    let mut rx = m.state();
    loop {
        let s = rx.borrow_and_update().clone();
        if pred(&s) {
            return s;
        }
        rx.changed().await.expect("state stream open");
    }
}

#[tokio::test(start_paused = true)]
async fn seed_bug_invalid_timings_fail_at_once() {
    // leaseDuration not greater than renewDeadline: controller-runtime hangs forever here.
    let lease = MemLease::new();
    let env = Env::new(&lease, Behaviour::Good);
    let t = Instant::now();
    let err = Manager::start(
        &mc("  leaderElection: {leaseDuration: 5s, renewDeadline: 6s}\n"),
        &HookPolicy::default(),
        &me("a"),
        &env,
    )
    .await
    .err()
    .expect("start must fail");
    assert_eq!(err.reason, StartupFailure::InvalidSpec);
    assert!(
        err.message.contains("spec.leaderElection.renewDeadline"),
        "{}",
        err.message
    );
    assert_eq!(t.elapsed(), Duration::ZERO, "no time may pass");
    assert!(lease.current().is_none(), "nothing touched the lease");
    assert_eq!(env.active.load(Ordering::Acquire), 0);
}

#[tokio::test(start_paused = true)]
async fn preflight_failure_is_returned_and_nothing_runs() {
    let lease = MemLease::new();
    let env = Env::new(&lease, Behaviour::PreflightFails);
    let err = Manager::start(&mc(""), &HookPolicy::default(), &me("a"), &env)
        .await
        .err()
        .expect("fails");
    assert_eq!(err.reason, StartupFailure::WatchForbidden);
    assert!(env.runs.lock().unwrap().is_empty());
    // The free lease created by the preflight is not held by anyone.
    assert_eq!(
        lease.current().and_then(|r| r.holder().map(str::to_string)),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn runs_then_shuts_down_releasing_the_lease_and_every_task() {
    let lease = MemLease::new();
    let env = Env::new(&lease, Behaviour::Good);
    let m = Manager::start(&mc(""), &HookPolicy::default(), &me("a"), &env)
        .await
        .expect("starts");
    let s = until(&m, |s| matches!(s, ManagerState::Running { .. })).await;
    assert_eq!(s, ManagerState::Running { token: 1 });
    assert!(m.live_tasks() >= 2, "supervisor and worker are live");
    assert!(m.leader_healthy());
    assert_eq!(env.active.load(Ordering::Acquire), 1);
    let live = m.live.clone();
    let end = m.shutdown().await;
    assert_eq!(end, ManagerState::Stopped);
    assert_eq!(live.load(Ordering::Acquire), 0, "every task joined");
    assert_eq!(env.active.load(Ordering::Acquire), 0);
    let rec = lease.current().unwrap();
    assert_eq!(rec.holder(), None, "released");
    assert_eq!(rec.lease_duration_seconds, Some(1));
}

#[tokio::test(start_paused = true)]
async fn startup_timeout_fails_cleans_up_and_releases() {
    let lease = MemLease::new();
    let env = Env::new(&lease, Behaviour::Stuck);
    let mut m = Manager::start(
        &mc("  startupTimeout: 3s\n  leaderElection: {releaseOnCancel: false}\n"),
        &HookPolicy::default(),
        &me("a"),
        &env,
    )
    .await
    .expect("starts");
    let t = Instant::now();
    let end = m.ended().await;
    match end {
        ManagerState::Failed(f) => assert_eq!(f.reason, StartupFailure::StartupTimeout),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        t.elapsed() <= Duration::from_secs(35),
        "bounded: {:?}",
        t.elapsed()
    );
    assert_eq!(m.live_tasks(), 0, "nothing outlives a failed start");
    assert_eq!(env.active.load(Ordering::Acquire), 0);
    assert_eq!(
        lease.current().unwrap().holder(),
        None,
        "released even with releaseOnCancel=false"
    );
}

#[tokio::test(start_paused = true)]
async fn worker_failure_after_start_ends_the_manager() {
    let lease = MemLease::new();
    let env = Env::new(&lease, Behaviour::CrashesAfterReady);
    let mut m = Manager::start(&mc(""), &HookPolicy::default(), &me("a"), &env)
        .await
        .expect("starts");
    match m.ended().await {
        ManagerState::Failed(f) => {
            assert_eq!(f.reason, StartupFailure::WorkerFailed);
            assert!(f.message.contains("boom"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(m.live_tasks(), 0);
}

#[tokio::test(start_paused = true)]
async fn stuck_workers_are_aborted_after_graceful_timeout() {
    let lease = MemLease::new();
    let env = Env::new(&lease, Behaviour::IgnoresStop);
    let m = Manager::start(
        &mc("  gracefulShutdownTimeout: 2s\n"),
        &HookPolicy::default(),
        &me("a"),
        &env,
    )
    .await
    .expect("starts");
    until(&m, |s| matches!(s, ManagerState::Running { .. })).await;
    let t = Instant::now();
    let live = m.live.clone();
    assert_eq!(m.shutdown().await, ManagerState::Stopped);
    assert!(t.elapsed() >= Duration::from_secs(2) && t.elapsed() < Duration::from_secs(3));
    assert_eq!(live.load(Ordering::Acquire), 0);
    assert_eq!(env.active.load(Ordering::Acquire), 0);
}

#[tokio::test(start_paused = true)]
async fn losing_the_lease_stops_workers_and_campaigns_again() {
    let lease = MemLease::new();
    let env = Env::new(&lease, Behaviour::Good);
    let m = Manager::start(&mc(""), &HookPolicy::default(), &me("a"), &env)
        .await
        .expect("starts");
    until(&m, |s| matches!(s, ManagerState::Running { .. })).await;
    // Stolen by hand for 15s+: workers stop, the manager is a candidate, not failed.
    let mut rec = lease.current().unwrap();
    rec.holder = Some("thief".into());
    rec.lease_transitions = Some(7);
    lease.put(rec);
    until(&m, |s| *s == ManagerState::Candidate).await;
    assert_eq!(env.active.load(Ordering::Acquire), 0, "workers stopped");
    // The thief never renews: after leaseDuration we lead again with a newer token.
    let s = until(&m, |s| matches!(s, ManagerState::Running { .. })).await;
    assert_eq!(s, ManagerState::Running { token: 8 });
    assert_eq!(*env.runs.lock().unwrap(), vec![1, 8]);
    m.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn standby_takes_over_on_release() {
    let lease = MemLease::new();
    let ea = Env::new(&lease, Behaviour::Good);
    let eb = Env::new(&lease, Behaviour::Good);
    let a = Manager::start(&mc(""), &HookPolicy::default(), &me("a"), &ea)
        .await
        .expect("a starts");
    until(&a, |s| matches!(s, ManagerState::Running { .. })).await;
    let b = Manager::start(&mc(""), &HookPolicy::default(), &me("b"), &eb)
        .await
        .expect("b starts");
    until(&b, |s| *s == ManagerState::Candidate).await;
    sleep(Duration::from_secs(30)).await;
    assert_eq!(*b.state().borrow(), ManagerState::Candidate);
    let t = Instant::now();
    a.shutdown().await;
    until(&b, |s| matches!(s, ManagerState::Running { .. })).await;
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    b.shutdown().await;
}
