//! `manager-operator run`: one process serving the ManagerConfig controller, the admission
//! webhook, `/metrics`, `/healthz` and `/readyz` (docs/design.md §5, §7). SIGTERM and SIGINT stop it
//! gracefully: every manager stops its workers and releases its lease first.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use clap::{Args, ValueEnum};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::HookPolicyArgs;
use crate::controller;
use crate::controller::env::KubeEnv;
use crate::manager::election::system_wall_clock;
use crate::manager::handover::Pacer;
use crate::manager::lease_hub::LeaseHub;
use crate::manager::runtime::ManagerIdentity;
use crate::metrics::Metrics;
use crate::placement::PlacementService;
use crate::placement::membership::MembershipConfig;
use crate::probes::Probes;
use crate::webhook::{self, WebhookArgs};
use crate::workers::{self, WorkerEnv};

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (default; for log pipelines).
    Json,
    /// Human-readable text.
    Text,
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
    pub log_format: LogFormat,

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
    pub limits: crate::controller::limits::LimitArgs,

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

/// Why `run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The kubeconfig could not be loaded.
    #[error("cannot load the Kubernetes client configuration: {0}")]
    Config(String),
    /// The client could not be built.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// Metrics registration failed.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A listener could not bind.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The webhook could not start.
    #[error("cannot start the admission webhook: {0}")]
    Webhook(#[from] webhook::WebhookError),
    /// The hook HTTP client could not be built.
    #[error("cannot build the hook HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The secure metrics server could not start.
    #[error("cannot start the secure metrics server: {0}")]
    SecureMetrics(#[from] crate::metrics_auth::SecureMetricsError),
}

/// Initializes `tracing` (RUST_LOG filters; default info).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        // One JSON object per line with unique keys (docs/logging.md): the event's fields at the
        // top level beside `timestamp`, `level`, `target` and `message`; the innermost span (a
        // manager's: `{"name":"manager","namespace":…,"config":…}`) under `span`. The span
        // list would repeat it, so it is left out.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn default_identity() -> String {
    if let Ok(p) = std::env::var("POD_NAME")
        && !p.is_empty()
    {
        return p;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "manager-operator".into());
    let suffix: u32 = rand::random();
    format!("{host}_{suffix:08x}")
}

async fn kube_config(path: Option<&PathBuf>) -> Result<kube::Config, RunError> {
    match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| RunError::Config(format!("{}: {e}", p.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| RunError::Config(e.to_string()))
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| RunError::Config(e.to_string())),
    }
}

async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, RunError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind {
            address: addr,
            source,
        })?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            error!(error = %e, %addr, "HTTP server failed");
        }
    }))
}

async fn signals(shutdown: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => info!("SIGTERM: shutting down gracefully"),
        r = tokio::signal::ctrl_c() => match r {
            Ok(()) => info!("SIGINT: shutting down gracefully"),
            Err(e) => { warn!(error = %e, "cannot listen for SIGINT"); std::future::pending::<()>().await }
        },
        _ = shutdown.cancelled() => {}
    }
    shutdown.cancel();
}

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let config = kube_config(args.kubeconfig.as_ref()).await?;
    let metrics = Metrics::new()?;
    let client = crate::kube_metrics::client(config.clone(), Some(&metrics))?;
    let policy = args.policy.policy();
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    info!(%identity, "manager-operator starting");

    let (controller_ready_tx, controller_ready) = watch::channel(false);
    let (webhook_ready_tx, webhook_ready) = watch::channel(args.disable_webhook);
    let ctx_cell = Arc::new(tokio::sync::OnceCell::new());
    let probes = Probes {
        controller_ready,
        webhook_ready,
        ctx: ctx_cell.clone(),
    };
    let metrics_router = metrics.clone().router();
    let metrics_server = if args.metrics_secure {
        use crate::metrics_auth::{self, KubeReviewer, SecureMetricsConfig};
        let config =
            SecureMetricsConfig::new(args.metrics_bind_address, args.metrics_cert_dir.clone());
        let reviewer = Arc::new(KubeReviewer::new(client.clone()));
        metrics_auth::start(config, metrics_router, reviewer, shutdown.clone())
            .await?
            .task
    } else {
        serve(args.metrics_bind_address, metrics_router, shutdown.clone()).await?
    };
    let health_server = serve(
        args.health_probe_bind_address,
        probes.router(),
        shutdown.clone(),
    )
    .await?;

    // The ManagerConfig cache, shared by the controller (which fills it) and the webhook.
    let store_cell = Arc::new(std::sync::OnceLock::new());
    let webhook = if args.disable_webhook {
        None
    } else {
        let mut wcfg = args.webhook.config()?;
        wcfg.tenant_limits = Some(args.limits.limits());
        let running = webhook::start_webhook_with_claims(
            wcfg,
            client.clone(),
            policy.clone(),
            Some(metrics.clone()),
            None,
            Some(Arc::new(controller::claims::StoreClaims(
                store_cell.clone(),
            ))),
            shutdown.clone(),
        )
        .await?;
        info!(address = %running.local_addr(), url = ?running.url().map(ToString::to_string), "admission webhook serving");
        webhook_ready_tx.send_replace(true);
        Some(running)
    };

    let config_for_leases = config.clone();
    let worker_env = WorkerEnv {
        base: config,
        http: workers::hook::http_client_with(&args.policy.policy(), args.hook_lookup())?,
        metrics: Some(metrics.clone()),
        identity: identity.clone(),
        clients: workers::clients::ClientCache::default(),
        limits: args.limits.limits(),
        caches: Arc::new(
            args.limits
                .limits()
                .replica_caches(Some(metrics.watch_cache_bytes.clone())),
        ),
        signing_refresh: args.hook_signing_refresh_period,
        hook_errors: workers::errors::HookErrors::default(),
    };
    // Lease traffic gets a client (and so a connection pool) of its own.
    let lease_client = crate::kube_metrics::client(config_for_leases, Some(&metrics))?;
    let placement = if args.disable_placement {
        None
    } else {
        let membership = args.membership(&identity);
        info!(namespace = %membership.namespace, group = %membership.group, "placement: joining the replicas' group");
        let (members_tx, members_rx) = watch::channel(Vec::new());
        let service = PlacementService::new(
            &identity,
            members_rx,
            Pacer::new(args.handover_batch, args.handover_interval),
            Some(metrics.replicas_seen.clone()),
            Some(metrics.managers_preferred.clone()),
        );
        Some(controller::PlacementParams {
            membership,
            members: members_tx,
            service,
        })
    };
    let env = KubeEnv {
        lease_client: lease_client.clone(),
        hub: LeaseHub::new(lease_client),
        placement: placement.as_ref().map(|p| p.service.clone()),
        metrics: metrics.clone(),
        hook_errors: worker_env.hook_errors.clone(),
        release: Some({
            let env = worker_env.clone();
            Arc::new(move |cfg, w| {
                Box::pin(workers::release_finalizer(
                    env.clone(),
                    cfg.clone(),
                    w.clone(),
                ))
            })
        }),
        runnables: Arc::new(move |cfg| Ok(workers::runnables(&worker_env, cfg))),
    };
    let me = ManagerIdentity {
        identity,
        wall_clock: system_wall_clock(),
    };
    let (ctx_tx, ctx_rx) = tokio::sync::oneshot::channel();
    let cell = ctx_cell.clone();
    tokio::spawn(async move {
        if let Ok(ctx) = ctx_rx.await {
            let _ = cell.set(ctx);
        }
    });
    controller::run(controller::RunParams {
        client,
        policy,
        me,
        metrics,
        env,
        shutdown: shutdown.clone(),
        ready: controller_ready_tx,
        ctx_out: ctx_tx,
        namespace: args.watch_namespace.clone(),
        store: store_cell,
        placement,
        limits: args.limits.limits(),
    })
    .await;

    shutdown.cancel();
    if let Some(w) = webhook {
        w.wait().await;
    }
    let _ = metrics_server.await;
    let _ = health_server.await;
    info!("manager-operator stopped");
    Ok(())
}
