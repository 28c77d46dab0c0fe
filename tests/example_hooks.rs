//! The example hooks of `examples/hooks/` (docs/hooks.md) against the real control plane.
//!
//! Each example runs as a real process on 127.0.0.1 — `python3 examples/hooks/python/hook.py`,
//! and the Go one built with `go build` into the target directory — with a signing secret, and a
//! real `manager-operator run` process (webhook off, loopback hooks allowed) calls it for the
//! ConfigMaps of a fresh namespace. Between the two sits a recording pass-through on 127.0.0.1
//! (the hook URL points at it): it forwards every call unchanged and keeps a copy, so the test
//! can check what the hook answered and replay a real call verbatim.
//!
//! Checked through the hook's own `GET /state` and state file: creates, an update and a delete
//! reach the external system with the objects' current resourceVersions; no call is refused.
//! Then direct calls: forgeries (unsigned, wrong key, a real call's headers on a changed body,
//! an expired timestamp) are refused with 401 and change nothing; a verbatim replay of a real
//! call is answered 200 without acting; a lower fencing token is refused with 409 and its id is
//! not remembered; a Deleted for an object the hook does not hold is a success; bad JSON is 400
//! and an oversized body 413.

mod support;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use manager_operator::workers::signing::{SigningKey, unix_now};
use serde_json::{Value, json};
use support::{ManagerConfigBuilder, TIMEOUT, WorkerBuilder, rbac, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SA: &str = "worker";
const SECRET: &str = "hook-signing";
const KEY: &str = "signing-key";
const CONFIG: &str = "example-hook";
const WORKER: &str = "cms";
const LABEL: &str = "app=example-hook";

// ---------------------------------------------------------------------------------------------
// The example hook processes.

/// The Go toolchain: `go` on PATH, else the standard install location (as hack/tools*.sh expect
/// it on PATH).
fn go_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let go = dir.join("go");
            if go.is_file() {
                return go;
            }
        }
    }
    let fallback = PathBuf::from("/usr/local/go/bin/go");
    assert!(
        fallback.is_file(),
        "\n\n*** Go is needed to build examples/hooks/go (none on PATH, no /usr/local/go)\n\n"
    );
    fallback
}

/// Builds examples/hooks/go into the target directory (once per test process) and returns the
/// binary's path. Standard library only: nothing is downloaded.
fn go_example_binary() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out_dir = Path::new(env!("CARGO_BIN_EXE_manager-operator"))
                .parent()
                .expect("the target directory")
                .to_path_buf();
            let bin = out_dir.join("example-hook");
            let out = Command::new(go_bin())
                .args(["build", "-o"])
                .arg(&bin)
                .arg("./")
                .current_dir(support::repo_root().join("examples/hooks/go"))
                .env("GOFLAGS", "-mod=mod")
                .env("GOTOOLCHAIN", "local")
                .env("CGO_ENABLED", "0")
                .output()
                .map_err(|e| format!("running go build: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "go build failed ({}):\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(bin)
        })
        .clone()
        .unwrap_or_else(|e| panic!("\n\n*** building examples/hooks/go: {e}\n\n"))
}

/// One example hook process on 127.0.0.1 (port 0: it prints the port it got). SIGKILLed on
/// drop; its log (stderr) is shown when the test fails.
struct HookProcess {
    name: &'static str,
    child: Child,
    /// Kept open: the hook must never write to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    base: String,
    state_file: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl HookProcess {
    fn start(name: &'static str, mut cmd: Command, secret: &str) -> HookProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let state_file = dir.path().join("state.json");
        let log = dir.path().join("hook.log");
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--state-file"])
            .arg(&state_file)
            .env("HOOK_SIGNING_SECRET", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting the {name} example hook: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            panic!(
                "the {name} example hook said {line:?}; its log:\n{}",
                support::log_tail(&log, 40)
            );
        };
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        let base = base.to_string();
        eprintln!("[{name} hook] {base}");
        HookProcess {
            name,
            child,
            _stdout: stdout,
            base,
            state_file,
            log,
            dir,
        }
    }

    /// `GET /state`.
    async fn state(&self) -> Value {
        let (code, body) = support::http_get(&format!("{}/state", self.base))
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The state file, parsed.
    fn state_file(&self) -> Value {
        let text = std::fs::read_to_string(&self.state_file)
            .unwrap_or_else(|e| panic!("{}: {e}", self.state_file.display()));
        serde_json::from_str(&text).unwrap()
    }

    /// POSTs a call straight to the hook (not through the recorder); returns the status.
    async fn post(&self, headers: &[(&str, &str)], body: &[u8]) -> u16 {
        let mut req = support::loopback_http()
            .post(format!("{}/sync", self.base))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(body.to_vec())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Sends only the headers of a call declaring a `len`-byte body and returns the status
    /// line of the answer: an oversized body is refused before it is read.
    async fn post_declared_len(&self, len: usize) -> String {
        let addr = self.base.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!(
                "POST /sync HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: {len}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; 256];
        let mut got = Vec::new();
        tokio::time::timeout(TIMEOUT, async {
            while !got.windows(2).any(|w| w == b"\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed before an answer");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("an answer to an oversized call");
        let text = String::from_utf8_lossy(&got).into_owned();
        text.lines().next().unwrap_or_default().to_string()
    }
}

impl Drop for HookProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {} example hook log tail ---\n{}\n--- files: {:?}",
                self.name,
                support::log_tail(&self.log, 60),
                std::fs::read_dir(self.dir.path())
                    .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                    .unwrap_or_default()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The recording pass-through between the operator and the hook.

/// One call the operator made, as forwarded, and the hook's answer.
#[derive(Clone, Debug)]
struct Recorded {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    status: u16,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn summary(&self) -> String {
        let v = self.json();
        format!(
            "{} {} rv={} token={} -> {}",
            v["type"].as_str().unwrap_or("?"),
            v["object"]["metadata"]["name"].as_str().unwrap_or("?"),
            v["resourceVersion"].as_str().unwrap_or("?"),
            v["fencingToken"],
            self.status
        )
    }
}

#[derive(Clone)]
struct Recorder {
    hook_base: String,
    calls: Arc<Mutex<Vec<Recorded>>>,
}

/// The headers of a hook call that are passed on.
const FORWARDED: [&str; 5] = [
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

async fn forward(
    State(rec): State<Recorder>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Bytes) {
    let mut req = support::loopback_http().post(format!("{}{}", rec.hook_base, uri.path()));
    let mut kept = Vec::new();
    for name in FORWARDED {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            req = req.header(name, v);
            kept.push((name.to_string(), v.to_string()));
        }
    }
    let (status, answer) = match req.body(body.to_vec()).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap_or_default())
        }
        Err(e) => (502, Bytes::from(e.to_string())),
    };
    rec.calls.lock().unwrap().push(Recorded {
        headers: kept,
        body: body.to_vec(),
        status,
    });
    (StatusCode::from_u16(status).unwrap(), answer)
}

impl Recorder {
    async fn start(hook_base: &str) -> (Recorder, String) {
        let rec = Recorder {
            hook_base: hook_base.to_string(),
            calls: Arc::default(),
        };
        let app = Router::new().fallback(forward).with_state(rec.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/sync", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (rec, url)
    }

    fn calls(&self) -> Vec<Recorded> {
        self.calls.lock().unwrap().clone()
    }

    fn summary(&self) -> Vec<String> {
        self.calls().iter().map(Recorded::summary).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster fixtures.

fn random_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("whsec_{}", STANDARD.encode(b))
}

/// A namespace with the config's service account allowed to watch ConfigMaps and to get the
/// signing Secret (holding `secret`), as docs/hooks.md sets it up.
async fn namespace_with_signing(client: &kube::Client, prefix: &str, secret: &str) -> String {
    support::ensure_crd();
    let ns = support::fresh_namespace(client, prefix).await;
    rbac::service_account(&ns, SA);
    rbac::grant_watch(&ns, SA, "configmaps");
    rbac::grant(
        &ns,
        SA,
        "get-signing-secret",
        &format!(
            "- apiGroups: ['']\n  resources: [secrets]\n  resourceNames: [{SECRET}]\n  verbs: [get]\n"
        ),
    );
    let s = Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.into()),
            ..Default::default()
        },
        data: Some([(KEY.to_string(), ByteString(secret.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
    ns
}

/// Config CONFIG: worker WORKER (concurrency 2) watching ConfigMaps LABEL, signed calls.
fn config(ns: &str, hook_url: &str) -> ManagerConfigBuilder {
    ManagerConfigBuilder::new(ns, CONFIG)
        .service_account(SA)
        .worker(
            WorkerBuilder::new(WORKER)
                .concurrency(2)
                .selector(LABEL)
                .hook(hook_url)
                .timeout("10s")
                .signing_secret(SECRET, KEY),
        )
}

/// Creates or updates ConfigMap `name` with `data: {v: value}`; returns its resourceVersion.
async fn put_cm(api: &Api<ConfigMap>, name: &str, labelled: bool, value: &str) -> String {
    let labels = if labelled {
        json!({"app": "example-hook"})
    } else {
        json!({})
    };
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels}, "data": {"v": value}});
    let cm = api
        .patch(
            name,
            &PatchParams::apply("example-hooks-test").force(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
    cm.metadata.resource_version.unwrap()
}

/// The external-system key the examples use.
fn key(ns: &str, name: &str) -> String {
    format!("v1/ConfigMap/{ns}/{name}")
}

/// What the hook's external system should hold: key -> (resourceVersion, data), read from the
/// API server (the labelled ConfigMaps only).
async fn expected_objects(api: &Api<ConfigMap>, ns: &str) -> BTreeMap<String, (String, Value)> {
    api.list(&ListParams::default().labels(LABEL))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|cm| {
            (
                key(ns, cm.metadata.name.as_deref().unwrap()),
                (
                    cm.metadata.resource_version.clone().unwrap(),
                    serde_json::to_value(&cm.data).unwrap(),
                ),
            )
        })
        .collect()
}

/// The same view of the hook's `objects`.
fn held_objects(objects: &Value) -> BTreeMap<String, (String, Value)> {
    objects
        .as_object()
        .expect("objects is a JSON object")
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (
                    v["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    v["data"].clone(),
                ),
            )
        })
        .collect()
}

/// Waits until the hook holds exactly the labelled ConfigMaps at their current versions.
async fn wait_in_sync(
    hook: &HookProcess,
    rec: &Recorder,
    api: &Api<ConfigMap>,
    ns: &str,
    what: &str,
) {
    let expected = expected_objects(api, ns).await;
    wait_for(what, TIMEOUT, || async {
        let held = held_objects(&hook.state().await["objects"]);
        if held == expected {
            Ok(())
        } else {
            Err(format!(
                "hook holds {held:?}, want {expected:?}; calls: {:?}",
                rec.summary()
            ))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

fn counter(state: &Value, name: &str) -> i64 {
    state["counters"][name]
        .as_i64()
        .unwrap_or_else(|| panic!("counter {name} in {state}"))
}

/// Request headers, owned.
type Headers = Vec<(String, String)>;

/// A call signed with `secret` the way the operator signs: headers for `body`.
fn signed(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Headers {
    let sig = SigningKey::parse(secret.as_bytes())
        .unwrap()
        .sign(id, timestamp, body);
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), sig),
    ]
}

fn as_refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The scenario, the same for every example.

async fn exercise(name: &'static str, cmd: Command) {
    let client = support::admin_client().await;
    let secret = random_secret();
    let ns = namespace_with_signing(&client, &format!("example-hook-{name}"), &secret).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let hook = HookProcess::start(name, cmd, &secret);
    let (rec, url) = Recorder::start(&hook.base).await;
    let _op = support::operator().namespace(&ns).start().await;

    // 1. Three watched ConfigMaps (and one the selector leaves out) reach the external system
    // with their current resourceVersions.
    for i in 0..3 {
        put_cm(&cms, &format!("cm-{i}"), true, "1").await;
    }
    put_cm(&cms, "not-watched", false, "1").await;
    config(&ns, &url).apply();
    wait_in_sync(
        &hook,
        &rec,
        &cms,
        &ns,
        "the three ConfigMaps in the hook's state",
    )
    .await;

    // 2. An update arrives with its new resourceVersion.
    let rv = put_cm(&cms, "cm-1", true, "2").await;
    wait_in_sync(&hook, &rec, &cms, &ns, "cm-1's update in the hook's state").await;
    assert_eq!(
        hook.state().await["objects"][key(&ns, "cm-1")]["resourceVersion"],
        rv
    );

    // 3. Every call the operator made was signed, named its webhook-id as deliveryId and was
    // accepted; each was acted on once (syncs + duplicates = calls); none was fenced.
    let state = wait_for("counters to match the recorded calls", TIMEOUT, || async {
        let state = hook.state().await;
        let calls = rec.calls();
        if counter(&state, "syncs") + counter(&state, "duplicates") == calls.len() as i64 {
            Ok(state)
        } else {
            Err(format!("{} vs {:?}", state["counters"], rec.summary()))
        }
    })
    .await
    .unwrap();
    let calls = rec.calls();
    for c in &calls {
        let body = c.json();
        assert_eq!(c.status, 200, "{}", c.summary());
        assert_eq!(body["apiVersion"], "hooks.manager-operator.io/v1");
        assert_eq!(body["type"], "Sync");
        assert_eq!(c.header("webhook-id"), body["deliveryId"].as_str());
        assert!(c.header("webhook-signature").is_some(), "{}", c.summary());
    }
    assert!(counter(&state, "syncs") >= 4, "{}", state["counters"]);
    for refusal in ["fenced", "unauthorized", "invalid"] {
        assert_eq!(counter(&state, refusal), 0, "{}", state["counters"]);
    }
    // The state file is the same state (written atomically: no temporary file left over).
    let file = hook.state_file();
    assert_eq!(file["objects"], state["objects"]);
    assert_eq!(file["fencingTokens"], state["fencingTokens"]);
    let leftovers: Vec<_> = std::fs::read_dir(hook.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // 4. Direct calls. The first accepted call for cm-1 (its old version) is the captured one.
    let captured = calls
        .iter()
        .find(|c| c.json()["object"]["metadata"]["name"] == "cm-1")
        .expect("a call for cm-1")
        .clone();
    let body = captured.json();
    let token = body["fencingToken"].as_i64().unwrap();
    let scope = format!("{ns}/{CONFIG}/{WORKER}");
    assert_eq!(
        state["fencingTokens"][&scope], token,
        "{}",
        state["fencingTokens"]
    );
    let before = hook.state().await;

    // 4a. Forgeries with a huge fencing token: 401, and nothing changes.
    let mut forged = body.clone();
    forged["fencingToken"] = json!(2147483647);
    forged["deliveryId"] = json!("msg_forged");
    let forged = forged.to_string().into_bytes();
    let now = unix_now();
    let captured_headers: Vec<(&str, &str)> = captured
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("webhook-"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut captured_on_forged = body.clone();
    captured_on_forged["fencingToken"] = json!(2147483647);
    let captured_on_forged = captured_on_forged.to_string().into_bytes();
    let forgeries: Vec<(&str, Headers, &[u8])> = vec![
        ("unsigned", vec![], forged.as_slice()),
        (
            "no signature",
            signed(&secret, "msg_forged", now, &forged)[..2].to_vec(),
            forged.as_slice(),
        ),
        (
            "signed with another key",
            signed(&random_secret(), "msg_forged", now, &forged),
            forged.as_slice(),
        ),
        (
            "a real call's signature on a changed body",
            captured_headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            captured_on_forged.as_slice(),
        ),
        (
            "the right key, 10 minutes ago",
            signed(&secret, "msg_forged", now - 600, &forged),
            forged.as_slice(),
        ),
    ];
    for (what, headers, body) in &forgeries {
        assert_eq!(hook.post(&as_refs(headers), body).await, 401, "{what}");
    }
    let after = hook.state().await;
    assert_eq!(after["objects"], before["objects"]);
    assert_eq!(after["fencingTokens"], before["fencingTokens"]);
    assert_eq!(
        counter(&after, "unauthorized"),
        forgeries.len() as i64,
        "{}",
        after["counters"]
    );
    assert_eq!(counter(&after, "syncs"), counter(&before, "syncs"));

    // 4b. A verbatim replay of the captured call (cm-1's old version, same webhook-id, still
    // within the tolerance): 200, counted as a duplicate, and not acted on — the external
    // system keeps cm-1's new version.
    assert_eq!(hook.post(&captured_headers, &captured.body).await, 200);
    let after = hook.state().await;
    assert_eq!(
        counter(&after, "duplicates"),
        counter(&before, "duplicates") + 1
    );
    assert_eq!(counter(&after, "syncs"), counter(&before, "syncs"));
    assert_eq!(after["objects"], before["objects"]);
    assert_eq!(after["objects"][key(&ns, "cm-1")]["resourceVersion"], rv);

    // 4c. A correctly signed call with a lower fencing token (a deposed leader's): 409, and
    // its id is not remembered — the same delivery with an acceptable token is then acted on.
    let direct = |id: &str, type_: &str, token: i64, object: &str| {
        let mut b = body.clone();
        b["type"] = json!(type_);
        b["deliveryId"] = json!(id);
        b["attempt"] = json!(1);
        b["fencingToken"] = json!(token);
        b["object"]["metadata"]["name"] = json!(object);
        b["object"]["metadata"]["uid"] = json!(format!("uid-{object}"));
        b["someFieldFromTheFuture"] = json!({"ignored": true});
        b.to_string().into_bytes()
    };
    let stale = direct("msg_test_stale", "Sync", token - 1, "direct-0");
    let headers = signed(&secret, "msg_test_stale", unix_now(), &stale);
    assert_eq!(hook.post(&as_refs(&headers), &stale).await, 409);
    let after = hook.state().await;
    assert_eq!(counter(&after, "fenced"), 1, "{}", after["counters"]);
    assert_eq!(after["objects"], before["objects"]);
    assert_eq!(after["fencingTokens"], before["fencingTokens"]);
    let retry = direct("msg_test_stale", "Sync", token, "direct-0");
    let headers = signed(&secret, "msg_test_stale", unix_now(), &retry);
    assert_eq!(hook.post(&as_refs(&headers), &retry).await, 200);
    let after = hook.state().await;
    assert_eq!(counter(&after, "syncs"), counter(&before, "syncs") + 1);
    assert!(
        after["objects"][key(&ns, "direct-0")].is_object(),
        "{}",
        after["objects"]
    );

    // 4d. The hook's own deletion path: a Deleted removes the object; a Deleted for an object
    // it does not hold is a success that changes nothing.
    for (id, object) in [
        ("msg_test_del", "direct-0"),
        ("msg_test_del_unknown", "never-held"),
    ] {
        let del = direct(id, "Deleted", token, object);
        let headers = signed(&secret, id, unix_now(), &del);
        assert_eq!(hook.post(&as_refs(&headers), &del).await, 200, "{id}");
    }
    let after = hook.state().await;
    assert_eq!(after["objects"], before["objects"]);
    assert_eq!(counter(&after, "deletes"), counter(&before, "deletes") + 2);
    assert_eq!(after["fencingTokens"], before["fencingTokens"]);

    // 4e. Bad JSON (correctly signed): 400. A body declared larger than 4 MiB: 413, before it
    // is sent.
    let headers = signed(&secret, "msg_test_bad", unix_now(), b"{not json");
    assert_eq!(hook.post(&as_refs(&headers), b"{not json").await, 400);
    let status = hook.post_declared_len(5 << 20).await;
    assert!(status.contains(" 413 "), "{status}");
    let after = hook.state().await;
    assert_eq!(counter(&after, "invalid"), 2, "{}", after["counters"]);
    assert_eq!(after["objects"], before["objects"]);

    // 5. A deleted ConfigMap leaves the external system (the operator's Deleted call).
    let n = rec.calls().len();
    cms.delete("cm-0", &DeleteParams::default()).await.unwrap();
    wait_for("cm-0 is deleted from the ConfigMaps", TIMEOUT, || async {
        match cms.get_opt("cm-0").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await
    .unwrap();
    wait_in_sync(&hook, &rec, &cms, &ns, "cm-0 removed from the hook's state").await;
    // The recorder keeps a call once the hook's answer has gone back: wait for it too.
    wait_for(
        "the operator's Deleted call for cm-0, answered 200",
        TIMEOUT,
        || async {
            let deleted: Vec<Recorded> = rec.calls()[n..]
                .iter()
                .filter(|c| c.json()["type"] == "Deleted")
                .cloned()
                .collect();
            if deleted
                .iter()
                .any(|c| c.json()["object"]["metadata"]["name"] == "cm-0" && c.status == 200)
            {
                Ok(())
            } else {
                Err(format!("{:?}", rec.summary()))
            }
        },
    )
    .await
    .unwrap();
    let state = hook.state().await;
    assert!(counter(&state, "deletes") >= 3, "{}", state["counters"]);
    assert_eq!(counter(&state, "fenced"), 1, "only the direct stale call");
    assert_eq!(hook.state_file()["objects"], state["objects"]);
    assert!(
        rec.calls().iter().all(|c| c.status == 200),
        "{:?}",
        rec.summary()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_hook_implements_the_contract() {
    let mut cmd = Command::new("python3");
    cmd.arg(support::repo_root().join("examples/hooks/python/hook.py"));
    exercise("python", cmd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_example_hook_implements_the_contract() {
    let bin = tokio::task::spawn_blocking(go_example_binary)
        .await
        .unwrap();
    exercise("go", Command::new(bin)).await;
}
