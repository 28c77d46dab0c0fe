//! A worker's TLS to an https hook with a private CA and/or a client certificate
//! (`hook.caBundle`, `hook.caBundleRef`, `hook.clientCertSecretRef`).
//!
//! The material is read as the config's service account (a config can only use ConfigMaps and
//! Secrets of its own namespace that its own account may read), at preflight, at the start of
//! every term and every refresh period while running; a change builds a new hook client, so a
//! renewed certificate (cert-manager) needs no restart. With a CA bundle only those CAs are
//! trusted (not the public roots); with only a client certificate the platform's roots are.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::api::conditions::StartupFailure;
use crate::manager::runtime::Failure;
use crate::tls::pem::{BundleError, certificates, root_store};
use crate::validation::HookTls;

/// Largest CA bundle or certificate value read from the API (a bigger one is refused).
pub const MAX_PEM_BYTES: usize = 256 * 1024;

/// Why a hook's TLS material cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    /// A CA bundle is unusable (no certificate, bad PEM, not a CA).
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// rustls refused the TLS setup.
    #[error("{what}: {reason}")]
    Setup {
        /// What was being set up.
        what: String,
        /// rustls' reason.
        reason: String,
    },
    /// The client certificate and key do not form a usable identity.
    #[error("client certificate Secret {name}: {reason}")]
    BadClientCert {
        /// The Secret.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A ConfigMap/Secret could not be read as the service account.
    #[error("{what} cannot be read as {user}: {reason}")]
    Unreadable {
        /// Which object and key.
        what: String,
        /// The service account user.
        user: String,
        /// Why (not found, forbidden, key missing, too large).
        reason: String,
        /// True for reasons the tenant has to fix (404, 403, missing key); false for
        /// transient API errors.
        permanent: bool,
    },
}

impl TlsError {
    /// False only for transient API errors (the last material is kept).
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            TlsError::Unreadable {
                permanent: false,
                ..
            }
        )
    }

    /// The worker failure (`HookTlsUnavailable`) this error ends a start or term with.
    pub fn failure(&self, worker: &str) -> Failure {
        Failure::new(
            StartupFailure::HookTlsUnavailable,
            format!("worker {worker}: hook TLS: {self}"),
        )
    }
}

/// Parses an inline `hook.caBundle` and checks every certificate can be a root.
pub fn parse_ca_bundle(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    Ok(crate::tls::pem::parse_ca_bundle(pem, "hook.caBundle")?)
}

/// The TLS material of one worker, as last read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Material {
    /// CA certificates (inline first, then the referenced ones); empty: the platform roots.
    pub cas: Vec<CertificateDer<'static>>,
    /// The client certificate chain and its key (PEM, as read).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl Material {
    /// The rustls client configuration this material makes.
    pub fn client_config(&self, secret: &str) -> Result<rustls::ClientConfig, TlsError> {
        let provider = crate::tls::provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup {
                what: "TLS setup".into(),
                reason: e.to_string(),
            })?;
        let builder = if self.cas.is_empty() {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map_err(|e| TlsError::Setup {
                    what: "the platform's roots".into(),
                    reason: e.to_string(),
                })?
        } else {
            builder.with_root_certificates(root_store(&self.cas, "the CA bundle")?)
        };
        match &self.client {
            None => Ok(builder.with_no_client_auth()),
            Some((crt, key)) => {
                let bad = |reason: String| TlsError::BadClientCert {
                    name: secret.to_string(),
                    reason,
                };
                let chain = certificates(crt, "tls.crt").map_err(|e| bad(e.to_string()))?;
                let key =
                    PrivateKeyDer::from_pem_slice(key).map_err(|e| bad(format!("tls.key: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad(e.to_string()))
            }
        }
    }
}

/// Reads a worker's TLS material as the service account (`client` impersonates it). A key and
/// certificate that do not fit together are found by [`Material::client_config`], which the
/// worker calls whenever the material changed, before any call uses it.
pub async fn load(
    client: &kube::Client,
    namespace: &str,
    user: &str,
    tls: &HookTls,
    timeout: Duration,
) -> Result<Material, TlsError> {
    let mut m = Material::default();
    if let Some(pem) = &tls.ca_bundle {
        m.cas = parse_ca_bundle(pem.as_bytes())?;
    }
    if let Some(r) = &tls.ca_bundle_ref {
        let what = format!("{} {namespace}/{} key {}", r.kind, r.name, r.key);
        let value = read_key(
            client, namespace, user, &r.kind, &r.name, &r.key, &what, timeout,
        )
        .await?;
        let certs = certificates(&value, &what)?;
        root_store(&certs, &what)?;
        m.cas.extend(certs);
    }
    if let Some(name) = &tls.client_cert_secret {
        let what = |k: &str| format!("Secret {namespace}/{name} key {k}");
        let crt = read_key(
            client,
            namespace,
            user,
            "Secret",
            name,
            "tls.crt",
            &what("tls.crt"),
            timeout,
        )
        .await?;
        let key = read_key(
            client,
            namespace,
            user,
            "Secret",
            name,
            "tls.key",
            &what("tls.key"),
            timeout,
        )
        .await?;
        m.client = Some((crt, key));
    }
    Ok(m)
}

#[allow(clippy::too_many_arguments)]
async fn read_key(
    client: &kube::Client,
    namespace: &str,
    user: &str,
    kind: &str,
    name: &str,
    key: &str,
    what: &str,
    timeout: Duration,
) -> Result<Vec<u8>, TlsError> {
    let unreadable = |reason: String, permanent: bool| TlsError::Unreadable {
        what: what.to_string(),
        user: user.to_string(),
        reason,
        permanent,
    };
    let classify = |e: kube::Error| match e {
        kube::Error::Api(s) if s.code == 404 => unreadable("not found".into(), true),
        kube::Error::Api(s) if s.code == 403 => unreadable(
            format!("forbidden ({}); grant it get on this {kind}", s.message),
            true,
        ),
        e => unreadable(e.to_string(), false),
    };
    let timed_out = || unreadable(format!("no answer within {timeout:?}"), false);
    let value: Option<Vec<u8>> = if kind == "Secret" {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let s = tokio::time::timeout(timeout, api.get(name))
            .await
            .map_err(|_| timed_out())?
            .map_err(classify)?;
        s.data.and_then(|mut d| d.remove(key)).map(|b| b.0)
    } else {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let c = tokio::time::timeout(timeout, api.get(name))
            .await
            .map_err(|_| timed_out())?
            .map_err(classify)?;
        c.data
            .and_then(|mut d| d.remove(key))
            .map(String::into_bytes)
            .or_else(|| c.binary_data.and_then(|mut d| d.remove(key)).map(|b| b.0))
    };
    let value = value.ok_or_else(|| unreadable(format!("has no key {key:?}"), true))?;
    if value.len() > MAX_PEM_BYTES {
        return Err(unreadable(
            format!(
                "{} bytes, more than the {MAX_PEM_BYTES} allowed",
                value.len()
            ),
            true,
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn bundles_need_certificates_and_nothing_broken() {
        assert_eq!(parse_ca_bundle(ca().as_bytes()).unwrap().len(), 1);
        let two = format!("{}\n{}", ca(), ca());
        assert_eq!(parse_ca_bundle(two.as_bytes()).unwrap().len(), 2);
        assert!(matches!(
            parse_ca_bundle(b"hello"),
            Err(TlsError::Bundle(BundleError::NoCertificates(_)))
        ));
        let broken = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(parse_ca_bundle(broken.as_bytes()).is_err());
    }

    #[test]
    fn material_makes_a_client_config_or_says_why_not() {
        let m = Material {
            cas: parse_ca_bundle(ca().as_bytes()).unwrap(),
            client: None,
        };
        assert!(m.client_config("").is_ok());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let good = Material {
            cas: m.cas.clone(),
            client: Some((cert.pem().into_bytes(), key.serialize_pem().into_bytes())),
        };
        assert!(good.client_config("c").is_ok());
        let bad = Material {
            cas: m.cas.clone(),
            client: Some((cert.pem().into_bytes(), b"nope".to_vec())),
        };
        let e = bad.client_config("c").unwrap_err();
        assert!(e.to_string().contains("client certificate Secret c"), "{e}");
    }
}
