//! The one implementation of the ManagerConfig rules (docs/design.md §2.1), used by the admission
//! webhook, `manager-operator check` and the manager at start.
//!
//! [`resolve`] is pure: it takes a ManagerConfig and the hook policy and returns either the
//! validated, defaulted [`ResolvedConfig`] the runtime runs from, or *every* violation, each with
//! its field path, a stable rule id and the offending values.

pub mod decode;
pub mod duration;
pub mod hook_policy;
pub mod names;
pub mod schema;
pub mod selector;

use std::fmt;
use std::time::Duration;

use url::Url;

use crate::api::{ManagerConfig, ManagerConfigSpec, SigningSecretRef};
pub use duration::{DurationError, GoDuration};
pub use hook_policy::HookPolicy;

/// Documented bounds (also in the CRD's CEL rules and in `docs/`).
pub mod bounds {
    use super::GoDuration;
    /// leaseDuration: 1s..=1h, whole seconds.
    pub const LEASE_DURATION: (GoDuration, GoDuration) =
        (GoDuration::from_secs(1), GoDuration::from_secs(3600));
    /// retryPeriod: at least 100ms (and renewDeadline > 1.2 × retryPeriod).
    pub const RETRY_PERIOD_MIN: GoDuration = GoDuration::from_millis(100);
    /// startupTimeout: 1s..=1h.
    pub const STARTUP_TIMEOUT: (GoDuration, GoDuration) =
        (GoDuration::from_secs(1), GoDuration::from_secs(3600));
    /// gracefulShutdownTimeout: 1s..=10m.
    pub const GRACEFUL_SHUTDOWN_TIMEOUT: (GoDuration, GoDuration) =
        (GoDuration::from_secs(1), GoDuration::from_secs(600));
    /// hook.timeout: (0, 30s].
    pub const HOOK_TIMEOUT_MAX: GoDuration = GoDuration::from_secs(30);
    /// resyncPeriod: 1s..=24h.
    pub const RESYNC_PERIOD: (GoDuration, GoDuration) =
        (GoDuration::from_secs(1), GoDuration::from_secs(86_400));
    /// concurrency: 1..=64.
    pub const CONCURRENCY: (u16, u16) = (1, 64);
    /// workers: 1..=32 entries.
    pub const WORKERS_MAX: usize = 32;
}

/// A stable identifier of the rule a violation broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// A field that must be present is missing or empty.
    Required,
    /// A duration does not parse as a Go duration.
    DurationSyntax,
    /// A duration must be greater than zero.
    Positive,
    /// A value is outside its documented bounds.
    Range,
    /// leaseDuration > renewDeadline.
    LeaseGreaterThanRenew,
    /// renewDeadline > 1.2 × retryPeriod.
    RenewGreaterThanJitteredRetry,
    /// leaseDuration is a whole number of seconds.
    WholeSeconds,
    /// A name is not a valid DNS-1123 label/subdomain.
    Name,
    /// Worker names must be unique.
    Unique,
    /// apiVersion/kind malformed.
    GroupVersionKind,
    /// labelSelector does not parse.
    LabelSelector,
    /// hook.url refused by the hook policy or malformed.
    HookUrl,
    /// hook TLS settings (caBundle, caBundleRef, clientCertSecretRef) malformed or used with
    /// a plain http URL.
    HookTls,
    /// The document is not a ManagerConfig, or has unknown fields or wrong types.
    Schema,
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Field path, e.g. `spec.leaderElection.renewDeadline`.
    pub field: String,
    /// The rule broken.
    pub rule: Rule,
    /// What is wrong, with the values that broke it.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All violations of one ManagerConfig.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Violations(pub Vec<Violation>);

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

/// Leader-election settings after validation and defaulting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace.
    pub lease_namespace: String,
    /// Lease duration (whole seconds).
    pub lease_duration: Duration,
    /// Renew deadline.
    pub renew_deadline: Duration,
    /// Retry period.
    pub retry_period: Duration,
    /// Clear the Lease on graceful stop.
    pub release_on_cancel: bool,
    /// Take over an existing Lease the operator did not create.
    pub adopt_existing_lease: bool,
}

/// One worker after validation and defaulting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedWorker {
    /// Worker name.
    pub name: String,
    /// Concurrency (1..=64).
    pub concurrency: u16,
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Namespace watched.
    pub namespace: String,
    /// Label selector, if any.
    pub label_selector: Option<String>,
    /// Periodic resync, if any.
    pub resync_period: Option<Duration>,
    /// Hook URL (allowed by the policy).
    pub hook_url: Url,
    /// Hook request timeout.
    pub hook_timeout: Duration,
    /// The Secret key whose value signs every hook call, if any (see `workers::signing`).
    pub signing_secret: Option<SigningSecretRef>,
    /// Guaranteed deletion delivery through a finalizer (see `workers::finalizer`).
    pub finalize: bool,
    /// The hook's TLS settings (`workers::tls`).
    pub tls: HookTls,
}

/// A worker's TLS settings for an https hook: the CAs that verify it and the client
/// certificate it is shown (all empty: the public roots, no client certificate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookTls {
    /// Inline PEM CA certificates (`hook.caBundle`).
    pub ca_bundle: Option<String>,
    /// A ConfigMap or Secret key holding PEM CA certificates (`hook.caBundleRef`).
    pub ca_bundle_ref: Option<crate::api::spec::CaBundleRef>,
    /// A `kubernetes.io/tls` Secret with the client certificate (`hook.clientCertSecretRef`).
    pub client_cert_secret: Option<String>,
}

impl HookTls {
    /// True when the worker needs its own TLS setup (anything but the defaults).
    pub fn is_custom(&self) -> bool {
        self.ca_bundle.is_some()
            || self.ca_bundle_ref.is_some()
            || self.client_cert_secret.is_some()
    }
}

/// A ManagerConfig after validation and defaulting: what the runtime runs from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedConfig {
    /// Namespace of the ManagerConfig.
    pub namespace: String,
    /// Name of the ManagerConfig.
    pub name: String,
    /// The service account workers impersonate.
    pub service_account: String,
    /// Leader election.
    pub election: ElectionConfig,
    /// Bound on elected → all workers running.
    pub startup_timeout: Duration,
    /// Bound on stopping workers.
    pub graceful_shutdown_timeout: Duration,
    /// Workers.
    pub workers: Vec<ResolvedWorker>,
}

struct Ctx {
    out: Vec<Violation>,
}

impl Ctx {
    fn push(&mut self, field: impl Into<String>, rule: Rule, message: impl Into<String>) {
        self.out.push(Violation {
            field: field.into(),
            rule,
            message: message.into(),
        });
    }

    /// Parses a positive duration; records a violation and returns `None` when it is not one.
    fn duration(&mut self, field: &str, raw: &str) -> Option<GoDuration> {
        match GoDuration::parse(raw) {
            Ok(d) if d.is_positive() => Some(d),
            Ok(d) => {
                self.push(
                    field,
                    Rule::Positive,
                    format!("must be greater than 0, got {d}"),
                );
                None
            }
            Err(e) => {
                self.push(field, Rule::DurationSyntax, e.to_string());
                None
            }
        }
    }

    fn bounded(
        &mut self,
        field: &str,
        raw: &str,
        (lo, hi): (GoDuration, GoDuration),
    ) -> Option<GoDuration> {
        let d = self.duration(field, raw)?;
        if d < lo || d > hi {
            self.push(
                field,
                Rule::Range,
                format!("must be between {lo} and {hi}, got {raw}"),
            );
            return None;
        }
        Some(d)
    }
}

/// Validates the leader-election triple with client-go's rules plus the Lease's integer seconds.
/// Exposed for property tests; [`resolve`] calls it.
pub fn check_election_timings(
    lease: GoDuration,
    renew: GoDuration,
    retry: GoDuration,
) -> Vec<Violation> {
    let mut ctx = Ctx { out: Vec::new() };
    election_timings(&mut ctx, lease, renew, retry);
    ctx.out
}

fn election_timings(ctx: &mut Ctx, lease: GoDuration, renew: GoDuration, retry: GoDuration) {
    const LE: &str = "spec.leaderElection";
    let (lo, hi) = bounds::LEASE_DURATION;
    if lease < lo || lease > hi {
        ctx.push(
            format!("{LE}.leaseDuration"),
            Rule::Range,
            format!("must be between {lo} and {hi}, got {lease}"),
        );
    } else if lease.as_nanos() % 1_000_000_000 != 0 {
        ctx.push(
            format!("{LE}.leaseDuration"),
            Rule::WholeSeconds,
            format!(
                "must be a whole number of seconds (the Lease stores integer seconds), got {lease}"
            ),
        );
    }
    if retry < bounds::RETRY_PERIOD_MIN {
        ctx.push(
            format!("{LE}.retryPeriod"),
            Rule::Range,
            format!("must be at least {}, got {retry}", bounds::RETRY_PERIOD_MIN),
        );
    }
    if lease <= renew {
        ctx.push(
            format!("{LE}.renewDeadline"),
            Rule::LeaseGreaterThanRenew,
            format!("must be less than leaseDuration ({lease}), got {renew}"),
        );
    }
    // client-go: renewDeadline <= JitterFactor(1.2) * retryPeriod is an error. Exact in integers:
    // 5 * renew > 6 * retry.
    if i128::from(renew.as_nanos()) * 5 <= i128::from(retry.as_nanos()) * 6 {
        let jittered = GoDuration::from_nanos(
            i64::try_from(i128::from(retry.as_nanos()) * 6 / 5).unwrap_or(i64::MAX),
        );
        ctx.push(
            format!("{LE}.renewDeadline"),
            Rule::RenewGreaterThanJitteredRetry,
            format!(
                "must be greater than 1.2 × retryPeriod ({jittered}, client-go's jitter factor), got {renew}"
            ),
        );
    }
}

/// Splits `group/version` (or `version` for the core group).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

fn valid_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || rest.starts_with('0') {
        return false;
    }
    let tail = &rest[digits..];
    if tail.is_empty() {
        return true;
    }
    let num = tail
        .strip_prefix("alpha")
        .or_else(|| tail.strip_prefix("beta"));
    matches!(num, Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'))
}

fn valid_kind(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 63
        && k.starts_with(|c: char| c.is_ascii_uppercase())
        && k.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Validates and defaults a ManagerConfig. Returns every violation at once.
pub fn resolve(mc: &ManagerConfig, policy: &HookPolicy) -> Result<ResolvedConfig, Violations> {
    let namespace = mc.metadata.namespace.clone().unwrap_or_default();
    let name = mc.metadata.name.clone().unwrap_or_default();
    resolve_spec(&namespace, &name, &mc.spec, policy)
}

/// [`resolve`] over a bare spec with the object's namespace and name.
pub fn resolve_spec(
    namespace: &str,
    name: &str,
    spec: &ManagerConfigSpec,
    policy: &HookPolicy,
) -> Result<ResolvedConfig, Violations> {
    let mut ctx = Ctx { out: Vec::new() };
    if namespace.is_empty() {
        ctx.push(
            "metadata.namespace",
            Rule::Required,
            "is required (ManagerConfig is namespaced)",
        );
    }
    if name.is_empty() {
        ctx.push("metadata.name", Rule::Required, "is required");
    } else if !names::is_dns1123_subdomain(name) {
        // The API server's own rule for custom resource names.
        ctx.push(
            "metadata.name",
            Rule::Name,
            format!(
                "must be a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', at most 253 characters), got {name:?}"
            ),
        );
    }
    if !namespace.is_empty() && !names::is_dns1123_label(namespace) {
        ctx.push(
            "metadata.namespace",
            Rule::Name,
            format!("must be a DNS-1123 label, got {namespace:?}"),
        );
    }

    if !names::is_dns1123_subdomain(&spec.service_account_name) {
        ctx.push(
            "spec.serviceAccountName",
            Rule::Name,
            format!(
                "must be a valid ServiceAccount name (DNS-1123 subdomain), got {:?}",
                spec.service_account_name
            ),
        );
    }

    // Leader election.
    let le = &spec.leader_election;
    let lease_name = le.lease_name.clone().unwrap_or_else(|| name.to_string());
    if let Some(n) = &le.lease_name
        && !names::is_dns1123_subdomain(n)
    {
        ctx.push(
            "spec.leaderElection.leaseName",
            Rule::Name,
            format!("must be a valid object name (DNS-1123 subdomain), got {n:?}"),
        );
    }
    let lease_namespace = le
        .lease_namespace
        .clone()
        .unwrap_or_else(|| namespace.to_string());
    if let Some(n) = &le.lease_namespace
        && !names::is_dns1123_label(n)
    {
        ctx.push(
            "spec.leaderElection.leaseNamespace",
            Rule::Name,
            format!("must be a valid namespace name (DNS-1123 label), got {n:?}"),
        );
    }
    let lease = ctx.duration("spec.leaderElection.leaseDuration", &le.lease_duration);
    let renew = ctx.duration("spec.leaderElection.renewDeadline", &le.renew_deadline);
    let retry = ctx.duration("spec.leaderElection.retryPeriod", &le.retry_period);
    if let (Some(lease), Some(renew), Some(retry)) = (lease, renew, retry) {
        election_timings(&mut ctx, lease, renew, retry);
    }

    let startup = ctx.bounded(
        "spec.startupTimeout",
        &spec.startup_timeout,
        bounds::STARTUP_TIMEOUT,
    );
    let graceful = ctx.bounded(
        "spec.gracefulShutdownTimeout",
        &spec.graceful_shutdown_timeout,
        bounds::GRACEFUL_SHUTDOWN_TIMEOUT,
    );

    // Workers.
    if spec.workers.is_empty() {
        ctx.push(
            "spec.workers",
            Rule::Required,
            "must have at least one worker",
        );
    }
    if spec.workers.len() > bounds::WORKERS_MAX {
        ctx.push(
            "spec.workers",
            Rule::Range,
            format!(
                "must have at most {} workers, got {}",
                bounds::WORKERS_MAX,
                spec.workers.len()
            ),
        );
    }
    let mut workers = Vec::with_capacity(spec.workers.len());
    for (i, w) in spec.workers.iter().enumerate() {
        let p = format!("spec.workers[{i}]");
        if !names::is_dns1123_label(&w.name) {
            ctx.push(
                format!("{p}.name"),
                Rule::Name,
                format!("must be a DNS-1123 label, got {:?}", w.name),
            );
        }
        if let Some(first) = spec.workers[..i].iter().position(|o| o.name == w.name) {
            ctx.push(
                format!("{p}.name"),
                Rule::Unique,
                format!(
                    "must be unique: {:?} is also spec.workers[{first}].name",
                    w.name
                ),
            );
        }
        let (lo, hi) = bounds::CONCURRENCY;
        if w.concurrency < lo || w.concurrency > hi {
            ctx.push(
                format!("{p}.concurrency"),
                Rule::Range,
                format!("must be between {lo} and {hi}, got {}", w.concurrency),
            );
        }
        let (group, version) = split_api_version(&w.watch.api_version);
        if !valid_version(version) || !(group.is_empty() || names::is_dns1123_subdomain(group)) {
            ctx.push(
                format!("{p}.watch.apiVersion"),
                Rule::GroupVersionKind,
                format!(
                    "must be \"group/version\" or \"version\" (e.g. \"v1\", \"apps/v1\"), got {:?}",
                    w.watch.api_version
                ),
            );
        }
        if !valid_kind(&w.watch.kind) {
            ctx.push(
                format!("{p}.watch.kind"),
                Rule::GroupVersionKind,
                format!(
                    "must be a CamelCase kind such as \"ConfigMap\", got {:?}",
                    w.watch.kind
                ),
            );
        }
        if let Some(ns) = &w.watch.namespace
            && !names::is_dns1123_label(ns)
        {
            ctx.push(
                format!("{p}.watch.namespace"),
                Rule::Name,
                format!("must be a valid namespace name, got {ns:?}"),
            );
        }
        if let Some(sel) = &w.watch.label_selector
            && let Err(e) = selector::parse_label_selector(sel)
        {
            ctx.push(
                format!("{p}.watch.labelSelector"),
                Rule::LabelSelector,
                e.to_string(),
            );
        }
        let resync = match &w.resync_period {
            Some(r) => ctx
                .bounded(&format!("{p}.resyncPeriod"), r, bounds::RESYNC_PERIOD)
                .map(Some),
            None => Some(None),
        };
        let hook_timeout = ctx.duration(&format!("{p}.hook.timeout"), &w.hook.timeout);
        let hook_timeout = match hook_timeout {
            Some(t) if t > bounds::HOOK_TIMEOUT_MAX => {
                ctx.push(
                    format!("{p}.hook.timeout"),
                    Rule::Range,
                    format!(
                        "must be at most {}, got {}",
                        bounds::HOOK_TIMEOUT_MAX,
                        w.hook.timeout
                    ),
                );
                None
            }
            other => other,
        };
        let hook_url = match policy
            .check(&w.hook.url)
            .and_then(|u| policy.check_secrets(group, &w.watch.kind, &u).map(|()| u))
        {
            Ok(u) => Some(u),
            Err(reason) => {
                ctx.push(
                    format!("{p}.hook.url"),
                    Rule::HookUrl,
                    format!("refused by the hook policy: {reason}"),
                );
                None
            }
        };
        if let Some(r) = &w.hook.signing_secret_ref {
            signing_secret_ref(&mut ctx, &format!("{p}.hook.signingSecretRef"), r);
        }
        let tls = hook_tls(&mut ctx, &format!("{p}.hook"), &w.hook);
        if let (Some(resync_period), Some(hook_timeout), Some(hook_url)) =
            (resync, hook_timeout, hook_url)
        {
            workers.push(ResolvedWorker {
                name: w.name.clone(),
                concurrency: w.concurrency,
                group: group.to_string(),
                version: version.to_string(),
                kind: w.watch.kind.clone(),
                namespace: w
                    .watch
                    .namespace
                    .clone()
                    .unwrap_or_else(|| namespace.to_string()),
                label_selector: w
                    .watch
                    .label_selector
                    .clone()
                    .filter(|s| !s.trim().is_empty()),
                resync_period: resync_period.map(GoDuration::to_std),
                hook_url,
                hook_timeout: hook_timeout.to_std(),
                signing_secret: w.hook.signing_secret_ref.clone(),
                finalize: w.finalize,
                tls,
            });
        }
    }

    match (ctx.out.is_empty(), lease, renew, retry, startup, graceful) {
        (true, Some(lease), Some(renew), Some(retry), Some(startup), Some(graceful)) => {
            Ok(ResolvedConfig {
                namespace: namespace.to_string(),
                name: name.to_string(),
                service_account: spec.service_account_name.clone(),
                election: ElectionConfig {
                    lease_name,
                    lease_namespace,
                    lease_duration: lease.to_std(),
                    renew_deadline: renew.to_std(),
                    retry_period: retry.to_std(),
                    release_on_cancel: le.release_on_cancel,
                    adopt_existing_lease: le.adopt_existing_lease,
                },
                startup_timeout: startup.to_std(),
                graceful_shutdown_timeout: graceful.to_std(),
                workers,
            })
        }
        _ => Err(Violations(ctx.out)),
    }
}

/// Longest `signingSecretRef.key`: `<key>.previous` must be a valid Secret key (253) too.
pub const SIGNING_KEY_MAX: usize = 253 - ".previous".len();

/// A Secret data key: `[-._a-zA-Z0-9]+`, not `.` or `..`, at most `max` characters.
fn is_secret_key(key: &str, max: usize) -> bool {
    !key.is_empty()
        && key.len() <= max
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Largest inline `hook.caBundle` (also the CRD's maxLength).
pub const CA_BUNDLE_MAX: usize = 64 * 1024;

/// Checks a hook's TLS settings: only with https, an inline bundle that holds at least one
/// certificate and nothing else, references that name objects and keys.
fn hook_tls(ctx: &mut Ctx, field: &str, h: &crate::api::spec::HookSpec) -> HookTls {
    let tls = HookTls {
        ca_bundle: h.ca_bundle.clone(),
        ca_bundle_ref: h.ca_bundle_ref.clone(),
        client_cert_secret: h.client_cert_secret_ref.as_ref().map(|r| r.name.clone()),
    };
    if !tls.is_custom() {
        return tls;
    }
    if !h.url.trim().to_ascii_lowercase().starts_with("https:") {
        ctx.push(
            format!("{field}.url"),
            Rule::HookTls,
            "caBundle, caBundleRef and clientCertSecretRef need an https URL".to_string(),
        );
    }
    if let Some(pem) = &h.ca_bundle {
        if pem.len() > CA_BUNDLE_MAX {
            ctx.push(
                format!("{field}.caBundle"),
                Rule::HookTls,
                format!("must be at most {CA_BUNDLE_MAX} bytes, got {}", pem.len()),
            );
        } else if let Err(e) = crate::tls::pem::parse_ca_bundle(pem.as_bytes(), "hook.caBundle") {
            ctx.push(format!("{field}.caBundle"), Rule::HookTls, e.to_string());
        }
    }
    if let Some(r) = &h.ca_bundle_ref {
        if r.kind != "ConfigMap" && r.kind != "Secret" {
            ctx.push(
                format!("{field}.caBundleRef.kind"),
                Rule::HookTls,
                format!("must be ConfigMap or Secret, got {:?}", r.kind),
            );
        }
        if !names::is_dns1123_subdomain(&r.name) {
            ctx.push(
                format!("{field}.caBundleRef.name"),
                Rule::Name,
                format!(
                    "must be a valid {} name (DNS-1123 subdomain), got {:?}",
                    r.kind, r.name
                ),
            );
        }
        if !is_secret_key(&r.key, 253) {
            ctx.push(
                format!("{field}.caBundleRef.key"),
                Rule::Name,
                format!(
                    "must be a data key ([-._a-zA-Z0-9]+, not \".\" or \"..\"), got {:?}",
                    r.key
                ),
            );
        }
    }
    if let Some(r) = &h.client_cert_secret_ref
        && !names::is_dns1123_subdomain(&r.name)
    {
        ctx.push(
            format!("{field}.clientCertSecretRef.name"),
            Rule::Name,
            format!(
                "must be a valid Secret name (DNS-1123 subdomain), got {:?}",
                r.name
            ),
        );
    }
    tls
}

fn signing_secret_ref(ctx: &mut Ctx, field: &str, r: &SigningSecretRef) {
    if !names::is_dns1123_subdomain(&r.name) {
        ctx.push(
            format!("{field}.name"),
            Rule::Name,
            format!(
                "must be a valid Secret name (DNS-1123 subdomain), got {:?}",
                r.name
            ),
        );
    }
    if !is_secret_key(&r.key, SIGNING_KEY_MAX) {
        ctx.push(
            format!("{field}.key"),
            Rule::Name,
            format!(
                "must be a Secret data key ([-._a-zA-Z0-9]+, not \".\" or \"..\") of at most \
                 {SIGNING_KEY_MAX} characters (so that \"<key>.previous\" is one too), got {:?}",
                r.key
            ),
        );
    }
}

/// Valid but risky settings: admission warnings (kubectl prints them).
pub fn warnings(spec: &ManagerConfigSpec) -> Vec<String> {
    let mut out = Vec::new();
    let le = &spec.leader_election;
    let lease = GoDuration::parse(&le.lease_duration).ok();
    let renew = GoDuration::parse(&le.renew_deadline).ok();
    if let Some(l) = lease
        && l > GoDuration::from_secs(300)
    {
        out.push(format!(
            "spec.leaderElection.leaseDuration: {l} is over 5 minutes; a crashed leader's workers stay stopped that long before a standby takes over"
        ));
    }
    if let (Some(l), Some(r)) = (lease, renew)
        && l > r
        && l.as_nanos() - r.as_nanos() <= 1_000_000_000
    {
        out.push(format!(
            "spec.leaderElection.renewDeadline: {r} is within 1s of leaseDuration ({l}); a slow renew may let a standby take over while the old leader still believes it leads"
        ));
    }
    for (i, w) in spec.workers.iter().enumerate() {
        if w.hook.signing_secret_ref.is_some()
            && w.hook.url.trim().to_ascii_lowercase().starts_with("http:")
        {
            out.push(format!(
                "spec.workers[{i}].hook: calls to a plain http URL are signed (only HMACs travel, never the secret), but their bodies, the watched objects, can be read on the network; prefer https"
            ));
        }
        if w.concurrency > 16 {
            out.push(format!(
                "spec.workers[{i}].concurrency: {} is above 16; the hook will see that many concurrent requests",
                w.concurrency
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
