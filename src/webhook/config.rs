//! The webhook's settings ([`WebhookConfig`]): where it listens, how the API server reaches it,
//! where its certificate comes from, and the checks that refuse inconsistent settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use url::Url;

use super::{VALIDATE_PATH, WebhookError};
use crate::limits::TenantLimits;
use crate::tls::{CertLifetimes, CertSubject, ServerLimits};
use crate::validation::names;

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
    pub tenant_limits: Option<TenantLimits>,
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
