//! Connection settings: the builder of [`EtcdBackend`](crate::EtcdBackend).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use coord_core::{BackendLimits, Error, Result};

use crate::backend::EtcdBackend;
use crate::transport::{TlsSettings, TransportSettings};

/// Where a PEM blob comes from: a file read at connect time, or bytes given directly.
#[derive(Clone)]
enum Pem {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Pem {
    fn load(&self, what: &str) -> Result<Vec<u8>> {
        match self {
            Pem::File(path) => std::fs::read(path).map_err(|e| {
                Error::invalid(format!("cannot read the {what} {}: {e}", path.display()))
            }),
            Pem::Bytes(bytes) => Ok(bytes.clone()),
        }
    }

    /// Debug that never shows key material: a path, or only the size of inline bytes.
    fn describe(&self) -> String {
        match self {
            Pem::File(path) => path.display().to_string(),
            Pem::Bytes(bytes) => format!("<{} PEM bytes>", bytes.len()),
        }
    }
}

#[derive(Clone, Default)]
struct Tls {
    ca_cert: Option<Pem>,
    client_cert: Option<(Pem, Pem)>,
    domain_name: Option<String>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca_cert", &self.ca_cert.as_ref().map(Pem::describe))
            .field(
                "client_cert",
                &self.client_cert.as_ref().map(|(cert, _)| cert.describe()),
            )
            .field(
                "client_key",
                // A path says where the key is; inline key bytes are never shown.
                &self.client_cert.as_ref().map(|(_, key)| match key {
                    Pem::File(path) => path.display().to_string(),
                    Pem::Bytes(_) => "<redacted>".to_string(),
                }),
            )
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

/// Connection settings for [`EtcdBackend`], built with consuming `with_*` setters and turned
/// into a backend by [`EtcdConfig::connect`]. Its `Debug` never shows the password or an inline
/// private key.
///
/// ```no_run
/// # async fn demo() -> coord_core::Result<()> {
/// use std::time::Duration;
/// let backend = coord_etcd::EtcdBackend::builder()
///     .with_endpoints(["127.0.0.1:2379", "127.0.0.1:22379"])
///     .with_user("app", "secret")
///     .with_request_timeout(Duration::from_secs(3))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct EtcdConfig {
    endpoints: Vec<String>,
    user: Option<(String, String)>,
    tls: Option<Tls>,
    connect_timeout: Duration,
    request_timeout: Duration,
    keep_alive: Option<(Duration, Duration)>,
    watch_backoff: (Duration, Duration),
    watch_reconnect_timeout: Option<Duration>,
    limits: BackendLimits,
    max_response_bytes: usize,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: Vec::new(),
            user: None,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            keep_alive: Some((Duration::from_secs(30), Duration::from_secs(10))),
            watch_backoff: (Duration::from_millis(50), Duration::from_secs(2)),
            watch_reconnect_timeout: Some(Duration::from_secs(60)),
            limits: BackendLimits::default(),
            max_response_bytes: 64 * 1024 * 1024,
        }
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .field("password", &self.user.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("watch_backoff", &self.watch_backoff)
            .field("watch_reconnect_timeout", &self.watch_reconnect_timeout)
            .field("limits", &self.limits)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

impl EtcdConfig {
    /// Settings for `endpoints` (`host:port`, `http://…` or `https://…`), with the defaults:
    /// connect timeout 5 s, request timeout 10 s, HTTP/2 keep-alive every 30 s (10 s timeout),
    /// watches re-opened for up to 60 s after a lost connection.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdConfig::default().with_endpoints(endpoints)
    }

    /// Settings from the environment:
    ///
    /// | variable | meaning |
    /// | --- | --- |
    /// | `ETCD_ENDPOINTS` | comma-separated endpoints (default `127.0.0.1:2379`) |
    /// | `ETCD_USER`, `ETCD_PASSWORD` | credentials; `ETCD_USER=name:password` also works |
    /// | `ETCD_CACERT` | CA certificate (PEM file): turns TLS on |
    /// | `ETCD_CERT`, `ETCD_KEY` | client certificate and key (PEM files), both or neither |
    ///
    /// [`Error::InvalidArgument`] when only one of `ETCD_CERT`/`ETCD_KEY` is set.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let endpoints: Vec<String> = get("ETCD_ENDPOINTS")
            .unwrap_or_else(|| "127.0.0.1:2379".to_string())
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        let mut config = EtcdConfig::new(endpoints);
        match (get("ETCD_USER"), get("ETCD_PASSWORD")) {
            (Some(user), Some(password)) => config = config.with_user(user, password),
            (Some(user), None) => {
                config = match user.split_once(':') {
                    Some((user, password)) => config.with_user(user, password),
                    None => config.with_user(user, ""),
                }
            }
            (None, Some(_)) => {
                return Err(Error::invalid("ETCD_PASSWORD is set but ETCD_USER is not"))
            }
            (None, None) => {}
        }
        if let Some(ca) = get("ETCD_CACERT") {
            config = config.with_ca_cert(ca);
        }
        match (get("ETCD_CERT"), get("ETCD_KEY")) {
            (Some(cert), Some(key)) => config = config.with_client_cert(cert, key),
            (None, None) => {}
            _ => {
                return Err(Error::invalid(
                    "ETCD_CERT and ETCD_KEY must be set together",
                ))
            }
        }
        Ok(config)
    }

    /// Replaces the endpoints. With several endpoints of one cluster, requests go to one member
    /// at a time and fail over to the next (see the crate docs).
    pub fn with_endpoints(
        mut self,
        endpoints: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one endpoint.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

    /// Authenticates as `user` (etcd auth); the token is refreshed when it expires.
    pub fn with_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    fn tls_mut(&mut self) -> &mut Tls {
        self.tls.get_or_insert_with(Tls::default)
    }

    /// Turns TLS on and trusts the CA certificate in this PEM file (read at connect time).
    /// Without a CA no server certificate is trusted.
    pub fn with_ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_mut().ca_cert = Some(Pem::File(path.into()));
        self
    }

    /// Like [`EtcdConfig::with_ca_cert`], with the PEM bytes.
    pub fn with_ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_mut().ca_cert = Some(Pem::Bytes(pem.into()));
        self
    }

    /// Turns TLS on and presents this client certificate and private key (PEM files).
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_mut().client_cert = Some((Pem::File(cert.into()), Pem::File(key.into())));
        self
    }

    /// Like [`EtcdConfig::with_client_cert`], with the PEM bytes.
    pub fn with_client_cert_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_mut().client_cert = Some((Pem::Bytes(cert.into()), Pem::Bytes(key.into())));
        self
    }

    /// Turns TLS on and checks the server certificate against this name instead of the
    /// endpoint's host.
    pub fn with_domain_name(mut self, name: impl Into<String>) -> Self {
        self.tls_mut().domain_name = Some(name.into());
        self
    }

    /// How long [`EtcdConfig::connect`] may take to reach a server (default 5 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline of every unary request (default 10 s): past it the call fails with
    /// [`Error::Unavailable`]. Also bounds opening a watch and one lease renewal.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// HTTP/2 keep-alive pings every `interval` while requests or watches are open; the
    /// connection is dropped when a ping is not answered within `timeout` (default 30 s / 10 s).
    /// etcd refuses pings more often than its `--grpc-keepalive-min-time` (5 s by default).
    pub fn with_keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive = Some((interval, timeout));
        self
    }

    /// No HTTP/2 keep-alive pings.
    pub fn without_keep_alive(mut self) -> Self {
        self.keep_alive = None;
        self
    }

    /// Backoff between attempts to re-open a broken watch: starts at `initial`, doubles up to
    /// `max` (default 50 ms to 2 s). The first attempt is immediate.
    pub fn with_watch_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.watch_backoff = (initial, max.max(initial));
        self
    }

    /// How long a broken watch keeps trying to re-open before its stream ends with
    /// [`Error::Unavailable`] (default 60 s); `None` retries forever.
    pub fn with_watch_reconnect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.watch_reconnect_timeout = timeout;
        self
    }

    /// The bounds [`coord_core::Backend::limits`] reports; set them when the server runs with
    /// a non-default `--max-request-bytes`.
    pub fn with_limits(mut self, limits: BackendLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Largest response (range answer or watch batch) the client decodes (default 64 MiB).
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The user name, if authenticating.
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(|(user, _)| user.as_str())
    }

    /// Whether TLS is on.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The watch backoff, `(initial, max)`.
    pub fn watch_backoff(&self) -> (Duration, Duration) {
        self.watch_backoff
    }

    /// How long a broken watch retries; `None` for ever.
    pub fn watch_reconnect_timeout(&self) -> Option<Duration> {
        self.watch_reconnect_timeout
    }

    /// The limits reported by the backend.
    pub fn limits(&self) -> BackendLimits {
        self.limits
    }

    /// The largest response decoded.
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// Connects: builds the client and makes one request (`Status`, which needs no
    /// permission), so a server that cannot be reached gives [`Error::Unavailable`] within the
    /// connect timeout, bad credentials [`Error::PermissionDenied`], and bad settings
    /// [`Error::InvalidArgument`].
    pub async fn connect(self) -> Result<EtcdBackend> {
        EtcdBackend::connect(self).await
    }

    /// The `etcd-client` options for these settings (the transport has its own, below).
    pub(crate) fn connect_options(&self) -> etcd_client::ConnectOptions {
        let options = etcd_client::ConnectOptions::new().with_require_leader(true);
        match &self.user {
            Some((user, password)) => options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true),
            None => options,
        }
    }

    /// The transport's settings, with the TLS material loaded.
    pub(crate) fn transport_settings(&self) -> Result<TransportSettings> {
        let tls = match &self.tls {
            Some(tls) => Some(TlsSettings {
                ca_cert: tls
                    .ca_cert
                    .as_ref()
                    .map(|ca| ca.load("CA certificate"))
                    .transpose()?,
                client_cert: match &tls.client_cert {
                    Some((cert, key)) => {
                        Some((cert.load("client certificate")?, key.load("client key")?))
                    }
                    None => None,
                },
                domain_name: tls.domain_name.clone(),
            }),
            None => None,
        };
        Ok(TransportSettings {
            endpoints: self.endpoints.clone(),
            tls,
            connect_timeout: self.connect_timeout,
            keep_alive: self.keep_alive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_password_and_inline_key() {
        let config = EtcdConfig::new(["127.0.0.1:2379"])
            .with_user("app", "hunter2-secret")
            .with_client_cert_pem("CERT", "PRIVATE-KEY-BYTES");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(!debug.contains("PRIVATE-KEY-BYTES"), "{debug}");
        assert!(debug.contains("app"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let pretty = format!("{config:#?}");
        assert!(!pretty.contains("hunter2-secret"));
    }

    #[test]
    fn from_env_reads_every_variable() {
        let env = |name: &str| {
            match name {
                "ETCD_ENDPOINTS" => Some("127.0.0.1:1, 127.0.0.1:2 ,"),
                "ETCD_USER" => Some("app:pw"),
                "ETCD_CACERT" => Some("/ca.pem"),
                "ETCD_CERT" => Some("/c.pem"),
                "ETCD_KEY" => Some("/k.pem"),
                _ => None,
            }
            .map(String::from)
        };
        let config = EtcdConfig::from_lookup(env).unwrap();
        assert_eq!(config.endpoints(), ["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(config.user(), Some("app"));
        assert_eq!(config.user.as_ref().unwrap().1, "pw");
        assert!(config.uses_tls());

        let config = EtcdConfig::from_lookup(|_| None).unwrap();
        assert_eq!(config.endpoints(), ["127.0.0.1:2379"]);
        assert!(!config.uses_tls());
        assert_eq!(config.user(), None);

        let half = |name: &str| (name == "ETCD_CERT").then(|| "/c.pem".to_string());
        assert!(matches!(
            EtcdConfig::from_lookup(half),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
