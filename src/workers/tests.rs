//! Unit tests: the hook call and its answers, and the reconcile's fence/backoff/requeue logic,
//! against a tiny hook server on 127.0.0.1.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::api::{DynamicObject, ObjectMeta, TypeMeta};
use kube::runtime::controller::Action;
use tokio::time::Instant;

use super::hook::{self, HookError, HookReply, HookRequest, ManagerRef};
use std::collections::{HashMap, HashSet};

use url::Url;

use super::backoff::RetryBackoff;
use super::delivery::*;
use super::*;
use crate::manager::fence::Fence;

#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
    location: Option<String>,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.into(),
        delay: Duration::ZERO,
        location: None,
    }
}

#[derive(Default)]
struct Srv {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<(serde_json::Value, HeaderMap)>>,
    /// The exact bytes of every body, in order.
    raw: Mutex<Vec<String>>,
}

async fn handle(State(s): State<Arc<Srv>>, headers: HeaderMap, body: String) -> Response {
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    s.seen.lock().unwrap().push((v, headers));
    s.raw.lock().unwrap().push(body);
    let r = s
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| reply(200, ""));
    tokio::time::sleep(r.delay).await;
    let status = StatusCode::from_u16(r.status).unwrap();
    match r.location {
        Some(l) => (status, [(axum::http::header::LOCATION, l)], r.body).into_response(),
        None => (status, r.body).into_response(),
    }
}

async fn server(replies: Vec<Reply>) -> (Arc<Srv>, Url) {
    let srv = Arc::new(Srv {
        replies: Mutex::new(replies.into()),
        ..Default::default()
    });
    let app = Router::new()
        .route("/hook", post(handle))
        .with_state(srv.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (srv, Url::parse(&format!("http://{addr}/hook")).unwrap())
}

fn body() -> HookRequest {
    HookRequest {
        api_version: hook::PROTOCOL.into(),
        event_type: hook::SYNC.into(),
        delivery_id: "msg_test".into(),
        attempt: 1,
        resource_version: Some("7".into()),
        generation: None,
        manager: ManagerRef {
            namespace: "team-a".into(),
            name: "inv".into(),
        },
        worker: "cms".into(),
        fencing_token: 4,
        holder: "pod-1".into(),
        object: serde_json::json!({"metadata": {"name": "x"}}),
    }
}

fn unsigned() -> hook::Delivery<'static> {
    hook::Delivery {
        id: "msg_test",
        keys: None,
    }
}

fn loopback_policy() -> crate::validation::HookPolicy {
    crate::validation::HookPolicy {
        allow_loopback: true,
        ..Default::default()
    }
}

fn http() -> hook::HookClient {
    hook::http_client(&loopback_policy()).unwrap()
}

/// A hook client whose resolver answers `names` (name → address) and judges by `policy`.
fn http_resolving(
    policy: &crate::validation::HookPolicy,
    names: &[(&str, &str)],
) -> hook::HookClient {
    let mut fixed = dns::FixedLookup::default();
    for (n, a) in names {
        fixed
            .names
            .insert((*n).to_string(), vec![a.parse().unwrap()]);
    }
    hook::http_client_with(policy, Arc::new(fixed)).unwrap()
}

#[tokio::test]
async fn posts_the_documented_json_body() {
    let (srv, url) = server(vec![]).await;
    let r = hook::call(&http(), &url, Duration::from_secs(5), &body(), unsigned()).await;
    assert_eq!(
        r,
        Ok(HookReply {
            code: 200,
            requeue_after: None
        })
    );
    let seen = srv.seen.lock().unwrap();
    let (v, headers) = &seen[0];
    assert_eq!(
        v,
        &serde_json::json!({
            "apiVersion": "hooks.manager-operator.io/v1",
            "type": "Sync",
            "deliveryId": "msg_test",
            "attempt": 1,
            "resourceVersion": "7",
            "manager": {"namespace": "team-a", "name": "inv"},
            "worker": "cms",
            "fencingToken": 4,
            "holder": "pod-1",
            "object": {"metadata": {"name": "x"}},
        })
    );
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test]
async fn answers_map_to_success_requeue_or_failure() {
    let (_srv, url) = server(vec![
        reply(200, r#"{"requeueAfterSeconds": 3}"#),
        reply(204, ""),
        reply(200, "ok, not json"),
        reply(200, r#"{"requeueAfterSeconds": 0}"#),
        reply(202, r#"{"requeueAfterSeconds": 1.5, "other": true}"#),
        reply(500, "boom"),
        reply(404, &"x".repeat(1000)),
        Reply {
            location: Some("http://169.254.169.254/".into()),
            ..reply(302, "")
        },
    ])
    .await;
    let c = http();
    let t = Duration::from_secs(5);
    let b = body();
    let ok = |s: Option<u64>, code| {
        Ok(HookReply {
            code,
            requeue_after: s.map(Duration::from_millis),
        })
    };
    assert_eq!(
        hook::call(&c, &url, t, &b, unsigned()).await,
        ok(Some(3000), 200)
    );
    assert_eq!(hook::call(&c, &url, t, &b, unsigned()).await, ok(None, 204));
    assert_eq!(hook::call(&c, &url, t, &b, unsigned()).await, ok(None, 200));
    assert_eq!(hook::call(&c, &url, t, &b, unsigned()).await, ok(None, 200));
    assert_eq!(
        hook::call(&c, &url, t, &b, unsigned()).await,
        ok(Some(1500), 202)
    );
    let e = hook::call(&c, &url, t, &b, unsigned()).await.unwrap_err();
    assert_eq!(
        e,
        HookError::Status {
            code: 500,
            body: "boom".into(),
            retry_after: None,
        }
    );
    assert_eq!(e.code_label(), "500");
    match hook::call(&c, &url, t, &b, unsigned()).await {
        Err(HookError::Status {
            code: 404, body, ..
        }) => assert_eq!(body.len(), 200),
        other => panic!("{other:?}"),
    }
    // Redirects are never followed (they could lead past the hook policy).
    match hook::call(&c, &url, t, &b, unsigned()).await {
        Err(e @ HookError::Status { code: 302, .. }) => assert_eq!(e.code_label(), "302"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn timeout_and_connection_errors_are_failures() {
    let (_srv, url) = server(vec![Reply {
        delay: Duration::from_secs(5),
        ..reply(200, "")
    }])
    .await;
    let t0 = Instant::now();
    let e = hook::call(
        &http(),
        &url,
        Duration::from_millis(300),
        &body(),
        unsigned(),
    )
    .await
    .unwrap_err();
    let took = t0.elapsed();
    assert_eq!(e, HookError::Timeout(Duration::from_millis(300)));
    assert_eq!(e.code_label(), "error");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let url = Url::parse(&format!("http://{addr}/hook")).unwrap();
    match hook::call(&http(), &url, Duration::from_secs(5), &body(), unsigned()).await {
        Err(e @ HookError::Transport(_)) => assert_eq!(e.code_label(), "error"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn requeue_parsing() {
    assert_eq!(hook::parse_requeue(b""), None);
    assert_eq!(hook::parse_requeue(b"  \n"), None);
    assert_eq!(hook::parse_requeue(b"{}"), None);
    assert_eq!(hook::parse_requeue(b"[1]"), None);
    assert_eq!(
        hook::parse_requeue(br#"{"requeueAfterSeconds": "5"}"#),
        None
    );
    assert_eq!(hook::parse_requeue(br#"{"requeueAfterSeconds": -1}"#), None);
    assert_eq!(
        hook::parse_requeue(br#"{"requeueAfterSeconds": 10}"#),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        hook::parse_requeue(br#"{"requeueAfterSeconds": 1e12}"#),
        Some(hook::MAX_REQUEUE)
    );
}

#[test]
fn requeue_has_a_floor_so_a_hook_cannot_make_a_hot_loop() {
    assert_eq!(hook::MIN_REQUEUE, Duration::from_secs(1));
    for tiny in ["0.001", "1e-9", "0.5", "0.999999"] {
        let body = format!(r#"{{"requeueAfterSeconds": {tiny}}}"#);
        assert_eq!(
            hook::parse_requeue(body.as_bytes()),
            Some(hook::MIN_REQUEUE),
            "{tiny}"
        );
    }
    assert_eq!(
        hook::parse_requeue(br#"{"requeueAfterSeconds": 1.25}"#),
        Some(Duration::from_millis(1250))
    );
}

#[tokio::test]
async fn names_resolving_to_refused_addresses_are_refused_at_connect_time() {
    let (srv, url) = server(vec![reply(200, ""); 4]).await;
    let port = url.port().unwrap();
    let names = [
        ("hook.test.invalid", "127.0.0.1"),
        ("imds.test.invalid", "169.254.169.254"),
        ("nat64.test.invalid", "64:ff9b::a9fe:a9fe"),
    ];
    let strict = http_resolving(&crate::validation::HookPolicy::default(), &names);
    let at = |host: &str| Url::parse(&format!("http://{host}:{port}/hook")).unwrap();
    let t = Duration::from_secs(5);
    for (host, addr, rule) in [
        ("hook.test.invalid", "127.0.0.1", "loopback"),
        ("imds.test.invalid", "169.254.169.254", "link-local"),
        ("nat64.test.invalid", "64:ff9b::a9fe:a9fe", "link-local"),
    ] {
        let e = hook::call(&strict, &at(host), t, &body(), unsigned())
            .await
            .unwrap_err();
        assert_eq!(e.code_label(), "refused", "{host}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(host) && text.contains(addr) && text.contains(&format!("rule {rule}")),
            "{text}"
        );
    }
    // A literal loopback URL is judged before the request (reqwest does not resolve literals).
    let e = hook::call(&strict, &url, t, &body(), unsigned())
        .await
        .unwrap_err();
    assert_eq!(e.code_label(), "refused", "{e}");
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    assert_eq!(
        srv.seen.lock().unwrap().len(),
        0,
        "nothing reached the hook"
    );

    // With loopback allowed the same name reaches the hook; metadata stays refused.
    let lenient = http_resolving(&loopback_policy(), &names);
    let r = hook::call(&lenient, &at("hook.test.invalid"), t, &body(), unsigned()).await;
    assert!(r.is_ok(), "{r:?}");
    let e = hook::call(&lenient, &at("imds.test.invalid"), t, &body(), unsigned())
        .await
        .unwrap_err();
    assert_eq!(e.code_label(), "refused");
    assert_eq!(srv.seen.lock().unwrap().len(), 1);
}

/// An API handle that is never called (no finalizer in these tests); nothing listens there.
fn unused_api() -> Api<DynamicObject> {
    let cfg = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = kube::Client::try_from(cfg).unwrap();
    let ar = kube::api::ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
    Api::namespaced_with(client, "team-a", &ar)
}

fn shared(url: Url, fence: Fence, resync: Option<Duration>, metrics: &Metrics) -> Arc<Shared> {
    let m = metrics;
    let l3 = ["team-a", "inv", "cms"];
    Arc::new(Shared {
        manager: ManagerRef {
            namespace: "team-a".into(),
            name: "inv".into(),
        },
        worker: "cms".into(),
        identity: "pod-1".into(),
        fence,
        http: Arc::new(std::sync::RwLock::new(http())),
        url,
        timeout: Duration::from_secs(2),
        resync,
        types: TypeMeta {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
        },
        backoff: RetryBackoff::default(),
        delivered: Mutex::new(HashMap::new()),
        in_flight: Mutex::new(HashSet::new()),
        ids: signing::DeliveryIds::default(),
        keys: None,
        finalizer: None,
        api: unused_api(),
        tombstones: deletions::Tombstones::new(false, "team-a/inv/cms".into()).0,
        deletion_slots: tokio::sync::Semaphore::new(4),
        hook_errors: errors::HookErrors::default(),
        metrics: Some(WorkerMetrics {
            success: m
                .reconcile_total
                .with_label_values(&["team-a", "inv", "cms", "success"]),
            error: m
                .reconcile_total
                .with_label_values(&["team-a", "inv", "cms", "error"]),
            duration: m.reconcile_duration_seconds.with_label_values(&l3),
            active: m.workers_active.with_label_values(&l3),
            queue: m.queue_depth.with_label_values(&l3),
            hook: m.hook_request_duration_seconds.clone(),
        }),
        hook_slots: Arc::new(tokio::sync::Semaphore::new(4)),
    })
}

#[test]
fn hook_codes_are_a_fixed_set_of_classes() {
    let mut seen = HashSet::new();
    for code in 0..1000u32 {
        seen.insert(code_class(&code.to_string()));
    }
    seen.insert(code_class("error"));
    seen.insert(code_class("refused"));
    seen.insert(code_class("anything else"));
    let mut v: Vec<_> = seen.into_iter().collect();
    v.sort();
    assert_eq!(
        v,
        [
            "1xx", "2xx", "3xx", "4xx", "5xx", "error", "other", "refused"
        ]
    );
}

fn cm(name: &str, rv: &str) -> Arc<DynamicObject> {
    Arc::new(DynamicObject {
        types: None,
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("team-a".into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        },
        data: serde_json::json!({"data": {"k": "v"}}),
    })
}

fn fence(token: i64) -> Fence {
    Fence::new(token, Instant::now() + Duration::from_secs(60))
}

#[tokio::test]
async fn reconcile_backs_off_per_object_and_resets_on_success() {
    let (srv, url) = server(vec![
        reply(500, "a"),
        reply(503, "b"),
        reply(500, "c"),
        reply(200, ""),
        reply(500, "d"),
    ])
    .await;
    let metrics = Metrics::new().unwrap();
    let s = shared(url, fence(9), None, &metrics);
    let obj = cm("x", "1");
    let mut delays = Vec::new();
    for _ in 0..3 {
        match reconcile(obj.clone(), s.clone()).await {
            Err(e @ ReconcileError::Hook { .. }) => {
                let a = error_policy(obj.clone(), &e, s.clone());
                if let ReconcileError::Hook {
                    attempt, retry_in, ..
                } = e
                {
                    delays.push((attempt, retry_in));
                    assert_eq!(a, Action::requeue(retry_in));
                }
            }
            other => panic!("{other:?}"),
        }
    }
    // 500 ms doubling, each plus up to 10 % jitter (crate::backoff).
    let want = [
        (1, Duration::from_millis(500)),
        (2, Duration::from_secs(1)),
        (3, Duration::from_secs(2)),
    ];
    assert_eq!(delays.len(), want.len(), "{delays:?}");
    for ((n, got), (wn, w)) in delays.iter().zip(want) {
        assert_eq!(*n, wn);
        assert!(
            *got >= w && *got < w.mul_f64(1.0 + crate::backoff::JITTER),
            "{delays:?}"
        );
    }
    // Success: no resync configured → wait for a change; the failure count is forgotten.
    assert_eq!(
        reconcile(obj.clone(), s.clone()).await.unwrap(),
        Action::await_change()
    );
    assert_eq!(s.backoff.attempts("team-a/x"), 0);
    assert_eq!(
        s.delivered
            .lock()
            .unwrap()
            .get("team-a/x")
            .map(String::as_str),
        Some("1")
    );
    match reconcile(obj.clone(), s.clone()).await {
        Err(ReconcileError::Hook {
            attempt: 1,
            retry_in,
            ..
        }) => {
            assert!(retry_in >= Duration::from_millis(500) && retry_in < Duration::from_millis(550))
        }
        other => panic!("{other:?}"),
    }
    // Every call carried the token, the holder and the object with apiVersion/kind filled in.
    let seen = srv.seen.lock().unwrap();
    assert_eq!(seen.len(), 5);
    for (v, _) in seen.iter() {
        assert_eq!(v["fencingToken"], 9);
        assert_eq!(v["holder"], "pod-1");
        assert_eq!(v["worker"], "cms");
        assert_eq!(v["object"]["kind"], "ConfigMap");
        assert_eq!(v["object"]["apiVersion"], "v1");
        assert_eq!(v["object"]["metadata"]["name"], "x");
        assert_eq!(v["object"]["data"]["k"], "v");
    }
    let ok = metrics
        .reconcile_total
        .with_label_values(&["team-a", "inv", "cms", "success"])
        .get();
    let err = metrics
        .reconcile_total
        .with_label_values(&["team-a", "inv", "cms", "error"])
        .get();
    assert_eq!((ok, err), (1, 4));
    let text = metrics.encode().unwrap();
    assert!(text.contains("manager_operator_hook_request_duration_seconds_count{code=\"5xx\"} 4"));
    assert!(text.contains("manager_operator_hook_request_duration_seconds_count{code=\"2xx\"} 1"));
    assert_eq!(
        metrics
            .workers_active
            .with_label_values(&["team-a", "inv", "cms"])
            .get(),
        0
    );
}

#[tokio::test]
async fn reconcile_requeues_as_asked_or_on_resync() {
    let (_srv, url) = server(vec![
        reply(200, r#"{"requeueAfterSeconds": 7}"#),
        reply(200, ""),
    ])
    .await;
    let metrics = Metrics::new().unwrap();
    let s = shared(url, fence(1), Some(Duration::from_secs(30)), &metrics);
    let obj = cm("x", "1");
    assert_eq!(
        reconcile(obj.clone(), s.clone()).await.unwrap(),
        Action::requeue(Duration::from_secs(7))
    );
    assert_eq!(
        reconcile(obj.clone(), s.clone()).await.unwrap(),
        Action::requeue(Duration::from_secs(30))
    );
}

#[tokio::test]
async fn a_fenced_term_never_calls_the_hook() {
    let (srv, url) = server(vec![]).await;
    let metrics = Metrics::new().unwrap();
    let f = fence(3);
    let s = shared(url.clone(), f.clone(), None, &metrics);
    f.revoke();
    let obj = cm("x", "1");
    match reconcile(obj.clone(), s.clone()).await {
        Err(e @ ReconcileError::Fenced(_)) => {
            assert_eq!(
                error_policy(obj.clone(), &e, s.clone()),
                Action::await_change()
            )
        }
        other => panic!("{other:?}"),
    }
    // Expired on the monotonic clock (a paused process): same.
    let expired = Fence::new(4, Instant::now());
    let s2 = shared(url, expired, None, &metrics);
    assert!(matches!(
        reconcile(obj, s2).await,
        Err(ReconcileError::Fenced(_))
    ));
    assert!(srv.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn revocation_abandons_an_in_flight_call() {
    let (_srv, url) = server(vec![Reply {
        delay: Duration::from_secs(10),
        ..reply(200, "")
    }])
    .await;
    let metrics = Metrics::new().unwrap();
    let f = fence(5);
    let s = shared(url, f.clone(), None, &metrics);
    let t0 = Instant::now();
    let call = tokio::spawn(reconcile(cm("x", "1"), s.clone()));
    // Wait until the call is in flight, then lose the lease.
    while s.in_flight.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.revoke();
    let r = call.await.unwrap();
    assert!(matches!(r, Err(ReconcileError::Fenced(_))), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(s.in_flight.lock().unwrap().is_empty());
    assert_eq!(
        metrics
            .workers_active
            .with_label_values(&["team-a", "inv", "cms"])
            .get(),
        0
    );
}

#[test]
fn impersonation_sets_only_the_user() {
    let mut base = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
    base.auth_info.impersonate_groups = Some(vec!["system:masters".into()]);
    let c = impersonating(&base, &service_account_user("team-a", "inv"));
    assert_eq!(
        c.auth_info.impersonate.as_deref(),
        Some("system:serviceaccount:team-a:inv")
    );
    assert_eq!(c.auth_info.impersonate_groups, None);
    assert_eq!(c.cluster_url, base.cluster_url);
}

/// Verifies a `webhook-signature` header the way a hook would (any `v1` entry made with `key`).
fn verifies(key: &[u8], id: &str, ts: &str, body: &str, header: &str) -> bool {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    header.split(' ').any(|e| {
        let Some(sig) = e
            .strip_prefix("v1,")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        else {
            return false;
        };
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("{id}.{ts}.{body}").as_bytes());
        mac.verify_slice(&sig).is_ok()
    })
}

#[tokio::test]
async fn signed_reconciles_keep_the_delivery_id_across_retries_and_sign_the_exact_body() {
    let (srv, url) = server(vec![
        reply(500, "a"),
        reply(503, "b"),
        reply(200, ""),
        reply(200, ""),
    ])
    .await;
    let metrics = Metrics::new().unwrap();
    let old = [1u8; 32];
    let new = [2u8; 32];
    let cell = signing::KeyCell::default();
    cell.set(signing::KeySet {
        current: signing::SigningKey::parse(&new).unwrap(),
        previous: Some(signing::SigningKey::parse(&old).unwrap()),
    });
    let mut s = shared(url, fence(2), Some(Duration::from_secs(60)), &metrics);
    Arc::get_mut(&mut s).unwrap().keys = Some(cell);
    let obj = cm("x", "7");
    // Two failures, then success: one delivery, three attempts.
    for _ in 0..2 {
        assert!(matches!(
            reconcile(obj.clone(), s.clone()).await,
            Err(ReconcileError::Hook { .. })
        ));
    }
    reconcile(obj.clone(), s.clone()).await.unwrap();
    // The resync of the same version is a new delivery.
    reconcile(obj.clone(), s.clone()).await.unwrap();

    let seen = srv.seen.lock().unwrap();
    let raw = srv.raw.lock().unwrap();
    assert_eq!(seen.len(), 4);
    let ids: Vec<&str> = seen
        .iter()
        .map(|(_, h)| h["webhook-id"].to_str().unwrap())
        .collect();
    assert!(ids[0].starts_with("msg_"));
    assert_eq!(ids[0], ids[1], "a retry keeps the delivery id");
    assert_eq!(ids[1], ids[2], "a retry keeps the delivery id");
    assert_ne!(ids[2], ids[3], "a resync after success is a new delivery");
    let now = signing::unix_now();
    for ((v, h), body) in seen.iter().zip(raw.iter()) {
        let ts = h["webhook-timestamp"].to_str().unwrap();
        assert!(
            (ts.parse::<i64>().unwrap() - now).abs() <= 5,
            "{ts} vs {now}"
        );
        let sig = h["webhook-signature"].to_str().unwrap();
        assert_eq!(sig.split(' ').count(), 2, "two keys, two signatures: {sig}");
        let id = h["webhook-id"].to_str().unwrap();
        assert!(verifies(&old, id, ts, body, sig));
        assert!(verifies(&new, id, ts, body, sig));
        assert!(!verifies(&[3u8; 32], id, ts, body, sig));
        // A forged body with the largest token does not verify with these headers.
        let forged = body.replace(r#""fencingToken":2"#, r#""fencingToken":2147483647"#);
        assert_ne!(&forged, body);
        assert!(!verifies(&new, id, ts, &forged, sig));
        assert_eq!(v["fencingToken"], 2);
        // The body names the delivery and the attempt (docs/hooks.md).
        assert_eq!(v["apiVersion"], hook::PROTOCOL);
        assert_eq!(v["type"], "Sync");
        assert_eq!(v["deliveryId"], id);
        assert_eq!(v["resourceVersion"], "7");
    }
    let attempts: Vec<u64> = seen
        .iter()
        .map(|(v, _)| v["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(
        attempts,
        [1, 2, 3, 1],
        "attempts of one delivery, then a new one"
    );
}

#[test]
fn retry_after_has_a_floor_and_a_cap() {
    assert_eq!(
        hook::parse_retry_after(br#"{"retryAfterSeconds": 30}"#),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        hook::parse_retry_after(br#"{"retryAfterSeconds": 0.01}"#),
        Some(hook::MIN_REQUEUE)
    );
    assert_eq!(
        hook::parse_retry_after(br#"{"retryAfterSeconds": 1e9}"#),
        Some(hook::MAX_RETRY_AFTER)
    );
    assert_eq!(
        hook::parse_retry_after(br#"{"retryAfterSeconds": -1}"#),
        None
    );
    assert_eq!(hook::parse_retry_after(b"oops"), None);
    // requeueAfterSeconds is the success field, not this one.
    assert_eq!(
        hook::parse_retry_after(br#"{"requeueAfterSeconds": 5}"#),
        None
    );
}

#[tokio::test]
async fn a_failed_call_is_retried_when_the_hook_asks() {
    let (_srv, url) = server(vec![
        reply(503, r#"{"retryAfterSeconds": 42}"#),
        reply(500, "x"),
    ])
    .await;
    let metrics = Metrics::new().unwrap();
    let s = shared(url, fence(2), None, &metrics);
    let obj = cm("x", "7");
    match reconcile(obj.clone(), s.clone()).await {
        Err(ReconcileError::Hook {
            retry_in,
            attempt: 1,
            ..
        }) => {
            assert_eq!(retry_in, Duration::from_secs(42))
        }
        other => panic!("{other:?}"),
    }
    // Without the field, the exponential backoff again (attempt 2: 1 s plus jitter).
    match reconcile(obj, s).await {
        Err(ReconcileError::Hook {
            retry_in,
            attempt: 2,
            ..
        }) => {
            assert!(retry_in >= Duration::from_secs(1) && retry_in < Duration::from_millis(1100))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unsigned_calls_carry_id_and_timestamp_but_no_signature() {
    let (srv, url) = server(vec![]).await;
    hook::call(&http(), &url, Duration::from_secs(5), &body(), unsigned())
        .await
        .unwrap();
    let seen = srv.seen.lock().unwrap();
    let h = &seen[0].1;
    assert_eq!(h["webhook-id"], "msg_test");
    assert!(
        h["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse::<i64>()
            .is_ok()
    );
    assert!(h.get("webhook-signature").is_none());
}

#[test]
fn typed_object_encodes_like_the_object_with_its_types() {
    let o = cm("a", "7");
    let types = TypeMeta {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
    };
    let typed = hook::TypedObject {
        types: &types,
        metadata: &o.metadata,
        data: &o.data,
    };
    let mut whole = (*o).clone();
    whole.types = Some(types.clone());
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        serde_json::to_value(&whole).unwrap()
    );
}
