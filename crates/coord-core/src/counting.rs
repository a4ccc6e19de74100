//! A backend adapter that counts calls: how many round trips each operation really costs.
//!
//! Wrap any [`Backend`] in [`Counting`] to learn, on a real store, what a primitive costs in
//! calls: benchmarks report calls per operation with it, and tests pin them down so they cannot
//! creep (an uncontended `lock` is one transaction, a handoff wakes only the next waiter).
//!
//! ```
//! use coord_core::{Backend, Counting, Mutex, Session};
//!
//! /// What one uncontended lock and unlock cost, in calls, on any backend.
//! async fn lock_cost(store: impl Backend + Clone) -> coord_core::Result<()> {
//!     let counting = Counting::new(store);
//!     // Clones share the counters: the session gets one, we read the other.
//!     let session = Session::new(counting.clone(), 10).await?;
//!     let mutex = Mutex::new(&session, "jobs")?;
//!     mutex.lock().await?.unlock().await?;
//!     let before = counting.counts();
//!     mutex.lock().await?.unlock().await?;
//!     let spent = counting.counts().since(&before);
//!     assert_eq!((spent.txn, spent.calls()), (2, 2)); // one txn to lock, one to unlock
//!     println!("lock + unlock: {spent}"); // "txn=2"
//!     session.close().await
//! }
//! ```
//!
//! Each [`Backend`] method counts under its own [`CallKind`]: a `range` is a range, not a txn,
//! even when the inner backend runs it as a transaction. Wrap the backend each session uses in
//! its own `Counting` to attribute calls to sessions.
//!
//! The counts are one [`CallCounts`] type wherever they come from: coord-mem's `MemStore`
//! counts the calls made to it with the same [`AtomicCallCounts`] that `Counting` keeps.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

use crate::backend::{Backend, Decorator};
use crate::error::Result;
use crate::kv::{
    DeleteRequest, DeleteResponse, LeaseId, PutRequest, PutResponse, RangeRequest, RangeResponse,
    Revision,
};
use crate::lease::{LeaseGrant, LeaseTimeToLive};
use crate::txn::{Txn, TxnResponse};
use crate::watch::{WatchRequest, WatchStream};

/// One kind of backend call: one per [`Backend`] method.
///
/// Reads one count of a [`CallCounts`] ([`CallCounts::get`]), bumps one of an
/// [`AtomicCallCounts`], and aims injected failures in coord-mem
/// (`Faults::fail_next_matching`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CallKind {
    /// [`Backend::txn`].
    Txn,
    /// [`Backend::range`].
    Range,
    /// [`Backend::put`].
    Put,
    /// [`Backend::delete`].
    Delete,
    /// [`Backend::lease_grant`].
    LeaseGrant,
    /// [`Backend::lease_revoke`].
    LeaseRevoke,
    /// [`Backend::lease_keep_alive`].
    LeaseKeepAlive,
    /// [`Backend::lease_time_to_live`].
    LeaseTimeToLive,
    /// [`Backend::lease_list`].
    LeaseList,
    /// [`Backend::watch`].
    Watch,
    /// [`Backend::compact`].
    Compact,
}

impl CallKind {
    /// Every kind, in declaration order (the order of [`CallCounts`]' fields).
    pub const ALL: [CallKind; 11] = [
        CallKind::Txn,
        CallKind::Range,
        CallKind::Put,
        CallKind::Delete,
        CallKind::LeaseGrant,
        CallKind::LeaseRevoke,
        CallKind::LeaseKeepAlive,
        CallKind::LeaseTimeToLive,
        CallKind::LeaseList,
        CallKind::Watch,
        CallKind::Compact,
    ];

    /// This kind's position in [`CallKind::ALL`]: an index into a table with one entry per
    /// kind (`[T; CallKind::ALL.len()]`).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The method's name, as [`CallCounts`]' field and its `Display` spell it.
    fn name(self) -> &'static str {
        match self {
            CallKind::Txn => "txn",
            CallKind::Range => "range",
            CallKind::Put => "put",
            CallKind::Delete => "delete",
            CallKind::LeaseGrant => "lease_grant",
            CallKind::LeaseRevoke => "lease_revoke",
            CallKind::LeaseKeepAlive => "lease_keep_alive",
            CallKind::LeaseTimeToLive => "lease_time_to_live",
            CallKind::LeaseList => "lease_list",
            CallKind::Watch => "watch",
            CallKind::Compact => "compact",
        }
    }
}

/// How many times each [`Backend`] method was called, and how many watch events the watches
/// delivered: counted by a [`Counting`] wrapper around any backend, or by a backend that counts
/// its own calls (coord-mem's `MemStore::stats`).
///
/// A call counts when it is made, whatever its outcome, under its own kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct CallCounts {
    /// Calls of [`Backend::txn`].
    pub txn: u64,
    /// Calls of [`Backend::range`].
    pub range: u64,
    /// Calls of [`Backend::put`].
    pub put: u64,
    /// Calls of [`Backend::delete`].
    pub delete: u64,
    /// Calls of [`Backend::lease_grant`].
    pub lease_grant: u64,
    /// Calls of [`Backend::lease_revoke`].
    pub lease_revoke: u64,
    /// Calls of [`Backend::lease_keep_alive`].
    pub lease_keep_alive: u64,
    /// Calls of [`Backend::lease_time_to_live`].
    pub lease_time_to_live: u64,
    /// Calls of [`Backend::lease_list`].
    pub lease_list: u64,
    /// Calls of [`Backend::watch`] (watches opened).
    pub watch: u64,
    /// Calls of [`Backend::compact`].
    pub compact: u64,
    /// Items (events and errors) received from the watches opened through this backend. Not a
    /// call: the store pushes them.
    pub watch_events: u64,
}

/// One slot per [`CallKind`] (at its [`CallKind::index`]), then watch events.
const SLOTS: usize = CallKind::ALL.len() + 1;
const WATCH_EVENTS: usize = SLOTS - 1;

impl CallCounts {
    fn from_slots(s: [u64; SLOTS]) -> Self {
        CallCounts {
            txn: s[CallKind::Txn.index()],
            range: s[CallKind::Range.index()],
            put: s[CallKind::Put.index()],
            delete: s[CallKind::Delete.index()],
            lease_grant: s[CallKind::LeaseGrant.index()],
            lease_revoke: s[CallKind::LeaseRevoke.index()],
            lease_keep_alive: s[CallKind::LeaseKeepAlive.index()],
            lease_time_to_live: s[CallKind::LeaseTimeToLive.index()],
            lease_list: s[CallKind::LeaseList.index()],
            watch: s[CallKind::Watch.index()],
            compact: s[CallKind::Compact.index()],
            watch_events: s[WATCH_EVENTS],
        }
    }

    fn slots(&self) -> [u64; SLOTS] {
        std::array::from_fn(|i| match CallKind::ALL.get(i) {
            Some(&kind) => self.get(kind),
            None => self.watch_events,
        })
    }

    /// The calls of one kind.
    pub fn get(&self, kind: CallKind) -> u64 {
        match kind {
            CallKind::Txn => self.txn,
            CallKind::Range => self.range,
            CallKind::Put => self.put,
            CallKind::Delete => self.delete,
            CallKind::LeaseGrant => self.lease_grant,
            CallKind::LeaseRevoke => self.lease_revoke,
            CallKind::LeaseKeepAlive => self.lease_keep_alive,
            CallKind::LeaseTimeToLive => self.lease_time_to_live,
            CallKind::LeaseList => self.lease_list,
            CallKind::Watch => self.watch,
            CallKind::Compact => self.compact,
        }
    }

    /// Every call (round trip) of every kind; watch events are not calls and are left out.
    pub fn calls(&self) -> u64 {
        CallKind::ALL.iter().map(|&kind| self.get(kind)).sum()
    }

    /// Calls that read or write keys: `txn`, `range`, `put`, `delete`.
    pub fn kv_calls(&self) -> u64 {
        self.txn + self.range + self.put + self.delete
    }

    /// What was counted since `earlier` (a snapshot taken before this one), kind by kind.
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        let (now, then) = (self.slots(), earlier.slots());
        CallCounts::from_slots(std::array::from_fn(|i| now[i].saturating_sub(then[i])))
    }

    /// The sum of two counts, kind by kind (e.g. over several sessions).
    pub fn plus(&self, other: &CallCounts) -> CallCounts {
        let (a, b) = (self.slots(), other.slots());
        CallCounts::from_slots(std::array::from_fn(|i| a[i] + b[i]))
    }
}

impl fmt::Display for CallCounts {
    /// The non-zero counts, e.g. `txn=2 watch=1 watch_events=3`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = CallKind::ALL
            .iter()
            .map(|kind| kind.name())
            .chain(["watch_events"]);
        let mut first = true;
        for (name, n) in names.zip(self.slots()) {
            if n > 0 {
                write!(f, "{}{name}={n}", if first { "" } else { " " })?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// Live call counters: one relaxed atomic per [`CallKind`] and one for watch events, read as a
/// [`CallCounts`] snapshot.
///
/// What a [`Counting`] backend keeps; a backend that counts its own calls (coord-mem's
/// `MemStore`) keeps one too. Counting costs one relaxed atomic add; a snapshot reads each
/// counter on its own, so one taken while calls run may see some of them and not others.
///
/// ```
/// use coord_core::{AtomicCallCounts, CallKind};
///
/// let counts = AtomicCallCounts::new();
/// counts.bump(CallKind::Txn);
/// counts.bump_watch_events();
/// let now = counts.snapshot();
/// assert_eq!((now.get(CallKind::Txn), now.watch_events, now.calls()), (1, 1, 1));
/// counts.reset();
/// assert_eq!(counts.snapshot(), Default::default());
/// ```
#[derive(Default)]
pub struct AtomicCallCounts([AtomicU64; SLOTS]);

impl AtomicCallCounts {
    /// Every count at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one call of `kind`.
    pub fn bump(&self, kind: CallKind) {
        self.0[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one watch event (or error item) delivered.
    pub fn bump_watch_events(&self) {
        self.0[WATCH_EVENTS].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> CallCounts {
        CallCounts::from_slots(std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
    }

    /// Sets every count back to zero.
    pub fn reset(&self) {
        for c in &self.0 {
            c.store(0, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for AtomicCallCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AtomicCallCounts")
            .field(&self.snapshot())
            .finish()
    }
}

/// Wraps a [`Backend`] and counts every call made through it (see [`CallCounts`]).
///
/// Cheap to clone when the inner backend is: clones share the counters, so keep a clone to read
/// [`Counting::counts`] after handing the backend to a [`crate::Session`]. Counting costs one
/// relaxed atomic add per call and per watch event.
#[derive(Clone)]
pub struct Counting<B> {
    inner: B,
    counters: Arc<AtomicCallCounts>,
}

impl<B: fmt::Debug> fmt::Debug for Counting<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counting")
            .field("inner", &self.inner)
            .field("counts", &self.counts())
            .finish()
    }
}

impl<B> Counting<B> {
    /// Wraps `inner`, with every count at zero.
    pub fn new(inner: B) -> Self {
        Counting {
            inner,
            counters: Arc::default(),
        }
    }

    /// A snapshot of the counts so far (of this backend and all its clones).
    pub fn counts(&self) -> CallCounts {
        self.counters.snapshot()
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

#[async_trait]
impl<B: Backend> Decorator for Counting<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.counters.bump(CallKind::Txn);
        self.inner.txn(txn).await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.counters.bump(CallKind::Range);
        self.inner.range(req).await
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        self.counters.bump(CallKind::Put);
        self.inner.put(req).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        self.counters.bump(CallKind::Delete);
        self.inner.delete(req).await
    }

    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.counters.bump(CallKind::LeaseGrant);
        self.inner.lease_grant(ttl, id).await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.counters.bump(CallKind::LeaseRevoke);
        self.inner.lease_revoke(id).await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.counters.bump(CallKind::LeaseKeepAlive);
        self.inner.lease_keep_alive(id).await
    }

    async fn lease_time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseTimeToLive> {
        self.counters.bump(CallKind::LeaseTimeToLive);
        self.inner.lease_time_to_live(id, with_keys).await
    }

    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        self.counters.bump(CallKind::LeaseList);
        self.inner.lease_list().await
    }

    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        self.counters.bump(CallKind::Watch);
        let stream = self.inner.watch(req).await?;
        let counters = self.counters.clone();
        Ok(Box::pin(
            stream.inspect(move |_| counters.bump_watch_events()),
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.counters.bump(CallKind::Compact);
        self.inner.compact(revision).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_plus_display() {
        let a = CallCounts {
            txn: 3,
            watch: 1,
            watch_events: 5,
            ..CallCounts::default()
        };
        let b = CallCounts {
            txn: 1,
            ..CallCounts::default()
        };
        let d = a.since(&b);
        assert_eq!((d.txn, d.watch, d.watch_events, d.calls()), (2, 1, 5, 3));
        assert_eq!(d.to_string(), "txn=2 watch=1 watch_events=5");
        assert_eq!(CallCounts::default().to_string(), "none");
        assert_eq!(d.plus(&b).txn, 3);
        assert_eq!(a.kv_calls(), 3);
        assert_eq!((d.get(CallKind::Txn), d.get(CallKind::Watch)), (2, 1));
    }

    #[test]
    fn kinds_fields_and_slots_agree() {
        let live = AtomicCallCounts::new();
        for (i, kind) in CallKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
            for _ in 0..=i {
                live.bump(kind);
            }
        }
        live.bump_watch_events();
        let c = live.snapshot();
        for (i, kind) in CallKind::ALL.into_iter().enumerate() {
            assert_eq!(c.get(kind), i as u64 + 1, "{kind:?}");
        }
        assert_eq!((c.lease_keep_alive, c.compact, c.watch_events), (7, 11, 1));
        assert_eq!(c.calls(), 66);
        assert!(c.to_string().starts_with("txn=1 range=2 put=3"));
        assert!(c.to_string().ends_with("compact=11 watch_events=1"));
        live.reset();
        assert_eq!(live.snapshot(), CallCounts::default());
    }
}
