//! TLS for the operator's two HTTPS servers, the admission webhook and the secure metrics
//! endpoint (docs/design.md §6). One concern per file:
//!
//! * [`pem`]: parsing — [`ServingCert`] (a certificate, its key and the CA bundle that verifies
//!   it), PEM blocks, CA bundles ([`pem::parse_ca_bundle`]) and the renewal threshold;
//! * [`issue`]: issuing — a CA, certificates signed by it, and self-signed serving certificates,
//!   from one set of leaf parameters;
//! * [`rotation`]: the pure decision of what a self-managed Secret needs at a given time
//!   ([`rotation::evaluate`]), unit-tested with short lifetimes;
//! * [`secret`]: the self-managed Secret ([`SecretCertSource`]), safe when replicas race;
//! * [`files`]: mounted certificate files ([`FileCertSource`], cert-manager or any Secret volume);
//! * [`reload`]: one [`CertSource`] over those three and one reload loop that swaps the served
//!   certificate without a restart;
//! * [`server`]: the TLS server itself (rustls config, connection and time limits, graceful
//!   shutdown) and the [`CertStore`] it resolves certificates from on every handshake.
//!
//! The rustls crypto provider (ring) is chosen here once: [`provider`] for explicit
//! configurations, [`install_default_provider`] for libraries that use the process default.

pub mod files;
pub mod issue;
pub mod pem;
pub mod reload;
pub mod rotation;
pub mod secret;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

pub use files::{FileCertSource, FileContents};
pub use issue::CertSubject;
pub use pem::ServingCert;
pub use reload::{CertEvents, CertSource, ServedCert};
pub use rotation::CertLifetimes;
pub use secret::SecretCertSource;
pub use server::{CertStore, ServerLimits};

/// Secret key (and file name) of the CA bundle (PEM, the current signer first).
pub const CA_CERT: &str = "ca.crt";
/// Secret key of the CA's private key (PEM, PKCS#8).
pub const CA_KEY: &str = "ca.key";
/// Secret key (and file name) of the serving certificate (PEM).
pub const TLS_CERT: &str = "tls.crt";
/// Secret key (and file name) of the serving key (PEM, PKCS#8).
pub const TLS_KEY: &str = "tls.key";

/// The crypto provider of every TLS configuration the operator builds (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process default, for libraries that build their own TLS
/// configuration from it (kube's client, reqwest). Idempotent: a provider installed before
/// (by another caller, or a test) is kept.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
}

#[cfg(test)]
mod tests;
