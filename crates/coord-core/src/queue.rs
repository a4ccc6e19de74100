//! The waiting queue every primitive shares: a key per contender, ordered by create revision.
//!
//! A contender writes its key and learns in the same transaction the newest keys ahead of it.
//! When they are all the keys ahead (a short queue), it waits on the session's prefix watch
//! until each of them is deleted and then holds its turn without any read: keys created later
//! are behind it, so that set can only shrink. In a longer queue it waits for the key just ahead
//! of it, reads once for any other earlier key, and repeats. A release therefore wakes at most
//! one contender into making calls: the next one (herd-free in calls).

use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::held::{retry_transient, HeldKey};
use crate::kv::{KeyValue, LeaseId, PutRequest, RangeRequest, Revision, SortOrder, SortTarget};
use crate::local::LocalHold;
use crate::session::Session;
use crate::txn::{Compare, CompareOp, Txn, TxnOp};
use crate::watcher::{Notice, WatchUse};

/// A waiter's subscription to its name's watch: the use that keeps the watch open, and the
/// notices since the subscription.
pub(crate) type Waiting = (WatchUse, broadcast::Receiver<Notice>);

/// Where a contender's predecessors live.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    /// The watched prefix (the primitive's whole name prefix).
    pub watch_prefix: Vec<u8>,
    /// Keys that can be ahead of me (e.g. only writers, for a reader).
    pub ahead_prefix: Vec<u8>,
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

    /// The acquire transaction: write `key` (if absent) with `value` on `lease`, and read the
    /// newest keys ahead; if the key exists, read it instead.
    fn acquire_txn(&self, key: &[u8], value: &[u8], lease: LeaseId) -> Txn {
        // The newest keys of ahead_prefix: every one but mine is ahead of me, since mine is
        // the newest. The first is the key just ahead; if the limit left none out, they are all.
        let shares_prefix = key.starts_with(&self.ahead_prefix);
        let newest = RangeRequest::prefix(self.ahead_prefix.clone())
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(KNOWN_AHEAD + i64::from(shares_prefix))
            .with_keys_only();
        Txn::new()
            .when([Compare::create_revision(key.to_vec(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::Put(PutRequest::new(key.to_vec(), value.to_vec()).with_lease(lease)),
                TxnOp::Range(newest),
            ])
            .or_else([TxnOp::Range(RangeRequest::key(key.to_vec()))])
    }

    /// [`Error::InvalidArgument`] when the store would refuse the acquire transaction of `key`
    /// with `value` as too large: checked before anything is sent.
    pub(crate) fn check_size(
        &self,
        session: &Session,
        key: &[u8],
        value: &[u8],
        what: &str,
    ) -> Result<()> {
        let txn = self.acquire_txn(key, value, session.lease());
        session
            .backend()
            .limits()
            .check_txn(&txn, &format!("writing the {what} key"))
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
        let txn = self.acquire_txn(&key, value, session.lease());
        session
            .backend()
            .limits()
            .check_txn(&txn, &format!("writing the {} key", held.what))?;
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

    /// Joins the queue with `key`, which `local` (the session's in-process turn or claim on
    /// the name) entitles this contender to write: subscribes to the name's releases and
    /// enqueues. With `adopt`, a key this session already has there is taken over (a mutex or
    /// election key); without, it is an error (unique keys).
    pub(crate) async fn join(
        &self,
        session: &Session,
        key: Vec<u8>,
        value: &[u8],
        what: &'static str,
        local: LocalHold,
        adopt: bool,
    ) -> Result<(HeldKey, Option<Waiting>, Enqueued)> {
        session.check_usable()?;
        let mut held = HeldKey::new(
            session.clone(),
            key,
            self.watch_prefix.clone(),
            what,
            Some(local),
        );
        // Subscribe before the transaction, so every release after it is seen. Without a watch
        // yet, none is opened: an uncontended acquire needs none (and every watched release
        // costs the store and this client work); `wait_turn` opens it on first contention.
        let waiting = session.watches().running(&self.watch_prefix).map(|usage| {
            let notices = usage.subscribe();
            (usage, notices)
        });
        let enqueued = self.enqueue(&mut held, value, !adopt).await?;
        Ok((held, waiting, enqueued))
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
            // Deleted by someone (NotHeld), or with the lease (SessionExpired, SessionClosed).
            return Err(held.gone_error().await);
        }
        let newest = resp.range(1)?;
        Ok((
            resp.header_revision,
            Ahead::from_newest(newest.kvs.iter(), newest.more),
        ))
    }

    /// Waits until no key of `ahead_prefix` older than mine is left. Returns the revision at
    /// which that was seen. The watch it waited on stays with `held`, to report the key's loss.
    ///
    /// Fails when my key vanishes ([`Error::NotHeld`]: deleted while my lease lives) or the
    /// session ends while waiting ([`Error::SessionExpired`], [`Error::SessionClosed`]): never
    /// reports a turn it does not have.
    pub(crate) async fn wait_turn(
        &self,
        held: &HeldKey,
        waiting: Option<Waiting>,
        enqueued: Enqueued,
    ) -> Result<Revision> {
        let session = &held.session;
        let ((usage, mut notices), (mut after, mut ahead)) = match waiting {
            Some(w) => match enqueued.ahead {
                Ahead::Unknown => (w, retry_transient(session, || self.reread(held)).await?),
                known => (w, (enqueued.revision, known)),
            },
            None if enqueued.ahead.is_nobody() => return Ok(enqueued.revision),
            // First contention on this name in this session: register the watch, then read,
            // so that every delete after the read is seen.
            None => {
                let usage =
                    retry_transient(session, || session.watches().open(&self.watch_prefix)).await?;
                let notices = usage.subscribe();
                (
                    (usage, notices),
                    retry_transient(session, || self.reread(held)).await?,
                )
            }
        };
        loop {
            let (pending, all) = match ahead {
                Ahead::All(keys) if keys.is_empty() => break,
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
            match self
                .wait_deleted(held, &mut notices, pending, after)
                .await?
            {
                // No read needed: those were all the keys ahead, and my own key's delete would
                // have come before (notices arrive in revision order) or in the same notice.
                Wake::Deleted(revision) if all => {
                    after = revision;
                    break;
                }
                _ => (after, ahead) = retry_transient(session, || self.reread(held)).await?,
            }
        }
        held.keep_watching(usage, &mut notices);
        Ok(after)
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
                    // in the revision that removes the last key ahead, means my place is gone.
                    Ok(Notice::Deleted { keys, revision }) if revision > after => {
                        if keys.iter().any(|k| **k == *held.key) {
                            return Err(held.gone_error().await);
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
