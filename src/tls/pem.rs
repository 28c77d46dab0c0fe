//! Parsing: serving certificates with their keys, PEM blocks and CA bundles.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CertError, provider};

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

pub(crate) fn to_system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Splits PEM text into its `CERTIFICATE` blocks (text kept as is).
pub(crate) fn certificate_blocks(pem: &str) -> Vec<String> {
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
pub(crate) struct Parsed {
    pub(crate) pem: String,
    pub(crate) der: CertificateDer<'static>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    pub(crate) is_ca: bool,
    pub(crate) common_name: Option<String>,
    pub(crate) spki: Vec<u8>,
    pub(crate) serial: String,
}

pub(crate) fn parse_certificate(pem: &str, what: &str) -> Result<Parsed, CertError> {
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

pub(crate) fn certified_key(
    cert_pem: &str,
    key_pem: &str,
    what: &str,
) -> Result<CertifiedKey, CertError> {
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

/// Why a PEM CA bundle cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// The bundle holds no PEM `CERTIFICATE` block.
    #[error("{0} holds no PEM certificate")]
    NoCertificates(String),
    /// A block does not parse.
    #[error("{what} is not valid PEM: {reason}")]
    BadPem {
        /// Which value.
        what: String,
        /// The parser's reason.
        reason: String,
    },
    /// A certificate is not one rustls accepts as a root.
    #[error("{what}: a certificate cannot be used as a CA: {reason}")]
    BadCa {
        /// Which value.
        what: String,
        /// rustls' reason.
        reason: String,
    },
}

/// The certificates of a PEM bundle (`what` names it in errors).
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, BundleError> {
    let mut out = Vec::new();
    for c in CertificateDer::pem_slice_iter(pem) {
        out.push(c.map_err(|e| BundleError::BadPem {
            what: what.to_string(),
            reason: e.to_string(),
        })?);
    }
    if out.is_empty() {
        return Err(BundleError::NoCertificates(what.to_string()));
    }
    Ok(out)
}

/// A root store of `certs`, refusing certificates that cannot be roots.
pub fn root_store(
    certs: &[CertificateDer<'static>],
    what: &str,
) -> Result<rustls::RootCertStore, BundleError> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs {
        store.add(c.clone()).map_err(|e| BundleError::BadCa {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(store)
}

/// Parses a CA bundle (a hook's inline `caBundle`, named `what` in errors) and checks every
/// certificate can be a root.
pub fn parse_ca_bundle(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, BundleError> {
    let certs = certificates(pem, what)?;
    root_store(&certs, what)?;
    Ok(certs)
}
