//! One certificate source and one reload loop for both TLS servers: the self-managed Secret
//! (webhook), mounted files (webhook and metrics) or a self-signed certificate (metrics). Every
//! check interval the loop asks the source for the certificate to serve and swaps it in on the
//! next handshake when it changed; a failed check keeps the current certificate.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::issue::{self, CertSubject};
use super::{CertError, CertStore, FileCertSource, FileContents, SecretCertSource, ServingCert};

/// Where a server's certificate comes from, with what was loaded last.
pub enum CertSource {
    /// The self-managed Secret, settled (created, rotated, repaired) on every check.
    Secret(Box<SecretCertSource>),
    /// Mounted files, re-read when their contents change.
    Files(FileCertSource, FileContents),
    /// Generated here; re-generated when a third of its lifetime is left.
    SelfSigned {
        /// The certificate's common name.
        common_name: String,
        /// The names it covers.
        subject: CertSubject,
        /// Its lifetime.
        lifetime: Duration,
        /// The certificate generated last.
        current: ServingCert,
    },
}

impl CertSource {
    /// Settles the Secret and returns the source with the certificate to serve first.
    pub async fn secret(source: SecretCertSource) -> Result<(Self, ServingCert), CertError> {
        let cert = source.ensure().await?;
        Ok((Self::Secret(Box::new(source)), cert))
    }

    /// Reads the files in `source` and returns the source with their certificate.
    pub fn files(source: FileCertSource) -> Result<(Self, ServingCert), CertError> {
        let (cert, contents) = source.load()?;
        Ok((Self::Files(source, contents), cert))
    }

    /// Generates a self-signed certificate for `subject` valid for `lifetime`.
    pub fn self_signed(
        common_name: &str,
        subject: CertSubject,
        lifetime: Duration,
    ) -> Result<(Self, ServingCert), CertError> {
        let cert = issue::self_signed(common_name, &subject, lifetime, SystemTime::now())?;
        let source = Self::SelfSigned {
            common_name: common_name.to_string(),
            subject,
            lifetime,
            current: cert.clone(),
        };
        Ok((source, cert))
    }

    /// The certificate to serve from now on when the source may have a new one (the Secret's
    /// settled certificate, changed files, a re-generated certificate); `None` when nothing
    /// changed. `Err` when the source became unusable: the current certificate stays.
    pub async fn refresh(&mut self, now: SystemTime) -> Result<Option<ServingCert>, CertError> {
        match self {
            Self::Secret(source) => source.ensure().await.map(Some),
            Self::Files(files, last) => {
                let contents = files.contents()?;
                if contents == *last {
                    return Ok(None);
                }
                let cert = files.parse(&contents)?;
                *last = contents;
                Ok(Some(cert))
            }
            Self::SelfSigned {
                common_name,
                subject,
                lifetime,
                current,
            } => {
                if !current.needs_rotation(now) {
                    return Ok(None);
                }
                let cert = issue::self_signed(common_name, subject, *lifetime, now)?;
                *current = cert.clone();
                Ok(Some(cert))
            }
        }
    }
}

/// The certificate a server serves now: the [`CertStore`] its handshakes read, and the
/// certificate in PEM form for whoever needs its CA bundle or expiry.
#[derive(Debug)]
pub struct ServedCert {
    store: Arc<CertStore>,
    current: RwLock<ServingCert>,
}

impl ServedCert {
    /// Serves `cert` (checked to be usable by rustls).
    pub fn new(cert: ServingCert) -> Result<Arc<Self>, CertError> {
        let store = Arc::new(CertStore::new());
        store.set(cert.certified_key()?);
        Ok(Arc::new(Self {
            store,
            current: RwLock::new(cert),
        }))
    }

    /// The store to build the server's TLS configuration from.
    pub fn store(&self) -> Arc<CertStore> {
        self.store.clone()
    }

    /// The certificate served now.
    pub fn current(&self) -> ServingCert {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves `cert` from the next handshake on; true when it differs from the current one.
    pub fn install(&self, cert: ServingCert) -> Result<bool, CertError> {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        if *guard == cert {
            return Ok(false);
        }
        self.store.set(cert.certified_key()?);
        *guard = cert;
        Ok(true)
    }
}

/// What a server does around a check (the webhook publishes its CA bundle and counts
/// rotations; the metrics server needs nothing). Every method defaults to doing nothing.
pub trait CertEvents: Send + Sync + 'static {
    /// Called on every successful check with the certificate about to be served (new or not),
    /// before it is installed, so a CA bundle can be published before a certificate that needs
    /// it is served.
    fn publish<'a>(&'a self, cert: &'a ServingCert) -> BoxFuture<'a, ()> {
        let _ = cert;
        Box::pin(async {})
    }

    /// A different certificate is now served.
    fn installed(&self, cert: &ServingCert) {
        let _ = cert;
    }

    /// A check failed; the current certificate stays.
    fn failed(&self, error: &CertError) {
        let _ = error;
    }
}

/// No events.
impl CertEvents for () {}

/// Checks `source` every `every` until `shutdown` is cancelled and serves what it yields
/// through `served`. `server` (`webhook`, `metrics`) starts its log messages.
pub async fn run<E: CertEvents>(
    server: &'static str,
    mut source: CertSource,
    served: Arc<ServedCert>,
    every: Duration,
    events: E,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let cert = match source.refresh(SystemTime::now()).await {
            Ok(Some(cert)) => cert,
            Ok(None) => served.current(),
            Err(e) => {
                events.failed(&e);
                tracing::warn!(error = %e, "{server} certificate check failed; keeping the current certificate");
                continue;
            }
        };
        events.publish(&cert).await;
        let serial = cert.serial.clone();
        let installed = cert.clone();
        match served.install(cert) {
            Ok(true) => {
                events.installed(&installed);
                tracing::info!(%serial, "{server} serving certificate reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                events.failed(&e);
                tracing::warn!(error = %e, "new {server} certificate unusable; keeping the current one");
            }
        }
    }
}
