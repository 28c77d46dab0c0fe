//! Loopback networking for tests: free ports, the HTTP client for the operator's probe and
//! metrics endpoints, and log tails for failure messages.

use std::path::Path;
use std::time::Duration;

/// A free TCP address on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    free_addr().port()
}

/// The HTTP client tests use for the operator's probe and metrics endpoints on 127.0.0.1:
/// no proxy (so nothing leaves loopback), a 5-s timeout.
pub fn loopback_http() -> &'static reqwest::Client {
    static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    HTTP.get_or_init(|| {
        manager_operator::tls::install_default_provider();
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("building the HTTP client")
    })
}

/// GET over [`loopback_http`]: status and body.
pub async fn http_get(url: &str) -> Result<(u16, String), String> {
    let r = loopback_http()
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let code = r.status().as_u16();
    let body = r.text().await.map_err(|e| e.to_string())?;
    Ok((code, body))
}

/// The last `lines` lines of a log file (read from its last 64 KiB; empty when unreadable),
/// for failure messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let _ = f.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
