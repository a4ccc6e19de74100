//! Each metric of `coord::telemetry` fires on its event, on coord-mem, recorded by a
//! per-thread debugging recorder (each test has its own, on a current-thread runtime, so tests
//! do not see each other's figures).

use std::collections::HashMap;
use std::time::Duration;

use coord::mem::MemStore;
use coord::{
    Backend, CallKind, Election, Error, Mutex, NameLabels, RangeRequest, RwLock, Semaphore, Session,
};
use futures::StreamExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A debugging recorder installed on this thread for the test's life. Its snapshots reset what
/// they read, so this sums them: counters and gauges (a gauge's moves add up), histograms'
/// samples.
struct Recorded {
    snapshotter: Snapshotter,
    totals: HashMap<String, f64>,
    histograms: HashMap<String, Vec<f64>>,
    _guard: metrics::LocalRecorderGuard<'static>,
}

impl Recorded {
    fn install() -> Recorded {
        let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
        Recorded {
            snapshotter: recorder.snapshotter(),
            totals: HashMap::new(),
            histograms: HashMap::new(),
            _guard: metrics::set_default_local_recorder(recorder),
        }
    }

    /// Takes a snapshot into the sums; returns every series id, `name{k=v,...}` (labels
    /// sorted).
    fn update(&mut self) -> Vec<String> {
        let mut ids = Vec::new();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let id = format!("{}{{{}}}", key.name(), labels.join(","));
            match value {
                DebugValue::Counter(n) => *self.totals.entry(id.clone()).or_default() += n as f64,
                DebugValue::Gauge(v) => *self.totals.entry(id.clone()).or_default() += *v,
                DebugValue::Histogram(samples) => self
                    .histograms
                    .entry(id.clone())
                    .or_default()
                    .extend(samples.iter().map(|s| s.into_inner())),
            }
            ids.push(id);
        }
        ids
    }

    fn counter(&mut self, id: &str) -> u64 {
        self.update();
        self.totals.get(id).copied().unwrap_or_default() as u64
    }

    fn gauge(&mut self, id: &str) -> f64 {
        self.update();
        self.totals.get(id).copied().unwrap_or_default()
    }

    fn samples(&mut self, id: &str) -> Vec<f64> {
        self.update();
        self.histograms.get(id).cloned().unwrap_or_default()
    }
}

async fn session(store: &MemStore) -> Session {
    Session::new(store.clone(), 10).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn acquisitions_wait_hold_and_queue_length() {
    let mut m = Recorded::install();
    let store = MemStore::new();
    let (a, b) = (session(&store).await, session(&store).await);
    let (ma, mb) = (
        Mutex::new(&a, "jobs").unwrap(),
        Mutex::new(&b, "jobs").unwrap(),
    );

    for _ in 0..3 {
        ma.lock().await.unwrap().unlock().await.unwrap();
    }
    let held = ma.lock().await.unwrap();
    assert_eq!(m.gauge("coord_held{primitive=mutex}"), 1.0);
    let waiter = tokio::spawn(async move { mb.lock().await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    held.unlock().await.unwrap();
    let second = waiter.await.unwrap().unwrap();
    assert_eq!(m.gauge("coord_held{primitive=mutex}"), 1.0);
    second.unlock().await.unwrap();

    assert_eq!(m.counter("coord_acquisitions_total{primitive=mutex}"), 5);
    assert_eq!(m.gauge("coord_held{primitive=mutex}"), 0.0);
    let waits = m.samples("coord_acquire_wait_seconds{primitive=mutex}");
    assert_eq!(waits.len(), 5);
    assert!(
        waits.iter().any(|w| *w >= 2.0),
        "the waiter waited 2 s: {waits:?}"
    );
    assert_eq!(m.samples("coord_hold_seconds{primitive=mutex}").len(), 5);
    let mut queue = m.samples("coord_queue_length{primitive=mutex}");
    queue.sort_by(f64::total_cmp);
    assert_eq!(
        queue,
        [0.0, 0.0, 0.0, 0.0, 1.0],
        "one acquire found one ahead"
    );
    assert_eq!(
        m.counter("coord_acquire_cancellations_total{primitive=mutex}"),
        0
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn timeouts_cancellations_and_failures_are_told_apart() {
    let mut m = Recorded::install();
    let store = MemStore::new();
    let (a, b) = (session(&store).await, session(&store).await);
    let (ma, mb) = (
        Mutex::new(&a, "jobs").unwrap(),
        Mutex::new(&b, "jobs").unwrap(),
    );
    let held = ma.lock().await.unwrap();

    let timed_out = mb.lock_timeout(Duration::from_secs(1)).await;
    assert!(matches!(timed_out, Err(Error::Timeout)));
    assert_eq!(
        m.counter("coord_acquire_timeouts_total{primitive=mutex}"),
        1
    );
    assert_eq!(
        m.counter("coord_acquire_cancellations_total{primitive=mutex}"),
        0
    );

    // The caller's own timeout drops the future: a cancellation, not a timeout.
    let cancelled = tokio::time::timeout(Duration::from_secs(1), mb.lock()).await;
    assert!(cancelled.is_err());
    assert_eq!(
        m.counter("coord_acquire_cancellations_total{primitive=mutex}"),
        1
    );
    assert_eq!(
        m.counter("coord_acquire_timeouts_total{primitive=mutex}"),
        1
    );

    assert!(matches!(mb.try_lock().await, Err(Error::Locked)));
    assert_eq!(
        m.counter("coord_acquire_failures_total{error=locked,primitive=mutex}"),
        1
    );
    assert_eq!(m.counter("coord_acquisitions_total{primitive=mutex}"), 1);
    held.unlock().await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn losses_are_counted_once_by_cause() {
    let mut m = Recorded::install();
    let store = MemStore::new();

    // Lease expired.
    let s = session(&store).await;
    let guard = Mutex::new(&s, "a").unwrap().lock().await.unwrap();
    store.faults().expire_lease(s.lease()).unwrap();
    assert!(matches!(guard.lost().await, Error::SessionExpired { .. }));
    assert!(guard.unlock().await.is_err());
    assert_eq!(
        m.counter("coord_losses_total{cause=lease_expired,primitive=mutex}"),
        1
    );

    // Key deleted by someone else.
    let s = session(&store).await;
    let guard = Mutex::new(&s, "b").unwrap().lock().await.unwrap();
    store
        .delete(coord::DeleteRequest::key(guard.key()))
        .await
        .unwrap();
    assert!(matches!(guard.lost().await, Error::NotHeld { .. }));
    drop(guard);
    assert_eq!(
        m.counter("coord_losses_total{cause=key_deleted,primitive=mutex}"),
        1
    );

    // Session closed under a holder, noticed when the guard is dropped.
    let guard = Mutex::new(&s, "c").unwrap().lock().await.unwrap();
    s.close().await.unwrap();
    drop(guard);
    assert_eq!(
        m.counter("coord_losses_total{cause=session_closed,primitive=mutex}"),
        1
    );

    // A plain release is no loss; every hold ended.
    let s = session(&store).await;
    Mutex::new(&s, "d")
        .unwrap()
        .lock()
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
    for cause in ["lease_expired", "key_deleted", "session_closed"] {
        let id = format!("coord_losses_total{{cause={cause},primitive=mutex}}");
        assert_eq!(m.counter(&id), 1, "{id}");
    }
    assert_eq!(m.gauge("coord_held{primitive=mutex}"), 0.0);
    assert_eq!(m.samples("coord_hold_seconds{primitive=mutex}").len(), 4);
    s.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rwlock_sides_count_apart() {
    let mut m = Recorded::install();
    let store = MemStore::new();
    let s = session(&store).await;
    let rw = RwLock::new(&s, "cfg").unwrap();
    let (r1, r2) = (rw.read().await.unwrap(), rw.read().await.unwrap());
    assert_eq!(m.gauge("coord_held{primitive=rwlock_read}"), 2.0);
    r1.unlock().await.unwrap();
    r2.unlock().await.unwrap();
    rw.write().await.unwrap().unlock().await.unwrap();
    assert_eq!(
        m.counter("coord_acquisitions_total{primitive=rwlock_read}"),
        2
    );
    assert_eq!(
        m.counter("coord_acquisitions_total{primitive=rwlock_write}"),
        1
    );
    assert_eq!(m.gauge("coord_held{primitive=rwlock_read}"), 0.0);
    s.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn leader_gauge_and_leader_changes() {
    let mut m = Recorded::install();
    let store = MemStore::new();
    let (a, b) = (session(&store).await, session(&store).await);
    let (ea, eb) = (
        Election::new(&a, "svc").unwrap(),
        Election::new(&b, "svc").unwrap(),
    );
    let mut leaders = ea.observe();
    assert!(leaders.next().await.unwrap().unwrap().leader.is_none());

    let lead_a = ea.campaign("a").await.unwrap();
    leaders.next().await.unwrap().unwrap();
    assert_eq!(m.gauge("coord_held{primitive=election}"), 1.0);
    let campaign_b = tokio::spawn(async move { eb.campaign("b").await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    lead_a.resign().await.unwrap();
    let lead_b = campaign_b.await.unwrap().unwrap();
    let seen = leaders.next().await.unwrap().unwrap();
    assert_eq!(seen.leader.unwrap().value, b"b");

    assert_eq!(m.counter("coord_election_leader_changes_total{}"), 2);
    assert_eq!(m.counter("coord_acquisitions_total{primitive=election}"), 2);
    assert_eq!(m.gauge("coord_held{primitive=election}"), 1.0);
    lead_b.resign().await.unwrap();
    assert_eq!(m.gauge("coord_held{primitive=election}"), 0.0);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn keep_alive_latency_and_failures() {
    let mut m = Recorded::install();
    let store = MemStore::new();
    let s = Session::new(store.clone(), 9).await.unwrap();
    // One renewal every TTL/3.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(m.samples("coord_session_keepalive_seconds{}").len(), 1);
    assert_eq!(
        m.counter("coord_session_keepalive_failures_total{error=unavailable}"),
        0
    );

    store.faults().block_keep_alives(s.lease(), true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(m.counter("coord_session_keepalive_failures_total{error=unavailable}") >= 1);
    assert_eq!(m.counter("coord_sessions_lost_total{}"), 0);
    // Blocked until the lease runs out: the session is lost.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(s.is_lost());
    assert_eq!(m.counter("coord_sessions_lost_total{}"), 1);
}

#[tokio::test(start_paused = true)]
async fn backend_calls_and_errors_by_op() {
    let mut m = Recorded::install();
    let store = MemStore::new();
    let s = session(&store).await;
    let mutex = Mutex::new(&s, "jobs").unwrap();
    store.reset_stats();
    for _ in 0..4 {
        mutex.lock().await.unwrap().unlock().await.unwrap();
    }
    let txns = store.stats().get(CallKind::Txn) as usize;
    assert_eq!(txns, 8, "one txn to lock, one to unlock");
    assert_eq!(m.samples("coord_backend_call_seconds{op=txn}").len(), txns);

    store.faults().fail_next_matching(CallKind::Range, 1);
    assert!(s.backend().range(RangeRequest::key("k")).await.is_err());
    assert_eq!(
        m.counter("coord_backend_errors_total{error=unavailable,op=range}"),
        1
    );
    s.close().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn name_labels_are_opt_in_and_can_be_grouped() {
    let mut m = Recorded::install();
    let store = MemStore::new();
    let off = session(&store).await;
    Mutex::new(&off, "jobs/1")
        .unwrap()
        .lock()
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
    let full = Session::builder(store.clone())
        .with_name_labels(NameLabels::Full)
        .build()
        .await
        .unwrap();
    Mutex::new(&full, "jobs/2")
        .unwrap()
        .lock()
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
    let grouped = Session::builder(store.clone())
        .with_name_labels(NameLabels::grouped(|name| {
            let name = String::from_utf8_lossy(name);
            name.split('/').next().unwrap_or_default().to_owned()
        }))
        .build()
        .await
        .unwrap();
    for job in ["jobs/3", "jobs/4"] {
        let guard = Mutex::new(&grouped, job).unwrap().lock().await.unwrap();
        guard.unlock().await.unwrap();
    }

    assert_eq!(m.counter("coord_acquisitions_total{primitive=mutex}"), 1);
    assert_eq!(
        m.counter("coord_acquisitions_total{name=jobs/2,primitive=mutex}"),
        1
    );
    assert_eq!(
        m.counter("coord_acquisitions_total{name=jobs,primitive=mutex}"),
        2
    );
    let series = m
        .update()
        .iter()
        .filter(|k| k.starts_with("coord_acquisitions_total"))
        .count();
    assert_eq!(series, 3, "no series per grouped name");
    for s in [off, full, grouped] {
        s.close().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn semaphore_permits_count_as_acquisitions_holds_and_timeouts() {
    let mut m = Recorded::install();
    let store = MemStore::new();
    let (a, b) = (session(&store).await, session(&store).await);
    let (sa, sb) = (
        Semaphore::new(&a, "encoders", 3).unwrap(),
        Semaphore::new(&b, "encoders", 3).unwrap(),
    );
    let two = sa.acquire(2).await.unwrap();
    let one = sb.acquire(1).await.unwrap();
    assert_eq!(m.gauge("coord_held{primitive=semaphore}"), 2.0);

    // Full: a timeout, a would-block failure, then a wait that ends with a release.
    let timed_out = sb.acquire_timeout(1, Duration::from_secs(1)).await;
    assert!(matches!(timed_out, Err(Error::Timeout)));
    assert!(matches!(sb.try_acquire(1).await, Err(Error::Locked)));
    let waiter = tokio::spawn(async move { sb.acquire(2).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    two.release().await.unwrap();
    let third = waiter.await.unwrap().unwrap();

    assert_eq!(
        m.counter("coord_acquisitions_total{primitive=semaphore}"),
        3
    );
    assert_eq!(
        m.counter("coord_acquire_timeouts_total{primitive=semaphore}"),
        1
    );
    assert_eq!(
        m.counter("coord_acquire_failures_total{error=locked,primitive=semaphore}"),
        1
    );
    assert_eq!(
        m.counter("coord_acquire_cancellations_total{primitive=semaphore}"),
        0
    );
    let waits = m.samples("coord_acquire_wait_seconds{primitive=semaphore}");
    assert!(waits.iter().any(|w| *w >= 2.0), "one waited 2 s: {waits:?}");
    let mut queue = m.samples("coord_queue_length{primitive=semaphore}");
    queue.sort_by(f64::total_cmp);
    assert_eq!(
        queue,
        [0.0, 0.0, 2.0],
        "the last one found two holders ahead"
    );
    assert_eq!(m.gauge("coord_held{primitive=semaphore}"), 2.0);
    one.release().await.unwrap();
    third.release().await.unwrap();
    assert_eq!(m.gauge("coord_held{primitive=semaphore}"), 0.0);
    assert_eq!(
        m.samples("coord_hold_seconds{primitive=semaphore}").len(),
        3
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}
