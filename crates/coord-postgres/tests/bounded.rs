//! Table sizes stay bounded however many lock cycles run: the log is compacted to the
//! retention, and VACUUM gives the space of deleted rows back to new ones. Here 30,000 cycles
//! with a retention of 2,000 revisions (30 retentions' worth); `coord-bench`'s
//! `postgres_bounded` scenario runs the 100,000 cycles of the issue with the default
//! retention and reports the sizes in BENCHMARKS.md.
//!
//! Sessions lock and unlock their own names in parallel; the sizes of the tables are taken
//! after a warm-up and at the end. The connections run with `synchronous_commit = off`: this
//! test is about space, not durability, and a WAL flush per write in series would make it take
//! minutes (everything else is the same code path).

use std::time::{Duration, Instant};

use coord_core::{Mutex, Session};

mod common;

const CYCLES: usize = 30_000;
// The reference sizes are taken after a third of the run: the log's heap follows the write
// rate times the time between the compactor's VACUUMs, and a sample taken after only a few of
// them (6,000 cycles, as before) could miss the steady-state peak (seen once in CI: 0.6 MiB at
// 6,000 cycles, 2.0 MiB at 30,000, with the rows at the retention throughout).
const WARM_UP: usize = 10_000;
const SESSIONS: usize = 6;
const RETENTION: u64 = 2_000;

/// `(log, kv, lease)` sizes in bytes (tables with their indexes and TOAST).
async fn sizes() -> (i64, i64, i64) {
    let s = common::schema();
    let row = common::psql(&format!(
        "SELECT pg_total_relation_size('\"{s}\".log'), pg_total_relation_size('\"{s}\".kv'), \
         pg_total_relation_size('\"{s}\".lease')"
    ))
    .await;
    (row[0].get(0), row[0].get(1), row[0].get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_stay_bounded_over_many_lock_cycles() {
    let Some(url) = common::url() else {
        return;
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = common::config(&format!("{url}{sep}options=-c%20synchronous_commit%3Doff"))
        .with_history_retention(RETENTION)
        .connect()
        .await
        .unwrap();
    let retention = store.config().history_retention() as i64;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let store = store.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let session = Session::new(store, 30).await.unwrap();
            let mutex = Mutex::new(&session, format!("bounded/{s}")).unwrap();
            while done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < CYCLES {
                mutex.lock().await.unwrap().unlock().await.unwrap();
            }
            session.close().await.unwrap();
        }));
    }
    // Sizes once the history is full (retention reached) and warm.
    while done.load(std::sync::atomic::Ordering::Relaxed) < WARM_UP {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let warm = sizes().await;
    let warm_at = started.elapsed();
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    // Let the compactor catch up with the last writes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = sizes().await;
    let s = common::schema();
    let rows = common::psql(&format!(
        "SELECT (SELECT count(*) FROM \"{s}\".log), (SELECT revision FROM \"{s}\".revision), \
         (SELECT compact_revision FROM \"{s}\".meta)"
    ))
    .await;
    let (log_rows, current, compact): (i64, i64, i64) =
        (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    eprintln!(
        "{CYCLES} lock cycles in {took:?} ({:.0}/s), {SESSIONS} sessions; \
         sizes (log, kv, lease) after {WARM_UP} cycles ({warm_at:?}): {warm:?}, at the end: {end:?}; \
         log rows {log_rows}, revision {current}, compact revision {compact}",
        CYCLES as f64 / took.as_secs_f64()
    );
    // Two revisions a cycle: the history holds the retention (plus a compaction step) only.
    assert!(
        current - compact <= retention + 200,
        "history of {} revisions kept, retention {retention}",
        current - compact
    );
    assert!(log_rows <= retention + 200, "{log_rows} log rows");
    // 20,000 more cycles after the warm-up may not grow the tables much (a few pages of slack
    // for what VACUUM has not reached yet).
    let bound = |warm: i64| warm + warm / 2 + 512 * 1024;
    assert!(
        end.0 <= bound(warm.0),
        "the log grew from {} to {} bytes",
        warm.0,
        end.0
    );
    assert!(
        end.1 <= bound(warm.1),
        "kv grew from {} to {} bytes",
        warm.1,
        end.1
    );
    assert!(
        end.2 <= bound(warm.2),
        "lease grew from {} to {} bytes",
        warm.2,
        end.2
    );
}
