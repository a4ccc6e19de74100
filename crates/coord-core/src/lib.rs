//! coord-core: backend traits and coordination primitives written once, generically.
//!
//! The primitives — [`Mutex`], [`RwLock`], [`Election`], [`Semaphore`] — run on any [`Backend`]: a store with
//! key-value, revisions, leases, watches and transactions (etcd via `coord-etcd`, memory via
//! `coord-mem`). On etcd their keys and transactions follow etcd's Go `concurrency` package, so
//! Go and Rust services share one lock or one election.
//!
//! # How waiting works
//!
//! Each contender writes one key on its [`Session`]'s lease and learns, in the same
//! transaction, the keys ahead of it (all of them when there are at most 16). Keys created later
//! are behind it, so that set can only shrink. An acquire that finds nobody ahead holds at once:
//! one transaction, no watch. Otherwise it waits with watches registered right after its
//! acquire, each followed by one read so that nothing between the two is missed:
//!
//! - **one key ahead** (the common handoff): a delete-only watch of the name's prefix. When that
//!   key's delete arrives, the waiter holds with no further call; its own key's delete, if any,
//!   arrives in the same revision batch, so it never takes a turn its key no longer gives it.
//! - **further back**: a watch of the key just ahead of it. When that key goes, it reads once
//!   (its own key and the keys ahead): nobody left ahead means its turn, its own key gone means
//!   [`Error::NotHeld`], else it watches the new key just ahead.
//!
//! So each key is watched by the one waiter behind it: a release is delivered as one watch
//! event to one waiter, whatever the number of waiters, and only that waiter makes a call. No
//! watch is registered at the moment of a handoff (etcd may serve a watch registered while a
//! write commits from its 100 ms catch-up loop for its first moments); each is cancelled as
//! soon as it is not needed. A holder that waited on the prefix watch keeps it to report its
//! key's deletion ([`LockGuard::lost`]); any other opens a watch of its key on its first
//! `lost()` and reads the key once.
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
pub mod metered;
pub mod mutex;
pub mod names;
pub mod observe;
pub mod prefixed;
mod queue;
pub mod rwlock;
pub mod semaphore;
mod semaphore_queue;
pub mod session;
pub mod telemetry;
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
pub use metered::Metered;
pub use mutex::Mutex;
pub use observe::{LeaderStream, Observation};
pub use prefixed::Prefixed;
pub use rwlock::RwLock;
pub use semaphore::{Semaphore, SemaphorePermit};
pub use session::{Session, SessionBuilder, DEFAULT_TTL};
pub use telemetry::NameLabels;
pub use txn::{Compare, CompareOp, CompareTarget, Txn, TxnOp, TxnOpResponse, TxnResponse};
pub use watch::{EventKind, WatchEvent, WatchRequest, WatchStream};
