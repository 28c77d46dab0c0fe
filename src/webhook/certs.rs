//! Webhook TLS certificates (docs/design.md §6), in two modes.
//!
//! **Self-managed** (default): a Secret (`kubernetes.io/tls`) holds a CA (`ca.crt`, `ca.key`)
//! and a serving certificate (`tls.crt`, `tls.key`) for the webhook's DNS names and
//! `127.0.0.1`. [`SecretCertSource::ensure`] creates it when absent — when several replicas race,
//! an `AlreadyExists`/`Conflict` means another replica won, so it re-reads and uses the winner's —
//! and rewrites it when something must change:
//!
//! * the serving certificate is re-issued when less than a third of its lifetime is left
//!   (default lifetime 1 year, so about 4 months before expiry), when it does not cover the
//!   required names, or when it does not verify against the CA bundle;
//! * the CA (default lifetime 10 years) rolls over when less than a third of its lifetime is
//!   left: the new CA is *added* to `ca.crt` (new first, unexpired old ones kept) and signs every
//!   later serving certificate, while the current serving certificate, signed by the old CA,
//!   stays trusted until its own rotation — so clients never see a certificate their bundle does
//!   not trust;
//! * an unusable CA (unparsable, not a CA, expired, or a key that does not match) is replaced.
//!
//! [`inject_ca_bundle`] writes `ca.crt` into every webhook's `clientConfig.caBundle` of the named
//! ValidatingWebhookConfiguration (a strategic-merge patch, only when it differs).
//!
//! **External** (cert-manager or any mounted Secret): [`FileCertSource`] reads `tls.crt` and
//! `tls.key` (and `ca.crt` when present) from a directory and is polled for changes.
//!
//! The decisions are pure functions of the Secret's data and the clock ([`evaluate`]) so they
//! are unit-tested with short lifetimes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Secret key of the CA bundle (PEM, the current signer first).
pub const CA_CERT: &str = "ca.crt";
/// Secret key of the CA's private key (PEM, PKCS#8).
pub const CA_KEY: &str = "ca.key";
/// Secret key of the serving certificate (PEM).
pub const TLS_CERT: &str = "tls.crt";
/// Secret key of the serving key (PEM, PKCS#8).
pub const TLS_KEY: &str = "tls.key";

/// Field manager and `app.kubernetes.io/managed-by` value of what this module writes.
pub use crate::api::FIELD_MANAGER as MANAGER;

const DAY: Duration = Duration::from_secs(86_400);

/// Certificate lifetimes of the self-managed mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertLifetimes {
    /// CA lifetime (default 10 years = 3650 days).
    pub ca: Duration,
    /// Serving certificate lifetime (default 1 year = 365 days).
    pub serving: Duration,
}

impl Default for CertLifetimes {
    fn default() -> Self {
        Self {
            ca: DAY * 3650,
            serving: DAY * 365,
        }
    }
}

/// What the serving certificate must be valid for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSubject {
    /// DNS names (the Service's names, `localhost`, the URL's host).
    pub dns_names: Vec<String>,
    /// IP addresses (always includes 127.0.0.1).
    pub ips: Vec<IpAddr>,
}

/// Why certificates could not be produced, read or published.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed to build a certificate.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM certificate is missing or unreadable.
    #[error("{what} is not a usable PEM certificate: {reason}")]
    BadCertificate {
        /// Which certificate (e.g. `tls.crt in /certs`).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A PEM private key is missing, unreadable or does not match its certificate.
    #[error("{what} is not a usable private key: {reason}")]
    BadKey {
        /// Which key.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The Kubernetes API refused or failed a request on the certificate Secret.
    #[error("cannot {action} Secret {namespace}/{name}: {source}")]
    SecretApi {
        /// get, create or update.
        action: &'static str,
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Other replicas kept changing the Secret while this one tried to settle it.
    #[error(
        "Secret {namespace}/{name} kept changing under concurrent updates ({attempts} attempts); will retry"
    )]
    TooManyConflicts {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The Kubernetes API refused or failed a request on the webhook configuration.
    #[error("cannot {action} ValidatingWebhookConfiguration {name}: {source}")]
    WebhookConfigurationApi {
        /// get or patch.
        action: &'static str,
        /// The configuration's name.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
}

/// A serving certificate with its key and the CA bundle that verifies it.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingCert {
    /// The certificate (chain) in PEM, leaf first.
    pub cert_pem: String,
    /// The private key in PEM.
    pub key_pem: String,
    /// The CA bundle clients must trust, in PEM (absent for external certificates without
    /// `ca.crt`).
    pub ca_bundle_pem: Option<String>,
    /// Start of the leaf's validity.
    pub not_before: SystemTime,
    /// End of the leaf's validity.
    pub not_after: SystemTime,
    /// The leaf's serial number, hex, for logs.
    pub serial: String,
}

impl ServingCert {
    /// The latest expiry among the CA certificates of the bundle (during a CA rotation the
    /// bundle holds the old and the new CA; clients keep working until the newest expires).
    pub fn ca_not_after(&self) -> Option<SystemTime> {
        let pem = self.ca_bundle_pem.as_deref()?;
        certificate_blocks(pem)
            .iter()
            .filter_map(|b| parse_certificate(b, "CA bundle").ok())
            .filter(|c| c.is_ca)
            .map(|c| c.not_after)
            .max()
    }
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("has_ca_bundle", &self.ca_bundle_pem.is_some())
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn to_system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Splits PEM text into its `CERTIFICATE` blocks (text kept as is).
fn certificate_blocks(pem: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start..];
        let Some(end) = after.find(END) else { break };
        out.push(format!("{}\n", &after[..end + END.len()]));
        rest = &after[end + END.len()..];
    }
    out
}

/// One parsed certificate.
struct Parsed {
    pem: String,
    der: CertificateDer<'static>,
    not_before: SystemTime,
    not_after: SystemTime,
    is_ca: bool,
    common_name: Option<String>,
    spki: Vec<u8>,
    serial: String,
}

fn parse_certificate(pem: &str, what: &str) -> Result<Parsed, CertError> {
    let bad = |reason: String| CertError::BadCertificate {
        what: what.to_string(),
        reason,
    };
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| bad(format!("no PEM CERTIFICATE block ({e})")))?;
    let (_, x509) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| bad(format!("not an X.509 certificate ({e})")))?;
    let validity = x509.validity();
    let common_name = x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Ok(Parsed {
        pem: pem.to_string(),
        not_before: to_system_time(validity.not_before.timestamp()),
        not_after: to_system_time(validity.not_after.timestamp()),
        is_ca: x509.is_ca(),
        common_name,
        spki: x509.public_key().raw.to_vec(),
        serial: x509.raw_serial_as_string(),
        der: der.clone().into_owned(),
    })
}

fn certified_key(cert_pem: &str, key_pem: &str, what: &str) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::BadCertificate {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::BadCertificate {
            what: what.to_string(),
            reason: "no PEM CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| CertError::BadKey {
        what: what.to_string(),
        reason: format!("no PEM private key ({e})"),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| CertError::BadKey {
        what: what.to_string(),
        reason: format!("{e} (does the key belong to the certificate?)"),
    })
}

impl ServingCert {
    /// Parses a certificate and key (PEM) and checks that they belong together.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        ca_bundle_pem: Option<&str>,
        what: &str,
    ) -> Result<Self, CertError> {
        certified_key(cert_pem, key_pem, what)?;
        let leaf = parse_certificate(cert_pem, what)?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            ca_bundle_pem: ca_bundle_pem.map(str::to_string),
            not_before: leaf.not_before,
            not_after: leaf.not_after,
            serial: leaf.serial,
        })
    }

    /// The rustls form, for the server's certificate resolver.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, CertError> {
        certified_key(&self.cert_pem, &self.key_pem, "the serving certificate").map(Arc::new)
    }

    /// True when less than a third of the certificate's lifetime is left at `now`.
    pub fn needs_rotation(&self, now: SystemTime) -> bool {
        needs_renewal(self.not_before, self.not_after, now)
    }
}

/// True when less than a third of `[not_before, not_after]` is left at `now`.
pub fn needs_renewal(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    let total = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let left = not_after.duration_since(now).unwrap_or(Duration::ZERO);
    left * 3 < total
}

/// Back-dating of `notBefore` against clock skew: 5 minutes, or a tenth of short lifetimes.
fn backdate(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(300))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and without a leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A CA able to sign serving certificates.
struct Signer {
    cert: Parsed,
    key: KeyPair,
    key_pem: String,
}

impl Signer {
    fn generate(lifetime: Duration, now: SystemTime) -> Result<Self, CertError> {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let cn = format!("manager-operator-webhook-ca@{secs}");
        let mut params = ca_params(&cn);
        params.serial_number = Some(random_serial());
        params.not_before = (now - backdate(lifetime)).into();
        params.not_after = (now + lifetime).into();
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pem = cert.pem();
        Ok(Self {
            cert: parse_certificate(&pem, "the generated CA")?,
            key_pem: key.serialize_pem(),
            key,
        })
    }

    /// The signer in a bundle: the unexpired CA certificate whose public key is `key_pem`'s.
    fn from_bundle(bundle: &[Parsed], key_pem: &str, now: SystemTime) -> Result<Self, String> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| format!("{CA_KEY} is not a usable private key ({e})"))?;
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let cert = bundle
            .iter()
            .find(|c| c.spki == spki)
            .ok_or_else(|| format!("no certificate in {CA_CERT} matches {CA_KEY}"))?;
        if !cert.is_ca {
            return Err(format!("the certificate for {CA_KEY} is not a CA"));
        }
        if cert.not_after <= now {
            return Err("the CA has expired".into());
        }
        let Some(_) = &cert.common_name else {
            return Err("the CA has no common name".into());
        };
        Ok(Self {
            cert: parse_certificate(&cert.pem, CA_CERT).map_err(|e| e.to_string())?,
            key,
            key_pem: key_pem.to_string(),
        })
    }

    fn issue(
        &self,
        subject: &CertSubject,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<ServingCert, CertError> {
        let cn = self.cert.common_name.clone().unwrap_or_default();
        let issuer = Issuer::new(ca_params(&cn), &self.key);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            subject
                .dns_names
                .first()
                .cloned()
                .unwrap_or_else(|| "manager-operator-webhook".into()),
        );
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let mut sans = Vec::new();
        for d in &subject.dns_names {
            sans.push(SanType::DnsName(d.clone().try_into()?));
        }
        for ip in &subject.ips {
            sans.push(SanType::IpAddress(*ip));
        }
        params.subject_alt_names = sans;
        params.not_before = (now - backdate(lifetime)).max(self.cert.not_before).into();
        // Never outlive the CA.
        params.not_after = (now + lifetime).min(self.cert.not_after).into();
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        ServingCert::from_pem(
            &cert.pem(),
            &key.serialize_pem(),
            None,
            "the issued certificate",
        )
    }
}

fn verify_serving(
    leaf_pem: &str,
    bundle: &[Parsed],
    subject: &CertSubject,
    now: SystemTime,
) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in bundle {
        roots
            .add(ca.der.clone())
            .map_err(|e| format!("the CA bundle holds an unusable certificate ({e})"))?;
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("cannot build a verifier from the CA bundle ({e})"))?;
    let leaf = CertificateDer::from_pem_slice(leaf_pem.as_bytes())
        .map_err(|e| format!("{TLS_CERT} is not PEM ({e})"))?;
    let unix = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    let mut names: Vec<ServerName<'static>> = Vec::new();
    for d in &subject.dns_names {
        names.push(
            ServerName::try_from(d.clone())
                .map_err(|e| format!("{d:?} is not a DNS name ({e})"))?,
        );
    }
    for ip in &subject.ips {
        names.push(ServerName::IpAddress((*ip).into()));
    }
    for name in names {
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], unix)
            .map_err(|e| format!("{TLS_CERT} is not valid for {name:?}: {e}"))?;
    }
    Ok(())
}

/// What a Secret's data needs.
#[derive(Debug)]
pub enum Evaluation {
    /// The Secret is fine: serve this.
    Valid(ServingCert),
    /// The Secret must be (re)written with `data`, then `cert` served.
    Write {
        /// Why, for logs (e.g. "the serving certificate expires at ..." ).
        reasons: Vec<String>,
        /// The complete new data of the Secret.
        data: BTreeMap<String, Vec<u8>>,
        /// The serving certificate in `data`.
        cert: ServingCert,
    },
}

fn text<'a>(data: &'a BTreeMap<String, Vec<u8>>, key: &str) -> Option<&'a str> {
    data.get(key)
        .and_then(|b| std::str::from_utf8(b).ok())
        .filter(|s| !s.trim().is_empty())
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    x509_parser::time::ASN1Time::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("@{secs}"))
}

/// Decides what a self-managed Secret's data needs at `now`: nothing ([`Evaluation::Valid`]) or
/// a rewrite ([`Evaluation::Write`]) with freshly generated parts. `data` is empty for a Secret
/// that does not exist yet.
pub fn evaluate(
    data: &BTreeMap<String, Vec<u8>>,
    subject: &CertSubject,
    lifetimes: CertLifetimes,
    now: SystemTime,
) -> Result<Evaluation, CertError> {
    let mut reasons = Vec::new();
    let bundle: Vec<Parsed> = text(data, CA_CERT)
        .map(|pem| {
            certificate_blocks(pem)
                .iter()
                .filter_map(|b| parse_certificate(b, CA_CERT).ok())
                .collect()
        })
        .unwrap_or_default();

    // The CA.
    let existing = match text(data, CA_KEY) {
        None if data.is_empty() => Err("the Secret does not exist yet".to_string()),
        None => Err(format!("{CA_KEY} is missing")),
        Some(key_pem) if bundle.is_empty() => {
            let _ = key_pem;
            Err(format!("{CA_CERT} holds no certificate"))
        }
        Some(key_pem) => Signer::from_bundle(&bundle, key_pem, now),
    };
    let (signer, mut bundle, ca_changed) = match existing {
        Ok(signer) if needs_renewal(signer.cert.not_before, signer.cert.not_after, now) => {
            reasons.push(format!(
                "the CA expires at {}: rolling over to a new CA (the old one stays in {CA_CERT} until it expires)",
                rfc3339(signer.cert.not_after)
            ));
            let new = Signer::generate(lifetimes.ca, now)?;
            let mut b = vec![parse_certificate(&new.cert.pem, CA_CERT)?];
            b.extend(bundle.into_iter().filter(|c| c.not_after > now && c.is_ca));
            (new, b, true)
        }
        Ok(signer) => (signer, bundle, false),
        Err(reason) => {
            reasons.push(format!("{reason}: generating a new CA"));
            let new = Signer::generate(lifetimes.ca, now)?;
            let b = vec![parse_certificate(&new.cert.pem, CA_CERT)?];
            (new, b, true)
        }
    };

    // The serving certificate.
    let current = match (text(data, TLS_CERT), text(data, TLS_KEY)) {
        (Some(c), Some(k)) => ServingCert::from_pem(c, k, None, TLS_CERT)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                verify_serving(&s.cert_pem, &bundle, subject, now)?;
                if s.needs_rotation(now) {
                    return Err(format!(
                        "the serving certificate expires at {}, less than a third of its lifetime away",
                        rfc3339(s.not_after)
                    ));
                }
                Ok(s)
            }),
        _ if data.is_empty() => Err("no serving certificate yet".to_string()),
        _ => Err(format!("{TLS_CERT} or {TLS_KEY} is missing")),
    };
    let (mut serving, serving_changed) = match current {
        Ok(s) => (s, false),
        Err(reason) => {
            reasons.push(format!("{reason}: issuing a new serving certificate"));
            let issued = signer.issue(subject, lifetimes.serving, now)?;
            if let Err(e) = verify_serving(&issued.cert_pem, &bundle, subject, now) {
                // The stored CA cannot produce verifiable certificates: start over.
                reasons.push(format!(
                    "a certificate issued by the stored CA does not verify ({e}): generating a new CA"
                ));
                let new = Signer::generate(lifetimes.ca, now)?;
                bundle = vec![parse_certificate(&new.cert.pem, CA_CERT)?];
                let issued = new.issue(subject, lifetimes.serving, now)?;
                let data = secret_data(&new, &bundle, &issued);
                let cert = with_bundle(issued, &bundle);
                return Ok(Evaluation::Write {
                    reasons,
                    data,
                    cert,
                });
            }
            (issued, true)
        }
    };
    serving = with_bundle(serving, &bundle);
    if !ca_changed && !serving_changed {
        return Ok(Evaluation::Valid(serving));
    }
    Ok(Evaluation::Write {
        reasons,
        data: secret_data(&signer, &bundle, &serving),
        cert: serving,
    })
}

fn bundle_pem(bundle: &[Parsed]) -> String {
    bundle.iter().map(|c| c.pem.as_str()).collect()
}

fn with_bundle(mut s: ServingCert, bundle: &[Parsed]) -> ServingCert {
    s.ca_bundle_pem = Some(bundle_pem(bundle));
    s
}

fn secret_data(
    signer: &Signer,
    bundle: &[Parsed],
    serving: &ServingCert,
) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        (CA_CERT.to_string(), bundle_pem(bundle).into_bytes()),
        (CA_KEY.to_string(), signer.key_pem.clone().into_bytes()),
        (TLS_CERT.to_string(), serving.cert_pem.clone().into_bytes()),
        (TLS_KEY.to_string(), serving.key_pem.clone().into_bytes()),
    ])
}

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
                                MANAGER.to_string(),
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
) -> Result<Injection, CertError> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let err = |action, source| CertError::WebhookConfigurationApi {
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
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        },
        &Patch::Strategic(patch),
    )
    .await
    .map_err(|e| err("patch", e))?;
    Ok(Injection::Updated(count))
}

/// Certificates mounted as files (cert-manager or any Secret volume).
#[derive(Clone, Debug)]
pub struct FileCertSource {
    dir: PathBuf,
}

/// The raw contents of the files, to detect changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileContents {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

impl FileCertSource {
    /// Reads `tls.crt`, `tls.key` and optional `ca.crt` from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, file: &str) -> Result<Vec<u8>, CertError> {
        let path = self.dir.join(file);
        std::fs::read(&path).map_err(|source| CertError::Read { path, source })
    }

    /// The files' current contents (cheap; compare with the last load to detect a change).
    pub fn contents(&self) -> Result<FileContents, CertError> {
        let ca = match self.read(CA_CERT) {
            Ok(b) => Some(b),
            Err(CertError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        Ok(FileContents {
            cert: self.read(TLS_CERT)?,
            key: self.read(TLS_KEY)?,
            ca,
        })
    }

    /// Parses contents read by [`Self::contents`].
    pub fn parse(&self, contents: &FileContents) -> Result<ServingCert, CertError> {
        let what = |f: &str| format!("{} in {}", f, self.dir.display());
        let cert =
            String::from_utf8(contents.cert.clone()).map_err(|_| CertError::BadCertificate {
                what: what(TLS_CERT),
                reason: "not UTF-8 text".into(),
            })?;
        let key = String::from_utf8(contents.key.clone()).map_err(|_| CertError::BadKey {
            what: what(TLS_KEY),
            reason: "not UTF-8 text".into(),
        })?;
        let ca = match &contents.ca {
            Some(b) => {
                Some(
                    String::from_utf8(b.clone()).map_err(|_| CertError::BadCertificate {
                        what: what(CA_CERT),
                        reason: "not UTF-8 text".into(),
                    })?,
                )
            }
            None => None,
        };
        ServingCert::from_pem(&cert, &key, ca.as_deref(), &what(TLS_CERT))
    }

    /// Reads and parses the files.
    pub fn load(&self) -> Result<(ServingCert, FileContents), CertError> {
        let contents = self.contents()?;
        Ok((self.parse(&contents)?, contents))
    }
}

#[cfg(test)]
mod tests;
