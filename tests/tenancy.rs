//! Tenant isolation (docs/security.md) against the real control plane and the operator binary
//! (`manager-operator run`, webhook off: these are the runtime guards that hold when admission
//! was bypassed).
//!
//! * A config naming a kube-system Lease (a `kube-controller-manager`-like Lease held by
//!   "someone", without the operator's label) is refused with `LeaseForbidden` while its
//!   service account may not use Leases in kube-system, and the Lease is untouched
//!   (resourceVersion unchanged).
//! * The same kind of Lease in the config's own namespace is refused with `LeaseNotOwned`
//!   without `spec.leaderElection.adoptExistingLease`, untouched too.
//! * With the opt-in and the service account's rights, the kube-system Lease is adopted once
//!   its holder lets it expire (and gets the operator's label).
//! * `--max-configs-per-namespace` and the timing floor refuse configs with `LimitExceeded`.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use manager_operator::api::ManagerConfig;
use support::{ManagerConfigBuilder, Operator, TIMEOUT, WorkerBuilder, kubectl_ok, rbac, wait_for};

const SA: &str = "worker";

/// `manager-operator run` for `ns` (placement off) with `extra` flags; not waited for (the
/// tests wait for the configs' conditions).
fn start_operator(ns: &str, extra: &[&str]) -> Operator {
    support::operator()
        .namespace(ns)
        .arg("--disable-placement")
        .args(extra)
        .spawn()
}

/// A config with one ConfigMap worker calling `hook` (timeout 1s); leaderElection as set by
/// the caller on top of the kit's fast defaults (3s / 2s / 500ms).
fn config(ns: &str, name: &str, hook: &str) -> ManagerConfigBuilder {
    ManagerConfigBuilder::new(ns, name)
        .service_account(SA)
        .worker(WorkerBuilder::new("cms").hook(hook).timeout("1s"))
}

fn ready(mc: &ManagerConfig) -> Option<&Condition> {
    mc.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
}

async fn wait_reason(
    api: &Api<ManagerConfig>,
    name: &str,
    reason: &str,
    op: &Operator,
) -> (Condition, Duration) {
    let t = Instant::now();
    let c = wait_for(
        &format!("{name}: Ready reason {reason}"),
        TIMEOUT,
        || async {
            let mc = api.get(name).await.map_err(|e| e.to_string())?;
            match ready(&mc) {
                Some(c) if c.reason == reason => Ok(c.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- operator log ---\n{}", op.tail()));
    (c, t.elapsed())
}

/// A Lease held by "someone" (renewed just now), without the operator's label.
async fn foreign_lease(client: &kube::Client, ns: &str, name: &str) -> Lease {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("someone".into()),
            lease_duration_seconds: Some(3),
            acquire_time: Some(MicroTime(Timestamp::now())),
            renew_time: Some(MicroTime(Timestamp::now())),
            lease_transitions: Some(4),
            ..Default::default()
        }),
    };
    Api::<Lease>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_or_else(|e| panic!("creating Lease {ns}/{name}: {e}"))
}

async fn lease(client: &kube::Client, ns: &str, name: &str) -> Lease {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_leases_are_refused_untouched_and_adopted_only_with_opt_in_and_rights() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "ten-lease").await;
    rbac::service_account(&ns, SA);
    rbac::grant_watch(&ns, SA, "configmaps");
    let hook = format!("http://127.0.0.1:{}/sync", support::free_port());
    // A kube-controller-manager-like Lease in kube-system, and one in the tenant's namespace.
    let kcm = format!("kube-controller-manager-{ns}");
    let sys_before = foreign_lease(&client, "kube-system", &kcm).await;
    let own_before = foreign_lease(&client, &ns, "kube-controller-manager").await;
    let op = start_operator(&ns, &[]);
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);

    // 1. Cross-namespace, no rights for the service account: LeaseForbidden, Lease untouched.
    let steal_sys = config(&ns, "steal-sys", &hook)
        .lease_namespace(Some("kube-system"))
        .lease_name(&kcm);
    steal_sys.apply();
    let (c, took) = wait_reason(&api, "steal-sys", "LeaseForbidden", &op).await;
    eprintln!("[timing] LeaseForbidden after {took:?}: {}", c.message);
    assert!(
        c.message
            .contains(&format!("system:serviceaccount:{ns}:{SA} may not")),
        "{}",
        c.message
    );
    // 2. Own namespace, foreign Lease, no opt-in: LeaseNotOwned, Lease untouched.
    config(&ns, "steal-own", &hook)
        .lease_name("kube-controller-manager")
        .apply();
    let (c, took) = wait_reason(&api, "steal-own", "LeaseNotOwned", &op).await;
    eprintln!("[timing] LeaseNotOwned after {took:?}: {}", c.message);
    assert!(c.message.contains("adoptExistingLease"), "{}", c.message);
    // Both Leases expired long ago (3 s) and were retried with backoff: still untouched.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sys_now = lease(&client, "kube-system", &kcm).await;
    let own_now = lease(&client, &ns, "kube-controller-manager").await;
    assert_eq!(
        sys_now.metadata.resource_version, sys_before.metadata.resource_version,
        "kube-system Lease untouched"
    );
    assert_eq!(
        own_now.metadata.resource_version, own_before.metadata.resource_version,
        "own-namespace foreign Lease untouched"
    );
    for name in ["steal-sys", "steal-own"] {
        let mc = api.get(name).await.unwrap();
        assert_ne!(
            ready(&mc).map(|c| c.status.as_str()),
            Some("True"),
            "{name}"
        );
    }

    // 3. Opt-in alone is not enough across namespaces: still LeaseForbidden.
    steal_sys.adopt_existing_lease().apply();
    wait_reason(&api, "steal-sys", "LeaseForbidden", &op).await;
    assert_eq!(
        lease(&client, "kube-system", &kcm)
            .await
            .metadata
            .resource_version,
        sys_before.metadata.resource_version
    );
    // 4. Rights for the service account in kube-system (only on this Lease's namespace) plus
    //    the opt-in: adopted after expiry, and labelled as the operator's from then on.
    let role = format!("{ns}-leases");
    kubectl_ok(&[
        "-n",
        "kube-system",
        "create",
        "role",
        &role,
        "--verb=get,create,update",
        "--resource=leases.coordination.k8s.io",
    ]);
    kubectl_ok(&[
        "-n",
        "kube-system",
        "create",
        "rolebinding",
        &role,
        &format!("--role={role}"),
        &format!("--serviceaccount={ns}:{SA}"),
    ]);
    let granted = Instant::now();
    let adopted = wait_for("kube-system Lease adopted", TIMEOUT, || async {
        let l = lease(&client, "kube-system", &kcm).await;
        let holder = l
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if holder.starts_with(&format!("{ns}-op")) {
            Ok(l)
        } else {
            Err(holder)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- operator log ---\n{}", op.tail()));
    eprintln!(
        "[timing] kube-system Lease adopted {:?} after the grant (SAR cache TTL 10 s)",
        granted.elapsed()
    );
    assert_eq!(
        adopted
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/managed-by"))
            .map(String::as_str),
        Some("manager-operator")
    );
    assert_eq!(
        adopted.spec.as_ref().and_then(|s| s.lease_transitions),
        Some(5),
        "a takeover counts one transition"
    );
    // The own-namespace Lease is still untouched.
    assert_eq!(
        lease(&client, &ns, "kube-controller-manager")
            .await
            .metadata
            .resource_version,
        own_before.metadata.resource_version
    );
    drop(op);
    let _ = support::kubectl(&["-n", "kube-system", "delete", "lease", &kcm]);
    let _ = support::kubectl(&["-n", "kube-system", "delete", "role,rolebinding", &role]);
    let _ = support::kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_configs_with_limit_exceeded() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "ten-limit").await;
    rbac::service_account(&ns, SA);
    let hook = format!("http://127.0.0.1:{}/sync", support::free_port());
    let op = start_operator(
        &ns,
        &[
            "--max-configs-per-namespace",
            "2",
            "--min-retry-period",
            "1s",
        ],
    );
    let api: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    for name in ["a1", "a2", "a3"] {
        config(&ns, name, &hook).lease("3s", "2s", "1s").apply();
        // Creation order decides who is within the quota.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let (c, _) = wait_reason(&api, "a3", "LimitExceeded", &op).await;
    assert!(
        c.message.contains("--max-configs-per-namespace"),
        "{}",
        c.message
    );
    for name in ["a1", "a2"] {
        let mc = api.get(name).await.unwrap();
        assert_ne!(
            ready(&mc).map(|c| c.reason.as_str()),
            Some("LimitExceeded"),
            "{name}"
        );
    }
    // Deleting an older one makes room: a3 starts by itself.
    let freed = Instant::now();
    kubectl_ok(&["-n", &ns, "delete", "managerconfig", "a1"]);
    wait_for("a3 leaves LimitExceeded", TIMEOUT, || async {
        let mc = api.get("a3").await.map_err(|e| e.to_string())?;
        match ready(&mc) {
            Some(c) if c.reason != "LimitExceeded" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", op.tail()));
    eprintln!(
        "[timing] quota freed -> a3 started in {:?}",
        freed.elapsed()
    );
    // Below the timing floor.
    config(&ns, "a2", &hook).lease("3s", "2s", "500ms").apply();
    let (c, _) = wait_reason(&api, "a2", "LimitExceeded", &op).await;
    assert!(c.message.contains("--min-retry-period"), "{}", c.message);
    drop(op);
    let _ = support::kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}
