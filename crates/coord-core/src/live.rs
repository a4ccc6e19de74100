//! A session's liveness: when its lease is known to last until, when it ended, and the
//! process-wide set of leases that have a live session.
//!
//! The deadline is kept here rather than only in the keep-alive task, so that a session whose
//! keep-alive cannot run (its runtime shut down, or sits idle or blocked) still ends on time
//! for callers on other runtimes: [`LiveLease::is_ended`] and [`LiveLease::ended`] read the
//! deadline themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex as StdMutex, OnceLock};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::kv::LeaseId;
use crate::session::lock_unpoisoned;

/// Live sessions per lease id in this process. A count, not a flag: two stores (two coord-mem
/// instances, two etcd clusters) can hand out the same id; only a resumed lease is checked.
fn live() -> &'static StdMutex<HashMap<LeaseId, usize>> {
    static LIVE: OnceLock<StdMutex<HashMap<LeaseId, usize>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

/// One session's hold on its lease in this process, and its end.
#[derive(Debug)]
pub(crate) struct LiveLease {
    lease: LeaseId,
    token: CancellationToken,
    /// Still counted in the live set.
    registered: AtomicBool,
    /// Until when the lease surely lives (from the last renewal sent); `None` before the first.
    expires: StdMutex<Option<Instant>>,
}

impl LiveLease {
    /// A lease the store just granted.
    pub(crate) fn granted(lease: LeaseId) -> std::sync::Arc<LiveLease> {
        *lock_unpoisoned(live()).entry(lease).or_default() += 1;
        Self::registered(lease)
    }

    /// A lease being resumed: [`Error::InvalidArgument`] when a live session of this process
    /// has it already.
    pub(crate) fn claim(lease: LeaseId) -> Result<std::sync::Arc<LiveLease>> {
        let mut leases = lock_unpoisoned(live());
        let count = leases.entry(lease).or_default();
        if *count > 0 {
            return Err(Error::invalid(format!(
                "lease {lease:x} already has a live Session in this process: clone that \
                 Session, or detach() it before resuming the lease"
            )));
        }
        *count += 1;
        Ok(Self::registered(lease))
    }

    fn registered(lease: LeaseId) -> std::sync::Arc<LiveLease> {
        std::sync::Arc::new(LiveLease {
            lease,
            token: CancellationToken::new(),
            registered: AtomicBool::new(true),
            expires: StdMutex::new(None),
        })
    }

    /// The lease was renewed (or granted) by a request sent no earlier than `until - ttl`.
    pub(crate) fn lives_until(&self, until: Instant) {
        *lock_unpoisoned(&self.expires) = Some(until);
    }

    /// Ends the session (idempotent).
    pub(crate) fn end(&self) {
        if self.registered.swap(false, Ordering::AcqRel) {
            let mut leases = lock_unpoisoned(live());
            if let Some(count) = leases.get_mut(&self.lease) {
                *count -= 1;
                if *count == 0 {
                    leases.remove(&self.lease);
                }
            }
        }
        self.token.cancel();
    }

    /// A token cancelled when the session ends by [`LiveLease::end`]. Deadline-only ends show
    /// in [`LiveLease::is_ended`] and [`LiveLease::ended`], which end it properly.
    pub(crate) fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    fn deadline(&self) -> Option<Instant> {
        *lock_unpoisoned(&self.expires)
    }

    /// Whether the session ended, or its lease's deadline passed (then it ends it now).
    pub(crate) fn is_ended(&self) -> bool {
        if self.token.is_cancelled() {
            return true;
        }
        if self.deadline().is_some_and(|d| Instant::now() >= d) {
            self.end();
            return true;
        }
        false
    }

    /// Resolves when the session ends, or when its lease's deadline passes without a renewal.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub(crate) async fn ended(&self) {
        loop {
            let deadline = self.deadline();
            tokio::select! {
                _ = self.token.cancelled() => return,
                _ = sleep_until(deadline) => {
                    if self.is_ended() {
                        return;
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Drop for LiveLease {
    fn drop(&mut self) {
        self.end();
    }
}
