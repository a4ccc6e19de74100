//! PostgreSQL in the fault tests: a schema of the test's own, SQL from outside the code under
//! test, cutting a client's connections, and pointing a URL at the fault proxy.
//!
//! Every test works in a schema of its own ([`unique_schema`]): tests that share one server
//! (`POSTGRES_URL`) never see each other's keys or leases, so a test's lease list is exact, and
//! the test drops its schema at the end ([`drop_schema`]).

use std::time::Duration;

use coord_core::Result;
use coord_postgres::{PostgresBackend, PostgresConfig};
use pg_harness::TestPostgres;
use rand::Rng;

/// Whether `endpoint` is a PostgreSQL URL (`postgres://…` or `postgresql://…`) rather than an
/// etcd endpoint.
pub fn is_postgres_url(endpoint: &str) -> bool {
    let e = endpoint.trim();
    e.starts_with("postgres://") || e.starts_with("postgresql://")
}

/// A fresh schema name for one test, `chaos_<tag>_<random hex>` (`tag`: ASCII letters, digits
/// and `_`, at most 24 bytes).
pub fn unique_schema(tag: &str) -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("chaos_{tag}_{n:016x}")
}

/// Settings for `url` in `schema` with the fault tests' deadlines: `request_timeout` per call
/// (also the server's `statement_timeout`), 5 s to connect, and `application_name` `app` (the
/// watch hub's connection is `app/listen`), so a test can cut exactly this client's
/// connections.
pub fn config(url: &str, schema: &str, app: &str, request_timeout: Duration) -> PostgresConfig {
    PostgresConfig::new(url)
        .with_schema(schema)
        .with_application_name(app)
        .with_request_timeout(request_timeout)
        .with_connect_timeout(Duration::from_secs(5))
}

/// Connects with [`config`].
pub async fn connect(
    url: &str,
    schema: &str,
    app: &str,
    request_timeout: Duration,
) -> Result<PostgresBackend> {
    config(url, schema, app, request_timeout).connect().await
}

/// Splits a URL into what comes before its `host:port`, the `host:port`, and the rest.
fn split_address(url: &str) -> Option<(&str, &str, &str)> {
    let scheme_end = url.find("://")? + 3;
    let rest = &url[scheme_end..];
    let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let start = scheme_end + host_start;
    let end = scheme_end + authority_len;
    (start < end).then(|| (&url[..start], &url[start..end], &url[end..]))
}

/// The `host:port` a `postgres://` URL names (port 5432 when it names none); `None` for
/// libpq's key-value form.
pub fn address(url: &str) -> Option<String> {
    let (_, host_port, _) = split_address(url)?;
    let has_port = match host_port.rfind(']') {
        Some(bracket) => host_port[bracket..].contains(':'),
        None => host_port.contains(':'),
    };
    Some(if has_port {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    })
}

/// `url` with its `host:port` replaced by `endpoint` (the fault proxy's, say); user, password,
/// database and parameters stay.
///
/// # Panics
///
/// When `url` is not a `postgres://` URL.
pub fn via(url: &str, endpoint: &str) -> String {
    let (before, _, after) =
        split_address(url).unwrap_or_else(|| panic!("not a postgres:// URL: {url}"));
    format!("{before}{endpoint}{after}")
}

/// Opens a connection of its own to `url` (outside any backend, no TLS: the test servers are
/// on loopback), runs `f` on it, and closes it.
async fn with_client<T, F, Fut>(url: &str, f: F) -> std::result::Result<T, String>
where
    F: FnOnce(tokio_postgres::Client) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
{
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connecting to PostgreSQL: {e}"))?;
    let driver = tokio::spawn(conn);
    let out = f(client).await.map_err(|e| format!("PostgreSQL: {e}"));
    let _ = driver.await;
    out
}

/// Drops `schema` (and everything in it) on `url`, ignoring errors: cleanup at a test's end.
pub async fn drop_schema(url: &str, schema: &str) {
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let dropped = tokio::time::timeout(
        Duration::from_secs(30),
        with_client(url, |c| async move { c.batch_execute(&sql).await }),
    )
    .await;
    if !matches!(dropped, Ok(Ok(()))) {
        eprintln!("NOTICE: could not drop schema {schema}: {dropped:?}");
    }
}

/// Terminates (`pg_terminate_backend`) every client connection to the test database whose
/// `application_name` is `LIKE pattern`, waits until they are gone, and returns how many there
/// were. On a server of the test's own this is [`pg_harness::PgServer::terminate_backends`]
/// (as the superuser); on `POSTGRES_URL` the same statement runs as the URL's user, which may
/// terminate its own role's connections.
pub async fn terminate_backends(pg: &TestPostgres, pattern: &str) -> u64 {
    if let Some(server) = pg.server() {
        return tokio::task::block_in_place(|| server.terminate_backends(Some(pattern)))
            .expect("pg_terminate_backend");
    }
    let pattern = pattern.to_string();
    with_client(&pg.url(), |c| async move {
        let rows = c
            .query(
                "WITH t AS MATERIALIZED (\
                   SELECT pid, pg_terminate_backend(pid) AS ok FROM pg_stat_activity \
                   WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' \
                     AND datname = current_database() AND application_name LIKE $1) \
                 SELECT pid FROM t WHERE ok",
                &[&pattern],
            )
            .await?;
        let pids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                    &[&pids],
                )
                .await?
                .get(0);
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(pids.len() as u64);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("pg_terminate_backend")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_pointed_elsewhere() {
        let url = "postgres://coord:coord@127.0.0.1:5433/coord?sslmode=disable";
        assert_eq!(address(url).as_deref(), Some("127.0.0.1:5433"));
        assert_eq!(
            via(url, "127.0.0.1:40000"),
            "postgres://coord:coord@127.0.0.1:40000/coord?sslmode=disable"
        );
        assert_eq!(address("postgresql://h/db").as_deref(), Some("h:5432"));
        assert_eq!(
            address("postgres://u@[::1]:7/db").as_deref(),
            Some("[::1]:7")
        );
        assert_eq!(
            address("postgres://u@[::1]/db").as_deref(),
            Some("[::1]:5432")
        );
        assert_eq!(address("host=h port=5432"), None);
        assert!(is_postgres_url(url) && !is_postgres_url("127.0.0.1:2379"));
    }

    #[test]
    fn schemas_are_unique_and_valid() {
        let (a, b) = (unique_schema("t"), unique_schema("t"));
        assert_ne!(a, b);
        assert!(PostgresConfig::new("").with_schema(&a).schema().len() <= 48);
    }
}
