//! The operator's hook policy (docs/design.md §6): which hook URLs workers may call, and which addresses
//! a hook connection may reach.
//!
//! Two places apply it, with the same tables:
//!
//! * [`HookPolicy::check`] reads the URL text (admission webhook, `manager-operator check`, the
//!   manager at start): scheme, credentials, control characters, host patterns, refused host
//!   names and literal addresses.
//! * [`HookPolicy::judge_ip`] judges every address a hook connection would reach: the hook HTTP
//!   client's resolver (`crate::workers::dns`) filters each DNS answer through it, so a name
//!   that resolves to a metadata, link-local or loopback address (a wildcard-DNS name, an
//!   `ExternalName` Service, `/etc/hosts`) is refused when the connection is made.
//!
//! The refused networks ([`REFUSED_NETWORKS`]), the IPv6 forms that embed an IPv4 address
//! ([`EMBEDDED_V4_FORMS`]) and the refused host names ([`REFUSED_HOST_NAMES`]) are kept here
//! only; `docs/hooks-security.md` shows them and a unit test keeps it in step.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// When a refused network is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Always, whatever the flags say.
    Always,
    /// Unless the operator runs with `--hook-allow-loopback`.
    Loopback,
}

/// One refused network, with what lives there.
#[derive(Clone, Copy, Debug)]
pub struct RefusedNetwork {
    /// The network.
    pub network: IpNet,
    /// When it is refused.
    pub scope: Scope,
    /// Short rule name, shown in refusals (e.g. `link-local`).
    pub rule: &'static str,
    /// What lives there.
    pub what: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix))
}

#[allow(clippy::too_many_arguments)]
const fn v6(s: [u16; 8], prefix: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new_assert(
        Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]),
        prefix,
    ))
}

/// Every network a hook connection may not reach. The one list: [`HookPolicy::check`], the
/// admission webhook, `check` and the connect-time resolver all read it.
pub const REFUSED_NETWORKS: &[RefusedNetwork] = &[
    RefusedNetwork {
        network: v4(0, 0, 0, 0, 8),
        scope: Scope::Always,
        rule: "this-network",
        what: "\"this network\"; 0.0.0.0 reaches the local host on Linux",
    },
    RefusedNetwork {
        network: v4(127, 0, 0, 0, 8),
        scope: Scope::Loopback,
        rule: "loopback",
        what: "the operator's own pod",
    },
    RefusedNetwork {
        network: v4(169, 254, 0, 0, 16),
        scope: Scope::Always,
        rule: "link-local",
        what: "cloud metadata 169.254.169.254 (AWS, GCP, Azure, OpenStack, DigitalOcean), \
               ECS task metadata 169.254.170.2, EKS Pod Identity 169.254.170.23",
    },
    RefusedNetwork {
        network: v4(168, 63, 129, 16, 32),
        scope: Scope::Always,
        rule: "azure-wireserver",
        what: "Azure WireServer (host agent, not link-local)",
    },
    RefusedNetwork {
        network: v4(100, 100, 100, 200, 32),
        scope: Scope::Always,
        rule: "alibaba-metadata",
        what: "Alibaba Cloud metadata",
    },
    RefusedNetwork {
        network: v4(192, 0, 0, 192, 32),
        scope: Scope::Always,
        rule: "oracle-metadata",
        what: "Oracle Cloud metadata",
    },
    RefusedNetwork {
        network: v4(224, 0, 0, 0, 4),
        scope: Scope::Always,
        rule: "multicast",
        what: "IPv4 multicast",
    },
    RefusedNetwork {
        network: v4(240, 0, 0, 0, 4),
        scope: Scope::Always,
        rule: "reserved",
        what: "reserved, and the broadcast address 255.255.255.255",
    },
    RefusedNetwork {
        network: v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
        scope: Scope::Always,
        rule: "unspecified",
        what: "the unspecified IPv6 address ::",
    },
    RefusedNetwork {
        network: v6([0, 0, 0, 0, 0, 0, 0, 1], 128),
        scope: Scope::Loopback,
        rule: "loopback",
        what: "IPv6 loopback",
    },
    RefusedNetwork {
        network: v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        scope: Scope::Always,
        rule: "link-local",
        what: "IPv6 link-local",
    },
    RefusedNetwork {
        network: v6([0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254], 128),
        scope: Scope::Always,
        rule: "aws-imds",
        what: "AWS instance metadata over IPv6",
    },
    RefusedNetwork {
        network: v6([0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23], 128),
        scope: Scope::Always,
        rule: "eks-pod-identity",
        what: "EKS Pod Identity agent over IPv6",
    },
    RefusedNetwork {
        network: v6([0xfd20, 0x00ce, 0, 0, 0, 0, 0, 0x254], 128),
        scope: Scope::Always,
        rule: "gce-metadata",
        what: "GCE metadata over IPv6",
    },
    RefusedNetwork {
        network: v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        scope: Scope::Always,
        rule: "multicast",
        what: "IPv6 multicast",
    },
];

/// An IPv6 form that carries an IPv4 address: the IPv4 address is judged too.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedV4Form {
    /// The IPv6 prefix of the form.
    pub prefix: &'static str,
    /// Its name.
    pub name: &'static str,
    /// Where the IPv4 address sits.
    pub layout: &'static str,
}

/// Every IPv6 form whose embedded IPv4 address is judged by the IPv4 rules.
pub const EMBEDDED_V4_FORMS: &[EmbeddedV4Form] = &[
    EmbeddedV4Form {
        prefix: "::ffff:0:0/96",
        name: "IPv4-mapped",
        layout: "last 32 bits (`::ffff:a.b.c.d`)",
    },
    EmbeddedV4Form {
        prefix: "::/96",
        name: "IPv4-compatible (deprecated)",
        layout: "last 32 bits (`::a.b.c.d`; `::` and `::1` are judged as themselves)",
    },
    EmbeddedV4Form {
        prefix: "::ffff:0:0:0/96",
        name: "IPv4-translated (SIIT)",
        layout: "last 32 bits (`::ffff:0:a.b.c.d`)",
    },
    EmbeddedV4Form {
        prefix: "64:ff9b::/96",
        name: "NAT64 well-known prefix",
        layout: "last 32 bits",
    },
    EmbeddedV4Form {
        prefix: "64:ff9b:1::/48",
        name: "NAT64 local-use prefix",
        layout: "last 32 bits",
    },
    EmbeddedV4Form {
        prefix: "2002::/16",
        name: "6to4",
        layout: "bits 16-47 (`2002:AABB:CCDD::`)",
    },
    EmbeddedV4Form {
        prefix: "2001::/32",
        name: "Teredo",
        layout: "server in bits 32-63, client in the last 32 bits XOR 0xffffffff (both judged)",
    },
    EmbeddedV4Form {
        prefix: "any /64 with interface id 0:5efe or 200:5efe",
        name: "ISATAP",
        layout: "last 32 bits",
    },
];

/// Host names refused as such (cloud metadata services), whatever they resolve to.
pub const REFUSED_HOST_NAMES: &[(&str, &str)] = &[
    ("metadata", "GCE metadata (short name)"),
    ("metadata.google.internal", "GCE metadata"),
    ("metadata.goog", "GCE metadata"),
    ("metadata.azure.com", "Azure metadata"),
    ("instance-data", "AWS metadata (short name)"),
    ("instance-data.ec2.internal", "AWS metadata"),
];

fn to_v4(a: u16, b: u16) -> Ipv4Addr {
    let [a1, a2] = a.to_be_bytes();
    let [b1, b2] = b.to_be_bytes();
    Ipv4Addr::new(a1, a2, b1, b2)
}

/// The IPv4 addresses an IPv6 address embeds, with the form's name.
pub fn embedded_v4(ip: Ipv6Addr) -> Vec<(Ipv4Addr, &'static str)> {
    let s = ip.segments();
    let mut out = Vec::new();
    let last = to_v4(s[6], s[7]);
    if s[..5] == [0; 5] && s[5] == 0xffff {
        out.push((last, "IPv4-mapped ::ffff:0:0/96"));
    }
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        out.push((last, "IPv4-compatible ::/96"));
    }
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        out.push((last, "IPv4-translated ::ffff:0:0:0/96"));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        out.push((last, "NAT64 64:ff9b::/96"));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        out.push((last, "NAT64 local-use 64:ff9b:1::/48"));
    }
    if s[0] == 0x2002 {
        out.push((to_v4(s[1], s[2]), "6to4 2002::/16"));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        out.push((to_v4(s[2], s[3]), "Teredo server 2001::/32"));
        out.push((to_v4(!s[6], !s[7]), "Teredo client 2001::/32"));
    }
    if (s[4] & 0xfdff) == 0 && s[5] == 0x5efe {
        out.push((last, "ISATAP ::5efe:0:0/96"));
    }
    out
}

/// Why an address may not be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The address judged.
    pub address: IpAddr,
    /// The embedded IPv4 address that was refused, and the form that embeds it.
    pub via: Option<(Ipv4Addr, &'static str)>,
    /// The refused network it is in.
    pub network: IpNet,
    /// The rule: a [`RefusedNetwork::rule`], or `denied-network` (operator flag).
    pub rule: &'static str,
    /// What lives there / why.
    pub what: String,
    /// Refused only because loopback is not allowed.
    pub loopback: bool,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "address {}", self.address)?;
        if let Some((v4, form)) = &self.via {
            write!(f, " (embeds {v4} as {form})")?;
        }
        write!(
            f,
            " is in {} [rule {}: {}]",
            self.network, self.rule, self.what
        )?;
        if self.loopback {
            f.write_str(", refused unless the operator runs with --hook-allow-loopback")
        } else if self.rule == DENIED_NETWORK_RULE {
            f.write_str(", refused by the operator's --hook-denied-networks")
        } else {
            f.write_str(", which is always refused")
        }
    }
}

/// The rule name of networks refused by `--hook-denied-networks`.
pub const DENIED_NETWORK_RULE: &str = "denied-network";

/// Which hook URLs are allowed. Built from operator flags (`--hook-allowed-schemes`,
/// `--hook-allowed-hosts`, `--hook-allow-loopback`, `--hook-denied-networks`,
/// `--hook-allow-insecure-secrets`) or Helm values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookPolicy {
    /// Allowed URL schemes, lowercase (default `http`, `https`).
    pub allowed_schemes: Vec<String>,
    /// Allowed host patterns: `*` (any), `*.suffix` (any subdomain of suffix), or an exact host.
    pub allowed_hosts: Vec<String>,
    /// Whether loopback hosts (127.0.0.0/8, ::1, localhost) are allowed.
    pub allow_loopback: bool,
    /// More networks no hook may reach (e.g. the node network), on top of
    /// [`REFUSED_NETWORKS`].
    pub denied_networks: Vec<IpNet>,
    /// Whether workers watching `v1/Secret` may call plain-`http` hooks (the Secret's data
    /// would cross the network unencrypted).
    pub allow_insecure_secrets: bool,
}

impl Default for HookPolicy {
    fn default() -> Self {
        Self {
            allowed_schemes: vec!["http".into(), "https".into()],
            allowed_hosts: vec!["*".into()],
            allow_loopback: false,
            denied_networks: Vec::new(),
            allow_insecure_secrets: false,
        }
    }
}

/// Normalizes IPv4-mapped IPv6 addresses to IPv4 (the kernel connects them as IPv4).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// True for addresses that are never a valid hook target (every [`Scope::Always`] network of
/// [`REFUSED_NETWORKS`], directly or embedded in an IPv6 form).
pub fn is_always_refused_ip(ip: IpAddr) -> bool {
    let lenient = HookPolicy {
        allow_loopback: true,
        ..HookPolicy::default()
    };
    lenient.judge_ip(ip).is_err()
}

/// True for loopback addresses.
pub fn is_loopback_ip(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix("*.") {
        return host.len() > suffix.len() + 1
            && host.ends_with(suffix)
            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.';
    }
    pattern == host
}

/// Whether `host` (lowercase, no trailing dot) is a loopback name.
fn is_loopback_name(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

impl HookPolicy {
    /// Judges one address a hook connection would reach: [`REFUSED_NETWORKS`] (directly, then
    /// every IPv4 address an IPv6 form embeds, see [`EMBEDDED_V4_FORMS`]) and the operator's
    /// denied networks.
    pub fn judge_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        if let Some(r) = self.judge_direct(ip, ip, None) {
            return r;
        }
        if let IpAddr::V6(v6) = ip {
            for (v4, form) in embedded_v4(v6) {
                if let Some(Err(r)) = self.judge_direct(ip, IpAddr::V4(v4), Some((v4, form))) {
                    return Err(r);
                }
            }
        }
        Ok(())
    }

    /// `Some(verdict)` when `target` is in a listed network; `None` when no rule speaks.
    fn judge_direct(
        &self,
        address: IpAddr,
        target: IpAddr,
        via: Option<(Ipv4Addr, &'static str)>,
    ) -> Option<Result<(), Refusal>> {
        if let Some(n) = REFUSED_NETWORKS
            .iter()
            .find(|n| n.network.contains(&target))
        {
            if n.scope == Scope::Loopback && self.allow_loopback {
                return Some(Ok(()));
            }
            return Some(Err(Refusal {
                address,
                via,
                network: n.network,
                rule: n.rule,
                what: n.what.to_string(),
                loopback: n.scope == Scope::Loopback,
            }));
        }
        self.denied_networks
            .iter()
            .find(|n| n.contains(&target))
            .map(|n| {
                Err(Refusal {
                    address,
                    via,
                    network: *n,
                    rule: DENIED_NETWORK_RULE,
                    what: "a network the operator denies".to_string(),
                    loopback: false,
                })
            })
    }

    /// Why a host name is refused as such (a cloud metadata name, or a loopback name without
    /// `--hook-allow-loopback`); `None` when the name itself is fine (its addresses are judged
    /// when the connection is made).
    pub fn refused_name(&self, host: &str) -> Option<String> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some((_, what)) = REFUSED_HOST_NAMES.iter().find(|(n, _)| *n == host) {
            return Some(format!(
                "host {host} is a cloud metadata service ({what}), which is always refused"
            ));
        }
        if is_loopback_name(&host) && !self.allow_loopback {
            return Some(format!(
                "host {host} is loopback, refused unless the operator runs with --hook-allow-loopback"
            ));
        }
        None
    }

    /// Checks a hook URL; `Err` carries the reason a user sees.
    pub fn check(&self, raw: &str) -> Result<Url, String> {
        // The url crate silently drops tabs and newlines and trims control characters; the API
        // server's URL rules (Go's net/url) refuse them. Refuse them too, and whitespace.
        if let Some((i, c)) = raw
            .char_indices()
            .find(|(_, c)| c.is_control() || c.is_whitespace())
        {
            return Err(format!(
                "{raw:?} contains a control or whitespace character ({c:?} at byte {i})"
            ));
        }
        let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not an absolute URL: {e}"))?;
        let scheme = url.scheme().to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme {scheme:?} is not http or https"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL are not allowed".into());
        }
        let host = url.host().ok_or_else(|| format!("{raw:?} has no host"))?;
        let (host_text, ip) = match &host {
            Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                let ip = d.parse::<IpAddr>().ok();
                (d, ip)
            }
            Host::Ipv4(v4) => (v4.to_string(), Some(IpAddr::V4(*v4))),
            Host::Ipv6(v6) => (v6.to_string(), Some(IpAddr::V6(*v6))),
        };
        if let Some(ip) = ip {
            self.judge_ip(ip).map_err(|r| r.to_string())?;
        } else if let Some(reason) = self.refused_name(&host_text) {
            return Err(reason);
        }
        if !self
            .allowed_schemes
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&scheme))
        {
            return Err(format!(
                "scheme {scheme:?} is not allowed (allowed: {})",
                self.allowed_schemes.join(", ")
            ));
        }
        let loopback_allowed =
            self.allow_loopback && (ip.is_some_and(is_loopback_ip) || is_loopback_name(&host_text));
        if !loopback_allowed
            && !self
                .allowed_hosts
                .iter()
                .any(|p| host_matches(p, &host_text))
        {
            return Err(format!(
                "host {host_text} does not match the allowed hosts ({})",
                self.allowed_hosts.join(", ")
            ));
        }
        Ok(url)
    }

    /// Checks that a worker watching `group/kind` may call `url`: Secrets are sent to
    /// plain-`http` hooks only with `--hook-allow-insecure-secrets`.
    pub fn check_secrets(&self, group: &str, kind: &str, url: &Url) -> Result<(), String> {
        if group.is_empty()
            && kind == "Secret"
            && url.scheme().eq_ignore_ascii_case("http")
            && !self.allow_insecure_secrets
        {
            return Err(format!(
                "the worker watches v1/Secret and {url} is plain http: Secrets are sent only to https hooks unless the operator runs with --hook-allow-insecure-secrets"
            ));
        }
        Ok(())
    }
}

/// The refused networks, embedded forms and host names as the Markdown tables of
/// `docs/hooks-security.md` (kept in step by a unit test).
pub fn docs_tables() -> String {
    let mut out =
        String::from("| Network | Rule | Refused | What lives there |\n|---|---|---|---|\n");
    for n in REFUSED_NETWORKS {
        let scope = match n.scope {
            Scope::Always => "always",
            Scope::Loopback => "unless `--hook-allow-loopback`",
        };
        out.push_str(&format!(
            "| `{}` | `{}` | {scope} | {} |\n",
            n.network, n.rule, n.what
        ));
    }
    out.push_str("\n| IPv6 form | Prefix | Where the IPv4 address sits |\n|---|---|---|\n");
    for f in EMBEDDED_V4_FORMS {
        out.push_str(&format!("| {} | `{}` | {} |\n", f.name, f.prefix, f.layout));
    }
    out.push_str("\n| Host name | Service |\n|---|---|\n");
    for (n, what) in REFUSED_HOST_NAMES {
        out.push_str(&format!("| `{n}` | {what} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback_ok() -> HookPolicy {
        HookPolicy {
            allow_loopback: true,
            ..HookPolicy::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn metadata_and_link_local_always_refused() {
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://169.254.1.1/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://2852039166/", // 169.254.169.254 in decimal
            "http://0xa9fea9fe/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
            "http://100.100.100.200/",
            "http://0.0.0.0:8080/",
            "http://[::]/",
        ] {
            let err = loopback_ok().check(url);
            assert!(err.is_err(), "{url} must be refused");
        }
    }

    #[test]
    fn ipv6_forms_embedding_a_refused_ipv4_are_refused() {
        for (url, rule) in [
            ("http://[::a9fe:a9fe]/", "link-local"), // IPv4-compatible ::169.254.169.254
            ("http://[::169.254.169.254]/", "link-local"),
            ("http://[::ffff:0:a9fe:a9fe]/", "link-local"), // IPv4-translated
            ("http://[64:ff9b::a9fe:a9fe]/", "link-local"), // NAT64
            ("http://[64:ff9b::169.254.169.254]/", "link-local"),
            ("http://[64:ff9b:1::a9fe:a9fe]/", "link-local"), // NAT64 local-use
            ("http://[2002:a9fe:a9fe::1]/", "link-local"),    // 6to4
            // Teredo: client 169.254.169.254 obfuscated (XOR 0xffffffff) in the last 32 bits.
            (
                "http://[2001:0:4136:e378:8000:63bf:5601:5601]/",
                "link-local",
            ),
            ("http://[2001:0:a9fe:a9fe::1]/", "link-local"), // Teredo server
            ("http://[2001:db8::5efe:a9fe:a9fe]/", "link-local"), // ISATAP
            ("http://[64:ff9b::a83f:8110]/", "azure-wireserver"), // 168.63.129.16
            ("http://[2002:6464:64c8::]/", "alibaba-metadata"), // 100.100.100.200
            ("http://[::ffff:192.0.0.192]/", "oracle-metadata"),
            ("http://[64:ff9b::7f00:1]/", "loopback"),
        ] {
            let e = HookPolicy::default().check(url).unwrap_err();
            assert!(e.contains(&format!("rule {rule}")), "{url}: {e}");
            assert!(
                e.contains("embeds"),
                "{url}: the message names the embedded address: {e}"
            );
        }
    }

    #[test]
    fn platform_endpoints_that_are_not_link_local_are_refused() {
        for (addr, rule) in [
            ("168.63.129.16", "azure-wireserver"),
            ("100.100.100.200", "alibaba-metadata"),
            ("192.0.0.192", "oracle-metadata"),
            ("169.254.170.23", "link-local"), // EKS Pod Identity
            ("169.254.170.2", "link-local"),  // ECS task metadata
            ("fd00:ec2::254", "aws-imds"),
            ("fd00:ec2::23", "eks-pod-identity"),
            ("fd20:ce::254", "gce-metadata"),
            ("0.1.2.3", "this-network"),
            ("255.255.255.255", "reserved"),
            ("240.0.0.1", "reserved"),
            ("224.0.0.251", "multicast"),
            ("ff02::1", "multicast"),
        ] {
            let r = loopback_ok().judge_ip(ip(addr)).unwrap_err();
            assert_eq!(r.rule, rule, "{addr}");
            assert!(!r.loopback);
            let text = r.to_string();
            assert!(text.contains(addr) && text.contains(rule), "{text}");
            assert!(is_always_refused_ip(ip(addr)), "{addr}");
        }
    }

    #[test]
    fn ordinary_addresses_pass_including_embedded_ones() {
        for addr in [
            "10.0.0.1",
            "192.168.1.10",
            "172.16.0.1",
            "100.64.0.1",
            "8.8.8.8",
            "fd00::1",
            "2001:db8::1",
            "64:ff9b::a00:1", // NAT64 of 10.0.0.1
            "2002:a00:1::1",  // 6to4 of 10.0.0.1
            "::ffff:10.0.0.1",
            "2600:1f18::1",
        ] {
            assert!(
                HookPolicy::default().judge_ip(ip(addr)).is_ok(),
                "{addr}: {:?}",
                HookPolicy::default().judge_ip(ip(addr))
            );
        }
    }

    #[test]
    fn loopback_needs_the_flag() {
        for url in [
            "http://127.0.0.1:8080/sync",
            "http://127.1.2.3/",
            "http://[::1]:80/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:9000/",
            "http://a.localhost/",
        ] {
            let e = HookPolicy::default().check(url).unwrap_err();
            assert!(e.contains("loopback"), "{url}: {e}");
            assert!(loopback_ok().check(url).is_ok(), "{url}");
        }
        let r = HookPolicy::default().judge_ip(ip("127.0.0.1")).unwrap_err();
        assert!(r.loopback);
        assert!(r.to_string().contains("--hook-allow-loopback"), "{r}");
        assert!(loopback_ok().judge_ip(ip("::1")).is_ok());
    }

    #[test]
    fn denied_networks_apply_directly_and_embedded() {
        let p = HookPolicy {
            denied_networks: vec!["10.0.0.0/8".parse().expect("cidr")],
            ..HookPolicy::default()
        };
        let r = p.judge_ip(ip("10.1.2.3")).unwrap_err();
        assert_eq!(r.rule, DENIED_NETWORK_RULE);
        assert!(r.to_string().contains("10.0.0.0/8"), "{r}");
        assert!(p.judge_ip(ip("64:ff9b::a01:203")).is_err());
        assert!(p.judge_ip(ip("192.168.0.1")).is_ok());
        assert!(p.check("http://10.0.0.1/").is_err());
        assert!(HookPolicy::default().check("http://10.0.0.1/").is_ok());
    }

    #[test]
    fn control_characters_and_whitespace_are_refused() {
        for url in [
            "http://h.svc/a\tb",
            "http://h.svc/\n",
            "http://h.svc/\u{1}",
            "http://h.svc/\u{7f}",
            " http://h.svc/",
            "http://h.svc/a b",
            "http://h.svc/\u{85}",
        ] {
            let e = HookPolicy::default().check(url).unwrap_err();
            assert!(e.contains("control or whitespace"), "{url:?}: {e}");
        }
    }

    #[test]
    fn secrets_need_https_unless_allowed() {
        let http = Url::parse("http://h.svc/").expect("url");
        let https = Url::parse("https://h.svc/").expect("url");
        let p = HookPolicy::default();
        let e = p.check_secrets("", "Secret", &http).unwrap_err();
        assert!(e.contains("--hook-allow-insecure-secrets"), "{e}");
        assert!(p.check_secrets("", "Secret", &https).is_ok());
        assert!(p.check_secrets("", "ConfigMap", &http).is_ok());
        assert!(p.check_secrets("example.com", "Secret", &http).is_ok());
        let allowing = HookPolicy {
            allow_insecure_secrets: true,
            ..HookPolicy::default()
        };
        assert!(allowing.check_secrets("", "Secret", &http).is_ok());
    }

    #[test]
    fn schemes_and_hosts() {
        let p = HookPolicy {
            allowed_schemes: vec!["https".into()],
            allowed_hosts: vec!["*.svc".into(), "hooks.example.com".into()],
            ..HookPolicy::default()
        };
        assert!(p.check("https://inventory.team-a.svc/sync").is_ok());
        assert!(p.check("https://hooks.example.com/x").is_ok());
        assert!(
            p.check("http://inventory.team-a.svc/sync")
                .unwrap_err()
                .contains("scheme")
        );
        assert!(
            p.check("https://evil.example.com/")
                .unwrap_err()
                .contains("allowed hosts")
        );
        assert!(p.check("https://svc/").is_err());
        assert!(p.check("ftp://hooks.example.com/").is_err());
        assert!(p.check("file:///etc/passwd").is_err());
        assert!(p.check("/relative").is_err());
        assert!(p.check("https://user:pw@hooks.example.com/").is_err());
    }

    #[test]
    fn default_allows_cluster_services() {
        assert!(
            HookPolicy::default()
                .check("http://inventory-hook.team-a.svc:8080/sync")
                .is_ok()
        );
    }

    /// `docs/hooks-security.md` shows the tables of this module; regenerate it with
    /// `UPDATE_DOCS=1 cargo test --lib hook_policy`.
    #[test]
    fn docs_show_the_tables_in_code() {
        const BEGIN: &str =
            "<!-- BEGIN generated by src/validation/hook_policy.rs (docs_tables) -->\n";
        const END: &str = "<!-- END generated -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/hooks-security.md");
        let doc = std::fs::read_to_string(path).expect("docs/hooks-security.md");
        let start = doc.find(BEGIN).expect("BEGIN marker") + BEGIN.len();
        let end = doc.find(END).expect("END marker");
        let want = docs_tables();
        if doc[start..end] != want {
            if std::env::var_os("UPDATE_DOCS").is_some() {
                let new = format!("{}{want}{}", &doc[..start], &doc[end..]);
                std::fs::write(path, new).expect("writing the doc");
            } else {
                panic!(
                    "docs/hooks-security.md is out of step with the tables in code; run UPDATE_DOCS=1 cargo test --lib hook_policy"
                );
            }
        }
    }
}
