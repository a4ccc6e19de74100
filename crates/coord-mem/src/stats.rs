//! Call counters: how many times each [`Backend`](coord_core::Backend) method was called.
//!
//! Primitives promise to be "herd-free in calls" (a release makes only the next waiter issue
//! any call); tests prove it by counting, so counting must be exact and cheap.

use std::sync::atomic::{AtomicU64, Ordering};

/// One kind of backend operation: one per [`Backend`](coord_core::Backend) method.
///
/// Used to read [`MemStats`] and to aim injected failures
/// ([`Faults::fail_next_matching`](crate::Faults::fail_next_matching)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum OpKind {
    /// [`Backend::txn`](coord_core::Backend::txn).
    Txn,
    /// [`Backend::range`](coord_core::Backend::range).
    Range,
    /// [`Backend::put`](coord_core::Backend::put).
    Put,
    /// [`Backend::delete`](coord_core::Backend::delete).
    Delete,
    /// [`Backend::lease_grant`](coord_core::Backend::lease_grant).
    LeaseGrant,
    /// [`Backend::lease_revoke`](coord_core::Backend::lease_revoke).
    LeaseRevoke,
    /// [`Backend::lease_keep_alive`](coord_core::Backend::lease_keep_alive).
    LeaseKeepAlive,
    /// [`Backend::lease_time_to_live`](coord_core::Backend::lease_time_to_live).
    LeaseTimeToLive,
    /// [`Backend::lease_list`](coord_core::Backend::lease_list).
    LeaseList,
    /// [`Backend::watch`](coord_core::Backend::watch).
    Watch,
    /// [`Backend::compact`](coord_core::Backend::compact).
    Compact,
}

impl OpKind {
    /// Every kind, in declaration order.
    pub const ALL: [OpKind; 11] = [
        OpKind::Txn,
        OpKind::Range,
        OpKind::Put,
        OpKind::Delete,
        OpKind::LeaseGrant,
        OpKind::LeaseRevoke,
        OpKind::LeaseKeepAlive,
        OpKind::LeaseTimeToLive,
        OpKind::LeaseList,
        OpKind::Watch,
        OpKind::Compact,
    ];

    pub(crate) const COUNT: usize = Self::ALL.len();

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A snapshot of the call counters of a [`MemStore`](crate::MemStore).
///
/// Every call of a [`Backend`](coord_core::Backend) method counts once, under its own kind
/// (a `put` is a put, not a txn), whether it succeeded, failed, or failed by an injected
/// fault. Background lease expiry is not a call and is not counted.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> coord_core::Result<()> {
/// use coord_core::{Backend, PutRequest, RangeRequest};
/// use coord_mem::MemStore;
///
/// let store = MemStore::new();
/// let before = store.stats();
/// store.put(PutRequest::new("k", "v")).await?;
/// store.range(RangeRequest::key("k")).await?;
/// let calls = store.stats().since(&before);
/// assert_eq!((calls.put, calls.range, calls.txn), (1, 1, 0));
/// assert_eq!(calls.total(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemStats {
    /// Calls of `txn`.
    pub txn: u64,
    /// Calls of `range`.
    pub range: u64,
    /// Calls of `put`.
    pub put: u64,
    /// Calls of `delete`.
    pub delete: u64,
    /// Calls of `lease_grant`.
    pub lease_grant: u64,
    /// Calls of `lease_revoke`.
    pub lease_revoke: u64,
    /// Calls of `lease_keep_alive`.
    pub lease_keep_alive: u64,
    /// Calls of `lease_time_to_live`.
    pub lease_time_to_live: u64,
    /// Calls of `lease_list`.
    pub lease_list: u64,
    /// Calls of `watch`.
    pub watch: u64,
    /// Calls of `compact`.
    pub compact: u64,
}

impl MemStats {
    /// The count for one kind.
    pub fn get(&self, kind: OpKind) -> u64 {
        match kind {
            OpKind::Txn => self.txn,
            OpKind::Range => self.range,
            OpKind::Put => self.put,
            OpKind::Delete => self.delete,
            OpKind::LeaseGrant => self.lease_grant,
            OpKind::LeaseRevoke => self.lease_revoke,
            OpKind::LeaseKeepAlive => self.lease_keep_alive,
            OpKind::LeaseTimeToLive => self.lease_time_to_live,
            OpKind::LeaseList => self.lease_list,
            OpKind::Watch => self.watch,
            OpKind::Compact => self.compact,
        }
    }

    fn slot(&mut self, kind: OpKind) -> &mut u64 {
        match kind {
            OpKind::Txn => &mut self.txn,
            OpKind::Range => &mut self.range,
            OpKind::Put => &mut self.put,
            OpKind::Delete => &mut self.delete,
            OpKind::LeaseGrant => &mut self.lease_grant,
            OpKind::LeaseRevoke => &mut self.lease_revoke,
            OpKind::LeaseKeepAlive => &mut self.lease_keep_alive,
            OpKind::LeaseTimeToLive => &mut self.lease_time_to_live,
            OpKind::LeaseList => &mut self.lease_list,
            OpKind::Watch => &mut self.watch,
            OpKind::Compact => &mut self.compact,
        }
    }

    /// Every call, all kinds together.
    pub fn total(&self) -> u64 {
        OpKind::ALL.iter().map(|k| self.get(*k)).sum()
    }

    /// The calls made since `earlier` (a snapshot taken before this one), kind by kind.
    pub fn since(&self, earlier: &MemStats) -> MemStats {
        let mut out = MemStats::default();
        for kind in OpKind::ALL {
            *out.slot(kind) = self.get(kind).saturating_sub(earlier.get(kind));
        }
        out
    }
}

/// The live counters: one relaxed atomic per kind, so counting costs next to nothing.
#[derive(Debug, Default)]
pub(crate) struct Counters([AtomicU64; OpKind::COUNT]);

impl Counters {
    pub(crate) fn bump(&self, kind: OpKind) {
        self.0[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MemStats {
        let mut out = MemStats::default();
        for kind in OpKind::ALL {
            *out.slot(kind) = self.0[kind.index()].load(Ordering::Relaxed);
        }
        out
    }

    pub(crate) fn reset(&self) {
        for c in &self.0 {
            c.store(0, Ordering::Relaxed);
        }
    }
}
