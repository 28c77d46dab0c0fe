//! The operator's hook policy (SPEC §6): which hook URLs workers may call.
//!
//! Link-local and cloud metadata addresses are always refused, whatever the flags say; loopback
//! only when explicitly allowed; then the scheme and the host must match the allow lists.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Host names of cloud metadata services, refused like their addresses.
const METADATA_HOSTS: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Which hook URLs are allowed. Built from operator flags (`--hook-allowed-schemes`,
/// `--hook-allowed-hosts`, `--hook-allow-loopback`) or Helm values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookPolicy {
    /// Allowed URL schemes, lowercase (default `http`, `https`).
    pub allowed_schemes: Vec<String>,
    /// Allowed host patterns: `*` (any), `*.suffix` (any subdomain of suffix), or an exact host.
    pub allowed_hosts: Vec<String>,
    /// Whether loopback hosts (127.0.0.0/8, ::1, localhost) are allowed.
    pub allow_loopback: bool,
}

impl Default for HookPolicy {
    fn default() -> Self {
        Self {
            allowed_schemes: vec!["http".into(), "https".into()],
            allowed_hosts: vec!["*".into()],
            allow_loopback: false,
        }
    }
}

fn is_metadata_v4(ip: Ipv4Addr) -> bool {
    // Link-local 169.254.0.0/16 holds AWS/GCP/Azure/OpenStack metadata; 100.100.100.200 is
    // Alibaba Cloud's; 192.0.0.192 is Oracle Cloud's.
    ip.is_link_local()
        || ip == Ipv4Addr::new(100, 100, 100, 200)
        || ip == Ipv4Addr::new(192, 0, 0, 192)
}

fn is_metadata_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    // fe80::/10 link-local; fd00:ec2::254 is AWS's IPv6 metadata endpoint.
    (seg[0] & 0xffc0) == 0xfe80 || ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254)
}

/// Normalizes IPv4-mapped/compatible IPv6 addresses to IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// True for addresses that are never a valid hook target (link-local, metadata, unspecified,
/// multicast, broadcast).
pub fn is_always_refused_ip(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            is_metadata_v4(v4) || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => is_metadata_v6(v6) || v6.is_unspecified() || v6.is_multicast(),
    }
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

impl HookPolicy {
    /// Checks a hook URL; `Err` carries the reason a user sees.
    pub fn check(&self, raw: &str) -> Result<Url, String> {
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
            if is_always_refused_ip(ip) {
                return Err(format!(
                    "host {host_text} is a link-local, metadata or unspecified address, which is always refused"
                ));
            }
            if is_loopback_ip(ip) && !self.allow_loopback {
                return Err(format!(
                    "host {host_text} is a loopback address, refused unless the operator runs with --hook-allow-loopback"
                ));
            }
        } else {
            if METADATA_HOSTS.contains(&host_text.as_str()) {
                return Err(format!(
                    "host {host_text} is a cloud metadata service, which is always refused"
                ));
            }
            if (host_text == "localhost" || host_text.ends_with(".localhost"))
                && !self.allow_loopback
            {
                return Err(format!(
                    "host {host_text} is loopback, refused unless the operator runs with --hook-allow-loopback"
                ));
            }
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
            self.allow_loopback && (ip.is_some_and(is_loopback_ip) || host_text == "localhost");
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
            "http://100.100.100.200/",
            "http://0.0.0.0:8080/",
            "http://[::]/",
        ] {
            let err = loopback_ok().check(url);
            assert!(err.is_err(), "{url} must be refused");
        }
    }

    #[test]
    fn loopback_needs_the_flag() {
        for url in [
            "http://127.0.0.1:8080/sync",
            "http://127.1.2.3/",
            "http://[::1]:80/",
            "http://localhost:9000/",
        ] {
            let e = HookPolicy::default().check(url).unwrap_err();
            assert!(e.contains("loopback"), "{url}: {e}");
            assert!(loopback_ok().check(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn schemes_and_hosts() {
        let p = HookPolicy {
            allowed_schemes: vec!["https".into()],
            allowed_hosts: vec!["*.svc".into(), "hooks.example.com".into()],
            allow_loopback: false,
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
}
