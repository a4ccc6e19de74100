//! What every PostgreSQL test of this crate shares: where the server is, and one schema per
//! test process.
//!
//! The server: `POSTGRES_URL` (set by the README's test command, or by hand), else one that
//! pg-harness starts for the test process. With `CI=true`, no server fails the test instead of
//! skipping it.
//!
//! The schema: every test process works in its own randomly named schema
//! (`coord_test_<hex>`), so test binaries that share one server never meet, and drops it when
//! the process exits.
#![allow(dead_code)] // Each test file uses its own part of this module.

use std::sync::OnceLock;
use std::time::Duration;

use coord_postgres::{PostgresBackend, PostgresConfig};

static SCHEMA: OnceLock<String> = OnceLock::new();

/// The server's URL, or `None` (test skipped) when there is none and this is not CI: the one
/// `POSTGRES_URL` names (the README's test command sets it), else one server that pg-harness
/// starts for this whole test process (stopped at exit).
pub fn url() -> Option<String> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("POSTGRES_URL") {
            if !url.trim().is_empty() {
                return Some(url.trim().to_string());
            }
        }
        // Started from a thread of its own: url() is called from inside tests' runtimes.
        // `None` from the thread: no binaries, not CI (start_or_skip printed a notice). A
        // panic (a server that did not start, or no binaries under CI): fails the test under
        // CI, else is a skip.
        let started = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to start PostgreSQL");
            let server = rt.block_on(pg_harness::PgServer::start_or_skip())?;
            let url = server.url();
            *SERVER.lock().unwrap_or_else(|e| e.into_inner()) = Some(server);
            // SAFETY: registers a plain `extern "C" fn` that captures nothing.
            unsafe {
                libc::atexit(stop_server);
            }
            Some(url)
        })
        .join();
        match started {
            Ok(url) => url,
            Err(panic) if pg_harness::is_ci() => std::panic::resume_unwind(panic),
            Err(_) => {
                eprintln!("NOTICE: could not start PostgreSQL (see above); skipping this test");
                None
            }
        }
    })
    .clone()
}

/// The server pg-harness started for this process, if it did.
static SERVER: std::sync::Mutex<Option<pg_harness::PgServer>> = std::sync::Mutex::new(None);

extern "C" fn stop_server() {
    let server = SERVER.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(server);
}

/// This process's schema, dropped at exit.
pub fn schema() -> &'static str {
    SCHEMA.get_or_init(|| {
        // SAFETY: registers a plain `extern "C" fn` that captures nothing.
        unsafe {
            libc::atexit(drop_schema);
        }
        format!("coord_test_{:016x}", random())
    })
}

/// A random name part, without another dependency.
pub fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// Drops this process's schema at exit, from a thread of its own with its own runtime.
extern "C" fn drop_schema() {
    let (Some(schema), Some(url)) = (SCHEMA.get().cloned(), url()) else {
        return;
    };
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
            let _ = tokio::time::timeout(Duration::from_secs(10), psql_on(&url, &sql)).await;
        });
    })
    .join();
}

/// Settings for the test server in this process's schema, with short timeouts.
pub fn config(url: &str) -> PostgresConfig {
    PostgresConfig::new(url)
        .with_schema(schema())
        .with_request_timeout(Duration::from_secs(5))
        .with_connect_timeout(Duration::from_secs(5))
}

/// A backend on the test server, in this process's schema; `None` to skip.
pub async fn backend() -> Option<PostgresBackend> {
    let url = url()?;
    Some(config(&url).connect().await.expect("connect to PostgreSQL"))
}

/// A backend in a schema of its own (for a test that compacts: a compaction cuts the history
/// every watch of the schema reads, so it must not share one with tests that watch); drop the
/// schema with [`drop_schema_now`] at the end.
pub async fn backend_in_own_schema() -> Option<(PostgresBackend, String)> {
    let url = url()?;
    let schema = format!("coord_test_{:016x}", random());
    let backend = config(&url)
        .with_schema(schema.clone())
        .connect()
        .await
        .expect("connect to PostgreSQL");
    Some((backend, schema))
}

/// Drops `schema` (after its backend is gone). A dropped backend's last reaper pass may still
/// be running on the server, and `DROP SCHEMA` can deadlock with it (PostgreSQL then aborts one
/// of the two): the drop is tried again.
pub async fn drop_schema_now(schema: &str) {
    let url = url().expect("a PostgreSQL server");
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let mut attempt = 1;
    loop {
        match psql_on(&url, &sql).await {
            Ok(_) => return,
            Err(e)
                if attempt < 5
                    && e.code()
                        == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("dropping schema {schema}: {e:?}"),
        }
    }
}

async fn psql_on(url: &str, sql: &str) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client.query(sql, &[]).await
}

/// Runs one statement on the test server, outside any backend (to kill connections, read
/// table sizes, …), and returns its rows.
pub async fn psql(sql: &str) -> Vec<tokio_postgres::Row> {
    let url = url().expect("a PostgreSQL server");
    psql_on(&url, sql).await.expect("psql")
}

/// A PostgreSQL of a test's own (pg-harness), for what a shared server cannot give: TLS
/// settings, a restart. Stopped when dropped.
pub struct OwnServer {
    server: pg_harness::PgServer,
    // The certificate files, kept until the server is gone.
    _certs: Option<tempfile::TempDir>,
}

impl OwnServer {
    /// Starts a server (with TLS when `tls` gives a PEM certificate and key), or `None` (skip;
    /// under `CI=true`, a panic) when PostgreSQL's binaries are missing.
    pub async fn start(tls: Option<(&str, &str)>) -> Option<OwnServer> {
        if !pg_harness::require_postgres_binaries() {
            return None;
        }
        let mut options = pg_harness::PgOptions::new();
        let certs = tls.map(|(cert, key)| {
            let dir = tempfile::tempdir().expect("temp dir");
            let (cert_path, key_path) =
                (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&cert_path, cert).unwrap();
            std::fs::write(&key_path, key).unwrap();
            readable_by_the_server(dir.path(), &key_path);
            options = std::mem::take(&mut options)
                .with_setting("ssl", "on")
                .with_setting("ssl_cert_file", cert_path.display().to_string())
                .with_setting("ssl_key_file", key_path.display().to_string());
            dir
        });
        let server = pg_harness::PgServer::start_with(options)
            .await
            .expect("start a PostgreSQL of the test's own");
        Some(OwnServer {
            server,
            _certs: certs,
        })
    }

    /// The server's URL, as the superuser, without a query (add `?sslmode=…`).
    pub fn url(&self) -> String {
        let url = self.server.superuser_url();
        url.split('?').next().unwrap_or(&url).to_string()
    }

    /// A fast shutdown and start on the same port and data: every connection is cut,
    /// committed data stays.
    pub async fn restart(&self) {
        self.server.restart().await.expect("restart");
    }

    /// A fast shutdown: every connection is cut, nothing answers until
    /// [`OwnServer::start_again`].
    pub async fn stop(&self) {
        self.server.stop().await;
    }

    /// Starts a stopped server again on the same port and data.
    pub async fn start_again(&self) {
        self.server.start_again().await.expect("start again");
    }
}

/// The server runs as the `postgres` OS user when the tests run as root: it must read the
/// key, which PostgreSQL accepts only with mode 0600 for its owner or 0640 owned by root.
fn readable_by_the_server(dir: &std::path::Path, key: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    if unsafe { libc::geteuid() } != 0 {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
        return;
    }
    let group = std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|g| {
            g.lines().find_map(|l| {
                l.strip_prefix("postgres:")?
                    .split(':')
                    .nth(1)?
                    .parse::<u32>()
                    .ok()
            })
        })
        .expect("a postgres group");
    std::os::unix::fs::chown(key, Some(0), Some(group)).unwrap();
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o640)).unwrap();
}
