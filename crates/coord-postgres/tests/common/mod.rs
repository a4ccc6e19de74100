//! What every PostgreSQL test of this crate shares: where the server is, and one schema per
//! test process.
//!
//! The server: `POSTGRES_URL` (set by the README's test command, or by hand). With `CI=true`
//! a missing URL fails the test instead of skipping it. When `pg-harness` lands, `url()` is the
//! one line to change (to its `postgres_for_tests()`).
//!
//! The schema: every test process works in its own randomly named schema
//! (`coord_test_<hex>`), so test binaries that share one server never meet, and drops it when
//! the process exits.
#![allow(dead_code)] // Each test file uses its own part of this module.

use std::sync::OnceLock;
use std::time::Duration;

use coord_postgres::{PostgresBackend, PostgresConfig};

static SCHEMA: OnceLock<String> = OnceLock::new();

/// The server's URL, or `None` (test skipped) when there is none and this is not CI.
pub fn url() -> Option<String> {
    match std::env::var("POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true: tests that need PostgreSQL must run, but POSTGRES_URL is not set")
        }
        _ => {
            eprintln!("POSTGRES_URL is not set: skipping a test that needs PostgreSQL");
            None
        }
    }
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
    let (Some(schema), Ok(url)) = (SCHEMA.get().cloned(), std::env::var("POSTGRES_URL")) else {
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

async fn psql_on(url: &str, sql: &str) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client.query(sql, &[]).await
}

/// Runs one statement on the test server, outside any backend (to kill connections, read
/// table sizes, …), and returns its rows.
pub async fn psql(sql: &str) -> Vec<tokio_postgres::Row> {
    let url = url().expect("POSTGRES_URL");
    psql_on(&url, sql).await.expect("psql")
}
