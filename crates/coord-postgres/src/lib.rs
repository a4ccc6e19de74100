//! coord-postgres: the [`coord_core::Backend`] contract on PostgreSQL, for teams that run
//! PostgreSQL and no etcd.
//!
//! ```no_run
//! use coord_core::{Mutex, Session};
//! use coord_postgres::PostgresBackend;
//!
//! # async fn demo() -> coord_core::Result<()> {
//! // Or `PostgresConfig::from_env()?` (POSTGRES_URL, COORD_POSTGRES_SCHEMA).
//! // With every default (schema `coord`): `coord_postgres::connect(url).await?`.
//! let store = PostgresBackend::builder("postgres://app:secret@127.0.0.1/app")
//!     .with_schema("coord")
//!     .connect()
//!     .await?;
//! let session = Session::new(store, 10).await?;
//! let mutex = Mutex::new(&session, "jobs/nightly")?;
//! let guard = mutex.lock().await?;
//! // A fencing token that never goes down, also across a PostgreSQL restart.
//! println!("token {}", guard.fencing_token());
//! guard.unlock().await?;
//! session.close().await?;
//! # Ok(()) }
//! ```
//!
//! | piece | file | what it does |
//! | --- | --- | --- |
//! | [`PostgresBackend`] | `backend.rs` | one statement per call on a pooled connection, under the request timeout |
//! | [`PostgresConfig`] | `config.rs` | URL, schema, pool, timeouts, retention; `Debug` hides the password |
//! | schema | `schema.sql`, `functions.sql`, `schema.rs` | tables and PL/pgSQL functions, created and versioned on first use |
//! | watches | `watch.rs` | replay from the log, then one LISTEN connection per backend: changes from NOTIFY, the log where they do not fit or a revision is missing |
//! | reaper | `reaper.rs` | ends expired leases on the database clock; compacts history |
//! | error mapping | `error.rs` | SQLSTATEs → [`coord_core::Error`] by meaning |
//! | TLS | `tls.rs` | `sslmode` and `sslrootcert` by libpq's rules, over rustls |
//!
//! # Why `tokio-postgres`
//!
//! It pipelines, so a call is one write and one read; it hands out notifications of a
//! connection (`Connection::poll_message`), which the watch hub needs on a connection of its
//! own; statements are prepared once per connection (through `deadpool-postgres`'s statement
//! cache), so a call sends Bind/Execute only; and it needs no macros or build-time database.
//! `sqlx` would do the rest, but its LISTEN support lives in a separate listener type whose
//! connection cannot run the hub's reads, and its prepared-statement cache gives less control
//! over round trips.
//!
//! # What is guaranteed
//!
//! | promise | how |
//! | --- | --- |
//! | one revision per write transaction, exactly +1, gap-free, in commit order | every write first locks and bumps the one `revision` row (`UPDATE … RETURNING`, undone if nothing changed) and holds it until COMMIT: writers are serialised, so a snapshot that sees revision r+1 sees r |
//! | reads and transactions are linearizable | each call is one statement; reads see every committed write; a read-only transaction runs on one snapshot |
//! | leases expire on the database clock, within TTL + the reap interval (250 ms) | `expires_at` from the server's `now()`; every connected backend reaps; an expired lease is gone for every call at once, even before it is reaped |
//! | expiry and revoke delete the lease's keys at one revision, with delete events | `end_lease()` logs each delete at that revision |
//! | watches: every event from the start revision, in order, none missed or repeated, a revision's events together | the log table is the truth; NOTIFY carries a revision's changes (up to 8,000 bytes), taken only when it is the revision after the last one handed out, else the log is read from there |
//! | a lost connection does not lose events | the hub reconnects, LISTENs, and reads on from the last revision it handed out |
//! | fencing tokens never go down, across restarts | the revision is a durable row |
//! | bounded storage | the log keeps the last [`PostgresConfig::with_history_retention`] revisions; the compactor VACUUMs the tables (tested: sizes flat over 30,000 lock cycles, sampled every 2,000; the bench runs 100,000) |
//!
//! # What each call costs
//!
//! One statement (one round trip) per call, after a connection prepared it once:
//!
//! | call | statement | takes the revision lock |
//! | --- | --- | --- |
//! | `txn` with a put or delete in either branch, `put`, `delete` | `txn_w(…)`: one durable commit | yes |
//! | `txn` that is a release ("if create revision of k = r, delete the one key d": an unlock, a resignation) | `txn_guarded_delete(…)`: txn_w's answer without its generic machinery; one durable commit | yes |
//! | `txn` that only reads, `range` | `txn_r(…)` (one snapshot) | no |
//! | `lease_grant` | `INSERT … ON CONFLICT DO NOTHING` | no |
//! | `lease_keep_alive` | `UPDATE … WHERE expires_at > now()` | no |
//! | `lease_revoke` | `lease_revoke(…)` | yes |
//! | `lease_time_to_live`, `lease_list` | `SELECT` | no |
//! | `compact` | `compact(…)` | no |
//! | `watch` | a read of the revision (start `0`) or a replay of the log (start in the past) | no |
//!
//! Measured here (PostgreSQL 15, fsync on, loopback, a shared 2-core machine, p50): an
//! uncontended lock + unlock through `coord_core::Mutex` 1.1–1.6 ms (session advisory locks:
//! 0.2 ms, but no WAL, no token, no lost notice); a handoff (A unlocks, B holds) 1.3–1.7 ms
//! (advisory locks: 0.7–0.9 ms); put to watch event on another task 1.0–1.3 ms. Most of a
//! handoff is the release's durable commit, which after an idle pause costs 1 ms here (0.25 ms
//! back to back); the waiter hears of it from the NOTIFY itself, with no read. A/B against
//! reading the log on each wake-up, alternating on one server that other jobs kept loaded (12
//! pairs): from the release's commit returning to the waiter's event, p50 0.07 ms against
//! 0.62 ms; the whole handoff's p50, 3.41 ms against 4.13 ms (per-pair ratio 0.85, 0.44–1.24:
//! the commit's own time dominates and varies with the load).
//! `examples/pg_lock_latency.rs` and `examples/pg_watch_latency.rs` measure them.
//!
//! So an uncontended `coord_core::Mutex` lock + unlock is 2 statements (the acquire
//! transaction and the release transaction); [`PostgresBackend::round_trips`] counts every
//! request, [`PostgresBackend::statements`] those of one kind of call (so a session's
//! keep-alives beside them are not counted) and [`PostgresBackend::prepares`] the prepares
//! (once per pooled connection and statement).
//! Each connected backend also runs, in the background, one reaper pass per reap interval
//! (a `SELECT` when nothing is due) and keeps one extra connection for the watch hub once a
//! watch was opened.
//!
//! # Schema
//!
//! Everything lives in the configured schema (default `coord`), created on first use with a
//! `schema_version`: tables `revision` (one row), `meta` (version, compact revision), `kv`
//! (live keys, `bytea`: etcd's byte order, no collation), `log` (one row per change, the key
//! after and before), `lease` (`ttl`, `expires_at`), and the functions `txn_w`, `txn_r`,
//! `lease_revoke`, `reap`, `compact`, `compact_auto`, `changes`, `notify`, `change_text`,
//! `txn_guarded_delete`. An older version is
//! migrated on connect (its tables by a migration step, its functions replaced whole); a newer
//! one is an error. Version 2 (NOTIFY carries the changes) changed functions only.
//!
//! # History and compaction
//!
//! Every backend's reaper compacts the log to the last
//! [`PostgresConfig::with_history_retention`] revisions (default 10,000), in batches of at most
//! 1,000 revisions per transaction, but never past the last revision its own watch hub handed
//! out: a watch of this process that is behind keeps its events. Another process's compactor
//! does not know about this process's watches; with the default retention a connected hub is
//! never that far behind, and a hub that was disconnected for longer gets
//! [`coord_core::Error::Compacted`] on the watches that lost events. Explicit
//! [`Backend::compact`](coord_core::Backend::compact) works as on etcd.
//!
//! Deleted rows take space until VACUUM. Autovacuum wakes once a minute by default, which at a
//! few thousand writes a second let the log double between runs; so the compactor also runs
//! `VACUUM (SKIP_LOCKED, TRUNCATE false)` on the schema's tables after every half retention of
//! compacted revisions, in a task of its own (left to autovacuum if the role may not VACUUM
//! them). These options need PostgreSQL 12 or later.
//!
//! # Limits worth knowing
//!
//! - **Write throughput** is one WAL flush per write, in series: the revision lock is held
//!   through COMMIT (that is what makes revisions gap-free and in commit order). A few
//!   thousand writes a second on a local disk; reads take no lock and scale.
//! - **The watch hub** filters each revision against every watch of its process in turn: fine
//!   for hundreds of watches per process, measure for many thousands. Events wait in an
//!   unbounded queue per watch until read (as etcd's server buffers them).
//! - **Another process's compactor** does not know this process's watches (see above).
//! - **`sslmode`/`sslrootcert` in libpq's key-value form** are read only when unquoted; the
//!   URL form is read fully.
//! - **`count`** of a read with a limit or a `max_*_revision` filter costs a second index
//!   scan (etcd's `count` is taken before both).
//!
//! # Error mapping
//!
//! | PostgreSQL says | becomes |
//! | --- | --- |
//! | a closed, reset or refused connection, I/O and TLS failures, no answer within the request timeout, `57P01`–`57P04` (shutdown, terminated), `08xxx`, `53xxx`, `40001`, `40P01`, `57014` | [`coord_core::Error::Unavailable`] (retried inside first when the statement provably did not take effect, or only read) |
//! | `42501`, `28000`, `28P01` | [`coord_core::Error::PermissionDenied`] |
//! | `CO001` (raised by the functions: unknown or expired lease) | [`coord_core::Error::LeaseNotFound`] |
//! | `CO002` (a read or watch below the compact revision) | [`coord_core::Error::Compacted`] with the compact revision |
//! | `CO003` (a future revision), `22xxx`, `54000`; bad input found before sending | [`coord_core::Error::InvalidArgument`] |
//! | anything else | [`coord_core::Error::Backend`] |
//!
//! # TLS
//!
//! `sslmode` in the URL, with libpq's meaning: absent or `disable` is plain TCP; `require`
//! encrypts, and checks the server's certificate against a CA when one is given
//! (`sslrootcert=…` in the URL or [`PostgresConfig::with_ca_cert`]); `verify-ca` and
//! `verify-full` need the CA (`verify-full` also checks the host name).
#![deny(missing_docs)]

mod backend;
mod config;
mod encode;
mod error;
mod reaper;
mod schema;
mod tls;
mod watch;

pub use backend::PostgresBackend;
pub use config::PostgresConfig;

/// Connects to the database at `url` with the default settings (schema `coord`, a pool of 16
/// connections, …): `PostgresConfig::new(url).connect().await`. Use [`PostgresConfig`] for
/// anything else (schema, pool size, timeouts, retention, CA).
///
/// ```no_run
/// # async fn demo() -> coord_core::Result<()> {
/// let store = coord_postgres::connect("postgres://app:secret@127.0.0.1/app").await?;
/// # Ok(()) }
/// ```
///
/// Errors as [`PostgresConfig::connect`].
pub async fn connect(url: &str) -> coord_core::Result<PostgresBackend> {
    PostgresConfig::new(url).connect().await
}
