//! What the demos that run anywhere share: the store to run on — coord-mem by default, etcd with
//! `--endpoints`, PostgreSQL with `--postgres` (with the matching cargo feature) — and how a
//! demo ends: exit status 0 when all went as promised, 2 when the demo saw a broken promise
//! (its count printed), 1 on an error (printed with its causes).

use std::sync::Arc;

use coord::DynBackend;

/// Where a demo runs.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// etcd endpoints (comma-separated); without them (and without --postgres) the demo runs
    /// on coord-mem.
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        value_delimiter = ',',
        conflicts_with = "postgres"
    )]
    pub endpoints: Vec<String>,
    /// A PostgreSQL URL (postgres://user:password@host:port/db): run on PostgreSQL.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
}

/// The store the arguments name, and a description of it for the demo's first line (never a
/// password).
pub async fn connect(args: &StoreArgs) -> coord::Result<(DynBackend, String)> {
    if let Some(url) = &args.postgres {
        return connect_postgres(url).await;
    }
    if args.endpoints.is_empty() {
        return Ok((Arc::new(coord::mem::MemStore::new()), "coord-mem".into()));
    }
    connect_etcd(&args.endpoints).await
}

#[cfg(feature = "etcd")]
async fn connect_etcd(endpoints: &[String]) -> coord::Result<(DynBackend, String)> {
    let backend = coord::etcd::EtcdConfig::new(endpoints.iter().cloned())
        .connect()
        .await?;
    Ok((
        Arc::new(backend),
        format!("etcd at {}", endpoints.join(",")),
    ))
}

#[cfg(not(feature = "etcd"))]
async fn connect_etcd(_: &[String]) -> coord::Result<(DynBackend, String)> {
    Err(coord::Error::invalid(
        "this build has no etcd backend: run with `--features etcd`",
    ))
}

#[cfg(feature = "postgres")]
async fn connect_postgres(url: &str) -> coord::Result<(DynBackend, String)> {
    let backend = coord::postgres::PostgresConfig::new(url).connect().await?;
    // Host, port and database only: never print the URL's password.
    let at = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    let at = at.split_once("://").map_or(at, |(_, rest)| rest);
    let at = at.split('?').next().unwrap_or(at);
    Ok((Arc::new(backend), format!("PostgreSQL at {at}")))
}

#[cfg(not(feature = "postgres"))]
async fn connect_postgres(_: &str) -> coord::Result<(DynBackend, String)> {
    Err(coord::Error::invalid(
        "this build has no PostgreSQL backend: run with `--features postgres`",
    ))
}

/// Ends the demo `demo` with `result` (the broken promises it counted, or an error), as the
/// module docs say.
#[allow(dead_code)] // Not every includer of this module is a demo (tests/metrics_http.rs).
pub fn finish(demo: &str, result: coord::Result<usize>) -> ! {
    match result {
        Ok(0) => std::process::exit(0),
        Ok(_) => std::process::exit(2),
        Err(e) => {
            eprintln!("{demo}: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            std::process::exit(1);
        }
    }
}

/// coord-mem's arguments: no endpoints, no URL.
#[allow(dead_code)] // Used by the tests of some includers only.
pub fn mem() -> StoreArgs {
    StoreArgs {
        endpoints: Vec::new(),
        postgres: None,
    }
}

/// For a test: the etcd of the README's test command (`ETCD_ENDPOINTS`), or `None` (skipped,
/// with a notice) without it or without the `etcd` feature; under `CI=true` that fails instead.
#[allow(dead_code)] // Used by the tests of some includers only.
pub fn etcd_from_env() -> Option<StoreArgs> {
    match std::env::var("ETCD_ENDPOINTS") {
        Ok(endpoints) if cfg!(feature = "etcd") => Some(StoreArgs {
            endpoints: endpoints.split(',').map(str::to_owned).collect(),
            postgres: None,
        }),
        _ => missing("etcd (ETCD_ENDPOINTS and --features etcd)"),
    }
}

/// For a test: the PostgreSQL of the README's test command (`POSTGRES_URL`), as
/// [`etcd_from_env`] does for etcd.
#[allow(dead_code)] // Used by the tests of some includers only.
pub fn postgres_from_env() -> Option<StoreArgs> {
    match std::env::var("POSTGRES_URL") {
        Ok(url) if cfg!(feature = "postgres") => Some(StoreArgs {
            endpoints: Vec::new(),
            postgres: Some(url),
        }),
        _ => missing("PostgreSQL (POSTGRES_URL and --features postgres)"),
    }
}

/// A store a test cannot run on: a failure under `CI=true`, else a notice and `None`.
fn missing(what: &str) -> Option<StoreArgs> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} missing and CI=true"
    );
    eprintln!("NOTICE: no {what}; skipping that store");
    None
}
