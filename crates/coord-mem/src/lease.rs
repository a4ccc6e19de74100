//! Leases: the table of live leases with their deadlines, and the task that expires them.
//!
//! Deadlines are on tokio's clock ([`tokio::time::Instant`]), so under
//! `#[tokio::test(start_paused = true)]` a test moves time with `tokio::time::advance` and
//! leases expire exactly when it says, with no real sleeping.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use coord_core::{Error, LeaseGrant, LeaseId, LeaseTimeToLive, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::store::Inner;

/// One live lease.
#[derive(Debug)]
pub(crate) struct Lease {
    /// The TTL it was granted with, in seconds.
    pub(crate) ttl: i64,
    pub(crate) deadline: Instant,
    /// Keys attached to it, in key order (revoke deletes them in this order, as etcd does).
    pub(crate) keys: BTreeSet<Vec<u8>>,
}

/// Every live lease, indexed by id and by deadline.
#[derive(Debug)]
pub(crate) struct LeaseTable {
    leases: HashMap<LeaseId, Lease>,
    /// `(deadline, id)` of every lease: the first entry is the next to expire.
    by_deadline: BTreeSet<(Instant, LeaseId)>,
    /// Leases whose keep-alives fail (fault injection).
    pub(crate) blocked: HashSet<LeaseId>,
    rng: StdRng,
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// `now + ttl`, saturating far in the future for huge TTLs (etcd's max TTL is ~285 years).
fn deadline_after(now: Instant, ttl: i64) -> Instant {
    now.checked_add(ttl_duration(ttl))
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl LeaseTable {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        LeaseTable {
            leases: HashMap::new(),
            by_deadline: BTreeSet::new(),
            blocked: HashSet::new(),
            rng: match seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_entropy(),
            },
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.leases.len()
    }

    pub(crate) fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// Grants a lease; the TTL was checked against the store's limits by the caller.
    /// `Some(0)` means "pick one", as lease id 0 does in etcd.
    pub(crate) fn grant(
        &mut self,
        ttl: i64,
        id: Option<LeaseId>,
        now: Instant,
    ) -> Result<LeaseGrant> {
        let id = match id {
            Some(id) if id != 0 => {
                if self.leases.contains_key(&id) {
                    return Err(Error::invalid(format!("lease {id:x} already exists")));
                }
                id
            }
            _ => loop {
                let id = self.rng.gen_range(1..=i64::MAX);
                if !self.leases.contains_key(&id) {
                    break id;
                }
            },
        };
        let deadline = deadline_after(now, ttl);
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline,
                keys: BTreeSet::new(),
            },
        );
        self.by_deadline.insert((deadline, id));
        Ok(LeaseGrant { id, ttl })
    }

    /// Renews a lease to `now + ttl`; returns the granted TTL (what etcd's keep-alive returns).
    pub(crate) fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<i64> {
        let lease = self
            .leases
            .get_mut(&id)
            .ok_or(Error::LeaseNotFound { lease: id })?;
        self.by_deadline.remove(&(lease.deadline, id));
        lease.deadline = deadline_after(now, lease.ttl);
        self.by_deadline.insert((lease.deadline, id));
        Ok(lease.ttl)
    }

    /// Remaining time rounded up to whole seconds (etcd truncates; rounding up keeps "just
    /// granted with TTL 10" reading as 10 under a paused clock).
    pub(crate) fn time_to_live(
        &self,
        id: LeaseId,
        now: Instant,
        with_keys: bool,
    ) -> Result<LeaseTimeToLive> {
        let lease = self
            .leases
            .get(&id)
            .ok_or(Error::LeaseNotFound { lease: id })?;
        let left = lease.deadline.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Ok(LeaseTimeToLive {
            id,
            ttl: i64::try_from(secs).unwrap_or(i64::MAX),
            granted_ttl: lease.ttl,
            keys: if with_keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Live lease ids, sorted (so listings are deterministic).
    pub(crate) fn list(&self) -> Vec<LeaseId> {
        let mut ids: Vec<LeaseId> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub(crate) fn attach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key.to_vec());
        }
    }

    pub(crate) fn detach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// The first lease whose deadline is at or before `now`, if any.
    pub(crate) fn first_expired(&self, now: Instant) -> Option<LeaseId> {
        self.by_deadline
            .first()
            .filter(|(deadline, _)| *deadline <= now)
            .map(|(_, id)| *id)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    pub(crate) fn remove(&mut self, id: LeaseId) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        self.by_deadline.remove(&(lease.deadline, id));
        self.blocked.remove(&id);
        Some(lease)
    }
}

/// The background task that expires leases on time, even when nobody calls the store.
///
/// Started lazily by the first grant; it holds only a [`Weak`] reference to the store, and the
/// store's `Drop` wakes it so it sees the store is gone and ends.
#[derive(Debug, Default)]
pub(crate) struct ExpiryDriver {
    notify: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ExpiryDriver {
    /// Wakes the task so it recomputes its next deadline.
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }

    /// Starts the task if it is not running (never started, or its runtime went away).
    /// Without a tokio runtime nothing starts; expiry then happens lazily at the next call.
    pub(crate) fn ensure_running(&self, store: Weak<Inner>) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            *task = Some(handle.spawn(run(store, self.notify.clone())));
        }
    }
}

async fn run(store: Weak<Inner>, notify: Arc<Notify>) {
    loop {
        // Hold the store only while expiring, never across an await: the store must be free to
        // drop while this task sleeps.
        let next = {
            let Some(inner) = store.upgrade() else { return };
            let next = inner.lock_state().leases.next_deadline();
            next
        };
        match next {
            Some(deadline) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = notify.notified() => {}
                }
            }
            None => notify.notified().await,
        }
    }
}
