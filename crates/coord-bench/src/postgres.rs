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
    /// the store's default history retention: the sizes of coord's tables after the first fifth
    /// and at the end. They must not grow with the cycles.
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
        let sizes_sql = format!(
            "SELECT pg_total_relation_size('\"{schema}\".log'), \
             pg_total_relation_size('\"{schema}\".kv'), \
             pg_total_relation_size('\"{schema}\".lease'), \
             (SELECT count(*) FROM \"{schema}\".log)"
        );
        let cycles = self.memory_cycles;
        let warm_up = cycles / 5;
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..self.workers {
            let (bench, done) = (self.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let (session, _) = bench.session(bench.ttl).await?;
                let mutex = Mutex::new(&session, format!("bounded/{w}"))?;
                while done.fetch_add(1, Ordering::Relaxed) < cycles {
                    mutex.lock().await?.unlock().await?;
                }
                Session::close(&session).await?;
                BenchResultOr::Ok(())
            }));
        }
        while done.load(Ordering::Relaxed) < warm_up {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let warm = table_sizes(&client, &sizes_sql).await?;
        for t in tasks {
            t.await??;
        }
        let seconds = start.elapsed().as_secs_f64();
        // Let the compactor catch up with the last writes.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let end = table_sizes(&client, &sizes_sql).await?;
        drop(client);
        let _ = conn.await;
        let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
        Ok(
            BenchResult::new(name, cycles, seconds, &[]).with_extra(json!({
                "history_retention": backend.config().history_retention(),
                "warm_up_cycles": warm_up,
                "log_mib_after_warm_up": mib(warm.0),
                "kv_mib_after_warm_up": mib(warm.1),
                "lease_mib_after_warm_up": mib(warm.2),
                "log_rows_after_warm_up": warm.3,
                "log_mib_at_end": mib(end.0),
                "kv_mib_at_end": mib(end.1),
                "lease_mib_at_end": mib(end.2),
                "log_rows_at_end": end.3,
            })),
        )
    }
}

/// `(log, kv, lease)` bytes and log rows.
async fn table_sizes(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<(i64, i64, i64, i64), tokio_postgres::Error> {
    let row = client.query_one(sql, &[]).await?;
    Ok((row.get(0), row.get(1), row.get(2), row.get(3)))
}
