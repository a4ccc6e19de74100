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
//!     mutex.lock().await?.unlock().await?; // the first lock also registers the name's watch
//!     let before = counting.counts();
//!     mutex.lock().await?.unlock().await?;
//!     let spent = counting.counts().since(&before);
//!     assert_eq!((spent.txn, spent.calls()), (2, 2)); // one txn to lock, one to unlock
//!     println!("lock + unlock: {spent}"); // "txn=2"
//!     session.close().await
//! }
//! ```
//!
//! Each [`Backend`] method counts under its own name: a `range` is a range, not a txn, even
//! when the inner backend runs it as a transaction. Wrap the backend each session uses in its
//! own `Counting` to attribute calls to sessions.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

use crate::backend::{Backend, BackendLimits};
use crate::error::Result;
use crate::kv::{
    DeleteRequest, DeleteResponse, LeaseId, PutRequest, PutResponse, RangeRequest, RangeResponse,
    Revision,
};
use crate::lease::{LeaseGrant, LeaseTimeToLive};
use crate::txn::{Txn, TxnResponse};
use crate::watch::{WatchRequest, WatchStream};

/// How many times each [`Backend`] method was called through a [`Counting`] backend, and how
/// many watch events its watches delivered.
///
/// A call counts when it is made, whatever its outcome.
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

const SLOTS: usize = 12;

impl CallCounts {
    fn from_slots(s: [u64; SLOTS]) -> Self {
        CallCounts {
            txn: s[0],
            range: s[1],
            put: s[2],
            delete: s[3],
            lease_grant: s[4],
            lease_revoke: s[5],
            lease_keep_alive: s[6],
            lease_time_to_live: s[7],
            lease_list: s[8],
            watch: s[9],
            compact: s[10],
            watch_events: s[11],
        }
    }

    fn slots(&self) -> [u64; SLOTS] {
        [
            self.txn,
            self.range,
            self.put,
            self.delete,
            self.lease_grant,
            self.lease_revoke,
            self.lease_keep_alive,
            self.lease_time_to_live,
            self.lease_list,
            self.watch,
            self.compact,
            self.watch_events,
        ]
    }

    /// Every call (round trip) of every kind; watch events are not calls and are left out.
    pub fn calls(&self) -> u64 {
        self.slots()[..SLOTS - 1].iter().sum()
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
        const NAMES: [&str; SLOTS] = [
            "txn",
            "range",
            "put",
            "delete",
            "lease_grant",
            "lease_revoke",
            "lease_keep_alive",
            "lease_time_to_live",
            "lease_list",
            "watch",
            "compact",
            "watch_events",
        ];
        let mut first = true;
        for (name, n) in NAMES.iter().zip(self.slots()) {
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

#[derive(Default)]
struct Counters([AtomicU64; SLOTS]);

impl Counters {
    fn bump(&self, slot: usize) {
        self.0[slot].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> CallCounts {
        CallCounts::from_slots(std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
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
    counters: Arc<Counters>,
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

// Slot numbers, in CallCounts' field order.
const TXN: usize = 0;
const RANGE: usize = 1;
const PUT: usize = 2;
const DELETE: usize = 3;
const LEASE_GRANT: usize = 4;
const LEASE_REVOKE: usize = 5;
const LEASE_KEEP_ALIVE: usize = 6;
const LEASE_TIME_TO_LIVE: usize = 7;
const LEASE_LIST: usize = 8;
const WATCH: usize = 9;
const COMPACT: usize = 10;
const WATCH_EVENTS: usize = 11;

#[async_trait]
impl<B: Backend> Backend for Counting<B> {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.counters.bump(TXN);
        self.inner.txn(txn).await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.counters.bump(RANGE);
        self.inner.range(req).await
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        self.counters.bump(PUT);
        self.inner.put(req).await
    }

    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        self.counters.bump(DELETE);
        self.inner.delete(req).await
    }

    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.counters.bump(LEASE_GRANT);
        self.inner.lease_grant(ttl, id).await
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.counters.bump(LEASE_REVOKE);
        self.inner.lease_revoke(id).await
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.counters.bump(LEASE_KEEP_ALIVE);
        self.inner.lease_keep_alive(id).await
    }

    async fn lease_time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseTimeToLive> {
        self.counters.bump(LEASE_TIME_TO_LIVE);
        self.inner.lease_time_to_live(id, with_keys).await
    }

    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        self.counters.bump(LEASE_LIST);
        self.inner.lease_list().await
    }

    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        self.counters.bump(WATCH);
        let stream = self.inner.watch(req).await?;
        let counters = self.counters.clone();
        Ok(Box::pin(
            stream.inspect(move |_| counters.bump(WATCH_EVENTS)),
        ))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.counters.bump(COMPACT);
        self.inner.compact(revision).await
    }

    fn limits(&self) -> BackendLimits {
        self.inner.limits()
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
    }
}
