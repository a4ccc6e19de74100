//! coord-core: backend traits and coordination primitives written once, generically.
//!
//! The primitives — [`Mutex`], [`RwLock`], [`Election`] — run on any [`Backend`]: a store with
//! key-value, revisions, leases, watches and transactions (etcd via `coord-etcd`, memory via
//! `coord-mem`). On etcd their keys and transactions follow etcd's Go `concurrency` package, so
//! Go and Rust services share one lock or one election.
//!
//! # How waiting works
//!
//! Each contender writes one key on its [`Session`]'s lease and learns, in the same
//! transaction, the keys ahead of it: all of them when there are at most 16, else the one just
//! ahead. It then waits for their deletes, delivered by one delete-only watch per name that the
//! session registers on its first contended acquire of that name and keeps while it has a
//! waiter or a holder there (then, after a short linger, closes): later acquires subscribe to it
//! before their transaction, so no release is missed, and no waiter is ever left on a watch the
//! store must catch up on. Keys created later are behind it, so once every key it knew of is
//! deleted, the lock is its own without a further call; in a longer queue it reads once after
//! the key just ahead goes, and repeats. A release therefore makes at most the next contender
//! issue a call (herd-free in calls). An acquire that never waits opens no watch at all. The
//! same watch tells a holder that its key was deleted ([`LockGuard::lost`]). The cost: every
//! session watching a name receives each release event of that name (small, filtered
//! in-process); with thousands of sessions waiting on one name, measure.
//!
//! # Names
//!
//! Names are arbitrary non-empty bytes (UTF-8 or not, NUL allowed, as etcd keys), at most
//! [`names::MAX_NAME_LEN`] bytes. A primitive named `n` uses the keys under `n/`, so `a` and
//! `ab` never meet; `a` and `a/b` would share keys, so do not nest names that way.
//!
//! # Releasing
//!
//! Guards are released explicitly with an async call (`unlock`, `resign`); dropping one
//! releases it in the background; the lease TTL is the last backstop.
#![deny(missing_docs)]

pub mod backend;
#[doc = include_str!("backend_guide.md")]
pub mod backend_guide {}
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod counting;
pub mod election;
pub mod error;
pub mod fencing;
pub mod guard;
mod held;
pub mod kv;
pub mod lease;
mod live;
mod local;
pub mod mutex;
pub mod names;
pub mod observe;
pub mod prefixed;
mod queue;
pub mod rwlock;
pub mod session;
pub mod txn;
mod wait;
pub mod watch;
mod watcher;

pub use backend::{Backend, BackendLimits, Capabilities, Capability, Decorator, DynBackend};
pub use counting::{AtomicCallCounts, CallCounts, CallKind, Counting};
pub use election::{Election, ElectionObserver, Leadership};
pub use error::{BoxError, Error, Result};
pub use fencing::{Fence, StaleToken};
pub use guard::{LockGuard, LockKind};
pub use kv::{
    prefix_end, DeleteRequest, DeleteResponse, KeyRange, KeyValue, LeaseId, PutRequest,
    PutResponse, RangeRequest, RangeResponse, Revision, SortOrder, SortTarget,
};
pub use lease::{LeaseGrant, LeaseTimeToLive};
pub use mutex::Mutex;
pub use observe::{LeaderStream, Observation};
pub use prefixed::Prefixed;
pub use rwlock::RwLock;
pub use session::{Session, SessionBuilder, DEFAULT_TTL};
pub use txn::{Compare, CompareOp, CompareTarget, Txn, TxnOp, TxnOpResponse, TxnResponse};
pub use watch::{EventKind, WatchEvent, WatchRequest, WatchStream};
