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

/// A throwaway PostgreSQL of a test's own, for what a shared server cannot give: TLS settings,
/// a restart. Run as the `postgres` OS user (initdb refuses root), in a temp dir, on a free
/// loopback port; stopped when dropped. `pg-harness`'s `PgServer` replaces this when it lands.
pub struct OwnServer {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl OwnServer {
    /// Starts a server (with TLS when `tls` gives a PEM certificate and key), or `None`
    /// (skip; under `CI=true`, a panic) when PostgreSQL's binaries or root are missing.
    pub fn start(tls: Option<(&str, &str)>) -> Option<OwnServer> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|dirs| {
                dirs.filter_map(|d| d.ok().map(|d| d.path().join("bin")))
                    .filter(|b| b.join("initdb").exists())
                    .max()
            });
        let is_root = unsafe { libc::geteuid() } == 0;
        let Some(bin) = bin.filter(|_| is_root) else {
            assert!(
                !ci,
                "CI=true: PostgreSQL's server binaries (and root) are needed"
            );
            eprintln!("no PostgreSQL server binaries (or not root): skipping");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |args: &[&str]| {
            let out = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .output()
                .expect("runuser");
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let chown = |path: &std::path::Path| {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres"])
                .arg(path)
                .status()
                .expect("chown");
            assert!(status.success());
        };
        chown(dir.path());
        let data = dir.path().join("data");
        run(&[
            bin.join("initdb").to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "--auth=trust",
            "-U",
            "postgres",
        ]);
        if let Some((cert, key)) = tls {
            std::fs::write(data.join("server.crt"), cert).unwrap();
            std::fs::write(data.join("server.key"), key).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            chown(&data);
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            use std::io::Write;
            writeln!(conf, "ssl = on").unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = OwnServer { dir, bin, port };
        server.pg_ctl(&["start"]);
        Some(server)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let out = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap()])
            .args(["-o", &opts, "-w"])
            .args(args)
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The server's URL (plain TCP; add `?sslmode=…`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: every connection is cut, committed data stays.
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "fast"]);
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}
