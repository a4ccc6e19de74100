//! Double barrier: processes enter together once `count` have come, and leave together once
//! all have left, laid out as etcd's Go `recipes.DoubleBarrier`.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;

use crate::barrier::{rewatch, REWATCH_PAUSE};
use crate::error::{Error, Result};
use crate::held::HeldKey;
use crate::kv::{DeleteRequest, KeyRange, KeyValue, PutRequest, RangeRequest, Revision};
use crate::kv::{SortOrder, SortTarget};
use crate::names::name_prefix;
use crate::recipe_keys::{create_txn, unique_key};
use crate::session::Session;
use crate::txn::{Compare, CompareOp, Txn, TxnOp};
use crate::watch::{EventKind, WatchRequest, WatchStream};

/// A double barrier for `count` participants: [`DoubleBarrier::enter`] returns once `count`
/// have entered; [`DoubleBarrierEntry::leave`] returns once every one of them has left (or crashed).
///
/// Layout (Go's `recipes.DoubleBarrier`), so Go and Rust processes share one barrier:
/// - each participant writes `name/waiters/<unix nanos>` (empty value) on its session's lease:
///   a participant whose process dies is counted as having left once its lease expires;
/// - the participant that enters as the `count`-th writes `name/ready` (empty value, no lease),
///   and every participant waits for that write;
/// - to leave, the participant with the oldest key waits until it is the only one left, then
///   deletes `name/ready` and its key; every other one deletes its key, then waits for the
///   oldest key's delete.
///
/// Unlike Go's: entering counts the participants in the transaction that writes the key (two
/// participants entering at once cannot both miss being the `count`-th), one that finds too
/// many removes its key again, leaving loops instead of recursing (any `count`), and a
/// participant whose oldest peer crashed waits for the next oldest, so every one leaves only
/// after all have left. `name/ready` is deleted by the last participant to leave (or, when
/// that one crashed, by any that sees the round over); it is left behind only when every
/// participant crashes, and is harmless then: entering waits for a *new* write of it.
///
/// A round must end (everyone left) before the next one enters the same name.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use coord::{mem::MemStore, DoubleBarrier, Session};
///
/// let store = MemStore::new();
/// let mut workers = Vec::new();
/// for _ in 0..3 {
///     let session = Session::new(store.clone(), 10).await?;
///     workers.push(tokio::spawn(async move {
///         let barrier = DoubleBarrier::new(&session, "batch-7", 3)?;
///         let entry = barrier.enter().await?; // returns once all 3 have entered
///         // ... the work all three do together ...
///         entry.leave().await?; // returns once all 3 have left
///         session.close().await
///     }));
/// }
/// for worker in workers {
///     worker.await.unwrap()?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DoubleBarrier {
    session: Session,
    /// `name/`.
    prefix: Vec<u8>,
    /// `name/waiters/`.
    waiters: Vec<u8>,
    /// `name/ready`.
    ready: Vec<u8>,
    count: usize,
}

/// A participant inside a [`DoubleBarrier`]: leave with [`DoubleBarrierEntry::leave`].
///
/// Dropping it without leaving deletes its key in the background, as if it crashed: the others
/// count it as left. The session's lease is the last backstop.
#[must_use = "dropping it leaves the barrier without waiting for the others"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct DoubleBarrierEntry {
    held: HeldKey,
    barrier: DoubleBarrier,
    /// The mod revision of `name/ready` that let this participant in.
    ready_rev: Revision,
}

impl DoubleBarrier {
    /// The double barrier `name` for `count` participants (at least 1).
    pub fn new(session: &Session, name: impl AsRef<[u8]>, count: usize) -> Result<DoubleBarrier> {
        let prefix = name_prefix(name.as_ref())?;
        if count == 0 {
            return Err(Error::invalid(
                "a double barrier needs at least 1 participant",
            ));
        }
        let mut waiters = prefix.clone();
        waiters.extend_from_slice(b"waiters/");
        let mut ready = prefix.clone();
        ready.extend_from_slice(b"ready");
        Ok(DoubleBarrier {
            session: session.clone(),
            prefix,
            waiters,
            ready,
            count,
        })
    }

    /// How many participants enter together.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Enters: writes this participant's key, and waits until `count` participants have
    /// entered. Fails with [`Error::InvalidArgument`] when `count` are in already (its key is
    /// removed again), [`Error::SessionExpired`] / [`Error::SessionClosed`] when the session
    /// ends while waiting, [`Error::NotHeld`] when its key is deleted meanwhile (an operator).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future removes the participant's key in the background (also
    /// when its write was in flight), so it is not counted. Use [`DoubleBarrier::enter_timeout`]
    /// or [`tokio::time::timeout`] for a deadline.
    pub async fn enter(&self) -> Result<DoubleBarrierEntry> {
        let session = &self.session;
        session.check_usable()?;
        let (held, count) = loop {
            let key = unique_key(&self.waiters);
            let mut held = HeldKey::new(
                session.clone(),
                key.clone(),
                self.prefix.clone(),
                "double barrier",
                None,
            );
            // Counted at the write's revision: exactly one participant sees itself `count`-th.
            let count_read = RangeRequest::prefix(self.waiters.clone())
                .with_keys_only()
                .with_limit(1);
            let txn = create_txn(&key, b"", session.lease(), [TxnOp::Range(count_read)]);
            session
                .backend()
                .limits()
                .check_txn(&txn, "writing the double barrier key")?;
            let resp = held
                .write_txn(txn)
                .await
                .map_err(|e| session.lease_error(e))?;
            if !resp.succeeded {
                // Another process wrote this very key (same nanosecond): take a new one.
                held.forget();
                continue;
            }
            held.rev = resp.header_revision;
            break (held, resp.range(1)?.count);
        };
        let count = usize::try_from(count).unwrap_or(0);
        if count > self.count {
            let _ = held.release().await;
            return Err(Error::invalid(format!(
                "double barrier for {} participants: {} have entered already",
                self.count,
                count - 1
            )));
        }
        let ready_rev = if count == self.count {
            let put = PutRequest::new(self.ready.clone(), Vec::new());
            session.backend().put(put).await?.header_revision
        } else {
            tokio::select! {
                rev = wait_written(session, &self.ready, held.rev) => rev?,
                // The session ended, or someone deleted this participant's key.
                e = held.lost() => return Err(e),
            }
        };
        tracing::debug!(key = %String::from_utf8_lossy(&held.key), count, "entered double barrier");
        Ok(DoubleBarrierEntry {
            held,
            barrier: self.clone(),
            ready_rev,
        })
    }

    /// [`DoubleBarrier::enter`] with a deadline: [`Error::Timeout`] when it passes, leaving no
    /// key.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`DoubleBarrier::enter`].
    pub async fn enter_timeout(&self, timeout: Duration) -> Result<DoubleBarrierEntry> {
        tokio::time::timeout(timeout, self.enter())
            .await
            .map_err(|_| Error::Timeout)?
    }
}

impl DoubleBarrierEntry {
    /// This participant's key, `name/waiters/<unix nanos>`.
    pub fn key(&self) -> &[u8] {
        &self.held.key
    }

    /// Resolves when this participant's key is lost: its session ended, or someone deleted it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn lost(&self) -> Error {
        self.held.lost().await
    }

    /// Leaves, and waits until every participant of the round has left (a crashed one counts
    /// as left once its lease expires). The participant with the oldest key leaves last and
    /// removes `name/ready`. [`Error::NotHeld`] / [`Error::SessionExpired`] when this
    /// participant's key was gone already.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves at once without waiting (its key is deleted in the
    /// background, if still there): the others are not held up. Use
    /// [`DoubleBarrierEntry::leave_timeout`] or [`tokio::time::timeout`] for a deadline.
    pub async fn leave(self) -> Result<()> {
        let DoubleBarrierEntry {
            held,
            barrier,
            ready_rev,
        } = self;
        let session = held.session.clone();
        session.check_usable()?;
        let backend = session.backend().clone();
        // The round: every participant that was in when this one began to leave.
        let round = RangeRequest::prefix(barrier.waiters.clone())
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_keys_only()
            .with_limit(1);
        let first = backend.range(round.clone()).await?;
        let round_end = first.header_revision;
        let round = round.with_max_create_revision(round_end);
        let oldest = first.kvs.first().map(|kv| kv.key.as_slice());
        if oldest == Some(&*held.key) {
            wait_alone(&held, &barrier.waiters, round_end).await?;
            delete_ready(&barrier, ready_rev).await?;
            held.release().await?;
        } else {
            held.release().await?;
            wait_round_gone(&session, &round).await?;
            // Normally the oldest did it; when it crashed, nobody else would.
            delete_ready(&barrier, ready_rev).await?;
        }
        tracing::debug!(name = %String::from_utf8_lossy(&barrier.prefix), "left double barrier");
        Ok(())
    }

    /// [`DoubleBarrierEntry::leave`] with a deadline: [`Error::Timeout`] when it passes (this participant
    /// has then left without waiting for the others).
    pub async fn leave_timeout(self, timeout: Duration) -> Result<()> {
        tokio::time::timeout(timeout, self.leave())
            .await
            .map_err(|_| Error::Timeout)?
    }
}

/// Waits until `key` is written (created or updated) at a revision after `after`; returns that
/// revision.
async fn wait_written(session: &Session, key: &[u8], after: Revision) -> Result<Revision> {
    let backend = session.backend();
    loop {
        let watch = WatchRequest::new(KeyRange::key(key.to_vec())).with_no_delete();
        let mut puts = backend.watch(watch).await?;
        let read = backend
            .range(RangeRequest::key(key.to_vec()).with_keys_only())
            .await?;
        if let Some(kv) = read.kvs.first().filter(|kv| kv.mod_revision > after) {
            return Ok(kv.mod_revision);
        }
        loop {
            match puts.next().await {
                Some(Ok(event)) if event.revision() > after => return Ok(event.revision()),
                Some(Ok(_)) => {}
                Some(Err(e)) if !rewatch(&e) => return Err(e),
                Some(Err(_)) | None => break,
            }
        }
        tokio::time::sleep(REWATCH_PAUSE).await;
    }
}

/// The oldest participant: waits until no other key of the round (created at or before
/// `round_end`) is left. One prefix watch of deletes, one read per time the round looked over.
async fn wait_alone(held: &HeldKey, waiters: &[u8], round_end: Revision) -> Result<()> {
    let session = &held.session;
    let backend = session.backend();
    let round = RangeRequest::prefix(waiters.to_vec())
        .with_keys_only()
        .with_max_create_revision(round_end);
    let mut deletes: Option<WatchStream> = None;
    loop {
        if deletes.is_none() {
            let req = WatchRequest::new(KeyRange::prefix(waiters.to_vec())).with_no_put();
            deletes = Some(backend.watch(req).await?);
        }
        let read = backend.range(round.clone()).await?;
        if !read.kvs.iter().any(|kv| *kv.key == *held.key) {
            return Err(held.gone_error().await);
        }
        let mut others: HashSet<Vec<u8>> = read
            .kvs
            .into_iter()
            .map(|kv| kv.key)
            .filter(|k| **k != *held.key)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let watch = deletes.as_mut().expect("opened above");
        // Until every other key seen is deleted; then read again (the read is the truth).
        let broken = loop {
            if others.is_empty() {
                break false;
            }
            let event = tokio::select! {
                event = watch.next() => event,
                _ = session.lost() => return Err(session.ended_error()),
            };
            match event {
                Some(Ok(e)) if e.revision() > read.header_revision => {
                    if *e.kv.key == *held.key {
                        return Err(held.gone_error().await);
                    }
                    others.remove(&e.kv.key);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) if !rewatch(&e) => return Err(e),
                Some(Err(_)) | None => break true,
            }
        };
        if broken {
            deletes = None;
            tokio::time::sleep(REWATCH_PAUSE).await;
        }
    }
}

/// A participant that has deleted its key: waits until no key of the `round` is left, watching
/// the oldest one (the one that leaves last) and, when it goes, the next oldest, if any.
async fn wait_round_gone(session: &Session, round: &RangeRequest) -> Result<()> {
    let backend = session.backend();
    loop {
        let Some(oldest) = backend.range(round.clone()).await?.kvs.into_iter().next() else {
            return Ok(());
        };
        let watch = WatchRequest::new(KeyRange::key(oldest.key.clone())).with_no_put();
        let mut deletes = backend.watch(watch).await?;
        // Registered after the read: is it still there?
        let read = backend
            .range(RangeRequest::key(oldest.key.clone()).with_keys_only())
            .await?;
        if !is_same(read.kvs.first(), &oldest) {
            continue;
        }
        loop {
            match deletes.next().await {
                Some(Ok(e))
                    if e.kind == EventKind::Delete && e.revision() > read.header_revision =>
                {
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) if !rewatch(&e) => return Err(e),
                Some(Err(_)) | None => {
                    tokio::time::sleep(REWATCH_PAUSE).await;
                    break;
                }
            }
        }
    }
}

fn is_same(found: Option<&KeyValue>, key: &KeyValue) -> bool {
    found.is_some_and(|kv| kv.create_revision == key.create_revision)
}

/// Deletes `name/ready` if it is still the write that let this round in (a later round's is
/// left alone).
async fn delete_ready(barrier: &DoubleBarrier, ready_rev: Revision) -> Result<()> {
    let txn = Txn::new()
        .when([Compare::mod_revision(
            barrier.ready.clone(),
            CompareOp::Equal,
            ready_rev,
        )])
        .and_then([TxnOp::Delete(DeleteRequest::key(barrier.ready.clone()))]);
    barrier.session.backend().txn(txn).await?;
    Ok(())
}
