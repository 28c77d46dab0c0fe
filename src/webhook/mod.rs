//! The validating admission webhook for ManagerConfigs (docs/design.md §2.1, §6).
//!
//! The API server POSTs `admission.k8s.io/v1` AdmissionReviews to
//! **`https://<host>:<port>/validate-managerconfig`** ([`VALIDATE_PATH`]) for every CREATE and
//! UPDATE of a `manager-operator.io/v1alpha1` ManagerConfig. The webhook runs the shared
//! validation ([`crate::validation::resolve`]) with the operator's hook policy, adds what the
//! CRD's CEL rules cannot do (the hook URL policy, label selector syntax, and a SubjectAccessReview
//! for a `leaseNamespace` outside the object's namespace), and denies with every violation by
//! field path, or admits with warnings for risky settings.
//!
//! * [`handler`]: the decision, bytes in, status and JSON out — no server needed;
//! * [`access`]: the SubjectAccessReview behind the [`access::AccessReviewer`] trait;
//! * [`server`]: HTTPS (axum, hyper-util, tokio-rustls) with body, time and concurrency limits,
//!   hot-swappable certificate and graceful shutdown;
//! * [`certs`]: self-managed CA and serving certificate in a Secret (rotation, CA injection) or
//!   external certificate files;
//! * [`register`]: the ValidatingWebhookConfiguration, for `--webhook-register`.
//!
//! [`start_webhook`]/[`run_webhook`] tie them together for `manager-operator run`.

pub mod access;
pub mod certs;
pub mod handler;
pub mod register;
pub mod server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::metrics::Metrics;
use crate::validation::{HookPolicy, names};
use access::{AccessReviewer, SubjectAccessReviewer};
use certs::{CertError, CertLifetimes, CertSubject, FileCertSource, SecretCertSource, ServingCert};
use register::ClientTarget;
use server::{AdmissionState, CertStore, ServerLimits};

/// The path the API server POSTs AdmissionReviews to.
pub const VALIDATE_PATH: &str = "/validate-managerconfig";

/// Where the serving certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertMode {
    /// The operator keeps a CA and serving certificate in a Secret, injects the CA into the
    /// webhook configuration and rotates before expiry.
    SelfManaged,
    /// `tls.crt`/`tls.key` (and optional `ca.crt`) are read from `--webhook-cert-dir`
    /// (cert-manager or any mounted Secret) and reloaded when they change.
    External,
}

/// Everything the webhook needs, from `cli::args::WebhookArgs::config` or built directly (tests).
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Listen address (port 0 picks a free port).
    pub bind_address: SocketAddr,
    /// URL mode: the `clientConfig.url` (port 0 = the bound port; empty path = VALIDATE_PATH).
    pub url: Option<Url>,
    /// Create/update the ValidatingWebhookConfiguration.
    pub register: bool,
    /// Namespace selector of the registered webhook.
    pub namespace_selector: Option<LabelSelector>,
    /// Name of the ValidatingWebhookConfiguration (CA injection, registration).
    pub configuration_name: String,
    /// Service name (certificate DNS names, service registration).
    pub service_name: String,
    /// Namespace of the Secret and Service.
    pub namespace: String,
    /// Self-managed Secret name.
    pub secret_name: String,
    /// Certificate mode.
    pub cert_mode: CertMode,
    /// External certificate directory.
    pub cert_dir: PathBuf,
    /// Self-managed lifetimes.
    pub lifetimes: CertLifetimes,
    /// Certificate re-check period.
    pub check_interval: Duration,
    /// Extra certificate DNS names.
    pub extra_dns_names: Vec<String>,
    /// Server limits.
    pub limits: ServerLimits,
    /// The operator's static tenant limits (workers per config, timing floors), refused at
    /// admission too (None: not checked here).
    pub tenant_limits: Option<crate::controller::limits::TenantLimits>,
}

impl WebhookConfig {
    /// Defaults for a local webhook on 127.0.0.1 with a free port in URL mode, self-managed
    /// certificates in `namespace/secret_name`.
    pub fn local(namespace: &str, secret_name: &str, configuration_name: &str) -> Self {
        Self {
            bind_address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            url: Url::parse("https://127.0.0.1:0").ok(),
            register: false,
            namespace_selector: None,
            configuration_name: configuration_name.into(),
            service_name: "manager-operator-webhook".into(),
            namespace: namespace.into(),
            secret_name: secret_name.into(),
            cert_mode: CertMode::SelfManaged,
            cert_dir: PathBuf::new(),
            lifetimes: CertLifetimes::default(),
            check_interval: Duration::from_secs(60),
            extra_dns_names: Vec::new(),
            limits: ServerLimits::default(),
            tenant_limits: None,
        }
    }

    /// The names the self-managed serving certificate covers: the Service's DNS names,
    /// `localhost`, the URL's host, the extra names, and 127.0.0.1.
    pub fn subject(&self) -> CertSubject {
        let svc = &self.service_name;
        let ns = &self.namespace;
        let mut dns_names = vec![
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
            format!("{svc}.{ns}"),
            svc.clone(),
            "localhost".to_string(),
        ];
        let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        if let Some(url) = &self.url {
            match url.host() {
                Some(url::Host::Domain(d)) => dns_names.push(d.to_ascii_lowercase()),
                Some(url::Host::Ipv4(ip)) => ips.push(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => ips.push(IpAddr::V6(ip)),
                None => {}
            }
        }
        dns_names.extend(self.extra_dns_names.iter().map(|d| d.to_ascii_lowercase()));
        let mut seen = std::collections::BTreeSet::new();
        dns_names.retain(|d| seen.insert(d.clone()));
        ips.dedup();
        CertSubject { dns_names, ips }
    }

    /// The `clientConfig.url` for a server bound to `bound`, in URL mode.
    pub fn client_url(&self, bound: SocketAddr) -> Option<Url> {
        let mut url = self.url.clone()?;
        if url.port() == Some(0) {
            let _ = url.set_port(Some(bound.port()));
        }
        if url.path().is_empty() || url.path() == "/" {
            url.set_path(VALIDATE_PATH);
        }
        Some(url)
    }

    /// Refuses inconsistent settings (URL mode over http, a serving lifetime longer than the
    /// CA's, absurd lifetimes, bad names).
    pub fn check(&self) -> Result<(), WebhookError> {
        let bad = |m: String| Err(WebhookError::Config(m));
        if let Some(url) = &self.url {
            if url.scheme() != "https" {
                return bad(format!("--webhook-url {url} must be an https URL"));
            }
            if url.host().is_none() {
                return bad(format!("--webhook-url {url} has no host"));
            }
            if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
                return bad(format!(
                    "--webhook-url {url} must not have a query, fragment or user (the API server refuses them)"
                ));
            }
        }
        if self.cert_mode == CertMode::SelfManaged {
            if !names::is_dns1123_subdomain(&self.secret_name) {
                return bad(format!(
                    "--webhook-secret-name {:?} is not a valid Secret name",
                    self.secret_name
                ));
            }
            if !names::is_dns1123_label(&self.namespace) {
                return bad(format!(
                    "--webhook-secret-namespace {:?} is not a valid namespace name",
                    self.namespace
                ));
            }
            const MIN: Duration = Duration::from_secs(10);
            const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);
            for (flag, d) in [
                ("--webhook-ca-lifetime", self.lifetimes.ca),
                ("--webhook-cert-lifetime", self.lifetimes.serving),
            ] {
                if d < MIN || d > MAX {
                    return bad(format!(
                        "{flag} must be between 10s and 100 years, got {d:?}"
                    ));
                }
            }
            if self.lifetimes.serving > self.lifetimes.ca {
                return bad(format!(
                    "--webhook-cert-lifetime ({:?}) must not exceed --webhook-ca-lifetime ({:?})",
                    self.lifetimes.serving, self.lifetimes.ca
                ));
            }
        }
        if !names::is_dns1123_label(&self.service_name) {
            return bad(format!(
                "--webhook-service-name {:?} is not a valid Service name",
                self.service_name
            ));
        }
        if !names::is_dns1123_subdomain(&self.configuration_name) {
            return bad(format!(
                "--webhook-configuration-name {:?} is not a valid object name",
                self.configuration_name
            ));
        }
        for d in &self.extra_dns_names {
            if !names::is_dns1123_subdomain(&d.to_ascii_lowercase()) {
                return bad(format!("--webhook-dns-names: {d:?} is not a DNS name"));
            }
        }
        Ok(())
    }
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The flags are inconsistent.
    #[error("invalid webhook settings: {0}")]
    Config(String),
    /// Certificates could not be produced or read.
    #[error("webhook certificates: {0}")]
    Cert(#[from] CertError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address} for the webhook: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// rustls refused the configuration.
    #[error("cannot configure TLS for the webhook: {0}")]
    Tls(#[from] rustls::Error),
    /// The ValidatingWebhookConfiguration could not be written.
    #[error("cannot register ValidatingWebhookConfiguration {name}: {source}")]
    Register {
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
}

enum Source {
    Secret(Box<SecretCertSource>),
    Files(FileCertSource, certs::FileContents),
}

/// What the certificate loop shares with [`RunningWebhook`].
struct Shared {
    store: Arc<CertStore>,
    current: RwLock<ServingCert>,
}

impl Shared {
    fn current(&self) -> ServingCert {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serves `cert` from the next handshake on; true when it differs from the current one.
    fn install(&self, cert: ServingCert) -> Result<bool, CertError> {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        if *guard == cert {
            return Ok(false);
        }
        self.store.set(cert.certified_key()?);
        *guard = cert;
        Ok(true)
    }
}

/// A started webhook: serving, with its certificate loop running.
pub struct RunningWebhook {
    local_addr: SocketAddr,
    url: Option<Url>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    cert_loop: tokio::task::JoinHandle<()>,
}

impl RunningWebhook {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL registered in URL mode.
    pub fn url(&self) -> Option<&Url> {
        self.url.as_ref()
    }

    /// The CA bundle (PEM) clients must trust, when known.
    pub fn ca_bundle(&self) -> Option<String> {
        self.shared.current().ca_bundle_pem
    }

    /// The serving certificate currently served.
    pub fn serving_cert(&self) -> ServingCert {
        self.shared.current()
    }

    /// Waits until the server and the certificate loop have stopped (after cancellation).
    pub async fn wait(self) {
        if let Err(e) = self.server.await {
            tracing::error!(error = %e, "webhook server task failed");
        }
        if let Err(e) = self.cert_loop.await {
            tracing::error!(error = %e, "webhook certificate task failed");
        }
    }
}

/// Sets `webhook_certificate_expiration_timestamp_seconds` from `cert`.
fn observe_expiry(metrics: Option<&Metrics>, cert: &certs::ServingCert) {
    let Some(m) = metrics else { return };
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let g = &m.webhook_certificate_expiration_timestamp_seconds;
    g.with_label_values(&["serving"]).set(unix(cert.not_after));
    match cert.ca_not_after() {
        Some(t) => g.with_label_values(&["ca"]).set(unix(t)),
        // External certificates without ca.crt: no CA series rather than a wrong one.
        None => {
            let _ = g.remove_label_values(&["ca"]);
        }
    }
}

fn count_rotation_failure(metrics: Option<&Metrics>) {
    if let Some(m) = metrics {
        m.webhook_certificate_rotation_failures_total.inc();
    }
}

/// Publishes `bundle` in the ValidatingWebhookConfiguration; false when that failed.
async fn inject(client: &kube::Client, config: &WebhookConfig, bundle: Option<&str>) -> bool {
    let Some(bundle) = bundle else { return true };
    match certs::inject_ca_bundle(client.clone(), &config.configuration_name, bundle).await {
        Ok(certs::Injection::Updated(n)) => tracing::info!(
            configuration = %config.configuration_name,
            webhooks = n,
            "injected the CA bundle into the ValidatingWebhookConfiguration"
        ),
        Ok(certs::Injection::Unchanged) => {}
        Ok(certs::Injection::NotFound) => tracing::debug!(
            configuration = %config.configuration_name,
            "ValidatingWebhookConfiguration not found; CA bundle not injected"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "CA bundle injection failed; will retry");
            return false;
        }
    }
    true
}

async fn cert_loop(
    mut source: Source,
    shared: Arc<Shared>,
    client: kube::Client,
    config: WebhookConfig,
    metrics: Option<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(config.check_interval) => {}
        }
        let fresh = match &mut source {
            Source::Secret(s) => s.ensure().await,
            Source::Files(files, last) => match files.contents() {
                Ok(contents) if contents == *last => Ok(shared.current()),
                Ok(contents) => match files.parse(&contents) {
                    Ok(cert) => {
                        *last = contents;
                        Ok(cert)
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
        };
        let cert = match fresh {
            Ok(c) => c,
            Err(e) => {
                count_rotation_failure(metrics.as_ref());
                tracing::warn!(error = %e, "webhook certificate check failed; keeping the current certificate");
                continue;
            }
        };
        // Publish the bundle before serving a certificate that may need it.
        if !inject(&client, &config, cert.ca_bundle_pem.as_deref()).await {
            count_rotation_failure(metrics.as_ref());
        }
        let serial = cert.serial.clone();
        let installed = cert.clone();
        match shared.install(cert) {
            Ok(true) => {
                if let Some(m) = &metrics {
                    m.webhook_certificate_rotations_total.inc();
                }
                observe_expiry(metrics.as_ref(), &installed);
                tracing::info!(%serial, "webhook serving certificate reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                count_rotation_failure(metrics.as_ref());
                tracing::warn!(error = %e, "new webhook certificate unusable; keeping the current one")
            }
        }
    }
}

/// Starts the webhook: obtains the certificate (creating the self-managed Secret if needed),
/// binds the listener, registers or injects the CA into the ValidatingWebhookConfiguration, and
/// spawns the server and the certificate loop. Returns once the server accepts connections.
/// Everything stops when `shutdown` is cancelled; then [`RunningWebhook::wait`].
///
/// `reviewer` decides cross-namespace Lease access; `None` uses SubjectAccessReviews with
/// `client`.
pub async fn start_webhook(
    config: WebhookConfig,
    client: kube::Client,
    policy: HookPolicy,
    metrics: Option<Metrics>,
    reviewer: Option<Arc<dyn AccessReviewer>>,
    shutdown: CancellationToken,
) -> Result<RunningWebhook, WebhookError> {
    start_webhook_with_claims(config, client, policy, metrics, reviewer, None, shutdown).await
}

/// [`start_webhook`], also refusing configs on a Lease that a stored config uses (`claims`).
pub async fn start_webhook_with_claims(
    config: WebhookConfig,
    client: kube::Client,
    policy: HookPolicy,
    metrics: Option<Metrics>,
    reviewer: Option<Arc<dyn AccessReviewer>>,
    claims: Option<Arc<dyn handler::LeaseClaims>>,
    shutdown: CancellationToken,
) -> Result<RunningWebhook, WebhookError> {
    config.check()?;
    let (source, cert) = match config.cert_mode {
        CertMode::SelfManaged => {
            let s = SecretCertSource::new(
                client.clone(),
                &config.namespace,
                &config.secret_name,
                config.subject(),
                config.lifetimes,
            )
            .owned_by_configuration(&config.configuration_name);
            let cert = s.ensure().await?;
            (Source::Secret(Box::new(s)), cert)
        }
        CertMode::External => {
            let files = FileCertSource::new(&config.cert_dir);
            let (cert, contents) = files.load()?;
            (Source::Files(files, contents), cert)
        }
    };
    let store = Arc::new(CertStore::new());
    store.set(cert.certified_key()?);
    observe_expiry(metrics.as_ref(), &cert);
    let shared = Arc::new(Shared {
        store: store.clone(),
        current: RwLock::new(cert.clone()),
    });

    let listener = TcpListener::bind(config.bind_address)
        .await
        .map_err(|source| WebhookError::Bind {
            address: config.bind_address,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| WebhookError::Bind {
        address: config.bind_address,
        source,
    })?;
    let url = config.client_url(local_addr);

    if config.register {
        let target = match &url {
            Some(u) => ClientTarget::Url(u.to_string()),
            None => ClientTarget::Service {
                namespace: config.namespace.clone(),
                name: config.service_name.clone(),
            },
        };
        let vwc = register::webhook_configuration(
            &config.configuration_name,
            &target,
            cert.ca_bundle_pem.as_deref(),
            config.namespace_selector.as_ref(),
        );
        register::apply(client.clone(), &vwc)
            .await
            .map_err(|source| WebhookError::Register {
                name: config.configuration_name.clone(),
                source: Box::new(source),
            })?;
        tracing::info!(configuration = %config.configuration_name, target = ?target, "registered the ValidatingWebhookConfiguration");
    } else {
        inject(&client, &config, cert.ca_bundle_pem.as_deref()).await;
    }

    let reviewer = reviewer.unwrap_or_else(|| Arc::new(SubjectAccessReviewer::new(client.clone())));
    let mut state = AdmissionState::new(policy, reviewer, metrics.clone(), config.limits);
    state.claims = claims;
    state.tenant_limits = config.tenant_limits;
    let tls = server::tls_config(store)?;
    let server = tokio::spawn(server::serve(
        listener,
        tls,
        server::router(state),
        config.limits,
        shutdown.clone(),
    ));
    let cert_loop = tokio::spawn(cert_loop(
        source,
        shared.clone(),
        client,
        config,
        metrics,
        shutdown,
    ));
    Ok(RunningWebhook {
        local_addr,
        url,
        shared,
        server,
        cert_loop,
    })
}

/// [`start_webhook`] with SubjectAccessReviews, then serves until `shutdown` is cancelled.
pub async fn run_webhook(
    config: WebhookConfig,
    client: kube::Client,
    policy: HookPolicy,
    metrics: Option<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), WebhookError> {
    start_webhook(config, client, policy, metrics, None, shutdown)
        .await?
        .wait()
        .await;
    Ok(())
}
