//! The ManagerConfig CRD on a real kube-apiserver: it installs and becomes Established, the valid
//! samples are accepted, the CEL rules reject bad leader-election timings naming the field,
//! `kubectl explain` shows the descriptions and `kubectl get mc` the printer columns.
//!
//! Needs the local control plane: run with `make test` (see tests/support/mod.rs).

mod support;

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use support::*;

fn mc_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("manager-operator.io", "v1alpha1", "ManagerConfig");
    ApiResource::from_gvk_with_plural(&gvk, "managerconfigs")
}

/// Sample files under samples/ (top level only), split into (valid, invalid-*).
fn samples() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let dir = repo_root().join("samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files.into_iter().partition(|p| {
        !p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("invalid-"))
    })
}

/// A ManagerConfig with one worker and the given `spec.leaderElection`.
fn mc_with_election(name: &str, election: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "manager-operator.io/v1alpha1",
        "kind": "ManagerConfig",
        "metadata": {"name": name},
        "spec": {
            "leaderElection": election,
            "workers": [{
                "name": "configmaps",
                "watch": {"apiVersion": "v1", "kind": "ConfigMap"},
                "hook": {"url": "http://hook.example.com:8080/sync"}
            }]
        }
    }))
    .expect("valid DynamicObject json")
}

/// Creates `obj`, expects a 422 Invalid from the API server, returns the whole error text
/// (message plus every cause's field and message).
async fn create_rejected(api: &Api<DynamicObject>, obj: &DynamicObject) -> String {
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => panic!("API server accepted an invalid ManagerConfig: {obj:?}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            let mut text = status.message.clone();
            for cause in status.details.iter().flat_map(|d| d.causes.iter()) {
                text.push_str(&format!("\n{}: {}", cause.field, cause.message));
            }
            text
        }
        Err(e) => panic!("unexpected error creating {obj:?}: {e}"),
    }
}

#[tokio::test]
async fn crd_installs_and_is_established() {
    ensure_crd();
    // Idempotent: a second install of the same file is fine.
    let file = repo_root().join("crds/managerconfig.yaml");
    kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=mo-tests",
        "-f",
        file.to_str().unwrap(),
    ]);

    let crds: Api<CustomResourceDefinition> = Api::all(admin_client().await);
    let crd = crds.get(CRD_NAME).await.expect("CRD exists");
    let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True"),
        "CRD not Established: {conditions:?}"
    );
    assert_eq!(crd.spec.names.short_names, Some(vec!["mc".to_string()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let version = &crd.spec.versions[0];
    assert!(
        version
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some()),
        "status subresource missing"
    );
}

#[tokio::test]
async fn valid_samples_are_accepted_by_server_side_apply() {
    ensure_crd();
    let client = admin_client().await;
    let ns = fresh_namespace(&client, "crd-samples").await;
    let (valid, _) = samples();
    assert!(
        valid.len() >= 3,
        "expected at least minimal, full, tight-timings: {valid:?}"
    );
    for file in &valid {
        kubectl_ok(&[
            "apply",
            "--server-side",
            "-n",
            &ns,
            "-f",
            file.to_str().unwrap(),
        ]);
    }
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &mc_resource());
    let names: Vec<String> = api
        .list(&Default::default())
        .await
        .expect("list ManagerConfigs")
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    assert_eq!(
        names.len(),
        valid.len(),
        "one object per valid sample: {names:?}"
    );

    // Schema defaults are applied by the API server.
    let minimal = api.get("minimal").await.expect("minimal sample exists");
    let le = &minimal.data["spec"]["leaderElection"];
    assert_eq!(le["leaseDuration"], "15s", "defaults: {le}");
    assert_eq!(le["renewDeadline"], "10s", "defaults: {le}");
    assert_eq!(le["retryPeriod"], "2s", "defaults: {le}");
    assert_eq!(minimal.data["spec"]["serviceAccountName"], "default");
}

#[tokio::test]
async fn invalid_samples_are_rejected_naming_the_field() {
    ensure_crd();
    let ns = fresh_namespace(&admin_client().await, "crd-invalid").await;
    let (_, invalid) = samples();
    assert!(!invalid.is_empty(), "no samples/invalid-*.yaml");
    for file in &invalid {
        let out = kubectl(&[
            "apply",
            "--server-side",
            "-n",
            &ns,
            "-f",
            file.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{} was accepted by the API server",
            file.display()
        );
        assert!(
            stderr.contains("is invalid") && stderr.contains("spec."),
            "{}: expected a validation error naming a spec field, got: {stderr}",
            file.display()
        );
        // The samples we know: every broken rule is reported, each naming its field.
        let name = file.file_name().unwrap().to_str().unwrap();
        let expected: &[&str] = match name {
            "invalid-lease-not-greater-than-renew.yaml" => &["spec.leaderElection.renewDeadline"],
            "invalid-renew-within-jitter.yaml" => &["spec.leaderElection.renewDeadline", "1.2"],
            "invalid-three-rules.yaml" => &[
                "spec.leaderElection.leaseDuration",
                "spec.leaderElection.renewDeadline",
                "spec.workers[0].concurrency",
            ],
            "invalid-zero-duration.yaml" => &[
                "spec.leaderElection.renewDeadline",
                "spec.workers[0].hook.timeout",
            ],
            _ => &[],
        };
        for want in expected {
            assert!(
                stderr.contains(want),
                "{name}: error lacks {want:?}: {stderr}"
            );
        }
    }
}

#[tokio::test]
async fn cel_rejects_lease_duration_not_greater_than_renew_deadline() {
    ensure_crd();
    let client = admin_client().await;
    let ns = fresh_namespace(&client, "crd-cel-lease").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &mc_resource());

    // The seed case.
    let text = create_rejected(
        &api,
        &mc_with_election(
            "seed",
            json!({"leaseDuration": "5s", "renewDeadline": "6s"}),
        ),
    )
    .await;
    assert!(text.contains("spec.leaderElection.renewDeadline"), "{text}");
    assert!(text.contains("leaseDuration"), "{text}");

    // Equal is not enough either.
    let text = create_rejected(
        &api,
        &mc_with_election(
            "equal",
            json!({"leaseDuration": "10s", "renewDeadline": "10s"}),
        ),
    )
    .await;
    assert!(text.contains("spec.leaderElection.renewDeadline"), "{text}");
}

#[tokio::test]
async fn cel_rejects_renew_deadline_within_retry_jitter() {
    ensure_crd();
    let client = admin_client().await;
    let ns = fresh_namespace(&client, "crd-cel-jitter").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &mc_resource());

    for (name, renew, retry) in [("same", "2s", "2s"), ("boundary", "2400ms", "2s")] {
        let text = create_rejected(
            &api,
            &mc_with_election(
                name,
                json!({"leaseDuration": "15s", "renewDeadline": renew, "retryPeriod": retry}),
            ),
        )
        .await;
        assert!(
            text.contains("spec.leaderElection.renewDeadline"),
            "{name}: {text}"
        );
        assert!(text.contains("retryPeriod"), "{name}: {text}");
    }

    // Just above the boundary is accepted: 2401ms > 1.2 × 2s.
    api.create(
        &PostParams::default(),
        &mc_with_election(
            "just-above",
            json!({"leaseDuration": "15s", "renewDeadline": "2401ms", "retryPeriod": "2s"}),
        ),
    )
    .await
    .expect("renewDeadline just above 1.2 × retryPeriod is valid");
}

#[tokio::test]
async fn cel_rejects_zero_durations_naming_the_field() {
    ensure_crd();
    let client = admin_client().await;
    let ns = fresh_namespace(&client, "crd-cel-zero").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &mc_resource());

    for field in ["leaseDuration", "renewDeadline", "retryPeriod"] {
        let name = format!("zero-{}", field.to_lowercase());
        let text = create_rejected(&api, &mc_with_election(&name, json!({ field: "0s" }))).await;
        assert!(
            text.contains(&format!("spec.leaderElection.{field}")),
            "{field}=0s: error does not name the field: {text}"
        );
    }

    // A zero hook timeout, too.
    let mut obj = mc_with_election("zero-hook-timeout", json!({}));
    obj.data["spec"]["workers"][0]["hook"]["timeout"] = json!("0s");
    let text = create_rejected(&api, &obj).await;
    assert!(text.contains("hook.timeout"), "{text}");
}

#[tokio::test]
async fn unprivileged_user_cannot_create_managerconfigs() {
    ensure_crd();
    let ns = fresh_namespace(&admin_client().await, "crd-rbac").await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(unprivileged_client().await, &ns, &mc_resource());
    match api
        .create(&PostParams::default(), &mc_with_election("x", json!({})))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("expected 403 Forbidden for mo-unprivileged, got {other:?}"),
    }
}

#[tokio::test]
async fn kubectl_explain_shows_field_descriptions() {
    ensure_crd();
    // Discovery/OpenAPI publication of a new CRD lags Established a little: poll.
    let out = wait_for("kubectl explain to know the field", TIMEOUT, || async {
        let out = kubectl(&["explain", "managerconfig.spec.leaderElection.renewDeadline"]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await
    .unwrap();
    assert!(out.contains("FIELD: renewDeadline"), "{out}");
    assert!(out.contains("DESCRIPTION"), "{out}");
    // The description explains the rule.
    assert!(out.contains("leaseDuration"), "{out}");
    assert!(out.contains("retryPeriod"), "{out}");

    // The kind's own description, not the derive macro's placeholder.
    let out = kubectl_ok(&["explain", "managerconfig"]);
    assert!(out.contains("A leader-elected manager"), "{out}");
    assert!(!out.contains("Auto-generated"), "{out}");

    let out = kubectl_ok(&["explain", "managerconfig.spec"]);
    for field in [
        "leaderElection",
        "workers",
        "serviceAccountName",
        "startupTimeout",
    ] {
        assert!(out.contains(field), "explain spec lacks {field}: {out}");
    }
}

#[tokio::test]
async fn kubectl_get_shows_printer_columns() {
    ensure_crd();
    let ns = fresh_namespace(&admin_client().await, "crd-columns").await;
    let minimal = repo_root().join("samples/minimal.yaml");
    kubectl_ok(&[
        "apply",
        "--server-side",
        "-n",
        &ns,
        "-f",
        minimal.to_str().unwrap(),
    ]);

    let out = kubectl_ok(&["get", "mc", "-n", &ns]);
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "REASON", "LEADER", "WORKERS", "AGE"],
        "kubectl get mc:\n{out}"
    );
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("minimal ")),
        "{out}"
    );
    // -o wide adds the Ready message (priority 1), as cert-manager's Certificates do.
    let wide = kubectl_ok(&["get", "mc", "-n", &ns, "-o", "wide"]);
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "READY", "REASON", "LEADER", "WORKERS", "AGE", "MESSAGE"
        ],
        "kubectl get mc -o wide:
{wide}"
    );
}
