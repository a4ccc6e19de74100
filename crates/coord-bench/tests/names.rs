//! A session that locks 10,000 distinct contended names in turn keeps resources for the names
//! in use only: open watches (its own count and the store's) and heap bytes stay flat. A watch
//! is cancelled as soon as its wait or hold ends: nothing lingers.
//!
//! The heap is counted by `coord_bench::alloc::CountingAlloc`, installed for this test binary.

use std::time::Duration;

use coord_bench::alloc::{live_bytes, CountingAlloc};
use coord_core::{Backend, Mutex, Session};
use coord_mem::MemStore;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const NAMES: usize = 10_000;

/// Locks `range` names with a worker that waits for `holder` each time; returns the most names
/// the worker watched at once.
async fn lock_in_turn(
    store: &MemStore,
    holder: &Session,
    worker: &Session,
    names: std::ops::Range<usize>,
) -> usize {
    let mut most = 0;
    for i in names {
        let name = format!("order/{i}");
        let held = Mutex::new(holder, &name).unwrap().lock().await.unwrap();
        let waiting = tokio::spawn({
            let m = Mutex::new(worker, &name).unwrap();
            async move { m.lock().await }
        });
        // Released once the worker is queued behind it: the worker really waits.
        while store
            .range(coord_core::RangeRequest::prefix(format!("{name}/")).with_count_only())
            .await
            .unwrap()
            .count
            < 2
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        held.unlock().await.unwrap();
        let guard = waiting.await.unwrap().unwrap();
        most = most.max(worker.watched_names());
        guard.unlock().await.unwrap();
        // A job's work takes time (on the paused clock: none of the test's).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Background tasks (releases) settle.
    tokio::time::sleep(Duration::from_millis(100)).await;
    most
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_names_in_turn_leave_nothing_behind() {
    coord_bench::alloc::enable();
    // Little history, so that the store's own memory is bounded too.
    let store = MemStore::builder().history_limit(64).build();
    let holder = Session::new(store.clone(), 60).await.unwrap();
    let worker = Session::new(store.clone(), 60).await.unwrap();

    lock_in_turn(&store, &holder, &worker, 0..1_000).await;
    let warm = live_bytes().expect("the counting allocator is installed");
    let most = lock_in_turn(&store, &holder, &worker, 1_000..NAMES).await;
    let end = live_bytes().unwrap();

    assert_eq!(
        worker.watched_names(),
        0,
        "the worker's watches once it holds nothing"
    );
    assert!(
        store.watch_count() <= 2,
        "watches open on the store: {}",
        store.watch_count()
    );
    let growth = end as i64 - warm as i64;
    eprintln!(
        "{NAMES} contended names in turn: heap {warm} bytes after 1,000, {end} after {NAMES} \
         ({growth:+} bytes); at most {most} names watched at once; watches \
         open at the end: session {}, store {}",
        worker.watched_names(),
        store.watch_count()
    );
    assert!(most <= 1, "{most} names watched at once");
    assert!(
        growth < 64 * 1024,
        "the heap grew by {growth} bytes over 9,000 more names"
    );
    worker.close().await.unwrap();
    holder.close().await.unwrap();
}
