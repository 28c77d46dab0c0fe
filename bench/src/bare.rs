//! The baseline of scenario 6: a bare kube-runtime `Controller<ConfigMap>` that POSTs the same
//! JSON body as the operator's workers to the same hook, and nothing else: no leader election,
//! no fencing check, no impersonation, no metrics, no delivery bookkeeping, no per-object
//! backoff (a failure is retried after 500 ms).
//!
//! Protocol with the harness: prints `ready` on stdout once its client is built, waits for a
//! line on stdin, then runs until SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::util::{self, Result};

struct Ctx {
    http: reqwest::Client,
    url: String,
}

#[derive(Debug)]
struct HookFailed(String);

impl std::fmt::Display for HookFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HookFailed {}

async fn reconcile(obj: Arc<ConfigMap>, ctx: Arc<Ctx>) -> std::result::Result<Action, HookFailed> {
    let body = json!({
        "manager": {"namespace": obj.metadata.namespace, "name": "bare"},
        "worker": "bare",
        "fencingToken": 0,
        "holder": "bare",
        "object": &*obj,
    });
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        ctx.http.post(&ctx.url).json(&body).send(),
    )
    .await
    .map_err(|_| HookFailed("timeout".into()))?
    .map_err(|e| HookFailed(e.to_string()))?;
    let status = r.status();
    let _ = r.bytes().await;
    if status.is_success() {
        Ok(Action::await_change())
    } else {
        Err(HookFailed(format!("HTTP {status}")))
    }
}

fn error_policy(_obj: Arc<ConfigMap>, _e: &HookFailed, _ctx: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(500))
}

/// Runs the bare controller.
pub async fn run(
    kubeconfig: &std::path::Path,
    namespace: &str,
    selector: &str,
    concurrency: u16,
    hook: &str,
) -> Result<()> {
    let client = util::client(kubeconfig).await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    println!("ready");
    let mut line = String::new();
    tokio::io::BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    let ctx = Arc::new(Ctx {
        http,
        url: hook.to_string(),
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Controller::new(api, watcher::Config::default().labels(selector))
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(async move {
            term.recv().await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
    Ok(())
}
