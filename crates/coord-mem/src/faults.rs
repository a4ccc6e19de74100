//! Fault injection: make the store misbehave on purpose, in the ways a real etcd can.
//!
//! Every fault keeps the store's invariants: an operation failed by a fault changes nothing,
//! an expired lease deletes its keys in one revision, a dropped watch ends with an error item.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coord_core::{CallKind, Error, LeaseId, Result};

use crate::store::MemStore;

/// Pending injected failures: counters consumed by the next calls.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    any: AtomicU64,
    by_kind: [AtomicU64; CallKind::ALL.len()],
}

impl FaultState {
    /// Whether this call of `kind` must fail (consuming one pending failure).
    pub(crate) fn take(&self, kind: CallKind) -> bool {
        take_one(&self.by_kind[kind.index()]) || take_one(&self.any)
    }

    fn clear(&self) {
        self.any.store(0, Ordering::Relaxed);
        for c in &self.by_kind {
            c.store(0, Ordering::Relaxed);
        }
    }
}

fn take_one(counter: &AtomicU64) -> bool {
    // The plain load keeps the no-fault path to one relaxed read.
    counter.load(Ordering::Relaxed) != 0
        && counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
}

/// A handle to inject faults into a [`MemStore`], from [`MemStore::faults`].
///
/// Cloning it is cheap; it keeps the store alive like a [`MemStore`] clone does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use coord_core::{Backend, Error, PutRequest};
/// use coord_mem::{CallKind, MemStore};
///
/// let store = MemStore::new();
/// store.faults().fail_next_matching(CallKind::Put, 1);
/// let err = store.put(PutRequest::new("k", "v")).await.unwrap_err();
/// assert!(matches!(err, Error::Unavailable { .. }));
/// assert_eq!(store.revision(), 1, "a failed call changes nothing");
/// store.put(PutRequest::new("k", "v")).await.unwrap();
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Faults {
    store: MemStore,
}

impl Faults {
    pub(crate) fn new(store: MemStore) -> Self {
        Faults { store }
    }

    /// Expires a lease now, as if its TTL had passed: its keys are deleted in one revision and
    /// watchers see the deletes. [`Error::LeaseNotFound`] when there is no such lease.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> coord_core::Result<()> {
    /// use coord_core::{Backend, Error, PutRequest, RangeRequest};
    /// use coord_mem::MemStore;
    ///
    /// let store = MemStore::new();
    /// let lease = store.lease_grant(60, None).await?;
    /// store.put(PutRequest::new("k", "v").with_lease(lease.id)).await?;
    /// store.faults().expire_lease(lease.id)?;
    /// assert_eq!(store.range(RangeRequest::key("k")).await?.count, 0);
    /// assert!(matches!(
    ///     store.lease_keep_alive(lease.id).await,
    ///     Err(Error::LeaseNotFound { .. })
    /// ));
    /// # Ok(()) }
    /// ```
    pub fn expire_lease(&self, id: LeaseId) -> Result<()> {
        let inner = self.store.inner();
        let mut state = inner.lock_state();
        if state.revoke_lease(id) {
            tracing::debug!(lease = id, "lease expired (injected fault)");
            Ok(())
        } else {
            Err(Error::LeaseNotFound { lease: id })
        }
    }

    /// While `blocked`, keep-alives of lease `id` fail with [`Error::Unavailable`], as if the
    /// network dropped them: the lease then expires when its TTL runs out. `false` lifts it.
    /// The block also ends with the lease: once it has expired (or was revoked), keep-alives
    /// of it get [`Error::LeaseNotFound`], as from an etcd reached again after a partition.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> coord_core::Result<()> {
    /// use std::time::Duration;
    /// use coord_core::{Backend, Error};
    /// use coord_mem::MemStore;
    ///
    /// let store = MemStore::new();
    /// let lease = store.lease_grant(5, None).await?;
    /// store.faults().block_keep_alives(lease.id, true);
    /// assert!(matches!(store.lease_keep_alive(lease.id).await, Err(Error::Unavailable { .. })));
    /// tokio::time::advance(Duration::from_secs(5)).await;
    /// assert!(store.lease_list().await?.is_empty(), "expired on the clock");
    /// # Ok(()) }
    /// ```
    pub fn block_keep_alives(&self, id: LeaseId, blocked: bool) {
        let inner = self.store.inner();
        let mut state = inner.lock_state();
        if blocked {
            state.leases.blocked.insert(id);
        } else {
            state.leases.blocked.remove(&id);
        }
    }

    /// Ends every open watch stream: each yields one [`Error::Unavailable`] item (after the
    /// events already sent to it), then ends. Watches opened later are not affected.
    /// Returns how many watches were dropped.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> coord_core::Result<()> {
    /// use coord_core::{Backend, Error, KeyRange, WatchRequest};
    /// use coord_mem::MemStore;
    /// use futures::StreamExt;
    ///
    /// let store = MemStore::new();
    /// let mut watch = store.watch(WatchRequest::new(KeyRange::prefix("a/"))).await?;
    /// assert_eq!(store.faults().drop_watches(), 1);
    /// assert!(matches!(watch.next().await, Some(Err(Error::Unavailable { .. }))));
    /// assert!(watch.next().await.is_none());
    /// # Ok(()) }
    /// ```
    pub fn drop_watches(&self) -> usize {
        let inner = self.store.inner();
        let n = inner.lock_state().watchers.drop_all();
        tracing::debug!(watches = n, "watches dropped (injected fault)");
        n
    }

    /// Delivers every watch event `delay` after its write (on tokio's clock, so a paused clock
    /// controls it), in order. Applies to events written from now on; `Duration::ZERO` ends it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> coord_core::Result<()> {
    /// use std::time::Duration;
    /// use coord_core::{Backend, KeyRange, PutRequest, WatchRequest};
    /// use coord_mem::MemStore;
    /// use futures::{FutureExt, StreamExt};
    ///
    /// let store = MemStore::new();
    /// let mut watch = store.watch(WatchRequest::new(KeyRange::key("k"))).await?;
    /// store.faults().delay_watches(Duration::from_millis(200));
    /// store.put(PutRequest::new("k", "v")).await?;
    /// assert!(watch.next().now_or_never().is_none(), "not yet");
    /// tokio::time::advance(Duration::from_millis(200)).await;
    /// assert!(watch.next().await.unwrap().is_ok());
    /// # Ok(()) }
    /// ```
    pub fn delay_watches(&self, delay: Duration) {
        self.store.inner().lock_state().watchers.delay = delay;
    }

    /// The next `n` backend calls, of any kind, fail with [`Error::Unavailable`] and change
    /// nothing. Replaces any count set before; `0` cancels.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use coord_core::{Backend, RangeRequest, Txn};
    /// use coord_mem::MemStore;
    ///
    /// let store = MemStore::new();
    /// store.faults().fail_next(2);
    /// assert!(store.txn(Txn::new()).await.unwrap_err().is_retryable());
    /// assert!(store.range(RangeRequest::key("k")).await.is_err());
    /// assert!(store.range(RangeRequest::key("k")).await.is_ok());
    /// # }
    /// ```
    pub fn fail_next(&self, n: u64) {
        self.store.inner().faults.any.store(n, Ordering::Release);
    }

    /// The next `n` calls of `kind` fail with [`Error::Unavailable`] and change nothing.
    /// Replaces any count set before for `kind`; `0` cancels. Checked before
    /// [`fail_next`](Self::fail_next)'s count, so a call consumes at most one failure.
    pub fn fail_next_matching(&self, kind: CallKind, n: u64) {
        self.store.inner().faults.by_kind[kind.index()].store(n, Ordering::Release);
    }

    /// Lifts every fault: pending failures, blocked keep-alives and the watch delay.
    pub fn clear(&self) {
        let inner = self.store.inner();
        inner.faults.clear();
        let mut state = inner.lock_state();
        state.leases.blocked.clear();
        state.watchers.delay = Duration::ZERO;
    }
}
