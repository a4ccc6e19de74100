//! What the etcd demo examples share: connecting within the dial timeout, with one-line errors.

use std::time::Duration;

use coord::etcd::EtcdConfig;
use coord::{Error, Session};

/// Reaches etcd within the dial timeout and opens a session, or says why not in one line.
pub async fn connect(
    endpoints: &[String],
    dial_timeout_secs: f64,
    ttl: i64,
) -> Result<Session, String> {
    let dial = Duration::try_from_secs_f64(dial_timeout_secs)
        .map_err(|_| format!("invalid dial timeout {dial_timeout_secs}"))?;
    let backend = EtcdConfig::new(endpoints.iter().cloned())
        .with_connect_timeout(dial)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to etcd: {}", reason(&e)))?;
    Session::new(backend, ttl)
        .await
        .map_err(|e| format!("cannot start a session: {}", reason(&e)))
}

/// The error and its first cause, e.g. "backend unavailable: could not reach etcd at …".
pub fn reason(e: &Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}
