//! Rotation: what a self-managed certificate Secret needs at a given time. Pure functions of the
//! Secret's data and the clock, unit-tested with short lifetimes:
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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::issue::{CertSubject, Signer};
use super::pem::{Parsed, certificate_blocks, needs_renewal, parse_certificate};
use super::{CA_CERT, CA_KEY, CertError, ServingCert, TLS_CERT, TLS_KEY, provider};

pub(crate) const DAY: Duration = Duration::from_secs(86_400);

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

pub(crate) fn verify_serving(
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
