//! The hook contract on the real control plane (docs/hooks.md): deletions delivered best effort and,
//! with `finalize: true`, through the worker's finalizer (held until the hook answers, across a
//! leader change, released when the config goes away); retries keep their delivery id;
//! `status.workers[].lastHookError` shows a failing hook and clears; https hooks with a private
//! CA (inline and from a ConfigMap) and a client certificate (mutual TLS).
//!
//! Hooks are the kit's `RecordingHook` (in-process, on 127.0.0.1): every call recorded, the
//! answer set by the test; https with mutual TLS through `HookBuilder::tls`.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use manager_operator::api::ManagerConfig;
use serde_json::Value;
use support::{
    ManagerConfigBuilder, RecordingHook, TIMEOUT, WorkerBuilder, apply_yaml, rbac, wait_for,
};

/// The bodies of every call so far.
fn bodies(hook: &RecordingHook) -> Vec<Value> {
    hook.calls().into_iter().map(|c| c.body).collect()
}

/// Calls of `type` about object `name`.
fn about(hook: &RecordingHook, ty: &str, name: &str) -> Vec<Value> {
    bodies(hook)
        .into_iter()
        .filter(|c| c["type"] == ty && c["object"]["metadata"]["name"] == name)
        .collect()
}

/// A private PKI: a CA, a serving certificate for 127.0.0.1, a client CA and a client
/// certificate.
struct Pki {
    ca_pem: String,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
    client_ca: rustls::pki_types::CertificateDer<'static>,
    client_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "hook test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();

    let cca_key = KeyPair::generate().unwrap();
    let mut cca = CertificateParams::new(Vec::<String>::new()).unwrap();
    cca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cca_cert = cca.self_signed(&cca_key).unwrap();
    let cissuer = Issuer::new(cca, cca_key);
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["manager-operator-worker".to_string()])
        .unwrap()
        .signed_by(&client_key, &cissuer)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_chain: vec![server.der().clone()],
        server_key: rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
        client_ca: cca_cert.der().clone(),
        client_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// An https hook serving `pki`'s certificate and requiring a client certificate of its client
/// CA.
async fn tls_hook(pki: &Pki) -> RecordingHook {
    manager_operator::tls::install_default_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.client_ca.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .unwrap();
    RecordingHook::builder().tls(config).start().await
}

/// Service account `sa` in `ns` may use `verbs` on ConfigMaps and get Secrets there.
fn grant(ns: &str, sa: &str, verbs: &str) {
    rbac::service_account(ns, sa);
    rbac::grant(
        ns,
        sa,
        &format!("{sa}-cms"),
        &format!(
            "- apiGroups: ['']\n  resources: [configmaps]\n  verbs: [{verbs}]\n\
             - apiGroups: ['']\n  resources: [secrets]\n  verbs: [get]\n"
        ),
    );
}

/// Applies ManagerConfig `name` whose service account is `sa`, with one worker: `cms` (see
/// [`cms`]) as the caller refined it.
fn config(ns: &str, name: &str, sa: &str, cms: WorkerBuilder) {
    ManagerConfigBuilder::new(ns, name)
        .service_account(sa)
        .worker(cms)
        .apply();
}

/// Worker `cms` watching ConfigMaps labelled `app=hooked`, calling `url`.
fn cms(url: &str) -> WorkerBuilder {
    WorkerBuilder::new("cms").selector("app=hooked").hook(url)
}

async fn create_cm(client: &kube::Client, ns: &str, name: &str) {
    rbac::create_configmap(client, ns, name, &[("app", "hooked")]).await;
}

async fn wait_calls(hook: &RecordingHook, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    wait_for(what, TIMEOUT, || async {
        let calls = bodies(hook);
        if ok(&calls) {
            Ok(calls)
        } else {
            let brief: Vec<String> = calls
                .iter()
                .map(|c| {
                    format!(
                        "{} {} attempt={} holder={}",
                        c["type"], c["object"]["metadata"]["name"], c["attempt"], c["holder"]
                    )
                })
                .collect();
            Err(format!("calls so far: {brief:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The worker's `lastHookError` as the status shows it.
async fn last_error(
    api: &Api<ManagerConfig>,
    name: &str,
) -> Option<manager_operator::api::LastHookError> {
    let mc = api.get(name).await.ok()?;
    mc.status?.workers.first()?.last_hook_error.clone()
}

fn finalizers(cm: &ConfigMap) -> Vec<String> {
    cm.metadata.finalizers.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_are_delivered_and_retried_with_one_delivery_id_and_errors_show_in_status() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "mo-del").await;
    grant(&ns, "hooked", "get, list, watch");
    let op = support::operator().namespace(&ns).start().await;
    let s = RecordingHook::start().await;
    let url = s.url.clone();
    config(&ns, "del", "hooked", cms(&url).timeout("2s"));
    create_cm(&client, &ns, "cm-0").await;
    create_cm(&client, &ns, "cm-1").await;
    wait_calls(&s, "Sync of cm-0 and cm-1", |c| {
        c.iter().filter(|v| v["type"] == "Sync").count() >= 2
    })
    .await;
    for c in bodies(&s) {
        assert_eq!(c["apiVersion"], "hooks.manager-operator.io/v1");
        assert_eq!(c["attempt"], 1);
        assert!(c["deliveryId"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(
            c["resourceVersion"],
            c["object"]["metadata"]["resourceVersion"]
        );
    }

    // The hook fails while cm-0 is deleted: the Deleted call is retried with the same id.
    s.set_default_reply(503, "");
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .delete("cm-0", &DeleteParams::default())
        .await
        .unwrap();
    wait_calls(&s, "two attempts of cm-0's Deleted call", |_| {
        about(&s, "Deleted", "cm-0").len() >= 2
    })
    .await;
    let mcs: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    let e = wait_for("status.workers[0].lastHookError", TIMEOUT, || async {
        last_error(&mcs, "del")
            .await
            .ok_or_else(|| "no lastHookError yet".to_string())
    })
    .await
    .unwrap();
    assert_eq!(e.code, "503");
    assert!(e.message.contains("503"), "{e:?}");
    assert_eq!(e.object, format!("{ns}/cm-0"));

    s.set_default_reply(200, "");
    wait_calls(&s, "cm-0's Deleted call answered", |_| {
        let d = about(&s, "Deleted", "cm-0");
        // (The default reply is 200 from here on.)
        d.len() >= 3
    })
    .await;
    let deleted = about(&s, "Deleted", "cm-0");
    let ids: BTreeSet<&str> = deleted
        .iter()
        .map(|c| c["deliveryId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one delivery id across retries: {deleted:?}");
    let attempts: Vec<u64> = deleted
        .iter()
        .map(|c| c["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts[..3], [1, 2, 3]);
    assert_eq!(deleted[0]["object"]["metadata"]["name"], "cm-0");
    assert!(about(&s, "Deleted", "cm-1").is_empty());
    wait_for("lastHookError cleared", TIMEOUT, || async {
        match last_error(&mcs, "del").await {
            None => Ok(()),
            Some(e) => Err(format!("still {e:?}")),
        }
    })
    .await
    .unwrap();
    drop(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_holds_a_deletion_until_the_hook_answers_even_across_a_leader_change() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "mo-fin").await;
    grant(&ns, "hooked", "get, list, watch, patch");
    let s = RecordingHook::start().await;
    let url = s.url.clone();
    let a = support::operator()
        .namespace(&ns)
        .identity("fin-a")
        .args(["--disable-placement"])
        .start()
        .await;
    config(&ns, "fin", "hooked", cms(&url).timeout("2s").finalize());
    let mcs: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    // `a` leads before the second replica starts.
    wait_for("fin led by fin-a", TIMEOUT, || async {
        let mc = mcs.get("fin").await.map_err(|e| e.to_string())?;
        match mc.status.and_then(|s| s.leader) {
            Some(l) if l == "fin-a" => Ok(()),
            other => Err(format!("leader {other:?}")),
        }
    })
    .await
    .unwrap();
    let b = support::operator()
        .namespace(&ns)
        .identity("fin-b")
        .args(["--disable-placement"])
        .start()
        .await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    create_cm(&client, &ns, "cm-0").await;
    let ours = format!("hooks.manager-operator.io/{ns}.fin.cms");
    wait_for("cm-0 carries the worker's finalizer", TIMEOUT, || async {
        let cm = cms.get("cm-0").await.map_err(|e| e.to_string())?;
        if finalizers(&cm) == [ours.clone()] {
            Ok(())
        } else {
            Err(format!("{:?}", finalizers(&cm)))
        }
    })
    .await
    .unwrap();
    wait_calls(&s, "Sync of cm-0 with the finalizer", |_| {
        about(&s, "Sync", "cm-0")
            .iter()
            .any(|c| c["object"]["metadata"]["finalizers"][0] == ours.as_str())
    })
    .await;

    // The hook is down for deletions: cm-0 stays, Terminating, while fin-a retries.
    s.set_default_reply(500, "");
    cms.delete("cm-0", &DeleteParams::default()).await.unwrap();
    wait_calls(&s, "fin-a's Deleted calls for cm-0", |_| {
        about(&s, "Deleted", "cm-0").len() >= 2
    })
    .await;
    let held = cms
        .get("cm-0")
        .await
        .expect("cm-0 is held by the finalizer");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(
        about(&s, "Deleted", "cm-0")
            .iter()
            .all(|c| c["holder"].as_str().unwrap().starts_with("fin-a"))
    );

    // fin-a dies; fin-b takes over, delivers the deletion and lets cm-0 go.
    drop(a);
    s.set_default_reply(200, "");
    wait_for("cm-0 gone", Duration::from_secs(90), || async {
        match cms.get_opt("cm-0").await {
            Ok(None) => Ok(()),
            Ok(Some(cm)) => Err(format!("still there with {:?}", finalizers(&cm))),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap();
    let by_b: Vec<Value> = about(&s, "Deleted", "cm-0")
        .into_iter()
        .filter(|c| c["holder"].as_str().unwrap().starts_with("fin-b"))
        .collect();
    assert!(
        !by_b.is_empty(),
        "the new leader delivered the deletion: {:?}",
        about(&s, "Deleted", "cm-0")
    );
    assert!(
        by_b[0]["fencingToken"].as_i64() > about(&s, "Deleted", "cm-0")[0]["fencingToken"].as_i64()
    );
    assert!(by_b[0]["object"]["metadata"]["deletionTimestamp"].is_string());

    // The config goes away: the finalizer comes off the objects it was on.
    create_cm(&client, &ns, "cm-1").await;
    wait_for("cm-1 carries the finalizer", TIMEOUT, || async {
        let cm = cms.get("cm-1").await.map_err(|e| e.to_string())?;
        if finalizers(&cm).contains(&ours) {
            Ok(())
        } else {
            Err(format!("{:?}", finalizers(&cm)))
        }
    })
    .await
    .unwrap();
    mcs.delete("fin", &DeleteParams::default()).await.unwrap();
    wait_for(
        "fin gone and cm-1 without the finalizer",
        TIMEOUT,
        || async {
            let cm = cms.get("cm-1").await.map_err(|e| e.to_string())?;
            let gone = mcs
                .get_opt("fin")
                .await
                .map_err(|e| e.to_string())?
                .is_none();
            if gone && finalizers(&cm).is_empty() {
                Ok(())
            } else {
                Err(format!("config gone: {gone}, {:?}", finalizers(&cm)))
            }
        },
    )
    .await
    .unwrap();
    cms.delete("cm-1", &DeleteParams::default()).await.unwrap();
    wait_for("cm-1 deletable", TIMEOUT, || async {
        match cms.get_opt("cm-1").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalize_without_patch_rights_is_refused_naming_the_verb() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "mo-finrbac").await;
    grant(&ns, "hooked", "get, list, watch");
    let _op = support::operator().namespace(&ns).start().await;
    let s = RecordingHook::start().await;
    let url = s.url.clone();
    config(&ns, "fin", "hooked", cms(&url).finalize());
    let mcs: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    let msg = wait_for("Ready=False WatchForbidden", TIMEOUT, || async {
        let mc = mcs.get("fin").await.map_err(|e| e.to_string())?;
        let c = mc
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .ok_or_else(|| "no Ready".to_string())?;
        if c.reason == "WatchForbidden" {
            Ok(c.message)
        } else {
            Err(format!("{} {}", c.reason, c.message))
        }
    })
    .await
    .unwrap();
    assert!(msg.contains("patch"), "{msg}");
    assert!(msg.contains("finalize: true"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_hooks_with_a_private_ca_and_a_client_certificate() {
    support::ensure_crd();
    let client = support::admin_client().await;
    let ns = support::fresh_namespace(&client, "mo-tls").await;
    grant(&ns, "hooked", "get, list, watch");
    let pki = pki();
    let s = tls_hook(&pki).await;
    let url = s.url.clone();
    let _op = support::operator()
        .namespace(&ns)
        .args(["--hook-signing-refresh-period", "1s"])
        .start()
        .await;
    let mcs: Api<ManagerConfig> = Api::namespaced(client.clone(), &ns);
    create_cm(&client, &ns, "cm-0").await;

    // Without the CA, the hook's certificate is not trusted: the call fails with the reason.
    config(&ns, "tls", "hooked", cms(&url).timeout("2s"));
    let e = wait_for("lastHookError: untrusted certificate", TIMEOUT, || async {
        last_error(&mcs, "tls")
            .await
            .ok_or_else(|| "no lastHookError yet".to_string())
    })
    .await
    .unwrap();
    assert_eq!(e.code, "error");
    assert!(e.message.to_lowercase().contains("certificate"), "{e:?}");
    assert_eq!(s.count(), 0);

    // A client certificate Secret that does not exist: HookTlsUnavailable, naming it.
    let inline = serde_json::to_string(&pki.ca_pem).unwrap();
    config(
        &ns,
        "tls",
        "hooked",
        cms(&url)
            .timeout("2s")
            .ca_bundle(&pki.ca_pem)
            .client_cert_secret("worker-client"),
    );
    let msg = wait_for("Ready=False HookTlsUnavailable", TIMEOUT, || async {
        let mc = mcs.get("tls").await.map_err(|e| e.to_string())?;
        let c = mc
            .status
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .ok_or_else(|| "no Ready".to_string())?;
        if c.reason == "HookTlsUnavailable" {
            Ok(c.message)
        } else {
            Err(format!("{} {}", c.reason, c.message))
        }
    })
    .await
    .unwrap();
    assert!(msg.contains("worker-client"), "{msg}");

    // The Secret appears: the inline CA and the client certificate get the call through.
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "worker-client"},
        "stringData": {"tls.crt": pki.client_pem, "tls.key": pki.client_key_pem},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    wait_calls(&s, "cm-0 delivered over mutual TLS", |c| !c.is_empty()).await;

    // The CA from a ConfigMap works the same (and the client certificate is still required:
    // a handshake without it would have been counted as failed).
    let before = s.failed_handshakes();
    apply_yaml(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: hook-ca, namespace: {ns}}}\ndata:\n  ca.crt: {inline}\n"
    ));
    config(
        &ns,
        "tls",
        "hooked",
        cms(&url)
            .timeout("2s")
            .ca_bundle_ref("ConfigMap", "hook-ca", "ca.crt")
            .client_cert_secret("worker-client")
            .resync("1s"),
    );
    let n = s.count();
    wait_calls(&s, "calls with the CA from a ConfigMap", |c| {
        c.len() >= n + 2
    })
    .await;
    assert_eq!(s.failed_handshakes(), before);
    wait_for("lastHookError cleared", TIMEOUT, || async {
        match last_error(&mcs, "tls").await {
            None => Ok(()),
            Some(e) => Err(format!("still {e:?}")),
        }
    })
    .await
    .unwrap();

    // The ConfigMap changes to another CA: reloaded while running (1 s refresh), the hook is
    // no longer trusted; changed back, it is again. No restart either time.
    let other = serde_json::to_string(&self::pki().ca_pem).unwrap();
    let cm = |ca: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: hook-ca, namespace: {ns}}}\ndata:\n  ca.crt: {ca}\n"
        )
    };
    apply_yaml(&cm(&other));
    let e = wait_for("untrusted after the CA changed", TIMEOUT, || async {
        last_error(&mcs, "tls")
            .await
            .ok_or_else(|| "no lastHookError yet".to_string())
    })
    .await
    .unwrap();
    assert!(e.message.to_lowercase().contains("certificate"), "{e:?}");
    apply_yaml(&cm(&inline));
    let n = s.count();
    wait_calls(&s, "calls after the CA changed back", |c| c.len() >= n + 2).await;
    let mc = mcs.get("tls").await.unwrap();
    assert_eq!(
        mc.status.unwrap().observed_generation,
        mc.metadata.generation,
        "the same generation: reloaded, not restarted"
    );
}
