//! Fencing: how a resource refuses writes from a holder whose lock was already lost.
//!
//! # When a lock alone is not enough
//!
//! A distributed lock is a lease: the store keeps the holder's key while the holder renews
//! it, and deletes it when renewals stop for a TTL. The holder cannot tell, at the instant it
//! writes, that its key still exists — between "I hold the lock" and the write landing there
//! is always a gap, and anything that stretches the gap past the lease lets a second holder in:
//!
//! - **process pauses**: a garbage-collection pause, `SIGSTOP`, a VM migration, swapping;
//! - **slow I/O**: the write itself is delayed in a queue, a retrying client, a slow disk;
//! - **lease expiry while holding**: the holder was cut off from the store (partition,
//!   overloaded store) and its renewals did not arrive; the store expired the lease and gave
//!   the lock to the next waiter while the old holder still believed it held it;
//! - **clock trouble**: a lease is measured by the store's clock; the holder's own idea of
//!   "my lease still has 3 s" can be wrong.
//!
//! [`crate::Session::lost`] and [`crate::LockGuard::lost`] report the loss as soon as the
//! session knows, but a paused process learns it only after it wakes — possibly after the write
//! it was about to make. Jepsen's analysis of etcd 3.4.3 (2020) showed exactly this: with
//! process pauses and partitions, etcd's lease-based locks let two clients hold a lock at once,
//! and a read-modify-write "protected" by the lock lost updates. The lock was not broken; a
//! lease cannot do better. The resource must take part.
//!
//! # The two fixes
//!
//! - **The resource is the store** (a key in the same etcd): put [`crate::LockGuard::is_owner`]
//!   (or [`crate::Leadership::is_leader`]) into the write's own transaction. The compare —
//!   "my lock key still has the create revision it had when I acquired" — and the write are
//!   applied atomically, so a holder whose key is gone cannot write, however long it paused:
//!
//!   ```no_run
//!   # async fn demo(guard: coord_core::LockGuard) -> coord_core::Result<()> {
//!   use coord_core::{PutRequest, Txn, TxnOp};
//!   let txn = Txn::new()
//!       .when([guard.is_owner()])
//!       .and_then([TxnOp::Put(PutRequest::new("balance", "200"))]);
//!   if !guard.session().backend().txn(txn).await?.succeeded {
//!       // The lock was lost before the write: nothing was written.
//!   }
//!   # Ok(()) }
//!   ```
//!
//! - **The resource is elsewhere** (a database, a file server, another service): send the
//!   guard's [`crate::LockGuard::fencing_token`] with every write, and have the resource reject
//!   any token lower than the highest it has seen ([`Fence`] is that check). Tokens are the
//!   lock key's create revision, so a later holder always has a larger token.
//!
//! `examples/fenced_write.rs` runs both against etcd, next to an unfenced write that lands.
//! The fault suite in `crates/coord-chaos` pauses holders past their lease hundreds of times and
//! counts the stale writes that each kind of resource accepted (none), and those an unfenced
//! control accepted (many); `RELIABILITY.md` has the numbers.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::kv::Revision;

/// The resource side of fencing: remembers the highest token it accepted and rejects any lower
/// one.
///
/// A lock alone cannot stop a holder that was paused (GC, SIGSTOP, a slow disk) past its lease:
/// it wakes up believing it holds the lock while another holder already does. If the resource
/// it writes to checks [`crate::LockGuard::fencing_token`] with a `Fence`, the stale holder's
/// write is refused. Where the resource is the store itself, put
/// [`crate::LockGuard::is_owner`] into the write's transaction instead.
///
/// ```
/// let fence = coord_core::Fence::new();
/// assert!(fence.accept(7).is_ok());
/// assert!(fence.accept(9).is_ok());
/// assert_eq!(fence.accept(8), Err(coord_core::StaleToken { token: 8, highest: 9 }));
/// ```
#[derive(Debug, Default)]
pub struct Fence {
    highest: AtomicI64,
}

/// A token lower than one already accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stale fencing token {token}: {highest} was already accepted")]
pub struct StaleToken {
    /// The rejected token.
    pub token: Revision,
    /// The highest token accepted so far.
    pub highest: Revision,
}

impl Fence {
    /// A fence that has accepted nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` if it is at least the highest accepted so far (the same holder may write
    /// many times), and remembers it.
    pub fn accept(&self, token: Revision) -> Result<(), StaleToken> {
        let mut highest = self.highest.load(Ordering::Acquire);
        loop {
            if token < highest {
                return Err(StaleToken { token, highest });
            }
            match self.highest.compare_exchange_weak(
                highest,
                token,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => highest = now,
            }
        }
    }

    /// The highest token accepted so far (`0`: none).
    pub fn highest(&self) -> Revision {
        self.highest.load(Ordering::Acquire)
    }
}
