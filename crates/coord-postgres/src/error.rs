//! Mapping PostgreSQL failures into [`coord_core::Error`] by meaning, keeping the original as
//! source.
//!
//! The SQLSTATE decides: the codes this crate's functions raise (`CO001`…), then PostgreSQL's
//! classes. A failure without one (a closed connection, an I/O error, a TLS handshake, our
//! own deadline) is [`Error::Unavailable`].

use std::fmt;
use std::time::Duration;

use coord_core::{Error, LeaseId};
use tokio_postgres::error::SqlState;

/// Raised by the schema's functions: a put, revoke, … named a lease that does not exist (or
/// has expired). DETAIL holds the lease id.
pub(crate) const LEASE_NOT_FOUND: &str = "CO001";
/// A read or watch below the compact revision. DETAIL holds the compact revision.
pub(crate) const COMPACTED: &str = "CO002";
/// A read at, or compaction to, a revision after the current one.
pub(crate) const FUTURE_REVISION: &str = "CO003";

/// This crate's own failures, kept as the `source` of a [`coord_core::Error`].
#[derive(Debug)]
pub(crate) enum PgError {
    /// An error of `tokio-postgres` (a server error, a closed connection, …).
    Client(tokio_postgres::Error),
    /// The pool could not hand out a connection.
    Pool(String, Option<tokio_postgres::Error>),
    /// A call got no answer within the request timeout.
    Timeout {
        /// The operation.
        op: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// Anything else, described.
    Other(String),
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Client(e) => match e.as_db_error() {
                Some(db) => write!(f, "PostgreSQL: {} ({})", db.message(), db.code().code()),
                None => write!(f, "PostgreSQL connection: {e}"),
            },
            PgError::Pool(msg, _) => write!(f, "PostgreSQL connection pool: {msg}"),
            PgError::Timeout { op, after } => {
                write!(f, "PostgreSQL did not answer {op} within {after:?}")
            }
            PgError::Other(msg) => write!(f, "PostgreSQL: {msg}"),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgError::Client(e) => Some(e),
            PgError::Pool(_, Some(e)) => Some(e),
            _ => None,
        }
    }
}

/// What a failure means, before it is turned into an [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Unavailable,
    PermissionDenied,
    LeaseNotFound,
    Compacted,
    InvalidArgument,
    Other,
}

/// Whether a server error says the statement surely did not take effect, whatever it was: the
/// transaction was rolled back to resolve a conflict, or the connection was refused before it
/// ran. Sending a write again, on another connection, is safe only then.
pub(crate) fn surely_not_applied(code: &SqlState) -> bool {
    matches!(
        code.code(),
        // serialization_failure, deadlock_detected, cannot_connect_now, too_many_connections
        "40001" | "40P01" | "57P03" | "53300"
    )
}

/// Whether a server error says the session or the server is going away (or the transaction
/// was rolled back to resolve a conflict): a read may be sent again on another connection. A
/// write may not, unless [`surely_not_applied`]: a termination (`57P01`) can be reported after
/// the commit, while the answer was being sent.
pub(crate) fn rolled_back(code: &SqlState) -> bool {
    let c = code.code();
    matches!(
        c,
        // admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped
        "57P01" | "57P02" | "57P03" | "57P04"
        // serialization_failure, deadlock_detected
        | "40001" | "40P01"
        // too_many_connections
        | "53300"
    ) || c.starts_with("08")
}

/// What a `tokio-postgres` error means.
pub(crate) fn classify(e: &tokio_postgres::Error) -> Kind {
    let Some(db) = e.as_db_error() else {
        // No SQLSTATE: a closed connection, an I/O failure, a connect timeout: transient. But
        // a certificate that does not verify needs a configuration change, not a retry.
        if chain_text(e).to_ascii_lowercase().contains("certificate") {
            return Kind::Other;
        }
        return Kind::Unavailable;
    };
    let code = db.code();
    let c = code.code();
    match c {
        LEASE_NOT_FOUND => return Kind::LeaseNotFound,
        COMPACTED => return Kind::Compacted,
        FUTURE_REVISION => return Kind::InvalidArgument,
        // query_canceled: statement_timeout (our request timeout, set on the server too).
        "57014" => return Kind::Unavailable,
        // insufficient_privilege, invalid_authorization_specification, invalid_password
        "42501" | "28000" | "28P01" => return Kind::PermissionDenied,
        _ => {}
    }
    if rolled_back(code) || c.starts_with("53") {
        // Also insufficient_resources (disk full, out of memory): may pass on retry.
        Kind::Unavailable
    } else if c.starts_with("22") || c == "54000" {
        // data_exception, program_limit_exceeded: the input was out of what PostgreSQL takes.
        Kind::InvalidArgument
    } else {
        Kind::Other
    }
}

/// Every message of an error and its sources, joined.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Builds the [`Error`] for `kind`. `lease` names the lease for [`Error::LeaseNotFound`] when
/// the server did not (it does, in DETAIL).
pub(crate) fn build(kind: Kind, source: PgError, lease: LeaseId) -> Error {
    let detail = |source: &PgError| match source {
        PgError::Client(e) => e
            .as_db_error()
            .and_then(|db| db.detail())
            .and_then(|d| d.trim().parse::<i64>().ok()),
        _ => None,
    };
    match kind {
        Kind::Unavailable => Error::Unavailable {
            source: Box::new(source),
        },
        Kind::PermissionDenied => Error::PermissionDenied {
            source: Box::new(source),
        },
        Kind::LeaseNotFound => Error::LeaseNotFound {
            lease: detail(&source).unwrap_or(lease),
        },
        Kind::Compacted => Error::Compacted {
            compact_revision: detail(&source).unwrap_or(0),
        },
        Kind::InvalidArgument => Error::InvalidArgument {
            reason: match &source {
                PgError::Client(e) => match e.as_db_error() {
                    Some(db) => db.message().to_string(),
                    None => e.to_string(),
                },
                other => other.to_string(),
            },
        },
        Kind::Other => Error::Backend {
            source: Box::new(source),
        },
    }
}

/// Maps a `tokio-postgres` error; `lease` is the lease the request named (`0` if none).
pub(crate) fn from_client(e: tokio_postgres::Error, lease: LeaseId) -> Error {
    let kind = classify(&e);
    build(kind, PgError::Client(e), lease)
}

/// Maps a failure to get a pooled connection: the server refused or did not answer (a
/// connection error, mapped as any), or the pool's own limits.
pub(crate) fn from_pool(e: deadpool_postgres::PoolError) -> Error {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => from_client(e, 0),
        PoolError::PostCreateHook(hook) => match hook {
            deadpool_postgres::HookError::Backend(e) => from_client(e, 0),
            other => Error::Unavailable {
                source: Box::new(PgError::Pool(other.to_string(), None)),
            },
        },
        other => Error::Unavailable {
            source: Box::new(PgError::Pool(other.to_string(), None)),
        },
    }
}

/// The error of a call that got no answer in time.
pub(crate) fn timeout(op: &'static str, after: Duration) -> Error {
    Error::Unavailable {
        source: Box::new(PgError::Timeout { op, after }),
    }
}

/// An answer that breaks what the schema's functions promise.
pub(crate) fn protocol(msg: impl Into<String>) -> Error {
    Error::Backend {
        source: Box::new(PgError::Other(msg.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_by_meaning() {
        let unavailable = [
            "57P01", "57P02", "57P03", "40001", "40P01", "08006", "53300",
        ];
        for c in unavailable {
            assert!(rolled_back(&SqlState::from_code(c)), "{c}");
        }
        assert!(!rolled_back(&SqlState::from_code("23505")));
        assert!(!rolled_back(&SqlState::from_code("57014")));
    }

    #[test]
    fn keeps_the_source() {
        let e = timeout("txn", Duration::from_millis(500));
        assert!(e.is_retryable());
        let source = std::error::Error::source(&e).unwrap();
        assert!(source.to_string().contains("txn"), "{source}");
    }
}
