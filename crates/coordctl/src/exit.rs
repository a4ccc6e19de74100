//! Exit codes and the one-line error that goes with a failed run.

use std::fmt;

use coord_core::Error;

/// Success.
pub const OK: i32 = 0;
/// Any error not listed below: etcd unreachable, permission denied, …
pub const ERROR: i32 = 1;
/// Bad arguments or settings (clap uses it for parse errors too).
pub const USAGE: i32 = 2;
/// `--timeout` passed while waiting.
pub const TIMEOUT: i32 = 3;
/// The lock or leadership was lost while held.
pub const LOST: i32 = 4;
/// `leader`: the election has no leader.
pub const NO_LEADER: i32 = 5;
/// The command could not be executed (permission denied, not a program).
pub const CANNOT_EXECUTE: i32 = 126;
/// The command was not found.
pub const NOT_FOUND: i32 = 127;

/// A run that ends with a message on stderr and a non-zero exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: i32,
    /// One line for stderr.
    pub message: String,
}

impl Failure {
    /// A failure with this code and message.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A failure for a `coord` error, with `context` before it: the exit code follows the
    /// error's meaning.
    pub fn coord(context: impl fmt::Display, error: &Error) -> Self {
        tracing::debug!(?error, "{context}");
        let code = match error {
            Error::Timeout => TIMEOUT,
            Error::NoLeader => NO_LEADER,
            Error::InvalidArgument { .. } => USAGE,
            _ => ERROR,
        };
        Failure::new(code, format!("{context}: {}", one_line(error)))
    }
}

/// The error and its sources on one line, `a: b: c`, skipping a source whose text its parent
/// already includes.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = readable(&s.to_string());
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    // Messages from gRPC and the OS sometimes carry newlines: keep the promise of one line.
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A gRPC status as `etcd-client` shows it ends in `, source: <Debug of the transport error>`:
/// keep what comes before, and the innermost quoted `message: "…"` or `error: "…"` of the dump
/// (the words of the OS or of TLS, such as "Connection refused" or "received fatal alert:
/// BadCertificate").
fn readable(text: &str) -> String {
    let Some((head, dump)) = text.split_once(", source: ") else {
        return text.to_string();
    };
    let cause = ["message: \"", "error: \""]
        .iter()
        .filter_map(|label| dump.rfind(label).map(|at| at + label.len()))
        .max()
        .and_then(|start| dump[start..].split('"').next())
        .filter(|cause| !cause.is_empty() && !head.contains(cause));
    match cause {
        Some(cause) => format!("{head}: {cause}"),
        None => head.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_joins_sources_and_newlines() {
        let inner = std::io::Error::other("connection refused\n(os error 111)");
        let e = Error::unavailable(inner);
        assert_eq!(
            one_line(&e),
            "backend unavailable: connection refused (os error 111)"
        );
    }

    #[test]
    fn grpc_dumps_are_cut_to_their_cause() {
        let text = "grpc request error: code: 'Unavailable', message: \"tcp connect error\", \
                    source: tonic::transport::Error(Transport, ConnectError(ConnectError(\"tcp \
                    connect error\", 127.0.0.1:1, Os { code: 111, kind: ConnectionRefused, \
                    message: \"Connection refused\" })))";
        assert_eq!(
            readable(text),
            "grpc request error: code: 'Unavailable', message: \"tcp connect error\": \
             Connection refused"
        );
        let tls = "grpc request error: code: 'Unknown error', message: \"transport error\", \
                   source: tonic::transport::Error(Transport, hyper::Error(Io, Custom { kind: \
                   InvalidData, error: \"received fatal alert: BadCertificate\" })))";
        assert_eq!(
            readable(tls),
            "grpc request error: code: 'Unknown error', message: \"transport error\": \
             received fatal alert: BadCertificate"
        );
        assert_eq!(readable("plain"), "plain");
    }

    #[test]
    fn codes_follow_meaning() {
        assert_eq!(Failure::coord("x", &Error::Timeout).code, TIMEOUT);
        assert_eq!(Failure::coord("x", &Error::NoLeader).code, NO_LEADER);
        assert_eq!(Failure::coord("x", &Error::invalid("bad")).code, USAGE);
        assert_eq!(Failure::coord("x", &Error::Locked).code, ERROR);
    }
}
