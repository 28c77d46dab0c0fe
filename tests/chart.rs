//! The Helm chart, rendered with `helm template` and checked object by object (docs/design.md §7
//! item 9): pod security settings, RBAC with no wildcards and no permission beyond what the
//! operator uses, webhook configuration per mode, optional objects only when enabled, and the
//! chart's CRD equal to `crds/managerconfig.yaml`.
//!
//! Needs `helm`: from `MO_OBS_BIN_DIR`, else `hack/tools-observability.sh bindir` (which builds it
//! on first use and is instant afterwards). No cluster needed. The e2e suite (`e2e/e2e.sh`) runs
//! the operator under exactly this RBAC, which proves it is also enough.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_yaml::Value;

const RELEASE: &str = "mo";
const NAMESPACE: &str = "manager-operator";
const FULLNAME: &str = "mo-manager-operator";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/manager-operator")
}

fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let dir = match std::env::var_os("MO_OBS_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let out = Command::new(root().join("hack/tools-observability.sh"))
                    .arg("bindir")
                    .output()
                    .expect("run hack/tools-observability.sh");
                assert!(
                    out.status.success(),
                    "hack/tools-observability.sh failed (helm is needed to render the chart):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            }
        };
        let helm = dir.join("helm");
        assert!(helm.is_file(), "no helm at {}", helm.display());
        helm
    })
}

/// Renders the chart with the given value files (relative to e2e/values) and `--set`s.
/// The chart's objects, without the `helm test` hook (`--skip-tests`; see [`render_tests`]).
fn render(files: &[&str], sets: &[&str]) -> Vec<Value> {
    helm_template(files, sets, &["--skip-tests"])
}

/// Only the `helm test` hook's objects.
fn render_tests(sets: &[&str]) -> Vec<Value> {
    helm_template(&[], sets, &[])
        .into_iter()
        .filter(is_helm_test)
        .collect()
}

fn helm_template(files: &[&str], sets: &[&str], extra: &[&str]) -> Vec<Value> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE, "--include-crds"])
        .args(extra)
        .env("HELM_CACHE_HOME", tmp.path().join("cache"))
        .env("HELM_CONFIG_HOME", tmp.path().join("config"))
        .env("HELM_DATA_HOME", tmp.path().join("data"));
    for f in files {
        cmd.arg("-f")
            .arg(root().join("e2e/values").join(format!("{f}.yaml")));
    }
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm template");
    assert!(
        out.status.success(),
        "helm template {files:?} {sets:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 output");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` with these `--set`s must fail; returns its error output.
fn render_error(sets: &[&str]) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE])
        .env("HELM_CACHE_HOME", tmp.path().join("cache"))
        .env("HELM_CONFIG_HOME", tmp.path().join("config"))
        .env("HELM_DATA_HOME", tmp.path().join("data"));
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm template");
    assert!(!out.status.success(), "helm template {sets:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every value set the e2e checks use.
fn value_sets() -> Vec<(&'static str, Vec<Value>)> {
    vec![
        ("defaults", render(&[], &[])),
        ("cert-manager", render(&["cert-manager"], &[])),
        ("cert-manager-issuer", render(&["cert-manager-issuer"], &[])),
        ("url-mode", render(&["url-mode"], &[])),
        ("monitoring", render(&["monitoring"], &[])),
        ("lease-flow-control", render(&["lease-flow-control"], &[])),
        ("network-policy", render(&["network-policy"], &[])),
    ]
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or_default()
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

fn of_kind<'a>(objs: &'a [Value], k: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| kind(o) == k).collect()
}

fn one<'a>(objs: &'a [Value], k: &str) -> &'a Value {
    let found = of_kind(objs, k);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {k}, found {}",
        found.len()
    );
    found[0]
}

fn strs(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().unwrap_or("<non-string>").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pod_security_settings_are_locked_down() {
    for (set, objs) in value_sets() {
        let dep = one(&objs, "Deployment");
        let pod = &dep["spec"]["template"]["spec"];
        let psc = &pod["securityContext"];
        assert_eq!(
            psc["runAsNonRoot"],
            Value::Bool(true),
            "{set}: pod runAsNonRoot"
        );
        assert_eq!(
            psc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{set}: pod seccomp"
        );
        for host in ["hostNetwork", "hostPID", "hostIPC"] {
            assert_ne!(pod[host], Value::Bool(true), "{set}: {host}");
        }
        for vol in pod["volumes"].as_sequence().into_iter().flatten() {
            assert!(
                vol.get("hostPath").is_none(),
                "{set}: hostPath volume {vol:?}"
            );
        }
        let containers = pod["containers"].as_sequence().expect("containers");
        assert_eq!(containers.len(), 1, "{set}: one container");
        for c in containers {
            let sc = &c["securityContext"];
            assert_eq!(
                sc["allowPrivilegeEscalation"],
                Value::Bool(false),
                "{set}: allowPrivilegeEscalation"
            );
            assert_eq!(
                sc["readOnlyRootFilesystem"],
                Value::Bool(true),
                "{set}: readOnlyRootFilesystem"
            );
            assert_eq!(
                sc["runAsNonRoot"],
                Value::Bool(true),
                "{set}: container runAsNonRoot"
            );
            assert_ne!(sc["privileged"], Value::Bool(true), "{set}: privileged");
            assert_eq!(
                strs(&sc["capabilities"]["drop"]),
                vec!["ALL"],
                "{set}: drop ALL capabilities"
            );
            assert!(
                sc["capabilities"].get("add").is_none(),
                "{set}: no added capabilities"
            );
            assert_eq!(
                sc["seccompProfile"]["type"].as_str(),
                Some("RuntimeDefault"),
                "{set}: container seccomp"
            );

            // Probes on the health port: /healthz for startup and liveness, /readyz for readiness.
            let health_port = c["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|p| p["name"].as_str() == Some("health"))
                .unwrap_or_else(|| panic!("{set}: a port named health"));
            assert_eq!(
                health_port["containerPort"].as_u64(),
                Some(8081),
                "{set}: health port"
            );
            for (probe, path) in [
                ("startupProbe", "/healthz"),
                ("livenessProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
            ] {
                let get = &c[probe]["httpGet"];
                assert_eq!(get["path"].as_str(), Some(path), "{set}: {probe} path");
                assert_eq!(get["port"].as_str(), Some("health"), "{set}: {probe} port");
            }
            // Resources: requests, and a memory limit.
            assert!(
                c["resources"]["requests"]["cpu"].is_string(),
                "{set}: cpu request"
            );
            assert!(
                c["resources"]["requests"]["memory"].is_string(),
                "{set}: memory request"
            );
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{set}: memory limit"
            );
            // Identity from the downward API.
            let args = strs(&c["args"]);
            assert_eq!(
                args.first().map(String::as_str),
                Some("run"),
                "{set}: `run` command"
            );
            assert!(
                args.contains(&"--identity=$(POD_NAME)".to_string()),
                "{set}: --identity=$(POD_NAME) in {args:?}"
            );
            let pod_name = c["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|e| e["name"].as_str() == Some("POD_NAME"))
                .unwrap_or_else(|| panic!("{set}: POD_NAME env"));
            assert_eq!(
                pod_name["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
                Some("metadata.name"),
                "{set}: POD_NAME from metadata.name"
            );
        }
        // Several replicas, spread over nodes.
        let replicas = dep["spec"]["replicas"].as_u64().expect("replicas");
        assert!(replicas >= 2, "{set}: at least 2 replicas");
        assert!(
            pod["affinity"]["podAntiAffinity"].is_mapping(),
            "{set}: pod anti-affinity"
        );
        let pdb = one(&objs, "PodDisruptionBudget");
        assert_eq!(
            pdb["spec"]["selector"], dep["spec"]["selector"],
            "{set}: PDB selects the operator pods"
        );
    }
    assert_eq!(
        render(&[], &[])
            .iter()
            .find(|o| kind(o) == "Deployment")
            .unwrap()["spec"]["replicas"]
            .as_u64(),
        Some(2)
    );
    assert!(
        of_kind(&render(&[], &["replicaCount=1"]), "PodDisruptionBudget").is_empty(),
        "no PDB for a single replica"
    );
}

/// True for a ClusterRole aggregated into the built-in view/edit/admin roles.
/// A `helm test` hook object (templates/tests/).
fn is_helm_test(o: &Value) -> bool {
    o["metadata"]["annotations"]["helm.sh/hook"].as_str() == Some("test")
}

#[test]
fn the_helm_test_pod_may_only_create_managerconfigs_and_runs_selftest() {
    let objs = render_tests(&[]);
    let tests: Vec<&Value> = objs.iter().collect();
    let kinds: BTreeSet<&str> = tests.iter().map(|o| kind(o)).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["Pod", "Role", "RoleBinding", "ServiceAccount"])
    );
    let role = tests.iter().find(|o| kind(o) == "Role").expect("a Role");
    assert_eq!(role["metadata"]["namespace"].as_str(), Some(NAMESPACE));
    let rules = role["rules"].as_sequence().expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(strs(&rules[0]["apiGroups"]), vec!["manager-operator.io"]);
    assert_eq!(strs(&rules[0]["resources"]), vec!["managerconfigs"]);
    assert_eq!(strs(&rules[0]["verbs"]), vec!["create"]);
    let pod = tests.iter().find(|o| kind(o) == "Pod").expect("a Pod");
    let sa = tests
        .iter()
        .find(|o| kind(o) == "ServiceAccount")
        .expect("a ServiceAccount");
    assert_eq!(pod["spec"]["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(strs(&pod["spec"]["containers"][0]["args"])[0], "selftest");
    assert_eq!(pod["spec"]["restartPolicy"].as_str(), Some("Never"));
    // Off with tests.enabled=false.
    assert!(render_tests(&["tests.enabled=false"]).is_empty());
    // And render() leaves it out of every other check.
    assert!(!render(&[], &[]).iter().any(is_helm_test));
}

fn is_aggregated(o: &Value) -> bool {
    o["metadata"]["labels"].as_mapping().is_some_and(|l| {
        l.keys().any(|k| {
            k.as_str()
                .is_some_and(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
        })
    })
}

/// One permission: (role kind, namespace, apiGroup, resource or non-resource URL, verb, resourceName).
type Perm = (String, String, String, String, String, String);

fn permissions(objs: &[Value], set: &str) -> BTreeSet<Perm> {
    let mut perms = BTreeSet::new();
    for role in objs
        .iter()
        .filter(|o| matches!(kind(o), "ClusterRole" | "Role"))
        // The aggregated view/edit roles are for people (checked on their own below).
        .filter(|o| !is_aggregated(o))
    {
        let ns = role["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        for rule in role["rules"].as_sequence().expect("rules") {
            for field in [
                "apiGroups",
                "resources",
                "verbs",
                "resourceNames",
                "nonResourceURLs",
            ] {
                for v in strs(&rule[field]) {
                    assert!(
                        !v.contains('*'),
                        "{set}: wildcard {v:?} in {field} of {} {}",
                        kind(role),
                        name(role)
                    );
                }
            }
            let names = match strs(&rule["resourceNames"]) {
                n if n.is_empty() => vec![String::new()],
                n => n,
            };
            let groups = match strs(&rule["apiGroups"]) {
                g if g.is_empty() => vec!["<non-resource>".to_string()],
                g => g,
            };
            let targets: Vec<String> = strs(&rule["resources"])
                .into_iter()
                .chain(strs(&rule["nonResourceURLs"]))
                .collect();
            for g in &groups {
                for r in &targets {
                    for v in strs(&rule["verbs"]) {
                        for n in &names {
                            perms.insert((
                                kind(role).into(),
                                ns.clone(),
                                g.clone(),
                                r.clone(),
                                v.clone(),
                                n.clone(),
                            ));
                        }
                    }
                }
            }
        }
    }
    perms
}

fn expected(self_managed: bool, metrics_secure: bool) -> BTreeSet<Perm> {
    let mut e = BTreeSet::new();
    let mut add = |k: &str, ns: &str, g: &str, r: &str, verbs: &[&str], n: &str| {
        for v in verbs {
            e.insert((
                k.into(),
                ns.into(),
                g.into(),
                r.into(),
                (*v).into(),
                n.into(),
            ));
        }
    };
    let cr = "ClusterRole";
    add(
        cr,
        "",
        "manager-operator.io",
        "managerconfigs",
        &["list", "watch", "patch"],
        "",
    );
    add(
        cr,
        "",
        "manager-operator.io",
        "managerconfigs/status",
        &["patch"],
        "",
    );
    add(
        cr,
        "",
        "coordination.k8s.io",
        "leases",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        "",
    );
    add(cr, "", "events.k8s.io", "events", &["create", "patch"], "");
    add(cr, "", "", "serviceaccounts", &["impersonate"], "");
    add(
        cr,
        "",
        "authorization.k8s.io",
        "subjectaccessreviews",
        &["create"],
        "",
    );
    add(cr, "", "<non-resource>", "/metrics", &["get"], ""); // the metrics-reader ClusterRole
    if metrics_secure {
        add(
            cr,
            "",
            "authentication.k8s.io",
            "tokenreviews",
            &["create"],
            "",
        );
    }
    if self_managed {
        add(
            cr,
            "",
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            &["get", "patch"],
            FULLNAME,
        );
        add("Role", NAMESPACE, "", "secrets", &["create"], "");
        add(
            "Role",
            NAMESPACE,
            "",
            "secrets",
            &["get", "update"],
            &format!("{FULLNAME}-webhook-tls"),
        );
    }
    e
}

#[test]
fn rbac_has_no_wildcards_and_nothing_beyond_what_the_operator_uses() {
    for (set, objs) in value_sets() {
        let self_managed = !set.starts_with("cert-manager");
        let secure = set == "monitoring";
        let got = permissions(&objs, set);
        let want = expected(self_managed, secure);
        let extra: Vec<_> = got.difference(&want).collect();
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "{set}: RBAC differs from what the operator uses\n  extra: {extra:#?}\n  missing: {missing:#?}"
        );
        // Only impersonation of service accounts (never users, groups, or uids).
        for p in &got {
            if p.4 == "impersonate" {
                assert_eq!(
                    (p.2.as_str(), p.3.as_str()),
                    ("", "serviceaccounts"),
                    "{set}: impersonate only serviceaccounts"
                );
            }
        }
        // Bindings: the chart's roles, to the chart's ServiceAccount only.
        for b in objs
            .iter()
            .filter(|o| matches!(kind(o), "ClusterRoleBinding" | "RoleBinding"))
        {
            assert_eq!(
                b["roleRef"]["name"].as_str(),
                Some(FULLNAME),
                "{set}: {} roleRef",
                kind(b)
            );
            let subjects = b["subjects"].as_sequence().expect("subjects");
            assert_eq!(subjects.len(), 1, "{set}: one subject");
            assert_eq!(subjects[0]["kind"].as_str(), Some("ServiceAccount"));
            assert_eq!(subjects[0]["name"].as_str(), Some(FULLNAME));
            assert_eq!(subjects[0]["namespace"].as_str(), Some(NAMESPACE));
        }
        let sa = one(&objs, "ServiceAccount");
        let dep = one(&objs, "Deployment");
        assert_eq!(
            dep["spec"]["template"]["spec"]["serviceAccountName"], sa["metadata"]["name"],
            "{set}: pod runs as the chart's ServiceAccount"
        );
    }
}

#[test]
fn webhook_configuration_per_mode() {
    let vwc_of = |objs: &[Value]| one(objs, "ValidatingWebhookConfiguration").clone();
    let defaults = render(&[], &[]);
    let vwc = vwc_of(&defaults);
    assert_eq!(name(&vwc), FULLNAME);
    let wh = &vwc["webhooks"][0];
    assert_eq!(wh["failurePolicy"].as_str(), Some("Fail"));
    assert_eq!(wh["sideEffects"].as_str(), Some("None"));
    assert_eq!(wh["timeoutSeconds"].as_u64(), Some(5));
    assert!(wh["clientConfig"].get("url").is_none());
    assert_eq!(
        wh["clientConfig"]["service"]["name"].as_str(),
        Some("mo-manager-operator-webhook")
    );
    assert_eq!(
        wh["clientConfig"]["service"]["path"].as_str(),
        Some("/validate-managerconfig")
    );
    assert!(
        wh["clientConfig"].get("caBundle").is_none(),
        "caBundle is injected, never rendered"
    );
    assert!(wh.get("namespaceSelector").is_none());
    let svc = defaults
        .iter()
        .find(|o| kind(o) == "Service" && name(o) == "mo-manager-operator-webhook")
        .expect("webhook Service");
    assert_eq!(svc["spec"]["ports"][0]["port"].as_u64(), Some(443));
    assert_eq!(
        svc["spec"]["ports"][0]["targetPort"].as_str(),
        Some("webhook")
    );
    let metrics = defaults
        .iter()
        .find(|o| kind(o) == "Service" && name(o) == "mo-manager-operator-metrics")
        .expect("metrics Service");
    assert_eq!(metrics["spec"]["ports"][0]["port"].as_u64(), Some(8080));

    let url = render(&["url-mode"], &[]);
    let wh = vwc_of(&url)["webhooks"][0].clone();
    assert_eq!(
        wh["clientConfig"]["url"].as_str(),
        Some("https://127.0.0.1:9443/validate-managerconfig")
    );
    assert!(wh["clientConfig"].get("service").is_none());
    let args = strs(&one(&url, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(
        args.contains(&"--webhook-url=https://127.0.0.1:9443/validate-managerconfig".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--hook-allow-loopback".to_string()),
        "{args:?}"
    );

    let cm = render(&["cert-manager"], &[]);
    let vwc = vwc_of(&cm);
    let cert = cm
        .iter()
        .find(|o| kind(o) == "Certificate" && name(o) == "mo-manager-operator-webhook")
        .expect("serving Certificate");
    assert_eq!(
        vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str(),
        Some(format!("{NAMESPACE}/{}", name(cert)).as_str())
    );
    assert!(
        vwc["webhooks"][0]["namespaceSelector"].is_mapping(),
        "namespaceSelector value rendered"
    );
    let pod = &one(&cm, "Deployment")["spec"]["template"]["spec"];
    let secret = cert["spec"]["secretName"].as_str().expect("secretName");
    assert!(
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"].as_str() == Some(secret)),
        "the Certificate's Secret is mounted"
    );
    let args = strs(&pod["containers"][0]["args"]);
    assert!(
        args.contains(&"--webhook-cert-mode=external".to_string()),
        "{args:?}"
    );
    assert_eq!(of_kind(&cm, "Issuer").len(), 2, "self-signed + CA Issuer");
    assert!(
        of_kind(&render(&["cert-manager-issuer"], &[]), "Issuer").is_empty(),
        "issuerRef: no Issuer rendered"
    );
    assert!(of_kind(&defaults, "Certificate").is_empty());
}

#[test]
fn monitoring_objects_only_when_enabled_and_dashboards_labelled() {
    let defaults = render(&[], &[]);
    for k in ["ServiceMonitor", "PrometheusRule"] {
        assert!(
            of_kind(&defaults, k).is_empty(),
            "{k} rendered although disabled"
        );
    }
    let dashboards: Vec<_> = of_kind(&defaults, "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1"))
        .collect();
    assert_eq!(dashboards.len(), 2, "two dashboard ConfigMaps");
    for d in dashboards {
        let data = d["data"].as_mapping().expect("data");
        for (_, json) in data {
            let board: serde_json::Value =
                serde_json::from_str(json.as_str().expect("json string"))
                    .expect("dashboard JSON parses");
            assert!(board["uid"].is_string() && board["panels"].is_array());
        }
    }
    let on = render(&["monitoring"], &[]);
    let sm = one(&on, "ServiceMonitor");
    assert_eq!(
        sm["spec"]["endpoints"][0]["scheme"].as_str(),
        Some("https"),
        "metrics.secure: https scrape"
    );
    assert_eq!(
        sm["spec"]["endpoints"][0]["honorLabels"],
        Value::Bool(true),
        "the metrics' own namespace label must win over the target's"
    );
    // Secure scrapes: explicit TLS and credentials, never the deprecated bearerTokenFile; the
    // PodMonitor scrapes the same way.
    let pm = one(&on, "PodMonitor");
    for ep in [
        &sm["spec"]["endpoints"][0],
        &pm["spec"]["podMetricsEndpoints"][0],
    ] {
        assert!(ep.get("bearerTokenFile").is_none(), "{ep:?}");
        assert_eq!(ep["authorization"]["type"].as_str(), Some("Bearer"));
        assert_eq!(
            ep["authorization"]["credentials"]["name"].as_str(),
            Some("prometheus-metrics-token")
        );
        assert_eq!(ep["tlsConfig"]["insecureSkipVerify"], Value::Bool(true));
        assert_eq!(ep["scheme"].as_str(), Some("https"));
    }
    assert_eq!(
        pm["spec"]["podMetricsEndpoints"][0]["port"].as_str(),
        Some("metrics")
    );
    let e = render_error(&["metrics.secure=true", "serviceMonitor.enabled=true"]);
    assert!(e.contains("serviceMonitor.tlsConfig"), "{e}");
    let e = render_error(&[
        "metrics.secure=true",
        "podMonitor.enabled=true",
        "serviceMonitor.tlsConfig.insecureSkipVerify=true",
    ]);
    assert!(e.contains("serviceMonitor.authorization"), "{e}");
    // honorLabels can be turned off (e.g. when relabelings move the label themselves).
    let plain = render(
        &[],
        &[
            "serviceMonitor.enabled=true",
            "serviceMonitor.honorLabels=false",
        ],
    );
    assert_eq!(
        one(&plain, "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"],
        Value::Bool(false)
    );
    let rule = one(&on, "PrometheusRule");
    // additionalAggregationLabels: [cluster] reaches every aggregation and match.
    let exprs: Vec<&str> = rule["spec"]["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .filter_map(|r| r["expr"].as_str())
        .collect();
    for e in &exprs {
        for (i, _) in e.match_indices("by (").chain(e.match_indices("on (")) {
            assert!(
                e[i + 4..].starts_with("cluster, "),
                "an aggregation without the cluster label: {e}"
            );
        }
    }
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("max by (cluster, namespace, name) (manager_operator_leader)")),
        "{exprs:?}"
    );
    let alerts: Vec<&str> = rule["spec"]["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    let file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("files/alerts.yaml")).unwrap())
            .unwrap();
    let all: Vec<&str> = file["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .filter_map(|r| r["alert"].as_str())
        .collect();
    let kept: Vec<&str> = all
        .iter()
        .copied()
        .filter(|a| *a != "ManagerOperatorWebhookLatencyHigh")
        .collect();
    assert_eq!(
        alerts, kept,
        "PrometheusRule = files/alerts.yaml minus the disabled alert"
    );
    for r in rule["spec"]["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
    {
        if r.get("alert").is_some() {
            for a in ["summary", "description", "runbook_url"] {
                assert!(
                    r["annotations"][a].is_string(),
                    "{:?} lacks {a}",
                    r["alert"]
                );
            }
            let anchor = r["alert"].as_str().unwrap().to_lowercase();
            assert!(
                r["annotations"]["runbook_url"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("docs/runbook.md#{anchor}"))
            );
        }
    }
}

#[test]
fn every_alert_has_a_runbook_section() {
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).expect("docs/runbook.md");
    let file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("files/alerts.yaml")).unwrap())
            .unwrap();
    for r in file["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
    {
        if let Some(alert) = r["alert"].as_str() {
            assert!(
                runbook.lines().any(|l| l == format!("## {alert}")),
                "docs/runbook.md lacks a `## {alert}` section"
            );
        }
    }
}

#[test]
fn chart_crd_is_the_committed_crd() {
    let committed = std::fs::read_to_string(root().join("crds/managerconfig.yaml")).unwrap();
    let in_chart = std::fs::read_to_string(chart().join("files/crds/managerconfig.yaml")).unwrap();
    assert!(
        committed == in_chart,
        "charts/manager-operator/files/crds/managerconfig.yaml differs from crds/managerconfig.yaml: run hack/check-chart-crd.sh --fix"
    );
}

fn container_args(objs: &[Value]) -> Vec<String> {
    strs(&one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"])
}

/// Placement (docs/placement.md): every replica of a release is in the membership group `<fullname>`, with
/// its membership Lease in the pod's namespace (downward API); `placement.*` drive the handover
/// pace, and `placement.enabled=false` is `--disable-placement`.
#[test]
fn placement_args_and_membership_namespace_from_the_downward_api() {
    for (set, objs) in value_sets() {
        let args = container_args(&objs);
        for want in [
            "--membership-namespace=$(POD_NAMESPACE)",
            &format!("--membership-group={FULLNAME}"),
            "--handover-batch=5",
            "--handover-interval=500ms",
        ] {
            assert!(args.iter().any(|a| a == want), "{set}: {want} in {args:?}");
        }
        assert!(
            !args.iter().any(|a| a == "--disable-placement"),
            "{set}: placement is on by default: {args:?}"
        );
        let c = &one(&objs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        let env = c["env"].as_sequence().expect("env");
        let pos = |n: &str| env.iter().position(|e| e["name"].as_str() == Some(n));
        let ns = pos("POD_NAMESPACE").unwrap_or_else(|| panic!("{set}: POD_NAMESPACE env"));
        assert_eq!(
            env[ns]["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            Some("metadata.namespace"),
            "{set}: POD_NAMESPACE from metadata.namespace"
        );
    }
    let off = container_args(&render(&[], &["placement.enabled=false"]));
    assert!(off.iter().any(|a| a == "--disable-placement"), "{off:?}");
    assert!(
        !off.iter().any(|a| a.starts_with("--handover-")),
        "no handover pace without placement: {off:?}"
    );
    assert!(
        off.iter()
            .any(|a| a == &format!("--membership-group={FULLNAME}")),
        "{off:?}"
    );
    let paced = container_args(&render(
        &[],
        &[
            "placement.handoverBatch=20",
            "placement.handoverInterval=2s",
        ],
    ));
    for want in ["--handover-batch=20", "--handover-interval=2s"] {
        assert!(paced.iter().any(|a| a == want), "{want} in {paced:?}");
    }
    let other = container_args(&render(&[], &["fullnameOverride=ops-operator"]));
    assert!(
        other.iter().any(|a| a == "--membership-group=ops-operator"),
        "the group follows the full name: {other:?}"
    );
}

/// `leaseFlowControl` (opt-in): a FlowSchema for the chart ServiceAccount's Lease requests, into the
/// built-in `leader-election` level, or into a level of the chart's own.
#[test]
fn lease_flow_control_is_opt_in_and_matches_only_the_operators_lease_requests() {
    for (set, objs) in value_sets() {
        if set != "lease-flow-control" {
            for k in ["FlowSchema", "PriorityLevelConfiguration"] {
                assert!(
                    of_kind(&objs, k).is_empty(),
                    "{set}: {k} rendered although off"
                );
            }
        }
    }
    let check_fs = |fs: &Value, level: &str, precedence: u64| {
        assert_eq!(
            fs["apiVersion"].as_str(),
            Some("flowcontrol.apiserver.k8s.io/v1")
        );
        assert_eq!(name(fs), format!("{FULLNAME}-leases"));
        let spec = &fs["spec"];
        assert_eq!(
            spec["priorityLevelConfiguration"]["name"].as_str(),
            Some(level)
        );
        assert_eq!(spec["matchingPrecedence"].as_u64(), Some(precedence));
        assert_eq!(spec["distinguisherMethod"]["type"].as_str(), Some("ByUser"));
        let rules = spec["rules"].as_sequence().expect("rules");
        assert_eq!(rules.len(), 1);
        let subjects = rules[0]["subjects"].as_sequence().expect("subjects");
        assert_eq!(subjects.len(), 1, "only the chart's ServiceAccount");
        assert_eq!(subjects[0]["kind"].as_str(), Some("ServiceAccount"));
        assert_eq!(
            subjects[0]["serviceAccount"]["name"].as_str(),
            Some(FULLNAME)
        );
        assert_eq!(
            subjects[0]["serviceAccount"]["namespace"].as_str(),
            Some(NAMESPACE)
        );
        assert!(rules[0].get("nonResourceRules").is_none());
        let rr = rules[0]["resourceRules"]
            .as_sequence()
            .expect("resourceRules");
        assert_eq!(rr.len(), 1);
        assert_eq!(strs(&rr[0]["apiGroups"]), vec!["coordination.k8s.io"]);
        assert_eq!(strs(&rr[0]["resources"]), vec!["leases"]);
        assert_eq!(strs(&rr[0]["namespaces"]), vec!["*"]);
        let verbs: BTreeSet<String> = strs(&rr[0]["verbs"]).into_iter().collect();
        for v in [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ] {
            assert!(verbs.contains(v), "verb {v} in {verbs:?}");
        }
        assert_eq!(verbs.len(), 7, "{verbs:?}");
    };

    let builtin = render(&[], &["leaseFlowControl.enabled=true"]);
    check_fs(one(&builtin, "FlowSchema"), "leader-election", 200);
    assert!(of_kind(&builtin, "PriorityLevelConfiguration").is_empty());

    let own = render(&["lease-flow-control"], &[]);
    let pl = one(&own, "PriorityLevelConfiguration");
    assert_eq!(name(pl), format!("{FULLNAME}-leases"));
    check_fs(one(&own, "FlowSchema"), &format!("{FULLNAME}-leases"), 250);
    let limited = &pl["spec"]["limited"];
    assert_eq!(pl["spec"]["type"].as_str(), Some("Limited"));
    assert_eq!(limited["nominalConcurrencyShares"].as_u64(), Some(20));
    assert_eq!(limited["lendablePercent"].as_u64(), Some(0));
    assert_eq!(limited["limitResponse"]["type"].as_str(), Some("Queue"));
    let q = &limited["limitResponse"]["queuing"];
    assert_eq!(
        (
            q["queues"].as_u64(),
            q["handSize"].as_u64(),
            q["queueLengthLimit"].as_u64()
        ),
        (Some(32), Some(4), Some(100))
    );

    // Another ServiceAccount name is followed.
    let sa = render(
        &[],
        &[
            "leaseFlowControl.enabled=true",
            "serviceAccount.name=ops-sa",
        ],
    );
    assert_eq!(
        one(&sa, "FlowSchema")["spec"]["rules"][0]["subjects"][0]["serviceAccount"]["name"]
            .as_str(),
        Some("ops-sa")
    );
}

/// The Deployment's arguments, for every value set, are accepted by the operator's own command
/// line parser (flag names, enum values, addresses, URLs): the chart and `run` agree.
#[test]
fn chart_args_parse_as_a_run_command_line() {
    use clap::Parser;
    for (set, objs) in value_sets() {
        let dep = one(&objs, "Deployment");
        let args = strs(&dep["spec"]["template"]["spec"]["containers"][0]["args"]);
        let argv = std::iter::once("manager-operator".to_string()).chain(args.iter().cloned());
        if let Err(e) = manager_operator::cli::Cli::try_parse_from(argv) {
            panic!(
                "{set}: `manager-operator {}` is refused by the CLI:\n{e}",
                args.join(" ")
            );
        }
    }
}

#[test]
fn tenant_limit_args_follow_the_values() {
    let args = container_args(&render(&[], &[]));
    for want in [
        "--max-configs-per-namespace=100",
        "--max-workers-per-config=16",
        "--min-retry-period=500ms",
        "--min-lease-duration=2s",
        "--max-watched-objects-per-config=10000",
        "--max-hook-calls-per-config=64",
        "--max-watch-cache-bytes-per-namespace=32Mi",
        "--max-watch-cache-bytes=96Mi",
        "--max-concurrent-lists=4",
    ] {
        assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
    }
    let set = container_args(&render(
        &[],
        &[
            "tenantLimits.maxConfigsPerNamespace=5",
            "tenantLimits.maxWatchedObjectsPerConfig=2000000",
            "tenantLimits.minLeaseDuration=10s",
            "tenantLimits.maxWatchCacheBytes=1Gi",
            "tenantLimits.maxWatchCacheBytesPerNamespace=134217728",
        ],
    ));
    for want in [
        "--max-configs-per-namespace=5",
        "--max-watched-objects-per-config=2000000",
        "--min-lease-duration=10s",
        "--max-watch-cache-bytes=1Gi",
        "--max-watch-cache-bytes-per-namespace=134217728",
    ] {
        assert!(set.iter().any(|a| a == want), "{want} in {set:?}");
    }
}

/// `hookPolicy.deniedNetworks` and `hookPolicy.allowInsecureSecrets` become the run flags the
/// operator parses into its hook policy; by default neither is set (Secrets only over https,
/// only the built-in refused networks).
#[test]
fn hook_policy_values_become_flags() {
    use clap::Parser;
    let defaults = container_args(&render(&[], &[]));
    assert!(
        !defaults.iter().any(
            |a| a.starts_with("--hook-denied-networks") || a == "--hook-allow-insecure-secrets"
        ),
        "{defaults:?}"
    );
    let url = container_args(&render(&["url-mode"], &[]));
    assert!(
        url.contains(&"--hook-allow-insecure-secrets".to_string()),
        "the e2e's url-mode values let samples/full.yaml's Secret worker use the http test hook: {url:?}"
    );
    let denied = container_args(&render(
        &[],
        &[
            "hookPolicy.deniedNetworks={10.0.0.0/24,fd00:10::/64}",
            "hookPolicy.allowInsecureSecrets=true",
        ],
    ));
    assert!(
        denied.contains(&"--hook-denied-networks=10.0.0.0/24,fd00:10::/64".to_string()),
        "{denied:?}"
    );
    let argv = std::iter::once("manager-operator".to_string()).chain(denied.iter().cloned());
    let cli = manager_operator::cli::Cli::try_parse_from(argv).expect("the CLI accepts the args");
    let manager_operator::cli::Command::Run(run) = cli.command else {
        panic!("not a run command line");
    };
    let policy = run.policy.policy();
    assert!(policy.allow_insecure_secrets);
    assert_eq!(
        policy
            .denied_networks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["10.0.0.0/24", "fd00:10::/64"]
    );
}

/// The opt-in NetworkPolicy: off by default; on, the webhook port admits only `webhookFrom`,
/// metrics only `metricsFrom`, and the probe port stays open; it selects exactly the
/// Deployment's pods.
#[test]
fn network_policy_guards_the_webhook_port_when_enabled() {
    assert!(of_kind(&render(&[], &[]), "NetworkPolicy").is_empty());
    let objs = render(&["network-policy"], &[]);
    let np = of_kind(&objs, "NetworkPolicy");
    assert_eq!(np.len(), 1);
    let spec = &np[0]["spec"];
    let deploy = of_kind(&objs, "Deployment");
    assert_eq!(
        spec["podSelector"]["matchLabels"], deploy[0]["spec"]["selector"]["matchLabels"],
        "selects the operator pods"
    );
    assert_eq!(spec["policyTypes"][0].as_str(), Some("Ingress"));
    let rules = spec["ingress"].as_sequence().expect("ingress rules");
    let rule_for = |port: i64| {
        rules
            .iter()
            .find(|r| r["ports"][0]["port"].as_i64() == Some(port))
            .unwrap_or_else(|| panic!("a rule for port {port}: {rules:?}"))
    };
    let webhook_from = rule_for(9443)["from"].as_sequence().expect("webhook peers");
    assert_eq!(webhook_from.len(), 1, "{webhook_from:?}");
    assert_eq!(
        webhook_from[0]["ipBlock"]["cidr"].as_str(),
        Some("192.0.2.10/32")
    );
    assert_eq!(
        rule_for(8080)["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            .as_str(),
        Some("monitoring")
    );
    assert!(rule_for(8081).get("from").is_none(), "probes from anywhere");
}

#[test]
fn aggregated_roles_let_namespace_users_read_and_editors_manage_managerconfigs() {
    let objs = render(&[], &[]);
    let agg: Vec<&Value> = objs.iter().filter(|o| is_aggregated(o)).collect();
    let names: Vec<&str> = agg.iter().map(|o| name(o)).collect();
    assert_eq!(
        names,
        [format!("{FULLNAME}-view"), format!("{FULLNAME}-edit")]
    );
    let label = |o: &Value, l: &str| {
        o["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{l}").as_str()]
            .as_str()
            == Some("true")
    };
    assert!(label(agg[0], "view") && label(agg[0], "edit") && label(agg[0], "admin"));
    assert!(!label(agg[1], "view") && label(agg[1], "edit") && label(agg[1], "admin"));
    let verbs = |o: &Value| -> Vec<String> {
        o["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|r| {
                assert_eq!(strs(&r["apiGroups"]), ["manager-operator.io"]);
                strs(&r["verbs"])
            })
            .collect()
    };
    assert_eq!(verbs(agg[0]), ["get", "list", "watch"]);
    assert_eq!(
        verbs(agg[1]),
        ["create", "update", "patch", "delete", "deletecollection"]
    );
    // Never bound by the chart.
    for b in objs
        .iter()
        .filter(|o| matches!(kind(o), "ClusterRoleBinding" | "RoleBinding"))
    {
        assert!(!b["roleRef"]["name"].as_str().unwrap().ends_with("-view"));
        assert!(!b["roleRef"]["name"].as_str().unwrap().ends_with("-edit"));
    }
    let off = render(&[], &["rbac.aggregateClusterRoles=false"]);
    assert!(!off.iter().any(is_aggregated));
}

#[test]
fn the_crd_is_a_template_kept_on_uninstall_and_optional() {
    let committed: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("crds/managerconfig.yaml")).unwrap(),
    )
    .unwrap();
    let objs = render(&[], &[]);
    let crd = one(&objs, "CustomResourceDefinition");
    assert_eq!(
        crd["spec"], committed["spec"],
        "the rendered CRD is crds/managerconfig.yaml"
    );
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"].as_str(),
        Some("keep")
    );
    assert_eq!(
        crd["metadata"]["labels"]["app.kubernetes.io/managed-by"].as_str(),
        Some("Helm")
    );
    let not_kept = render(&[], &["crds.keep=false"]);
    assert!(
        one(&not_kept, "CustomResourceDefinition")["metadata"]["annotations"]
            ["helm.sh/resource-policy"]
            .is_null()
    );
    assert!(
        of_kind(
            &render(&[], &["crds.enabled=false"]),
            "CustomResourceDefinition"
        )
        .is_empty()
    );
    assert!(
        !chart().join("crds").exists(),
        "no crds/ folder: Helm would install it once and never upgrade it"
    );
}

#[test]
fn install_details_registry_extra_volumes_pdb_policy_and_memory() {
    let objs = render(
        &[],
        &[
            "image.registry=mirror.example.com/",
            "extraVolumes[0].name=ca",
            "extraVolumes[0].configMap.name=corp-ca",
            "extraVolumeMounts[0].name=ca",
            "extraVolumeMounts[0].mountPath=/etc/corp-ca",
        ],
    );
    let dep = one(&objs, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert!(
        c["image"]
            .as_str()
            .unwrap()
            .starts_with("mirror.example.com/ghcr.io/manager-operator/manager-operator:"),
        "{:?}",
        c["image"]
    );
    assert!(
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "ca" && v["configMap"]["name"] == "corp-ca")
    );
    assert!(
        c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/etc/corp-ca")
    );
    let defaults = render(&[], &[]);
    let c = &one(&defaults, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["image"].as_str().unwrap().split(':').next(),
        Some("ghcr.io/manager-operator/manager-operator")
    );
    assert_eq!(c["resources"]["limits"]["memory"].as_str(), Some("512Mi"));
    assert_eq!(
        one(&defaults, "PodDisruptionBudget")["spec"]["unhealthyPodEvictionPolicy"].as_str(),
        Some("AlwaysAllow")
    );
}

#[test]
fn host_network_binds_to_the_node_address_and_rolls_one_pod_at_a_time() {
    let env_of = |c: &Value, n: &str| -> Option<Value> {
        c["env"]
            .as_sequence()?
            .iter()
            .find(|e| e["name"].as_str() == Some(n))
            .cloned()
    };
    // Default: pod network, binds every address, surge rollout, no API server override.
    let objs = render(&[], &[]);
    let dep = one(&objs, "Deployment");
    let spec = &dep["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    assert!(spec["hostNetwork"].is_null());
    assert!(strs(&c["args"]).contains(&"--health-probe-bind-address=0.0.0.0:8081".to_string()));
    assert_eq!(dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 1);
    assert!(env_of(c, "KUBERNETES_SERVICE_HOST").is_none());
    assert!(env_of(c, "HOST_IP").is_none());
    // The pod owns its membership Lease.
    assert_eq!(
        env_of(c, "POD_UID").expect("POD_UID")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.uid"
    );

    let objs = render(
        &[],
        &[
            "hostNetwork=true",
            "apiServer.host=127.0.0.9",
            "apiServer.port=6443",
        ],
    );
    let dep = one(&objs, "Deployment");
    let spec = &dep["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
    let args = strs(&c["args"]);
    for flag in [
        "--metrics-bind-address=$(HOST_IP):8080",
        "--health-probe-bind-address=$(HOST_IP):8081",
        "--webhook-bind-address=$(HOST_IP):9443",
    ] {
        assert!(args.contains(&flag.to_string()), "{flag} in {args:?}");
    }
    assert_eq!(
        env_of(c, "HOST_IP").expect("HOST_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.hostIP"
    );
    assert_eq!(
        env_of(c, "KUBERNETES_SERVICE_HOST").expect("host")["value"],
        "127.0.0.9"
    );
    assert_eq!(
        env_of(c, "KUBERNETES_SERVICE_PORT").expect("port")["value"],
        "6443"
    );
    // Host ports: a surge pod could not be scheduled beside the one it replaces.
    assert_eq!(dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 0);
    assert_eq!(
        dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
}
