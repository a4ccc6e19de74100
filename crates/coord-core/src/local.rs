//! What one session holds or awaits in-process, per name: turns on a shared key and rwlock
//! claims. Entries live only while in use, so a session that locked 10,000 names in turn keeps
//! none of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::error::{Error, Result};
use crate::session::{lock_unpoisoned, shrink_if_sparse};

/// A session's in-process bookkeeping.
#[derive(Default)]
pub(crate) struct Local {
    /// One turn per key a session reuses (`name/<lease hex>` of a mutex or election): its local
    /// holders take turns, as they share the key.
    turns: StdMutex<HashMap<Vec<u8>, Arc<AsyncMutex<()>>>>,
    /// The read and write locks this session holds or awaits, per rwlock name.
    claims: StdMutex<HashMap<Vec<u8>, Claims>>,
}

#[derive(Default, Clone, Copy)]
struct Claims {
    reads: usize,
    writes: usize,
}

impl Local {
    /// Waits for the turn on `key`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped wait leaves no entry behind.
    pub(crate) async fn turn(self: &Arc<Self>, key: &[u8]) -> Turn {
        let entry = TurnEntry::get(self, key);
        let permit = entry.mutex().lock_owned().await;
        Turn {
            _permit: permit,
            _entry: entry,
        }
    }

    /// The turn on `key` if it is free now.
    pub(crate) fn try_turn(self: &Arc<Self>, key: &[u8]) -> Option<Turn> {
        let entry = TurnEntry::get(self, key);
        let permit = entry.mutex().try_lock_owned().ok()?;
        Some(Turn {
            _permit: permit,
            _entry: entry,
        })
    }

    /// Records that this session asks for a read (`write == false`) or the write lock of the
    /// rwlock `name`. A read while this session holds or awaits the write lock, or the write
    /// lock while it holds or awaits a read, is [`Error::WouldDeadlock`]: it could only be
    /// granted after the session's own conflicting lock is released. Without `wait` (the
    /// try-variants) it is [`Error::Locked`]: the lock is taken, by this session.
    pub(crate) fn claim(self: &Arc<Self>, name: &[u8], write: bool, wait: bool) -> Result<Claim> {
        let mut claims = lock_unpoisoned(&self.claims);
        let c = claims.entry(name.to_vec()).or_default();
        let (mine, theirs) = if write {
            (&mut c.writes, c.reads)
        } else {
            (&mut c.reads, c.writes)
        };
        if theirs > 0 {
            let held = if write {
                "a read lock"
            } else {
                "the write lock"
            };
            let wanted = if write {
                "the write lock"
            } else {
                "a read lock"
            };
            let reason = format!(
                "this session already holds or awaits {held} of this name; {wanted} would wait \
                 for it (use another Session for a participant that must wait)"
            );
            return Err(if wait {
                Error::WouldDeadlock { reason }
            } else {
                Error::Locked
            });
        }
        *mine += 1;
        Ok(Claim {
            local: self.clone(),
            name: name.to_vec(),
            write,
        })
    }

    /// How many names have in-process state now (for tests of boundedness).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock_unpoisoned(&self.turns).len() + lock_unpoisoned(&self.claims).len()
    }
}

/// What a key keeps of its session's in-process state until the key is gone: a turn or a claim.
pub(crate) struct LocalHold {
    _turn: Option<Turn>,
    _claim: Option<Claim>,
}

impl From<Turn> for LocalHold {
    fn from(turn: Turn) -> Self {
        LocalHold {
            _turn: Some(turn),
            _claim: None,
        }
    }
}

impl From<Claim> for LocalHold {
    fn from(claim: Claim) -> Self {
        LocalHold {
            _turn: None,
            _claim: Some(claim),
        }
    }
}

/// A held turn on a shared key; dropping it hands the turn on.
pub(crate) struct Turn {
    // Field order matters: the permit goes before the entry checks whether anyone still uses it.
    _permit: OwnedMutexGuard<()>,
    _entry: TurnEntry,
}

/// A use of one turn's entry; the last use removes it from the map.
struct TurnEntry {
    local: Arc<Local>,
    key: Vec<u8>,
    mutex: Option<Arc<AsyncMutex<()>>>,
}

impl TurnEntry {
    fn get(local: &Arc<Local>, key: &[u8]) -> TurnEntry {
        let mut turns = lock_unpoisoned(&local.turns);
        let mutex = turns.entry(key.to_vec()).or_default().clone();
        TurnEntry {
            local: local.clone(),
            key: key.to_vec(),
            mutex: Some(mutex),
        }
    }

    fn mutex(&self) -> Arc<AsyncMutex<()>> {
        self.mutex.clone().expect("set until dropped")
    }
}

impl Drop for TurnEntry {
    fn drop(&mut self) {
        let mut turns = lock_unpoisoned(&self.local.turns);
        drop(self.mutex.take());
        // Only the map's own reference left: nobody holds or awaits this turn.
        if turns
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            turns.remove(&self.key);
            shrink_if_sparse(&mut turns);
        }
    }
}

/// A read or write lock of one rwlock name that this session holds or awaits.
pub(crate) struct Claim {
    local: Arc<Local>,
    name: Vec<u8>,
    write: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut claims = lock_unpoisoned(&self.local.claims);
        if let Some(c) = claims.get_mut(&self.name) {
            let mine = if self.write {
                &mut c.writes
            } else {
                &mut c.reads
            };
            *mine = mine.saturating_sub(1);
            if c.reads == 0 && c.writes == 0 {
                claims.remove(&self.name);
                shrink_if_sparse(&mut claims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_and_claims_leave_no_entry() {
        let local = Arc::new(Local::default());
        let t = local.turn(b"a/1").await;
        assert!(local.try_turn(b"a/1").is_none());
        // A cancelled wait leaves nothing extra behind.
        let waiting = local.turn(b"a/1");
        drop(futures::FutureExt::now_or_never(waiting));
        drop(t);
        assert!(local.try_turn(b"a/1").is_some());
        assert_eq!(local.len(), 0);

        let r1 = local.claim(b"rw/", false, true).unwrap();
        let r2 = local.claim(b"rw/", false, true).unwrap();
        assert!(matches!(
            local.claim(b"rw/", true, true),
            Err(Error::WouldDeadlock { .. })
        ));
        drop((r1, r2));
        let w1 = local.claim(b"rw/", true, true).unwrap();
        let w2 = local.claim(b"rw/", true, true).unwrap();
        assert!(matches!(
            local.claim(b"rw/", false, true),
            Err(Error::WouldDeadlock { .. })
        ));
        drop((w1, w2));
        assert_eq!(local.len(), 0);
    }
}
