//! `manager-operator check` agrees with the API server: the same documents, valid and invalid
//! edge cases (the CRD's maxLength, patterns, name syntax, control characters, CEL rules), go
//! through `check` and through `kubectl apply --dry-run=server` on the real control plane, and
//! both must give the same verdict for each.
//!
//! No admission webhook is registered here: the server side is the CRD's own schema and CEL
//! rules plus the API server's object-metadata rules, exactly what `check` must not be more
//! lenient than. Hook URLs use cluster-style host names the default hook policy allows, so the
//! policy (which the server does not know without the webhook) never decides a verdict.

mod support;

use std::process::Command;

/// A ManagerConfig document named `name` with one worker; `spec_extra` lines go under `spec:`,
/// `worker_extra` into the worker's flow mapping.
fn doc(name: &str, spec_extra: &str, worker_extra: &str, url: &str) -> String {
    format!(
        "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\nmetadata:\n  name: {name}\n\
         spec:\n{spec_extra}  workers:\n  - {{name: w, watch: {{apiVersion: v1, kind: ConfigMap}}, \
         hook: {{url: {url}}}{worker_extra}}}\n"
    )
}

/// A DNS-1123 subdomain-shaped name of `len` characters (labels of at most 63).
fn long_name(len: usize) -> String {
    let label = "a".repeat(63);
    let head = [label.as_str(); 3].join(".");
    let name = format!("{head}.{}", "a".repeat(len - head.len() - 1));
    assert_eq!(name.len(), len);
    name
}

fn documents() -> Vec<(&'static str, String)> {
    const URL: &str = "'http://inventory.team-a.svc:8080/sync'";
    // A syntactically valid selector of exactly `len` characters: "a in (b,b,...,b)".
    let selector = |len: usize| {
        let values = "b,".repeat((len - 8) / 2);
        let s = format!("a in ({values}b)");
        assert_eq!(s.len(), len);
        s
    };
    // An http URL of exactly `len` characters.
    let url_of = |len: usize| {
        let head = "http://inventory.team-a.svc/";
        format!("'{head}{}'", "a".repeat(len - head.len()))
    };
    let many_workers: String = (0..33)
        .map(|i| {
            format!(
                "  - {{name: w{i}, watch: {{apiVersion: v1, kind: ConfigMap}}, hook: {{url: {URL}}}}}\n"
            )
        })
        .collect();
    vec![
        ("valid-minimal", doc("valid-minimal", "", "", URL)),
        (
            "valid-full",
            doc(
                "valid-full",
                "  serviceAccountName: inventory-sync\n  leaderElection: {leaseName: inv.lease, \
                 leaseDuration: 15s, renewDeadline: 10s, retryPeriod: 2s, releaseOnCancel: true}\n  \
                 startupTimeout: 1m\n  gracefulShutdownTimeout: 30s\n",
                ", concurrency: 64, resyncPeriod: 24h",
                URL,
            ),
        ),
        (
            "valid-selector-1024",
            doc("valid-selector-1024", "", "", URL).replace(
                "kind: ConfigMap}",
                &format!("kind: ConfigMap, labelSelector: '{}'}}", selector(1024)),
            ),
        ),
        (
            "invalid-selector-1026",
            doc("invalid-selector-1026", "", "", URL).replace(
                "kind: ConfigMap}",
                &format!("kind: ConfigMap, labelSelector: '{}'}}", selector(1026)),
            ),
        ),
        (
            "valid-url-2048",
            doc("valid-url-2048", "", "", &url_of(2048)),
        ),
        (
            "invalid-url-2049",
            doc("invalid-url-2049", "", "", &url_of(2049)),
        ),
        (
            "invalid-plus-duration",
            doc("invalid-plus-duration", "  startupTimeout: +5s\n", "", URL),
        ),
        (
            "invalid-plus-hook-timeout",
            doc("invalid-plus-hook-timeout", "", "", URL)
                .replace("hook: {url: ", "hook: {timeout: '+2s', url: "),
        ),
        ("invalid-name-syntax", doc("Bad_Name", "", "", URL)),
        ("invalid-name-254", doc(&long_name(254), "", "", URL)),
        ("valid-name-253", doc(&long_name(253), "", "", URL)),
        (
            "invalid-url-control-char",
            doc(
                "invalid-url-control-char",
                "",
                "",
                "\"http://inventory.team-a.svc/a\\x01b\"",
            ),
        ),
        (
            "invalid-url-tab",
            doc(
                "invalid-url-tab",
                "",
                "",
                "\"http://inventory.team-a.svc/a\\tb\"",
            ),
        ),
        (
            "invalid-concurrency-65",
            doc("invalid-concurrency-65", "", ", concurrency: 65", URL),
        ),
        (
            "invalid-renew-not-below-lease",
            doc(
                "invalid-renew-not-below-lease",
                "  leaderElection: {leaseDuration: 10s, renewDeadline: 10s}\n",
                "",
                URL,
            ),
        ),
        (
            "invalid-lease-not-whole-seconds",
            doc(
                "invalid-lease-not-whole-seconds",
                "  leaderElection: {leaseDuration: 1500ms, renewDeadline: 1s, retryPeriod: 200ms}\n",
                "",
                URL,
            ),
        ),
        (
            "invalid-unknown-field",
            doc("invalid-unknown-field", "  extra: 1\n", "", URL),
        ),
        (
            "invalid-33-workers",
            format!(
                "apiVersion: manager-operator.io/v1alpha1\nkind: ManagerConfig\n\
                 metadata: {{name: invalid-33-workers}}\nspec:\n  workers:\n{many_workers}"
            ),
        ),
        (
            "invalid-worker-name",
            doc("invalid-worker-name", "", "", URL).replace("name: w,", "name: W,"),
        ),
        (
            "invalid-sa-name",
            doc(
                "invalid-sa-name",
                "  serviceAccountName: Robot_1\n",
                "",
                URL,
            ),
        ),
    ]
}

#[tokio::test]
async fn check_and_the_api_server_agree() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "check").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut disagreements = Vec::new();
    let docs = documents();
    let (mut valid, mut invalid) = (0, 0);
    for (label, text) in &docs {
        let file = dir.path().join(format!("{label}.yaml"));
        std::fs::write(&file, text).expect("writing the document");
        let path = file.to_str().expect("utf-8 path");
        // MO_CHECK_BIN compares another build (e.g. an older release) with the API server.
        let bin = std::env::var("MO_CHECK_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_manager-operator").to_string());
        let check = Command::new(bin)
            .args(["check", "-n", &ns, "-f", path])
            .output()
            .expect("running manager-operator check");
        let server = support::kubectl(&["apply", "--dry-run=server", "-n", &ns, "-f", path]);
        let check_ok = check.status.code() == Some(0);
        assert!(
            matches!(check.status.code(), Some(0 | 1)),
            "{label}: check could not read it: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let server_ok = server.status.success();
        let check_says = String::from_utf8_lossy(&check.stdout).trim().to_string();
        let server_says = String::from_utf8_lossy(&server.stderr).trim().to_string();
        eprintln!(
            "[check vs server] {label:32} check={} server={}",
            if check_ok { "valid" } else { "invalid" },
            if server_ok { "valid" } else { "invalid" },
        );
        if check_ok != server_ok {
            disagreements.push(format!(
                "{label}: check {} ({check_says}), API server {} ({server_says})",
                if check_ok { "valid" } else { "invalid" },
                if server_ok { "valid" } else { "invalid" },
            ));
        }
        if label.starts_with("valid") {
            valid += 1;
            assert!(server_ok, "{label} is meant to be valid: {server_says}");
        } else {
            invalid += 1;
            assert!(!server_ok, "{label} is meant to be invalid");
        }
    }
    eprintln!(
        "[check vs server] {} documents ({valid} valid, {invalid} invalid), {} disagreements",
        docs.len(),
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "check and the API server disagree:\n{}",
        disagreements.join("\n")
    );
}
