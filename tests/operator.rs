//! The operator binary (`manager-operator run`) on the real control plane.
//!
//! Every test runs real operator processes (`CARGO_BIN_EXE_manager-operator`) against the local
//! kube-apiserver, each restricted to the test's own namespace (`--watch-namespace`) so tests
//! running in parallel never reconcile each other's configs, with the webhook off
//! (`--disable-webhook`: configs the webhook never saw) and loopback hooks allowed. The tests
//! drive it with kubectl and the kube client and watch what a user would watch: status
//! conditions, Events, `/metrics`, `/healthz`, the Lease, and the calls a hook server on
//! 127.0.0.1 receives.
//!
//! Each test prints `[timing] ...` lines (time for a failure to surface, to heal, to take
//! over) for the notes.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use manager_operator::api::ManagerConfig;
use manager_operator::controller::FINALIZER;
use support::hook::assert_one_holder_at_a_time;
use support::{
    Call, ManagerConfigBuilder, Operator, RecordingHook, TIMEOUT, WorkerBuilder, apply_yaml,
    kubectl_ok, prom, rbac, wait_for,
};

/// The service account the workers of the valid configs act as (may watch ConfigMaps).
const SA: &str = "worker";
/// How long a startup failure may take to show up (status, Event, metric).
const SURFACE: Duration = Duration::from_secs(10);
/// Lease settings of every config here: leaseDuration 3s, renewDeadline 2s, retryPeriod 500ms.
const LEASE_DURATION: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------------
// Cluster helpers.

/// One `workers[]` entry named `cms` watching `api_version`/`kind` objects that match
/// `selector` (none when empty), hook timeout 2s.
fn worker(api_version: &str, kind: &str, selector: &str, hook_url: &str) -> WorkerBuilder {
    WorkerBuilder::new("cms")
        .watch(api_version, kind)
        .selector(selector)
        .hook(hook_url)
        .timeout("2s")
}

/// A ManagerConfig with fast leader election; `lease_ns` overrides the lease namespace.
fn config(
    ns: &str,
    name: &str,
    sa: &str,
    lease_ns: Option<&str>,
    worker: WorkerBuilder,
) -> ManagerConfigBuilder {
    ManagerConfigBuilder::new(ns, name)
        .service_account(sa)
        .lease_namespace(lease_ns)
        .worker(worker)
}

fn condition<'a>(mc: &'a ManagerConfig, ty: &str) -> Option<&'a Condition> {
    mc.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == ty))
}

fn describe(mc: &ManagerConfig) -> String {
    match condition(mc, "Ready") {
        Some(c) => format!("Ready={} {}: {}", c.status, c.reason, c.message),
        None => "no Ready condition".into(),
    }
}

/// Waits until `Ready` has `status` and `reason`; returns the object and the time it took.
async fn wait_ready_cond(
    api: &Api<ManagerConfig>,
    name: &str,
    status: &str,
    reason: &str,
    timeout: Duration,
) -> (ManagerConfig, Duration) {
    let t = Instant::now();
    let mc = wait_for(
        &format!("{name}: Ready={status} reason {reason}"),
        timeout,
        || async {
            let mc = api.get(name).await.map_err(|e| e.to_string())?;
            match condition(&mc, "Ready") {
                Some(c) if c.status == status && c.reason == reason => Ok(mc),
                _ => Err(describe(&mc)),
            }
        },
    )
    .await
    .unwrap();
    (mc, t.elapsed())
}

/// Waits for an Event of `type_` and `reason` regarding ManagerConfig `name`; returns its note.
async fn wait_event(
    client: &kube::Client,
    ns: &str,
    name: &str,
    type_: &str,
    reason: &str,
    timeout: Duration,
) -> (String, Duration) {
    let t = Instant::now();
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let note = wait_for(
        &format!("{type_} Event {reason} regarding {name}"),
        timeout,
        || async {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let mine = list.items.iter().filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.name.as_deref() == Some(name) && r.kind.as_deref() == Some("ManagerConfig")
                })
            });
            let seen: Vec<String> = mine
                .clone()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e.type_.as_deref().unwrap_or(""),
                        e.reason.as_deref().unwrap_or("")
                    )
                })
                .collect();
            mine.into_iter()
                .find(|e| e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason))
                .map(|e| e.note.clone().unwrap_or_default())
                .ok_or_else(|| format!("events so far: {seen:?}"))
        },
    )
    .await
    .unwrap();
    (note, t.elapsed())
}

/// Waits until `/metrics` has the series with a value satisfying `ok`.
async fn wait_metric(
    op: &Operator,
    name: &str,
    labels: &[(&str, &str)],
    ok: impl Fn(f64) -> bool,
) -> f64 {
    wait_for(&format!("{name}{labels:?}"), SURFACE, || async {
        let text = op.metrics_text().await;
        match prom::value(&text, name, labels) {
            Some(v) if ok(v) => Ok(v),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap()
}

async fn lease_holder(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
        // The holder is `<replica>/<config uid>`; tests compare replicas.
        .map(|h| manager_operator::manager::election::replica_of(&h).to_string())
}

/// Waits until `status.leader` and the Lease's holder agree on one of `candidates`.
async fn wait_agreed_leader(
    client: &kube::Client,
    ns: &str,
    name: &str,
    candidates: &[&str],
) -> String {
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), ns);
    wait_for("status.leader == Lease holder", TIMEOUT, || async {
        let mc = api.get(name).await.map_err(|e| e.to_string())?;
        let status_leader = mc.status.as_ref().and_then(|s| s.leader.clone());
        let holder = lease_holder(client, ns, name).await;
        match (&status_leader, &holder) {
            (Some(s), Some(h)) if s == h && candidates.contains(&h.as_str()) => Ok(h.clone()),
            _ => Err(format!(
                "status.leader {status_leader:?}, Lease holder {holder:?}"
            )),
        }
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Startup failures: one operator per namespace, one broken config next to a valid one.

/// A test namespace with the `worker` service account (may watch ConfigMaps), a hook server,
/// an operator, and a valid config `good` that must keep running whatever happens to the other.
struct Fixture {
    client: kube::Client,
    ns: String,
    api: Api<ManagerConfig>,
    hook: RecordingHook,
    op: Operator,
}

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        support::ensure_crd();
        let client = support::admin_client().await;
        let ns = support::fresh_namespace(&client, prefix).await;
        rbac::service_account(&ns, SA);
        rbac::grant_watch(&ns, SA, "configmaps");
        rbac::create_configmap(&client, &ns, "good-0", &[("app", "good")]).await;
        let hook = RecordingHook::start().await;
        let op = support::operator().namespace(&ns).start().await;
        config(
            &ns,
            "good",
            SA,
            None,
            worker("v1", "ConfigMap", "app=good", &hook.url),
        )
        .apply();
        let api = Api::namespaced(client.clone(), &ns);
        Fixture {
            client,
            ns,
            api,
            hook,
            op,
        }
    }

    /// Applies the broken config `bad` and checks everything a failure must produce. Returns
    /// the time from apply to `Ready=False`.
    async fn expect_failure(&self, mc: &ManagerConfigBuilder, reason: &str) -> Duration {
        let t = Instant::now();
        mc.apply();
        self.check_failure("bad", reason, t).await
    }

    async fn check_failure(&self, name: &str, reason: &str, since: Instant) -> Duration {
        let (mc, _) = wait_ready_cond(&self.api, name, "False", reason, SURFACE).await;
        let surfaced = since.elapsed();
        let ready = condition(&mc, "Ready").unwrap();
        eprintln!(
            "[timing] {reason}: Ready=False after {surfaced:?}; message: {}",
            ready.message
        );
        assert!(ready.message.contains("to fix"), "{}", ready.message);
        let accepted = condition(&mc, "Accepted").expect("Accepted condition");
        if reason == "InvalidSpec" {
            assert_eq!(accepted.status, "False", "{accepted:?}");
            assert_eq!(accepted.reason, "InvalidSpec");
        } else {
            assert_eq!(accepted.status, "True", "{accepted:?}");
        }
        assert_eq!(
            mc.status.as_ref().unwrap().observed_generation,
            mc.metadata.generation
        );
        let (note, _) = wait_event(&self.client, &self.ns, name, "Warning", reason, SURFACE).await;
        eprintln!(
            "[timing] {reason}: Warning Event after {:?}: {note}",
            since.elapsed()
        );
        let failures = wait_metric(
            &self.op,
            "manager_operator_startup_failures_total",
            &[("namespace", &self.ns), ("name", name), ("reason", reason)],
            |v| v >= 1.0,
        )
        .await;
        wait_metric(
            &self.op,
            "manager_operator_manager_ready",
            &[("namespace", &self.ns), ("name", name)],
            |v| v == 0.0,
        )
        .await;
        eprintln!(
            "[timing] {reason}: startup_failures_total={failures}, manager_ready=0 after {:?}",
            since.elapsed()
        );
        assert!(surfaced < SURFACE);
        self.assert_healthy_and_good_running().await;
        surfaced
    }

    /// The process is healthy and `good` runs: Ready=True, manager_ready 1, hook calls.
    async fn assert_healthy_and_good_running(&self) {
        assert_eq!(self.op.healthz().await, 200, "/healthz");
        wait_ready_cond(&self.api, "good", "True", "Running", TIMEOUT).await;
        wait_metric(
            &self.op,
            "manager_operator_manager_ready",
            &[("namespace", &self.ns), ("name", "good")],
            |v| v == 1.0,
        )
        .await;
        wait_for("hook calls of good", TIMEOUT, || async {
            if self.hook.calls_of("good").is_empty() {
                Err("none yet".to_string())
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
    }

    /// After the cause was fixed at `fixed`: Ready=True, a Normal Recovered Event, gauge 1.
    async fn expect_heal(&self, reason: &str, fixed: Instant) -> Duration {
        let (mc, _) = wait_ready_cond(&self.api, "bad", "True", "Running", TIMEOUT).await;
        let healed = fixed.elapsed();
        eprintln!("[timing] {reason}: healed to Ready=True {healed:?} after the fix");
        assert_eq!(condition(&mc, "Accepted").unwrap().status, "True");
        let (note, _) = wait_event(
            &self.client,
            &self.ns,
            "bad",
            "Normal",
            "Recovered",
            SURFACE,
        )
        .await;
        assert!(
            note.contains(reason),
            "Recovered note names {reason}: {note}"
        );
        wait_metric(
            &self.op,
            "manager_operator_manager_ready",
            &[("namespace", &self.ns), ("name", "bad")],
            |v| v == 1.0,
        )
        .await;
        self.assert_healthy_and_good_running().await;
        healed
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_spec_the_webhook_never_saw() {
    let fx = Fixture::new("op-invalid").await;
    // The CRD's CEL rules cannot parse label selectors; the runtime validation can.
    let bad = config(
        &fx.ns,
        "bad",
        SA,
        None,
        worker("v1", "ConfigMap", "app in (", &fx.hook.url),
    );
    fx.expect_failure(&bad, "InvalidSpec").await;
    let mc = fx.api.get("bad").await.unwrap();
    let accepted = condition(&mc, "Accepted").unwrap();
    assert!(
        accepted.message.contains("labelSelector"),
        "names the field: {}",
        accepted.message
    );

    // A second rule CEL does not check: a leaseDuration that is not whole seconds at µs
    // precision. Updating the spec re-validates at once.
    let t = Instant::now();
    let bad2 = config(
        &fx.ns,
        "bad",
        SA,
        None,
        worker("v1", "ConfigMap", "app=bad", &fx.hook.url),
    )
    .lease("3000500us", "2s", "500ms");
    bad2.apply();
    let mc = wait_for("Accepted message about leaseDuration", SURFACE, || async {
        let mc = fx.api.get("bad").await.map_err(|e| e.to_string())?;
        match condition(&mc, "Accepted") {
            Some(c) if c.message.contains("leaseDuration") && c.status == "False" => Ok(mc),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    eprintln!(
        "[timing] InvalidSpec (leaseDuration 3000500us) after a spec update: {:?}",
        t.elapsed()
    );
    assert_eq!(condition(&mc, "Ready").unwrap().reason, "InvalidSpec");
    assert_eq!(
        mc.status.as_ref().unwrap().observed_generation,
        mc.metadata.generation
    );
    assert!(
        fx.hook.calls_of("bad").is_empty(),
        "an invalid config never runs"
    );
    fx.assert_healthy_and_good_running().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_namespace_not_found_heals_when_the_namespace_is_created() {
    let fx = Fixture::new("op-leasens").await;
    let lease_ns = format!("{}-leases", fx.ns);
    // A Lease outside the config's namespace needs its service account's rights there (issue
    // 13): granted cluster-wide, since the namespace does not exist yet.
    let grant = format!("{}-sa-leases", fx.ns);
    apply_yaml(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {grant}}}\n\
         rules:\n- apiGroups: [coordination.k8s.io]\n  resources: [leases]\n  \
         verbs: [get, create, update]\n---\napiVersion: rbac.authorization.k8s.io/v1\n\
         kind: ClusterRoleBinding\nmetadata: {{name: {grant}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {grant}}}\n\
         subjects: [{{kind: ServiceAccount, name: {SA}, namespace: {ns}}}]\n",
        ns = fx.ns
    ));
    let bad = config(
        &fx.ns,
        "bad",
        SA,
        Some(&lease_ns),
        worker("v1", "ConfigMap", "app=good", &fx.hook.url),
    );
    fx.expect_failure(&bad, "LeaseNamespaceNotFound").await;

    let fixed = Instant::now();
    kubectl_ok(&["create", "namespace", &lease_ns]);
    fx.expect_heal("LeaseNamespaceNotFound", fixed).await;
    let holder = lease_holder(&fx.client, &lease_ns, "bad").await;
    assert_eq!(holder.as_deref(), Some(fx.op.identity()));
    fx.hook
        .wait_call_of("hook calls of bad", "bad", fixed, |_| true)
        .await;
    drop(fx.op);
    let _ = support::kubectl(&["delete", "namespace", &lease_ns, "--wait=false"]);
    let _ = support::kubectl(&["delete", "clusterrole,clusterrolebinding", &grant]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_rejected_at_runtime_when_the_webhook_is_off() {
    let fx = Fixture::new("op-hook").await;
    let bad = config(
        &fx.ns,
        "bad",
        SA,
        None,
        worker(
            "v1",
            "ConfigMap",
            "app=good",
            "http://169.254.169.254/latest/meta-data",
        ),
    );
    fx.expect_failure(&bad, "HookRejected").await;
    let mc = fx.api.get("bad").await.unwrap();
    assert!(
        condition(&mc, "Ready")
            .unwrap()
            .message
            .contains("169.254.169.254"),
        "{}",
        describe(&mc)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_target_not_found_heals_when_the_crd_is_installed() {
    let fx = Fixture::new("op-nocrd").await;
    let group = format!("{}.example.com", fx.ns);
    let crd = format!("widgets.{group}");
    // RBAC first, so only the missing CRD stands in the way.
    rbac::grant_watch(&fx.ns, SA, &crd);
    let bad = config(
        &fx.ns,
        "bad",
        SA,
        None,
        worker(&format!("{group}/v1"), "Widget", "", &fx.hook.url),
    );
    fx.expect_failure(&bad, "WatchTargetNotFound").await;

    let fixed = Instant::now();
    apply_yaml(&format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata: {{name: {crd}}}\nspec:\n  group: {group}\n  scope: Namespaced\n  \
         names: {{plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}}\n  \
         versions:\n    - name: v1\n      served: true\n      storage: true\n      \
         schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
    ));
    fx.expect_heal("WatchTargetNotFound", fixed).await;
    apply_yaml(&format!(
        "apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w1, namespace: {}}}\n",
        fx.ns
    ));
    let c = fx
        .hook
        .wait_call_of("hook call for widget w1", "bad", fixed, |c| {
            c.object == "w1"
        })
        .await;
    assert_eq!(c.holder, fx.op.identity());
    drop(fx.op);
    let _ = support::kubectl(&["delete", "crd", &crd, "--wait=false"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_forbidden_heals_when_the_service_account_is_granted() {
    let fx = Fixture::new("op-forbid").await;
    kubectl_ok(&["-n", &fx.ns, "create", "serviceaccount", "noperm"]);
    rbac::create_configmap(&fx.client, &fx.ns, "bad-0", &[("app", "bad")]).await;
    let bad = config(
        &fx.ns,
        "bad",
        "noperm",
        None,
        worker("v1", "ConfigMap", "app=bad", &fx.hook.url),
    );
    fx.expect_failure(&bad, "WatchForbidden").await;
    let mc = fx.api.get("bad").await.unwrap();
    assert!(
        condition(&mc, "Ready")
            .unwrap()
            .message
            .contains(&format!("system:serviceaccount:{}:noperm", fx.ns)),
        "{}",
        describe(&mc)
    );

    let fixed = Instant::now();
    rbac::grant_watch(&fx.ns, "noperm", "configmaps");
    fx.expect_heal("WatchForbidden", fixed).await;
    fx.hook
        .wait_call_of("hook call for bad-0", "bad", fixed, |c| c.object == "bad-0")
        .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_timeout_heals_when_the_initial_list_can_finish() {
    let fx = Fixture::new("op-slow").await;
    // A CRD served at v1 (storage) and v2, converted by a webhook on 127.0.0.1 that never
    // answers: listing at v2 hangs, so the workers' initial list never finishes.
    let group = format!("{}.example.com", fx.ns);
    let crd = format!("slows.{group}");
    let (port, hole) = black_hole().await;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca_bundle = serde_json::to_value(k8s_openapi::ByteString(cert.cert.pem().into_bytes()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let version = |name: &str, storage: bool| {
        format!(
            "    - name: {name}\n      served: true\n      storage: {storage}\n      \
             schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
        )
    };
    apply_yaml(&format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata: {{name: {crd}}}\nspec:\n  group: {group}\n  scope: Namespaced\n  \
         names: {{plural: slows, singular: slow, kind: Slow, listKind: SlowList}}\n  \
         versions:\n{}{}  conversion:\n    strategy: Webhook\n    webhook:\n      \
         conversionReviewVersions: [v1]\n      clientConfig:\n        \
         url: https://127.0.0.1:{port}/convert\n        caBundle: {ca_bundle}\n",
        version("v1", true),
        version("v2", false),
    ));
    kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        &format!("crd/{crd}"),
    ]);
    // Stored at v1: creating it needs no conversion; listing it at v2 does.
    apply_yaml(&format!(
        "apiVersion: {group}/v1\nkind: Slow\nmetadata: {{name: s1, namespace: {}}}\n",
        fx.ns
    ));
    rbac::grant_watch(&fx.ns, SA, &crd);
    let bad = config(
        &fx.ns,
        "bad",
        SA,
        None,
        worker(&format!("{group}/v2"), "Slow", "", &fx.hook.url),
    )
    .startup_timeout("3s");
    // Discovery may lag the CRD for a moment: WatchTargetNotFound first is fine.
    let t = Instant::now();
    bad.apply();
    fx.check_failure("bad", "StartupTimeout", t).await;
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "not before startupTimeout"
    );

    // Conversion no longer needs the webhook: the next retry lists at once.
    let fixed = Instant::now();
    kubectl_ok(&[
        "patch",
        "crd",
        &crd,
        "--type=merge",
        "-p",
        r#"{"spec": {"conversion": {"strategy": "None", "webhook": null}}}"#,
    ]);
    fx.expect_heal("StartupTimeout", fixed).await;
    let c = fx
        .hook
        .wait_call_of("hook call for s1", "bad", fixed, |c| c.object == "s1")
        .await;
    assert_eq!(c.holder, fx.op.identity());
    drop(fx.op);
    hole.abort();
    let _ = support::kubectl(&["delete", "crd", &crd, "--wait=false"]);
}

// ---------------------------------------------------------------------------------------------
// 2. The operator's own RBAC: LeaseForbidden, then ImpersonationForbidden, then Ready.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_then_impersonation_forbidden_heal_as_rbac_is_granted() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "op-rbac").await;
    let unpriv = support::unprivileged_kubeconfig_path();
    let who = support::kubectl_as(
        &unpriv,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert!(who.status.success(), "kubectl auth whoami: {who:?}");
    let user = String::from_utf8_lossy(&who.stdout).trim().to_string();
    assert!(!user.is_empty());
    eprintln!("the operator runs as {user}");

    rbac::service_account(&ns, SA);
    rbac::grant_watch(&ns, SA, "configmaps");
    rbac::create_configmap(&client, &ns, "c1", &[("app", "rbac")]).await;
    // What the operator needs for ManagerConfigs and Events, but no Leases, no impersonation.
    apply_yaml(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata: {{name: operator, namespace: {ns}}}\nrules:\n\
         - apiGroups: [manager-operator.io]\n  \
           resources: [managerconfigs, managerconfigs/status, managerconfigs/finalizers]\n  \
           verbs: [get, list, watch, patch, update]\n\
         - apiGroups: ['', events.k8s.io]\n  resources: [events]\n  verbs: [create, patch]\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: operator, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: operator}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
    ));
    let hook = RecordingHook::start().await;
    let op = support::operator()
        .namespace(&ns)
        .kubeconfig(&unpriv)
        .start()
        .await;
    let fx = Fixture {
        api: Api::namespaced(client.clone(), &ns),
        client: client.clone(),
        ns: ns.clone(),
        hook,
        op,
    };
    let t = Instant::now();
    config(
        &ns,
        "mgr",
        SA,
        None,
        worker("v1", "ConfigMap", "app=rbac", &fx.hook.url),
    )
    .apply();
    check_rbac_failure(&fx, "LeaseForbidden", t).await;

    let fixed = Instant::now();
    kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "role",
        "leases",
        "--verb=get,list,watch,create,update,patch",
        "--resource=leases.coordination.k8s.io",
    ]);
    kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "leases",
        "--role=leases",
        &format!("--user={user}"),
    ]);
    check_rbac_failure(&fx, "ImpersonationForbidden", fixed).await;
    eprintln!(
        "[timing] LeaseForbidden -> ImpersonationForbidden {:?} after the Lease grant",
        fixed.elapsed()
    );

    let fixed = Instant::now();
    kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "role",
        "impersonate-worker",
        "--verb=impersonate",
        "--resource=serviceaccounts",
        &format!("--resource-name={SA}"),
    ]);
    kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "impersonate-worker",
        "--role=impersonate-worker",
        &format!("--user={user}"),
    ]);
    let (mc, _) = wait_ready_cond(&fx.api, "mgr", "True", "Running", TIMEOUT).await;
    eprintln!(
        "[timing] ImpersonationForbidden: healed to Ready=True {:?} after the impersonate grant",
        fixed.elapsed()
    );
    assert_eq!(
        mc.status.as_ref().unwrap().leader.as_deref(),
        Some(fx.op.identity())
    );
    let (note, _) = wait_event(&client, &ns, "mgr", "Normal", "Recovered", SURFACE).await;
    assert!(note.contains("ImpersonationForbidden"), "{note}");
    wait_metric(
        &fx.op,
        "manager_operator_manager_ready",
        &[("namespace", &ns), ("name", "mgr")],
        |v| v == 1.0,
    )
    .await;
    let c = fx
        .hook
        .wait_call_of("hook call for c1", "mgr", fixed, |c| c.object == "c1")
        .await;
    assert_eq!(c.holder, fx.op.identity());
}

async fn check_rbac_failure(fx: &Fixture, reason: &str, since: Instant) {
    let (mc, _) = wait_ready_cond(&fx.api, "mgr", "False", reason, TIMEOUT).await;
    eprintln!(
        "[timing] {reason}: Ready=False after {:?}: {}",
        since.elapsed(),
        describe(&mc)
    );
    let (note, _) = wait_event(&fx.client, &fx.ns, "mgr", "Warning", reason, SURFACE).await;
    eprintln!("{reason} Event: {note}");
    wait_metric(
        &fx.op,
        "manager_operator_startup_failures_total",
        &[("namespace", &fx.ns), ("name", "mgr"), ("reason", reason)],
        |v| v >= 1.0,
    )
    .await;
    wait_metric(
        &fx.op,
        "manager_operator_manager_ready",
        &[("namespace", &fx.ns), ("name", "mgr")],
        |v| v == 0.0,
    )
    .await;
    assert_eq!(fx.op.healthz().await, 200);
}

// ---------------------------------------------------------------------------------------------
// 3. Several replicas: one holder at a time, kill -9 of the leader, takeover.

async fn replicas_take_over_after_kill_9(replicas: usize) {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, &format!("op-ha{replicas}")).await;
    rbac::service_account(&ns, SA);
    rbac::grant_watch(&ns, SA, "configmaps");
    rbac::create_configmap(&client, &ns, "tick", &[("app", "ha")]).await;
    let hook = RecordingHook::start().await;
    hook.set_delay(Duration::from_millis(50));
    let mut ops = Vec::new();
    for i in 0..replicas {
        ops.push(
            support::operator()
                .identity(&format!("{ns}-op-{i}"))
                .namespace(&ns)
                .start()
                .await,
        );
    }
    config(
        &ns,
        "ha",
        SA,
        None,
        worker("v1", "ConfigMap", "app=ha", &hook.url).resync("1s"),
    )
    .apply();
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    wait_ready_cond(&api, "ha", "True", "Running", TIMEOUT).await;

    let mut alive: Vec<String> = ops.iter().map(|o| o.identity().to_string()).collect();
    for round in 1..replicas {
        let ids: Vec<&str> = alive.iter().map(String::as_str).collect();
        let leader = wait_agreed_leader(&client, &ns, "ha", &ids).await;
        // Let the leader work for a while (resync every second).
        let since = Instant::now();
        let before = wait_for("3 calls from the leader", TIMEOUT, || async {
            let calls: Vec<Call> = hook
                .calls_of("ha")
                .into_iter()
                .filter(|c| c.start > since && c.holder == leader)
                .collect();
            if calls.len() >= 3 {
                Ok(calls)
            } else {
                Err(format!(
                    "{} calls; all holders {:?}",
                    calls.len(),
                    support::hook::holders(&hook.calls_of("ha"))
                ))
            }
        })
        .await
        .unwrap();
        let old_token = before.last().unwrap().token;
        let lease = Api::<Lease>::namespaced(client.clone(), &ns)
            .get("ha")
            .await
            .unwrap();
        assert_eq!(
            i64::from(lease.spec.unwrap().lease_transitions.unwrap_or(0)),
            old_token,
            "fencing token == Lease leaseTransitions"
        );
        let others: Vec<&str> = ids.iter().copied().filter(|i| *i != leader).collect();
        assert!(
            hook.calls_of("ha")
                .iter()
                .filter(|c| c.start > since)
                .all(|c| c.holder == leader),
            "only the leader calls the hook: {:?}",
            support::hook::holders(&hook.calls_of("ha"))
        );

        let op = ops.iter_mut().find(|o| o.identity() == leader).unwrap();
        let killed = Instant::now();
        op.kill9();
        let first = hook
            .wait_call_of("a call from a new holder", "ha", killed, |c| {
                c.holder != leader
            })
            .await;
        let takeover = first.start - killed;
        eprintln!(
            "[timing] {replicas} replicas, round {round}: kill -9 of {leader} -> first hook call \
             from {} after {takeover:?} (leaseDuration 3s; bound 5s); fencing token {old_token} -> {}",
            first.holder, first.token
        );
        assert!(
            takeover <= LEASE_DURATION + Duration::from_secs(2),
            "takeover took {takeover:?}"
        );
        assert!(others.contains(&first.holder.as_str()), "{first:?}");
        assert!(first.token > old_token, "fencing token grows: {first:?}");
        let new_leader = wait_agreed_leader(&client, &ns, "ha", &others).await;
        assert_eq!(new_leader, first.holder);
        let (mc, _) = wait_ready_cond(&api, "ha", "True", "Running", TIMEOUT).await;
        assert_eq!(
            mc.status.as_ref().unwrap().lease_transitions.map(i64::from),
            Some(first.token)
        );
        // The new leader's metrics say so; the standby's do not.
        let new_op = ops.iter().find(|o| o.identity() == new_leader).unwrap();
        wait_metric(
            new_op,
            "manager_operator_leader",
            &[("namespace", &ns), ("name", "ha")],
            |v| v == 1.0,
        )
        .await;
        for o in ops
            .iter()
            .filter(|o| o.identity() != new_leader && o.exited().is_none())
        {
            let text = o.metrics_text().await;
            let v = prom::value(
                &text,
                "manager_operator_leader",
                &[("namespace", &ns), ("name", "ha")],
            );
            assert!(
                v.is_none_or(|v| v == 0.0),
                "standby {} leader={v:?}",
                o.identity()
            );
        }
        alive.retain(|a| *a != leader);
    }
    // The last leader works on.
    let last = alive[0].clone();
    let since = Instant::now();
    hook.wait_call_of("a call from the last leader", "ha", since, |c| {
        c.holder == last
    })
    .await;
    let calls = hook.calls_of("ha");
    eprintln!(
        "{} hook calls from holders {:?}",
        calls.len(),
        support::hook::holders(&hook.calls_of("ha"))
    );
    assert_one_holder_at_a_time(&calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_holder_at_a_time_and_takeover_after_kill_9() {
    replicas_take_over_after_kill_9(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_holder_at_a_time_and_takeover_after_kill_9() {
    replicas_take_over_after_kill_9(3).await;
}

// ---------------------------------------------------------------------------------------------
// 4. Spec update and deletion.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_update_restarts_workers_and_deletion_stops_everything() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "op-update").await;
    rbac::service_account(&ns, SA);
    rbac::grant_watch(&ns, SA, "configmaps");
    for i in 0..5 {
        rbac::create_configmap(&client, &ns, &format!("upd-{i}"), &[("app", "upd")]).await;
    }
    let hook = RecordingHook::start().await;
    hook.set_delay(Duration::from_millis(300));
    let op = support::operator().namespace(&ns).start().await;
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    config(
        &ns,
        "mgr",
        SA,
        None,
        worker("v1", "ConfigMap", "app=upd", &hook.url)
            .concurrency(1)
            .resync("1s"),
    )
    .apply();
    let (mc, _) = wait_ready_cond(&api, "mgr", "True", "Running", TIMEOUT).await;
    let status = mc.status.clone().unwrap();
    assert_eq!(status.observed_generation, mc.metadata.generation);
    assert_eq!(
        (status.workers[0].concurrency, status.workers[0].running),
        (1, 1)
    );
    assert!(
        !mc.finalizers().iter().any(|f| f == FINALIZER),
        "no finalizer: deleting the namespace never waits for the operator"
    );
    let since = Instant::now();
    wait_for("6 calls at concurrency 1", TIMEOUT, || async {
        let n = hook
            .calls_of("mgr")
            .iter()
            .filter(|c| c.start > since)
            .count();
        if n >= 6 { Ok(()) } else { Err(format!("{n}")) }
    })
    .await
    .unwrap();
    assert_eq!(hook.peak("mgr"), 1, "concurrency 1: one call at a time");

    // concurrency 1 -> 4.
    let updated = Instant::now();
    kubectl_ok(&[
        "-n",
        &ns,
        "patch",
        "mc",
        "mgr",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/workers/0/concurrency", "value": 4}]"#,
    ]);
    hook.reset_peak("mgr");
    let generation = api.get("mgr").await.unwrap().metadata.generation.unwrap();
    assert_eq!(Some(generation), mc.metadata.generation.map(|g| g + 1));
    let mc = wait_for("status follows generation 2", TIMEOUT, || async {
        let mc = api.get("mgr").await.map_err(|e| e.to_string())?;
        let s = mc.status.clone().unwrap_or_default();
        let ready = condition(&mc, "Ready");
        let ok = s.observed_generation == Some(generation)
            && s.workers.first().map(|w| (w.concurrency, w.running)) == Some((4, 4))
            && ready
                .is_some_and(|c| c.status == "True" && c.observed_generation == Some(generation));
        if ok { Ok(mc) } else { Err(format!("{s:?}")) }
    })
    .await
    .unwrap();
    eprintln!(
        "[timing] concurrency 1 -> 4: status at generation {generation} with 4/4 workers after {:?}",
        updated.elapsed()
    );
    assert_eq!(
        mc.status.as_ref().unwrap().workers_summary.as_deref(),
        Some("4/4")
    );
    wait_for("4 hook calls in flight at once", TIMEOUT, || async {
        let p = hook.peak("mgr");
        if p >= 4 {
            Ok(())
        } else {
            Err(format!("peak {p}"))
        }
    })
    .await
    .unwrap();
    eprintln!(
        "[timing] 4 concurrent hook calls {:?} after the update",
        updated.elapsed()
    );
    assert_eq!(hook.peak("mgr"), 4, "never more than concurrency");

    // Delete: the object goes at once (no finalizer of ours), the sweep stops the manager
    // (workers first, then the Lease is released), no more calls after that.
    let deleted = Instant::now();
    kubectl_ok(&["-n", &ns, "delete", "mc", "mgr", "--wait=false"]);
    wait_for("ManagerConfig gone", TIMEOUT, || async {
        match api.get_opt("mgr").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(mc) => Err(format!(
                "deletionTimestamp {:?}, finalizers {:?}",
                mc.metadata.deletion_timestamp,
                mc.finalizers()
            )),
        }
    })
    .await
    .unwrap();
    eprintln!("[timing] delete -> object gone in {:?}", deleted.elapsed());
    let leases = Api::<Lease>::namespaced(client.clone(), &ns);
    wait_for("Lease released", TIMEOUT, || async {
        let lease = leases.get_opt("mgr").await.map_err(|e| e.to_string())?;
        let holder = lease.and_then(|l| l.spec).and_then(|s| s.holder_identity);
        if holder.as_deref().is_none_or(str::is_empty) {
            Ok(())
        } else {
            Err(format!("holder {holder:?}"))
        }
    })
    .await
    .unwrap();
    let gone = Instant::now();
    eprintln!(
        "[timing] delete -> manager stopped and Lease released in {:?}",
        deleted.elapsed()
    );
    // Negative check, bounded: no call starts after the Lease was released.
    let watch_until = gone + Duration::from_secs(4);
    while Instant::now() < watch_until {
        let late: Vec<Call> = hook
            .calls_of("mgr")
            .into_iter()
            .filter(|c| c.start > gone)
            .collect();
        assert!(
            late.is_empty(),
            "hook calls after the Lease was released: {late:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = hook.calls_of("mgr").iter().map(|c| c.start).max().unwrap();
    eprintln!(
        "last hook call started {:?} before the object was gone",
        gone.saturating_duration_since(last)
    );
    assert!(
        hook.calls_of("mgr").iter().all(|c| c.end.is_some()),
        "in-flight calls finished"
    );
    // Nothing left running: no live manager task, no manager in any state, no reconcile.
    wait_metric(&op, "manager_operator_tasks", &[], |v| v == 0.0).await;
    let text = op.metrics_text().await;
    let managers: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("manager_operator_managers{") && !l.ends_with(" 0"))
        .collect();
    assert!(managers.is_empty(), "managers left: {managers:?}");
    let active = prom::value(
        &text,
        "manager_operator_workers_active",
        &[("namespace", &ns), ("name", "mgr")],
    );
    assert!(active.is_none_or(|v| v == 0.0), "workers_active {active:?}");
    for name in ["manager_operator_manager_ready", "manager_operator_leader"] {
        assert_eq!(
            prom::value(&text, name, &[("namespace", &ns), ("name", "mgr")]),
            None,
            "{name} series removed after deletion"
        );
    }
    assert_eq!(op.healthz().await, 200);
}

// ---------------------------------------------------------------------------------------------
// 5. SIGTERM: the leader stops gracefully, releases the lease and exits 0.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_and_exits_zero() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "op-term").await;
    rbac::service_account(&ns, SA);
    rbac::grant_watch(&ns, SA, "configmaps");
    rbac::create_configmap(&client, &ns, "tick", &[("app", "term")]).await;
    let hook = RecordingHook::start().await;
    let mut ops = [
        support::operator()
            .identity(&format!("{ns}-op-0"))
            .namespace(&ns)
            .start()
            .await,
        support::operator()
            .identity(&format!("{ns}-op-1"))
            .namespace(&ns)
            .start()
            .await,
    ];
    config(
        &ns,
        "term",
        SA,
        None,
        worker("v1", "ConfigMap", "app=term", &hook.url).resync("1s"),
    )
    .apply();
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    wait_ready_cond(&api, "term", "True", "Running", TIMEOUT).await;
    let ids: Vec<String> = ops.iter().map(|o| o.identity().to_string()).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let leader = wait_agreed_leader(&client, &ns, "term", &id_refs).await;
    let other = ids.iter().find(|i| **i != leader).unwrap().clone();
    hook.wait_call_of("a call from the leader", "term", Instant::now(), |c| {
        c.holder == leader
    })
    .await;

    let idx = ops.iter().position(|o| o.identity() == leader).unwrap();
    let sent = Instant::now();
    ops[idx].sigterm();
    let released = wait_for("Lease released by the leader", TIMEOUT, || async {
        match lease_holder(&client, &ns, "term").await {
            Some(h) if h == leader => Err(format!("still held by {h}")),
            h => Ok(h),
        }
    })
    .await
    .unwrap();
    let release_time = sent.elapsed();
    let status = ops[idx].wait_exit(TIMEOUT).await;
    let exit_time = sent.elapsed();
    eprintln!(
        "[timing] SIGTERM -> Lease no longer held by the leader after {release_time:?} \
         (holder now {released:?}); process exited {status} after {exit_time:?}"
    );
    assert!(status.success(), "graceful exit code 0: {status}");
    assert!(
        released.as_deref().is_none_or(|h| h == other),
        "released, or taken by the other replica: {released:?}"
    );
    assert!(
        release_time <= Duration::from_secs(1),
        "the lease is released at once, not left to expire: {release_time:?}"
    );
    let log = ops[idx].log_text();
    assert!(log.contains("SIGTERM"), "logs the signal");
    let first = hook
        .wait_call_of("a call from the other replica", "term", sent, |c| {
            c.holder == other
        })
        .await;
    eprintln!(
        "[timing] SIGTERM -> first hook call from {other} after {:?} (no lease expiry wait)",
        first.start - sent
    );
    assert!(
        first.start - sent < LEASE_DURATION,
        "a released lease is taken over before it could have expired"
    );
    wait_agreed_leader(&client, &ns, "term", &[other.as_str()]).await;
    assert_one_holder_at_a_time(&hook.calls_of("term"));
}

// ---------------------------------------------------------------------------------------------
// 5. Many managers, many replicas (docs/placement.md): one config per Lease, placement, join, leave,
// crash.

/// The Lease holder's full identity (`<replica>/<config uid>`).
async fn lease_holder_full(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_configs_on_one_lease_the_second_gets_lease_in_use() {
    let fx = Fixture::new("op-inuse").await;
    let first = fx
        .hook
        .wait_call_of("a call of good", "good", Instant::now() - TIMEOUT, |_| true)
        .await;
    let good_uid = fx.api.get("good").await.unwrap().uid().unwrap();
    let holder = lease_holder_full(&fx.client, &fx.ns, "good").await;
    assert_eq!(
        holder,
        Some(format!("{}/{good_uid}", fx.op.identity())),
        "the holder names the manager, not only the replica"
    );
    // `bad` names good's Lease (the webhook is off: the runtime must refuse it).
    let bad = config(
        &fx.ns,
        "bad",
        SA,
        None,
        worker("v1", "ConfigMap", "app=good", &fx.hook.url),
    )
    .lease_name("good");
    fx.expect_failure(&bad, "LeaseInUse").await;
    let mc = fx.api.get("bad").await.unwrap();
    let msg = condition(&mc, "Ready").unwrap().message.clone();
    let expected = format!(
        "Lease {0}/good is already used by ManagerConfig {0}/good",
        fx.ns
    );
    assert!(msg.contains(&expected), "{msg}");
    // Flapping the second config never touches the first one's term.
    for resync in ["30s", "40s"] {
        config(
            &fx.ns,
            "bad",
            SA,
            None,
            worker("v1", "ConfigMap", "app=good", &fx.hook.url).resync(resync),
        )
        .lease_name("good")
        .apply();
        let api = fx.api.clone();
        wait_for(
            "bad refused again at its new generation",
            TIMEOUT,
            || async {
                let mc = api.get("bad").await.map_err(|e| e.to_string())?;
                let st = mc.status.clone().unwrap_or_default();
                match condition(&mc, "Ready") {
                    Some(c)
                        if c.reason == "LeaseInUse"
                            && st.observed_generation == mc.metadata.generation =>
                    {
                        Ok(())
                    }
                    _ => Err(describe(&mc)),
                }
            },
        )
        .await
        .unwrap();
    }
    assert!(fx.hook.calls_of("bad").is_empty(), "bad never dispatched");
    let lease = Api::<Lease>::namespaced(fx.client.clone(), &fx.ns)
        .get("good")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(
        i64::from(lease.lease_transitions.unwrap_or(0)),
        first.token,
        "good's term and token are untouched"
    );
    assert_eq!(
        lease.holder_identity,
        Some(format!("{}/{good_uid}", fx.op.identity()))
    );

    // The owner goes away: the second config starts by itself, with a newer token.
    let deleted = Instant::now();
    kubectl_ok(&[
        "-n",
        &fx.ns,
        "delete",
        "managerconfig",
        "good",
        "--wait=true",
    ]);
    let (mc, _) = wait_ready_cond(&fx.api, "bad", "True", "Running", TIMEOUT).await;
    eprintln!(
        "[timing] LeaseInUse healed {:?} after the owner's deletion",
        deleted.elapsed()
    );
    let (note, _) = wait_event(&fx.client, &fx.ns, "bad", "Normal", "Recovered", SURFACE).await;
    assert!(note.contains("LeaseInUse"), "{note}");
    let call = fx
        .hook
        .wait_call_of("a call of bad", "bad", deleted, |_| true)
        .await;
    assert!(call.token > first.token, "token moved forward");
    assert_eq!(
        lease_holder_full(&fx.client, &fx.ns, "good").await,
        Some(format!("{}/{}", fx.op.identity(), mc.uid().unwrap()))
    );
}

/// Waits until every config in `names` is Ready and led by the replica the placement
/// computation picks over `members` (the same function every replica runs).
async fn wait_placed(api: &Api<ManagerConfig>, ns: &str, names: &[String], members: &[String]) {
    let keys: Vec<String> = names.iter().map(|n| format!("{ns}/{n}")).collect();
    let want = manager_operator::placement::ring::assign(members, &keys);
    wait_for(
        &format!("configs placed over {members:?}"),
        Duration::from_secs(120),
        || async {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut wrong = Vec::new();
            for n in names {
                let mc = list.items.iter().find(|m| &m.name_any() == n);
                let leader = mc
                    .and_then(|m| m.status.as_ref())
                    .and_then(|s| s.leader.clone());
                let ready = mc
                    .and_then(|m| condition(m, "Ready"))
                    .is_some_and(|c| c.status == "True");
                let expected = &want[&format!("{ns}/{n}")][0];
                if !ready || leader.as_deref() != Some(expected.as_str()) {
                    wrong.push(format!(
                        "{n}: leader {leader:?} ready {ready}, want {expected}"
                    ));
                }
            }
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} misplaced: {:?}",
                    wrong.len(),
                    &wrong[..wrong.len().min(4)]
                ))
            }
        },
    )
    .await
    .unwrap();
}

fn sum_metric(ops: &[&Operator], texts: &[String], name: &str, labels: &[(&str, &str)]) -> f64 {
    let _ = ops;
    texts
        .iter()
        .filter_map(|t| prom::value(t, name, labels))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_balances_on_start_join_leave_and_crash() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "op-place").await;
    rbac::service_account(&ns, SA);
    rbac::grant_watch(&ns, SA, "configmaps");
    rbac::create_configmap(&client, &ns, "tick", &[("app", "pl")]).await;
    let hook = RecordingHook::start().await;
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    let id = |i: usize| format!("{ns}-r{i}");
    let mut ops = vec![
        support::operator()
            .identity(&id(0))
            .namespace(&ns)
            .start()
            .await,
        support::operator()
            .identity(&id(1))
            .namespace(&ns)
            .start()
            .await,
    ];
    let names: Vec<String> = (0..16).map(|i| format!("c{i:02}")).collect();
    // All at once (one multi-document apply): managers subscribe to their rank while
    // placement recomputes, the case where a config once kept an uncapped rank.
    let docs: Vec<String> = names
        .iter()
        .map(|n| {
            config(
                &ns,
                n,
                SA,
                None,
                worker("v1", "ConfigMap", "app=pl", &hook.url).resync("1s"),
            )
            .to_json()
        })
        .collect();
    apply_yaml(&docs.join("\n---\n"));
    let t = Instant::now();
    wait_placed(&api, &ns, &names, &[id(0), id(1)]).await;
    eprintln!(
        "[timing] 16 configs placed over 2 replicas in {:?}",
        t.elapsed()
    );

    // Join: the third replica gets exactly its share, by graceful handovers.
    let joined = Instant::now();
    ops.push(
        support::operator()
            .identity(&id(2))
            .namespace(&ns)
            .start()
            .await,
    );
    wait_placed(&api, &ns, &names, &[id(0), id(1), id(2)]).await;
    eprintln!(
        "[timing] rebalanced onto the joining replica in {:?}",
        joined.elapsed()
    );
    let keys: Vec<String> = names.iter().map(|n| format!("{ns}/{n}")).collect();
    let before = manager_operator::placement::ring::assign(&[id(0), id(1)], &keys);
    let after = manager_operator::placement::ring::assign(&[id(0), id(1), id(2)], &keys);
    let moved = keys
        .iter()
        .filter(|k| before[*k][0] != after[*k][0])
        .count();
    let mut texts = Vec::new();
    for op in &ops {
        texts.push(op.metrics_text().await);
    }
    let refs: Vec<&Operator> = ops.iter().collect();
    let handovers = sum_metric(
        &refs,
        &texts,
        "manager_operator_handovers_total",
        &[("reason", "rebalance")],
    );
    assert!(
        handovers >= moved as f64,
        "{moved} configs moved but only {handovers} handovers counted"
    );
    for t in &texts {
        assert_eq!(
            prom::value(t, "manager_operator_replicas_seen", &[]),
            Some(3.0)
        );
    }
    let preferred = sum_metric(&refs, &texts, "manager_operator_managers_preferred", &[]);
    assert_eq!(preferred, 16.0, "every config has one preferred replica");

    // Leave (SIGTERM): its configs move at once by release.
    let left = Instant::now();
    ops[0].sigterm();
    wait_placed(&api, &ns, &names, &[id(1), id(2)]).await;
    eprintln!(
        "[timing] SIGTERM: all configs Ready on the survivors in {:?}",
        left.elapsed()
    );
    let status = ops[0].wait_exit(TIMEOUT).await;
    assert!(status.success(), "SIGTERM exit: {status:?}");

    // Crash (kill -9): its configs move by expiry.
    let crashed = Instant::now();
    ops[1].kill9();
    wait_placed(&api, &ns, &names, &[id(2)]).await;
    eprintln!(
        "[timing] kill -9: all configs Ready on the survivor in {:?}",
        crashed.elapsed()
    );

    // Never two leaders of one config, tokens only forward.
    let last = Instant::now();
    for n in &names {
        hook.wait_call_of("a call after the crash", n, crashed, |c| c.holder == id(2))
            .await;
        assert_one_holder_at_a_time(&hook.calls_of(n));
    }
    eprintln!(
        "[check] one holder at a time for 16 configs (checked in {:?})",
        last.elapsed()
    );
}

/// `samples/quickstart/` brings its own ServiceAccount and RBAC: applied as the README says into
/// an empty namespace, it ends Ready by itself (its hook does not exist: Degraded, not broken).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_sample_ends_ready_by_itself() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "quickstart").await;
    let _op = support::operator().namespace(&ns).start().await;
    let dir = support::repo_root().join("samples/quickstart");
    kubectl_ok(&["apply", "-n", &ns, "-f", dir.to_str().unwrap()]);
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    let (mc, took) = wait_ready_cond(&api, "quickstart", "True", "Running", TIMEOUT).await;
    eprintln!("quickstart Ready after {took:?}: {}", describe(&mc));
    assert_eq!(mc.spec.service_account_name, "quickstart");
}

/// A namespace that holds a ManagerConfig is deleted after the operator is gone (uninstalled,
/// scaled to zero): nothing of ours holds it `Terminating`. And a config that an earlier
/// version left with its finalizer gets it removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_never_waits_for_the_operator() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "ns-delete").await;
    rbac::service_account(&ns, SA);
    rbac::grant_watch(&ns, SA, "configmaps");
    let hook = RecordingHook::start().await;
    // A config as an earlier version left it: with the old finalizer.
    let legacy = format!(
        "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\nmetadata: {{name: legacy, namespace: {ns}, finalizers: [{FINALIZER}]}}\n\
         spec:\n  serviceAccountName: {SA}\n  workers:\n  - {{name: w, watch: {{apiVersion: v1, kind: ConfigMap}}, hook: {{url: '{}'}}}}\n",
        hook.url
    );
    apply_yaml(&legacy);
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    let op = support::operator().namespace(&ns).start().await;
    wait_ready_cond(&api, "legacy", "True", "Running", TIMEOUT).await;
    wait_for("the old finalizer removed", TIMEOUT, || async {
        let mc = api.get("legacy").await.map_err(|e| e.to_string())?;
        if mc.finalizers().is_empty() {
            Ok(())
        } else {
            Err(format!("{:?}", mc.finalizers()))
        }
    })
    .await
    .unwrap();
    drop(op);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let t = Instant::now();
    namespaces.delete(&ns, &Default::default()).await.unwrap();
    wait_for(
        "the namespace gone with no operator running",
        Duration::from_secs(120),
        || async {
            match namespaces.get_opt(&ns).await {
                Ok(None) => Ok(()),
                Ok(Some(n)) => Err(format!("{:?}", n.status.and_then(|s| s.conditions))),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await
    .unwrap();
    eprintln!(
        "namespace deleted in {:?} with no operator running",
        t.elapsed()
    );
}
