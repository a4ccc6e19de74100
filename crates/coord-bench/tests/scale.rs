//! The scale scenarios of issue 11 run and keep their promises: an election with many
//! candidates and observers gets a new leader, and tells every observer, within TTL + 1 s of
//! the crashed leader's last renewal, leaving no key behind; idle sessions stay alive.
//!
//! On coord-mem always; on etcd (`ETCD_ENDPOINTS`, or one started for the test) with the
//! issue's 1,000 candidates and 100 observers. The floor of the contended sweep
//! (`mutex_write_floor_wN`) runs on both and leaves no key behind.

use std::time::Duration;

use coord_bench::scenarios::{Bench, Target};
use coord_core::Backend;
use coord_mem::MemStore;

fn bench(target: Target, sessions: usize, observers: usize) -> Bench {
    Bench {
        target,
        prefix: format!("/scale-test/{:x}/", rand::random::<u32>()),
        iters: 0,
        workers: 1,
        ttl: 10,
        crash_ttl: 2,
        crash_rounds: 2,
        releases: 0,
        memory_cycles: 0,
        dump: None,
        sessions,
        observers,
        idle: Duration::from_secs(1),
    }
}

async fn check_election(bench: Bench) {
    let result = tokio::time::timeout(Duration::from_secs(120), bench.run("election_candidates"))
        .await
        .expect("finished in time")
        .expect("the scenario ran");
    let extra = &result.extra;
    eprintln!("{}", serde_json::to_string(&result).unwrap());
    assert_eq!(result.ops, 2, "two leader changes: {extra}");
    assert_eq!(extra["within_limit"], true, "TTL + 1 s: {extra}");
    assert_eq!(extra["keys_left_after_close"], 0, "{extra}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_with_many_candidates_on_mem() {
    check_election(bench(Target::Mem(MemStore::new()), 300, 30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_stay_alive_on_mem() {
    let result = bench(Target::Mem(MemStore::new()), 300, 0)
        .run("idle_sessions")
        .await
        .expect("the scenario ran");
    let extra = &result.extra;
    assert_eq!(extra["sessions_lost"], 0, "{extra}");
    assert_eq!(extra["sessions"], 300, "{extra}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_with_a_thousand_candidates_on_etcd() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    check_election(bench(Target::Etcd(etcd.endpoints()), 1_000, 100)).await;
}

/// The floor of the contended sweep (`mutex_write_floor_wN`) does every acquisition it is
/// asked for, with its two writes each, and leaves no key behind.
async fn check_write_floor(target: Target, store: coord_core::DynBackend) {
    let mut bench = bench(target, 0, 0);
    bench.iters = 400;
    bench.workers = 8;
    let result = tokio::time::timeout(Duration::from_secs(60), bench.run("mutex_write_floor"))
        .await
        .expect("finished in time")
        .expect("the scenario ran");
    assert_eq!(result.scenario, "mutex_write_floor_w8");
    assert_eq!(result.ops, 400);
    let left = store
        .range(coord_core::RangeRequest::prefix(bench.prefix.clone()).with_count_only())
        .await
        .unwrap()
        .count;
    assert_eq!(left, 0, "keys left under {}", bench.prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_floor_runs_and_leaves_nothing_on_mem() {
    let store = MemStore::new();
    check_write_floor(Target::Mem(store.clone()), std::sync::Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_floor_runs_and_leaves_nothing_on_etcd() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    let store = coord_etcd::EtcdConfig::new(etcd.endpoints())
        .connect()
        .await
        .expect("connect");
    check_write_floor(Target::Etcd(etcd.endpoints()), std::sync::Arc::new(store)).await;
}
