//! Issuing: a CA, serving certificates signed by it, and self-signed serving certificates. Both
//! kinds of serving certificate come from the same leaf parameters, so they differ only in who signs.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use super::pem::{Parsed, parse_certificate};
use super::{CA_CERT, CA_KEY, CertError, ServingCert};

/// What a serving certificate must be valid for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSubject {
    /// DNS names (the Service's names, `localhost`, the URL's host).
    pub dns_names: Vec<String>,
    /// IP addresses (always includes 127.0.0.1).
    pub ips: Vec<IpAddr>,
}

/// Back-dating of `notBefore` against clock skew: 5 minutes, or a tenth of short lifetimes.
pub(crate) fn backdate(lifetime: Duration) -> Duration {
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
pub(crate) struct Signer {
    pub(crate) cert: Parsed,
    key: KeyPair,
    pub(crate) key_pem: String,
}

impl Signer {
    pub(crate) fn generate(lifetime: Duration, now: SystemTime) -> Result<Self, CertError> {
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
    pub(crate) fn from_bundle(
        bundle: &[Parsed],
        key_pem: &str,
        now: SystemTime,
    ) -> Result<Self, String> {
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

    pub(crate) fn issue(
        &self,
        subject: &CertSubject,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<ServingCert, CertError> {
        let cn = self.cert.common_name.clone().unwrap_or_default();
        let issuer = Issuer::new(ca_params(&cn), &self.key);
        let common_name = subject
            .dns_names
            .first()
            .map_or("manager-operator-webhook", String::as_str);
        let mut params = leaf_params(common_name, subject)?;
        params.use_authority_key_identifier_extension = true;
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

/// The parameters of a serving certificate for `subject`: its names as SANs, `common_name`, a
/// random serial, not a CA, digital signature for server authentication. The caller sets the
/// validity.
fn leaf_params(common_name: &str, subject: &CertSubject) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut sans = Vec::new();
    for d in &subject.dns_names {
        sans.push(SanType::DnsName(d.clone().try_into()?));
    }
    for ip in &subject.ips {
        sans.push(SanType::IpAddress(*ip));
    }
    params.subject_alt_names = sans;
    Ok(params)
}

/// A self-signed serving certificate for `subject`, valid from a little before `now` (see
/// `backdate`) for `lifetime`; the certificate is its own and only trust anchor, so
/// [`ServingCert::ca_bundle_pem`] is `None`.
pub fn self_signed(
    common_name: &str,
    subject: &CertSubject,
    lifetime: Duration,
    now: SystemTime,
) -> Result<ServingCert, CertError> {
    let mut params = leaf_params(common_name, subject)?;
    params.not_before = (now - backdate(lifetime)).into();
    params.not_after = (now + lifetime).into();
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    ServingCert::from_pem(
        &cert.pem(),
        &key.serialize_pem(),
        None,
        &format!("the self-signed certificate {common_name:?}"),
    )
}
