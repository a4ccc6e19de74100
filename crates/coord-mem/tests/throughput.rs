//! Throughput of the lock workload, in release mode:
//! `cargo test --release -p coord-mem --test throughput -- --ignored --nocapture`.
//! Reports a number; asserts nothing about speed.

mod common;

use std::time::Instant;

use coord_mem::MemStore;

#[test]
#[ignore = "a measurement: run in release mode with --ignored --nocapture"]
fn lock_unlock_throughput() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = MemStore::new();
        let mut session = common::Session::new(&store).await;
        for _ in 0..10_000 {
            session.cycle().await;
        }
        let n = 1_000_000;
        let start = Instant::now();
        for _ in 0..n {
            session.cycle().await;
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(session.events, 10_000 + n);
        let stats = store.stats();
        println!(
            "{n} lock+unlock cycles in {secs:.3} s: {:.0} cycles/s ({:.0} txns/s), {} txns, history {}",
            n as f64 / secs,
            2.0 * n as f64 / secs,
            stats.txn,
            store.history_len(),
        );
    });
}
