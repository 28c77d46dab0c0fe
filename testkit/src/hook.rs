//! A recording hook server on 127.0.0.1: what the operator's workers call in tests.
//!
//! Every call is recorded ([`Call`]: the body, manager, worker, object, holder, fencing token,
//! when it started and ended — ended also when the caller went away mid-call). On top:
//!
//! * scripted replies per object name ([`RecordingHook::script`]; afterwards the default
//!   reply, which can change while it serves: [`RecordingHook::set_default_reply`]), and a
//!   delay for every call ([`RecordingHook::set_delay`]);
//! * plain http, or https with a given `rustls::ServerConfig` ([`HookBuilder::tls`]; failed
//!   handshakes counted);
//! * in-flight counts and peaks per manager, per object and overall, and the calls answered
//!   since a moment ([`RecordingHook::answered_since`]); [`RecordingHook::reset`] starts all of
//!   it afresh (calls in flight then no longer count);
//! * fencing checks on arrival ([`HookBuilder::fencing`]): a token lower than one already seen
//!   for the manager, or a token used by two holders, is a violation and answered 409;
//! * [`assert_one_holder_at_a_time`] over recorded calls.
//!
//! ```no_run
//! # async fn demo() {
//! use manager_operator_testkit::RecordingHook;
//! let hook = RecordingHook::start().await;
//! // ... a ManagerConfig whose worker calls hook.url ...
//! let calls = hook.wait_calls_for("cm-0", 1).await;
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

use crate::wait::{TIMEOUT, wait_for};

/// One recorded hook call.
#[derive(Clone, Debug)]
pub struct Call {
    /// `manager.name` of the body (the ManagerConfig's name).
    pub manager: String,
    /// `worker` of the body.
    pub worker: String,
    /// `object.metadata.name` of the body.
    pub object: String,
    /// `holder` of the body (the replica identity of the caller).
    pub holder: String,
    /// `fencingToken` of the body (-1 when missing).
    pub token: i64,
    /// `source` of the body, `"operator"` when missing (other callers, e.g. a client-go
    /// elector in the interop tests, say who they are).
    pub source: String,
    /// The whole body.
    pub body: Value,
    /// When the call arrived.
    pub start: Instant,
    /// When the answer was sent or the caller went away; `None` while in flight.
    pub end: Option<Instant>,
    /// Whether the hook answered (after its delay); `false` while in flight and when the
    /// caller went away first (e.g. its hook timeout passed, or it was killed).
    pub answered: bool,
}

/// An answer of the hook.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response body.
    pub body: String,
    /// How long to wait before answering (`None`: the hook's delay).
    pub delay: Option<Duration>,
}

/// A reply `status` with `body`, after the hook's delay.
pub fn reply(status: u16, body: &str) -> Reply {
    Reply {
        status,
        body: body.into(),
        delay: None,
    }
}

#[derive(Default)]
struct Counts {
    now: usize,
    peak: usize,
}

impl Counts {
    fn up(&mut self) {
        self.now += 1;
        self.peak = self.peak.max(self.now);
    }
}

#[derive(Default)]
struct Recorder {
    /// Bumped by [`RecordingHook::reset`]: calls of an earlier epoch no longer count.
    epoch: u64,
    calls: Vec<Call>,
    script: HashMap<String, VecDeque<Reply>>,
    delay: Duration,
    default_reply: Option<Reply>,
    per_manager: HashMap<String, Counts>,
    per_object: HashMap<String, Counts>,
    global: Counts,
    fencing: bool,
    max_token: HashMap<String, i64>,
    owner: HashMap<(String, i64), String>,
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Recorder>>;

fn lock(s: &Shared) -> MutexGuard<'_, Recorder> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends a call when the handler completes or is dropped (the caller went away, e.g. the
/// calling operator was killed mid-call).
struct InFlight {
    rec: Shared,
    epoch: u64,
    manager: String,
    object: String,
    index: usize,
    answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut r = lock(&self.rec);
        if r.epoch != self.epoch {
            return;
        }
        if let Some(c) = r.per_manager.get_mut(&self.manager) {
            c.now = c.now.saturating_sub(1);
        }
        if let Some(c) = r.per_object.get_mut(&self.object) {
            c.now = c.now.saturating_sub(1);
        }
        r.global.now = r.global.now.saturating_sub(1);
        if let Some(c) = r.calls.get_mut(self.index) {
            c.end = Some(Instant::now());
            c.answered = self.answered;
        }
    }
}

async fn handle(State(rec): State<Shared>, body: String) -> (StatusCode, String) {
    let start = Instant::now();
    let v: Value = serde_json::from_str(&body).expect("hook body is JSON");
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let call = Call {
        manager: s(&v["manager"]["name"]),
        worker: s(&v["worker"]),
        object: s(&v["object"]["metadata"]["name"]),
        holder: s(&v["holder"]),
        token: v["fencingToken"].as_i64().unwrap_or(-1),
        source: v["source"].as_str().unwrap_or("operator").to_string(),
        body: v,
        start,
        end: None,
        answered: false,
    };
    let (guard, answer, delay) = {
        let mut r = lock(&rec);
        let fenced = r.fencing && !check_fencing(&mut r, &call);
        r.per_manager.entry(call.manager.clone()).or_default().up();
        r.per_object.entry(call.object.clone()).or_default().up();
        r.global.up();
        let answer = if fenced {
            reply(409, "stale fencing token")
        } else {
            let scripted = r.script.get_mut(&call.object).and_then(VecDeque::pop_front);
            scripted
                .or_else(|| r.default_reply.clone())
                .unwrap_or_else(|| reply(200, ""))
        };
        let delay = answer.delay.unwrap_or(r.delay);
        let guard = InFlight {
            rec: rec.clone(),
            epoch: r.epoch,
            manager: call.manager.clone(),
            object: call.object.clone(),
            index: r.calls.len(),
            answered: false,
        };
        r.calls.push(call);
        (guard, answer, delay)
    };
    let mut guard = guard;
    tokio::time::sleep(delay).await;
    guard.answered = true;
    drop(guard);
    (
        StatusCode::from_u16(answer.status).expect("a valid status code"),
        answer.body,
    )
}

/// Records a fencing violation of `c` (true when there is none).
fn check_fencing(r: &mut Recorder, c: &Call) -> bool {
    let mut ok = true;
    if let Some(&max) = r.max_token.get(&c.manager)
        && c.token < max
    {
        r.violations.push(format!(
            "{}: {} called with fencing token {} after token {max} was seen",
            c.manager, c.holder, c.token
        ));
        ok = false;
    }
    let first_owner = r
        .owner
        .entry((c.manager.clone(), c.token))
        .or_insert_with(|| c.holder.clone())
        .clone();
    if first_owner != c.holder {
        r.violations.push(format!(
            "{}: fencing token {} used by both {first_owner} and {}",
            c.manager, c.token, c.holder
        ));
        ok = false;
    }
    let max = r.max_token.entry(c.manager.clone()).or_insert(c.token);
    *max = (*max).max(c.token);
    ok
}

/// A TLS listener for axum: handshakes that fail (e.g. a client without a certificate) are
/// counted and skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    failed_handshakes: Arc<AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => {
                    self.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Options of a [`RecordingHook`] that must be set before it serves.
#[derive(Default)]
pub struct HookBuilder {
    delay: Duration,
    default_reply: Option<Reply>,
    fencing: bool,
    tls: Option<rustls::ServerConfig>,
}

impl HookBuilder {
    /// Every call takes `delay` unless scripted otherwise (default: answers at once).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The answer to unscripted calls (default `200` with an empty body).
    pub fn default_reply(mut self, status: u16, body: &str) -> Self {
        self.default_reply = Some(reply(status, body));
        self
    }

    /// Checks fencing on arrival: per manager, a token lower than one seen before, or a token
    /// another holder used, is recorded as a violation and answered `409 stale fencing token`.
    pub fn fencing(mut self) -> Self {
        self.fencing = true;
        self
    }

    /// Serves https with `config` (its certificate must be valid for `127.0.0.1`; a client
    /// certificate verifier makes it mutual TLS) instead of plain http. Handshakes that fail
    /// are counted ([`RecordingHook::failed_handshakes`]) and skipped.
    pub fn tls(mut self, config: rustls::ServerConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Serves `POST /hook` on a free port of 127.0.0.1.
    pub async fn start(self) -> RecordingHook {
        let rec: Shared = Arc::new(Mutex::new(Recorder {
            delay: self.delay,
            default_reply: self.default_reply,
            fencing: self.fencing,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/hook", post(handle))
            .with_state(rec.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("hook listener");
        let addr = listener.local_addr().expect("hook address");
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let (scheme, task) = match self.tls {
            None => (
                "http",
                tokio::spawn(async move {
                    axum::serve(listener, app).await.expect("hook server");
                }),
            ),
            Some(config) => {
                let listener = TlsListener {
                    tcp: listener,
                    acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
                    failed_handshakes: failed_handshakes.clone(),
                };
                (
                    "https",
                    tokio::spawn(async move {
                        axum::serve(listener, app).await.expect("hook server");
                    }),
                )
            }
        };
        RecordingHook {
            rec,
            addr,
            url: format!("{scheme}://{addr}/hook"),
            failed_handshakes,
            task,
        }
    }
}

/// A hook server on 127.0.0.1 that records every call; stops serving on drop.
pub struct RecordingHook {
    rec: Shared,
    /// Its address.
    pub addr: SocketAddr,
    /// `http://<addr>/hook` (`https://` with [`HookBuilder::tls`]), the URL for
    /// `spec.workers[].hook.url`.
    pub url: String,
    failed_handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingHook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RecordingHook {
    /// Options: delay, default reply, fencing checks, TLS.
    pub fn builder() -> HookBuilder {
        HookBuilder::default()
    }

    /// A hook answering `200` at once to every call.
    pub async fn start() -> RecordingHook {
        HookBuilder::default().start().await
    }

    /// From now on, unscripted calls are answered `status` with `body`.
    pub fn set_default_reply(&self, status: u16, body: &str) {
        lock(&self.rec).default_reply = Some(reply(status, body));
    }

    /// TLS handshakes that failed so far (with [`HookBuilder::tls`]).
    pub fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(Ordering::SeqCst)
    }

    /// Every later call takes `delay` unless scripted otherwise.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.rec).delay = delay;
    }

    /// Forgets every call, in-flight count, peak and fencing observation so far (the scripts,
    /// the delay and the default reply stay). Calls in flight now are answered as usual but no
    /// longer counted: [`RecordingHook::peak`] and [`RecordingHook::answered_since`] see only
    /// calls that arrive afterwards.
    pub fn reset(&self) {
        let mut r = lock(&self.rec);
        r.epoch += 1;
        r.calls.clear();
        r.per_manager.clear();
        r.per_object.clear();
        r.global = Counts::default();
        r.max_token.clear();
        r.owner.clear();
        r.violations.clear();
    }

    /// The next calls for object `name` get `replies`, in order; then the default reply.
    pub fn script(&self, name: &str, replies: Vec<Reply>) {
        lock(&self.rec).script.insert(name.into(), replies.into());
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.rec).calls.clone()
    }

    /// How many calls arrived so far.
    pub fn count(&self) -> usize {
        lock(&self.rec).calls.len()
    }

    /// The calls of ManagerConfig `manager`.
    pub fn calls_of(&self, manager: &str) -> Vec<Call> {
        lock(&self.rec)
            .calls
            .iter()
            .filter(|c| c.manager == manager)
            .cloned()
            .collect()
    }

    /// How many calls of ManagerConfig `manager` the hook answered at or after `t` (calls the
    /// caller gave up on do not count).
    pub fn answered_since(&self, manager: &str, t: Instant) -> usize {
        lock(&self.rec)
            .calls
            .iter()
            .filter(|c| c.manager == manager && c.answered && c.end.is_some_and(|e| e >= t))
            .count()
    }

    /// The calls for object `name`.
    pub fn calls_for(&self, name: &str) -> Vec<Call> {
        lock(&self.rec)
            .calls
            .iter()
            .filter(|c| c.object == name)
            .cloned()
            .collect()
    }

    /// The latest call per manager.
    pub fn last_per_manager(&self) -> HashMap<String, Call> {
        let mut out = HashMap::new();
        for c in &lock(&self.rec).calls {
            out.insert(c.manager.clone(), c.clone());
        }
        out
    }

    /// The most calls of `manager` in flight at once (since [`RecordingHook::reset_peak`]).
    pub fn peak(&self, manager: &str) -> usize {
        lock(&self.rec)
            .per_manager
            .get(manager)
            .map_or(0, |c| c.peak)
    }

    /// Restarts `manager`'s peak from the calls in flight now.
    pub fn reset_peak(&self, manager: &str) {
        if let Some(c) = lock(&self.rec).per_manager.get_mut(manager) {
            c.peak = c.now;
        }
    }

    /// The most calls for object `name` in flight at once.
    pub fn peak_for_object(&self, name: &str) -> usize {
        lock(&self.rec).per_object.get(name).map_or(0, |c| c.peak)
    }

    /// The most calls in flight at once per object name.
    pub fn peaks_per_object(&self) -> HashMap<String, usize> {
        lock(&self.rec)
            .per_object
            .iter()
            .map(|(k, c)| (k.clone(), c.peak))
            .collect()
    }

    /// The most calls in flight at once, over all managers.
    pub fn peak_global(&self) -> usize {
        lock(&self.rec).global.peak
    }

    /// The fencing violations seen (with [`HookBuilder::fencing`]).
    pub fn violations(&self) -> Vec<String> {
        lock(&self.rec).violations.clone()
    }

    /// The highest fencing token seen per manager (with [`HookBuilder::fencing`]).
    pub fn max_tokens(&self) -> HashMap<String, i64> {
        lock(&self.rec).max_token.clone()
    }

    /// Panics listing the first fencing violations, if any.
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "{} fencing violations, first ones:\n{}",
            v.len(),
            v.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        );
    }

    /// Waits until `n` calls for object `name` arrived; returns them.
    pub async fn wait_calls_for(&self, name: &str, n: usize) -> Vec<Call> {
        wait_for(&format!("{n} hook calls for {name}"), TIMEOUT, || async {
            let c = self.calls_for(name);
            if c.len() >= n {
                Ok(c)
            } else {
                Err(format!("{} calls so far", c.len()))
            }
        })
        .await
        .unwrap()
    }

    /// Waits for any call that started after `after` and satisfies `pred`.
    pub async fn wait_call(
        &self,
        what: &str,
        after: Instant,
        pred: impl Fn(&Call) -> bool,
    ) -> Call {
        wait_for(what, TIMEOUT, || {
            let calls = self.calls();
            let found = calls.iter().find(|c| c.start > after && pred(c)).cloned();
            let summary = holders(&calls);
            async move { found.ok_or_else(|| format!("holders so far {summary:?}")) }
        })
        .await
        .unwrap()
    }

    /// Waits until `n` calls from `holder` started after `after`; returns them.
    pub async fn wait_calls_from(&self, holder: &str, n: usize, after: Instant) -> Vec<Call> {
        wait_for(&format!("{n} calls from {holder}"), TIMEOUT, || {
            let all = self.calls();
            let calls: Vec<Call> = all
                .iter()
                .filter(|c| c.start > after && c.holder == holder)
                .cloned()
                .collect();
            let summary = holders(&all);
            async move {
                if calls.len() >= n {
                    Ok(calls)
                } else {
                    Err(format!("{} so far; holders {summary:?}", calls.len()))
                }
            }
        })
        .await
        .unwrap()
    }

    /// Waits for a call of `manager` that started after `after` and satisfies `pred`.
    pub async fn wait_call_of(
        &self,
        what: &str,
        manager: &str,
        after: Instant,
        pred: impl Fn(&Call) -> bool,
    ) -> Call {
        wait_for(what, TIMEOUT, || async {
            self.calls_of(manager)
                .into_iter()
                .find(|c| c.start > after && pred(c))
                .ok_or_else(|| {
                    format!("{} calls of {manager} so far", self.calls_of(manager).len())
                })
        })
        .await
        .unwrap()
    }
}

/// The sequence of (holder, token) blocks in call order.
pub fn holders(calls: &[Call]) -> Vec<(String, i64)> {
    let mut sorted = calls.to_vec();
    sorted.sort_by_key(|c| c.start);
    let mut out: Vec<(String, i64)> = Vec::new();
    for c in sorted {
        if out
            .last()
            .is_none_or(|(h, t)| *h != c.holder || *t != c.token)
        {
            out.push((c.holder, c.token));
        }
    }
    out
}

/// Never two leaders at once: each holder's calls form one block in time — calls of different
/// holders never overlap, the fencing token never goes backwards, one token belongs to one
/// holder, and one holder calls from one source.
pub fn assert_one_holder_at_a_time(calls: &[Call]) {
    let mut sorted = calls.to_vec();
    sorted.sort_by_key(|c| c.start);
    for w in sorted.windows(2) {
        assert!(
            w[1].token >= w[0].token,
            "fencing token went backwards: {:?} then {:?}",
            (&w[0].holder, w[0].token),
            (&w[1].holder, w[1].token)
        );
    }
    let mut holder_source: HashMap<&str, &str> = HashMap::new();
    for c in &sorted {
        let s = holder_source.entry(&c.holder).or_insert(&c.source);
        assert_eq!(*s, c.source, "holder {} calls from two sources", c.holder);
    }
    let mut token_holder: HashMap<i64, &str> = HashMap::new();
    for c in &sorted {
        let h = token_holder.entry(c.token).or_insert(&c.holder);
        assert_eq!(
            *h, c.holder,
            "fencing token {} used by two holders",
            c.token
        );
    }
    let far = Instant::now() + Duration::from_secs(3600);
    for (i, a) in sorted.iter().enumerate() {
        for b in &sorted[i + 1..] {
            if a.holder != b.holder {
                let (a_end, b_end) = (a.end.unwrap_or(far), b.end.unwrap_or(far));
                assert!(
                    a_end <= b.start || b_end <= a.start,
                    "calls of two holders overlap in time: {a:?} and {b:?}"
                );
            }
        }
    }
}
