//! Starts real PostgreSQL servers for tests, and controls them: stop, kill, pause, resume,
//! restart on the same port and data dir, terminate backends, run SQL through `psql`.
//!
//! Every server listens on a free port of `127.0.0.1` only (and on a Unix socket in its temp
//! dir), keeps its cluster in a temporary directory and its log (postgres's stderr) in a file
//! next to it, and is shut down (immediately: `SIGQUIT`) when its handle is dropped, or killed
//! at the latest when the test process exits.
//!
//! # How the server runs
//!
//! * **As whom.** `initdb` and `postgres` refuse to run as root. When the tests run as root,
//!   the temp dir is handed to the `postgres` OS user (`chown`) and both run as that user: the
//!   child switches uid and gid between fork and exec (`std`'s `Command::uid`/`gid`), with no
//!   `runuser`/`su` in between. Otherwise they run as the current user. Either way the cluster's
//!   superuser is named `postgres`.
//! * **Dying with the test.** The postmaster is started directly as a child (`postgres -D …`),
//!   not through `pg_ctl start`, which daemonizes it out of reach. The child gets `SIGKILL` as
//!   its parent-death signal, set *after* the uid switch (the kernel clears it on a credential
//!   change: `setpriv --pdeathsig` with a uid switch loses it, and `runuser`/`su` fork, so it
//!   would sit on the wrong process), from a helper thread that lives as long as the test
//!   process. When the test process dies, even by `abort` or
//!   `SIGKILL`, the postmaster is killed, and its backends exit as soon as they see it gone.
//! * **Stop and restart.** Without `pg_ctl`, the harness sends what it would: `SIGINT` (fast
//!   shutdown) to stop, then starts the postmaster again on the same port and data dir, and
//!   waits for `ready` in `postmaster.pid` (what `pg_ctl start -w` waits for).
//! * **Users.** The superuser `postgres` is trusted on the socket and on loopback
//!   ([`PgServer::superuser_url`]); the user `coord` (password `coord`, SCRAM) owns the
//!   database `coord` ([`PgServer::url`]), so tests exercise a URL with a password.
//! * **Settings.** `max_connections = 200`, `fsync` on (the default: commits are durable, as in
//!   production); more through [`PgOptions::with_setting`].
//!
//! ```no_run
//! # async fn demo() {
//! // Uses `POSTGRES_URL` when set, else starts a server of its own; `None` (after a printed
//! // notice) when PostgreSQL is not installed, and a panic instead under `CI=true`.
//! let Some(pg) = pg_harness::postgres_for_tests().await else { return };
//! println!("postgres at {}", pg.url());
//! # }
//! ```
#![deny(missing_docs)]

mod bins;
mod command;
mod error;
mod options;
mod process;
mod server;

pub use bins::{is_ci, postgres_bin_dir};
pub use error::HarnessError;
pub use options::PgOptions;
pub use server::PgServer;

/// A PostgreSQL for a test: an external one named by `POSTGRES_URL`, or one this harness
/// started.
#[derive(Debug)]
pub enum TestPostgres {
    /// The URL of `POSTGRES_URL`; the database may be shared with other tests.
    External {
        /// The URL, as given.
        url: String,
    },
    /// A server started for this test alone.
    Spawned(Box<PgServer>),
}

impl TestPostgres {
    /// The URL for the code under test (as given in `POSTGRES_URL`, or [`PgServer::url`]).
    pub fn url(&self) -> String {
        match self {
            TestPostgres::External { url } => url.clone(),
            TestPostgres::Spawned(server) => server.url(),
        }
    }

    /// The spawned server, if this harness started one.
    pub fn server(&self) -> Option<&PgServer> {
        match self {
            TestPostgres::External { .. } => None,
            TestPostgres::Spawned(server) => Some(server),
        }
    }

    /// Whether the test has the database to itself (a spawned server): no other test's tables,
    /// rows or connections are in it.
    pub fn is_exclusive(&self) -> bool {
        matches!(self, TestPostgres::Spawned(_))
    }
}

/// The PostgreSQL a test should use: `POSTGRES_URL` when it is set and not empty, else a server
/// started for this test.
///
/// Returns `None`, after printing a notice to stderr, when PostgreSQL is not installed, so the
/// test can skip; under `CI=true` it panics instead, so CI never skips silently. It also panics
/// when the server does not start (with the path and tail of its log).
pub async fn postgres_for_tests() -> Option<TestPostgres> {
    if let Ok(url) = std::env::var("POSTGRES_URL") {
        let url = url.trim();
        if !url.is_empty() {
            return Some(TestPostgres::External {
                url: url.to_string(),
            });
        }
    }
    PgServer::start_or_skip()
        .await
        .map(|server| TestPostgres::Spawned(Box::new(server)))
}

/// Whether this test can start PostgreSQL: `true` when the binaries are found (see
/// [`postgres_bin_dir`]). When they are not, prints a notice and returns `false`, or panics
/// under `CI=true`.
pub fn require_postgres_binaries() -> bool {
    match postgres_bin_dir() {
        Some(_) => true,
        None if is_ci() => panic!(
            "PostgreSQL binaries not found (looked at $PG_BIN_DIR, /usr/lib/postgresql/*/bin, \
             initdb on $PATH) and CI=true: install PostgreSQL (e.g. `apt-get install \
             postgresql`) so these tests run"
        ),
        None => {
            eprintln!(
                "NOTICE: PostgreSQL binaries not found (set PG_BIN_DIR or install postgresql); \
                 skipping this test"
            );
            false
        }
    }
}
