//! The election state machine against tokio's paused clock and an in-memory Lease store with
//! injected faults.

use super::*;
use crate::manager::memstore::{Faults, FaultyStore, MemLease};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::sync::Mutex;

fn cfg(identity: &str) -> ElectorConfig {
    ElectorConfig {
        identity: identity.into(),
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
        release_on_cancel: true,
        wall_clock: system_wall_clock(),
    }
}

struct Running {
    roles: watch::Receiver<Role>,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), ElectionError>>,
}

fn spawn(store: Arc<FaultyStore>, c: ElectorConfig) -> Running {
    let e = Elector::new(store, c, ElectionTelemetry::default());
    let roles = e.roles();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(e.run(stop.clone()));
    Running {
        roles,
        stop,
        handle,
    }
}

async fn until_leading(r: &mut Running) -> Fence {
    loop {
        if let Some(f) = r.roles.borrow_and_update().fence() {
            return f.clone();
        }
        r.roles.changed().await.expect("elector alive");
    }
}

async fn until_candidate(r: &mut Running) {
    loop {
        if r.roles.borrow_and_update().fence().is_none() {
            return;
        }
        r.roles.changed().await.expect("elector alive");
    }
}

fn foreign(holder: &str, secs: i32, renew: Timestamp, transitions: i32) -> LeaseRecord {
    LeaseRecord {
        holder: Some(holder.into()),
        lease_duration_seconds: Some(secs),
        acquire_time: Some(renew),
        renew_time: Some(renew),
        lease_transitions: Some(transitions),
        resource_version: None,
    }
}

#[tokio::test(start_paused = true)]
async fn creates_and_leads_when_no_lease() {
    let lease = MemLease::new();
    let (store, _) = FaultyStore::new(&lease, 1);
    let mut a = spawn(store, cfg("a"));
    let f = until_leading(&mut a).await;
    assert_eq!(f.token(), 0);
    let rec = lease.current().unwrap();
    assert_eq!(rec.holder.as_deref(), Some("a"));
    assert_eq!(rec.lease_duration_seconds, Some(15));
    // Renewals keep the term and the acquire time.
    let acquired = rec.acquire_time;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let rec2 = lease.current().unwrap();
    assert_eq!(rec2.acquire_time, acquired);
    assert!(rec2.renew_time > rec.renew_time);
    assert!(f.is_valid());
    assert_eq!(rec2.lease_transitions, Some(0));
}

#[tokio::test(start_paused = true)]
async fn foreign_holder_respected_until_expiry_by_observation() {
    let lease = MemLease::new();
    // Written with a renewTime an hour ago on the wall clock: a wall-clock elector would take
    // over at once. We must wait the full advertised duration from our first observation.
    let stale = Timestamp::now() - std::time::Duration::from_secs(3600);
    lease.put(foreign("client-go-pod", 20, stale, 3));
    let (store, _) = FaultyStore::new(&lease, 2);
    let start = Instant::now();
    let mut a = spawn(store, cfg("a"));
    let f = until_leading(&mut a).await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(20),
        "took over after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(20_100),
        "took over late: {waited:?}"
    );
    assert_eq!(
        f.token(),
        4,
        "leaseTransitions incremented on change of holder"
    );
}

#[tokio::test(start_paused = true)]
async fn skewed_wall_clock_changes_nothing() {
    for skew in [-600i64, 600] {
        let lease = MemLease::new();
        lease.put(foreign("other", 10, Timestamp::now(), 0));
        let (store, _) = FaultyStore::new(&lease, 3);
        let mut c = cfg("a");
        c.wall_clock =
            Arc::new(move || Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(skew));
        let start = Instant::now();
        let mut a = spawn(store, c);
        until_leading(&mut a).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_millis(10_100),
            "skew {skew}: {waited:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn renewal_by_the_holder_postpones_takeover() {
    let lease = MemLease::new();
    lease.put(foreign("other", 10, Timestamp::now(), 0));
    let (store, _) = FaultyStore::new(&lease, 4);
    let mut a = spawn(store, cfg("a"));
    // The foreign holder renews every 2s for 30s.
    for _ in 0..15 {
        sleep(Duration::from_secs(2)).await;
        assert!(a.roles.borrow().fence().is_none(), "took over a live lease");
        let mut rec = lease.current().unwrap();
        rec.renew_time = Some(Timestamp::now());
        lease.put(rec);
    }
    let t = Instant::now();
    until_leading(&mut a).await;
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_millis(10_100),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn released_lease_is_taken_at_once() {
    let lease = MemLease::new();
    let (sa, _) = FaultyStore::new(&lease, 5);
    let (sb, _) = FaultyStore::new(&lease, 6);
    let mut a = spawn(sa, cfg("a"));
    let fa = until_leading(&mut a).await;
    let mut b = spawn(sb, cfg("b"));
    sleep(Duration::from_secs(5)).await;
    assert!(b.roles.borrow().fence().is_none());
    let t = Instant::now();
    a.stop.cancel();
    a.handle.await.unwrap().unwrap();
    assert!(!fa.is_valid(), "released term is revoked");
    let fb = until_leading(&mut b).await;
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "takeover took {:?}",
        t.elapsed()
    );
    assert_eq!(fb.token(), fa.token() + 1);
}

#[tokio::test(start_paused = true)]
async fn release_does_not_clear_a_successors_lease() {
    let lease = MemLease::new();
    let (sa, faults) = FaultyStore::new(&lease, 7);
    let mut a = spawn(sa, cfg("a"));
    until_leading(&mut a).await;
    // a is partitioned; b takes the lease by hand (as if it had expired).
    faults.lock().unwrap().hang = true;
    let mut rec = lease.current().unwrap();
    rec.holder = Some("b".into());
    rec.lease_transitions = Some(1);
    lease.put(rec);
    until_candidate(&mut a).await;
    faults.lock().unwrap().hang = false;
    a.stop.cancel();
    a.handle.await.unwrap().unwrap();
    assert_eq!(lease.current().unwrap().holder.as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn failing_renewals_step_down_at_renew_deadline() {
    let lease = MemLease::new();
    let (sa, faults) = FaultyStore::new(&lease, 8);
    let mut a = spawn(sa, cfg("a"));
    let f = until_leading(&mut a).await;
    let last_ok = Instant::now();
    faults.lock().unwrap().fail = 1.0;
    until_candidate(&mut a).await;
    let stepped = last_ok.elapsed();
    assert!(
        stepped <= Duration::from_secs(10),
        "stepped down after {stepped:?}"
    );
    assert!(!f.is_valid());
    // It keeps campaigning: when the store heals it leads again, with a new token.
    faults.lock().unwrap().fail = 0.0;
    let f2 = until_leading(&mut a).await;
    assert!(f2.token() > f.token());
}

#[tokio::test(start_paused = true)]
async fn hung_store_cannot_extend_the_fence() {
    // A leader whose calls hang (or a paused process) is fenced by the clock alone.
    let lease = MemLease::new();
    let (sa, faults) = FaultyStore::new(&lease, 9);
    let mut a = spawn(sa, cfg("a"));
    let f = until_leading(&mut a).await;
    faults.lock().unwrap().hang = true;
    let deadline = f.deadline();
    tokio::time::sleep_until(deadline).await;
    assert!(
        !f.is_valid(),
        "fence must expire on the clock at renewDeadline"
    );
    until_candidate(&mut a).await;
}

#[tokio::test(start_paused = true)]
async fn deleted_or_stolen_lease_ends_the_term_and_campaigns_again() {
    let lease = MemLease::new();
    let (sa, _) = FaultyStore::new(&lease, 10);
    let mut a = spawn(sa, cfg("a"));
    let f = until_leading(&mut a).await;
    lease.delete();
    until_candidate(&mut a).await;
    assert!(!f.is_valid());
    let f2 = until_leading(&mut a).await;
    assert!(f2.token() >= f.token());
    // Stolen by hand.
    let mut rec = lease.current().unwrap();
    rec.holder = Some("thief".into());
    rec.lease_transitions = Some(rec.lease_transitions.unwrap_or(0) + 1);
    lease.put(rec);
    until_candidate(&mut a).await;
    assert!(!f2.is_valid());
}

/// A deleted Lease is not a released one: a candidate that saw another holder waits for that
/// holder's lease to expire before re-creating it (the holder may still act until its fence
/// expires), and the re-created Lease carries a higher fencing token than any before.
#[tokio::test(start_paused = true)]
async fn deleted_lease_is_recreated_with_a_higher_token_never_beside_a_live_holder() {
    let lease = MemLease::new();
    let (sa, _) = FaultyStore::new(&lease, 14);
    let (sb, _) = FaultyStore::new(&lease, 15);
    let mut a = spawn(sa, cfg("a"));
    let fa = until_leading(&mut a).await;
    let b = spawn(sb, cfg("b"));
    sleep(Duration::from_secs(5)).await;
    lease.delete();
    // Sample every 10 ms: never two valid fences; b does not lead while a's lease could live.
    let mut tokens = vec![fa.token()];
    for _ in 0..2_000 {
        sleep(Duration::from_millis(10)).await;
        let fences: Vec<Fence> = [&a, &b]
            .iter()
            .filter_map(|r| r.roles.borrow().fence().cloned())
            .filter(Fence::is_valid)
            .collect();
        assert!(fences.len() <= 1, "two leaders after the Lease was deleted");
        if let Some(f) = fences.first()
            && tokens.last() != Some(&f.token())
        {
            tokens.push(f.token());
        }
    }
    assert!(
        tokens.windows(2).all(|w| w[1] > w[0]),
        "fencing tokens went back after the deletion: {tokens:?}"
    );
    assert!(tokens.len() >= 2, "nobody re-acquired the deleted lease");
    // The old holder (whose term the deletion ended) re-creates it after its retry period.
    assert!(a.roles.borrow().fence().is_some_and(Fence::is_valid));
    assert_eq!(
        lease.current().and_then(|r| r.lease_transitions),
        Some(i32::try_from(fa.token()).unwrap() + 1)
    );
}

/// Release survives a transient API failure (an overloaded API server): it retries until
/// renewDeadline instead of leaving the lease held on the first failed call.
#[tokio::test(start_paused = true)]
async fn release_retries_transient_failures() {
    let lease = MemLease::new();
    let (sa, faults) = FaultyStore::new(&lease, 16);
    let mut a = spawn(sa, cfg("a"));
    until_leading(&mut a).await;
    faults.lock().unwrap().hang = true;
    a.stop.cancel();
    // The first release calls hang (and time out); then the API server recovers.
    sleep(Duration::from_secs(6)).await;
    faults.lock().unwrap().hang = false;
    a.handle.await.unwrap().unwrap();
    assert_eq!(lease.current().and_then(|r| r.holder), Some(String::new()));
}

/// An acquisition that was applied but never answered (timeout under load) leaves a lease
/// that names us although we never led; stopping must still clear it, or a deleted config
/// would leave its Lease held forever.
#[tokio::test(start_paused = true)]
async fn stopping_after_an_unanswered_acquisition_releases_the_lease() {
    let lease = MemLease::new();
    lease.put(LeaseRecord {
        holder: Some(String::new()),
        ..LeaseRecord::default()
    });
    let (sa, faults) = FaultyStore::new(&lease, 17);
    faults.lock().unwrap().lost_answer = 1.0;
    let a = spawn(sa, cfg("a"));
    sleep(Duration::from_secs(7)).await;
    assert_eq!(lease.current().and_then(|r| r.holder), Some("a".into()));
    assert!(a.roles.borrow().fence().is_none(), "a never saw an answer");
    a.stop.cancel();
    a.handle.await.unwrap().unwrap();
    assert_eq!(lease.current().and_then(|r| r.holder), Some(String::new()));
}

#[tokio::test(start_paused = true)]
async fn absurd_advertised_duration_is_capped() {
    let lease = MemLease::new();
    lease.put(foreign("squatter", i32::MAX, Timestamp::now(), 0));
    let (sa, _) = FaultyStore::new(&lease, 11);
    let start = Instant::now();
    let mut a = spawn(sa, cfg("a"));
    until_leading(&mut a).await;
    assert!(start.elapsed() >= MAX_ADVERTISED_LEASE);
    assert!(start.elapsed() < MAX_ADVERTISED_LEASE + Duration::from_secs(1));
}

/// leaseDurationSeconds 0 or negative (the API server refuses them, but a record may come
/// from elsewhere) means expired: a candidate takes over at once.
#[tokio::test(start_paused = true)]
async fn nonpositive_advertised_duration_expires_at_once() {
    for secs in [0, -5] {
        let lease = MemLease::new();
        lease.put(foreign("squatter", secs, Timestamp::now(), 3));
        let (sa, _) = FaultyStore::new(&lease, 18);
        let start = Instant::now();
        let mut a = spawn(sa, cfg("a"));
        let f = until_leading(&mut a).await;
        assert!(start.elapsed() < Duration::from_millis(100), "{secs}");
        assert_eq!(f.token(), 4);
    }
}

#[tokio::test(start_paused = true)]
async fn forbidden_and_missing_namespace_are_fatal() {
    struct Refusing(StoreError);
    impl LeaseStore for Refusing {
        async fn get(&self) -> Result<LeaseRecord, StoreError> {
            Err(StoreError::NotFound)
        }
        async fn create(&self, _: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
            Err(self.0.clone())
        }
        async fn update(&self, _: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
            Err(self.0.clone())
        }
        fn subscribe(&self) -> Option<watch::Receiver<Option<LeaseRecord>>> {
            None
        }
    }
    for (err, want) in [
        (
            StoreError::Forbidden("no".into()),
            ElectionError::Forbidden("no".into()),
        ),
        (
            StoreError::NamespaceNotFound("x".into()),
            ElectionError::NamespaceNotFound("lease namespace \"x\" does not exist".into()),
        ),
    ] {
        let e = Elector::new(
            Arc::new(Refusing(err)),
            cfg("a"),
            ElectionTelemetry::default(),
        );
        let r = e.run(CancellationToken::new()).await;
        assert_eq!(r, Err(want));
    }
}

/// Drives several candidates with crashes, hangs, slow, failing and lost-answer store calls,
/// sampling every 10 ms of virtual time that no two candidates may act at once and that
/// fencing tokens never go backwards.
#[tokio::test(start_paused = true)]
async fn randomized_no_two_leaders_ever() {
    for seed in 0..40u64 {
        run_chaos(seed).await;
    }
}

async fn run_chaos(seed: u64) {
    let lease = MemLease::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = cfg("x");
    c.lease_duration = Duration::from_secs(3);
    c.renew_deadline = Duration::from_secs(2);
    c.retry_period = Duration::from_millis(500);
    let mut next_id = 0u32;
    let mut candidates: Vec<(Running, Arc<Mutex<Faults>>)> = Vec::new();
    let spawn_one = |rng: &mut StdRng, next_id: &mut u32| {
        *next_id += 1;
        let (store, faults) = FaultyStore::new(&lease, rng.random());
        {
            let mut f = faults.lock().unwrap();
            f.fail = rng.random_range(0.0..0.3);
            f.lost_answer = rng.random_range(0.0..0.1);
            f.max_latency = Duration::from_millis(rng.random_range(0..1500));
        }
        let mut cc = c.clone();
        cc.identity = format!("cand-{next_id}");
        (spawn(store, cc), faults)
    };
    for _ in 0..3 {
        candidates.push(spawn_one(&mut rng, &mut next_id));
    }
    let mut last_token: Option<i64> = None;
    let mut leader_samples = 0u32;
    for step in 0..6_000u32 {
        sleep(Duration::from_millis(10)).await;
        // Safety: at most one valid fence right now.
        let valid: Vec<Fence> = candidates
            .iter()
            .filter_map(|(r, _)| r.roles.borrow().fence().cloned())
            .filter(Fence::is_valid)
            .collect();
        assert!(
            valid.len() <= 1,
            "seed {seed} step {step}: {} candidates may act at once",
            valid.len()
        );
        if let Some(f) = valid.first() {
            leader_samples += 1;
            if let Some(t) = last_token {
                assert!(
                    f.token() >= t,
                    "seed {seed}: fencing token went back from {t} to {}",
                    f.token()
                );
            }
            last_token = Some(f.token());
        }
        // Chaos, about once a second.
        if step % 100 == 0 && step > 0 {
            let i = rng.random_range(0..candidates.len());
            match rng.random_range(0..4) {
                0 => {
                    // Crash: the process is gone, its fence dies with it.
                    let (r, _) = candidates.swap_remove(i);
                    r.handle.abort();
                    if let Some(f) = r.roles.borrow().fence() {
                        f.revoke();
                    }
                    candidates.push(spawn_one(&mut rng, &mut next_id));
                }
                1 => {
                    let f = candidates[i].1.clone();
                    let hang = !f.lock().unwrap().hang;
                    f.lock().unwrap().hang = hang;
                }
                2 => candidates[i].0.stop.cancel(),
                _ => {
                    let f = candidates[i].1.clone();
                    f.lock().unwrap().fail = rng.random_range(0.0..0.9);
                }
            }
            // Replace stopped candidates.
            for (r, _) in candidates.iter_mut() {
                if r.handle.is_finished() {
                    *r = spawn_one(&mut rng, &mut next_id).0;
                }
            }
        }
    }
    for (r, _) in &candidates {
        r.handle.abort();
    }
    assert!(leader_samples > 0, "seed {seed}: nobody ever led");
}

// The Lease budget and placement-aware takeover (docs/design.md §3.1, docs/placement.md).

fn spawn_with(store: Arc<FaultyStore>, c: ElectorConfig, standing: Standing) -> Running {
    let e = Elector::new(store, c, ElectionTelemetry::default()).with_standing(standing);
    let roles = e.roles();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(e.run(stop.clone()));
    Running {
        roles,
        stop,
        handle,
    }
}

fn calls(s: &FaultyStore) -> usize {
    s.calls.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn renew_interval_leaves_two_retries_before_the_deadline() {
    assert_eq!(cfg("a").renew_interval(), Duration::from_secs(6));
    let mut fast = cfg("a");
    fast.lease_duration = Duration::from_secs(3);
    fast.renew_deadline = Duration::from_secs(2);
    fast.retry_period = Duration::from_millis(500);
    assert_eq!(fast.renew_interval(), Duration::from_secs(1));
    let mut tight = cfg("a");
    tight.renew_deadline = Duration::from_millis(2500);
    tight.retry_period = Duration::from_secs(2);
    assert_eq!(
        tight.renew_interval(),
        Duration::from_secs(2),
        "never below retryPeriod"
    );
}

#[tokio::test(start_paused = true)]
async fn leader_renews_every_renew_interval_and_a_watching_follower_sends_nothing() {
    let lease = MemLease::new();
    let (sa, _) = FaultyStore::new(&lease, 11);
    let (sb, _) = FaultyStore::new(&lease, 12);
    let mut a = spawn(sa.clone(), cfg("a"));
    until_leading(&mut a).await;
    let b = spawn(sb.clone(), cfg("b"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (a0, b0) = (calls(&sa), calls(&sb));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (a_calls, b_calls) = (calls(&sa) - a0, calls(&sb) - b0);
    // One update per 6 s (client-go: one per retryPeriod, 30 in 60 s).
    assert!(
        (9..=11).contains(&a_calls),
        "leader made {a_calls} calls in 60 s"
    );
    assert_eq!(b_calls, 0, "a watching follower polls nothing");
    assert!(b.roles.borrow().fence().is_none());
}

#[tokio::test(start_paused = true)]
async fn the_preferred_replica_takes_a_released_lease_first_standbys_later() {
    let lease = MemLease::new();
    let (sa, _) = FaultyStore::new(&lease, 21);
    let (sp, _) = FaultyStore::new(&lease, 22);
    let (ss, _) = FaultyStore::new(&lease, 23);
    let mut a = spawn(sa, cfg("a"));
    until_leading(&mut a).await;
    let (_rank_p_tx, rank_p) = watch::channel(0u32);
    let (_rank_s_tx, rank_s) = watch::channel(1u32);
    let mut preferred = spawn_with(
        sp.clone(),
        cfg("p"),
        Standing {
            rank: Some(rank_p),
            release: None,
        },
    );
    let mut standby = spawn_with(
        ss,
        cfg("s"),
        Standing {
            rank: Some(rank_s),
            release: None,
        },
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let released = Instant::now();
    a.stop.cancel();
    let _ = a.handle.await;
    until_leading(&mut preferred).await;
    assert!(
        released.elapsed() < Duration::from_millis(100),
        "preferred took it at once"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(standby.roles.borrow_and_update().fence().is_none());

    // The preferred one goes without releasing: the successor (rank 1) takes the *expired*
    // lease at once; it does not wait a retry period on top.
    let renews_before = calls(&sp);
    while calls(&sp) == renews_before {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last_renew = Instant::now();
    preferred.handle.abort();
    until_leading(&mut standby).await;
    let took = last_renew.elapsed();
    assert!(
        took >= Duration::from_millis(14_980) && took < Duration::from_millis(15_200),
        "successor took over {took:?} after the last renewal (leaseDuration 15 s)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_standby_takes_a_released_lease_after_its_rank_in_retry_periods() {
    let lease = MemLease::new();
    let (sa, _) = FaultyStore::new(&lease, 31);
    let (ss, _) = FaultyStore::new(&lease, 32);
    let mut a = spawn(sa, cfg("a"));
    until_leading(&mut a).await;
    let (rank_tx, rank) = watch::channel(2u32);
    let mut standby = spawn_with(
        ss,
        cfg("s"),
        Standing {
            rank: Some(rank),
            release: None,
        },
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let released = Instant::now();
    a.stop.cancel();
    let _ = a.handle.await;
    until_leading(&mut standby).await;
    let took = released.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_millis(4_200),
        "rank 2 waits 2 retry periods: {took:?}"
    );
    drop(rank_tx);
}

#[tokio::test(start_paused = true)]
async fn a_better_rank_wakes_a_waiting_standby_at_once() {
    let lease = MemLease::new();
    let (sa, _) = FaultyStore::new(&lease, 41);
    let (ss, _) = FaultyStore::new(&lease, 42);
    let mut a = spawn(sa, cfg("a"));
    until_leading(&mut a).await;
    let (rank_tx, rank) = watch::channel(3u32);
    let mut standby = spawn_with(
        ss,
        cfg("s"),
        Standing {
            rank: Some(rank),
            release: None,
        },
    );
    a.stop.cancel();
    let _ = a.handle.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(standby.roles.borrow_and_update().fence().is_none());
    let promoted = Instant::now();
    rank_tx.send_replace(0);
    until_leading(&mut standby).await;
    assert!(promoted.elapsed() < Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn a_release_request_clears_the_lease_and_keeps_campaigning_as_a_standby() {
    let lease = MemLease::new();
    let (sa, _) = FaultyStore::new(&lease, 51);
    let (rank_tx, rank) = watch::channel(0u32);
    let (release_tx, release) = watch::channel(0u64);
    let mut a = spawn_with(
        sa,
        cfg("a"),
        Standing {
            rank: Some(rank),
            release: Some(release),
        },
    );
    let f = until_leading(&mut a).await;
    // The manager revokes the fence, drains, then asks for the release.
    rank_tx.send_replace(1);
    f.revoke();
    release_tx.send_modify(|n| *n += 1);
    until_candidate(&mut a).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rec = lease.current().unwrap();
    assert_eq!(rec.holder.as_deref(), Some(""), "released");
    // Nobody else came: as a rank-1 standby it takes the lease back after one retry period,
    // in a new term.
    let f2 = until_leading(&mut a).await;
    assert_eq!(f2.token(), f.token() + 1);
}
