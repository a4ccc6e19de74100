//! [`PostgresBackend`]: [`coord_core::Backend`] on PostgreSQL, one statement per call.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{
    Backend, BackendLimits, CallKind, Capabilities, Capability, Error, LeaseGrant, LeaseId,
    LeaseTimeToLive, Result, Revision, Txn, TxnOp, TxnResponse, WatchRequest, WatchStream,
};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use tokio_util::sync::CancellationToken;

use crate::config::PostgresConfig;
use crate::encode::{self, Args};
use crate::error::{self, rolled_back};
use crate::schema::{self, Sql};
use crate::tls::{self, Tls};
use crate::watch::Hub;

/// [`coord_core::Backend`] on PostgreSQL.
///
/// Cheap to clone: clones share one connection pool, one lease reaper and one watch hub, which
/// stop when the last clone is dropped. Every call is one statement (one round trip) on a
/// pooled connection, bounded by the request timeout; see the [crate docs](crate) for what
/// each costs and what is guaranteed.
#[derive(Clone)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: PostgresConfig,
    pub(crate) sql: Arc<Sql>,
    pub(crate) pool: Pool,
    pub(crate) hub: Arc<Hub>,
    /// Statements sent to the server by calls, by [`CallKind`]: [`PostgresBackend::statements`].
    statements: [AtomicU64; CallKind::ALL.len()],
    /// Prepares sent by calls: [`PostgresBackend::prepares`].
    prepares: AtomicU64,
    shutdown: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reaper and the watch hub hold no reference to `Inner`: this ends them.
        self.shutdown.cancel();
    }
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.inner.pool.status();
        f.debug_struct("PostgresBackend")
            .field("config", &self.inner.config)
            .field("pool_size", &status.size)
            .field("pool_idle", &status.available)
            .finish_non_exhaustive()
    }
}

/// The `tokio-postgres` settings of a backend's connections: the URL's, with the application
/// name, the connect timeout, a server-side `statement_timeout` (a backstop for a statement
/// whose client gave up: it should not hold the revision lock for long), and `jit = off`.
///
/// Why no JIT: coord's statements are tiny, but the planner cannot know that the revision and
/// meta tables hold one row each (before they are analysed it assumes thousands), so its cost
/// estimates crossed `jit_above_cost` and every read of the watch hub paid 7–9 ms of JIT
/// compilation (measured: a put's event came 6 ms after its reply; without JIT, 0.2 ms).
pub(crate) fn pg_config(
    config: &PostgresConfig,
    base: &tokio_postgres::Config,
    application_name: &str,
) -> tokio_postgres::Config {
    let mut pg = base.clone();
    pg.application_name(application_name);
    pg.connect_timeout(config.connect_timeout);
    let timeout = format!(
        "-c statement_timeout={} -c jit=off",
        config.request_timeout.as_millis().max(1)
    );
    let options = match base.get_options() {
        Some(o) if !o.trim().is_empty() => format!("{o} {timeout}"),
        _ => timeout,
    };
    pg.options(options);
    pg
}

impl PostgresBackend {
    /// A builder: [`PostgresConfig`] for `url`, with defaults.
    pub fn builder(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig::new(url)
    }

    /// Connects with `config`; see [`PostgresConfig::connect`].
    pub async fn connect(config: PostgresConfig) -> Result<PostgresBackend> {
        let name = config.checked_schema()?.to_string();
        let target = tls::target(&config)?;
        let pg = pg_config(&config, &target.pg, &config.application_name);
        let manager_config = ManagerConfig {
            // No query when a connection is handed out: a call stays one round trip. A
            // connection found closed is replaced; one that dies mid-call fails that call
            // (retried when that is safe, see `query`).
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &target.tls {
            Tls::Plain => Manager::from_config(pg, NoTls, manager_config),
            Tls::Rustls(tls) => Manager::from_config(pg, tls.clone(), manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| Error::invalid(format!("connection pool: {e}")))?;
        let sql = Arc::new(Sql::new(&name));

        // Install or check the schema, retrying a server that is not there yet until the
        // connect timeout.
        let deadline = Instant::now() + config.connect_timeout;
        let mut last = None;
        loop {
            let attempt = async {
                let mut client = pool.get().await.map_err(error::from_pool)?;
                schema::ensure(&mut client, &sql, &name).await
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) if e.is_retryable() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "PostgreSQL not ready, retrying");
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(
                        last.unwrap_or_else(|| error::timeout("connect", config.connect_timeout))
                    )
                }
            }
        }

        let shutdown = CancellationToken::new();
        let listen_config = pg_config(
            &config,
            &target.pg,
            &format!("{}/listen", config.application_name),
        );
        let hub = Hub::new(
            listen_config,
            target.tls.clone(),
            sql.clone(),
            &config,
            shutdown.child_token(),
        );
        crate::reaper::spawn(
            pool.clone(),
            sql.clone(),
            &config,
            hub.clone(),
            shutdown.child_token(),
        );
        tracing::debug!(schema = name, url = %config.url(), "connected to PostgreSQL");
        Ok(PostgresBackend {
            inner: Arc::new(Inner {
                config,
                sql,
                pool,
                hub,
                statements: Default::default(),
                prepares: AtomicU64::new(0),
                shutdown,
            }),
        })
    }

    /// The settings this backend was connected with.
    pub fn config(&self) -> &PostgresConfig {
        &self.inner.config
    }

    /// How many requests this backend's calls have sent to the server so far: one per call,
    /// plus one the first time a connection prepares a statement, plus retries. The lease
    /// reaper, the compactor and the watch hub's reads (on their own connection) are not
    /// counted. For tests and benchmarks: an uncontended lock + unlock is two.
    pub fn round_trips(&self) -> u64 {
        let statements: u64 = CallKind::ALL.iter().map(|&k| self.statements(k)).sum();
        statements + self.prepares()
    }

    /// How many statements calls of `kind` have sent so far: one per call, plus retries
    /// (prepares not included). A watch's reads (of the revision, or a replay) count as
    /// [`CallKind::Watch`]. So a caller can count what one operation costs while other calls
    /// (a session's keep-alives) run beside it.
    pub fn statements(&self, kind: CallKind) -> u64 {
        self.inner.statements[kind.index()].load(Ordering::Relaxed)
    }

    /// How many of [`round_trips`](Self::round_trips) were prepares: one the first time each
    /// pooled connection runs a statement, whatever the call.
    pub fn prepares(&self) -> u64 {
        self.inner.prepares.load(Ordering::Relaxed)
    }
}

impl Inner {
    /// Runs one prepared statement on a pooled connection, under the request timeout.
    ///
    /// Retried on another connection, with a short backoff while the deadline allows: a
    /// failure to connect, and a server error that says the statement did not take effect (a
    /// serialization failure or deadlock rolled it back, the connection was refused). A
    /// connection lost mid-statement, or terminated (the session killed, the server shutting
    /// down), is retried only when `read_only`: a write may have committed before the answer
    /// was lost, and running it twice could, say, release a lock taken again meanwhile; the
    /// caller gets [`Error::Unavailable`] (outcome unknown) and decides.
    pub(crate) async fn query(
        &self,
        kind: CallKind,
        lease: LeaseId,
        read_only: bool,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let op = op_name(kind);
        let after = self.config.request_timeout;
        let deadline = Instant::now() + after;
        let mut pause = Duration::from_millis(5);
        loop {
            let client: Object = match tokio::time::timeout_at(deadline, self.pool.get()).await {
                Err(_) => return Err(error::timeout(op, after)),
                Ok(Ok(client)) => client,
                Ok(Err(e)) => {
                    let e = error::from_pool(e);
                    if e.is_retryable() && Instant::now() + pause < deadline {
                        tracing::debug!(op, error = %e, "no PostgreSQL connection, retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(200));
                        continue;
                    }
                    return Err(e);
                }
            };
            let cached = client.statement_cache.size();
            let prepared = tokio::time::timeout_at(deadline, client.prepare_cached(sql)).await;
            if client.statement_cache.size() != cached {
                self.prepares.fetch_add(1, Ordering::Relaxed);
            }
            let result = match prepared {
                Err(_) => {
                    // A server that does not answer: this connection is not reused.
                    drop(Object::take(client));
                    return Err(error::timeout(op, after));
                }
                Ok(Err(e)) => Err(e),
                Ok(Ok(statement)) => {
                    self.statements[kind.index()].fetch_add(1, Ordering::Relaxed);
                    match tokio::time::timeout_at(deadline, client.query(&statement, params)).await
                    {
                        Err(_) => {
                            drop(Object::take(client));
                            return Err(error::timeout(op, after));
                        }
                        Ok(r) => r,
                    }
                }
            };
            match result {
                Ok(rows) => return Ok(rows),
                Err(e) => {
                    let lost = e.as_db_error().is_none();
                    let safe = if read_only {
                        lost || e.code().is_some_and(rolled_back)
                    } else {
                        e.code().is_some_and(error::surely_not_applied)
                    };
                    if lost || e.code().is_some_and(rolled_back) {
                        // Its session is gone or going: never hand this connection out again.
                        drop(Object::take(client));
                    }
                    if safe && Instant::now() + pause < deadline {
                        tracing::debug!(op, error = %e, "PostgreSQL call failed, retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(200));
                        continue;
                    }
                    let e = error::from_client(e, lease);
                    tracing::debug!(op, error = %e, "PostgreSQL call failed");
                    return Err(e);
                }
            }
        }
    }

    /// The store's current revision (one read).
    pub(crate) async fn current_revision(&self) -> Result<Revision> {
        let rows = self
            .query(CallKind::Watch, 0, true, &self.sql.current, &[])
            .await?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or_else(|| error::protocol("the revision row is missing"))
    }
}

/// The name of a call in errors and logs (as [`coord_core::CallCounts`] spells it).
fn op_name(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Txn => "txn",
        CallKind::Range => "range",
        CallKind::Put => "put",
        CallKind::Delete => "delete",
        CallKind::LeaseGrant => "lease_grant",
        CallKind::LeaseRevoke => "lease_revoke",
        CallKind::LeaseKeepAlive => "lease_keep_alive",
        CallKind::LeaseTimeToLive => "lease_time_to_live",
        CallKind::LeaseList => "lease_list",
        CallKind::Watch => "watch",
        CallKind::Compact => "compact",
        _ => "call",
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let inner = &self.inner;
        encode::check_txn(&txn, &inner.config.limits)?;
        // A release has a function of its own (on every handoff's critical path).
        if let Some((ckey, crev, key)) = encode::guarded_delete(&txn) {
            let sql = &inner.sql.txn_guarded_delete;
            let rows = inner
                .query(CallKind::Txn, 0, false, sql, &[&ckey, &crev, &key])
                .await?;
            return encode::decode(&txn, &rows);
        }
        let args = Args::new(&txn);
        let lease = txn
            .success
            .iter()
            .chain(&txn.failure)
            .find_map(|op| match op {
                TxnOp::Put(p) if p.lease != 0 => Some(p.lease),
                _ => None,
            })
            .unwrap_or(0);
        // Transactions that only read take no lock and run on one snapshot (txn_r);
        // any write in either branch needs the revision lock for the compares too (txn_w).
        let (sql, read_only) = if args.writes {
            (&inner.sql.txn_w, false)
        } else {
            (&inner.sql.txn_r, true)
        };
        let rows = inner
            .query(CallKind::Txn, lease, read_only, sql, &args.params())
            .await?;
        encode::decode(&txn, &rows)
    }

    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        let inner = &self.inner;
        let limits = &inner.config.limits;
        if ttl < limits.min_ttl || ttl > limits.max_ttl {
            return Err(Error::invalid(format!(
                "lease TTL {ttl}s is out of range [{}, {}]",
                limits.min_ttl, limits.max_ttl
            )));
        }
        let chosen = id.filter(|id| *id != 0);
        if let Some(id) = chosen {
            if id < 0 {
                return Err(Error::invalid(format!("lease id {id} is negative")));
            }
        }
        loop {
            let id = chosen
                .unwrap_or_else(|| rand::random::<i64>() & i64::MAX)
                .max(1);
            let rows = inner
                .query(
                    CallKind::LeaseGrant,
                    id,
                    false,
                    &inner.sql.grant,
                    &[&id, &ttl],
                )
                .await?;
            if !rows.is_empty() {
                tracing::debug!(lease = id, ttl, "lease granted");
                return Ok(LeaseGrant { id, ttl });
            }
            if chosen.is_some() {
                return Err(Error::invalid(format!("lease {id:x} already exists")));
            }
            // A random id that is taken (about never): draw another.
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        let inner = &self.inner;
        inner
            .query(CallKind::LeaseRevoke, id, false, &inner.sql.revoke, &[&id])
            .await?;
        tracing::debug!(lease = id, "lease revoked");
        Ok(())
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        let inner = &self.inner;
        // Renewing twice is harmless, so a lost answer is retried.
        let rows = inner
            .query(
                CallKind::LeaseKeepAlive,
                id,
                true,
                &inner.sql.keep_alive,
                &[&id],
            )
            .await?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or(Error::LeaseNotFound { lease: id })
    }

    async fn lease_time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseTimeToLive> {
        let inner = &self.inner;
        let rows = inner
            .query(
                CallKind::LeaseTimeToLive,
                id,
                true,
                &inner.sql.time_to_live,
                &[&id, &with_keys],
            )
            .await?;
        let row = rows.first().ok_or(Error::LeaseNotFound { lease: id })?;
        let keys: Option<Vec<Vec<u8>>> = row.get(2);
        Ok(LeaseTimeToLive {
            id,
            granted_ttl: row.get(0),
            ttl: row.get::<_, i64>(1).max(0),
            keys: keys.unwrap_or_default(),
        })
    }

    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        let inner = &self.inner;
        let rows = inner
            .query(CallKind::LeaseList, 0, true, &inner.sql.lease_list, &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        crate::watch::open(&self.inner, req).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let inner = &self.inner;
        inner
            .query(
                CallKind::Compact,
                0,
                false,
                &inner.sql.compact,
                &[&revision],
            )
            .await?;
        tracing::debug!(revision, "compacted");
        Ok(())
    }

    fn limits(&self) -> BackendLimits {
        self.inner.config.limits
    }

    /// Every capability coord knows of, each implemented in SQL (named one by one, so a
    /// capability added to coord later is not claimed by accident).
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with(Capability::PastRevisionReads)
            .with(Capability::Compaction)
            .with(Capability::LeaseList)
            .with(Capability::CountOnly)
            .with(Capability::ModRevisionFilter)
            .with(Capability::SortByKeyOrMod)
            .with(Capability::VersionCompares)
            .with(Capability::DenseRevisions)
    }
}
