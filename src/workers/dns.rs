//! The hook client's resolver: hook destinations are judged where the connection is made.
//!
//! reqwest asks [`PolicyResolver`] for the addresses of every host name it connects to (it does
//! not ask for literal addresses: those are judged before the request, see
//! [`super::hook::call`]). The resolver looks the name up ([`SystemLookup`]: the system
//! resolver, `/etc/hosts` included; or fixed answers), then filters every address through the
//! hook policy's address rules ([`HookPolicy::judge_ip`], IPv4 and IPv6, IPv4 embedded in IPv6
//! included). Only allowed addresses are handed to the connector; when none is left the
//! connection fails with [`DestinationRefused`], which names each address and the rule that
//! refused it. Every connection resolves again, so a DNS answer that changes (rebinding) is
//! judged again.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tracing::warn;

use crate::validation::HookPolicy;
use crate::validation::hook_policy::Refusal;

/// Looks a host name up.
pub trait Lookup: Send + Sync {
    /// The addresses of `host` (lowercase, no trailing dot).
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>>;
}

/// The system resolver (`getaddrinfo` through tokio): `/etc/hosts`, cluster DNS.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// Fixed answers for some names, the system resolver for the others. The fixed answers are
/// judged like any other (`--hook-resolve`, used by tests: a name that resolves to 127.0.0.1
/// without touching DNS).
#[derive(Clone, Debug, Default)]
pub struct FixedLookup {
    /// Name (lowercase) → addresses.
    pub names: HashMap<String, Vec<IpAddr>>,
    /// Whether names not in `names` go to the system resolver (otherwise: not found).
    pub fallback_to_system: bool,
}

impl Lookup for FixedLookup {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        match self.names.get(&host) {
            Some(a) => {
                let a = a.clone();
                Box::pin(async move { Ok(a) })
            }
            None if self.fallback_to_system => SystemLookup.lookup(host),
            None => Box::pin(async move {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host}: no such host"),
                ))
            }),
        }
    }
}

/// A hook host name that resolved only to addresses (or is a name) the hook policy refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationRefused {
    /// The host name.
    pub host: String,
    /// Why the name itself is refused, if it is.
    pub name_reason: Option<String>,
    /// Each address it resolved to, and why it was refused.
    pub refusals: Vec<Refusal>,
}

impl fmt::Display for DestinationRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.name_reason {
            return write!(f, "hook destination refused: {r}");
        }
        write!(
            f,
            "hook destination refused: {} resolved only to refused addresses: ",
            self.host
        )?;
        let parts: Vec<String> = self.refusals.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for DestinationRefused {}

/// Resolves and filters hook host names by the hook policy (see the module docs).
#[derive(Clone)]
pub struct PolicyResolver {
    policy: Arc<HookPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl PolicyResolver {
    /// A resolver judging by `policy`, looking names up with `lookup`.
    pub fn new(policy: Arc<HookPolicy>, lookup: Arc<dyn Lookup>) -> Self {
        Self { policy, lookup }
    }

    /// The allowed addresses of `host`, or why there are none.
    pub async fn allowed(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(reason) = self.policy.refused_name(&host) {
            return Err(ResolveError::Refused(DestinationRefused {
                host,
                name_reason: Some(reason),
                refusals: Vec::new(),
            }));
        }
        let addrs = self
            .lookup
            .lookup(host.clone())
            .await
            .map_err(|e| ResolveError::Lookup(format!("resolving {host}: {e}")))?;
        if addrs.is_empty() {
            return Err(ResolveError::Lookup(format!(
                "resolving {host}: no addresses"
            )));
        }
        let mut allowed = Vec::with_capacity(addrs.len());
        let mut refusals = Vec::new();
        for ip in addrs {
            match self.policy.judge_ip(ip) {
                Ok(()) => allowed.push(ip),
                Err(r) => refusals.push(r),
            }
        }
        if allowed.is_empty() {
            return Err(ResolveError::Refused(DestinationRefused {
                host,
                name_reason: None,
                refusals,
            }));
        }
        if !refusals.is_empty() {
            let refused: Vec<String> = refusals.iter().map(ToString::to_string).collect();
            warn!(host = %host, allowed = ?allowed, refused = %refused.join("; "),
                "hook host resolved to some refused addresses; connecting only to the allowed ones");
        }
        Ok(allowed)
    }
}

/// Why a hook host name yields no address to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Every address (or the name) is refused by the hook policy.
    #[error(transparent)]
    Refused(DestinationRefused),
    /// The lookup failed.
    #[error("{0}")]
    Lookup(String),
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            match this.allowed(&host).await {
                Ok(ips) => {
                    let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                    Ok(addrs)
                }
                // The refusal itself is the error, so callers can find it in the source chain.
                Err(ResolveError::Refused(r)) => Err(Box::new(r) as _),
                Err(e) => Err(Box::new(e) as _),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(policy: HookPolicy, names: &[(&str, &str)]) -> PolicyResolver {
        let mut fixed = FixedLookup::default();
        for (n, a) in names {
            fixed
                .names
                .entry((*n).to_string())
                .or_default()
                .push(a.parse().expect("an address"));
        }
        PolicyResolver::new(Arc::new(policy), Arc::new(fixed))
    }

    const NAMES: &[(&str, &str)] = &[
        ("metadata.attacker.example", "169.254.169.254"),
        ("local.attacker.example", "127.0.0.1"),
        ("v6local.attacker.example", "::1"),
        ("nat64.attacker.example", "64:ff9b::a9fe:a9fe"),
        ("wire.attacker.example", "168.63.129.16"),
        ("podid.attacker.example", "fd00:ec2::23"),
        ("inventory.team-a.svc", "10.96.12.7"),
        ("mixed.attacker.example", "169.254.169.254"),
        ("mixed.attacker.example", "10.0.0.9"),
    ];

    async fn refused(r: &PolicyResolver, host: &str) -> DestinationRefused {
        match r.allowed(host).await {
            Err(ResolveError::Refused(d)) => d,
            other => panic!("{host}: expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_refused() {
        let r = resolver(HookPolicy::default(), NAMES);
        for (host, addr, rule) in [
            ("metadata.attacker.example", "169.254.169.254", "link-local"),
            ("local.attacker.example", "127.0.0.1", "loopback"),
            ("v6local.attacker.example", "::1", "loopback"),
            ("nat64.attacker.example", "64:ff9b::a9fe:a9fe", "link-local"),
            ("wire.attacker.example", "168.63.129.16", "azure-wireserver"),
            ("podid.attacker.example", "fd00:ec2::23", "eks-pod-identity"),
        ] {
            let d = refused(&r, host).await;
            let text = d.to_string();
            assert!(
                text.contains(host)
                    && text.contains(addr)
                    && text.contains(&format!("rule {rule}")),
                "{text}"
            );
        }
        let d = refused(&r, "METADATA.google.internal.").await;
        assert!(d.to_string().contains("cloud metadata"), "{d}");
    }

    #[tokio::test]
    async fn loopback_names_pass_with_the_flag() {
        let r = resolver(
            HookPolicy {
                allow_loopback: true,
                ..HookPolicy::default()
            },
            NAMES,
        );
        assert_eq!(
            r.allowed("local.attacker.example").await.expect("allowed"),
            vec!["127.0.0.1".parse::<IpAddr>().expect("ip")]
        );
        // Metadata stays refused.
        refused(&r, "metadata.attacker.example").await;
    }

    #[tokio::test]
    async fn private_addresses_follow_the_denied_networks() {
        let open = resolver(HookPolicy::default(), NAMES);
        assert!(open.allowed("inventory.team-a.svc").await.is_ok());
        let closed = resolver(
            HookPolicy {
                denied_networks: vec!["10.0.0.0/8".parse().expect("cidr")],
                ..HookPolicy::default()
            },
            NAMES,
        );
        let d = refused(&closed, "inventory.team-a.svc").await;
        assert!(d.to_string().contains("rule denied-network"), "{d}");
        let narrow = resolver(
            HookPolicy {
                denied_networks: vec!["10.200.0.0/16".parse().expect("cidr")],
                ..HookPolicy::default()
            },
            NAMES,
        );
        assert!(narrow.allowed("inventory.team-a.svc").await.is_ok());
    }

    #[tokio::test]
    async fn only_allowed_addresses_of_a_mixed_answer_are_used() {
        let r = resolver(HookPolicy::default(), NAMES);
        assert_eq!(
            r.allowed("mixed.attacker.example")
                .await
                .expect("one allowed"),
            vec!["10.0.0.9".parse::<IpAddr>().expect("ip")]
        );
    }

    #[tokio::test]
    async fn lookup_failures_are_not_refusals() {
        let r = resolver(HookPolicy::default(), NAMES);
        assert!(matches!(
            r.allowed("nowhere.invalid").await,
            Err(ResolveError::Lookup(_))
        ));
    }
}
