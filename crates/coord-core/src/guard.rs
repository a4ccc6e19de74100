//! The guard of a held lock (mutex, read or write lock).

use crate::error::{Error, Result};
use crate::held::HeldKey;
use crate::kv::Revision;
use crate::session::Session;
use crate::telemetry::{self, SpanOp};
use crate::txn::Compare;
use tracing::Instrument;

/// Which lock a [`LockGuard`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// A [`crate::Mutex`].
    Mutex,
    /// The shared side of a [`crate::RwLock`].
    Read,
    /// The exclusive side of a [`crate::RwLock`].
    Write,
}

impl LockKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            LockKind::Mutex => "mutex",
            LockKind::Read => "read lock",
            LockKind::Write => "write lock",
        }
    }

    /// The `primitive` label of its metrics and spans.
    pub(crate) fn metric(self) -> &'static str {
        match self {
            LockKind::Mutex => "mutex",
            LockKind::Read => "rwlock_read",
            LockKind::Write => "rwlock_write",
        }
    }
}

/// Proof that a lock was held when it was acquired. Release it with [`LockGuard::unlock`].
///
/// Three ways a lock is released, from best to last resort:
/// 1. [`LockGuard::unlock`]: deletes the key and reports the outcome.
/// 2. Dropping the guard: deletes the key in the background, on the runtime the session was
///    created on, retrying while the session lives.
/// 3. The session's lease TTL: if the process dies or the store is unreachable, the store
///    deletes the key when the lease expires.
///
/// A guard does not keep the lock alive by itself: the session does, and [`LockGuard::lost`]
/// tells when it no longer can. For writes that must never land after the lock is lost, use
/// [`LockGuard::is_owner`] or [`LockGuard::fencing_token`].
#[must_use = "dropping the guard releases the lock"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct LockGuard {
    held: HeldKey,
    revision: Revision,
    kind: LockKind,
}

impl LockGuard {
    pub(crate) fn new(held: HeldKey, revision: Revision, kind: LockKind) -> Self {
        tracing::debug!(
            key = %String::from_utf8_lossy(&held.key),
            token = held.rev,
            kind = kind.name(),
            "lock acquired"
        );
        LockGuard {
            held,
            revision,
            kind,
        }
    }

    /// Which lock this is.
    pub fn kind(&self) -> LockKind {
        self.kind
    }

    /// The lock key (for a mutex `name/<lease hex>`, as Go's package writes it).
    pub fn key(&self) -> &[u8] {
        &self.held.key
    }

    /// The fencing token: the key's create revision. Exclusive holders' tokens strictly rise
    /// in acquisition order.
    pub fn fencing_token(&self) -> Revision {
        self.held.rev
    }

    /// The store revision at which the lock was seen held.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// A compare that holds only while this guard still owns its key; put it in your own
    /// transactions so that a write cannot land after the lock was lost.
    pub fn is_owner(&self) -> Compare {
        self.held.is_current()
    }

    /// The session holding the lock.
    pub fn session(&self) -> &Session {
        &self.held.session
    }

    /// Resolves when the lock is lost: the session ended ([`Error::SessionExpired`],
    /// [`Error::SessionClosed`]) or the key was deleted by someone else ([`Error::NotHeld`],
    /// e.g. an operator's `etcdctl del`). Transient store failures are retried, never taken as
    /// "still held"; only an error that retrying cannot fix (e.g. [`Error::PermissionDenied`]
    /// on the watch) is returned instead.
    ///
    /// The first call watches the key and reads it once, except for a guard that waited with
    /// one key ahead (it keeps the watch it waited on). Every later call only
    /// waits, so it is cheap in a `select!` loop.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it mid-setup leaves the next call to finish it.
    pub async fn lost(&self) -> Error {
        self.held.lost().await
    }

    /// Releases the lock: deletes the key if it is still this guard's.
    ///
    /// [`Error::NotHeld`] (or [`Error::SessionExpired`]) when the lock had already been lost.
    /// On a backend error the release is retried in the background and the error returned.
    /// The delete is guarded by the key's create revision, so a retried release never removes
    /// a later holder's key.
    pub async fn unlock(self) -> Result<()> {
        let name = telemetry::name_of(self.held.name());
        let span = telemetry::span(SpanOp::Release, self.kind.metric(), name, &self.held.key);
        telemetry::record_held(&span, self.held.rev, self.revision);
        self.held.release().instrument(span).await
    }
}
