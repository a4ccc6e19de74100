//! [`MemStore`]: the [`Backend`] implementation.
//!
//! Each call counts itself (in a [`coord_core::AtomicCallCounts`]), takes a pending injected
//! failure if there is one, checks its input without the lock, then runs under the one state
//! mutex, expiring due leases first so a read right after a deadline never sees an expired
//! lease's keys.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use coord_core::{
    AtomicCallCounts, Backend, BackendLimits, CallCounts, CallKind, Capabilities, Capability,
    DeleteRequest, DeleteResponse, Error, LeaseGrant, LeaseId, LeaseTimeToLive, PutRequest,
    PutResponse, RangeRequest, RangeResponse, Result, Revision, Txn, TxnResponse, WatchRequest,
    WatchStream,
};
use tokio::time::Instant;

use crate::config::MemStoreBuilder;
use crate::faults::{FaultState, Faults};
use crate::lease::ExpiryDriver;
use crate::span::{self, Span};
use crate::state::State;
use crate::watch::{MemWatchStream, Registration};

/// An in-memory store with etcd v3's semantics: revisions, leases, watches, transactions.
///
/// Cheap to clone (clones share one store); `Send + Sync + 'static`. Lease deadlines run on
/// tokio's clock. See the [crate docs](crate) for the semantics and an example.
#[derive(Clone)]
pub struct MemStore {
    inner: Arc<Inner>,
}

/// The shared part of a [`MemStore`].
pub(crate) struct Inner {
    state: Mutex<State>,
    /// Shared with every watch stream, which counts the items it delivers.
    pub(crate) counters: Arc<AtomicCallCounts>,
    pub(crate) faults: FaultState,
    limits: BackendLimits,
    max_txn_ops: usize,
    capabilities: Capabilities,
    expiry: ExpiryDriver,
}

impl Inner {
    /// Locks the state, expiring leases whose deadline has passed.
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(deadline) = state.leases.next_deadline() {
            let now = Instant::now();
            if deadline <= now {
                state.expire_due(now);
            }
        }
        state
    }

    pub(crate) fn unregister_watch(&self, id: u64) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .watchers
            .remove(id);
    }

    /// Counts a call, then fails it if a fault is pending for it.
    fn begin(&self, kind: CallKind) -> Result<()> {
        self.counters.bump(kind);
        if self.faults.take(kind) {
            return Err(Error::unavailable(format!(
                "injected fault: {kind:?} failed"
            )));
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wake the expiry task so it finds the store gone and ends.
        self.expiry.wake();
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("MemStore");
        match self.inner.state.try_lock() {
            Ok(state) => d
                .field("revision", &state.revision())
                .field("compact_revision", &state.compact_revision())
                .field("keys", &state.key_count())
                .field("leases", &state.leases.len())
                .field("watches", &state.watchers.len()),
            Err(_) => d.field("state", &"<locked>"),
        };
        d.field("limits", &self.inner.limits).finish()
    }
}

impl MemStore {
    /// An empty store at revision 1, with the default configuration (see [`MemStoreBuilder`]).
    pub fn new() -> Self {
        MemStoreBuilder::default().build()
    }

    /// A builder to configure the store.
    pub fn builder() -> MemStoreBuilder {
        MemStoreBuilder::default()
    }

    pub(crate) fn from_builder(b: MemStoreBuilder) -> Self {
        MemStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(b.history_limit, b.lease_id_seed)),
                counters: Arc::default(),
                faults: FaultState::default(),
                limits: b.limits,
                max_txn_ops: b.max_txn_ops,
                capabilities: b.capabilities,
                expiry: ExpiryDriver::default(),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// How many times each backend method was called since the store was built (or since
    /// [`reset_stats`](Self::reset_stats)), and how many items its watch streams delivered.
    ///
    /// Every call of a [`Backend`] method counts once, under its own kind (a `put` is a put,
    /// not a txn), whether it succeeded, failed, or failed by an injected fault. Background
    /// lease expiry is not a call and is not counted. `watch_events` counts the items (events
    /// and errors) the store's watch streams have yielded to their readers, as a
    /// [`Counting`](coord_core::Counting) wrapper would; it is not a call, and
    /// [`CallCounts::calls`] leaves it out.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> coord_core::Result<()> {
    /// use coord_core::{Backend, CallKind, KeyRange, PutRequest, RangeRequest, WatchRequest};
    /// use coord_mem::MemStore;
    /// use futures::StreamExt;
    ///
    /// let store = MemStore::new();
    /// let before = store.stats();
    /// let mut watch = store.watch(WatchRequest::new(KeyRange::key("k"))).await?;
    /// store.put(PutRequest::new("k", "v")).await?;
    /// store.range(RangeRequest::key("k")).await?;
    /// watch.next().await.unwrap()?;
    /// let spent = store.stats().since(&before);
    /// assert_eq!((spent.put, spent.range, spent.get(CallKind::Txn)), (1, 1, 0));
    /// assert_eq!((spent.calls(), spent.watch_events), (3, 1));
    /// assert_eq!(spent.to_string(), "range=1 put=1 watch=1 watch_events=1");
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> CallCounts {
        self.inner.counters.snapshot()
    }

    /// Sets every count of [`stats`](Self::stats) back to zero.
    pub fn reset_stats(&self) {
        self.inner.counters.reset();
    }

    /// The fault injection handle of this store.
    pub fn faults(&self) -> Faults {
        Faults::new(self.clone())
    }

    /// The current revision (not counted as a call).
    pub fn revision(&self) -> Revision {
        self.inner.lock_state().revision()
    }

    /// The compaction point: reads and watches of revisions below it give
    /// [`Error::Compacted`]. `0` until something is compacted.
    pub fn compact_revision(&self) -> Revision {
        self.inner.lock_state().compact_revision()
    }

    /// How many keys exist now (not counted as a call).
    pub fn key_count(&self) -> usize {
        self.inner.lock_state().key_count()
    }

    /// How many leases are alive now (not counted as a call).
    pub fn lease_count(&self) -> usize {
        self.inner.lock_state().leases.len()
    }

    /// How many watches are registered now; a dropped stream no longer counts.
    pub fn watch_count(&self) -> usize {
        self.inner.lock_state().watchers.len()
    }

    /// How many changes the history holds now (bounded by the history limit).
    pub fn history_len(&self) -> usize {
        self.inner.lock_state().history_len()
    }
}

#[async_trait]
impl Backend for MemStore {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.inner.begin(CallKind::Txn)?;
        self.inner.capabilities.check_txn(&txn)?;
        span::check_txn(&txn, &self.inner.limits, self.inner.max_txn_ops)?;
        self.inner.lock_state().txn(txn)
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.inner.begin(CallKind::Range)?;
        self.inner.capabilities.check_range(&req)?;
        Span::of(&req.range)?;
        let state = self.inner.lock_state();
        state.check_range(&req, state.revision())?;
        Ok(state.range(&req, state.revision()))
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        self.inner.begin(CallKind::Put)?;
        span::check_put(&req, &self.inner.limits)?;
        self.inner.lock_state().put(req)
    }

    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        self.inner.begin(CallKind::Delete)?;
        Span::of(&req.range)?;
        Ok(self.inner.lock_state().delete(&req))
    }

    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.inner.begin(CallKind::LeaseGrant)?;
        let limits = &self.inner.limits;
        if ttl < limits.min_ttl || ttl > limits.max_ttl {
            return Err(Error::invalid(format!(
                "lease TTL {ttl}s is out of range [{}, {}]",
                limits.min_ttl, limits.max_ttl
            )));
        }
        let grant = self
            .inner
            .lock_state()
            .leases
            .grant(ttl, id, Instant::now())?;
        self.inner
            .expiry
            .ensure_running(Arc::downgrade(&self.inner));
        self.inner.expiry.wake();
        Ok(grant)
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.inner.begin(CallKind::LeaseRevoke)?;
        if self.inner.lock_state().revoke_lease(id) {
            tracing::debug!(lease = id, "lease revoked");
            Ok(())
        } else {
            Err(Error::LeaseNotFound { lease: id })
        }
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.inner.begin(CallKind::LeaseKeepAlive)?;
        let mut state = self.inner.lock_state();
        if state.leases.blocked.contains(&id) {
            return Err(Error::unavailable(format!(
                "injected fault: keep-alives of lease {id:x} are blocked"
            )));
        }
        state.leases.keep_alive(id, Instant::now())
    }

    async fn lease_time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseTimeToLive> {
        self.inner.begin(CallKind::LeaseTimeToLive)?;
        self.inner
            .lock_state()
            .leases
            .time_to_live(id, Instant::now(), with_keys)
    }

    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        self.inner.begin(CallKind::LeaseList)?;
        self.inner.capabilities.require(Capability::LeaseList)?;
        Ok(self.inner.lock_state().leases.list())
    }

    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        self.inner.begin(CallKind::Watch)?;
        Span::of(&req.range)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // Registered (and history replayed) under the lock, so no write falls in between.
        let id = self.inner.lock_state().watch(req, tx)?;
        // Built after the lock is released: dropping it takes the lock.
        let registration = Registration {
            store: Arc::downgrade(&self.inner),
            id,
        };
        Ok(Box::pin(MemWatchStream::new(
            rx,
            registration,
            self.inner.counters.clone(),
        )))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.begin(CallKind::Compact)?;
        self.inner.capabilities.require(Capability::Compaction)?;
        self.inner.lock_state().compact(revision)
    }

    /// Every optional capability (etcd's whole API) unless built with fewer.
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities
    }

    fn limits(&self) -> BackendLimits {
        self.inner.limits
    }
}
