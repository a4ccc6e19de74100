//! Mapping etcd failures into [`coord_core::Error`] by meaning, keeping the original as source.
//!
//! etcd reports most failures as a gRPC status whose message is one of the fixed texts of
//! `etcdserver/api/v3rpc/rpctypes`; the message decides first (it is the precise one), then the
//! status code. Transport failures and our own deadlines are [`Error::Unavailable`].

use std::fmt;
use std::time::Duration;

use coord_core::{Error, LeaseId};
use tonic::Code;

/// This crate's own failures, kept as the `source` of a [`coord_core::Error`].
#[derive(Debug)]
pub(crate) enum EtcdError {
    /// An error of `etcd-client` (a gRPC status, a transport error, …).
    Client(etcd_client::Error),
    /// A request got no answer within the request timeout.
    Timeout {
        /// The operation.
        op: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// No server answered `connect`'s probe in time.
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The connect timeout.
        after: Duration,
        /// The last failure seen, if any.
        last: Option<Error>,
    },
    /// Anything else, described.
    Other(String),
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::Client(_) => f.write_str("etcd request failed"),
            EtcdError::Timeout { op, after } => {
                write!(f, "etcd did not answer {op} within {after:?}")
            }
            EtcdError::Unreachable {
                endpoints, after, ..
            } => write!(f, "could not reach etcd at {endpoints} within {after:?}"),
            EtcdError::Other(msg) => write!(f, "etcd: {msg}"),
        }
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EtcdError::Client(e) => Some(e),
            EtcdError::Unreachable { last, .. } => last.as_ref().map(|e| e as _),
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

/// Classifies an etcd error message (or a watch's cancel reason).
pub(crate) fn classify_message(msg: &str) -> Option<Kind> {
    const TABLE: &[(&str, Kind)] = &[
        ("requested lease not found", Kind::LeaseNotFound),
        ("required revision has been compacted", Kind::Compacted),
        (
            "required revision is a future revision",
            Kind::InvalidArgument,
        ),
        ("permission denied", Kind::PermissionDenied),
        ("authentication failed", Kind::PermissionDenied),
        ("invalid auth token", Kind::PermissionDenied),
        ("user name is empty", Kind::PermissionDenied),
        ("user name not found", Kind::PermissionDenied),
        ("authentication is not enabled", Kind::PermissionDenied),
        ("request is too large", Kind::InvalidArgument),
        ("larger than max", Kind::InvalidArgument),
        ("duplicate key given in txn request", Kind::InvalidArgument),
        ("key is not provided", Kind::InvalidArgument),
        ("too many operations in txn request", Kind::InvalidArgument),
        ("too large lease ttl", Kind::InvalidArgument),
        ("lease already exists", Kind::InvalidArgument),
        ("watcher range is empty", Kind::InvalidArgument),
        ("no leader", Kind::Unavailable),
        ("leader changed", Kind::Unavailable),
        ("request timed out", Kind::Unavailable),
        ("too many requests", Kind::Unavailable),
        ("server stopped", Kind::Unavailable),
        ("not capable", Kind::Unavailable),
        ("unhealthy cluster", Kind::Unavailable),
        ("database space exceeded", Kind::Other),
    ];
    let msg = msg.to_ascii_lowercase();
    TABLE
        .iter()
        .find(|(text, _)| msg.contains(text))
        .map(|&(_, kind)| kind)
}

fn classify_status(status: &tonic::Status) -> Kind {
    if let Some(kind) = classify_message(status.message()) {
        return kind;
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
            Kind::Unavailable
        }
        Code::PermissionDenied | Code::Unauthenticated => Kind::PermissionDenied,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            Kind::InvalidArgument
        }
        // A dropped connection surfaces as Unknown/Internal carrying the transport's text.
        Code::Unknown | Code::Internal if is_transport_text(status.message()) => Kind::Unavailable,
        _ => Kind::Other,
    }
}

fn is_transport_text(msg: &str) -> bool {
    let msg = msg.to_ascii_lowercase();
    [
        "transport",
        "h2 protocol",
        "connection",
        "broken pipe",
        "tcp connect",
        "stream closed",
        "error reading a body",
        "operation was canceled",
    ]
    .iter()
    .any(|t| msg.contains(t))
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

/// TLS handshake failures need a configuration change, not a retry: the server refusing our
/// certificate is a permission matter; our refusing the server's is a misconfiguration.
fn classify_tls(text: &str) -> Option<Kind> {
    let text = text.to_ascii_lowercase();
    let refused_us = [
        "badcertificate",
        "bad certificate",
        "certificaterequired",
        "certificate required",
        "unknownca",
        "unknown ca",
    ];
    let refused_them = [
        "invalid peer certificate",
        "unknownissuer",
        "certificate verify failed",
        "notvalidforname",
    ];
    if refused_us.iter().any(|t| text.contains(t)) {
        Some(Kind::PermissionDenied)
    } else if refused_them.iter().any(|t| text.contains(t)) {
        Some(Kind::Other)
    } else {
        None
    }
}

/// Whether the member that answered has no raft leader (cut off from the majority).
pub(crate) fn is_no_leader(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("no leader"))
}

/// Whether the request provably never reached a server (the connection could not be made), so
/// sending it again cannot apply it twice. tonic reports a failed reconnect of one endpoint of
/// the balanced channel to the next request routed to it, even when other endpoints are fine.
pub(crate) fn never_sent(e: &etcd_client::Error) -> bool {
    let text = match e {
        etcd_client::Error::GRpcStatus(status) if status.code() == Code::Unavailable => {
            chain_text(status)
        }
        etcd_client::Error::TransportError(t) => chain_text(t),
        _ => return false,
    };
    let text = text.to_ascii_lowercase();
    (text.contains("tcp connect error") || text.contains("connecterror"))
        && classify_tls(&text).is_none()
}

/// What an `etcd-client` error means.
pub(crate) fn classify(e: &etcd_client::Error) -> Kind {
    use etcd_client::Error as E;
    let transport_text = match e {
        E::GRpcStatus(status) => Some(chain_text(status)),
        E::TransportError(t) => Some(chain_text(t)),
        _ => None,
    };
    if let Some(kind) = transport_text.as_deref().and_then(classify_tls) {
        return kind;
    }
    match e {
        E::GRpcStatus(status) => classify_status(status),
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) => Kind::Unavailable,
        E::LeaseKeepAliveError(msg) if msg.contains("not found") => Kind::LeaseNotFound,
        E::LeaseKeepAliveError(_) => Kind::Unavailable,
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) | E::Utf8Error(_) => {
            Kind::InvalidArgument
        }
        _ => Kind::Other,
    }
}

/// The message of an `etcd-client` error, for [`Error::InvalidArgument`]'s reason.
fn reason(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(status) => status.message().to_string(),
        other => other.to_string(),
    }
}

/// Builds the [`Error`] for `kind`. `lease` names the lease for [`Error::LeaseNotFound`];
/// [`Error::Compacted`] gets `compact_revision: 0`, which the backend then fills in.
pub(crate) fn build(kind: Kind, source: EtcdError, lease: LeaseId) -> Error {
    match kind {
        Kind::Unavailable => Error::Unavailable {
            source: Box::new(source),
        },
        Kind::PermissionDenied => Error::PermissionDenied {
            source: Box::new(source),
        },
        Kind::LeaseNotFound => Error::LeaseNotFound { lease },
        Kind::Compacted => Error::Compacted {
            compact_revision: 0,
        },
        Kind::InvalidArgument => Error::InvalidArgument {
            reason: match &source {
                EtcdError::Client(e) => reason(e),
                other => other.to_string(),
            },
        },
        Kind::Other => Error::Backend {
            source: Box::new(source),
        },
    }
}

/// Maps an `etcd-client` error; `lease` is the lease the request named (`0` if none).
pub(crate) fn from_client(e: etcd_client::Error, lease: LeaseId) -> Error {
    let kind = classify(&e);
    build(kind, EtcdError::Client(e), lease)
}

/// The error of a request that got no answer in time.
pub(crate) fn timeout(op: &'static str, after: Duration) -> Error {
    Error::Unavailable {
        source: Box::new(EtcdError::Timeout { op, after }),
    }
}

/// A described failure of the given kind (e.g. a watch cancelled by the server).
pub(crate) fn described(kind: Kind, msg: impl Into<String>, lease: LeaseId) -> Error {
    build(kind, EtcdError::Other(msg.into()), lease)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Code, msg: &str) -> Error {
        from_client(
            etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg)),
            7,
        )
    }

    #[test]
    fn maps_by_message_then_code() {
        assert!(matches!(
            status(Code::NotFound, "etcdserver: requested lease not found"),
            Error::LeaseNotFound { lease: 7 }
        ));
        assert!(matches!(
            status(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            ),
            Error::Compacted { .. }
        ));
        assert!(matches!(
            status(
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision"
            ),
            Error::InvalidArgument { .. }
        ));
        assert!(matches!(
            status(Code::InvalidArgument, "etcdserver: request is too large"),
            Error::InvalidArgument { .. }
        ));
        assert!(matches!(
            status(
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request"
            ),
            Error::InvalidArgument { .. }
        ));
        assert!(matches!(
            status(Code::PermissionDenied, "etcdserver: permission denied"),
            Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            status(
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password"
            ),
            Error::PermissionDenied { .. }
        ));
        assert!(matches!(
            status(Code::Unavailable, "etcdserver: no leader"),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            status(
                Code::Unknown,
                "h2 protocol error: error reading a body from connection"
            ),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            status(
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded"
            ),
            Error::Backend { .. }
        ));
        assert!(matches!(
            status(Code::Internal, "something odd"),
            Error::Backend { .. }
        ));
    }

    #[test]
    fn keeps_the_source() {
        let e = status(Code::Unavailable, "etcdserver: request timed out");
        let source = std::error::Error::source(&e).expect("source kept");
        let chain = chain_text(source);
        assert!(chain.contains("request timed out"), "{chain}");
        let e = timeout("txn", Duration::from_millis(500));
        assert!(e.is_retryable());
        let source = std::error::Error::source(&e).unwrap();
        assert!(source.to_string().contains("txn"));
    }
}
