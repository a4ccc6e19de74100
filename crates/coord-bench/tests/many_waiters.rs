//! 10,000 sessions wait on one mutex on coord-mem: a release costs the releaser its unlock and
//! the next waiter one read, every other waiter nothing, and is delivered as one watch event
//! (at most 2); the lock changes hands in bounded time however long the queue.
//!
//! Runs the bench's own `mem_calls_per_release_w10000` scenario and checks its figures.

use std::time::Duration;

use coord_bench::scenarios::{Bench, Target};
use coord_mem::MemStore;

#[tokio::test(flavor = "current_thread")]
async fn ten_thousand_waiters_on_one_mutex() {
    let bench = Bench {
        target: Target::Mem(MemStore::new()),
        prefix: "/many-waiters/".into(),
        iters: 0,
        workers: 1,
        ttl: 60,
        crash_ttl: 2,
        crash_rounds: 1,
        releases: 100,
        memory_cycles: 0,
        dump: None,
        sessions: 1,
        observers: 0,
        idle: Duration::ZERO,
    };
    let result = tokio::time::timeout(
        Duration::from_secs(300),
        bench.run("mem_calls_per_release_w10000"),
    )
    .await
    .expect("finished in time")
    .expect("the scenario ran");
    let extra = &result.extra;
    let f = |k: &str| {
        extra[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} in {extra}"))
    };
    eprintln!(
        "10,000 waiters: {} calls and {} watch events per release (at most {} in one), \
         p50 {:.3} ms p99 {:.3} ms unlock -> next holder",
        f("calls_per_release"),
        f("watch_events_per_release"),
        f("max_watch_events_in_one_release"),
        result.p50_ms,
        result.p99_ms
    );
    assert_eq!(f("waiters"), 10_000.0);
    assert!(f("releaser_calls_per_release") <= 1.0, "{extra}");
    assert!(f("next_waiter_calls_per_release") <= 1.0, "{extra}");
    assert_eq!(f("other_waiters_calls_per_release"), 0.0, "{extra}");
    assert!(f("max_watch_events_in_one_release") <= 2.0, "{extra}");
    // A handoff does work for two sessions, not for 10,000: 0.5 ms in a release build here
    // (`coord-bench --backend mem --scenario mem_calls_per_release_w10000`), about 10 ms in a
    // debug build (the store's read of the newest keys ahead walks the queue); the bound
    // leaves room for a loaded machine.
    assert!(result.p50_ms < 50.0, "p50 {} ms per release", result.p50_ms);
}
