//! Workers on the real control plane: a `Manager` whose runnables come from
//! `workers::runnables`, watching as an impersonated service account and POSTing every object
//! to a hook server on 127.0.0.1 that records each call.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use manager_operator::api::ManagerConfig;
use manager_operator::api::conditions::StartupFailure;
use manager_operator::manager::election::system_wall_clock;
use manager_operator::manager::kube_store::KubeLeaseStore;
use manager_operator::manager::runtime::{
    Failure, Manager, ManagerEnv, ManagerIdentity, ManagerState, Runnable,
};
use manager_operator::metrics::Metrics;
use manager_operator::validation::{HookPolicy, ResolvedConfig};
use manager_operator::workers::{self, WorkerEnv};
use support::hook::{Call, RecordingHook, Reply, reply};
use support::{
    ManagerConfigBuilder, TIMEOUT, WorkerBuilder, apply_yaml, config_from, kubectl_ok, rbac,
    wait_for,
};

const SA: &str = "worker";

// ---------------------------------------------------------------------------------------------
// The hook server.

fn gaps(calls: &[Call]) -> Vec<Duration> {
    calls.windows(2).map(|w| w[1].start - w[0].start).collect()
}

// ---------------------------------------------------------------------------------------------
// Manager plumbing.

struct Env {
    lease_client: kube::Client,
    workers: WorkerEnv,
}

impl ManagerEnv for Env {
    type Store = KubeLeaseStore;
    fn lease_store(&self, cfg: &ResolvedConfig) -> Arc<KubeLeaseStore> {
        Arc::new(KubeLeaseStore::new(
            self.lease_client.clone(),
            &cfg.election.lease_namespace,
            &cfg.election.lease_name,
        ))
    }
    fn runnables(&self, cfg: &ResolvedConfig) -> Result<Vec<Arc<dyn Runnable>>, Failure> {
        Ok(workers::runnables(&self.workers, cfg))
    }
}

async fn admin_env(identity: &str, metrics: Option<Metrics>) -> Env {
    Env {
        lease_client: support::admin_client().await,
        workers: WorkerEnv {
            base: config_from(&support::kubeconfig_path()).await,
            http: workers::hook_http_client(&policy()).unwrap(),
            metrics,
            identity: identity.into(),
            clients: Default::default(),
            limits: Default::default(),
            caches: Default::default(),
            signing_refresh: workers::signing::DEFAULT_REFRESH,
            hook_errors: Default::default(),
        },
    }
}

fn policy() -> HookPolicy {
    HookPolicy {
        allow_loopback: true,
        ..HookPolicy::default()
    }
}

fn me(id: &str) -> ManagerIdentity {
    ManagerIdentity {
        identity: id.into(),
        wall_clock: system_wall_clock(),
    }
}

/// A ManagerConfig named `mgr` with fast leader election (the kit's defaults) and `workers`.
fn config(ns: &str, startup_timeout: &str, workers: Vec<WorkerBuilder>) -> ManagerConfig {
    workers
        .into_iter()
        .fold(
            ManagerConfigBuilder::new(ns, "mgr")
                .service_account(SA)
                .startup_timeout(startup_timeout),
            ManagerConfigBuilder::worker,
        )
        .build()
}

/// One `workers[]` entry watching `api_version`/`kind`, calling `hook` with timeout 1s.
fn worker(name: &str, api_version: &str, kind: &str, hook: &RecordingHook) -> WorkerBuilder {
    WorkerBuilder::new(name)
        .watch(api_version, kind)
        .hook(&hook.url)
        .timeout("1s")
}

fn sa_and_rbac(ns: &str, resource: &str) {
    rbac::service_account(ns, SA);
    rbac::grant_watch(ns, SA, resource);
}

/// ConfigMap `ns/name` with `labels` and data `n: "0"`.
async fn create_cm(client: &kube::Client, ns: &str, name: &str, labels: &[(&str, &str)]) {
    rbac::create_configmap_with_data(client, ns, name, labels, &[("n", "0")]).await;
}

async fn wait_running(m: &Manager) -> Duration {
    let t = Instant::now();
    let mut st = m.state();
    wait_for("manager Running", TIMEOUT, || {
        let s = st.borrow_and_update().clone();
        async move {
            match s {
                ManagerState::Running { .. } => Ok(()),
                ManagerState::Failed(f) => panic!("manager failed: {f}"),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await
    .unwrap();
    t.elapsed()
}

async fn stop(m: Manager) {
    let t = Instant::now();
    let live = m.live_tasks();
    let end = m.shutdown().await;
    eprintln!("graceful shutdown took {:?}", t.elapsed());
    assert_eq!(end, ManagerState::Stopped, "(live before: {live})");
}

/// Starts until the result is no longer `retry_on` (RBAC and discovery changes take a moment to
/// reach the API server's caches). Returns the manager and how long it took.
async fn start_until_ok(
    mc: &ManagerConfig,
    env: &Env,
    retry_on: StartupFailure,
) -> (Manager, Duration) {
    let t = Instant::now();
    loop {
        match Manager::start(mc, &policy(), &me("w-1"), env).await {
            Ok(m) => return (m, t.elapsed()),
            Err(f) if f.reason == retry_on && t.elapsed() < TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(f) => panic!("start failed: {f}"),
        }
    }
}

async fn start_err(mc: &ManagerConfig, env: &Env) -> (Failure, Duration) {
    let t = Instant::now();
    match Manager::start(mc, &policy(), &me("w-1"), env).await {
        Ok(_) => panic!("start should fail"),
        Err(f) => (f, t.elapsed()),
    }
}

fn delete_crd(name: &str) {
    let _ = support::kubectl(&["delete", "crd", name, "--wait=false"]);
}

fn crd_yaml(group: &str, kind: &str, plural: &str, versions: &str, conversion: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata: {{name: {plural}.{group}}}\nspec:\n  group: {group}\n  scope: Namespaced\n  \
         names: {{plural: {plural}, singular: {singular}, kind: {kind}, listKind: {kind}List}}\n  \
         versions:\n{versions}{conversion}",
        singular = kind.to_lowercase()
    )
}

fn crd_version(name: &str, storage: bool) -> String {
    format!(
        "    - name: {name}\n      served: true\n      storage: {storage}\n      \
         schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
    )
}

fn wait_established(crd: &str) {
    kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        &format!("crd/{crd}"),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn delivers_matching_objects_once_at_a_time_with_the_fencing_token() {
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "wk-deliver").await;
    sa_and_rbac(&ns, "configmaps");
    let hook = RecordingHook::start().await;
    hook.set_delay(Duration::from_millis(300));
    for i in 0..5 {
        create_cm(&client, &ns, &format!("inv-{i}"), &[("app", "inv")]).await;
    }
    create_cm(&client, &ns, "other-0", &[("app", "other")]).await;
    create_cm(&client, &ns, "other-1", &[]).await;

    let metrics = Metrics::new().unwrap();
    let env = admin_env("w-1", Some(metrics.clone())).await;
    let mc = config(
        &ns,
        "20s",
        vec![
            worker("cms", "v1", "ConfigMap", &hook)
                .selector("app=inv")
                .concurrency(4),
        ],
    );
    let t = Instant::now();
    let m = Manager::start(&mc, &policy(), &me("w-1"), &env)
        .await
        .expect("start");
    let running = wait_running(&m).await;
    wait_for("every matching ConfigMap delivered", TIMEOUT, || async {
        let mut names: Vec<String> = hook.calls().into_iter().map(|c| c.object).collect();
        names.sort();
        names.dedup();
        let want: Vec<String> = (0..5).map(|i| format!("inv-{i}")).collect();
        if want.iter().all(|w| names.contains(w)) {
            Ok(())
        } else {
            Err(format!("seen {names:?}"))
        }
    })
    .await
    .unwrap();
    eprintln!(
        "start -> Running {running:?}; start -> all 5 objects delivered {:?}",
        t.elapsed()
    );

    // The label selector is respected (kube-root-ca.crt and the unlabelled ones never arrive).
    let calls = hook.calls();
    assert!(
        calls.iter().all(|c| c.object.starts_with("inv-")),
        "unexpected objects: {:?}",
        calls.iter().map(|c| &c.object).collect::<Vec<_>>()
    );
    // The fencing token is the Lease's leaseTransitions; the holder is this replica.
    let lease = Api::<Lease>::namespaced(client.clone(), &ns)
        .get("mgr")
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    let transitions = i64::from(spec.lease_transitions.unwrap());
    assert_eq!(spec.holder_identity.as_deref(), Some("w-1"));
    for c in &calls {
        assert_eq!(c.token, transitions, "fencing token of {}", c.object);
        assert_eq!(c.holder, "w-1");
        assert_eq!(c.worker, "cms");
        assert_eq!(c.body["object"]["kind"], "ConfigMap");
        assert_eq!(c.body["object"]["apiVersion"], "v1");
        assert_eq!(c.body["object"]["metadata"]["namespace"], ns.as_str());
    }
    eprintln!("fencing token {transitions} == lease.spec.leaseTransitions");

    // Rapid updates of one object while its hook call is slow: never two calls at once, and
    // the last version is delivered.
    let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    for i in 1..=20 {
        // Paced so that updates keep arriving while a 300 ms call for the object is in flight.
        tokio::time::sleep(Duration::from_millis(50)).await;
        api.patch(
            "inv-0",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"n": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let t = Instant::now();
    wait_for("the last update delivered", TIMEOUT, || async {
        let last = hook
            .calls_for("inv-0")
            .last()
            .map(|c| c.body["object"]["data"]["n"].clone());
        if last == Some(serde_json::json!("20")) {
            Ok(())
        } else {
            Err(format!("last seen n={last:?}"))
        }
    })
    .await
    .unwrap();
    let inv0 = hook.calls_for("inv-0");
    eprintln!(
        "20 updates in 1s -> {} hook calls for inv-0, last version {:?} after the last update",
        inv0.len(),
        t.elapsed()
    );
    assert!(
        inv0.len() >= 3,
        "updates during a call are delivered after it"
    );
    // Every call recorded so far has completed (the recorder logs calls on arrival).
    let l3 = [ns.as_str(), "mgr", "cms"];
    let ok = metrics
        .reconcile_total
        .with_label_values(&[ns.as_str(), "mgr", "cms", "success"]);
    wait_for("every hook call completed", TIMEOUT, || async {
        let (n, c) = (ok.get(), hook.calls().len() as u64);
        if n == c {
            Ok(())
        } else {
            Err(format!("{n} of {c}"))
        }
    })
    .await
    .unwrap();
    let max = hook.peaks_per_object();
    assert!(
        max.values().all(|&n| n == 1),
        "two concurrent calls for one object: {max:?}"
    );
    let peak = hook.peak_global();
    eprintln!("peak concurrent hook calls: {peak} (concurrency 4)");
    assert!((2..=4).contains(&peak), "peak {peak}");

    // Metrics: successes counted, nothing waiting once delivered.
    wait_for("queue_depth 0", TIMEOUT, || async {
        let d = metrics.queue_depth.with_label_values(&l3).get();
        if d == 0 { Ok(()) } else { Err(format!("{d}")) }
    })
    .await
    .unwrap();
    assert!(ok.get() >= 8, "reconcile_total success {}", ok.get());
    assert!(
        metrics
            .encode()
            .unwrap()
            .contains("manager_operator_hook_request_duration_seconds_count{code=\"2xx\"}")
    );
    stop(m).await;
    assert_eq!(metrics.workers_active.with_label_values(&l3).get(), 0);
}

#[tokio::test]
async fn failures_are_retried_with_growing_backoff() {
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "wk-retry").await;
    sa_and_rbac(&ns, "configmaps");
    let hook = RecordingHook::start().await;
    hook.script(
        "flaky",
        vec![
            reply(500, "a"),
            reply(500, "b"),
            reply(503, "c"),
            reply(500, "d"),
        ],
    );
    // Slower than the hook timeout (1s) once.
    hook.script(
        "slow",
        vec![Reply {
            delay: Some(Duration::from_secs(3)),
            ..reply(200, "")
        }],
    );
    create_cm(&client, &ns, "flaky", &[("app", "r")]).await;
    create_cm(&client, &ns, "slow", &[("app", "r")]).await;
    let metrics = Metrics::new().unwrap();
    let env = admin_env("w-1", Some(metrics.clone())).await;
    let mc = config(
        &ns,
        "20s",
        vec![
            worker("cms", "v1", "ConfigMap", &hook)
                .selector("app=r")
                .concurrency(2),
        ],
    );
    let m = Manager::start(&mc, &policy(), &me("w-1"), &env)
        .await
        .expect("start");
    // While flaky waits for its 4 s retry, it counts as waiting in queue_depth.
    hook.wait_calls_for("flaky", 4).await;
    let l3 = [ns.as_str(), "mgr", "cms"];
    wait_for("queue_depth 1 during the backoff", TIMEOUT, || async {
        let d = metrics.queue_depth.with_label_values(&l3).get();
        if d == 1 { Ok(()) } else { Err(format!("{d}")) }
    })
    .await
    .unwrap();
    let flaky = hook.wait_calls_for("flaky", 5).await;
    let g = gaps(&flaky);
    eprintln!("flaky: 4 failures then success; gaps between calls {g:?}");
    for (i, gap) in g.iter().enumerate() {
        let expected = Duration::from_millis(500 * (1 << i));
        assert!(
            *gap >= expected.mul_f64(0.9) && *gap < expected + Duration::from_millis(1500),
            "gap {i} = {gap:?}, expected about {expected:?}"
        );
    }
    let slow = hook.wait_calls_for("slow", 2).await;
    let g = gaps(&slow);
    eprintln!("slow: timed out (1s) then retried; gap {g:?}");
    assert!(
        g[0] >= Duration::from_millis(1400) && g[0] < Duration::from_secs(4),
        "{g:?}"
    );

    let text = metrics.encode().unwrap();
    let errors = metrics
        .reconcile_total
        .with_label_values(&[ns.as_str(), "mgr", "cms", "error"])
        .get();
    assert_eq!(errors, 5, "4 HTTP failures and 1 timeout");
    assert!(text.contains("manager_operator_hook_request_duration_seconds_count{code=\"5xx\"} 4"));
    assert!(
        text.contains("manager_operator_hook_request_duration_seconds_count{code=\"error\"} 1")
    );
    wait_for("queue_depth 0 after the success", TIMEOUT, || async {
        let d = metrics.queue_depth.with_label_values(&l3).get();
        if d == 0 { Ok(()) } else { Err(format!("{d}")) }
    })
    .await
    .unwrap();
    stop(m).await;
}

#[tokio::test]
async fn requeue_after_seconds_and_resync_period_redispatch() {
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "wk-requeue").await;
    sa_and_rbac(&ns, "configmaps");
    let hook = RecordingHook::start().await;
    hook.script("rq-0", vec![reply(200, r#"{"requeueAfterSeconds": 2}"#)]);
    create_cm(&client, &ns, "rq-0", &[("app", "rq")]).await;
    create_cm(&client, &ns, "rs-0", &[("app", "rs")]).await;
    let env = admin_env("w-1", None).await;
    let workers = vec![
        worker("rq", "v1", "ConfigMap", &hook).selector("app=rq"),
        worker("rs", "v1", "ConfigMap", &hook)
            .selector("app=rs")
            .resync("2s"),
    ];
    let m = Manager::start(&config(&ns, "20s", workers), &policy(), &me("w-1"), &env)
        .await
        .expect("start");

    let rq = hook.wait_calls_for("rq-0", 2).await;
    let g = gaps(&rq);
    eprintln!("requeueAfterSeconds 2: second call after {:?}", g[0]);
    assert!(
        g[0] >= Duration::from_millis(1900) && g[0] < Duration::from_millis(3500),
        "{g:?}"
    );
    assert!(rq.iter().all(|c| c.worker == "rq"));

    let rs = hook.wait_calls_for("rs-0", 4).await;
    let g = gaps(&rs);
    eprintln!("resyncPeriod 2s: gaps {g:?}");
    for gap in &g {
        assert!(
            *gap >= Duration::from_millis(1900) && *gap < Duration::from_millis(3500),
            "{g:?}"
        );
    }
    assert!(rs.iter().all(|c| c.worker == "rs"));
    // rq-0 answered 200 without requeue on its second call: no resync for that worker.
    assert!(hook.calls_for("rq-0").len() <= 3);
    stop(m).await;
}

#[tokio::test]
async fn watch_target_not_found_until_the_crd_is_installed() {
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "wk-nocrd").await;
    let group = format!("{ns}.example.com");
    let crd = format!("nopes.{group}");
    rbac::service_account(&ns, SA);
    let hook = RecordingHook::start().await;
    let env = admin_env("w-1", None).await;
    let mc = config(
        &ns,
        "20s",
        vec![worker("nopes", &format!("{group}/v1"), "Nope", &hook)],
    );
    let (f, took) = start_err(&mc, &env).await;
    eprintln!("WatchTargetNotFound surfaced in {took:?}: {}", f.message);
    assert_eq!(
        f.reason,
        StartupFailure::WatchTargetNotFound,
        "{}",
        f.message
    );
    assert!(f.message.contains(&format!("{group}/v1")), "{}", f.message);
    assert!(f.message.contains("Nope"), "{}", f.message);
    assert!(
        f.message.contains("CustomResourceDefinition"),
        "{}",
        f.message
    );
    assert!(took < Duration::from_secs(5));

    apply_yaml(&crd_yaml(
        &group,
        "Nope",
        "nopes",
        &crd_version("v1", true),
        "",
    ));
    wait_established(&crd);
    rbac::grant_watch(&ns, SA, &crd);
    let (m, healed) = start_until_ok(&mc, &env, StartupFailure::WatchTargetNotFound).await;
    eprintln!("after the CRD was Established, a new start succeeded in {healed:?}");
    wait_running(&m).await;
    apply_yaml(&format!(
        "apiVersion: {group}/v1\nkind: Nope\nmetadata: {{name: n1, namespace: {ns}}}\nspec: {{x: 1}}\n"
    ));
    let c = hook.wait_calls_for("n1", 1).await;
    assert_eq!(c[0].body["object"]["kind"], "Nope");
    stop(m).await;
    delete_crd(&crd);
}

#[tokio::test]
async fn watch_forbidden_until_the_service_account_may_list_and_watch() {
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "wk-forbid").await;
    rbac::service_account(&ns, SA);
    create_cm(&client, &ns, "c1", &[]).await;
    let hook = RecordingHook::start().await;
    let env = admin_env("w-1", None).await;
    let mc = config(&ns, "20s", vec![worker("cms", "v1", "ConfigMap", &hook)]);
    let (f, took) = start_err(&mc, &env).await;
    eprintln!("WatchForbidden surfaced in {took:?}: {}", f.message);
    assert_eq!(f.reason, StartupFailure::WatchForbidden, "{}", f.message);
    let user = format!("system:serviceaccount:{ns}:{SA}");
    for want in [user.as_str(), "list", "watch", "configmaps", ns.as_str()] {
        assert!(f.message.contains(want), "{want:?} missing: {}", f.message);
    }
    assert!(took < Duration::from_secs(5));

    rbac::grant_watch(&ns, SA, "configmaps");
    let (m, healed) = start_until_ok(&mc, &env, StartupFailure::WatchForbidden).await;
    eprintln!("after the grant, a new start succeeded in {healed:?}");
    wait_running(&m).await;
    hook.wait_calls_for("c1", 1).await;
    stop(m).await;
}

#[tokio::test]
async fn impersonation_forbidden_until_the_operator_may_impersonate() {
    let admin = support::admin_client().await;
    let ns = support::fresh_namespace(&admin, "wk-imp").await;
    sa_and_rbac(&ns, "configmaps");
    create_cm(&admin, &ns, "c1", &[]).await;
    // The operator runs as mo-unprivileged: Lease RBAC, no impersonation.
    rbac::grant_user(
        &ns,
        "mo-unprivileged",
        "leases",
        &rbac::rule(
            "coordination.k8s.io",
            &["leases"],
            &[
                "get", "list", "watch", "create", "update", "patch", "delete",
            ],
        ),
    );
    let hook = RecordingHook::start().await;
    let env = Env {
        lease_client: support::unprivileged_client().await,
        workers: WorkerEnv {
            base: config_from(&support::unprivileged_kubeconfig_path()).await,
            http: workers::hook_http_client(&policy()).unwrap(),
            metrics: None,
            identity: "w-1".into(),
            clients: Default::default(),
            limits: Default::default(),
            caches: Default::default(),
            signing_refresh: workers::signing::DEFAULT_REFRESH,
            hook_errors: Default::default(),
        },
    };
    let mc = config(&ns, "20s", vec![worker("cms", "v1", "ConfigMap", &hook)]);
    // Until the Lease grant is visible to the authorizer, LeaseForbidden comes first.
    let t = Instant::now();
    let (f, took) = loop {
        let (f, took) = start_err(&mc, &env).await;
        if f.reason != StartupFailure::LeaseForbidden || t.elapsed() > TIMEOUT {
            break (f, took);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("ImpersonationForbidden surfaced in {took:?}: {}", f.message);
    assert_eq!(
        f.reason,
        StartupFailure::ImpersonationForbidden,
        "{}",
        f.message
    );
    assert!(f.message.contains(SA), "{}", f.message);
    assert!(f.message.contains("impersonate"), "{}", f.message);
    assert!(took < Duration::from_secs(5));

    rbac::grant_user(
        &ns,
        "mo-unprivileged",
        "impersonate-worker",
        &format!(
            "- apiGroups: ['']\n  resources: [serviceaccounts]\n  resourceNames: [{SA}]\n  \
             verbs: [impersonate]\n"
        ),
    );
    let (m, healed) = start_until_ok(&mc, &env, StartupFailure::ImpersonationForbidden).await;
    eprintln!("after the impersonate grant, a new start succeeded in {healed:?}");
    wait_running(&m).await;
    hook.wait_calls_for("c1", 1).await;
    stop(m).await;
}

/// A TCP listener on 127.0.0.1 that accepts connections and never answers.
async fn black_hole() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (port, task)
}

#[tokio::test]
async fn startup_timeout_when_the_initial_list_never_finishes() {
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "wk-slow").await;
    let group = format!("{ns}.example.com");
    let crd = format!("slows.{group}");
    let (port, hole) = black_hole().await;
    let ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    // ByteString serializes as base64.
    let ca_bundle = serde_json::to_value(k8s_openapi::ByteString(ca.cert.pem().into_bytes()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let conversion = format!(
        "  conversion:\n    strategy: Webhook\n    webhook:\n      conversionReviewVersions: [v1]\n      \
         clientConfig:\n        url: https://127.0.0.1:{port}/convert\n        caBundle: {ca_bundle}\n"
    );
    let versions = format!("{}{}", crd_version("v1", true), crd_version("v2", false));
    apply_yaml(&crd_yaml(&group, "Slow", "slows", &versions, &conversion));
    wait_established(&crd);
    // Stored at v1: creating it needs no conversion; listing it at v2 does.
    apply_yaml(&format!(
        "apiVersion: {group}/v1\nkind: Slow\nmetadata: {{name: s1, namespace: {ns}}}\nspec: {{x: 1}}\n"
    ));
    rbac::service_account(&ns, SA);
    rbac::grant_watch(&ns, SA, &crd);

    let hook = RecordingHook::start().await;
    let env = admin_env("w-1", None).await;
    let mc = config(
        &ns,
        "3s",
        vec![worker("slows", &format!("{group}/v2"), "Slow", &hook)],
    );
    let t = Instant::now();
    // Discovery or RBAC may lag the CRD by a moment.
    let (mut m, started) = start_until_ok(&mc, &env, StartupFailure::WatchTargetNotFound).await;
    eprintln!("start (preflight ok) returned in {started:?}");
    let t_started = Instant::now();
    let end = tokio::time::timeout(TIMEOUT, m.ended())
        .await
        .expect("the manager ends by itself");
    let took = t_started.elapsed();
    eprintln!(
        "StartupTimeout (startupTimeout 3s) surfaced {took:?} after start returned ({:?} in all)",
        t.elapsed()
    );
    match end {
        ManagerState::Failed(f) => {
            assert_eq!(f.reason, StartupFailure::StartupTimeout, "{}", f.message);
        }
        other => panic!("expected Failed(StartupTimeout), got {other:?}"),
    }
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(m.live_tasks(), 0, "nothing left running");
    assert!(hook.calls().is_empty());
    drop(m);
    hole.abort();
    delete_crd(&crd);
}
