//! Validation tests: YAML fixtures from `samples/` and property tests of the election rules.

use super::*;
use proptest::prelude::*;

fn load(path: &str) -> ManagerConfig {
    let text = std::fs::read_to_string(format!("{}/samples/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut mc: ManagerConfig = decode::strict(serde_yaml::Deserializer::from_str(&text))
        .unwrap_or_else(|v| panic!("{path}: {v:?}"));
    mc.metadata.namespace = Some("team-a".into());
    mc
}

fn fields(path: &str) -> Vec<(String, Rule)> {
    match resolve(&load(path), &HookPolicy::default()) {
        Ok(_) => vec![],
        Err(v) => v.0.into_iter().map(|v| (v.field, v.rule)).collect(),
    }
}

#[test]
fn valid_samples_resolve_with_defaults() {
    let r = resolve(&load("minimal.yaml"), &HookPolicy::default()).expect("minimal is valid");
    assert_eq!(r.service_account, "default");
    assert_eq!(r.election.lease_name, "minimal");
    assert_eq!(r.election.lease_namespace, "team-a");
    assert_eq!(r.election.lease_duration, Duration::from_secs(15));
    assert_eq!(r.election.renew_deadline, Duration::from_secs(10));
    assert_eq!(r.election.retry_period, Duration::from_secs(2));
    assert!(r.election.release_on_cancel);
    assert_eq!(r.startup_timeout, Duration::from_secs(60));
    assert_eq!(r.graceful_shutdown_timeout, Duration::from_secs(30));
    assert_eq!(r.workers[0].concurrency, 1);
    assert_eq!(r.workers[0].namespace, "team-a");
    assert_eq!(r.workers[0].group, "");
    assert_eq!(r.workers[0].version, "v1");
    assert_eq!(r.workers[0].hook_timeout, Duration::from_secs(10));

    let full = resolve(&load("full.yaml"), &HookPolicy::default()).expect("full is valid");
    assert_eq!(full.workers.len(), 2);
    assert_eq!(full.workers[0].concurrency, 4);
    assert_eq!(
        full.workers[0].resync_period,
        Some(Duration::from_secs(600))
    );
    assert_eq!(
        full.workers[0].label_selector.as_deref(),
        Some("app=inventory")
    );

    assert_eq!(full.workers[0].signing_secret, None);
    assert_eq!(
        full.workers[1].signing_secret,
        Some(SigningSecretRef {
            name: "inventory-hook-signing".into(),
            key: "signing-key".into()
        })
    );

    let tight =
        resolve(&load("tight-timings.yaml"), &HookPolicy::default()).expect("tight is valid");
    assert_eq!(tight.election.renew_deadline, Duration::from_millis(1300));
}

#[test]
fn seed_case_is_rejected_with_field_and_values() {
    let err = resolve(
        &load("invalid-lease-not-greater-than-renew.yaml"),
        &HookPolicy::default(),
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].field, "spec.leaderElection.renewDeadline");
    assert_eq!(err.0[0].rule, Rule::LeaseGreaterThanRenew);
    assert_eq!(
        err.to_string(),
        "spec.leaderElection.renewDeadline: must be less than leaseDuration (5s), got 6s"
    );
}

#[test]
fn jitter_rule() {
    assert_eq!(
        fields("invalid-renew-within-jitter.yaml"),
        vec![(
            "spec.leaderElection.renewDeadline".to_string(),
            Rule::RenewGreaterThanJitteredRetry
        )]
    );
}

#[test]
fn zero_durations_are_rejected() {
    let f = fields("invalid-zero-duration.yaml");
    assert!(
        f.contains(&("spec.leaderElection.renewDeadline".into(), Rule::Positive)),
        "{f:?}"
    );
    assert!(
        f.contains(&("spec.workers[0].hook.timeout".into(), Rule::Positive)),
        "{f:?}"
    );
}

#[test]
fn every_violation_is_reported() {
    let f = fields("invalid-three-rules.yaml");
    assert!(
        f.contains(&(
            "spec.leaderElection.leaseDuration".into(),
            Rule::WholeSeconds
        )),
        "{f:?}"
    );
    assert!(
        f.contains(&(
            "spec.leaderElection.renewDeadline".into(),
            Rule::LeaseGreaterThanRenew
        )),
        "{f:?}"
    );
    assert!(
        f.contains(&("spec.workers[0].concurrency".into(), Rule::Range)),
        "{f:?}"
    );
}

#[test]
fn hook_policy_is_applied() {
    let f = fields("broken/hook-metadata-address.yaml");
    assert_eq!(
        f,
        vec![("spec.workers[0].hook.url".to_string(), Rule::HookUrl)]
    );
}

#[test]
fn many_rules_on_one_worker_list() {
    let mut mc = load("minimal.yaml");
    let w = mc.spec.workers[0].clone();
    mc.spec.workers.push(w.clone());
    mc.spec.workers[1].watch.api_version = "apps/V1".into();
    mc.spec.workers[1].watch.kind = "configmap".into();
    mc.spec.workers[1].watch.label_selector = Some("app in (".into());
    mc.spec.workers[1].resync_period = Some("48h".into());
    mc.spec.workers[1].hook.timeout = "31s".into();
    mc.spec.workers[1].concurrency = 0;
    mc.spec.service_account_name = "Not_Valid".into();
    mc.spec.startup_timeout = "15".into();
    mc.spec.graceful_shutdown_timeout = "-1s".into();
    mc.spec.leader_election.lease_namespace = Some("Bad.NS".into());
    let err = resolve(&mc, &HookPolicy::default()).unwrap_err();
    let got: Vec<_> = err.0.iter().map(|v| (v.field.as_str(), v.rule)).collect();
    for want in [
        ("spec.serviceAccountName", Rule::Name),
        ("spec.leaderElection.leaseNamespace", Rule::Name),
        ("spec.startupTimeout", Rule::DurationSyntax),
        ("spec.gracefulShutdownTimeout", Rule::Positive),
        ("spec.workers[1].name", Rule::Unique),
        ("spec.workers[1].concurrency", Rule::Range),
        ("spec.workers[1].watch.apiVersion", Rule::GroupVersionKind),
        ("spec.workers[1].watch.kind", Rule::GroupVersionKind),
        ("spec.workers[1].watch.labelSelector", Rule::LabelSelector),
        ("spec.workers[1].resyncPeriod", Rule::Range),
        ("spec.workers[1].hook.timeout", Rule::Range),
    ] {
        assert!(got.contains(&want), "missing {want:?} in {got:?}");
    }
    assert!(err.to_string().contains("got \"15\"") || err.to_string().contains("missing unit"));
}

#[test]
fn empty_workers_and_missing_metadata() {
    let mut mc = load("minimal.yaml");
    mc.spec.workers.clear();
    mc.metadata.namespace = None;
    let err = resolve(&mc, &HookPolicy::default()).unwrap_err();
    let got: Vec<_> = err.0.iter().map(|v| v.field.as_str()).collect();
    assert!(got.contains(&"spec.workers"));
    assert!(got.contains(&"metadata.namespace"));
}

#[test]
fn signing_secret_ref_names_a_secret_key() {
    let mut mc = load("minimal.yaml");
    let set = |mc: &mut ManagerConfig, name: &str, key: &str| {
        mc.spec.workers[0].hook.signing_secret_ref = Some(SigningSecretRef {
            name: name.into(),
            key: key.into(),
        });
    };
    for (name, key) in [
        ("hook-signing", "key"),
        ("a.b", "signing_key-1.current"),
        ("s", &"k".repeat(SIGNING_KEY_MAX)),
    ] {
        set(&mut mc, name, key);
        let r = resolve(&mc, &HookPolicy::default()).unwrap_or_else(|v| panic!("{key}: {v}"));
        assert_eq!(r.workers[0].signing_secret.as_ref().unwrap().key, key);
    }
    for (name, key, field) in [
        (
            "Bad_Name",
            "key",
            "spec.workers[0].hook.signingSecretRef.name",
        ),
        ("ok", "", "spec.workers[0].hook.signingSecretRef.key"),
        ("ok", "..", "spec.workers[0].hook.signingSecretRef.key"),
        ("ok", "a/b", "spec.workers[0].hook.signingSecretRef.key"),
        (
            "ok",
            &"k".repeat(SIGNING_KEY_MAX + 1),
            "spec.workers[0].hook.signingSecretRef.key",
        ),
    ] {
        set(&mut mc, name, key);
        let v = resolve(&mc, &HookPolicy::default()).expect_err(key);
        assert_eq!(v.0.len(), 1, "{v}");
        assert_eq!(v.0[0].field, field);
        assert_eq!(v.0[0].rule, Rule::Name);
    }
}

#[test]
fn signing_over_plain_http_is_allowed_with_a_warning() {
    let mut mc = load("minimal.yaml");
    mc.spec.workers[0].hook.signing_secret_ref = Some(SigningSecretRef {
        name: "s".into(),
        key: "k".into(),
    });
    mc.spec.workers[0].hook.url = "http://hook.team-a.svc:8080/".into();
    assert!(resolve(&mc, &HookPolicy::default()).is_ok());
    let w = warnings(&mc.spec);
    assert!(
        w.iter()
            .any(|w| w.contains("spec.workers[0].hook") && w.contains("https")),
        "{w:?}"
    );
    mc.spec.workers[0].hook.url = "https://hook.team-a.svc:8443/".into();
    assert!(warnings(&mc.spec).is_empty());
}

#[test]
fn warnings_for_risky_settings() {
    let mut mc = load("minimal.yaml");
    assert!(warnings(&mc.spec).is_empty());
    mc.spec.leader_election.lease_duration = "10m".into();
    mc.spec.leader_election.renew_deadline = "9m59s".into();
    mc.spec.workers[0].concurrency = 32;
    let w = warnings(&mc.spec);
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[0].starts_with("spec.leaderElection.leaseDuration"));
    assert!(w[1].starts_with("spec.leaderElection.renewDeadline"));
    assert!(w[2].starts_with("spec.workers[0].concurrency"));
}

fn secs_or_millis() -> impl Strategy<Value = GoDuration> {
    prop_oneof![
        (1i64..=120).prop_map(GoDuration::from_secs),
        (1i64..=120_000).prop_map(GoDuration::from_millis),
        (1i64..=5_000_000_000).prop_map(GoDuration::from_nanos),
    ]
}

#[test]
fn secrets_are_not_sent_to_plain_http_hooks_unless_allowed() {
    let mut mc = load("full.yaml");
    assert_eq!(mc.spec.workers[1].watch.kind, "Secret");
    mc.spec.workers[1].hook.url = "http://hooks.team-a.svc/secrets".into();
    let e = resolve(&mc, &HookPolicy::default()).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].field, "spec.workers[1].hook.url");
    assert_eq!(e.0[0].rule, Rule::HookUrl);
    assert!(
        e.0[0].message.contains("--hook-allow-insecure-secrets"),
        "{e}"
    );
    let allowing = HookPolicy {
        allow_insecure_secrets: true,
        ..HookPolicy::default()
    };
    assert!(resolve(&mc, &allowing).is_ok());
    // ConfigMaps may go to http hooks.
    mc.spec.workers[0].hook.url = "http://hooks.team-a.svc/cms".into();
    mc.spec.workers[1].hook.url = "https://hooks.team-a.svc/secrets".into();
    assert!(resolve(&mc, &HookPolicy::default()).is_ok());
}

#[test]
fn object_name_and_namespace_follow_the_api_server_rules() {
    let mut mc = load("minimal.yaml");
    for bad in ["Bad_Name", "-a", &"a".repeat(254), "a..b"] {
        mc.metadata.name = Some(bad.to_string());
        let e = resolve(&mc, &HookPolicy::default()).unwrap_err();
        assert!(
            e.0.iter()
                .any(|v| v.field == "metadata.name" && v.rule == Rule::Name),
            "{bad}: {e}"
        );
    }
    mc.metadata.name = Some("a.b-c".into());
    assert!(resolve(&mc, &HookPolicy::default()).is_ok());
    mc.metadata.namespace = Some("Team_A".into());
    assert!(resolve(&mc, &HookPolicy::default()).is_err());
}

proptest! {
    /// Any (lease, renew, retry) triple is accepted iff it satisfies client-go's rules
    /// (lease > renew, renew > 1.2 × retry) plus the Lease's whole seconds and our bounds.
    #[test]
    fn election_triple_accepted_iff_client_go_rules(
        lease in secs_or_millis(), renew in secs_or_millis(), retry in secs_or_millis()
    ) {
        let (l, rn, rt) = (lease.as_nanos() as f64, renew.as_nanos() as f64, retry.as_nanos() as f64);
        let client_go_ok = l > rn && rn > 1.2 * rt;
        let lease_format_ok = lease.as_nanos() % 1_000_000_000 == 0
            && lease >= bounds::LEASE_DURATION.0 && lease <= bounds::LEASE_DURATION.1;
        let retry_ok = retry >= bounds::RETRY_PERIOD_MIN;
        let violations = check_election_timings(lease, renew, retry);
        // f64 ties are impossible to misjudge here: 1.2 × retry is exact to well under 1ns for
        // these magnitudes except on exact equality, which the integer rule also rejects.
        prop_assert_eq!(violations.is_empty(), client_go_ok && lease_format_ok && retry_ok,
            "lease={} renew={} retry={} -> {:?}", lease, renew, retry, violations);
    }

    /// Whatever the spec strings, resolve never panics, and it fails iff there is a violation.
    #[test]
    fn resolve_never_panics(lease in "\\PC{0,8}", renew in "[0-9]{1,3}(ms|s|m)", retry in "\\PC{0,6}",
                            url in "\\PC{0,30}", sel in "\\PC{0,12}") {
        let mut mc = load("minimal.yaml");
        mc.spec.leader_election.lease_duration = lease;
        mc.spec.leader_election.renew_deadline = renew;
        mc.spec.leader_election.retry_period = retry;
        mc.spec.workers[0].hook.url = url;
        mc.spec.workers[0].watch.label_selector = Some(sel);
        match resolve(&mc, &HookPolicy::default()) {
            Ok(r) => prop_assert!(r.election.lease_duration > r.election.renew_deadline),
            Err(v) => prop_assert!(!v.0.is_empty()),
        }
    }
}

#[test]
fn hook_tls_settings_need_https_and_usable_certificates() {
    use crate::api::{CaBundleRef, SecretNameRef};
    let mut mc = load("minimal.yaml");
    mc.spec.workers[0].hook.url = "https://hook.team-a.svc:8443/".into();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = p.self_signed(&key).unwrap().pem();
    mc.spec.workers[0].hook.ca_bundle = Some(ca.clone());
    mc.spec.workers[0].hook.ca_bundle_ref = Some(CaBundleRef {
        kind: "ConfigMap".into(),
        name: "hook-ca".into(),
        key: "ca.crt".into(),
    });
    mc.spec.workers[0].hook.client_cert_secret_ref = Some(SecretNameRef {
        name: "client".into(),
    });
    mc.spec.workers[0].finalize = true;
    let r = resolve(&mc, &HookPolicy::default()).unwrap();
    assert!(r.workers[0].finalize);
    assert_eq!(r.workers[0].tls.ca_bundle.as_deref(), Some(ca.as_str()));
    assert_eq!(
        r.workers[0].tls.client_cert_secret.as_deref(),
        Some("client")
    );

    let fields = |mc: &ManagerConfig| -> Vec<(String, Rule)> {
        resolve(mc, &HookPolicy::default())
            .expect_err("refused")
            .0
            .into_iter()
            .map(|v| (v.field, v.rule))
            .collect()
    };
    let mut plain = mc.clone();
    plain.spec.workers[0].hook.url = "http://hook.team-a.svc:8080/".into();
    assert_eq!(
        fields(&plain),
        [("spec.workers[0].hook.url".to_string(), Rule::HookTls)]
    );
    let mut junk = mc.clone();
    junk.spec.workers[0].hook.ca_bundle = Some("not a certificate".into());
    assert_eq!(
        fields(&junk),
        [("spec.workers[0].hook.caBundle".to_string(), Rule::HookTls)]
    );
    let mut kind = mc.clone();
    kind.spec.workers[0]
        .hook
        .ca_bundle_ref
        .as_mut()
        .unwrap()
        .kind = "Pod".into();
    kind.spec.workers[0].hook.client_cert_secret_ref = Some(SecretNameRef {
        name: "Bad_Name".into(),
    });
    assert_eq!(
        fields(&kind),
        [
            (
                "spec.workers[0].hook.caBundleRef.kind".to_string(),
                Rule::HookTls
            ),
            (
                "spec.workers[0].hook.clientCertSecretRef.name".to_string(),
                Rule::Name
            )
        ]
    );
}
