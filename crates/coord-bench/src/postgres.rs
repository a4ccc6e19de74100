//! Scenarios that only make sense on PostgreSQL: the server's own single-writer commit rate
//! (what a serialised store can do at best), and table sizes over many lock cycles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use coord_core::{Mutex, Session};
use serde_json::json;
use tokio::time::Instant;

use crate::scenarios::{Bench, BenchResultOr};
use crate::stats::BenchResult;

impl Bench {
    /// One connection commits `iters` single-row updates in a row (autocommit, as durable as
    /// coord's writes): the rate at which writes serialised on one row can commit on this
    /// server. A contended lock needs two such writes per handoff.
    pub(crate) async fn pg_commit_rate(&self) -> BenchResultOr<BenchResult> {
        let name = "pg_commit_rate";
        let backend = self
            .postgres()
            .ok_or("pg_commit_rate runs on --backend postgres only")?;
        let url = self.postgres_url().unwrap_or_default();
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(conn);
        // In coord's schema, which the store's user may create tables in (a regular table: its
        // updates are WAL-logged and flushed at commit, as coord's are).
        let table = format!(
            "\"{}\".bench_commits_{:08x}",
            backend.config().schema(),
            rand::random::<u32>()
        );
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (id int PRIMARY KEY, n bigint); \
                 INSERT INTO {table} VALUES (1, 0)"
            ))
            .await?;
        let update = client
            .prepare(&format!("UPDATE {table} SET n = n + 1 WHERE id = 1"))
            .await?;
        let mut lat = Vec::with_capacity(self.iters);
        let start = Instant::now();
        for _ in 0..self.iters {
            let t = Instant::now();
            client.execute(&update, &[]).await?;
            lat.push(t.elapsed());
        }
        let seconds = start.elapsed().as_secs_f64();
        client.batch_execute(&format!("DROP TABLE {table}")).await?;
        drop(client);
        let _ = conn.await;
        Ok(BenchResult::new(name, self.iters as u64, seconds, &lat))
    }

    /// `memory_cycles` lock + unlock cycles from `workers` sessions (each on its own name), with
    /// the store's default history retention, in [`BOUNDED_SAMPLES`] equal stretches. After
    /// each stretch the workers pause until the compactor has caught up (the log holds at most
    /// the retention and one compaction step), and the sizes of coord's tables (heap, indexes
    /// and TOAST apart, and rows) are sampled: the series shows whether they level off.
    pub(crate) async fn pg_bounded(&self) -> BenchResultOr<BenchResult> {
        let name = "pg_bounded";
        let backend = self
            .postgres()
            .ok_or("pg_bounded runs on --backend postgres only")?
            .clone();
        let url = self.postgres_url().unwrap_or_default();
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(conn);
        let schema = backend.config().schema().to_string();
        let retention = backend.config().history_retention();
        let cycles = self.memory_cycles;
        let mut sessions = Vec::new();
        for w in 0..self.workers.max(1) {
            let (session, _) = self.session(self.ttl).await?;
            let mutex = Mutex::new(&session, format!("bounded/{w}"))?;
            sessions.push((session, mutex));
        }
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut samples = Vec::new();
        for k in 1..=BOUNDED_SAMPLES {
            let target = cycles * k / BOUNDED_SAMPLES;
            let mut tasks = Vec::new();
            for (_, mutex) in &sessions {
                let (mutex, done) = (mutex.clone(), done.clone());
                tasks.push(tokio::spawn(async move {
                    while done.fetch_add(1, Ordering::Relaxed) < target {
                        mutex.lock().await?.unlock().await?;
                    }
                    BenchResultOr::Ok(())
                }));
            }
            for t in tasks {
                t.await??;
            }
            // The overshoot of the counter is not cycles.
            done.store(target, Ordering::Relaxed);
            let (kept, caught_up) = wait_for_compaction(&client, &schema, retention).await?;
            let mut sample = table_sizes(&client, &schema).await?;
            sample["cycles"] = json!(target);
            sample["kept_at_stretch_end"] = json!(kept);
            sample["compaction_caught_up"] = json!(caught_up);
            samples.push(sample);
        }
        let seconds = start.elapsed().as_secs_f64();
        for (session, _) in sessions {
            Session::close(&session).await?;
        }
        drop(client);
        let _ = conn.await;
        let verdict = bounded_verdict(&samples);
        Ok(
            BenchResult::new(name, cycles, seconds, &[]).with_extra(json!({
                "history_retention": retention,
                "samples": samples,
                "bounded": verdict,
            })),
        )
    }
}

/// Samples of `pg_bounded`: one after each fifth of the cycles.
const BOUNDED_SAMPLES: u64 = 5;

/// What "no growth" allows between samples: the compactor VACUUMs every half retention of
/// compacted revisions, so a sample may land anywhere in that cycle; between the low and the
/// high of it the log's space differs by up to that many rows' worth. On top, this much
/// relative noise (pages PostgreSQL keeps after a VACUUM, the free-space map's growth).
const BOUNDED_NOISE: f64 = 0.10;

/// Waits (at most 30 s) until the log holds at most the retention plus one compaction step
/// of revisions (2 a cycle), then lets one more compactor pass and its VACUUM run. Returns
/// the revisions the log kept when the stretch ended (how far the compactor lagged under
/// load) and whether it caught up.
async fn wait_for_compaction(
    client: &tokio_postgres::Client,
    schema: &str,
    retention: u64,
) -> Result<(i64, bool), tokio_postgres::Error> {
    let sql = format!(
        "SELECT (SELECT revision FROM \"{schema}\".revision) - \
                (SELECT compact_revision FROM \"{schema}\".meta)"
    );
    let slack = (retention / 10).clamp(1, 100) as i64;
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let at_end: i64 = client.query_one(&sql, &[]).await?.get(0);
    loop {
        let kept: i64 = client.query_one(&sql, &[]).await?.get(0);
        if kept <= retention as i64 + slack {
            // The reaper passes every 250 ms: one more, so a VACUUM it was due starts.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            return Ok((at_end, true));
        }
        if Instant::now() >= deadline {
            return Ok((at_end, false));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Sizes (bytes) of each table of coord's schema: heap, indexes, TOAST (with the free-space
/// and visibility maps counted in the heap, as `pg_table_size` does), the live rows, and the
/// VACUUMs (manual and auto) it has had.
async fn table_sizes(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<serde_json::Value, tokio_postgres::Error> {
    let mut out = serde_json::Map::new();
    for table in ["log", "kv", "lease"] {
        let sql = format!(
            "SELECT pg_relation_size(c.oid) + pg_relation_size(c.oid, 'fsm') + pg_relation_size(c.oid, 'vm'), \
                    pg_indexes_size(c.oid), \
                    pg_table_size(c.oid) - pg_relation_size(c.oid) - pg_relation_size(c.oid, 'fsm') \
                      - pg_relation_size(c.oid, 'vm'), \
                    (SELECT count(*) FROM \"{schema}\".\"{table}\"), \
                    coalesce(s.vacuum_count + s.autovacuum_count, 0) \
             FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
             WHERE c.oid = '\"{schema}\".\"{table}\"'::regclass"
        );
        let row = client.query_one(&sql, &[]).await?;
        let (heap, indexes, toast): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        out.insert(
            table.to_string(),
            json!({
                "heap_bytes": heap,
                "index_bytes": indexes,
                "toast_bytes": toast,
                "total_bytes": heap + indexes + toast,
                "rows": row.get::<_, i64>(3),
                "vacuums": row.get::<_, i64>(4),
            }),
        );
    }
    Ok(serde_json::Value::Object(out))
}

/// The verdict on the samples: the tables' total size at each of the last two samples is at
/// most the largest total of the samples before them (the first one, taken before the log
/// reached its retention's size and VACUUM its rhythm, left out when there are more) plus
/// [`BOUNDED_NOISE`]. Also the growth from that reference to the last sample.
fn bounded_verdict(samples: &[serde_json::Value]) -> serde_json::Value {
    let total = |s: &serde_json::Value| -> f64 {
        ["log", "kv", "lease"]
            .iter()
            .filter_map(|t| s.get(t)?.get("total_bytes")?.as_f64())
            .sum()
    };
    let totals: Vec<f64> = samples.iter().map(total).collect();
    if totals.len() < 3 {
        return json!({"pass": null, "why": "fewer than 3 samples"});
    }
    let (earlier, last) = totals.split_at(totals.len() - 2);
    let earlier = if earlier.len() > 1 {
        &earlier[1..]
    } else {
        earlier
    };
    let reference = earlier.iter().copied().fold(0.0, f64::max);
    let limit = reference * (1.0 + BOUNDED_NOISE);
    let worst = last.iter().copied().fold(0.0, f64::max);
    json!({
        "pass": worst <= limit,
        "reference_bytes": reference,
        "limit_bytes": limit,
        "last_bytes": worst,
        "noise": BOUNDED_NOISE,
    })
}
