//! Connection settings: the builder of [`PostgresBackend`](crate::PostgresBackend).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use coord_core::{BackendLimits, Error, Result};

use crate::backend::PostgresBackend;

/// Where a PEM blob comes from: a file read at connect time, or bytes given directly.
#[derive(Clone)]
pub(crate) enum Pem {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Pem {
    pub(crate) fn load(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Pem::File(path) => std::fs::read(path).map_err(|e| {
                Error::invalid(format!("cannot read the {what} {}: {e}", path.display()))
            }),
            Pem::Bytes(bytes) => Ok(bytes.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Pem::File(path) => path.display().to_string(),
            Pem::Bytes(bytes) => format!("<{} PEM bytes>", bytes.len()),
        }
    }
}

/// Settings for [`PostgresBackend`], built with consuming `with_*` setters and turned into a
/// backend by [`PostgresConfig::connect`]. Its `Debug` never shows the password.
///
/// ```no_run
/// # async fn demo() -> coord_core::Result<()> {
/// use std::time::Duration;
/// use coord_postgres::PostgresConfig;
///
/// let backend = PostgresConfig::new("postgres://app:secret@db.internal/app?sslmode=require")
///     .with_schema("coord_billing")
///     .with_ca_cert("/etc/ssl/db-ca.pem")
///     .with_request_timeout(Duration::from_secs(3))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresConfig {
    pub(crate) url: String,
    pub(crate) schema: String,
    pub(crate) application_name: String,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) history_retention: u64,
    pub(crate) reap_interval: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) watch_reconnect_timeout: Option<Duration>,
    pub(crate) limits: BackendLimits,
    pub(crate) ca_cert: Option<Pem>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: String::new(),
            schema: Self::DEFAULT_SCHEMA.to_string(),
            application_name: "coord".to_string(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            history_retention: Self::DEFAULT_HISTORY_RETENTION,
            reap_interval: Duration::from_millis(250),
            poll_interval: Duration::from_secs(1),
            watch_reconnect_timeout: Some(Duration::from_secs(60)),
            limits: BackendLimits::default(),
            ca_cert: None,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("application_name", &self.application_name)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("history_retention", &self.history_retention)
            .field("reap_interval", &self.reap_interval)
            .field("poll_interval", &self.poll_interval)
            .field("watch_reconnect_timeout", &self.watch_reconnect_timeout)
            .field("limits", &self.limits)
            .field("ca_cert", &self.ca_cert.as_ref().map(Pem::describe))
            .finish()
    }
}

impl PostgresConfig {
    /// The schema used when none is configured.
    pub const DEFAULT_SCHEMA: &'static str = "coord";

    /// Revisions of history kept by default for watches and past reads.
    pub const DEFAULT_HISTORY_RETENTION: u64 = 10_000;

    /// Settings for the database at `url` (`postgres://user:password@host:port/db?sslmode=…`
    /// or libpq's `host=… user=…` form), with the defaults: schema `coord`, 16 pooled
    /// connections, connect timeout 5 s, request timeout 10 s, 10,000 revisions of history,
    /// leases reaped every 250 ms, a fallback poll of the change log every second.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            ..PostgresConfig::default()
        }
    }

    /// Settings from the environment: `POSTGRES_URL` (required) and `COORD_POSTGRES_SCHEMA`
    /// (optional). [`Error::InvalidArgument`] when `POSTGRES_URL` is not set.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let url = get("POSTGRES_URL").ok_or_else(|| Error::invalid("POSTGRES_URL is not set"))?;
        let mut config = PostgresConfig::new(url.trim());
        if let Some(schema) = get("COORD_POSTGRES_SCHEMA") {
            config = config.with_schema(schema.trim());
        }
        Ok(config)
    }

    /// Replaces the connection URL.
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// The schema that holds coord's tables and functions (default `coord`); several
    /// applications share one database by using one schema each. Created on first use. A
    /// name of ASCII letters, digits and `_`, starting with a letter or `_`, at most 48 bytes
    /// (checked at connect time).
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The `application_name` of this backend's connections (default `coord`; the watch
    /// listener's is this with `/listen` appended), which `pg_stat_activity` shows.
    pub fn with_application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// Most pooled connections for calls (default 16). Watches use one more connection of
    /// their own, whatever their number.
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long connecting may take (default 5 s), for [`PostgresConfig::connect`] and for
    /// every new connection after it.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline of every call (default 10 s), waiting for a pooled connection and any
    /// retries included: past it the call fails with [`Error::Unavailable`]. The server's
    /// `statement_timeout` on this backend's connections is set to it too.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Revisions of history kept for watches and past reads (default 10,000); older ones are
    /// compacted automatically, in batches, by every connected backend. A watch of this
    /// process that is behind holds this process's compaction back (see the crate docs).
    pub fn with_history_retention(mut self, revisions: u64) -> Self {
        self.history_retention = revisions.max(1);
        self
    }

    /// Longest pause between two passes of this backend's lease reaper (default 250 ms): a
    /// lease ends within its TTL plus about this. The reaper wakes earlier when a lease is
    /// due sooner.
    pub fn with_reap_interval(mut self, interval: Duration) -> Self {
        self.reap_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Longest pause between two reads of the change log by the watch hub when no
    /// notification arrives (default 1 s). Notifications wake it at once; this bounds the
    /// delay if one is lost, and checks that the listening connection is alive.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How long the watch hub keeps trying to reconnect its listening connection before the
    /// open watches end with [`Error::Unavailable`] (default 60 s); `None` retries forever.
    pub fn with_watch_reconnect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.watch_reconnect_timeout = timeout;
        self
    }

    /// The request and TTL bounds the backend enforces and reports (default etcd's: 1.5 MiB
    /// requests, TTL from 1 s to 9,000,000,000 s).
    pub fn with_limits(mut self, limits: BackendLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Trusts the CA certificate(s) in this PEM file (read at connect time) for TLS: the
    /// server's certificate must chain to one of them. With `sslmode=require` and no CA, the
    /// connection is encrypted but the server is not authenticated (libpq's `require`).
    pub fn with_ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(Pem::File(path.into()));
        self
    }

    /// Like [`PostgresConfig::with_ca_cert`], with the PEM bytes.
    pub fn with_ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_cert = Some(Pem::Bytes(pem.into()));
        self
    }

    /// The connection URL, password hidden.
    pub fn url(&self) -> String {
        redact_url(&self.url)
    }

    /// The schema name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The application name of the connections.
    pub fn application_name(&self) -> &str {
        &self.application_name
    }

    /// The pool size.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The per-call timeout.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Revisions of history kept.
    pub fn history_retention(&self) -> u64 {
        self.history_retention
    }

    /// The reaper's longest pause.
    pub fn reap_interval(&self) -> Duration {
        self.reap_interval
    }

    /// The watch hub's fallback poll interval.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// How long broken watches wait for the listener to reconnect; `None` for ever.
    pub fn watch_reconnect_timeout(&self) -> Option<Duration> {
        self.watch_reconnect_timeout
    }

    /// The limits the backend reports.
    pub fn limits(&self) -> BackendLimits {
        self.limits
    }

    /// Connects: creates or migrates the schema (see the crate docs), opens the pool and
    /// starts the lease reaper. A server that cannot be reached gives [`Error::Unavailable`]
    /// within the connect timeout, refused credentials [`Error::PermissionDenied`], bad
    /// settings [`Error::InvalidArgument`].
    pub async fn connect(self) -> Result<PostgresBackend> {
        PostgresBackend::connect(self).await
    }

    /// The schema name, checked: quoted everywhere, but kept to plain identifiers so that the
    /// NOTIFY channel derived from it stays within PostgreSQL's 63-byte names.
    pub(crate) fn checked_schema(&self) -> Result<&str> {
        let s = self.schema.as_str();
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || s.len() > 48 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::invalid(format!(
                "schema name {s:?}: use 1 to 48 ASCII letters, digits or '_', not starting with a digit"
            )));
        }
        Ok(s)
    }
}

/// `url` with its password replaced by `<redacted>`: in a URL's user info, and in libpq's
/// `password=…` key-value form.
pub(crate) fn redact_url(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .map(|r| ("postgres://", r))
        .or_else(|| {
            url.strip_prefix("postgresql://")
                .map(|r| ("postgresql://", r))
        })
    {
        let (scheme, rest) = rest;
        // User info ends at the last '@' before the path or query.
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let tail = redact_query(tail);
        if let Some(at) = authority.rfind('@') {
            let (userinfo, host) = authority.split_at(at);
            if let Some(colon) = userinfo.find(':') {
                return format!("{scheme}{}:<redacted>{host}{tail}", &userinfo[..colon]);
            }
        }
        return format!("{scheme}{authority}{tail}");
    }
    // libpq key-value form: `password=secret` or `password='se cret'`.
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(pos) = rest.find("password") {
        let (before, after) = rest.split_at(pos);
        out.push_str(before);
        let after_key = &after["password".len()..];
        let trimmed = after_key.trim_start();
        if let Some(value) = trimmed.strip_prefix('=') {
            out.push_str("password=<redacted>");
            let value = value.trim_start();
            rest = if let Some(quoted) = value.strip_prefix('\'') {
                let mut end = quoted.len();
                let mut escaped = false;
                for (i, c) in quoted.char_indices() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '\'' {
                        end = i + 1;
                        break;
                    }
                }
                &quoted[end.min(quoted.len())..]
            } else {
                let end = value.find(char::is_whitespace).unwrap_or(value.len());
                &value[end..]
            };
        } else {
            out.push_str("password");
            rest = after_key;
        }
    }
    out.push_str(rest);
    out
}

/// A URL's query with any `password=` parameter redacted.
fn redact_query(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_string();
    };
    let (path, query) = tail.split_at(q + 1);
    let parts: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=<redacted>"),
            _ => p.to_string(),
        })
        .collect();
    format!("{path}{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        for url in [
            "postgres://app:hunter2-secret@db:5432/x?sslmode=require",
            "postgresql://app:hunter2-secret@db/x",
            "postgres://app@db/x?password=hunter2-secret&sslmode=disable",
            "host=db user=app password=hunter2-secret dbname=x",
            "host=db password = 'hunter2 secret' dbname=x",
        ] {
            let config = PostgresConfig::new(url).with_ca_cert_pem("PEM");
            let debug = format!("{config:?} {config:#?} {}", config.url());
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(debug.contains("<redacted>"), "{debug}");
            assert!(debug.contains("db"), "{debug}");
        }
        assert_eq!(
            redact_url("postgres://app@db/x"),
            "postgres://app@db/x",
            "nothing to hide"
        );
    }

    #[test]
    fn from_env_reads_url_and_schema() {
        let env = |name: &str| match name {
            "POSTGRES_URL" => Some("postgres://u@h/db ".to_string()),
            "COORD_POSTGRES_SCHEMA" => Some("app1".to_string()),
            _ => None,
        };
        let config = PostgresConfig::from_lookup(env).unwrap();
        assert_eq!(config.url, "postgres://u@h/db");
        assert_eq!(config.schema(), "app1");
        let config = PostgresConfig::from_lookup(|n| {
            (n == "POSTGRES_URL").then(|| "postgres://u@h/db".to_string())
        })
        .unwrap();
        assert_eq!(config.schema(), PostgresConfig::DEFAULT_SCHEMA);
        assert!(matches!(
            PostgresConfig::from_lookup(|_| None),
            Err(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn schema_names_are_checked() {
        for ok in ["coord", "_x", "App_1", &"a".repeat(48)] {
            assert!(
                PostgresConfig::new("")
                    .with_schema(ok)
                    .checked_schema()
                    .is_ok(),
                "{ok}"
            );
        }
        for bad in ["", "1abc", "a-b", "a b", "a\"b", "é", &"a".repeat(49)] {
            assert!(
                PostgresConfig::new("")
                    .with_schema(bad)
                    .checked_schema()
                    .is_err(),
                "{bad}"
            );
        }
    }
}
