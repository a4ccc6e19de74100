//! Small helpers the fault tests share: connecting, unique prefixes, leak checks, polling.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use coord_core::{Backend, DynBackend, Error, KeyValue, LeaseId, RangeRequest, Result};
use coord_etcd::{EtcdBackend, EtcdConfig};
use rand::Rng;

use crate::pg;

/// The name of an error's variant, for asserts and reports (`"SessionExpired"`, …).
pub fn variant(e: &Error) -> &'static str {
    match e {
        Error::InvalidArgument { .. } => "InvalidArgument",
        Error::NotHeld { .. } => "NotHeld",
        Error::Locked => "Locked",
        Error::NotLeader => "NotLeader",
        Error::NoLeader => "NoLeader",
        Error::SessionExpired { .. } => "SessionExpired",
        Error::SessionClosed => "SessionClosed",
        Error::LeaseNotFound { .. } => "LeaseNotFound",
        Error::Compacted { .. } => "Compacted",
        Error::PermissionDenied { .. } => "PermissionDenied",
        Error::Unavailable { .. } => "Unavailable",
        Error::Timeout => "Timeout",
        Error::Cancelled => "Cancelled",
        Error::Backend { .. } => "Backend",
        Error::WouldDeadlock { .. } => "WouldDeadlock",
        Error::Unsupported { .. } => "Unsupported",
        _ => "Other",
    }
}

/// Connects to etcd with deadlines fit for fault tests: `request_timeout` per call, 5 s to
/// connect.
pub async fn connect(endpoints: &[String], request_timeout: Duration) -> Result<EtcdBackend> {
    EtcdConfig::new(endpoints.iter().cloned())
        .with_request_timeout(request_timeout)
        .with_connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// Where a test's clients connect: etcd, or a PostgreSQL database in a schema of the test's
/// own. Tests that run on both backends take one of these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Store {
    /// etcd at these endpoints.
    Etcd {
        /// `host:port` of each member.
        endpoints: Vec<String>,
    },
    /// PostgreSQL at `url`, every client in `schema`.
    Postgres {
        /// The `postgres://` URL.
        url: String,
        /// The schema (see [`pg::unique_schema`]).
        schema: String,
    },
}

impl Store {
    /// The store that `endpoints` name: a PostgreSQL URL (then `schema` is required), or etcd
    /// endpoints (as `chaos-worker --endpoints` takes them).
    pub fn from_endpoints(endpoints: Vec<String>, schema: Option<String>) -> Result<Store> {
        match endpoints.as_slice() {
            [url] if pg::is_postgres_url(url) => Ok(Store::Postgres {
                url: url.trim().to_string(),
                schema: schema.ok_or_else(|| Error::invalid("a PostgreSQL URL needs a schema"))?,
            }),
            _ if endpoints.iter().any(|e| pg::is_postgres_url(e)) => Err(Error::invalid(
                "give one PostgreSQL URL, or etcd endpoints, not both",
            )),
            [] => Err(Error::invalid("no endpoints")),
            _ => Ok(Store::Etcd { endpoints }),
        }
    }

    /// `"etcd"` or `"PostgreSQL"`, for reports.
    pub fn label(&self) -> &'static str {
        match self {
            Store::Etcd { .. } => "etcd",
            Store::Postgres { .. } => "PostgreSQL",
        }
    }

    /// What a worker is given as `--endpoints`: the etcd endpoints, or the one URL.
    pub fn endpoints(&self) -> Vec<String> {
        match self {
            Store::Etcd { endpoints } => endpoints.clone(),
            Store::Postgres { url, .. } => vec![url.clone()],
        }
    }

    /// The PostgreSQL schema, if this is PostgreSQL.
    pub fn schema(&self) -> Option<&str> {
        match self {
            Store::Etcd { .. } => None,
            Store::Postgres { schema, .. } => Some(schema),
        }
    }

    /// The `host:port` a fault proxy should forward to: the first etcd endpoint, or the
    /// PostgreSQL server's.
    pub fn address(&self) -> String {
        match self {
            Store::Etcd { endpoints } => endpoints[0].clone(),
            Store::Postgres { url, .. } => {
                pg::address(url).unwrap_or_else(|| panic!("not a postgres:// URL: {url}"))
            }
        }
    }

    /// Connects with `request_timeout` per call (5 s to connect); on PostgreSQL the
    /// connections are named `app` (see [`pg::config`]).
    pub async fn connect(&self, request_timeout: Duration, app: &str) -> Result<DynBackend> {
        match self {
            Store::Etcd { endpoints } => Ok(Arc::new(connect(endpoints, request_timeout).await?)),
            Store::Postgres { url, schema } => Ok(Arc::new(
                pg::connect(url, schema, app, request_timeout).await?,
            )),
        }
    }

    /// [`Store::connect`] through the fault proxy at `endpoint` (`host:port`).
    pub async fn connect_via(
        &self,
        endpoint: &str,
        request_timeout: Duration,
        app: &str,
    ) -> Result<DynBackend> {
        let through = match self {
            Store::Etcd { .. } => Store::Etcd {
                endpoints: vec![endpoint.to_string()],
            },
            Store::Postgres { url, schema } => Store::Postgres {
                url: pg::via(url, endpoint),
                schema: schema.clone(),
            },
        };
        through.connect(request_timeout, app).await
    }

    /// Removes what the test left in the store beyond its keys: on PostgreSQL, its schema.
    pub async fn cleanup(&self) {
        if let Store::Postgres { url, schema } = self {
            pg::drop_schema(url, schema).await;
        }
    }
}

/// A fresh key prefix for one test, `chaos/<tag>/<random>/`, so tests can share an etcd.
pub fn unique_prefix(tag: &str) -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("chaos/{tag}/{n:016x}/")
}

/// Every key under `prefix`.
pub async fn keys_under(backend: &dyn Backend, prefix: &[u8]) -> Result<Vec<KeyValue>> {
    Ok(backend
        .range(RangeRequest::prefix(prefix.to_vec()).with_keys_only())
        .await?
        .kvs)
}

/// Polls `check` every 50 ms until it returns `true` or `within` passes; returns its last
/// answer.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until no key is left under `prefix`; `Err` with the keys still there after `within`.
pub async fn wait_prefix_empty(
    backend: &dyn Backend,
    prefix: &[u8],
    within: Duration,
) -> std::result::Result<(), Vec<String>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left: Vec<String> = match keys_under(backend, prefix).await {
            Ok(kvs) => kvs
                .iter()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                .collect(),
            Err(e) => vec![format!("<read failed: {e}>")],
        };
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(left);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until none of `leases` is alive; `Err` with those still alive after `within`.
pub async fn wait_leases_gone(
    backend: &dyn Backend,
    leases: &[LeaseId],
    within: Duration,
) -> std::result::Result<(), Vec<LeaseId>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let alive: Vec<LeaseId> = match backend.lease_list().await {
            Ok(list) => leases
                .iter()
                .copied()
                .filter(|l| list.contains(l))
                .collect(),
            Err(_) => leases.to_vec(),
        };
        if alive.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(alive);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lowercase hex of bytes (lock keys in worker reports).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The inverse of [`hex`]; `None` on bad input.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrips() {
        let bytes = b"a/\x00\xff".to_vec();
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn prefixes_are_unique() {
        assert_ne!(unique_prefix("t"), unique_prefix("t"));
        assert!(unique_prefix("t").starts_with("chaos/t/"));
    }
}
