//! `manager-operator run`: one process serving the ManagerConfig controller, the admission
//! webhook, `/metrics`, `/healthz` and `/readyz` (docs/design.md §5, §7). SIGTERM and SIGINT stop it
//! gracefully: every manager stops its workers and releases its lease first.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::controller;
use crate::controller::env::KubeEnv;
use crate::limits::TenantLimits;
use crate::manager::election::system_wall_clock;
use crate::manager::handover::Pacer;
use crate::manager::lease_hub::LeaseHub;
use crate::manager::runtime::ManagerIdentity;
use crate::metrics::Metrics;
use crate::metrics::auth::KubeReviewer;
use crate::metrics::secure::{self, SecureMetricsConfig, SecureMetricsError};
use crate::metrics::server::{BindError, serve_plain};
use crate::placement::PlacementService;
use crate::placement::membership::MembershipConfig;
use crate::probes::Probes;
use crate::validation::HookPolicy;
use crate::webhook::{self, WebhookConfig};
use crate::workers::{self, WorkerEnv};

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (for log pipelines).
    Json,
    /// Human-readable text.
    Text,
}

/// Placement settings: the membership group and the handover pace.
#[derive(Clone, Debug)]
pub struct PlacementConfig {
    /// The group and where its membership Leases live.
    pub membership: MembershipConfig,
    /// Handovers started per `handover_interval`.
    pub handover_batch: u32,
    /// The handover window.
    pub handover_interval: std::time::Duration,
}

/// Everything `run` needs, as plain values (`cli::args::RunArgs::into_config` builds it from
/// the flags; tests may build it directly).
#[derive(Clone)]
pub struct RunConfig {
    /// This replica's Lease holder identity.
    pub identity: String,
    /// Kubeconfig file (None: $KUBECONFIG, ~/.kube/config or in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// Address of `/metrics`.
    pub metrics_bind_address: SocketAddr,
    /// Serve `/metrics` over HTTPS to authorized bearer tokens only.
    pub metrics_secure: bool,
    /// Certificate directory of the secure metrics server (None: self-signed).
    pub metrics_cert_dir: Option<PathBuf>,
    /// Address of `/healthz` and `/readyz`.
    pub health_probe_bind_address: SocketAddr,
    /// Only reconcile ManagerConfigs in this namespace (None: all).
    pub watch_namespace: Option<String>,
    /// The admission webhook (None: not served by this replica).
    pub webhook: Option<WebhookConfig>,
    /// Placement (None: every replica campaigns for every config).
    pub placement: Option<PlacementConfig>,
    /// How often a worker re-reads its hook signing Secret.
    pub hook_signing_refresh_period: std::time::Duration,
    /// Where hooks may connect.
    pub policy: HookPolicy,
    /// How hook host names are looked up.
    pub hook_lookup: Arc<dyn workers::dns::Lookup>,
    /// Per-tenant limits.
    pub limits: TenantLimits,
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
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The webhook could not start.
    #[error("cannot start the admission webhook: {0}")]
    Webhook(#[from] webhook::WebhookError),
    /// The hook HTTP client could not be built.
    #[error("cannot build the hook HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The secure metrics server could not start.
    #[error("cannot start the secure metrics server: {0}")]
    SecureMetrics(#[from] SecureMetricsError),
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

/// The default identity: $POD_NAME, else the hostname plus a random suffix.
pub fn default_identity() -> String {
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
pub async fn run(args: RunConfig) -> Result<(), RunError> {
    crate::tls::install_default_provider();
    let identity = args.identity.clone();
    let config = kube_config(args.kubeconfig.as_ref()).await?;
    let metrics = Metrics::new()?;
    let client = crate::metrics::kube_api::client(config.clone(), Some(&metrics))?;
    let policy = args.policy.clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    info!(%identity, "manager-operator starting");

    let (controller_ready_tx, controller_ready) = watch::channel(false);
    let (webhook_ready_tx, webhook_ready) = watch::channel(args.webhook.is_none());
    let ctx_cell = Arc::new(tokio::sync::OnceCell::new());
    let probes = Probes {
        controller_ready,
        webhook_ready,
        ctx: ctx_cell.clone(),
    };
    let metrics_router = metrics.clone().router();
    let metrics_server = if args.metrics_secure {
        let config =
            SecureMetricsConfig::new(args.metrics_bind_address, args.metrics_cert_dir.clone());
        let reviewer = Arc::new(KubeReviewer::new(client.clone()));
        secure::start(config, metrics_router, reviewer, shutdown.clone())
            .await?
            .task
    } else {
        serve_plain(args.metrics_bind_address, metrics_router, shutdown.clone()).await?
    };
    let health_server = serve_plain(
        args.health_probe_bind_address,
        probes.router(),
        shutdown.clone(),
    )
    .await?;

    // The ManagerConfig cache, shared by the controller (which fills it) and the webhook.
    let store_cell = Arc::new(std::sync::OnceLock::new());
    let webhook = if let Some(wcfg) = args.webhook.clone() {
        let running = webhook::start_webhook_with_claims(
            wcfg,
            client.clone(),
            policy.clone(),
            Some(metrics.clone()),
            None,
            Some(Arc::new(crate::claims::StoreClaims(store_cell.clone()))),
            shutdown.clone(),
        )
        .await?;
        info!(address = %running.local_addr(), url = ?running.url().map(ToString::to_string), "admission webhook serving");
        webhook_ready_tx.send_replace(true);
        Some(running)
    } else {
        None
    };

    let config_for_leases = config.clone();
    let worker_env = WorkerEnv {
        base: config,
        http: workers::hook::http_client_with(&args.policy, args.hook_lookup.clone())?,
        metrics: Some(metrics.clone()),
        identity: identity.clone(),
        clients: workers::clients::ClientCache::default(),
        limits: args.limits,
        caches: Arc::new(workers::cache::ReplicaCaches::for_limits(
            &args.limits,
            Some(metrics.watch_cache_bytes.clone()),
        )),
        signing_refresh: args.hook_signing_refresh_period,
        hook_errors: workers::errors::HookErrors::default(),
    };
    // Lease traffic gets a client (and so a connection pool) of its own.
    let lease_client = crate::metrics::kube_api::client(config_for_leases, Some(&metrics))?;
    let placement = if let Some(p) = args.placement.clone() {
        let membership = p.membership;
        info!(namespace = %membership.namespace, group = %membership.group, "placement: joining the replicas' group");
        let (members_tx, members_rx) = watch::channel(Vec::new());
        let service = PlacementService::new(
            &identity,
            members_rx,
            Pacer::new(p.handover_batch, p.handover_interval),
            Some(metrics.replicas_seen.clone()),
            Some(metrics.managers_preferred.clone()),
        );
        Some(controller::PlacementParams {
            membership,
            members: members_tx,
            service,
        })
    } else {
        None
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
        limits: args.limits,
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
