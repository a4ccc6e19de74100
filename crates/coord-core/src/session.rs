//! Session: a lease kept alive in the background, shared by every primitive built on it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::Histogram;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backend::{Backend, DynBackend};
use crate::error::{Error, Result};
use crate::kv::LeaseId;
use crate::live::LiveLease;
use crate::local::{Local, Turn};
use crate::metered::Metered;
use crate::telemetry::{
    error_label, NameLabels, PrimitiveMetrics, SessionTelemetry, KEEPALIVE, KEEPALIVE_FAILURES,
    SESSIONS_LOST,
};
use crate::watcher::WatchedNames;

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
/// # One session per lease
///
/// A lease is one participant: two sessions on one lease would write the same mutex key and
/// both believe they hold the lock, with one fencing token. So a process has at most one live
/// session per lease: [`SessionBuilder::with_lease`] on a lease that a live session of this
/// process has fails with [`Error::InvalidArgument`] (clone that session instead, or
/// [`Session::detach`] it first). Across processes this cannot be detected: two processes that
/// both resume one lease share its keys, as two processes on one Go `concurrency.Session`
/// would. Resume a lease only in the process that took it over (a restart, an exec).
///
/// # Runtime
///
/// The keep-alive task runs on the tokio runtime the session was built on. When that runtime
/// shuts down, the session ends at once ([`Session::lost`] fires and [`Session::is_lost`] is
/// `true`) rather than letting the lease expire unnoticed; build sessions on a runtime that
/// outlives their use.
///
/// # Watches
///
/// A waiter watches a few single keys, or its name's prefix once it is next in line (see the
/// crate docs); a holder keeps the watch it waited on to report its key's loss. Each watch is
/// cancelled as soon as its waiter or holder is done with it: open watches are bounded by the
/// waits and holds in progress, not by the names ever used.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

struct SessionInner {
    backend: DynBackend,
    lease: LeaseId,
    ttl: i64,
    /// Fires when the lease is lost or the session closed; leaves the process's live-lease set.
    end: Arc<LiveLease>,
    /// [`Session::close`] or [`Session::detach`] was called.
    closed: AtomicBool,
    keep_alive: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// How long one handoff took lately, in microseconds (a moving average over this
    /// session's waits): when to suspect a held-back watch event (see `wait.rs`).
    handoff_us: std::sync::atomic::AtomicU64,
    watched: Arc<WatchedNames>,
    local: Arc<Local>,
    runtime: Handle,
    telemetry: SessionTelemetry,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("lease", &format_args!("{:x}", self.inner.lease))
            .field("ttl", &self.inner.ttl)
            .field("ended", &self.is_lost())
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
    name_labels: NameLabels,
    /// Registered with the backend's handles, in `builder`, with the recorder of that moment.
    keep_alive_latency: Histogram,
}

impl SessionBuilder {
    /// Lease TTL in whole seconds (default [`DEFAULT_TTL`]). Checked against the backend's
    /// limits: `0`, negative or too large gives [`Error::InvalidArgument`].
    pub fn with_ttl(mut self, ttl_secs: i64) -> Self {
        self.ttl = ttl_secs;
        self
    }

    /// Use an existing lease instead of granting one (a restarted process resuming its
    /// predecessor's lease). It must be alive ([`Error::LeaseNotFound`] otherwise) and have no
    /// live session in this process ([`Error::InvalidArgument`]; see "One session per
    /// lease"). `build` renews it at once, so its remaining TTL, however short, is reset.
    pub fn with_lease(mut self, lease: LeaseId) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Whether this session's primitives label their metrics with their names (default
    /// [`NameLabels::Off`]: names are user data, a series per name can grow without bound).
    /// See [`crate::telemetry`].
    pub fn with_name_labels(mut self, name_labels: NameLabels) -> Self {
        self.name_labels = name_labels;
        self
    }

    /// Grants (or renews) the lease and starts the keep-alive task on the current runtime.
    pub async fn build(self) -> Result<Session> {
        let limits = self.backend.limits();
        let sent = Instant::now();
        let (lease, ttl, end) = match self.lease {
            Some(id) => {
                if id <= 0 {
                    return Err(Error::invalid(format!("lease id {id} must be positive")));
                }
                // Claimed before the renewal, so two concurrent builds cannot both pass.
                let end = LiveLease::claim(id)?;
                let ttl = self.backend.lease_keep_alive(id).await?;
                if ttl <= 0 {
                    return Err(Error::LeaseNotFound { lease: id });
                }
                (id, ttl, end)
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
                (grant.id, grant.ttl, LiveLease::granted(grant.id))
            }
        };
        end.lives_until(sent + Duration::from_secs(ttl.max(1) as u64));
        let runtime = Handle::current();
        let inner = Arc::new(SessionInner {
            backend: self.backend,
            lease,
            ttl,
            end,
            closed: AtomicBool::new(false),
            keep_alive: std::sync::Mutex::new(None),
            handoff_us: std::sync::atomic::AtomicU64::new(1_000),
            watched: Arc::default(),
            local: Arc::default(),
            runtime,
            telemetry: SessionTelemetry {
                name_labels: self.name_labels,
                cache: Default::default(),
            },
        });
        let task = tokio::spawn(keep_alive(
            inner.backend.clone(),
            lease,
            ttl,
            sent,
            inner.end.clone(),
            self.keep_alive_latency,
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
    ///
    /// The session's metric handles (backend calls, keep-alives) are registered here, with the
    /// [`metrics`] recorder installed now (see [`crate::telemetry`]).
    pub fn builder(backend: impl Backend) -> SessionBuilder {
        SessionBuilder {
            backend: into_dyn(backend),
            ttl: DEFAULT_TTL,
            lease: None,
            name_labels: NameLabels::Off,
            keep_alive_latency: metrics::histogram!(KEEPALIVE),
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
    /// failed for a whole TTL), its runtime shut down, or [`Session::close`] or
    /// [`Session::detach`] was called. From then on, every key on the lease must be assumed
    /// gone (or, after `detach`, someone else's).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn lost(&self) {
        self.inner.end.ended().await
    }

    /// Whether the session has ended (see [`Session::lost`]).
    pub fn is_lost(&self) -> bool {
        self.inner.end.is_ended()
    }

    /// Whether [`Session::close`] (or [`Session::detach`]) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// How many names this session has a watch open on now: those where one of its waiters
    /// waits, or one of its holders keeps the watch it waited on (or set up by `lost()`).
    /// Bounded by the names in use.
    pub fn watched_names(&self) -> usize {
        self.inner.watched.len()
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
        self.inner.end.end();
        tracing::debug!(
            lease = format_args!("{:x}", self.inner.lease),
            "session closed"
        );
        result
    }

    /// Ends the session in this process *without* revoking its lease: keep-alives stop, the
    /// session's guards report [`Error::SessionClosed`] and release nothing, and the lease with
    /// every key on it stays in the store until its TTL runs out, for a successor to resume
    /// with [`SessionBuilder::with_lease`] (e.g. a process handing over to the one it execs).
    /// Returns the lease id.
    pub fn detach(&self) -> LeaseId {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.stop_keep_alive();
        self.inner.end.end();
        self.inner.lease
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
                if !self.is_lost() {
                    tracing::warn!(lease = format_args!("{lease:x}"), "session lease lost");
                    metrics::counter!(SESSIONS_LOST).increment(1);
                    self.inner.end.end();
                }
                self.ended_error()
            }
            e => e,
        }
    }

    pub(crate) fn runtime(&self) -> &Handle {
        &self.inner.runtime
    }

    /// How long one handoff took lately (see `wait.rs`).
    pub(crate) fn handoff_time(&self) -> Duration {
        Duration::from_micros(self.inner.handoff_us.load(Ordering::Relaxed))
    }

    /// Records a wait of `waited` for `handoffs` handoffs (a moving average, a quarter per
    /// sample).
    pub(crate) fn record_handoffs(&self, waited: Duration, handoffs: usize) {
        if handoffs == 0 {
            return;
        }
        let sample = (waited.as_micros() / handoffs as u128).min(u64::MAX as u128) as u64;
        let old = self.inner.handoff_us.load(Ordering::Relaxed);
        let new = old - old / 4 + sample / 4;
        self.inner.handoff_us.store(new.max(1), Ordering::Relaxed);
    }

    /// The names this session watches now.
    pub(crate) fn watched(&self) -> &Arc<WatchedNames> {
        &self.inner.watched
    }

    /// The in-process turn on `key` for keys a session reuses (`name/<lease hex>`): two local
    /// holders must not share one. Without `wait`, a taken turn is [`Error::Locked`] at once:
    /// its holder holds the lock (or is waiting for it).
    pub(crate) async fn turn(&self, key: &[u8], wait: bool) -> Result<Turn> {
        self.check_usable()?;
        let turn = if wait {
            tokio::select! {
                turn = self.inner.local.turn(key) => turn,
                _ = self.lost() => return Err(self.ended_error()),
            }
        } else {
            self.inner.local.try_turn(key).ok_or(Error::Locked)?
        };
        self.check_usable()?;
        Ok(turn)
    }

    /// How this session's primitives label their metrics.
    pub(crate) fn name_labels(&self) -> &NameLabels {
        &self.inner.telemetry.name_labels
    }

    /// Metric handles shared by this session's primitives of one kind (names not labelled).
    pub(crate) fn metrics_cache(
        &self,
    ) -> &std::sync::Mutex<std::collections::HashMap<&'static str, PrimitiveMetrics>> {
        &self.inner.telemetry.cache
    }

    /// The session's in-process state (turns and rwlock claims).
    pub(crate) fn local(&self) -> &Arc<Local> {
        &self.inner.local
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
        self.end.end();
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

/// Ends the session when the keep-alive task stops for any reason, its runtime's shutdown
/// included: a session whose lease nobody renews must not look alive.
struct EndOnDrop(Arc<LiveLease>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Renews the lease about every TTL/3. Declares it lost when the store says it is gone, or when
/// renewals have failed for so long that it has surely expired: the deadline counts from when
/// the last successful renewal (or the grant) was *sent*, as the store may have renewed it no
/// later than that.
async fn keep_alive(
    backend: DynBackend,
    lease: LeaseId,
    ttl: i64,
    renewed: Instant,
    end: Arc<LiveLease>,
    latency: Histogram,
) {
    let end = EndOnDrop(end);
    let token = end.0.token();
    let ttl = Duration::from_secs(ttl.max(1) as u64);
    let period = ttl / 3;
    let mut expires = renewed + ttl;
    let mut next = renewed + period;
    let failed = |e: &Error| {
        metrics::counter!(KEEPALIVE_FAILURES, "error" => error_label(e)).increment(1);
    };
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep_until(next.min(expires)) => {}
        }
        let sent = Instant::now();
        if sent >= expires {
            break;
        }
        let renewal = tokio::time::timeout_at(expires, backend.lease_keep_alive(lease)).await;
        latency.record(sent.elapsed().as_secs_f64());
        match renewal {
            Ok(Ok(left)) if left > 0 => {
                expires = sent + Duration::from_secs(left as u64);
                end.0.lives_until(expires);
                next = sent + period;
            }
            Ok(Ok(_)) => break,
            Ok(Err(e @ Error::LeaseNotFound { .. })) => {
                failed(&e);
                break;
            }
            Ok(Err(e)) => {
                failed(&e);
                tracing::warn!(lease = format_args!("{lease:x}"), error = %e, "keep-alive failed; retrying");
                next = (Instant::now() + period / 4).min(expires);
            }
            Err(_) => failed(&Error::Timeout),
        }
    }
    metrics::counter!(SESSIONS_LOST).increment(1);
    tracing::warn!(lease = format_args!("{lease:x}"), "session lease lost");
}

/// Every session's calls are timed and counted (see [`crate::telemetry`]).
fn into_dyn(backend: impl Backend) -> DynBackend {
    Arc::new(Metered::new(backend))
}

/// Locks a std mutex, ignoring poisoning: the data it guards stays consistent at every await-free
/// critical section.
pub(crate) fn lock_unpoisoned<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Gives back a map's spare capacity once it is mostly empty, so that a burst of names does not
/// keep its memory for ever (a `HashMap` never shrinks by itself).
pub(crate) fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(
    map: &mut std::collections::HashMap<K, V>,
) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}
