//! Fencing: how a resource refuses writes from a holder whose lock was already lost.

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
