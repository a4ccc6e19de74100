//! What the etcd demo examples share: connecting within the dial timeout, with one-line errors.

use std::time::Duration;

use coord::etcd::EtcdConfig;
use coord::{Error, Session};

/// The options every etcd demo takes: where etcd is, how long to try, the session TTL.
#[derive(clap::Args, Debug)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Session TTL in seconds: how long a crashed process's locks and leadership outlive it.
    #[arg(long, default_value_t = 10)]
    pub ttl: i64,
    /// Seconds to try to reach etcd before giving up.
    #[arg(long, default_value_t = 3.0)]
    pub dial_timeout: f64,
}

/// Reaches etcd within the dial timeout and opens a session, or says why not in one line.
pub async fn connect(etcd: &EtcdArgs) -> Result<Session, String> {
    let dial = Duration::try_from_secs_f64(etcd.dial_timeout)
        .map_err(|_| format!("invalid dial timeout {}", etcd.dial_timeout))?;
    let ttl = etcd.ttl;
    let backend = EtcdConfig::new(etcd.endpoints.iter().cloned())
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
