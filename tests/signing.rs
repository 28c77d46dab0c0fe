//! Signed hook calls on the real control plane (docs/hooks.md, signed calls).
//!
//! A real `manager-operator run` process (webhook off, loopback hooks allowed, the signing
//! Secret re-read every second) calls a hook that is *not* this crate's code: the Python
//! verifier of `e2e/hook_verifier.py`, whose `verify` function docs/hooks.md quotes verbatim.
//! It verifies the Standard Webhooks signature with the secrets it is given, drops replayed
//! ids and calls with a lower fencing token, and records every call for the test.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use manager_operator::api::ManagerConfig;
use serde_json::{Value, json};
use support::{ManagerConfigBuilder, TIMEOUT, WorkerBuilder, kubectl_ok, rbac, wait_for};

const SA: &str = "worker";
const SECRET: &str = "hook-signing";
const KEY: &str = "signing-key";
/// How long a startup failure may take to show up (status, Event, metric).
const SURFACE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// The verifying hook (e2e/hook_verifier.py).

fn verifier_script() -> PathBuf {
    support::repo_root().join("e2e/hook_verifier.py")
}

struct Verifier {
    child: Child,
    base: String,
}

impl Verifier {
    fn start(secrets: &[&str]) -> Verifier {
        let mut cmd = Command::new("python3");
        cmd.arg(verifier_script());
        for s in secrets {
            cmd.args(["--secret", s]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (the verifying hook)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("verifier said {line:?}"))
            .to_string();
        Verifier { child, base }
    }

    fn url(&self) -> String {
        format!("{}/hook", self.base)
    }

    async fn calls(&self) -> Vec<Value> {
        let (_, body) = support::http_get(&format!("{}/calls", self.base))
            .await
            .unwrap();
        serde_json::from_str(&body).unwrap()
    }

    async fn set_secrets(&self, secrets: &[&str]) {
        let r = support::loopback_http()
            .post(format!("{}/secrets", self.base))
            .json(&secrets)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// POSTs a hand-made call (a forger's) and returns the status.
    async fn post(&self, headers: &[(&str, &str)], body: &str) -> u16 {
        let mut req = support::loopback_http()
            .post(self.url())
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Waits for a call about `object` recorded after the first `after` calls that satisfies
    /// `ok`; returns it.
    async fn wait_call(&self, what: &str, after: usize, ok: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, TIMEOUT, || async {
            let calls = self.calls().await;
            calls
                .iter()
                .skip(after)
                .find(|c| ok(c))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "calls after #{after}: {:?}",
                        summary(&calls[after.min(calls.len())..])
                    )
                })
        })
        .await
        .unwrap()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn summary(calls: &[Value]) -> Vec<String> {
    calls
        .iter()
        .map(|c| {
            format!(
                "{} {} token={} sigs={} {}",
                c["object"], c["outcome"], c["token"], c["signatures"], c["id"]
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Cluster fixtures.

fn whsec(bytes: &[u8]) -> String {
    format!("whsec_{}", STANDARD.encode(bytes))
}

fn random_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    whsec(&b)
}

fn grant_secret_get(ns: &str) {
    rbac::grant(
        ns,
        SA,
        "get-signing-secret",
        &format!(
            "- apiGroups: ['']\n  resources: [secrets]\n  resourceNames: [{SECRET}]\n  verbs: [get]\n"
        ),
    );
}

async fn put_secret(client: &kube::Client, ns: &str, data: &[(&str, &str)]) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    // Replace the whole data map (a removed key must go away).
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    match api.get_opt(SECRET).await.unwrap() {
        None => {
            api.create(&PostParams::default(), &secret).await.unwrap();
        }
        Some(mut old) => {
            old.data = secret.data;
            api.replace(SECRET, &PostParams::default(), &old)
                .await
                .unwrap();
        }
    }
}

async fn touch_cm(client: &kube::Client, ns: &str, name: &str, value: &str) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "signed"}}, "data": {"v": value}});
    api.patch(
        name,
        &PatchParams::apply("signing-test").force(),
        &Patch::Apply(&cm),
    )
    .await
    .unwrap();
}

/// Config `signed`: worker `cms` watching ConfigMaps `app=signed`, calls signed with the
/// Secret's key.
fn config(ns: &str, hook_url: &str) -> ManagerConfigBuilder {
    ManagerConfigBuilder::new(ns, "signed")
        .service_account(SA)
        .worker(
            WorkerBuilder::new("cms")
                .selector("app=signed")
                .hook(hook_url)
                .timeout("2s")
                .signing_secret(SECRET, KEY),
        )
}

fn ready(mc: &ManagerConfig) -> Option<&Condition> {
    mc.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
}

async fn wait_ready(api: &Api<ManagerConfig>, status: &str, reason: &str) -> Condition {
    wait_for(&format!("Ready={status} {reason}"), TIMEOUT, || async {
        let mc = api.get("signed").await.map_err(|e| e.to_string())?;
        match ready(&mc) {
            Some(c) if c.status == status && c.reason == reason => Ok(c.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap()
}

async fn wait_event(client: &kube::Client, ns: &str, type_: &str, reason: &str) -> String {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("{type_} Event {reason}"), SURFACE, || async {
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .iter()
            .find(|e| {
                e.type_.as_deref() == Some(type_)
                    && e.reason.as_deref() == Some(reason)
                    && e.regarding
                        .as_ref()
                        .is_some_and(|r| r.name.as_deref() == Some("signed"))
            })
            .map(|e| e.note.clone().unwrap_or_default())
            .ok_or_else(|| format!("{} events", list.items.len()))
    })
    .await
    .unwrap()
}

struct Fixture {
    client: kube::Client,
    ns: String,
    api: Api<ManagerConfig>,
}

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        support::ensure_crd();
        let client = support::admin_client().await;
        let ns = support::fresh_namespace(&client, prefix).await;
        rbac::service_account(&ns, SA);
        rbac::grant_watch(&ns, SA, "configmaps");
        let api = Api::namespaced(client.clone(), &ns);
        Fixture { client, ns, api }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// The verifier docs/hooks.md shows is the one the tests run, and it passes the Standard
/// Webhooks known vector.
#[test]
fn the_documented_verifier_is_the_tested_one() {
    let out = Command::new("python3")
        .arg(verifier_script())
        .arg("--self-test")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "self-test: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = std::fs::read_to_string(verifier_script()).unwrap();
    let begin = script.find("# --- verify: begin ---\n").unwrap();
    let end = script.find("# --- verify: end ---").unwrap();
    let block = &script[begin + "# --- verify: begin ---\n".len()..end];
    let docs = std::fs::read_to_string(support::repo_root().join("docs/hooks.md")).unwrap();
    assert!(
        docs.contains(block),
        "docs/hooks.md must quote e2e/hook_verifier.py's verify block verbatim:\n{block}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_calls_verify_forgeries_fail_and_rotation_needs_no_restart() {
    let fx = Fixture::new("sign-rotate").await;
    grant_secret_get(&fx.ns);
    let old = random_secret();
    let new = random_secret();
    put_secret(&fx.client, &fx.ns, &[(KEY, &old)]).await;
    let hook = Verifier::start(&[&old]);
    touch_cm(&fx.client, &fx.ns, "obj-0", "1").await;
    let _op = support::operator()
        .namespace(&fx.ns)
        .args(["--hook-signing-refresh-period", "1s"])
        .start()
        .await;
    config(&fx.ns, &hook.url()).apply();

    // 1. Real calls verify with the Secret's key.
    let first = hook
        .wait_call("an accepted call for obj-0", 0, |c| {
            c["object"] == "obj-0" && c["outcome"] == "accepted"
        })
        .await;
    assert_eq!(first["signatures"], 1);
    let token = first["token"].as_i64().unwrap();
    wait_ready(&fx.api, "True", "Running").await;
    assert!(
        hook.calls()
            .await
            .iter()
            .all(|c| c["outcome"] == "accepted"),
        "{:?}",
        summary(&hook.calls().await)
    );

    // 2. Forgeries. A pod that can reach the hook but does not hold the key:
    let body: Value = serde_json::from_str(first["body"].as_str().unwrap()).unwrap();
    let mut forged = body.clone();
    forged["fencingToken"] = json!(2147483647);
    let forged = forged.to_string();
    let now = manager_operator::workers::signing::unix_now().to_string();
    // unsigned,
    assert_eq!(hook.post(&[], &forged).await, 401);
    assert_eq!(
        hook.post(
            &[("webhook-id", "msg_forged"), ("webhook-timestamp", &now)],
            &forged
        )
        .await,
        401
    );
    // signed with another key,
    let wrong = manager_operator::workers::signing::SigningKey::parse(random_secret().as_bytes())
        .unwrap()
        .sign("msg_forged", now.parse().unwrap(), forged.as_bytes());
    assert_eq!(
        hook.post(
            &[
                ("webhook-id", "msg_forged"),
                ("webhook-timestamp", &now),
                ("webhook-signature", &wrong)
            ],
            &forged
        )
        .await,
        401
    );
    // a real call's headers on a changed body,
    let real_headers = [
        ("webhook-id", first["id"].as_str().unwrap()),
        ("webhook-timestamp", first["timestamp"].as_str().unwrap()),
        ("webhook-signature", first["signature"].as_str().unwrap()),
    ];
    assert_eq!(hook.post(&real_headers, &forged).await, 401);
    // and a verbatim replay of a real call: answered, not processed again.
    let n = hook.calls().await.len();
    assert_eq!(
        hook.post(&real_headers, first["body"].as_str().unwrap())
            .await,
        200
    );
    assert_eq!(hook.calls().await[n]["outcome"], "duplicate");
    // The real leader is not locked out: its next call is accepted with its own token.
    let n = hook.calls().await.len();
    touch_cm(&fx.client, &fx.ns, "obj-0", "2").await;
    let next = hook
        .wait_call("the leader's next call", n, |c| c["object"] == "obj-0")
        .await;
    assert_eq!(next["outcome"], "accepted", "{next}");
    assert_eq!(next["token"].as_i64().unwrap(), token);

    // 3. Rotation, hook first: the hook now accepts only the new secret, the operator still
    // signs with the old one → refused; the operator retries the same delivery.
    hook.set_secrets(&[&new]).await;
    let n = hook.calls().await.len();
    touch_cm(&fx.client, &fx.ns, "obj-0", "3").await;
    let refused = hook
        .wait_call("a call refused by the rotated hook", n, |c| {
            c["object"] == "obj-0" && c["outcome"] == "rejected"
        })
        .await;
    assert_eq!(refused["signatures"], 1);
    // The Secret gets the new key and keeps the old one as .previous: no restart.
    let rotated = Instant::now();
    let prev_key = format!("{KEY}.previous");
    put_secret(&fx.client, &fx.ns, &[(KEY, &new), (&prev_key, &old)]).await;
    let accepted = hook
        .wait_call("the retried delivery accepted after the rotation", n, |c| {
            c["object"] == "obj-0" && c["outcome"] == "accepted"
        })
        .await;
    eprintln!(
        "[timing] rotation: first call verified by the new key {:?} after the Secret update",
        rotated.elapsed()
    );
    assert_eq!(
        accepted["signatures"], 2,
        "both signatures during the rotation"
    );
    assert_eq!(
        accepted["id"], refused["id"],
        "the retries of one delivery keep their webhook-id"
    );
    let attempts: Vec<Value> = hook.calls().await[n..]
        .iter()
        .filter(|c| c["object"] == "obj-0")
        .cloned()
        .collect();
    assert!(
        attempts.iter().all(|c| c["id"] == refused["id"]),
        "{:?}",
        summary(&attempts)
    );
    // A hook still on the old secret accepts the same calls (both signatures travel).
    hook.set_secrets(&[&old]).await;
    let n = hook.calls().await.len();
    touch_cm(&fx.client, &fx.ns, "obj-0", "4").await;
    let c = hook
        .wait_call("a call verified by the old key", n, |c| {
            c["object"] == "obj-0"
        })
        .await;
    assert_eq!(
        (c["outcome"].as_str(), c["signatures"].as_i64()),
        (Some("accepted"), Some(2))
    );

    // 4. End of the rotation: the hook has the new secret, `.previous` goes away.
    hook.set_secrets(&[&new]).await;
    put_secret(&fx.client, &fx.ns, &[(KEY, &new)]).await;
    let n = hook.calls().await.len();
    let c = wait_for("one signature again", TIMEOUT, || async {
        touch_cm(
            &fx.client,
            &fx.ns,
            "obj-0",
            &format!("t{}", rand::random::<u32>()),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let calls = hook.calls().await;
        calls[n..]
            .iter()
            .rev()
            .find(|c| c["object"] == "obj-0" && c["signatures"] == 1)
            .cloned()
            .ok_or_else(|| format!("{:?}", summary(&calls[n..])))
    })
    .await
    .unwrap();
    assert_eq!(c["outcome"], "accepted", "{c}");
    // Rotation happened without the config ever leaving Ready=True.
    assert_eq!(
        ready(&fx.api.get("signed").await.unwrap()).unwrap().status,
        "True"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_secret_is_read_as_the_service_account() {
    let fx = Fixture::new("sign-rbac").await;
    let key = random_secret();
    // The Secret exists and the operator (admin here) could read it; the service account may
    // not: the config must fail, not sign with a key read with the operator's own rights.
    put_secret(&fx.client, &fx.ns, &[(KEY, &key)]).await;
    let hook = Verifier::start(&[&key]);
    touch_cm(&fx.client, &fx.ns, "obj-0", "1").await;
    let op = support::operator()
        .namespace(&fx.ns)
        .args(["--hook-signing-refresh-period", "1s"])
        .start()
        .await;
    let t = Instant::now();
    config(&fx.ns, &hook.url()).apply();
    let c = wait_ready(&fx.api, "False", "SigningSecretUnavailable").await;
    eprintln!(
        "[timing] SigningSecretUnavailable: Ready=False after {:?}",
        t.elapsed()
    );
    assert!(
        c.message
            .contains(&format!("system:serviceaccount:{}:{SA}", fx.ns))
            && c.message.contains("may not get"),
        "{}",
        c.message
    );
    let note = wait_event(&fx.client, &fx.ns, "Warning", "SigningSecretUnavailable").await;
    assert!(note.contains(SECRET), "{note}");
    let failures = wait_for("failure metric", SURFACE, || async {
        op.metric(
            "manager_operator_startup_failures_total",
            &[
                ("namespace", &fx.ns),
                ("reason", "SigningSecretUnavailable"),
            ],
        )
        .await
        .filter(|v| *v >= 1.0)
        .ok_or("not yet".to_string())
    })
    .await
    .unwrap();
    eprintln!("startup_failures_total{{reason=SigningSecretUnavailable}} = {failures}");
    assert!(hook.calls().await.is_empty(), "no call without a key");

    // Granting get on that one Secret heals it.
    let fixed = Instant::now();
    grant_secret_get(&fx.ns);
    wait_ready(&fx.api, "True", "Running").await;
    eprintln!(
        "[timing] SigningSecretUnavailable: healed {:?} after the grant",
        fixed.elapsed()
    );
    let call = hook
        .wait_call("a verified call", 0, |c| c["object"] == "obj-0")
        .await;
    assert_eq!(call["outcome"], "accepted", "{call}");

    // Revoked while running: the worker stops signing (and calling) within the refresh period.
    let revoked = Instant::now();
    kubectl_ok(&["-n", &fx.ns, "delete", "rolebinding", "get-signing-secret"]);
    wait_ready(&fx.api, "False", "SigningSecretUnavailable").await;
    eprintln!(
        "[timing] SigningSecretUnavailable: Ready=False {:?} after the grant was revoked",
        revoked.elapsed()
    );

    // A key that is not a key (too short) is the same reason, with the cause in the message.
    grant_secret_get(&fx.ns);
    put_secret(&fx.client, &fx.ns, &[(KEY, "hunter2")]).await;
    let c = wait_for("too-short key reported", TIMEOUT, || async {
        let mc = fx.api.get("signed").await.map_err(|e| e.to_string())?;
        match ready(&mc) {
            Some(c) if c.reason == "SigningSecretUnavailable" && c.message.contains("24") => {
                Ok(c.clone())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    assert!(c.message.contains("bytes"), "{}", c.message);
}
