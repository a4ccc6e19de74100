//! The one error type of `coord`, with variants by meaning.

use crate::kv::{LeaseId, Revision};

/// A boxed error kept as the `source` of a wrapped backend failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `coord`, by meaning rather than by backend.
///
/// Backends map their own failures into these variants and keep the original error as the
/// `source`, so nothing is stringified away. [`Error::is_retryable`] tells which failures a caller
/// may retry as they are.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument was rejected before anything was written: empty name, TTL out of range,
    /// value over the store's limit, …
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What was wrong, for humans.
        reason: String,
    },

    /// The guard was already released (unlock twice, resign twice), or its key was deleted
    /// while the session's lease lives (e.g. by an operator): for a waiter, its place in the
    /// queue is gone.
    #[error("not held: the key of the {what} was released or deleted")]
    NotHeld {
        /// Which primitive, for humans.
        what: &'static str,
    },

    /// `try_lock`/`try_read`/`try_write` found the lock held by someone else.
    #[error("locked by another session")]
    Locked,

    /// The request conflicts with a lock this same session already holds or awaits on the same
    /// name (a write lock asked while holding a read lock, or the reverse): it could only be
    /// granted after that one is released, which never happens if the caller holds it.
    #[error("would deadlock: {reason}")]
    WouldDeadlock {
        /// What conflicts, for humans.
        reason: String,
    },

    /// A semaphore was asked for with another capacity than the holders or waiters of its name
    /// use (see [`Semaphore`](crate::Semaphore)): its users must agree on it.
    #[error("semaphore capacity mismatch: asked with {requested} permits, the name is in use with {in_use}")]
    CapacityMismatch {
        /// The capacity this acquire counts with.
        requested: u32,
        /// The capacity a holder or waiter ahead of it counts with.
        in_use: u32,
    },

    /// A leader-only operation (proclaim, resign) was made by a candidate that is not the leader.
    #[error("not the leader of this election")]
    NotLeader,

    /// The election has no leader right now.
    #[error("the election has no leader")]
    NoLeader,

    /// The session's lease expired or was revoked: every key on it is gone.
    #[error("session expired: lease {lease:x} is gone")]
    SessionExpired {
        /// The lost lease.
        lease: LeaseId,
    },

    /// The session was closed by its owner; it can no longer be used.
    #[error("session closed")]
    SessionClosed,

    /// The lease does not exist (never granted, expired or revoked).
    #[error("lease {lease:x} not found")]
    LeaseNotFound {
        /// The missing lease.
        lease: LeaseId,
    },

    /// The requested revision was compacted away; re-read and start from a newer revision.
    #[error("revision compacted: the oldest revision still kept is {compact_revision}")]
    Compacted {
        /// The store's compaction point: revisions below it are gone.
        compact_revision: Revision,
    },

    /// The backend refused the operation for lack of permission.
    #[error("permission denied")]
    PermissionDenied {
        /// The backend's own error.
        #[source]
        source: BoxError,
    },

    /// The backend could not be reached or did not answer in time. Retrying may succeed.
    #[error("backend unavailable")]
    Unavailable {
        /// The backend's own error.
        #[source]
        source: BoxError,
    },

    /// The caller's deadline passed before the operation finished.
    #[error("timed out")]
    Timeout,

    /// The store does not have an optional capability the request needs (see
    /// [`Capability`](crate::Capability)); no primitive of `coord` needs one.
    #[error("unsupported by this backend: {capability:?}")]
    Unsupported {
        /// The missing capability.
        capability: crate::backend::Capability,
    },

    /// The operation was cancelled (its future dropped or its token cancelled).
    #[error("cancelled")]
    Cancelled,

    /// Any other backend failure.
    #[error("backend error")]
    Backend {
        /// The backend's own error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Unavailable`] with a message as its source.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            source: source.into(),
        }
    }

    /// Whether retrying the same call unchanged can succeed: the store was unreachable, a
    /// deadline passed, or a try-lock found the lock held. Session loss, bad input, missing
    /// permissions and compaction need the caller to act first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Timeout | Error::Locked
        )
    }
}
