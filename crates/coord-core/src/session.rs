//! Session: a lease kept alive in the background, shared by every primitive built on it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Mutex as AsyncMutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, DynBackend};
use crate::error::{Error, Result};
use crate::kv::LeaseId;
use crate::watcher::PrefixWatch;

/// Default session TTL, in seconds (as etcd's Go package).
pub const DEFAULT_TTL: i64 = 60;

/// A client's liveness in the store: a lease that a background task keeps alive.
///
/// Every key a primitive writes (lock keys, candidacies) is attached to the session's lease, so
/// when the process dies or is cut off, the store deletes them once the TTL runs out. When the
/// lease is lost — it expired, was revoked, or keep-alives failed until its TTL surely passed —
/// [`Session::lost`] fires, and every guard built on the session reports it too.
///
/// `Session` is a cheap handle (`Clone`); the lease lives while any handle or guard lives.
/// [`Session::close`] revokes it at once; dropping the last handle without closing stops the
/// keep-alives and revokes the lease in the background (the TTL is the backstop).
///
/// Each session also keeps one delete-only watch per lock or election name it has waited on, to
/// learn of releases without polling (see the crate docs). Every session watching a name
/// receives each release event of that name, filtered in-process.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    backend: DynBackend,
    lease: LeaseId,
    ttl: i64,
    /// Fires when the lease is lost or the session closed.
    ended: CancellationToken,
    closed: AtomicBool,
    keep_alive: std::sync::Mutex<Option<JoinHandle<()>>>,
    watches: AsyncMutex<HashMap<Vec<u8>, Arc<PrefixWatch>>>,
    local_locks: std::sync::Mutex<HashMap<Vec<u8>, Arc<AsyncMutex<()>>>>,
    runtime: Handle,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("lease", &format_args!("{:x}", self.inner.lease))
            .field("ttl", &self.inner.ttl)
            .field("ended", &self.inner.ended.is_cancelled())
            .finish()
    }
}

/// Builds a [`Session`].
#[derive(Debug)]
#[must_use]
pub struct SessionBuilder {
    backend: DynBackend,
    ttl: i64,
    lease: Option<LeaseId>,
}

impl SessionBuilder {
    /// Lease TTL in whole seconds (default [`DEFAULT_TTL`]). Checked against the backend's
    /// limits: `0`, negative or too large gives [`Error::InvalidArgument`].
    pub fn with_ttl(mut self, ttl_secs: i64) -> Self {
        self.ttl = ttl_secs;
        self
    }

    /// Use an existing lease instead of granting one. It must be alive
    /// ([`Error::LeaseNotFound`] otherwise); its remaining TTL is read from the store.
    pub fn with_lease(mut self, lease: LeaseId) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Grants (or checks) the lease and starts the keep-alive task.
    pub async fn build(self) -> Result<Session> {
        let limits = self.backend.limits();
        let (lease, ttl) = match self.lease {
            Some(id) => {
                if id <= 0 {
                    return Err(Error::invalid(format!("lease id {id} must be positive")));
                }
                let ttl = self.backend.lease_time_to_live(id, false).await?;
                (id, ttl.granted_ttl.max(1))
            }
            None => {
                if self.ttl < limits.min_ttl.max(1) || self.ttl > limits.max_ttl {
                    return Err(Error::invalid(format!(
                        "session TTL {} s is outside {}..={} s",
                        self.ttl,
                        limits.min_ttl.max(1),
                        limits.max_ttl
                    )));
                }
                let grant = self.backend.lease_grant(self.ttl, None).await?;
                (grant.id, grant.ttl)
            }
        };
        let inner = Arc::new(SessionInner {
            backend: self.backend,
            lease,
            ttl,
            ended: CancellationToken::new(),
            closed: AtomicBool::new(false),
            keep_alive: std::sync::Mutex::new(None),
            watches: AsyncMutex::new(HashMap::new()),
            local_locks: std::sync::Mutex::new(HashMap::new()),
            runtime: Handle::current(),
        });
        let task = tokio::spawn(keep_alive(
            inner.backend.clone(),
            lease,
            ttl,
            inner.ended.clone(),
        ));
        *lock_unpoisoned(&inner.keep_alive) = Some(task);
        tracing::debug!(lease = format_args!("{lease:x}"), ttl, "session started");
        Ok(Session { inner })
    }
}

impl Session {
    /// A session with a new lease of `ttl_secs` seconds.
    pub async fn new(backend: impl Backend, ttl_secs: i64) -> Result<Session> {
        Session::builder(backend).with_ttl(ttl_secs).build().await
    }

    /// A builder, for an existing lease or the default TTL.
    pub fn builder(backend: impl Backend) -> SessionBuilder {
        SessionBuilder {
            backend: into_dyn(backend),
            ttl: DEFAULT_TTL,
            lease: None,
        }
    }

    /// The session's lease id.
    pub fn lease(&self) -> LeaseId {
        self.inner.lease
    }

    /// The lease TTL in seconds.
    pub fn ttl(&self) -> i64 {
        self.inner.ttl
    }

    /// The backend the session runs on.
    pub fn backend(&self) -> &DynBackend {
        &self.inner.backend
    }

    /// Resolves when the session ends: its lease was lost (expired, revoked, or keep-alives
    /// failed for a whole TTL) or [`Session::close`] was called. From then on, every key on the
    /// lease must be assumed gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn lost(&self) {
        self.inner.ended.cancelled().await
    }

    /// Whether the session has ended (see [`Session::lost`]).
    pub fn is_lost(&self) -> bool {
        self.inner.ended.is_cancelled()
    }

    /// Whether [`Session::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Revokes the lease, deleting every key on it (releasing every lock and candidacy of this
    /// session), and ends the session. Closing twice is a no-op.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.stop_keep_alive();
        let result = match self.inner.backend.lease_revoke(self.inner.lease).await {
            Ok(()) | Err(Error::LeaseNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        };
        self.inner.ended.cancel();
        tracing::debug!(
            lease = format_args!("{:x}", self.inner.lease),
            "session closed"
        );
        result
    }

    /// `Ok` while the session can be used; else the reason it cannot.
    pub(crate) fn check_usable(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::SessionClosed)
        } else if self.is_lost() {
            Err(self.ended_error())
        } else {
            Ok(())
        }
    }

    /// The error for "the session ended": closed or expired.
    pub(crate) fn ended_error(&self) -> Error {
        if self.is_closed() {
            Error::SessionClosed
        } else {
            Error::SessionExpired {
                lease: self.inner.lease,
            }
        }
    }

    /// Turns the store's "lease not found" for this session's own lease into the session's
    /// end: the lease is gone, so the session is lost now rather than at the next keep-alive,
    /// and the caller gets [`Error::SessionExpired`] (or [`Error::SessionClosed`]). Other
    /// errors pass through.
    pub(crate) fn lease_error(&self, e: Error) -> Error {
        match e {
            Error::LeaseNotFound { lease } if lease == self.inner.lease => {
                if !self.inner.ended.is_cancelled() {
                    tracing::warn!(lease = format_args!("{lease:x}"), "session lease lost");
                    self.inner.ended.cancel();
                }
                self.ended_error()
            }
            e => e,
        }
    }

    pub(crate) fn runtime(&self) -> &Handle {
        &self.inner.runtime
    }

    /// The session's delete-only watch on `prefix`, if it is registered and running.
    pub(crate) async fn running_prefix_watch(&self, prefix: &[u8]) -> Option<Arc<PrefixWatch>> {
        let watches = self.inner.watches.lock().await;
        watches.get(prefix).filter(|w| w.is_running()).cloned()
    }

    /// The session's delete-only watch on `prefix`, registered on first use.
    pub(crate) async fn prefix_watch(&self, prefix: &[u8]) -> Result<Arc<PrefixWatch>> {
        let mut watches = self.inner.watches.lock().await;
        if let Some(w) = watches.get(prefix) {
            if w.is_running() {
                return Ok(w.clone());
            }
        }
        let w = PrefixWatch::start(
            self.inner.backend.clone(),
            prefix.to_vec(),
            self.inner.ended.clone(),
        )
        .await?;
        watches.insert(prefix.to_vec(), w.clone());
        Ok(w)
    }

    /// The in-process lock that serialises this session's holders of one key: a session has one
    /// key per mutex or election name, so two local holders must not share it.
    pub(crate) fn local_lock(&self, key: &[u8]) -> Arc<AsyncMutex<()>> {
        let mut locks = lock_unpoisoned(&self.inner.local_locks);
        if let Some(lock) = locks.get(key) {
            return lock.clone();
        }
        locks.entry(key.to_vec()).or_default().clone()
    }
}

impl SessionInner {
    fn stop_keep_alive(&self) {
        if let Some(task) = lock_unpoisoned(&self.keep_alive).take() {
            task.abort();
        }
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        self.stop_keep_alive();
        self.ended.cancel();
        if !self.closed.load(Ordering::Acquire) {
            // The last handle is gone without close(): revoke in the background so the keys
            // go now rather than after the TTL.
            let backend = self.backend.clone();
            let lease = self.lease;
            self.runtime.spawn(async move {
                let _ = backend.lease_revoke(lease).await;
            });
        }
    }
}

/// Renews the lease about every TTL/3. Declares it lost when the store says it is gone, or when
/// renewals have failed for so long that it has surely expired: the deadline counts from when
/// the last successful renewal was *sent*, as the store may have renewed it no later than that.
async fn keep_alive(backend: DynBackend, lease: LeaseId, ttl: i64, ended: CancellationToken) {
    let ttl = Duration::from_secs(ttl.max(1) as u64);
    let period = ttl / 3;
    let mut expires = Instant::now() + ttl;
    let mut next = Instant::now() + period;
    loop {
        tokio::select! {
            _ = ended.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        if sent >= expires {
            break;
        }
        match tokio::time::timeout_at(expires, backend.lease_keep_alive(lease)).await {
            Ok(Ok(left)) if left > 0 => {
                expires = sent + Duration::from_secs(left as u64);
                next = sent + period;
            }
            Ok(Ok(_)) | Ok(Err(Error::LeaseNotFound { .. })) => break,
            Ok(Err(e)) => {
                tracing::warn!(lease = format_args!("{lease:x}"), error = %e, "keep-alive failed; retrying");
                next = (Instant::now() + period / 4).min(expires);
            }
            Err(_) => {}
        }
    }
    tracing::warn!(lease = format_args!("{lease:x}"), "session lease lost");
    ended.cancel();
}

fn into_dyn(backend: impl Backend) -> DynBackend {
    Arc::new(backend)
}

/// Locks a std mutex, ignoring poisoning: the data it guards stays consistent at every await-free
/// critical section.
pub(crate) fn lock_unpoisoned<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
