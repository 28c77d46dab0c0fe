use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A manager that records its shutdown.
struct Fake {
    healthy: bool,
    working: bool,
    stopped: Arc<AtomicUsize>,
}

impl Fake {
    fn new(stopped: &Arc<AtomicUsize>) -> Self {
        Self {
            healthy: true,
            working: true,
            stopped: stopped.clone(),
        }
    }
}

impl ManagerHandle for Fake {
    fn leader_healthy(&self) -> bool {
        self.healthy
    }

    fn holds_work(&self) -> bool {
        self.working
    }

    fn shutdown(self) -> BoxFuture<'static, ()> {
        let stopped = self.stopped.clone();
        Box::pin(async move {
            stopped.fetch_add(1, Ordering::SeqCst);
        })
    }
}

type Reg = Registry<&'static str, Fake>;

fn failure(reason: StartupFailure) -> Failure {
    Failure::new(reason, "test".to_string())
}

fn observer() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {})
}

fn uid(u: &str) -> Option<String> {
    Some(u.to_string())
}

/// Starts `fake` for `key` at generation 1 with uid `u`.
async fn start(reg: &Reg, key: &'static str, u: &str, fake: Fake) {
    reg.started(key, Some(1), uid(u), None, fake, observer())
        .await;
}

#[tokio::test]
async fn an_unknown_config_starts_and_a_running_one_is_left_alone() {
    let reg = Reg::default();
    let stopped = Arc::new(AtomicUsize::new(0));
    assert!(matches!(
        reg.admit(&"a", Some(1), Some("u1")).await,
        Admission::Start { stale: None }
    ));
    start(&reg, "a", "u1", Fake::new(&stopped)).await;
    assert!(matches!(
        reg.admit(&"a", Some(1), Some("u1")).await,
        Admission::Running
    ));
}

#[tokio::test]
async fn a_new_generation_or_uid_replaces_the_entry() {
    let reg = Reg::default();
    let stopped = Arc::new(AtomicUsize::new(0));
    start(&reg, "a", "u1", Fake::new(&stopped)).await;
    let Admission::Start { stale: Some(old) } = reg.admit(&"a", Some(2), Some("u1")).await else {
        panic!("a new generation restarts");
    };
    assert!(old.has_manager());
    assert!(old.stop().await.is_none());
    assert_eq!(
        stopped.load(Ordering::SeqCst),
        1,
        "the old manager is stopped"
    );

    reg.started(
        "a",
        Some(2),
        uid("u1"),
        None,
        Fake::new(&stopped),
        observer(),
    )
    .await;
    // Deleted and created again under the same name, same generation: a new object.
    assert!(matches!(
        reg.admit(&"a", Some(2), Some("u2")).await,
        Admission::Start { stale: Some(_) }
    ));
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_and_are_capped() {
    let reg = Reg::default();
    reg.start_failed("a", Some(1), uid("u1"), false, None).await;
    let mut delays = Vec::new();
    for _ in 0..10 {
        delays.push(
            reg.record_failure("a", Some(1), &failure(StartupFailure::InvalidSpec))
                .await,
        );
    }
    for (i, d) in delays.iter().enumerate().take(5) {
        let base = Duration::from_secs(1 << i);
        assert!(*d >= base && *d <= base.mul_f64(1.1), "attempt {i}: {d:?}");
    }
    assert!(delays[9] >= MAX_BACKOFF && delays[9] <= MAX_BACKOFF.mul_f64(1.1));

    // Until the delay has passed the config waits; then it starts again.
    let Admission::RetryIn(wait) = reg.admit(&"a", Some(1), Some("u1")).await else {
        panic!("within the backoff");
    };
    assert!(wait <= delays[9]);
    tokio::time::advance(wait + Duration::from_millis(1)).await;
    assert!(matches!(
        reg.admit(&"a", Some(1), Some("u1")).await,
        Admission::Start { stale: None }
    ));
}

#[tokio::test]
async fn recovery_resets_the_count_and_names_the_last_failure_once() {
    let reg = Reg::default();
    let stopped = Arc::new(AtomicUsize::new(0));
    reg.record_failure("a", Some(1), &failure(StartupFailure::HookRejected))
        .await;
    reg.record_failure("a", Some(1), &failure(StartupFailure::HookRejected))
        .await;
    start(&reg, "a", "u1", Fake::new(&stopped)).await;
    let recovered = reg.recovered(&"a").await.expect("it had failed");
    assert_eq!(recovered.reason, StartupFailure::HookRejected);
    assert!(reg.recovered(&"a").await.is_none(), "reported once");
    // After recovery the backoff starts over at one second.
    let d = reg
        .record_failure("a", Some(1), &failure(StartupFailure::HookRejected))
        .await;
    assert!(d < Duration::from_secs(2), "{d:?}");
}

#[tokio::test]
async fn waiting_configs_are_found_and_released() {
    let reg = Reg::default();
    reg.start_failed("lease", Some(1), uid("u1"), false, None)
        .await;
    reg.record_failure("lease", Some(1), &failure(StartupFailure::LeaseInUse))
        .await;
    reg.start_failed("quota", Some(1), uid("u2"), true, None)
        .await;
    reg.record_failure("quota", Some(1), &failure(StartupFailure::LimitExceeded))
        .await;
    reg.start_failed("other", Some(1), uid("u3"), false, None)
        .await;
    reg.record_failure("other", Some(1), &failure(StartupFailure::InvalidSpec))
        .await;
    assert_eq!(reg.waiting_for_lease().await, vec!["lease"]);
    assert_eq!(reg.waiting_for_quota().await, vec!["quota"]);

    reg.retry_now(&"quota").await;
    assert!(reg.waiting_for_quota().await.is_empty());
    assert!(matches!(
        reg.admit(&"quota", Some(1), Some("u2")).await,
        Admission::Start { stale: None }
    ));
    assert!(matches!(
        reg.admit(&"other", Some(1), Some("u3")).await,
        Admission::RetryIn(_)
    ));
}

#[tokio::test]
async fn an_ended_manager_is_restarted_by_the_next_reconcile() {
    let reg = Reg::default();
    let stopped = Arc::new(AtomicUsize::new(0));
    start(&reg, "a", "u1", Fake::new(&stopped)).await;
    reg.manager_ended(&"a").await;
    assert!(reg.waiting_for_lease().await.is_empty());
    assert!(matches!(
        reg.admit(&"a", Some(1), Some("u1")).await,
        Admission::Start { stale: None }
    ));
}

#[tokio::test]
async fn vanished_configs_are_taken_out_and_the_rest_stays() {
    let reg = Reg::default();
    let stopped = Arc::new(AtomicUsize::new(0));
    for k in ["a", "b", "c"] {
        start(&reg, k, k, Fake::new(&stopped)).await;
    }
    let gone = reg.take_vanished(|k| *k != "b").await;
    assert_eq!(gone.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec!["b"]);
    assert!(reg.contains_all(["a", "c"].iter()).await);
    assert!(!reg.contains_all(["a", "b"].iter()).await);
    assert!(reg.remove(&"a").await.is_some());
    assert!(reg.remove(&"a").await.is_none());
}

#[tokio::test]
async fn health_and_shutdown_look_at_every_manager() {
    let reg = Reg::default();
    let stopped = Arc::new(AtomicUsize::new(0));
    start(&reg, "a", "a", Fake::new(&stopped)).await;
    let mut idle = Fake::new(&stopped);
    idle.working = false;
    start(&reg, "b", "b", idle).await;
    reg.start_failed("c", Some(1), uid("c"), false, None).await;
    assert!(reg.leaders_healthy().await);

    let mut stale = Fake::new(&stopped);
    stale.healthy = false;
    start(&reg, "d", "d", stale).await;
    assert!(!reg.leaders_healthy().await);

    let (entries, holding) = reg.drain().await;
    assert_eq!(entries.len(), 4);
    assert_eq!(holding, 2, "a and d hold work; b is idle, c has no manager");
    for e in entries {
        e.stop().await;
    }
    assert_eq!(stopped.load(Ordering::SeqCst), 3);
    assert!(reg.drain().await.0.is_empty());
}

#[tokio::test]
async fn the_finalizing_spec_survives_failed_starts_and_comes_back_on_stop() {
    let reg = Reg::default();
    let stopped = Arc::new(AtomicUsize::new(0));
    let mc: crate::api::ManagerConfig = serde_yaml::from_str(
        "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\nmetadata: {name: m, namespace: ns}\nspec:\n  workers: [{name: w, finalize: true, watch: {apiVersion: v1, kind: ConfigMap}, hook: {url: 'http://h.svc/'}}]\n",
    )
    .expect("yaml");
    let cfg =
        crate::validation::resolve(&mc, &crate::validation::HookPolicy::default()).expect("valid");
    reg.start_failed("a", Some(1), uid("u1"), false, Some(cfg.clone()))
        .await;
    // A later failure without a valid spec keeps the remembered one.
    reg.start_failed("a", Some(1), uid("u1"), false, None).await;
    let entry = reg.remove(&"a").await.expect("entry");
    assert_eq!(entry.stop().await.map(|c| c.name), Some("m".to_string()));

    reg.started(
        "b",
        Some(1),
        uid("u2"),
        Some(cfg),
        Fake::new(&stopped),
        observer(),
    )
    .await;
    let (entries, _) = reg.drain().await;
    let finalizing: Vec<_> = futures::future::join_all(entries.into_iter().map(Entry::stop)).await;
    assert_eq!(finalizing.len(), 1);
    assert!(finalizing[0].is_some());
}
