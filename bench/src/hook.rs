//! The hook the workers call: an HTTP/1.1 server on 127.0.0.1 that answers `200 {}` at once and
//! records what it saw, in the harness's own process (so its timestamps share a clock with the
//! kills and writes the harness makes).
//!
//! * every call: holder, fencing token, object name and `data.gen` (a counter the harness puts
//!   in the watched ConfigMaps);
//! * `gen` accounting: for each generation, how many distinct objects were delivered at that
//!   generation, and when the first and the last of them arrived;
//! * optionally the full call log (failover scenarios: few calls);
//! * optionally the terms of each ManagerConfig (`manager.name` of the body): the runs of calls
//!   by one (holder, fencing token), with their first and last arrival, and the fencing
//!   violations seen on arrival (a token lower than one already seen for that config, or a
//!   token already used by another holder).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;

use crate::util::Result;

/// One recorded call.
#[derive(Clone, Debug)]
pub struct Call {
    /// When the request body had been read.
    pub at: Instant,
    /// `holder` of the body.
    pub holder: String,
    /// `fencingToken` of the body.
    pub token: i64,
}

/// First and last arrival, and count, of the distinct objects delivered at one generation.
#[derive(Clone, Copy, Debug)]
pub struct GenProgress {
    /// Distinct objects delivered at this generation.
    pub objects: usize,
    /// First delivery at this generation.
    pub first: Instant,
    /// Latest first-delivery of an object at this generation.
    pub last: Instant,
}

/// The calls one holder made for one ManagerConfig under one fencing token.
#[derive(Clone, Debug)]
pub struct Term {
    /// `holder` of the calls.
    pub holder: String,
    /// `fencingToken` of the calls.
    pub token: i64,
    /// First call.
    pub first: Instant,
    /// Latest call.
    pub last: Instant,
    /// Number of calls.
    pub calls: u64,
}

/// A call that broke fencing, as seen when it arrived.
#[derive(Clone, Debug)]
pub struct Violation {
    /// The ManagerConfig.
    pub config: String,
    /// When the call arrived.
    pub at: Instant,
    /// `stale-token` (lower than one already seen) or `shared-token` (another holder used it).
    pub kind: &'static str,
    /// The offending call's holder.
    pub holder: String,
    /// The offending call's token.
    pub token: i64,
}

#[derive(Default)]
struct Inner {
    calls: u64,
    log: Vec<Call>,
    /// ManagerConfig name → its terms in order of their first call.
    terms: HashMap<String, Vec<Term>>,
    violations: Vec<Violation>,
    /// object → highest generation delivered.
    best: HashMap<String, u64>,
    gens: HashMap<u64, GenProgress>,
}

#[derive(Default)]
struct Shared {
    record_calls: bool,
    record_terms: bool,
    inner: Mutex<Inner>,
}

/// A running hook.
#[derive(Clone)]
pub struct Hook {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    shared: Arc<Shared>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    holder: String,
    #[serde(default, rename = "fencingToken")]
    token: i64,
    #[serde(default)]
    manager: Option<ManagerRef>,
    object: Obj,
}

#[derive(Deserialize)]
struct ManagerRef {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Obj {
    metadata: Meta,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    #[serde(rename = "gen")]
    generation: Option<String>,
}

async fn handle(State(s): State<Arc<Shared>>, body: Bytes) -> (StatusCode, &'static str) {
    let at = Instant::now();
    let b: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(_) => return (StatusCode::BAD_REQUEST, "not a hook request"),
    };
    let gen_: u64 = b
        .object
        .data
        .and_then(|d| d.generation)
        .and_then(|g| g.parse().ok())
        .unwrap_or(0);
    let mut g = s.inner.lock().unwrap_or_else(|e| e.into_inner());
    g.calls += 1;
    let prev = g.best.get(&b.object.metadata.name).copied();
    if prev.is_none_or(|p| p < gen_) {
        g.best.insert(b.object.metadata.name.clone(), gen_);
        let e = g.gens.entry(gen_).or_insert(GenProgress {
            objects: 0,
            first: at,
            last: at,
        });
        e.objects += 1;
        e.last = at;
    }
    if s.record_terms
        && let Some(m) = &b.manager
    {
        record_term(&mut g, &m.name, &b.holder, b.token, at);
    }
    if s.record_calls {
        g.log.push(Call {
            at,
            holder: b.holder,
            token: b.token,
        });
    }
    (StatusCode::OK, "{}")
}

fn record_term(g: &mut Inner, config: &str, holder: &str, token: i64, at: Instant) {
    let terms = g.terms.entry(config.to_string()).or_default();
    let known = terms
        .iter()
        .rposition(|t| t.token == token && t.holder == holder);
    let kind = if terms.iter().any(|o| o.token > token) {
        Some("stale-token")
    } else if known.is_none() && terms.iter().any(|o| o.token == token) {
        Some("shared-token")
    } else {
        None
    };
    match known {
        Some(i) => {
            terms[i].last = at;
            terms[i].calls += 1;
        }
        None => terms.push(Term {
            holder: holder.to_string(),
            token,
            first: at,
            last: at,
            calls: 1,
        }),
    }
    if let Some(kind) = kind {
        g.violations.push(Violation {
            config: config.to_string(),
            at,
            kind,
            holder: holder.to_string(),
            token,
        });
    }
}

impl Hook {
    /// Starts the hook on 127.0.0.1 (a free port); `record_calls` keeps every call.
    pub async fn start(record_calls: bool) -> Result<Self> {
        Self::start_with(record_calls, false).await
    }

    /// Starts the hook; `record_terms` keeps the terms of each ManagerConfig and checks fencing.
    pub async fn start_with(record_calls: bool, record_terms: bool) -> Result<Self> {
        let shared = Arc::new(Shared {
            record_calls,
            record_terms,
            inner: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let app = Router::new()
            .route("/hook", post(handle))
            .with_state(shared.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("[bench] hook server failed: {e}");
            }
        });
        Ok(Self {
            url: format!("http://{addr}/hook"),
            shared,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// The call log from index `from` on.
    pub fn log_since(&self, from: usize) -> Vec<Call> {
        let g = self.lock();
        g.log.get(from..).map(<[Call]>::to_vec).unwrap_or_default()
    }

    /// Waits (polling every 2 ms) for the first call by `holder` logged at or after `from`.
    pub async fn first_call_by(&self, from: usize, holder: &str) -> Call {
        loop {
            if let Some(c) = self
                .log_since(from)
                .into_iter()
                .find(|c| c.holder == holder)
            {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Length of the call log.
    pub fn log_len(&self) -> usize {
        self.lock().log.len()
    }

    /// Progress of generation `gen_`.
    pub fn progress(&self, gen_: u64) -> Option<GenProgress> {
        self.lock().gens.get(&gen_).copied()
    }

    /// Runs `f` on the terms of every ManagerConfig (see [`Term`]), under the hook's lock.
    pub fn with_terms<R>(&self, f: impl FnOnce(&HashMap<String, Vec<Term>>) -> R) -> R {
        f(&self.lock().terms)
    }

    /// The fencing violations seen so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.lock().violations.clone()
    }

    /// Forgets everything (between runs).
    pub fn reset(&self) {
        let mut g = self.lock();
        *g = Inner::default();
    }
}
