//! An in-memory Lease store with injected faults, for unit tests of the election and the
//! runtime (the real store is `kube_store`, exercised by the integration tests).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::sleep;

use super::lease::{LeaseRecord, LeaseStore, StoreError};

/// The shared in-memory "API server" for one Lease.
pub struct MemLease {
    state: Mutex<(Option<LeaseRecord>, u64)>,
    events: watch::Sender<Option<LeaseRecord>>,
}

impl MemLease {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((None, 0)),
            events: watch::channel(None).0,
        })
    }

    pub fn current(&self) -> Option<LeaseRecord> {
        self.state.lock().unwrap().0.clone()
    }

    /// Writes a record as a foreign client would (kubectl, client-go).
    pub fn put(&self, mut rec: LeaseRecord) {
        let mut s = self.state.lock().unwrap();
        s.1 += 1;
        rec.resource_version = Some(s.1.to_string());
        s.0 = Some(rec.clone());
        self.events.send_replace(Some(rec));
    }

    pub fn delete(&self) {
        let mut s = self.state.lock().unwrap();
        s.1 += 1;
        s.0 = None;
        self.events.send_replace(None);
    }
}

#[derive(Default, Clone)]
pub struct Faults {
    /// Probability that a call fails before reaching the store.
    pub fail: f64,
    /// Probability that a write is applied but its answer is lost (the caller times out).
    pub lost_answer: f64,
    /// Max latency added before a call reaches the store.
    pub max_latency: Duration,
    /// Every call hangs (a partitioned or paused client).
    pub hang: bool,
}

/// One client's view of the store, with faults.
pub struct FaultyStore {
    lease: Arc<MemLease>,
    faults: Arc<Mutex<Faults>>,
    rng: Mutex<StdRng>,
    watch: bool,
    /// Calls made through this client (get, create, update).
    pub calls: std::sync::atomic::AtomicUsize,
}

impl FaultyStore {
    pub fn new(lease: &Arc<MemLease>, seed: u64) -> (Arc<Self>, Arc<Mutex<Faults>>) {
        let faults = Arc::new(Mutex::new(Faults::default()));
        (
            Arc::new(Self {
                lease: lease.clone(),
                faults: faults.clone(),
                rng: Mutex::new(StdRng::seed_from_u64(seed)),
                watch: true,
                calls: std::sync::atomic::AtomicUsize::new(0),
            }),
            faults,
        )
    }

    async fn before(&self) -> Result<bool, StoreError> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f = self.faults.lock().unwrap().clone();
        if f.hang {
            std::future::pending::<()>().await;
        }
        let (fail, lat, lost) = {
            let mut r = self.rng.lock().unwrap();
            let fail = r.random_bool(f.fail);
            let lat = if f.max_latency.is_zero() {
                Duration::ZERO
            } else {
                f.max_latency.mul_f64(r.random_range(0.0..1.0))
            };
            (fail, lat, r.random_bool(f.lost_answer))
        };
        if !lat.is_zero() {
            sleep(lat).await;
        }
        if fail {
            return Err(StoreError::Other("injected failure".into()));
        }
        Ok(lost)
    }
}

impl LeaseStore for FaultyStore {
    async fn get(&self) -> Result<LeaseRecord, StoreError> {
        self.before().await?;
        self.lease.current().ok_or(StoreError::NotFound)
    }

    async fn create(&self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        let lost = self.before().await?;
        let rec = {
            let mut s = self.lease.state.lock().unwrap();
            if s.0.is_some() {
                return Err(StoreError::AlreadyExists);
            }
            s.1 += 1;
            let mut rec = record.clone();
            rec.resource_version = Some(s.1.to_string());
            s.0 = Some(rec.clone());
            rec
        };
        self.lease.events.send_replace(Some(rec.clone()));
        if lost {
            std::future::pending::<()>().await;
        }
        Ok(rec)
    }

    async fn update(&self, record: &LeaseRecord) -> Result<LeaseRecord, StoreError> {
        let lost = self.before().await?;
        let rec = {
            let mut s = self.lease.state.lock().unwrap();
            match &s.0 {
                None => return Err(StoreError::NotFound),
                Some(cur) if cur.resource_version != record.resource_version => {
                    return Err(StoreError::Conflict);
                }
                Some(_) => {}
            }
            s.1 += 1;
            let mut rec = record.clone();
            rec.resource_version = Some(s.1.to_string());
            s.0 = Some(rec.clone());
            rec
        };
        self.lease.events.send_replace(Some(rec.clone()));
        if lost {
            std::future::pending::<()>().await;
        }
        Ok(rec)
    }

    fn subscribe(&self) -> Option<watch::Receiver<Option<LeaseRecord>>> {
        self.watch.then(|| self.lease.events.subscribe())
    }
}
