//! The Prometheus exporter the demos serve (`--metrics-addr`), scraped over real HTTP during
//! mutex contention and after it, checked against what the test did: on coord-mem, and on
//! etcd (`ETCD_ENDPOINTS`, with `--features etcd`) and PostgreSQL (`POSTGRES_URL`, with
//! `--features postgres`) when they are given; under `CI=true` a missing one fails.
//!
//! One test in this binary: the recorder is the process's global one.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coord::{Backend, DynBackend, Mutex, NameLabels, RangeRequest, Session};

#[path = "../examples/metrics/mod.rs"]
mod metrics;
#[path = "../examples/store/mod.rs"]
mod store;

const WAITERS: usize = 4;
const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_figures_match_the_lock_cycles_done() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    metrics::serve(addr).unwrap();

    contend(addr, "coord-mem", store::mem()).await;
    if let Some(args) = store::etcd_from_env() {
        contend(addr, "etcd", args).await;
    }
    if let Some(args) = store::postgres_from_env() {
        contend(addr, "postgres", args).await;
    }
}

/// One holder, `WAITERS` queued behind it (scraped while they wait), then every session locks
/// `ROUNDS` times more.
async fn contend(addr: SocketAddr, what: &str, args: store::StoreArgs) {
    let (backend, _) = store::connect(&args).await.unwrap();
    let name = format!("metrics-http/{what}/{:08x}", rand::random::<u32>());
    let session = || async {
        Session::builder(backend.clone())
            .with_ttl(10)
            .with_name_labels(NameLabels::Full)
            .build()
            .await
            .unwrap()
    };
    let labels = [("primitive", "mutex"), ("name", name.as_str())];
    let holder = session().await;
    let guard = Mutex::new(&holder, &name).unwrap().lock().await.unwrap();

    let mut waiters = Vec::new();
    for _ in 0..WAITERS {
        let s = session().await;
        let mutex = Mutex::new(&s, &name).unwrap();
        waiters.push(tokio::spawn(async move {
            for _ in 0..=ROUNDS {
                mutex.lock().await?.unlock().await?;
            }
            s.close().await
        }));
    }
    queued(&backend, &name, WAITERS + 1).await;

    // During contention: one holder, one acquisition so far, nobody done waiting.
    let during = metrics::scrape(addr).await.unwrap();
    assert_eq!(during.value("coord_held", &labels), 1.0, "{what}");
    assert_eq!(
        during.value("coord_acquisitions_total", &labels),
        1.0,
        "{what}"
    );
    assert_eq!(
        during.value("coord_acquire_wait_seconds_count", &labels),
        1.0,
        "{what}"
    );

    guard.unlock().await.unwrap();
    for waiter in waiters {
        waiter.await.unwrap().unwrap();
    }
    holder.close().await.unwrap();

    let cycles = (1 + WAITERS * (ROUNDS + 1)) as f64;
    let after = metrics::scrape(addr).await.unwrap();
    for series in [
        "coord_acquisitions_total",
        "coord_acquire_wait_seconds_count",
        "coord_hold_seconds_count",
        "coord_queue_length_count",
    ] {
        assert_eq!(after.value(series, &labels), cycles, "{what}: {series}");
    }
    assert_eq!(after.value("coord_held", &labels), 0.0, "{what}");
    assert!(
        after.value("coord_queue_length_sum", &labels) >= WAITERS as f64,
        "{what}: each waiter saw the holder ahead"
    );
    assert_eq!(
        after.value("coord_acquire_cancellations_total", &labels),
        0.0,
        "{what}"
    );
    assert!(
        after.value("coord_backend_call_seconds_count", &[("op", "txn")]) >= 2.0 * cycles,
        "{what}: a txn to lock and one to unlock per cycle"
    );
    eprintln!("{what}: {cycles} lock cycles, scraped figures match");
}

/// Waits until `n` contenders' keys are under `name/`.
async fn queued(backend: &DynBackend, name: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = backend
            .range(RangeRequest::prefix(format!("{name}/")).with_count_only())
            .await
            .unwrap()
            .count;
        if keys as usize >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{n} contenders never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
