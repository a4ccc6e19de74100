//! The background task of every backend: ends expired leases and compacts old history.
//!
//! Leases expire on the database clock (`expires_at`, set from the server's `now()`), and
//! something must delete their keys when nobody calls: every connected backend runs this
//! reaper, so leases end as long as any client of the store runs. It sleeps until the next
//! lease is due, but never longer than the reap interval (a lease granted elsewhere may be due
//! sooner than this process knows), then calls `reap()`, which ends each due lease at its own
//! revision under the revision lock. Reapers of several processes are safe together (see
//! `schema.sql`); a pass that finds nothing due takes no lock.
//!
//! The same pass returns the current and compact revisions; when the history kept exceeds the
//! retention by a batch, `compact_auto()` moves the compact revision forward, a bounded number
//! of revisions per transaction, never past what this process's watches still need.
//!
//! Deleted rows take space until VACUUM marks it free. Autovacuum wakes once a minute by
//! default (`autovacuum_naptime`), and at thousands of writes a second the log and `kv` grew
//! by half between its runs in our 100,000-cycle test. So the compactor also runs `VACUUM
//! (SKIP_LOCKED, TRUNCATE false)` on the schema's tables each time it has compacted half the
//! retention's worth of revisions: the tables stay bounded whatever autovacuum's settings. A
//! role that does not own the tables gets only PostgreSQL's "skipping" warnings from it (not
//! an error): the tables are then left to autovacuum.
//!
//! `TRUNCATE false`: VACUUM's last step, giving empty trailing pages back to the file system,
//! needs an ACCESS EXCLUSIVE lock, which a table that every write touches never leaves free;
//! VACUUM retried it for up to seconds a run, and meanwhile the log grew to 7x its retention
//! (measured in `tests/bounded.rs`). The pages are reused by the next inserts instead. VACUUM
//! runs in a task of its own, one at a time, so a slow one never holds back reaping or
//! compaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::PostgresConfig;
use crate::schema::Sql;
use crate::watch::Hub;

/// Most leases one reaper pass ends (one transaction); a full pass is followed at once by
/// another.
const REAP_BATCH: i32 = 64;

/// Most revisions one compaction transaction drops.
const COMPACT_BATCH: i64 = 1_000;

pub(crate) fn spawn(
    pool: Pool,
    sql: Arc<Sql>,
    config: &PostgresConfig,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) {
    let interval = config.reap_interval;
    let timeout = config.request_timeout;
    let keep = i64::try_from(config.history_retention).unwrap_or(i64::MAX);
    // Compact once the excess reaches a tenth of the retention (at most a batch), so the
    // deletes are batched but the history never grows far past its bound.
    let step = (keep / 10).clamp(1, 100);
    let vacuum_every = (keep / 2).max(1_000);
    tokio::spawn(async move {
        let mut pause = Duration::ZERO;
        // Revisions this process compacted since it last started a VACUUM.
        let mut unvacuumed: i64 = 0;
        let vacuum = Vacuum::new(pool.clone(), sql.clone());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = interval;
            let pass = tokio::time::timeout(timeout, async {
                let client = pool.get().await.map_err(|e| e.to_string())?;
                let statement = client
                    .prepare_cached(&sql.reap)
                    .await
                    .map_err(|e| e.to_string())?;
                let row = client
                    .query_one(&statement, &[&REAP_BATCH])
                    .await
                    .map_err(|e| e.to_string())?;
                let reaped: i32 = row.get(0);
                let next_due: Option<f64> = row.get(1);
                let current: i64 = row.get(2);
                let compacted: i64 = row.get(3);
                if reaped > 0 {
                    tracing::debug!(reaped, "expired leases ended");
                }
                let target = (current - keep + 1).min(hub.compaction_cap().unwrap_or(i64::MAX));
                let mut behind = false;
                if target - compacted >= step {
                    let statement = client
                        .prepare_cached(&sql.compact_auto)
                        .await
                        .map_err(|e| e.to_string())?;
                    let cap = hub.compaction_cap().unwrap_or(i64::MAX);
                    let now: i64 = client
                        .query_one(&statement, &[&keep, &cap, &COMPACT_BATCH])
                        .await
                        .map_err(|e| e.to_string())?
                        .get(0);
                    tracing::trace!(compact_revision = now, "history compacted");
                    // More than one batch behind (writes outpace one batch a pass): go on at
                    // once, so the history stays bounded at any write rate.
                    behind = target - now >= step;
                    unvacuumed += now - compacted;
                }
                Ok::<_, String>((reaped, next_due, behind))
            })
            .await;
            if unvacuumed >= vacuum_every && vacuum.start() {
                unvacuumed = 0;
            }
            match pass {
                Ok(Ok((reaped, next_due, behind))) => {
                    if reaped >= REAP_BATCH || behind {
                        pause = Duration::ZERO;
                    } else if let Some(due) = next_due {
                        // A due lease that was skipped (being renewed right now) is looked at
                        // again shortly.
                        let due = Duration::from_secs_f64(due.max(0.0)) + Duration::from_millis(1);
                        pause = due.clamp(Duration::from_millis(5), interval);
                    }
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "lease reaper pass failed"),
                Err(_) => tracing::debug!(?timeout, "lease reaper pass timed out"),
            }
        }
    });
}

/// The compactor's VACUUM of the schema's tables, in a task of its own, at most one at a time.
struct Vacuum {
    pool: Pool,
    sql: Arc<Sql>,
    /// A VACUUM is running.
    running: Arc<AtomicBool>,
}

impl Vacuum {
    fn new(pool: Pool, sql: Arc<Sql>) -> Self {
        Self {
            pool,
            sql,
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts a VACUUM unless one is running; whether it started. A failed one is tried
    /// again at the next due point.
    fn start(&self) -> bool {
        if self.running.swap(true, Ordering::AcqRel) {
            return false;
        }
        let (pool, sql, running) = (self.pool.clone(), self.sql.clone(), self.running.clone());
        tokio::spawn(async move {
            match pool.get().await {
                Ok(client) => {
                    if let Err(e) = client.batch_execute(&sql.vacuum).await {
                        tracing::debug!(error = %e, "VACUUM failed");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "no connection for VACUUM"),
            }
            running.store(false, Ordering::Release);
        });
        true
    }
}
