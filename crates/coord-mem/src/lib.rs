//! An in-memory [`Backend`](coord_core::Backend) for `coord`, with etcd v3's semantics,
//! deterministic under tokio's paused clock, with fault injection: for unit tests of code that
//! uses `coord`, and for ours.
//!
//! ```
//! use std::time::Duration;
//! use coord_core::{Backend, Compare, CompareOp, KeyRange, PutRequest, RangeRequest, Txn, WatchRequest};
//! use coord_mem::MemStore;
//! use futures::StreamExt;
//!
//! #[tokio::main(flavor = "current_thread", start_paused = true)]
//! async fn main() -> coord_core::Result<()> {
//!     let store = MemStore::new();
//!     let mut deletes = store.watch(WatchRequest::new(KeyRange::prefix("lock/")).with_no_put()).await?;
//!     let lease = store.lease_grant(10, None).await?;
//!     // Create "lock/a" only if it does not exist, and read the first key of the prefix.
//!     let resp = store.txn(Txn::new()
//!         .when([Compare::create_revision("lock/a", CompareOp::Equal, 0)])
//!         .and_then([PutRequest::new("lock/a", "").with_lease(lease.id).into(),
//!                    RangeRequest::first_created("lock/").into()])).await?;
//!     assert!(resp.succeeded);
//!     assert_eq!(resp.header_revision, 2, "the first write of a fresh store is revision 2");
//!     // Ten seconds later (on the paused clock) the lease expires and its key is deleted.
//!     tokio::time::advance(Duration::from_secs(10)).await;
//!     let event = deletes.next().await.unwrap()?;
//!     assert_eq!((event.kv.key.as_slice(), event.revision()), (&b"lock/a"[..], 3));
//!     assert_eq!(store.range(RangeRequest::prefix("lock/")).await?.count, 0);
//!     Ok(())
//! }
//! ```
//!
//! | | |
//! |---|---|
//! | Revisions | one global revision from 1; each write (txn, put, delete, lease end) that changes something raises it by one |
//! | Keys | `create_revision`, `mod_revision`, `version`, `lease`, as etcd |
//! | Range | key, prefix, `[start, end)`, from-key; sort, limit, `count`/`more`, `max_*_revision`, past revisions, keys-only, count-only |
//! | Txn | compares on create/mod revision, version, value, lease; later ops see earlier ones; etcd's checks (empty key, request size, duplicate key, 128 ops) |
//! | Leases | grant, keep-alive, revoke, time-to-live, list; expiry on tokio's clock, keys deleted in one revision |
//! | Watch | key or range, from now or from a past revision, `no_put`/`no_delete`/`prev_kv` |
//! | Compaction | explicit, and automatic past [`MemStoreBuilder::history_limit`] revisions |
//! | Test support | [`MemStore::stats`] call counts ([`CallCounts`], as [`Counting`](coord_core::Counting) gives them); [`MemStore::faults`] fault injection |
//!
//! # Semantics worth knowing
//!
//! - **Key ranges** mean what [`KeyRange`](coord_core::KeyRange) says, literally (as
//!   [`KeyRange::contains`](coord_core::KeyRange::contains) reads them): `KeyRange::Range`
//!   is `[start, end)`, empty when `end <= start` (an empty `end` and `end == [0]` are no
//!   sentinels). An empty key where etcd needs one (`KeyRange::Key`, a put) is
//!   [`Error::InvalidArgument`](coord_core::Error::InvalidArgument).
//! - **`count`** is, as in etcd, the number of keys in the range at the read revision, before
//!   `limit` and before the `max_create_revision`/`max_mod_revision` filters.
//! - **Compaction** at revision `c` keeps the state at `c`: reads at `c` and watches from `c`
//!   work, below `c` they give [`Error::Compacted`](coord_core::Error::Compacted) (etcd's
//!   rule).
//! - **A watch from a compacted revision** fails in the call: [`Backend::watch`] returns
//!   `Err(Compacted)` instead of a stream that fails later. Once a stream is open it has all
//!   its events: they are pushed at write time into an unbounded per-watch channel, so a slow
//!   reader never blocks the store and later compaction never takes its events away. A stream
//!   ends with an error item only by [`Faults::drop_watches`].
//! - **Time-to-live** rounds the remaining time *up* to whole seconds (etcd truncates).
//! - **Leases** expire on tokio's clock: a background task (started by the first grant,
//!   ended when the store is dropped) expires them on time, and every call first expires those
//!   whose deadline has passed.
//!
//! [`Backend::watch`]: coord_core::Backend::watch
#![deny(missing_docs)]

mod config;
mod faults;
mod lease;
mod span;
mod state;
mod store;
mod watch;

pub use config::MemStoreBuilder;
pub use faults::Faults;
pub use store::MemStore;

/// The call counts of [`MemStore::stats`] and the call kinds that
/// [`Faults::fail_next_matching`] aims at: coord-core's, the ones
/// [`Counting`](coord_core::Counting) reports.
#[doc(no_inline)]
pub use coord_core::{CallCounts, CallKind};
