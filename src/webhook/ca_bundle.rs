//! CA injection: the self-managed CA bundle goes into `clientConfig.caBundle` of every webhook of
//! the ValidatingWebhookConfiguration, so the API server trusts the serving certificate.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};

use crate::api::FIELD_MANAGER;

/// The Kubernetes API refused or failed a request on the webhook configuration.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} ValidatingWebhookConfiguration {name}: {source}")]
pub struct InjectError {
    /// get or patch.
    pub action: &'static str,
    /// The configuration's name.
    pub name: String,
    /// The API error.
    #[source]
    pub source: Box<kube::Error>,
}

/// The result of [`inject_ca_bundle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injection {
    /// The configuration does not exist (yet).
    NotFound,
    /// Every webhook already had the bundle.
    Unchanged,
    /// This many webhooks got the bundle.
    Updated(usize),
}

/// Writes `ca_bundle_pem` into `webhooks[*].clientConfig.caBundle` of the
/// ValidatingWebhookConfiguration `name`, with a strategic-merge patch keyed by webhook name,
/// only for webhooks whose bundle differs (idempotent).
pub async fn inject_ca_bundle(
    client: kube::Client,
    name: &str,
    ca_bundle_pem: &str,
) -> Result<Injection, InjectError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let err = |action, source| InjectError {
        action,
        name: name.to_string(),
        source: Box::new(source),
    };
    let Some(current) = api.get_opt(name).await.map_err(|e| err("get", e))? else {
        return Ok(Injection::NotFound);
    };
    let want = ByteString(ca_bundle_pem.as_bytes().to_vec());
    let stale: Vec<serde_json::Value> = current
        .webhooks
        .unwrap_or_default()
        .iter()
        .filter(|w| w.client_config.ca_bundle.as_ref() != Some(&want))
        .map(|w| serde_json::json!({"name": w.name, "clientConfig": {"caBundle": want}}))
        .collect();
    if stale.is_empty() {
        return Ok(Injection::Unchanged);
    }
    let count = stale.len();
    let patch = serde_json::json!({"webhooks": stale});
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        },
        &Patch::Strategic(patch),
    )
    .await
    .map_err(|e| err("patch", e))?;
    Ok(Injection::Updated(count))
}
