//! The waiting queue every primitive shares: a key per contender, ordered by create revision.
//!
//! A contender writes its key and learns in the same transaction the newest keys ahead of it.
//! When they are all the keys ahead (a short queue), it waits on the session's prefix watch
//! until each of them is deleted and then holds its turn without any read: keys created later
//! are behind it, so that set can only shrink. In a longer queue it waits for the key just ahead
//! of it, reads once for any other earlier key, and repeats. A release therefore wakes at most
//! one contender into making calls: the next one (herd-free in calls).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sync_wrapper::SyncWrapper;
use tokio::sync::{broadcast, OwnedMutexGuard};

use crate::error::{Error, Result};
use crate::kv::{KeyValue, PutRequest, RangeRequest, Revision, SortOrder, SortTarget};
use crate::session::Session;
use crate::txn::{Compare, CompareOp, Txn, TxnOp, TxnResponse};
use crate::watcher::Notice;

/// Where a contender's predecessors live.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    /// The watched prefix (the primitive's whole name prefix).
    pub watch_prefix: Vec<u8>,
    /// Keys that can be ahead of me (e.g. only writers, for a reader).
    pub ahead_prefix: Vec<u8>,
}

/// A key written for a contender, deleted again unless it is handed over to a guard.
///
/// Dropping it armed (a cancelled acquire, a failed wait, a dropped guard) spawns the delete on
/// the session's runtime; the session's lease is the backstop.
pub(crate) struct HeldKey {
    pub session: Session,
    pub key: Arc<[u8]>,
    /// Create revision, `0` while unknown (then the cleanup deletes unconditionally, which is
    /// safe: the key is this session's alone, serialised by `permit` where it is reused).
    pub rev: Revision,
    /// Keeps other local contenders off this key until it is gone.
    pub permit: Option<OwnedMutexGuard<()>>,
    /// The prefix the session watches for this key's queue.
    watch_prefix: Vec<u8>,
    /// The transaction writing the key, while its answer is awaited (see `write_txn`). In a
    /// `SyncWrapper`, only ever reached through `&mut`, so that `&HeldKey` can cross awaits.
    in_flight: SyncWrapper<Option<BoxFuture<'static, Result<TxnResponse>>>>,
    armed: bool,
}

impl std::fmt::Debug for HeldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldKey")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("rev", &self.rev)
            .finish()
    }
}

impl HeldKey {
    pub(crate) fn new(
        session: Session,
        key: Vec<u8>,
        watch_prefix: Vec<u8>,
        permit: Option<OwnedMutexGuard<()>>,
    ) -> Self {
        HeldKey {
            session,
            key: key.into(),
            rev: 0,
            permit,
            watch_prefix,
            in_flight: SyncWrapper::new(None),
            armed: true,
        }
    }

    /// Runs the transaction that writes this key, kept in `self` while it is awaited. A store
    /// may still apply a write whose caller gave up, and a cleanup delete sent meanwhile could
    /// be applied *before* it and leave the key behind until the lease expires, holding up
    /// everyone queued after it. So when the acquire is dropped mid-call, the cleanup (in
    /// `Drop`) takes over this same call, waits for its outcome, then deletes what it wrote.
    /// (Awaited in place rather than spawned: an acquire that is not cancelled pays no task.)
    async fn write_txn(&mut self, txn: Txn) -> Result<TxnResponse> {
        let backend = self.session.backend().clone();
        let call = self
            .in_flight
            .get_mut()
            .insert(Box::pin(async move { backend.txn(txn).await }));
        let result = call.await;
        *self.in_flight.get_mut() = None;
        result
    }

    /// The compare that holds while this key is the one it was: fencing for callers' txns.
    pub(crate) fn is_current(&self) -> Compare {
        Compare::create_revision(self.key.to_vec(), CompareOp::Equal, self.rev)
    }

    /// Deletes the key if it is still this one; when it was already gone, says why
    /// ([`Error::NotHeld`] or the session's end).
    pub(crate) async fn release(mut self, what: &'static str) -> Result<()> {
        self.armed = false;
        match delete_if_current(&self.session, &self.key, self.rev).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.gone_error(what).await),
            Err(e) => {
                // Leave it to the background retry.
                self.armed = true;
                Err(e)
            }
        }
    }

    /// Resolves when the key is lost: the session ended, or the key was deleted by anyone but
    /// this guard's own release. Returns the error that describes it.
    pub(crate) async fn lost(&self, what: &'static str) -> Error {
        let watch = match self.session.prefix_watch(&self.watch_prefix).await {
            Ok(w) => w,
            Err(_) => {
                self.session.lost().await;
                return self.session.ended_error();
            }
        };
        let mut notices = watch.subscribe();
        loop {
            // Checked after subscribing, so a delete before this read cannot be missed.
            match key_exists(&self.session, &self.key, self.rev).await {
                Ok(false) => return self.gone_error(what).await,
                Ok(true) => {}
                Err(_) if self.session.is_lost() => return self.session.ended_error(),
                Err(_) => {}
            }
            loop {
                tokio::select! {
                    _ = self.session.lost() => return self.session.ended_error(),
                    notice = notices.recv() => match notice {
                        Ok(Notice::Deleted { keys, revision }) if revision > self.rev && keys.iter().any(|k| **k == *self.key) => {
                            return self.gone_error(what).await;
                        }
                        Ok(Notice::Deleted { .. }) => {}
                        Ok(Notice::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            self.session.lost().await;
                            return self.session.ended_error();
                        }
                    }
                }
            }
        }
    }

    /// Why the key is gone: the session's lease ended (asking the store, since the keep-alive
    /// task may not have noticed yet), or someone deleted the key.
    pub(crate) async fn gone_error(&self, what: &'static str) -> Error {
        // Closed counts from the start of close(), before its revoke deletes the key.
        if self.session.is_lost() || self.session.is_closed() {
            return self.session.ended_error();
        }
        let lease = self.session.lease();
        match self
            .session
            .backend()
            .lease_time_to_live(lease, false)
            .await
        {
            Err(Error::LeaseNotFound { .. }) => {
                self.session.lease_error(Error::LeaseNotFound { lease })
            }
            _ => Error::NotHeld { what },
        }
    }
}

impl Drop for HeldKey {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let session = self.session.clone();
        let key = self.key.clone();
        let mut rev = self.rev;
        let permit = self.permit.take();
        let in_flight = self.in_flight.get_mut().take();
        session.clone().runtime().spawn(async move {
            // The acquire was cancelled while its write was in flight: learn what it wrote
            // before deleting, so the delete cannot overtake it. (Unknown outcome: delete the
            // key whatever its revision; it is this session's alone.)
            if let Some(call) = in_flight {
                if let Ok(resp) = call.await {
                    rev = if resp.succeeded {
                        resp.header_revision
                    } else {
                        resp.range(0)
                            .ok()
                            .and_then(|r| r.kvs.first().map(|kv| kv.create_revision))
                            .unwrap_or(0)
                    };
                }
            }
            let mut backoff = Duration::from_millis(50);
            // Retry until the delete lands or the lease (and so the key) is gone anyway.
            while !session.is_lost() {
                match delete_if_current(&session, &key, rev).await {
                    Ok(_) => break,
                    Err(e) if !e.is_retryable() => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "background release failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
            drop(permit);
        });
    }
}

async fn delete_if_current(session: &Session, key: &[u8], rev: Revision) -> Result<bool> {
    let mut txn = Txn::new().and_then([TxnOp::Delete(crate::kv::DeleteRequest::key(key))]);
    if rev > 0 {
        txn = txn.when([Compare::create_revision(key, CompareOp::Equal, rev)]);
    }
    let resp = session.backend().txn(txn).await?;
    Ok(resp.succeeded)
}

async fn key_exists(session: &Session, key: &[u8], rev: Revision) -> Result<bool> {
    let resp = session.backend().range(RangeRequest::key(key)).await?;
    Ok(resp.kvs.first().is_some_and(|kv| kv.create_revision == rev))
}

/// How many keys ahead of it a contender learns from one read (keys only). When the queue ahead
/// fits, the contender knows all of it and needs no further read.
const KNOWN_AHEAD: i64 = 16;

/// What the acquire transaction found.
pub(crate) struct Enqueued {
    /// The key that existed already (same session, same name), when it was adopted.
    pub adopted: Option<KeyValue>,
    /// Store revision after the transaction.
    pub revision: Revision,
    /// Who is ahead, as far as the transaction could tell.
    pub ahead: Ahead,
}

/// Who is ahead of a contender.
pub(crate) enum Ahead {
    /// Every key ahead (none: my turn). Keys ahead of me can only go (a key created later is
    /// behind me), so once each of these is deleted, my turn has come.
    All(Vec<Vec<u8>>),
    /// More keys are ahead than a read returns; this one is just ahead. Its delete is when to
    /// read again.
    Last(Vec<u8>),
    /// Not known yet (adopted key): read it.
    Unknown,
}

impl Ahead {
    /// From the keys ahead, newest first, as a read with a limit returned them (`more`: the
    /// limit left some out).
    fn from_newest<'a>(newest: impl Iterator<Item = &'a KeyValue>, more: bool) -> Ahead {
        let mut keys = newest.map(|kv| kv.key.clone());
        match keys.next() {
            Some(last) if more => Ahead::Last(last),
            first => Ahead::All(first.into_iter().chain(keys).collect()),
        }
    }

    /// Whether nobody is ahead.
    fn is_nobody(&self) -> bool {
        matches!(self, Ahead::All(keys) if keys.is_empty())
    }
}

/// Why a waiter woke up.
enum Wake {
    /// The last of the keys it waited for was deleted at this revision.
    Deleted(Revision),
    /// Notices may have been missed: read again.
    Recheck,
}

impl Queue {
    /// A queue where every key under `prefix` is ahead of later ones (mutex, election, writer).
    pub(crate) fn same_prefix(prefix: Vec<u8>) -> Self {
        Queue {
            ahead_prefix: prefix.clone(),
            watch_prefix: prefix,
        }
    }

    /// Writes `held.key` (if absent) with `value` on the session's lease and learns who is
    /// ahead, in one transaction. With `create_only`, an existing key is an error instead of
    /// being adopted.
    async fn enqueue(
        &self,
        held: &mut HeldKey,
        value: &[u8],
        create_only: bool,
    ) -> Result<Enqueued> {
        let session = held.session.clone();
        let key = held.key.to_vec();
        // The newest keys of ahead_prefix: every one but mine is ahead of me, since mine is
        // the newest. The first is the key just ahead; if the limit left none out, they are all.
        let shares_prefix = key.starts_with(&self.ahead_prefix);
        let newest = RangeRequest::prefix(self.ahead_prefix.clone())
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(KNOWN_AHEAD + i64::from(shares_prefix))
            .with_keys_only();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::Put(
                    PutRequest::new(key.clone(), value.to_vec()).with_lease(session.lease()),
                ),
                TxnOp::Range(newest),
            ])
            .or_else([TxnOp::Range(RangeRequest::key(key.clone()))]);
        let resp = held
            .write_txn(txn)
            .await
            .map_err(|e| session.lease_error(e))?;
        if !resp.succeeded {
            let existing = resp
                .range(0)?
                .kvs
                .first()
                .cloned()
                .ok_or_else(|| Error::Backend {
                    source: "key vanished inside a transaction".into(),
                })?;
            if create_only {
                return Err(Error::Backend {
                    source: "unique key already exists".into(),
                });
            }
            held.rev = existing.create_revision;
            return Ok(Enqueued {
                adopted: Some(existing),
                revision: resp.header_revision,
                ahead: Ahead::Unknown,
            });
        }
        held.rev = resp.header_revision;
        let rev = held.rev;
        let newest = resp.range(1)?;
        let ahead = newest
            .kvs
            .iter()
            .filter(|kv| kv.key != key && kv.create_revision < rev);
        Ok(Enqueued {
            adopted: None,
            revision: resp.header_revision,
            ahead: Ahead::from_newest(ahead, newest.more),
        })
    }

    /// Joins the queue with `key`: checks the session, takes the in-process turn for keys a
    /// session reuses (`shared_key`), subscribes to the name's releases and enqueues.
    ///
    /// Without `wait` (the try-variants), a turn held by another holder of this session is
    /// [`Error::Locked`] at once: that holder holds the lock (or is waiting for it).
    pub(crate) async fn join(
        &self,
        session: &Session,
        key: Vec<u8>,
        value: &[u8],
        shared_key: bool,
        wait: bool,
    ) -> Result<(HeldKey, Option<broadcast::Receiver<Notice>>, Enqueued)> {
        session.check_usable()?;
        let permit = match (shared_key, wait) {
            (true, true) => Some(session.local_lock(&key).lock_owned().await),
            (true, false) => Some(
                session
                    .local_lock(&key)
                    .try_lock_owned()
                    .map_err(|_| Error::Locked)?,
            ),
            (false, _) => None,
        };
        session.check_usable()?;
        let mut held = HeldKey::new(session.clone(), key, self.watch_prefix.clone(), permit);
        // Subscribe before the transaction, so every release after it is seen. Without a watch
        // yet, none is opened: an uncontended acquire needs none (and every watched release
        // costs the store and this client work); `wait_turn` opens it on first contention.
        let notices = session
            .running_prefix_watch(&self.watch_prefix)
            .await
            .map(|w| w.subscribe());
        let enqueued = self.enqueue(&mut held, value, !shared_key).await?;
        Ok((held, notices, enqueued))
    }

    /// For the try-variants: whether anyone is ahead right now.
    pub(crate) async fn is_blocked(&self, held: &HeldKey, enqueued: &Enqueued) -> Result<bool> {
        Ok(match &enqueued.ahead {
            Ahead::Unknown => !self.reread(held).await?.1.is_nobody(),
            known => !known.is_nobody(),
        })
    }

    /// One read: does my key still exist, and who is ahead of it now?
    async fn reread(&self, held: &HeldKey) -> Result<(Revision, Ahead)> {
        let ahead = RangeRequest::prefix(self.ahead_prefix.clone())
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(KNOWN_AHEAD)
            .with_max_create_revision(held.rev - 1)
            .with_keys_only();
        let txn = Txn::new().and_then([
            TxnOp::Range(RangeRequest::key(held.key.to_vec()).with_keys_only()),
            TxnOp::Range(ahead),
        ]);
        let resp = held.session.backend().txn(txn).await?;
        let mine = resp.range(0)?.kvs.first();
        if !matches!(mine, Some(kv) if kv.create_revision == held.rev) {
            // SessionExpired, or SessionClosed when close() revoked the lease.
            return Err(held.session.ended_error());
        }
        let newest = resp.range(1)?;
        Ok((
            resp.header_revision,
            Ahead::from_newest(newest.kvs.iter(), newest.more),
        ))
    }

    /// Waits until no key of `ahead_prefix` older than mine is left. Returns the revision at
    /// which that was seen.
    ///
    /// Fails with [`Error::SessionExpired`] when my key vanishes or the session ends while
    /// waiting: never reports a turn it does not have.
    pub(crate) async fn wait_turn(
        &self,
        held: &HeldKey,
        notices: Option<broadcast::Receiver<Notice>>,
        enqueued: Enqueued,
    ) -> Result<Revision> {
        if enqueued.ahead.is_nobody() {
            return Ok(enqueued.revision);
        }
        let (mut notices, (mut after, mut ahead)) = match notices {
            Some(n) => match enqueued.ahead {
                Ahead::Unknown => (n, self.reread(held).await?),
                known => (n, (enqueued.revision, known)),
            },
            // First contention on this name in this session: register the watch, then read,
            // so that every delete after the read is seen.
            None => {
                let n = while_queued(held, || held.session.prefix_watch(&self.watch_prefix))
                    .await?
                    .subscribe();
                (n, while_queued(held, || self.reread(held)).await?)
            }
        };
        let notices = &mut notices;
        loop {
            let (pending, all) = match ahead {
                Ahead::All(keys) if keys.is_empty() => return Ok(after),
                Ahead::All(keys) => (keys, true),
                Ahead::Last(key) => (vec![key], false),
                Ahead::Unknown => unreachable!("a read always knows who is ahead"),
            };
            tracing::trace!(
                waiting_on = pending.len(),
                after,
                all,
                "waiting for the keys ahead"
            );
            match self.wait_deleted(held, notices, pending, after).await? {
                // No read needed: those were all the keys ahead, and my own key's delete would
                // have come before (notices arrive in revision order) or in the same notice.
                Wake::Deleted(revision) if all => return Ok(revision),
                _ => (after, ahead) = while_queued(held, || self.reread(held)).await?,
            }
        }
    }

    /// Waits until each key of `pending` is deleted after revision `after` (or a reason to
    /// re-read). A key is pending once: if it is written again later, it is behind me.
    async fn wait_deleted(
        &self,
        held: &HeldKey,
        notices: &mut broadcast::Receiver<Notice>,
        mut pending: Vec<Vec<u8>>,
        after: Revision,
    ) -> Result<Wake> {
        loop {
            tokio::select! {
                biased;
                notice = notices.recv() => match notice {
                    // `after` is at least my key's creation: a delete of my key after it, even
                    // in the revision that removes the last key ahead, means my lease is gone.
                    Ok(Notice::Deleted { keys, revision }) if revision > after => {
                        if keys.iter().any(|k| **k == *held.key) {
                            return Err(held.session.ended_error());
                        }
                        pending.retain(|p| !keys.iter().any(|k| **k == **p));
                        if pending.is_empty() {
                            return Ok(Wake::Deleted(revision));
                        }
                    }
                    Ok(Notice::Deleted { .. }) => {}
                    Ok(Notice::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => return Ok(Wake::Recheck),
                    Err(broadcast::error::RecvError::Closed) => return Err(held.session.ended_error()),
                },
                _ = held.session.lost() => return Err(held.session.ended_error()),
            }
        }
    }
}

/// Runs a call made while queued, retrying transient failures (store unreachable, restarting,
/// electing a raft leader) while the session lives: a waiter keeps its place in the queue
/// through a blip instead of failing and losing it. The caller's deadline (a timeout around the
/// acquire) still bounds the whole wait; a lost session ends it with its error.
async fn while_queued<T, F, Fut>(held: &HeldKey, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut backoff = Duration::from_millis(20);
    loop {
        match call().await {
            Err(e) if e.is_retryable() && !held.session.is_lost() => {
                tracing::debug!(error = %e, "call while queued failed; retrying");
                tokio::select! {
                    _ = held.session.lost() => return Err(held.session.ended_error()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}
