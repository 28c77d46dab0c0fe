//! `manager-operator selftest`: what the chart's `helm test` hook runs inside the cluster.
//!
//! Two server-side dry-run creates of ManagerConfigs in the release namespace, so nothing is
//! stored and no manager starts:
//! * a valid config must be admitted (the CRD is served, its CEL rules pass, the webhook
//!   answers and allows it);
//! * a config whose hook targets the cloud metadata address must be denied *by the operator's
//!   webhook* (the CRD's own rules cannot see that), with a message naming `hook.url`.
//!
//! Dry-run requests do call validating webhooks (ours declares `sideEffects: None`), so the
//! second check proves that the API server reaches a running replica's webhook end to end.

use std::time::Duration;

use clap::Args;
use kube::api::{Api, PostParams};
use kube::{Client, Config};

use crate::api::ManagerConfig;

/// The webhook's name, as the API server quotes it in a denial.
const WEBHOOK_NAME: &str = "validate.managerconfigs.manager-operator.io";

/// Arguments of `selftest`.
#[derive(Args, Debug, Clone)]
pub struct SelftestArgs {
    /// Namespace to dry-run the ManagerConfigs in (the release namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// How many seconds to keep retrying while the webhook is not reachable yet (e.g. right
    /// after an install).
    #[arg(long, default_value_t = 60)]
    pub timeout_seconds: u64,
}

/// Why the self-test failed; each message names what a user should look at.
#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    /// No client could be built (no in-cluster config or kubeconfig).
    #[error("cannot configure a Kubernetes client: {0}")]
    Config(String),
    /// The built-in sample could not be decoded (a bug).
    #[error("the self-test's sample ManagerConfig does not decode: {0}")]
    Sample(#[from] serde_json::Error),
    /// The valid config was refused.
    #[error(
        "a valid ManagerConfig was refused by the API server (CRD, RBAC or webhook problem): {0}"
    )]
    ValidRefused(String),
    /// The invalid config was admitted: the webhook did not run.
    #[error(
        "a ManagerConfig with a hook on 169.254.169.254 was admitted: the webhook {WEBHOOK_NAME} is not registered or not called"
    )]
    InvalidAdmitted,
    /// The invalid config was refused, but not by our webhook, or without naming the field.
    #[error(
        "the invalid ManagerConfig was refused, but not by the webhook {WEBHOOK_NAME} naming hook.url: {0}"
    )]
    WrongDenial(String),
}

fn sample(name: &str, hook_url: &str) -> Result<ManagerConfig, serde_json::Error> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": crate::api::KIND,
        "metadata": { "name": name },
        "spec": {
            "workers": [{
                "name": "configmaps",
                "watch": { "apiVersion": "v1", "kind": "ConfigMap" },
                "hook": { "url": hook_url }
            }]
        }
    }))
}

/// Outcome of one dry-run create.
enum Outcome {
    Admitted,
    Denied(String),
}

async fn dry_run(api: &Api<ManagerConfig>, mc: &ManagerConfig) -> Result<Outcome, kube::Error> {
    let pp = PostParams {
        dry_run: true,
        field_manager: Some("manager-operator-selftest".into()),
    };
    match api.create(&pp, mc).await {
        Ok(_) => Ok(Outcome::Admitted),
        Err(kube::Error::Api(status)) if status.code == 400 || status.code == 422 => {
            Ok(Outcome::Denied(status.message))
        }
        Err(e) => Err(e),
    }
}

/// Whether an error means "not reachable yet" (worth retrying until the timeout).
fn transient(message: &str) -> bool {
    [
        "failed calling webhook",
        "connection refused",
        "context deadline exceeded",
        "timeout",
    ]
    .iter()
    .any(|s| message.contains(s))
}

/// Runs the self-test; prints one line per check.
pub async fn run(args: &SelftestArgs) -> Result<(), SelftestError> {
    // The same process-wide rustls provider as `run` (an Err only says one is installed).
    crate::tls::install_default_provider();
    let config = Config::infer()
        .await
        .map_err(|e| SelftestError::Config(e.to_string()))?;
    let client = Client::try_from(config).map_err(|e| SelftestError::Config(e.to_string()))?;
    let api: Api<ManagerConfig> = Api::namespaced(client, &args.namespace);
    let valid = sample(
        "selftest-valid",
        "http://selftest-hook.example.invalid:8080/sync",
    )?;
    let invalid = sample(
        "selftest-invalid",
        "http://169.254.169.254/latest/meta-data",
    )?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_seconds);

    loop {
        let last = match dry_run(&api, &valid).await {
            Ok(Outcome::Admitted) => break,
            Ok(Outcome::Denied(m)) if !transient(&m) => {
                return Err(SelftestError::ValidRefused(m));
            }
            Ok(Outcome::Denied(m)) => m,
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(SelftestError::ValidRefused(last));
        }
        println!("waiting for the webhook: {last}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!("ok: a valid ManagerConfig is admitted (dry run)");

    match dry_run(&api, &invalid).await {
        Ok(Outcome::Admitted) => Err(SelftestError::InvalidAdmitted),
        Ok(Outcome::Denied(m)) if m.contains(WEBHOOK_NAME) && m.contains("hook.url") => {
            println!("ok: the webhook denies a hook on the metadata address: {m}");
            Ok(())
        }
        Ok(Outcome::Denied(m)) => Err(SelftestError::WrongDenial(m)),
        Err(e) => Err(SelftestError::WrongDenial(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_decode() {
        let mc = sample("x", "http://169.254.169.254/").expect("decodes");
        assert_eq!(mc.spec.workers.len(), 1);
        assert_eq!(mc.spec.workers[0].hook.url, "http://169.254.169.254/");
    }

    #[test]
    fn only_reachability_errors_are_retried() {
        assert!(transient(
            "Internal error occurred: failed calling webhook \"x\": connection refused"
        ));
        assert!(!transient(
            "admission webhook \"x\" denied the request: hook.url"
        ));
    }
}
