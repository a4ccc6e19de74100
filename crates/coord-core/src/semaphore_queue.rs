//! A semaphore contender's view of the keys ahead of it, and how it waits for enough of them
//! to go. The type and its guard are in `semaphore.rs`.
//!
//! Each contender's key holds `<permits>/<capacity>` (ASCII). A contender is granted its
//! permits when the permits of every key ahead of it (holders and waiters, by create revision)
//! plus its own fit the capacity. Keys created later are behind it, so the keys ahead can only
//! go: once granted, it stays within the capacity.
//!
//! A contender reads the name's oldest `capacity` keys, values included (a grant leaves at most
//! `capacity - 1` keys ahead, each holding at least one permit). When its own key is among them
//! it knows everything ahead of it ("complete"); else at least `capacity` keys are ahead, and it
//! cannot be granted before one of those goes.
//!
//! A waiter watches its name's prefix (deletes only), registered after its acquire and followed
//! by one read, so nothing between the two is missed. With a complete view it counts each
//! delete of a key ahead and is granted with no further call; its own key's delete in the same
//! revision batch fails it. With a partial view it reads again when one of the keys it saw goes.
//! While the watch is young (etcd may hold a new watch's events back up to 100 ms, see
//! `wait.rs`), a wait that runs twice as long as expected checks by reading, then again after
//! twice the time, and so on.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::held::{retry_transient, HeldKey};
use crate::kv::{KeyValue, RangeRequest, Revision, SortOrder, SortTarget};
use crate::txn::{Txn, TxnOp};
use crate::watcher::{DeleteWatch, Watched};

/// The value a contender writes: its permits and the capacity it counts with.
pub(crate) fn encode(permits: u32, capacity: u32) -> Vec<u8> {
    format!("{permits}/{capacity}").into_bytes()
}

/// Reads a contender's value back: `(permits, capacity)`, `None` if it is not one.
fn decode(value: &[u8]) -> Option<(u32, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let (permits, capacity) = text.split_once('/')?;
    let (permits, capacity) = (permits.parse().ok()?, capacity.parse().ok()?);
    (permits >= 1 && permits <= capacity).then_some((permits, capacity))
}

/// The read of a name's oldest `capacity` keys, values included.
pub(crate) fn window(prefix: &[u8], capacity: u32) -> RangeRequest {
    RangeRequest::prefix(prefix.to_vec())
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(i64::from(capacity))
}

/// What a contender knows of the keys ahead of it.
#[derive(Debug)]
pub(crate) struct View {
    /// Keys ahead, oldest first, with their permits.
    ahead: Vec<(Vec<u8>, u32)>,
    /// Whether `ahead` is every key ahead (else at least `capacity` keys are ahead).
    complete: bool,
}

impl View {
    /// How many contenders were seen ahead (at least `capacity` when not every key was read).
    pub(crate) fn ahead_len(&self) -> usize {
        self.ahead.len()
    }

    /// From a [`window`] read that contains what was there when `held`'s key was written or
    /// later. [`Error::CapacityMismatch`] when a key ahead counts with another capacity, or
    /// [`Error::InvalidArgument`] when one is not a semaphore contender's.
    pub(crate) fn from_window(kvs: &[KeyValue], held: &HeldKey, capacity: u32) -> Result<View> {
        let mut ahead = Vec::new();
        let mut complete = false;
        for kv in kvs {
            if kv.key == *held.key {
                complete = true;
                break;
            }
            if kv.create_revision >= held.rev {
                break;
            }
            let (permits, theirs) = decode(&kv.value).ok_or_else(|| {
                Error::invalid(format!(
                    "key {:?} under this semaphore's name is not a semaphore contender's \
                     (value {:?}, expected PERMITS/CAPACITY)",
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value)
                ))
            })?;
            if theirs != capacity {
                return Err(Error::CapacityMismatch {
                    requested: capacity,
                    in_use: theirs,
                });
            }
            ahead.push((kv.key.clone(), permits));
        }
        Ok(View { ahead, complete })
    }

    /// Whether `permits` more fit in `capacity` now: every key ahead is known, and theirs and
    /// these together are at most `capacity`.
    pub(crate) fn grants(&self, permits: u32, capacity: u32) -> bool {
        self.complete && self.taken() + u64::from(permits) <= u64::from(capacity)
    }

    fn taken(&self) -> u64 {
        self.ahead.iter().map(|(_, p)| u64::from(*p)).sum()
    }

    /// Removes the keys of `deleted` from the view; whether any was in it.
    fn remove(&mut self, deleted: &[Vec<u8>]) -> bool {
        let before = self.ahead.len();
        self.ahead.retain(|(key, _)| !deleted.contains(key));
        self.ahead.len() != before
    }

    /// How many keys ahead must go at least before `permits` fit: the handoffs a wait expects.
    fn handoffs(&self, permits: u32, capacity: u32) -> usize {
        let mut needed = 0;
        let mut taken = self.taken();
        for (_, p) in &self.ahead {
            if taken + u64::from(permits) <= u64::from(capacity) {
                break;
            }
            taken -= u64::from(*p);
            needed += 1;
        }
        needed.max(1)
    }
}

/// One read: does `held`'s key still exist, and what is ahead of it now? Fails when the key is
/// gone ([`Error::NotHeld`], or the session's end) or a key ahead has another capacity.
async fn reread(held: &HeldKey, prefix: &[u8], capacity: u32) -> Result<(Revision, View)> {
    let txn = Txn::new().and_then([
        TxnOp::Range(RangeRequest::key(held.key.to_vec()).with_keys_only()),
        TxnOp::Range(window(prefix, capacity)),
    ]);
    let resp = held.session.backend().txn(txn).await?;
    let mine = resp.range(0)?.kvs.first();
    if !matches!(mine, Some(kv) if kv.create_revision == held.rev) {
        return Err(held.gone_error().await);
    }
    let view = View::from_window(&resp.range(1)?.kvs, held, capacity)?;
    Ok((resp.header_revision, view))
}

/// How long etcd may hold a new watch's events back (its catch-up loop runs every 100 ms).
const CATCH_UP: Duration = Duration::from_millis(150);
/// The earliest check after a registration.
const FIRST_CHECK: Duration = Duration::from_millis(2);

/// Waits until `permits` fit in `capacity` ahead of `held`'s key, whose acquire saw `view`.
/// Returns the revision at which they were seen to fit. Fails when the key vanishes
/// ([`Error::NotHeld`]), the session ends, or a key ahead counts with another capacity: never
/// reports a grant it does not have.
pub(crate) async fn wait_permits(
    held: &HeldKey,
    prefix: &[u8],
    permits: u32,
    capacity: u32,
) -> Result<Revision> {
    let session = &held.session;
    let started = Instant::now();
    let reread = || retry_transient(session, || reread(held, prefix, capacity));
    loop {
        let mut watch = retry_transient(session, || {
            DeleteWatch::open(session, prefix, Watched::Prefix(prefix.to_vec()))
        })
        .await?;
        // Registered after the acquire (or a broken watch): read what went meanwhile.
        let (mut after, mut view) = reread().await?;
        if view.grants(permits, capacity) {
            return Ok(after);
        }
        let handoffs = view.handoffs(permits, capacity);
        let registered = Instant::now();
        let mut interval = (session.handoff_time() * handoffs as u32 * 2).max(FIRST_CHECK);
        let mut check = registered + interval;
        tracing::trace!(after, handoffs, "waiting for permits");
        loop {
            let due = (check < registered + CATCH_UP).then_some(check);
            let batch = tokio::select! {
                biased;
                batch = watch.next() => batch,
                _ = session.lost() => return Err(session.ended_error()),
                _ = until(due) => {
                    interval *= 2;
                    check = Instant::now() + interval;
                    (after, view) = reread().await?;
                    if view.grants(permits, capacity) {
                        tracing::debug!("a watch event was held back; found by reading");
                        return Ok(after);
                    }
                    continue;
                }
            };
            match batch {
                Ok((revision, _)) if revision <= after => {}
                Ok((revision, keys)) => {
                    // My own key's delete in the batch that frees the permits: my place is gone.
                    if keys.iter().any(|k| **k == *held.key) {
                        return Err(held.gone_error().await);
                    }
                    if !view.remove(&keys) {
                        continue;
                    }
                    if view.complete {
                        after = revision;
                    } else {
                        (after, view) = reread().await?;
                    }
                    if view.grants(permits, capacity) {
                        session.record_handoffs(started.elapsed(), handoffs);
                        return Ok(after);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "semaphore watch broke; reading again");
                    break;
                }
            }
        }
    }
}

/// Sleeps until `at`, or for ever.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_junk_is_refused() {
        assert_eq!(decode(&encode(2, 3)), Some((2, 3)));
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"0/3"), None);
        assert_eq!(decode(b"4/3"), None);
        assert_eq!(decode(b"1/x"), None);
    }
}
