//! Every flag of the command line, in one place: the clap structs of `run` (and the hook
//! policy flags `check` shares), each converted into the plain configuration the rest of the
//! crate takes ([`RunArgs::into_config`], [`WebhookArgs::config`], [`LimitArgs::limits`],
//! [`HookPolicyArgs::policy`]). Nothing outside `cli` imports clap or this module.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use url::Url;

use crate::limits::TenantLimits;
use crate::operator::{LogFormat, PlacementConfig, RunConfig, RunError};
use crate::placement::membership::MembershipConfig;
use crate::tls::CertLifetimes;
use crate::tls::ServerLimits;
use crate::validation::{GoDuration, HookPolicy};
use crate::webhook::{CertMode, WebhookConfig, WebhookError, register};
use crate::workers;

/// Hook policy flags (docs/design.md §6), shared by `run` and `check`.
#[derive(Args, Debug, Clone)]
pub struct HookPolicyArgs {
    /// Allowed hook URL schemes (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http,https",
        env = "MO_HOOK_ALLOWED_SCHEMES"
    )]
    pub hook_allowed_schemes: Vec<String>,
    /// Allowed hook hosts: `*`, `*.suffix` or exact names (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "*",
        env = "MO_HOOK_ALLOWED_HOSTS"
    )]
    pub hook_allowed_hosts: Vec<String>,
    /// Allow loopback hook URLs (127.0.0.0/8, ::1, localhost). Link-local and cloud metadata
    /// addresses are refused whatever the flags say.
    #[arg(long, env = "MO_HOOK_ALLOW_LOOPBACK")]
    pub hook_allow_loopback: bool,
    /// More networks no hook may reach, as CIDRs or addresses (comma-separated), on top of the
    /// built-in list (docs/hooks-security.md), e.g. the node network. Judged on the URL's
    /// literal address and on every address a hook host name resolves to.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = parse_network,
        env = "MO_HOOK_DENIED_NETWORKS"
    )]
    pub hook_denied_networks: Vec<ipnet::IpNet>,
    /// Allow workers that watch v1/Secret to call plain-http hooks (the Secrets' data then
    /// crosses the network unencrypted). Without it such a config is refused (HookRejected).
    #[arg(long, env = "MO_HOOK_ALLOW_INSECURE_SECRETS")]
    pub hook_allow_insecure_secrets: bool,
}

/// Parses a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address.
pub fn parse_network(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not a CIDR (e.g. 10.0.0.0/8) or an IP address"))
}

impl HookPolicyArgs {
    /// The policy these flags describe.
    pub fn policy(&self) -> HookPolicy {
        fn normalized(values: &[String]) -> Vec<String> {
            values
                .iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect()
        }
        HookPolicy {
            allowed_schemes: normalized(&self.hook_allowed_schemes),
            allowed_hosts: normalized(&self.hook_allowed_hosts),
            allow_loopback: self.hook_allow_loopback,
            denied_networks: self.hook_denied_networks.clone(),
            allow_insecure_secrets: self.hook_allow_insecure_secrets,
        }
    }
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormatArg {
    /// One JSON object per line (default; for log pipelines).
    Json,
    /// Human-readable text.
    Text,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Json => LogFormat::Json,
            LogFormatArg::Text => LogFormat::Text,
        }
    }
}

/// `--webhook-cert-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CertModeArg {
    /// The operator keeps a CA and serving certificate in a Secret, injects the CA into the
    /// webhook configuration and rotates before expiry.
    SelfManaged,
    /// `tls.crt`/`tls.key` (and optional `ca.crt`) are read from `--webhook-cert-dir`
    /// (cert-manager or any mounted Secret) and reloaded when they change.
    External,
}

impl From<CertModeArg> for CertMode {
    fn from(m: CertModeArg) -> Self {
        match m {
            CertModeArg::SelfManaged => CertMode::SelfManaged,
            CertModeArg::External => CertMode::External,
        }
    }
}

/// Flags of `run` (controller-runtime's names where they exist).
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, default_value = "0.0.0.0:8080", env = "MO_METRICS_BIND_ADDRESS")]
    pub metrics_bind_address: SocketAddr,

    /// Serve `/metrics` over HTTPS and only to bearer tokens allowed to `get` the non-resource
    /// URL `/metrics` (TokenReview + SubjectAccessReview).
    #[arg(long, env = "MO_METRICS_SECURE")]
    pub metrics_secure: bool,

    /// Directory with `tls.crt` and `tls.key` for `--metrics-secure` (reloaded when they
    /// change). Default: a self-signed certificate generated at startup.
    #[arg(long, requires = "metrics_secure", env = "MO_METRICS_CERT_DIR")]
    pub metrics_cert_dir: Option<PathBuf>,

    /// Address of the `/healthz` and `/readyz` probes.
    #[arg(
        long,
        default_value = "0.0.0.0:8081",
        env = "MO_HEALTH_PROBE_BIND_ADDRESS"
    )]
    pub health_probe_bind_address: SocketAddr,

    /// Lease holder identity of this replica. Default: $POD_NAME, else hostname + random suffix.
    #[arg(long, env = "MO_IDENTITY")]
    pub identity: Option<String>,

    /// Kubeconfig file. Default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Log format.
    #[arg(long, value_enum, default_value = "json", env = "MO_LOG_FORMAT")]
    pub log_format: LogFormatArg,

    /// Only reconcile ManagerConfigs in this namespace (default: all namespaces).
    #[arg(long, env = "MO_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Do not run the admission webhook server (e.g. when another replica set serves it).
    #[arg(long, env = "MO_DISABLE_WEBHOOK")]
    pub disable_webhook: bool,

    /// Namespace of the replicas' membership Leases. Default: $POD_NAMESPACE, else
    /// `--watch-namespace`, else `default`.
    #[arg(long, env = "MO_MEMBERSHIP_NAMESPACE")]
    pub membership_namespace: Option<String>,

    /// Placement group: replicas of one group share the ManagerConfigs. Default:
    /// `manager-operator`, or `manager-operator-<watch namespace>` with `--watch-namespace`.
    #[arg(long, env = "MO_MEMBERSHIP_GROUP")]
    pub membership_group: Option<String>,

    /// Name of the pod this replica runs in (the chart sets it from the downward API). With
    /// `--pod-uid`, the replica's membership Lease is owned by the pod and garbage-collected
    /// with it.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// UID of the pod this replica runs in (the chart sets it from the downward API); see
    /// `--pod-name`.
    #[arg(long, env = "POD_UID")]
    pub pod_uid: Option<String>,

    /// Every replica campaigns for every config at once (no placement, no handovers).
    #[arg(long, env = "MO_DISABLE_PLACEMENT")]
    pub disable_placement: bool,

    /// Handovers this replica starts per `--handover-interval` when placement moves configs.
    #[arg(long, default_value_t = 5, env = "MO_HANDOVER_BATCH")]
    pub handover_batch: u32,

    /// Window of `--handover-batch` (Go duration, e.g. `500ms`).
    #[arg(long, default_value = "500ms", value_parser = parse_interval, env = "MO_HANDOVER_INTERVAL")]
    pub handover_interval: std::time::Duration,

    /// How often a running worker re-reads its hook signing Secret
    /// (`spec.workers[].hook.signingSecretRef`), so a rotation needs no restart (Go duration).
    #[arg(long, default_value = "30s", value_parser = parse_interval, env = "MO_HOOK_SIGNING_REFRESH_PERIOD")]
    pub hook_signing_refresh_period: std::time::Duration,

    /// Hook policy.
    #[command(flatten)]
    pub policy: HookPolicyArgs,

    /// Per-tenant limits.
    #[command(flatten)]
    pub limits: LimitArgs,

    /// Test aid (hidden): answer hook host NAME with IP instead of asking DNS, like curl's
    /// `--resolve` (e.g. `hook.test.invalid=127.0.0.1`; repeatable). The answer is judged by
    /// the hook policy like any other, so this cannot widen what hooks may reach.
    #[arg(long = "hook-resolve", value_name = "NAME=IP", value_parser = parse_hook_resolve, hide = true)]
    pub hook_resolve: Vec<(String, std::net::IpAddr)>,

    /// Webhook.
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::validation::duration::GoDuration::parse(s)
        .map_err(|e| e.to_string())?
        .to_std();
    if d.is_zero() || d > std::time::Duration::from_secs(3600) {
        return Err(format!("{s:?} must be more than 0 and at most 1h"));
    }
    Ok(d)
}

fn parse_hook_resolve(s: &str) -> Result<(String, std::net::IpAddr), String> {
    let (name, ip) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=IP"))?;
    let ip = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    Ok((name.trim_end_matches('.').to_ascii_lowercase(), ip))
}

impl RunArgs {
    /// The plain configuration of `run`: the identity resolved, the webhook settings checked
    /// (None with `--disable-webhook`), the placement group (None with `--disable-placement`).
    pub fn into_config(self) -> Result<RunConfig, RunError> {
        let identity = self
            .identity
            .clone()
            .unwrap_or_else(crate::operator::default_identity);
        let limits = self.limits.limits();
        let webhook = if self.disable_webhook {
            None
        } else {
            let mut w = self.webhook.config()?;
            w.tenant_limits = Some(limits);
            Some(w)
        };
        let placement = if self.disable_placement {
            None
        } else {
            Some(PlacementConfig {
                membership: self.membership(&identity),
                handover_batch: self.handover_batch,
                handover_interval: self.handover_interval,
            })
        };
        Ok(RunConfig {
            hook_lookup: self.hook_lookup(),
            policy: self.policy.policy(),
            identity,
            kubeconfig: self.kubeconfig,
            metrics_bind_address: self.metrics_bind_address,
            metrics_secure: self.metrics_secure,
            metrics_cert_dir: self.metrics_cert_dir,
            health_probe_bind_address: self.health_probe_bind_address,
            watch_namespace: self.watch_namespace,
            webhook,
            placement,
            hook_signing_refresh_period: self.hook_signing_refresh_period,
            limits,
        })
    }

    /// How hook host names are looked up: the system resolver, with `--hook-resolve` answers
    /// first.
    pub fn hook_lookup(&self) -> std::sync::Arc<dyn workers::dns::Lookup> {
        if self.hook_resolve.is_empty() {
            return std::sync::Arc::new(workers::dns::SystemLookup);
        }
        let mut fixed = workers::dns::FixedLookup {
            fallback_to_system: true,
            ..Default::default()
        };
        for (name, ip) in &self.hook_resolve {
            fixed.names.entry(name.clone()).or_default().push(*ip);
        }
        std::sync::Arc::new(fixed)
    }

    /// The placement group and where its membership Leases live.
    pub fn membership(&self, identity: &str) -> MembershipConfig {
        let namespace = self
            .membership_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .filter(|n| !n.is_empty())
            .or_else(|| self.watch_namespace.clone())
            .unwrap_or_else(|| "default".into());
        let group = self
            .membership_group
            .clone()
            .unwrap_or_else(|| match &self.watch_namespace {
                Some(ns) => format!("manager-operator-{ns}"),
                None => "manager-operator".into(),
            });
        let owner_pod = match (&self.pod_name, &self.pod_uid) {
            (Some(name), Some(uid)) if !name.is_empty() && !uid.is_empty() => {
                Some((name.clone(), uid.clone()))
            }
            _ => None,
        };
        MembershipConfig {
            namespace,
            group,
            identity: identity.to_string(),
            owner_pod,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = GoDuration::parse(s).map_err(|e| e.to_string())?;
    if !d.is_positive() {
        return Err(format!("must be greater than 0, got {s}"));
    }
    Ok(d.to_std())
}

/// Webhook flags of `manager-operator run`.
#[derive(Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Address the HTTPS admission server listens on.
    #[arg(long, default_value = "0.0.0.0:9443", env = "MO_WEBHOOK_BIND_ADDRESS")]
    pub webhook_bind_address: SocketAddr,

    /// URL mode: the API server calls this https URL (`clientConfig.url`) instead of the
    /// Service. Path defaults to /validate-managerconfig; port 0 means the port actually bound.
    /// Used for local runs and tests (https://127.0.0.1:PORT).
    #[arg(long, env = "MO_WEBHOOK_URL")]
    pub webhook_url: Option<Url>,

    /// Where the serving certificate comes from.
    #[arg(
        long,
        value_enum,
        default_value = "self-managed",
        env = "MO_WEBHOOK_CERT_MODE"
    )]
    pub webhook_cert_mode: CertModeArg,

    /// External mode: directory with tls.crt, tls.key and optional ca.crt.
    #[arg(
        long,
        default_value = "/tmp/k8s-webhook-server/serving-certs",
        env = "MO_WEBHOOK_CERT_DIR"
    )]
    pub webhook_cert_dir: PathBuf,

    /// Self-managed mode: Secret holding ca.crt, ca.key, tls.crt, tls.key.
    #[arg(
        long,
        default_value = "manager-operator-webhook-tls",
        env = "MO_WEBHOOK_SECRET_NAME"
    )]
    pub webhook_secret_name: String,

    /// Namespace of that Secret and of the webhook Service (the operator's namespace).
    #[arg(
        long,
        default_value = "manager-operator",
        env = "MO_WEBHOOK_SECRET_NAMESPACE"
    )]
    pub webhook_secret_namespace: String,

    /// Service in front of the webhook (its DNS names go into the serving certificate; used as
    /// clientConfig.service when registering without --webhook-url).
    #[arg(
        long,
        default_value = "manager-operator-webhook",
        env = "MO_WEBHOOK_SERVICE_NAME"
    )]
    pub webhook_service_name: String,

    /// ValidatingWebhookConfiguration to inject the CA into (and to create with
    /// --webhook-register).
    #[arg(
        long,
        default_value = "manager-operator",
        env = "MO_WEBHOOK_CONFIGURATION_NAME"
    )]
    pub webhook_configuration_name: String,

    /// Create/update the ValidatingWebhookConfiguration (server-side apply) instead of
    /// expecting it from the chart.
    #[arg(long, env = "MO_WEBHOOK_REGISTER")]
    pub webhook_register: bool,

    /// With --webhook-register: only namespaces matching this selector are validated
    /// (comma-separated key=value, key, !key).
    #[arg(long, env = "MO_WEBHOOK_NAMESPACE_SELECTOR")]
    pub webhook_namespace_selector: Option<String>,

    /// Extra DNS names for the self-managed serving certificate (comma-separated).
    #[arg(long, value_delimiter = ',', env = "MO_WEBHOOK_DNS_NAMES")]
    pub webhook_dns_names: Vec<String>,

    /// Self-managed CA lifetime (Go duration; default 10 years).
    #[arg(long, default_value = "87600h", value_parser = parse_duration, env = "MO_WEBHOOK_CA_LIFETIME")]
    pub webhook_ca_lifetime: Duration,

    /// Self-managed serving certificate lifetime (Go duration; default 1 year). Rotated when
    /// less than a third is left.
    #[arg(long, default_value = "8760h", value_parser = parse_duration, env = "MO_WEBHOOK_CERT_LIFETIME")]
    pub webhook_cert_lifetime: Duration,

    /// How often certificates are re-checked (default 1m for the Secret, 5s for files).
    #[arg(long, value_parser = parse_duration, env = "MO_WEBHOOK_CERT_CHECK_INTERVAL")]
    pub webhook_cert_check_interval: Option<Duration>,

    /// Bound on TLS handshakes, request headers and bodies.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "MO_WEBHOOK_READ_TIMEOUT")]
    pub webhook_read_timeout: Duration,

    /// Admission reviews processed at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..), env = "MO_WEBHOOK_MAX_CONCURRENT_REQUESTS")]
    pub webhook_max_concurrent_requests: u16,
}

impl WebhookArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> Result<WebhookConfig, WebhookError> {
        let namespace_selector = match &self.webhook_namespace_selector {
            Some(s) => Some(register::parse_namespace_selector(s).map_err(|e| {
                WebhookError::Config(format!("--webhook-namespace-selector {s:?}: {e}"))
            })?),
            None => None,
        };
        let check_interval =
            self.webhook_cert_check_interval
                .unwrap_or(match self.webhook_cert_mode {
                    CertModeArg::SelfManaged => Duration::from_secs(60),
                    CertModeArg::External => Duration::from_secs(5),
                });
        let config = WebhookConfig {
            bind_address: self.webhook_bind_address,
            url: self.webhook_url.clone(),
            register: self.webhook_register,
            namespace_selector,
            configuration_name: self.webhook_configuration_name.clone(),
            service_name: self.webhook_service_name.clone(),
            namespace: self.webhook_secret_namespace.clone(),
            secret_name: self.webhook_secret_name.clone(),
            cert_mode: self.webhook_cert_mode.into(),
            cert_dir: self.webhook_cert_dir.clone(),
            lifetimes: CertLifetimes {
                ca: self.webhook_ca_lifetime,
                serving: self.webhook_cert_lifetime,
            },
            check_interval,
            extra_dns_names: self
                .webhook_dns_names
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            limits: ServerLimits {
                read_timeout: self.webhook_read_timeout,
                max_concurrent_requests: usize::from(self.webhook_max_concurrent_requests),
                ..ServerLimits::default()
            },
            tenant_limits: None,
        };
        config.check()?;
        Ok(config)
    }
}

fn parse_floor(s: &str) -> Result<Duration, String> {
    let d = GoDuration::parse(s).map_err(|e| e.to_string())?.to_std();
    if d > Duration::from_secs(3600) {
        return Err(format!("{s:?} must be at most 1h"));
    }
    Ok(d)
}

/// The flags of [`TenantLimits`].
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// ManagerConfigs one namespace may run; the oldest run, the others fail with reason
    /// LimitExceeded until some are deleted (0: unlimited).
    #[arg(long, default_value_t = 100, env = "MO_MAX_CONFIGS_PER_NAMESPACE")]
    pub max_configs_per_namespace: u32,

    /// Workers (`spec.workers` entries) one ManagerConfig may have (0: unlimited; the CRD
    /// caps it at 32 anyway).
    #[arg(long, default_value_t = 16, env = "MO_MAX_WORKERS_PER_CONFIG")]
    pub max_workers_per_config: u32,

    /// Smallest `spec.leaderElection.retryPeriod` a config may use (Go duration).
    #[arg(long, default_value = "500ms", value_parser = parse_floor, env = "MO_MIN_RETRY_PERIOD")]
    pub min_retry_period: Duration,

    /// Smallest `spec.leaderElection.leaseDuration` a config may use (Go duration).
    #[arg(long, default_value = "2s", value_parser = parse_floor, env = "MO_MIN_LEASE_DURATION")]
    pub min_lease_duration: Duration,

    /// Objects the workers of one ManagerConfig may hold in their watch caches together; a
    /// worker whose cache would grow past it stops with reason LimitExceeded (0: unlimited).
    #[arg(
        long,
        default_value_t = 10_000,
        env = "MO_MAX_WATCHED_OBJECTS_PER_CONFIG"
    )]
    pub max_watched_objects_per_config: u64,

    /// Hook calls the workers of one ManagerConfig may have in flight together (each config
    /// gets the smaller of this and the sum of its workers' concurrency; 0: no extra cap).
    #[arg(long, default_value_t = 64, env = "MO_MAX_HOOK_CALLS_PER_CONFIG")]
    pub max_hook_calls_per_config: u32,

    /// Bytes (JSON, like 32Mi) the watch caches of one namespace's ManagerConfigs may hold on
    /// this replica together; a worker whose cache would grow past it stops with reason
    /// LimitExceeded (0: unlimited).
    #[arg(long, default_value = "32Mi", value_parser = crate::workers::cache::parse_bytes,
        env = "MO_MAX_WATCH_CACHE_BYTES_PER_NAMESPACE")]
    pub max_watch_cache_bytes_per_namespace: u64,

    /// Bytes (JSON, like 96Mi) every watch cache of this replica may hold together; a worker
    /// whose cache would grow past it stops with reason LimitExceeded (0: unlimited).
    #[arg(long, default_value = "96Mi", value_parser = crate::workers::cache::parse_bytes,
        env = "MO_MAX_WATCH_CACHE_BYTES")]
    pub max_watch_cache_bytes: u64,

    /// Lists (a worker's initial list, or a re-list after its watch expired) this replica runs
    /// at once; the others wait for a slot (0: unlimited).
    #[arg(long, default_value_t = 4, env = "MO_MAX_CONCURRENT_LISTS")]
    pub max_concurrent_lists: u32,
}

impl LimitArgs {
    /// The limits these flags set.
    pub fn limits(&self) -> TenantLimits {
        TenantLimits {
            max_configs_per_namespace: self.max_configs_per_namespace,
            max_workers_per_config: self.max_workers_per_config,
            min_retry_period: self.min_retry_period,
            min_lease_duration: self.min_lease_duration,
            max_watched_objects_per_config: self.max_watched_objects_per_config,
            max_hook_calls_per_config: self.max_hook_calls_per_config,
            max_watch_cache_bytes_per_namespace: self.max_watch_cache_bytes_per_namespace,
            max_watch_cache_bytes: self.max_watch_cache_bytes,
            max_concurrent_lists: self.max_concurrent_lists,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::CertLifetimes;
    use clap::{CommandFactory, Parser};
    use std::net::{IpAddr, Ipv4Addr};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        webhook: WebhookArgs,
        #[command(flatten)]
        hooks: HookPolicyArgs,
    }

    #[test]
    fn flags_are_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["x"]).expect("parses");
        let c = cli.webhook.config().expect("valid");
        assert_eq!(c.bind_address, "0.0.0.0:9443".parse().expect("addr"));
        assert_eq!(c.cert_mode, CertMode::SelfManaged);
        assert_eq!(c.lifetimes, CertLifetimes::default());
        assert_eq!(c.lifetimes.ca, Duration::from_secs(3650 * 86_400));
        assert_eq!(c.lifetimes.serving, Duration::from_secs(365 * 86_400));
        assert_eq!(c.check_interval, Duration::from_secs(60));
        assert_eq!(c.limits.max_body_bytes, 3 * 1024 * 1024);
        assert!(c.url.is_none() && !c.register);
        let s = c.subject();
        assert!(
            s.dns_names
                .contains(&"manager-operator-webhook.manager-operator.svc".to_string())
        );
        assert!(s.ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn url_mode_flags() {
        let cli = Cli::try_parse_from([
            "x",
            "--webhook-bind-address",
            "127.0.0.1:0",
            "--webhook-url",
            "https://127.0.0.1:0",
            "--webhook-register",
            "--webhook-namespace-selector",
            "t=1",
            "--webhook-cert-lifetime",
            "30s",
            "--webhook-cert-mode",
            "external",
        ])
        .expect("parses");
        let c = cli.webhook.config().expect("valid");
        assert_eq!(c.cert_mode, CertMode::External);
        assert_eq!(c.check_interval, Duration::from_secs(5));
        assert_eq!(c.lifetimes.serving, Duration::from_secs(30));
        let url = c
            .client_url("127.0.0.1:4321".parse().expect("addr"))
            .expect("url mode");
        assert_eq!(
            url.as_str(),
            "https://127.0.0.1:4321/validate-managerconfig"
        );
        assert!(c.namespace_selector.is_some());
    }

    #[test]
    fn bad_flags_are_explained() {
        let cli =
            Cli::try_parse_from(["x", "--webhook-url", "http://127.0.0.1:1/"]).expect("parses");
        let e = cli.webhook.config().expect_err("http refused").to_string();
        assert!(e.contains("https"), "{e}");
        let cli =
            Cli::try_parse_from(["x", "--webhook-namespace-selector", "Bad Key"]).expect("parses");
        assert!(cli.webhook.config().is_err());
        assert!(Cli::try_parse_from(["x", "--webhook-cert-lifetime", "0s"]).is_err());
        let cli = Cli::try_parse_from(["x", "--webhook-cert-lifetime", "87601h"]).expect("parses");
        assert!(cli.webhook.config().is_err(), "longer than the CA");
        let cli = Cli::try_parse_from(["x", "--webhook-ca-lifetime", "2000000h"]).expect("parses");
        assert!(cli.webhook.config().is_err(), "absurd lifetime");
        let cli = Cli::try_parse_from(["x", "--webhook-cert-lifetime", "1s"]).expect("parses");
        assert!(cli.webhook.config().is_err(), "too short");
    }
}
