use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::UserInfo;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::claims::LeaseClaims;
use crate::webhook::access::{AccessReviewError, AccessReviewer};

/// Allows the (user, namespace) pairs it was given; counts calls; can fail.
#[derive(Default)]
struct FakeReviewer {
    allowed: HashSet<(String, String)>,
    fail: bool,
    calls: AtomicUsize,
    seen: Mutex<Vec<UserInfo>>,
}

impl FakeReviewer {
    fn allowing(pairs: &[(&str, &str)]) -> Self {
        Self {
            allowed: pairs
                .iter()
                .map(|(u, n)| ((*u).to_string(), (*n).to_string()))
                .collect(),
            ..Self::default()
        }
    }
}

impl AccessReviewer for FakeReviewer {
    fn may_manage_leases<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
    ) -> BoxFuture<'a, Result<bool, AccessReviewError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().expect("lock").push(user.clone());
        let answer = if self.fail {
            Err(AccessReviewError::Timeout(std::time::Duration::from_secs(
                3,
            )))
        } else {
            Ok(self.allowed.contains(&(
                user.username.clone().unwrap_or_default(),
                namespace.to_string(),
            )))
        };
        Box::pin(async move { answer })
    }
}

fn sample(path: &str) -> Value {
    let file = format!("{}/samples/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&file).expect("sample readable");
    let mut v: Value = serde_yaml::from_str(&text).expect("sample is YAML");
    v["metadata"]["namespace"] = json!("team-a");
    v
}

fn review_of(op: &str, user: &str, object: Option<Value>, old: Option<Value>) -> Value {
    let name = object
        .as_ref()
        .and_then(|o| o["metadata"]["name"].as_str())
        .unwrap_or("x")
        .to_string();
    let mut request = json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "manager-operator.io", "version": "v1alpha1", "kind": "ManagerConfig"},
        "resource": {"group": "manager-operator.io", "version": "v1alpha1", "resource": "managerconfigs"},
        "requestKind": {"group": "manager-operator.io", "version": "v1alpha1", "kind": "ManagerConfig"},
        "requestResource": {"group": "manager-operator.io", "version": "v1alpha1", "resource": "managerconfigs"},
        "name": name,
        "namespace": "team-a",
        "operation": op,
        "userInfo": {"username": user, "uid": "u-1", "groups": ["system:authenticated", "team-a"],
                     "extra": {"scopes": ["a"]}},
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
    });
    if let Some(o) = object {
        request["object"] = o;
    }
    if let Some(o) = old {
        request["oldObject"] = o;
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

fn create(object: Value) -> Vec<u8> {
    serde_json::to_vec(&review_of("CREATE", "alice", Some(object), None)).expect("json")
}

fn run(body: &[u8], reviewer: &dyn AccessReviewer) -> Outcome {
    futures::executor::block_on(review(body, &HookPolicy::default(), reviewer))
}

/// Runs and decodes a 200 answer's `response`.
fn respond_to(body: &[u8], reviewer: &dyn AccessReviewer) -> Value {
    let o = run(body, reviewer);
    assert_eq!(o.status, StatusCode::OK, "{}", o.body_text());
    assert_eq!(o.content_type, JSON);
    let v: Value = serde_json::from_slice(&o.body).expect("response is JSON");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(
        v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002",
        "uid echoed"
    );
    assert_eq!(
        v["response"]["allowed"].as_bool(),
        Some(o.allowed),
        "outcome matches the review"
    );
    v["response"].clone()
}

fn message(r: &Value) -> String {
    r["status"]["message"].as_str().unwrap_or("").to_string()
}

#[test]
fn valid_samples_are_admitted() {
    let fake = FakeReviewer::default();
    for s in ["minimal.yaml", "full.yaml"] {
        let r = respond_to(&create(sample(s)), &fake);
        assert_eq!(r["allowed"], true, "{s}: {r}");
        assert!(r.get("warnings").is_none(), "{s}: no warnings: {r}");
    }
    // As tight as allowed: admitted, with a warning.
    let r = respond_to(&create(sample("tight-timings.yaml")), &fake);
    assert_eq!(r["allowed"], true, "{r}");
    assert!(
        r["warnings"][0].as_str().is_some_and(|w| w.starts_with(
            "spec.leaderElection.renewDeadline: 1.3s is within 1s of leaseDuration (2s)"
        )),
        "{r}"
    );
    assert_eq!(fake.calls.load(Ordering::SeqCst), 0, "no SAR needed");
}

#[test]
fn invalid_samples_are_denied_naming_their_fields() {
    let fake = FakeReviewer::default();
    for (s, fields) in [
        (
            "invalid-lease-not-greater-than-renew.yaml",
            &["spec.leaderElection.renewDeadline: must be less than leaseDuration (5s), got 6s"][..],
        ),
        (
            "invalid-renew-within-jitter.yaml",
            &["spec.leaderElection.renewDeadline: must be greater than 1.2 × retryPeriod"][..],
        ),
        (
            "invalid-zero-duration.yaml",
            &[
                "spec.leaderElection.renewDeadline:",
                "spec.workers[0].hook.timeout:",
            ][..],
        ),
        (
            "invalid-three-rules.yaml",
            &[
                "spec.leaderElection.leaseDuration: must be a whole number of seconds",
                "spec.leaderElection.renewDeadline: must be less than leaseDuration",
                "spec.workers[0].concurrency: must be between 1 and 64, got 65",
            ][..],
        ),
        (
            "broken/hook-metadata-address.yaml",
            &["spec.workers[0].hook.url: refused by the hook policy"][..],
        ),
    ] {
        let r = respond_to(&create(sample(s)), &fake);
        assert_eq!(r["allowed"], false, "{s}");
        assert_eq!(r["status"]["code"], 422, "{s}: {r}");
        assert_eq!(r["status"]["reason"], "Invalid", "{s}");
        assert_eq!(r["status"]["status"], "Failure", "{s}");
        let m = message(&r);
        assert!(m.starts_with("ManagerConfig \""), "{s}: {m}");
        for f in fields {
            assert!(m.contains(f), "{s}: {m:?} should contain {f:?}");
        }
    }
}

#[test]
fn the_documented_message_format() {
    let mut mc = sample("minimal.yaml");
    mc["spec"]["leaderElection"] = json!({"leaseDuration": "10s", "renewDeadline": "12s"});
    let r = respond_to(&create(mc), &FakeReviewer::default());
    assert_eq!(
        message(&r),
        "ManagerConfig \"minimal\" is invalid: spec.leaderElection.renewDeadline: must be less than leaseDuration (10s), got 12s"
    );
}

#[test]
fn every_violation_is_listed() {
    let mut mc = sample("minimal.yaml");
    mc["spec"]["leaderElection"] = json!({"leaseDuration": "1500ms", "renewDeadline": "10s",
                                          "retryPeriod": "50ms", "leaseNamespace": "Bad_NS"});
    mc["spec"]["workers"][0]["concurrency"] = json!(0);
    mc["spec"]["workers"][0]["watch"]["labelSelector"] = json!("app in (a");
    mc["spec"]["workers"][0]["hook"]["url"] = json!("http://127.0.0.1/x");
    let r = respond_to(&create(mc), &FakeReviewer::default());
    let m = message(&r);
    for f in [
        "spec.leaderElection.leaseDuration:",
        "spec.leaderElection.renewDeadline:",
        "spec.leaderElection.retryPeriod:",
        "spec.leaderElection.leaseNamespace:",
        "spec.workers[0].concurrency:",
        "spec.workers[0].watch.labelSelector:",
        "spec.workers[0].hook.url:",
    ] {
        assert!(m.contains(f), "{m:?} lacks {f}");
    }
}

#[test]
fn warnings_for_risky_settings() {
    let mut mc = sample("minimal.yaml");
    mc["spec"]["leaderElection"] = json!({"leaseDuration": "10m", "renewDeadline": "599s"});
    mc["spec"]["workers"][0]["concurrency"] = json!(20);
    let r = respond_to(&create(mc), &FakeReviewer::default());
    assert_eq!(r["allowed"], true);
    let w: Vec<String> = serde_json::from_value(r["warnings"].clone()).expect("warnings");
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w[0].starts_with("spec.leaderElection.leaseDuration: 10m0s is over 5 minutes"));
    assert!(w[1].starts_with("spec.leaderElection.renewDeadline: 9m59s is within 1s"));
    assert!(w[2].starts_with("spec.workers[0].concurrency: 20 is above 16"));
    for x in &w {
        assert!(
            x.len() <= 256,
            "the API server truncates warnings over 256 chars: {x}"
        );
    }
}

#[test]
fn unknown_fields_and_wrong_types_are_violations() {
    let mut mc = sample("minimal.yaml");
    mc["spec"]["workers"][0]["hook"]["bogus"] = json!(true);
    let r = respond_to(&create(mc), &FakeReviewer::default());
    assert!(
        message(&r).contains("spec.workers.0.hook.bogus: unknown field"),
        "{r}"
    );
    let mut mc = sample("minimal.yaml");
    mc["spec"]["workers"][0]["concurrency"] = json!("four");
    let r = respond_to(&create(mc), &FakeReviewer::default());
    assert!(message(&r).contains("spec.workers[0].concurrency"), "{r}");
}

#[test]
fn delete_connect_and_status_are_allowed() {
    let fake = FakeReviewer::default();
    let bad = sample("invalid-three-rules.yaml");
    for op in ["DELETE", "CONNECT"] {
        let body =
            serde_json::to_vec(&review_of(op, "alice", None, Some(bad.clone()))).expect("json");
        let r = respond_to(&body, &fake);
        assert_eq!(r["allowed"], true, "{op}");
    }
    let mut rv = review_of("UPDATE", "alice", Some(bad.clone()), Some(bad.clone()));
    rv["request"]["subResource"] = json!("status");
    let r = respond_to(&serde_json::to_vec(&rv).expect("json"), &fake);
    assert_eq!(r["allowed"], true);
}

#[test]
fn updates_that_keep_the_spec_are_allowed() {
    let fake = FakeReviewer::default();
    let old = sample("invalid-three-rules.yaml");
    let mut new = old.clone();
    new["metadata"]["finalizers"] = json!(["manager-operator.io/cleanup"]);
    let body = serde_json::to_vec(&review_of(
        "UPDATE",
        "alice",
        Some(new.clone()),
        Some(old.clone()),
    ))
    .expect("json");
    assert_eq!(
        respond_to(&body, &fake)["allowed"],
        true,
        "metadata-only update"
    );

    let mut deleting = old.clone();
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    deleting["spec"]["workers"][0]["concurrency"] = json!(66);
    let body = serde_json::to_vec(&review_of(
        "UPDATE",
        "alice",
        Some(deleting),
        Some(old.clone()),
    ))
    .expect("json");
    assert_eq!(
        respond_to(&body, &fake)["allowed"],
        true,
        "finishing a deletion"
    );

    let mut changed = sample("minimal.yaml");
    changed["spec"]["workers"][0]["concurrency"] = json!(65);
    let body = serde_json::to_vec(&review_of(
        "UPDATE",
        "alice",
        Some(changed),
        Some(sample("minimal.yaml")),
    ))
    .expect("json");
    let r = respond_to(&body, &fake);
    assert_eq!(r["allowed"], false, "a spec change is validated");
    assert!(message(&r).contains("spec.workers[0].concurrency"));
}

#[test]
fn objects_that_are_not_manager_configs_get_a_clear_answer() {
    let fake = FakeReviewer::default();
    let mut rv = review_of(
        "CREATE",
        "alice",
        Some(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "team-a"}}),
        ),
        None,
    );
    rv["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "ConfigMap"});
    let r = respond_to(&serde_json::to_vec(&rv).expect("json"), &fake);
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 400);
    assert_eq!(r["status"]["reason"], "BadRequest");
    let m = message(&r);
    assert!(m.contains("not a ManagerConfig (core/v1 ConfigMap)"), "{m}");

    // Right request kind, wrong object inside.
    let mut mc = sample("minimal.yaml");
    mc["kind"] = json!("ConfigMap");
    let r = respond_to(&create(mc), &fake);
    assert_eq!(r["allowed"], false);
    assert!(message(&r).contains("not a ManagerConfig"), "{r}");
}

#[test]
fn bad_input_gets_a_plain_400() {
    let fake = FakeReviewer::default();
    let valid = review_of("CREATE", "alice", Some(sample("minimal.yaml")), None);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = valid.clone();
        f(&mut v);
        serde_json::to_vec(&v).expect("json")
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "empty"),
        (b"   \n".to_vec(), "empty"),
        (b"not json".to_vec(), "not valid JSON"),
        (b"{\"apiVersion\":".to_vec(), "not valid JSON"),
        (b"[1,2]".to_vec(), "an array, not an AdmissionReview"),
        (b"null".to_vec(), "null, not an AdmissionReview"),
        (
            with(&|v| v["apiVersion"] = json!("admission.k8s.io/v1beta1")),
            "unsupported AdmissionReview apiVersion \"admission.k8s.io/v1beta1\"",
        ),
        (
            with(&|v| v["kind"] = json!("Pod")),
            "kind \"Pod\", not \"AdmissionReview\"",
        ),
        (
            with(&|v| {
                v.as_object_mut().expect("object").remove("request");
            }),
            "has no request",
        ),
        (with(&|v| v["request"] = Value::Null), "has no request"),
        (with(&|v| v["request"] = json!("x")), "request is a string"),
        (
            with(&|v| {
                v["request"].as_object_mut().expect("object").remove("uid");
            }),
            "has no uid",
        ),
        (
            with(&|v| {
                v["request"]
                    .as_object_mut()
                    .expect("object")
                    .remove("object");
            }),
            "has no object, which a CREATE always carries",
        ),
        (
            with(&|v| v["request"]["object"] = json!([1])),
            "request.object is an array",
        ),
        (
            with(&|v| v["request"]["operation"] = json!("PATCH")),
            "malformed at request.operation",
        ),
        (
            with(&|v| v["request"]["kind"] = json!(7)),
            "malformed at request.kind",
        ),
    ];
    for (body, want) in cases {
        let o = run(&body, &fake);
        assert_eq!(
            o.status,
            StatusCode::BAD_REQUEST,
            "{want}: {}",
            o.body_text()
        );
        assert_eq!(o.content_type, TEXT);
        assert!(!o.allowed);
        let text = o.body_text();
        assert!(text.contains(want), "{text:?} should contain {want:?}");
    }
}

fn cross_namespace(user: &str) -> Vec<u8> {
    let mut mc = sample("minimal.yaml");
    mc["spec"]["leaderElection"] = json!({"leaseNamespace": "leases"});
    serde_json::to_vec(&review_of("CREATE", user, Some(mc), None)).expect("json")
}

#[test]
fn cross_namespace_lease_needs_access() {
    let fake = FakeReviewer::allowing(&[("alice", "leases")]);
    let r = respond_to(&cross_namespace("alice"), &fake);
    assert_eq!(r["allowed"], true, "{r}");
    let seen = fake.seen.lock().expect("lock")[0].clone();
    assert_eq!(seen.username.as_deref(), Some("alice"));
    assert_eq!(seen.uid.as_deref(), Some("u-1"));
    assert_eq!(
        seen.groups,
        Some(vec![
            "system:authenticated".to_string(),
            "team-a".to_string()
        ])
    );
    assert!(seen.extra.is_some_and(|e| e.contains_key("scopes")));

    let r = respond_to(&cross_namespace("bob"), &fake);
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 403);
    assert_eq!(r["status"]["reason"], "Forbidden");
    assert_eq!(
        message(&r),
        "ManagerConfig \"minimal\" is forbidden: spec.leaderElection.leaseNamespace: user \"bob\" may not create and update leases.coordination.k8s.io in namespace \"leases\", which a Lease outside the ManagerConfig's namespace (\"team-a\") requires"
    );
}

#[test]
fn access_review_failure_denies() {
    let fake = FakeReviewer {
        fail: true,
        ..FakeReviewer::default()
    };
    let r = respond_to(&cross_namespace("alice"), &fake);
    assert_eq!(r["allowed"], false);
    assert!(message(&r).contains("could not verify"), "{r}");
}

#[test]
fn same_namespace_needs_no_access_review() {
    let fake = FakeReviewer::default();
    let mut mc = sample("minimal.yaml");
    mc["spec"]["leaderElection"] = json!({"leaseNamespace": "team-a"});
    let r = respond_to(&create(mc), &fake);
    assert_eq!(r["allowed"], true);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn access_and_validity_problems_are_reported_together() {
    let fake = FakeReviewer::default();
    let mut mc = sample("minimal.yaml");
    mc["spec"]["leaderElection"] = json!({"leaseNamespace": "leases", "renewDeadline": "20s"});
    let r = respond_to(&create(mc), &fake);
    assert_eq!(r["status"]["code"], 422);
    let m = message(&r);
    assert!(m.contains("spec.leaderElection.renewDeadline"), "{m}");
    assert!(
        m.contains("spec.leaderElection.leaseNamespace: user \"alice\" may not"),
        "{m}"
    );
}

// ---- never panics, always answers -------------------------------------------------------

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::String),
        prop_oneof![
            Just(json!("CREATE")),
            Just(json!("UPDATE")),
            Just(json!("DELETE")),
            Just(json!("0s")),
            Just(json!("-1s")),
            Just(json!("9999999999h")),
            Just(json!("http://169.254.169.254/")),
            Just(json!("ManagerConfig")),
            Just(json!("manager-operator.io/v1alpha1")),
        ],
        Just(json!([])),
        Just(json!({})),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    Replace(Vec<u32>, Value),
    Remove(Vec<u32>),
    Insert(Vec<u32>, String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let path = proptest::collection::vec(any::<u32>(), 0..7);
    prop_oneof![
        (path.clone(), json_leaf()).prop_map(|(p, v)| Mutation::Replace(p, v)),
        path.clone().prop_map(Mutation::Remove),
        (path, "[a-zA-Z]{1,12}", json_leaf()).prop_map(|(p, k, v)| Mutation::Insert(p, k, v)),
    ]
}

/// Walks `path` (child indexes modulo the child count) and returns the node reached.
fn walk<'a>(v: &'a mut Value, path: &[u32]) -> &'a mut Value {
    // Find the JSON pointer immutably first, then borrow mutably once.
    let mut pointer = String::new();
    let mut cur: &Value = v;
    for &i in path {
        let next = match cur {
            Value::Object(m) if !m.is_empty() => m
                .iter()
                .nth(i as usize % m.len())
                .map(|(k, c)| (k.replace('~', "~0").replace('/', "~1"), c)),
            Value::Array(a) if !a.is_empty() => {
                let idx = i as usize % a.len();
                Some((idx.to_string(), &a[idx]))
            }
            _ => None,
        };
        let Some((segment, child)) = next else { break };
        pointer.push('/');
        pointer.push_str(&segment);
        cur = child;
    }
    if pointer.is_empty() {
        return v;
    }
    v.pointer_mut(&pointer).expect("pointer found above")
}

fn apply(v: &mut Value, m: &Mutation) {
    match m {
        Mutation::Replace(p, new) => *walk(v, p) = new.clone(),
        Mutation::Remove(p) => {
            if let Some((last, parent)) = p.split_last() {
                match walk(v, parent) {
                    Value::Object(map) if !map.is_empty() => {
                        let key = map.keys().nth(*last as usize % map.len()).cloned();
                        if let Some(k) = key {
                            map.remove(&k);
                        }
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let n = a.len();
                        a.remove(*last as usize % n);
                    }
                    _ => {}
                }
            }
        }
        Mutation::Insert(p, k, new) => {
            if let Value::Object(map) = walk(v, p) {
                map.insert(k.clone(), new.clone());
            }
        }
    }
}

fn seeds() -> Vec<Value> {
    let mut out = vec![];
    for s in ["minimal.yaml", "full.yaml", "invalid-three-rules.yaml"] {
        out.push(review_of("CREATE", "alice", Some(sample(s)), None));
        out.push(review_of(
            "UPDATE",
            "bob",
            Some(sample(s)),
            Some(sample("minimal.yaml")),
        ));
    }
    let mut cross = sample("full.yaml");
    cross["spec"]["leaderElection"]["leaseNamespace"] = json!("leases");
    out.push(review_of("CREATE", "alice", Some(cross), None));
    out
}

fn check_answer(body: &[u8]) -> Result<(), TestCaseError> {
    let fake = FakeReviewer::allowing(&[("alice", "leases")]);
    let o = run(body, &fake);
    prop_assert!(
        o.status == StatusCode::OK || o.status == StatusCode::BAD_REQUEST,
        "unexpected status {}",
        o.status
    );
    prop_assert!(!o.body.is_empty());
    if o.status == StatusCode::OK {
        let v: Value =
            serde_json::from_slice(&o.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(v["response"]["uid"].is_string());
        prop_assert_eq!(v["response"]["allowed"].as_bool(), Some(o.allowed));
        if !o.allowed {
            prop_assert!(
                !v["response"]["status"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .is_empty()
            );
        }
    } else {
        prop_assert_eq!(o.content_type, TEXT);
        prop_assert!(!o.allowed);
    }
    Ok(())
}

proptest! {
    // 512 cases in CI; `PROPTEST_CASES=N` for a longer run (docs/reliability.md).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_get_an_answer(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check_answer(&body)?;
    }

    #[test]
    fn mutated_reviews_get_an_answer(
        seed in 0usize..7,
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let seeds = seeds();
        let mut v = seeds[seed % seeds.len()].clone();
        for m in &mutations {
            apply(&mut v, m);
        }
        check_answer(&serde_json::to_vec(&v).map_err(|e| TestCaseError::fail(e.to_string()))?)?;
    }

    #[test]
    fn corrupted_bytes_get_an_answer(
        seed in 0usize..7,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let seeds = seeds();
        let mut bytes = serde_json::to_vec(&seeds[seed % seeds.len()]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        if let Some(c) = cut {
            let n = bytes.len();
            bytes.truncate(c % n);
        }
        check_answer(&bytes)?;
    }
}

/// Stored configs for the Lease-in-use check.
struct FakeClaims(Vec<std::sync::Arc<ManagerConfig>>);

impl LeaseClaims for FakeClaims {
    fn rival(&self, mc: &ManagerConfig) -> Option<std::sync::Arc<ManagerConfig>> {
        crate::claims::rival_owner(mc, &self.0, None)
    }
}

#[test]
fn a_second_config_on_a_used_lease_is_refused_naming_the_owner() {
    let mut alpha = sample("minimal.yaml");
    alpha["metadata"]["name"] = json!("alpha");
    alpha["metadata"]["uid"] = json!("uid-alpha");
    alpha["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    let stored: ManagerConfig = serde_json::from_value(alpha.clone()).expect("config");
    let claims = FakeClaims(vec![std::sync::Arc::new(stored)]);
    let fake = FakeReviewer::default();
    let run_with = |body: Vec<u8>| {
        let o = futures::executor::block_on(review_with_claims(
            &body,
            &HookPolicy::default(),
            &fake,
            Some(&claims),
        ));
        let v: Value = serde_json::from_slice(&o.body).expect("json");
        v["response"].clone()
    };
    let mut beta = sample("minimal.yaml");
    beta["metadata"]["name"] = json!("beta");
    beta["spec"]["leaderElection"]["leaseName"] = json!("alpha");
    let r = run_with(create(beta.clone()));
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["status"]["code"], 422, "{r}");
    assert!(
        message(&r).contains(
            "spec.leaderElection.leaseName: Lease team-a/alpha is already used by ManagerConfig team-a/alpha"
        ),
        "{r}"
    );
    // Its own Lease: admitted; the owner itself: admitted (an update of alpha).
    beta["spec"]["leaderElection"]["leaseName"] = json!("beta");
    assert_eq!(run_with(create(beta))["allowed"], true);
    let update = serde_json::to_vec(&review_of(
        "UPDATE",
        "alice",
        Some(alpha.clone()),
        Some({
            let mut old = alpha.clone();
            old["spec"]["startupTimeout"] = json!("61s");
            old
        }),
    ))
    .expect("json");
    assert_eq!(run_with(update)["allowed"], true);
}
