//! The self-managed certificate Secret (`kubernetes.io/tls`): a CA (`ca.crt`, `ca.key`) and a
//! serving certificate (`tls.crt`, `tls.key`). [`SecretCertSource::ensure`] creates it when
//! absent — when several replicas race, an `AlreadyExists`/`Conflict` means another replica won,
//! so it re-reads and uses the winner's — and rewrites it when [`super::rotation::evaluate`] says
//! something must change.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, PostParams};

use super::rotation::{CertLifetimes, Evaluation, evaluate};
use super::{CertError, CertSubject, ServingCert};
use crate::api::FIELD_MANAGER;

/// The self-managed certificate Secret.
#[derive(Clone)]
pub struct SecretCertSource {
    api: Api<Secret>,
    namespace: String,
    name: String,
    subject: CertSubject,
    lifetimes: CertLifetimes,
    /// The ValidatingWebhookConfiguration that owns the Secret (garbage collection deletes the
    /// Secret with it, so uninstalling the chart leaves no orphan).
    owner: Option<String>,
}

impl SecretCertSource {
    /// The Secret `namespace/name`, holding certificates for `subject`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        subject: CertSubject,
        lifetimes: CertLifetimes,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            subject,
            lifetimes,
            owner: None,
        }
    }

    /// Makes the Secret a dependent of the ValidatingWebhookConfiguration `name`: it gets an
    /// ownerReference when written, so that deleting the configuration (as `helm uninstall`
    /// does) lets the garbage collector delete the Secret too.
    pub fn owned_by_configuration(mut self, name: &str) -> Self {
        self.owner = Some(name.to_string());
        self
    }

    /// The ownerReference to the configuration, when it exists. Best effort: a configuration
    /// that is missing or unreadable only costs the Secret its garbage collection.
    async fn owner_reference(&self) -> Option<OwnerReference> {
        let name = self.owner.as_deref()?;
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.api.clone().into_client());
        match api.get_opt(name).await {
            Ok(Some(vwc)) => Some(OwnerReference {
                api_version: "admissionregistration.k8s.io/v1".into(),
                kind: "ValidatingWebhookConfiguration".into(),
                name: name.to_string(),
                uid: vwc.metadata.uid?,
                ..OwnerReference::default()
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(configuration = name, error = %e, "cannot read the webhook configuration; the certificate Secret gets no ownerReference");
                None
            }
        }
    }

    fn api_error(&self, action: &'static str, source: kube::Error) -> CertError {
        CertError::SecretApi {
            action,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source: Box::new(source),
        }
    }

    /// Makes sure the Secret holds a valid CA and serving certificate (creating, rotating or
    /// repairing as needed) and returns the serving certificate to use. Safe when several
    /// replicas call it at once: conflicting writes re-read and adopt the winner's data.
    pub async fn ensure(&self) -> Result<ServingCert, CertError> {
        const ATTEMPTS: u32 = 8;
        // Looked up once, on the first write (a valid Secret needs no owner lookup at all).
        let mut owner: Option<Option<OwnerReference>> = None;
        for attempt in 1..=ATTEMPTS {
            let now = SystemTime::now();
            let existing = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| self.api_error("get", e))?;
            let data: BTreeMap<String, Vec<u8>> = existing
                .as_ref()
                .and_then(|s| s.data.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            let (reasons, new_data, cert) =
                match evaluate(&data, &self.subject, self.lifetimes, now)? {
                    Evaluation::Valid(cert) => return Ok(cert),
                    Evaluation::Write {
                        reasons,
                        data,
                        cert,
                    } => (reasons, data, cert),
                };
            let bytes: BTreeMap<String, ByteString> = new_data
                .into_iter()
                .map(|(k, v)| (k, ByteString(v)))
                .collect();
            if owner.is_none() {
                owner = Some(self.owner_reference().await);
            }
            let owner = owner.clone().flatten();
            let result = match existing {
                None => {
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            namespace: Some(self.namespace.clone()),
                            labels: Some(BTreeMap::from([(
                                "app.kubernetes.io/managed-by".to_string(),
                                FIELD_MANAGER.to_string(),
                            )])),
                            owner_references: owner.map(|o| vec![o]),
                            ..ObjectMeta::default()
                        },
                        type_: Some("kubernetes.io/tls".into()),
                        data: Some(bytes),
                        ..Secret::default()
                    };
                    self.api
                        .create(&PostParams::default(), &secret)
                        .await
                        .map(|_| "created")
                }
                Some(mut secret) => {
                    // Keep foreign keys; replace ours. resourceVersion guards against races.
                    let mut all = secret.data.take().unwrap_or_default();
                    all.extend(bytes);
                    secret.data = Some(all);
                    // A Secret written before owners were set gets its owner now.
                    if let Some(o) = owner {
                        let refs = secret
                            .metadata
                            .owner_references
                            .get_or_insert_with(Vec::new);
                        if !refs.iter().any(|r| r.uid == o.uid) {
                            refs.push(o);
                        }
                    }
                    self.api
                        .replace(&self.name, &PostParams::default(), &secret)
                        .await
                        .map(|_| "updated")
                }
            };
            match result {
                Ok(verb) => {
                    tracing::info!(
                        secret = %format!("{}/{}", self.namespace, self.name),
                        serial = %cert.serial,
                        reasons = %reasons.join("; "),
                        "webhook certificate Secret {verb}"
                    );
                    return Ok(cert);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // AlreadyExists or Conflict: another replica wrote first; adopt its data.
                    tracing::debug!(attempt, reason = %s.reason, "lost a race on the certificate Secret; re-reading");
                    let backoff = Duration::from_millis(50 * u64::from(attempt));
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => {
                    return Err(
                        self.api_error(if data.is_empty() { "create" } else { "update" }, e)
                    );
                }
            }
        }
        Err(CertError::TooManyConflicts {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            attempts: ATTEMPTS,
        })
    }
}
