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
//! * [`admission`]: the routes, with body and concurrency limits, served by
//!   [`crate::tls::server`] (hot-swappable certificate, connection limits, graceful shutdown);
//! * [`config`]: the settings and their checks;
//! * [`ca_bundle`]: CA injection into the ValidatingWebhookConfiguration;
//! * [`register`]: the ValidatingWebhookConfiguration, for `--webhook-register`.
//!
//! Certificates (self-managed Secret or mounted files) come from [`crate::tls`].
//! [`start_webhook_with_claims`] ties them together for `manager-operator run`.

pub mod access;
pub mod admission;
pub mod ca_bundle;
pub mod config;
pub mod handler;
pub mod register;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::metrics::Metrics;
use crate::tls::reload::{self, CertEvents, CertSource, ServedCert};
use crate::tls::{CertError, FileCertSource, SecretCertSource, ServingCert};
use crate::validation::HookPolicy;
use access::{AccessReviewer, SubjectAccessReviewer};
use admission::AdmissionState;
pub use config::{CertMode, WebhookConfig};
use register::ClientTarget;

/// The path the API server POSTs AdmissionReviews to.
pub const VALIDATE_PATH: &str = "/validate-managerconfig";

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

/// A started webhook: serving, with its certificate loop running.
pub struct RunningWebhook {
    local_addr: SocketAddr,
    url: Option<Url>,
    served: Arc<ServedCert>,
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
        self.served.current().ca_bundle_pem
    }

    /// The serving certificate currently served.
    pub fn serving_cert(&self) -> ServingCert {
        self.served.current()
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
fn observe_expiry(metrics: Option<&Metrics>, cert: &ServingCert) {
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
    match ca_bundle::inject_ca_bundle(client.clone(), &config.configuration_name, bundle).await {
        Ok(ca_bundle::Injection::Updated(n)) => tracing::info!(
            configuration = %config.configuration_name,
            webhooks = n,
            "injected the CA bundle into the ValidatingWebhookConfiguration"
        ),
        Ok(ca_bundle::Injection::Unchanged) => {}
        Ok(ca_bundle::Injection::NotFound) => tracing::debug!(
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

/// The webhook's side of the certificate loop: the CA bundle is (re)published on every check
/// before a certificate that may need it is served, and rotations, failures and expiry are
/// recorded in the metrics.
struct WebhookCertEvents {
    client: kube::Client,
    config: WebhookConfig,
    metrics: Option<Metrics>,
}

impl CertEvents for WebhookCertEvents {
    fn publish<'a>(&'a self, cert: &'a ServingCert) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if !inject(&self.client, &self.config, cert.ca_bundle_pem.as_deref()).await {
                count_rotation_failure(self.metrics.as_ref());
            }
        })
    }

    fn installed(&self, cert: &ServingCert) {
        if let Some(m) = &self.metrics {
            m.webhook_certificate_rotations_total.inc();
        }
        observe_expiry(self.metrics.as_ref(), cert);
    }

    fn failed(&self, _error: &CertError) {
        count_rotation_failure(self.metrics.as_ref());
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
    claims: Option<Arc<dyn crate::claims::LeaseClaims>>,
    shutdown: CancellationToken,
) -> Result<RunningWebhook, WebhookError> {
    config.check()?;
    let (source, cert) = match config.cert_mode {
        CertMode::SelfManaged => {
            let secret = SecretCertSource::new(
                client.clone(),
                &config.namespace,
                &config.secret_name,
                config.subject(),
                config.lifetimes,
            )
            .owned_by_configuration(&config.configuration_name);
            CertSource::secret(secret).await?
        }
        CertMode::External => CertSource::files(FileCertSource::new(&config.cert_dir))?,
    };
    let served = ServedCert::new(cert.clone())?;
    observe_expiry(metrics.as_ref(), &cert);

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
    let tls = crate::tls::server::tls_config(served.store())?;
    let server = tokio::spawn(crate::tls::server::serve_tls(
        listener,
        tls,
        admission::router(state),
        config.limits,
        shutdown.clone(),
        "admission webhook",
    ));
    let every = config.check_interval;
    let events = WebhookCertEvents {
        client,
        config,
        metrics,
    };
    let cert_loop = tokio::spawn(reload::run(
        "webhook",
        source,
        served.clone(),
        every,
        events,
        shutdown,
    ));
    Ok(RunningWebhook {
        local_addr,
        url,
        served,
        server,
        cert_loop,
    })
}
