//! Reaching the store with the global options: etcd endpoints, or one PostgreSQL URL.

use std::sync::Arc;
use std::time::Duration;

use coord_core::{DynBackend, Error, NameLabels, Session};
use coord_etcd::EtcdConfig;
use coord_postgres::PostgresConfig;

use crate::cli::Global;
use crate::exit::{Failure, USAGE};
use crate::signals::Signals;

/// The store the global options name.
pub enum Store {
    /// etcd at these settings.
    Etcd(EtcdConfig),
    /// PostgreSQL at this URL.
    Postgres(PostgresConfig),
}

impl Store {
    /// What it is, for messages: `etcd at a,b` or `PostgreSQL at host:port/db`.
    fn describe(&self) -> String {
        match self {
            Store::Etcd(config) => format!("etcd at {}", config.endpoints().join(",")),
            Store::Postgres(config) => format!("PostgreSQL at {}", postgres_target(&config.url())),
        }
    }
}

/// `host:port/db` of a PostgreSQL URL, without user or password.
fn postgres_target(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('?').next().unwrap_or(rest).to_string()
}

/// Whether `endpoint` is a PostgreSQL URL rather than an etcd endpoint.
fn is_postgres_url(endpoint: &str) -> bool {
    let e = endpoint.trim();
    e.starts_with("postgres://") || e.starts_with("postgresql://")
}

/// The store the global options describe: one `postgres://` URL, or etcd endpoints.
pub fn store(global: &Global) -> Result<Store, Failure> {
    let given: Vec<&str> = global
        .endpoints
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .collect();
    if !given.iter().any(|e| is_postgres_url(e)) {
        return config(global).map(Store::Etcd);
    }
    let [url] = given.as_slice() else {
        return Err(Failure::new(
            USAGE,
            "give one PostgreSQL URL, or etcd endpoints, not both",
        ));
    };
    if global.user.is_some() || global.cacert.is_some() || global.cert.is_some() {
        return Err(Failure::new(
            USAGE,
            "--user, --cacert and --cert are etcd options: put PostgreSQL credentials and \
             sslmode in the URL",
        ));
    }
    Ok(Store::Postgres(
        PostgresConfig::new(*url)
            .with_connect_timeout(global.dial_timeout)
            .with_application_name("coordctl"),
    ))
}

/// The etcd settings the global options describe.
pub fn config(global: &Global) -> Result<EtcdConfig, Failure> {
    if global.endpoints.iter().all(|e| e.trim().is_empty()) {
        return Err(Failure::new(USAGE, "no etcd endpoints given"));
    }
    let mut config = EtcdConfig::new(
        global
            .endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty()),
    )
    .with_connect_timeout(global.dial_timeout);
    match (&global.user, &global.password) {
        (Some(user), Some(password)) => config = config.with_user(user, password),
        (Some(user), None) => {
            let (user, password) = user.split_once(':').unwrap_or((user, ""));
            config = config.with_user(user, password);
        }
        (None, Some(_)) => {
            return Err(Failure::new(
                USAGE,
                "--password (ETCD_PASSWORD) needs --user",
            ))
        }
        (None, None) => {}
    }
    if let Some(ca) = &global.cacert {
        config = config.with_ca_cert(ca);
    }
    match (&global.cert, &global.key) {
        (Some(cert), Some(key)) => config = config.with_client_cert(cert, key),
        (None, None) => {}
        _ => {
            return Err(Failure::new(
                USAGE,
                "--cert and --key (ETCD_CERT, ETCD_KEY) go together",
            ))
        }
    }
    Ok(config)
}

/// Connects within the dial timeout, or fails with one line naming the endpoints. A stop
/// signal ends the attempt at once (128 + N): every subcommand connects through here or
/// [`connect_session`], so none can make Ctrl-C wait for the dial timeout.
pub async fn connect(global: &Global, signals: &mut Signals) -> Result<DynBackend, Failure> {
    tokio::select! {
        backend = dial(global) => backend,
        stop = signals.recv() => Err(stop.interrupted("connecting")),
    }
}

/// Connects, then opens a session with the `--ttl` lease; a stop signal ends either at once.
pub async fn connect_session(global: &Global, signals: &mut Signals) -> Result<Session, Failure> {
    let start = async {
        let backend = dial(global).await?;
        // One process, one name: labelling the metrics with it keeps them bounded.
        let name_labels = match global.metrics_addr {
            Some(_) => NameLabels::Full,
            None => NameLabels::Off,
        };
        Session::builder(backend)
            .with_ttl(global.ttl)
            .with_name_labels(name_labels)
            .build()
            .await
            .map_err(|e| Failure::coord("cannot start a session", &e))
    };
    tokio::select! {
        session = start => session,
        stop = signals.recv() => Err(stop.interrupted("connecting")),
    }
}

async fn dial(global: &Global) -> Result<DynBackend, Failure> {
    let store = store(global)?;
    let what = store.describe();
    let dial = global.dial_timeout;
    let fail = |e: &Error| Failure::coord(format!("cannot connect to {what}"), e);
    let connecting = async {
        match store {
            Store::Etcd(config) => config.connect().await.map(|b| Arc::new(b) as DynBackend),
            Store::Postgres(config) => config.connect().await.map(|b| Arc::new(b) as DynBackend),
        }
    };
    // `connect` promises to give up within the connect timeout; the margin only guards that.
    match tokio::time::timeout(dial + Duration::from_millis(500), connecting).await {
        Ok(Ok(backend)) => Ok(backend),
        Ok(Err(e @ Error::InvalidArgument { .. })) => Err(fail(&e)),
        Ok(Err(e)) => Err(Failure {
            // Whatever the cause (unreachable, refused, bad credentials), it is an error, not a
            // timeout of the wait.
            code: crate::exit::ERROR,
            ..fail(&e)
        }),
        Err(_) => Err(Failure::new(
            crate::exit::ERROR,
            format!(
                "cannot connect to {what}: no answer within {}",
                crate::human(dial)
            ),
        )),
    }
}

/// Closes the session (revoking its lease, so no key of it stays behind), within a bound: if
/// etcd cannot be reached the lease TTL does it.
pub async fn close(session: &Session) {
    match tokio::time::timeout(Duration::from_secs(3), session.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "closing the session failed; its TTL will end it")
        }
        Err(_) => tracing::debug!("closing the session timed out; its TTL will end it"),
    }
}
