//! No fault injected: 8 clients contend on a mutex and on a read-write lock, and the history
//! checker finds no overlap, tokens rising in acquisition order, and no lost lock — on etcd and
//! on coord-mem.

use std::sync::Arc;
use std::time::{Duration, Instant};

use coord_chaos::history::{Access, Entry, Faults, History};
use coord_chaos::support::{connect, unique_prefix, wait_leases_gone, wait_prefix_empty};
use coord_core::{Backend, DynBackend, Mutex, RwLock, Session};
use coord_mem::MemStore;
use etcd_harness::endpoints_for_tests;
use rand::Rng;

const CLIENTS: usize = 8;
const ROUNDS: usize = 25;

/// The most shared holders at once (to show that readers really shared).
fn max_concurrent_shared(entries: &[Entry]) -> usize {
    let mut events: Vec<(Duration, i32)> = Vec::new();
    for e in entries.iter().filter(|e| e.access == Access::Shared) {
        events.push((e.acquired, 1));
        events.push((e.released.unwrap_or(Duration::MAX), -1));
    }
    events.sort();
    let (mut now, mut max) = (0, 0);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    max as usize
}

async fn contend(backends: Vec<DynBackend>, root: &str, label: &str) {
    let mutex_name = format!("{root}mutex");
    let rw_name = format!("{root}rwlock");
    let mutex_history = Arc::new(History::new());
    let rw_history = Arc::new(History::new());
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut leases = Vec::new();
    for (id, backend) in backends.iter().enumerate() {
        let session = Session::new(backend.clone(), 10).await.unwrap();
        leases.push(session.lease());
        let mutex = Mutex::new(&session, &mutex_name).unwrap();
        let rw = RwLock::new(&session, &rw_name).unwrap();
        let (mh, rh) = (mutex_history.clone(), rw_history.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let g = mutex.lock_timeout(Duration::from_secs(30)).await.unwrap();
                let e = mh.acquired(format!("c{id}"), g.fencing_token(), Access::Exclusive);
                tokio::time::sleep(Duration::from_millis(1)).await;
                mh.releasing(e);
                g.unlock().await.unwrap();

                let write = rand::thread_rng().gen_ratio(1, 4);
                let (g, access) = if write {
                    (
                        rw.write_timeout(Duration::from_secs(30)).await.unwrap(),
                        Access::Exclusive,
                    )
                } else {
                    (
                        rw.read_timeout(Duration::from_secs(30)).await.unwrap(),
                        Access::Shared,
                    )
                };
                let e = rh.acquired(format!("c{id}"), g.fencing_token(), access);
                tokio::time::sleep(Duration::from_millis(2)).await;
                rh.releasing(e);
                g.unlock().await.unwrap();
            }
            session.close().await.unwrap();
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("contention ends")
            .unwrap();
    }
    let took = started.elapsed();
    let mutex_report = mutex_history.check(Faults::None);
    let rw_report = rw_history.check(Faults::None);
    let rw_entries = rw_history.entries();
    let writes = rw_entries
        .iter()
        .filter(|e| e.access == Access::Exclusive)
        .count();
    let readers_at_once = max_concurrent_shared(&rw_entries);
    eprintln!(
        "MEASURED no-fault exclusion on {label}: {} mutex + {} rwlock acquisitions ({writes} \
         writes, up to {readers_at_once} readers at once) by {CLIENTS} clients in {:.1} s; \
         mutex: {}; rwlock: {}",
        mutex_history.len(),
        rw_entries.len(),
        took.as_secs_f64(),
        mutex_report.to_string().lines().next().unwrap_or_default(),
        rw_report.to_string().lines().next().unwrap_or_default(),
    );
    assert_eq!(mutex_history.len(), CLIENTS * ROUNDS);
    assert!(mutex_report.is_ok(), "{mutex_report}");
    assert!(rw_report.is_ok(), "{rw_report}");
    assert!(writes > 0, "the write path ran");
    let admin = &backends[0];
    for name in [&mutex_name, &rw_name] {
        wait_prefix_empty(
            &**admin,
            format!("{name}/").as_bytes(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    wait_leases_gone(&**admin, &leases, Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fault_exclusion_on_etcd() {
    let Some(etcd) = endpoints_for_tests().await else {
        return;
    };
    let mut backends: Vec<DynBackend> = Vec::new();
    for _ in 0..CLIENTS {
        let b = connect(&etcd.endpoints(), Duration::from_secs(5))
            .await
            .unwrap();
        backends.push(Arc::new(b));
    }
    contend(backends, &unique_prefix("exclusion"), "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fault_exclusion_on_mem() {
    let store = MemStore::new();
    let backends: Vec<DynBackend> = (0..CLIENTS)
        .map(|_| Arc::new(store.clone()) as DynBackend)
        .collect();
    contend(backends, "", "coord-mem").await;
    assert!(store.lease_list().await.unwrap().is_empty());
}
