//! Table sizes stay bounded however many lock cycles run: the log is compacted to the
//! retention, and VACUUM gives the space of deleted rows back to new ones. Here 30,000 cycles
//! with a retention of 2,000 revisions (30 retentions' worth); `coord-bench`'s
//! `postgres_bounded` scenario runs the 100,000 cycles of the issue with the default
//! retention and reports the sizes in BENCHMARKS.md.
//!
//! Sessions lock and unlock their own names in parallel; the sizes of the tables are sampled
//! all along, and the largest of the warm-up bounds every later sample. The connections run with `synchronous_commit = off`: this
//! test is about space, not durability, and a WAL flush per write in series would make it take
//! minutes (everything else is the same code path).

use std::time::{Duration, Instant};

use coord_core::{Mutex, Session};

mod common;

const CYCLES: usize = 30_000;
/// Sizes are sampled every this many cycles.
const SAMPLE_EVERY: usize = 2_000;
/// The samples up to here set the reference (the history is full after 1,000 cycles).
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
    // Every sample, not just two: a single early sample may miss a peak that recurs.
    let mut samples: Vec<(usize, (i64, i64, i64))> = Vec::new();
    let mut next = SAMPLE_EVERY;
    while next < CYCLES {
        while done.load(std::sync::atomic::Ordering::Relaxed) < next {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        samples.push((next, sizes().await));
        next += SAMPLE_EVERY;
    }
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
         log rows {log_rows}, revision {current}, compact revision {compact}; \
         sizes (log, kv, lease) every {SAMPLE_EVERY} cycles: {samples:?}, at the end: {end:?}",
        CYCLES as f64 / took.as_secs_f64()
    );
    // Two revisions a cycle: the history holds the retention (plus a compaction step) only.
    assert!(
        current - compact <= retention + 200,
        "history of {} revisions kept, retention {retention}",
        current - compact
    );
    assert!(log_rows <= retention + 200, "{log_rows} log rows");
    // The largest size of the warm-up bounds every later one: 20,000 more cycles (10
    // retentions) may not grow the tables beyond it (plus a half and a few pages of slack for
    // what VACUUM has not reached yet).
    samples.push((CYCLES, end));
    let (warm, later): (Vec<_>, Vec<_>) = samples.iter().partition(|(at, _)| *at <= WARM_UP);
    let table = [("log", 0), ("kv", 1), ("lease", 2)];
    for (name, i) in table {
        let pick = |s: &(usize, (i64, i64, i64))| [s.1 .0, s.1 .1, s.1 .2][i];
        let reference = warm.iter().map(&pick).max().unwrap_or(0);
        let bound = reference + reference / 2 + 512 * 1024;
        for s in &later {
            assert!(
                pick(s) <= bound,
                "{name} grew from at most {reference} bytes in the first {WARM_UP} cycles to {} \
                 after {} (bound {bound})",
                pick(s),
                s.0
            );
        }
    }
}
