//! The waiting queue every primitive shares: a key per contender, ordered by create revision,
//! and the reads that tell a contender who is ahead of it. How it waits is in `wait.rs`.
//!
//! A contender writes its key and learns in the same transaction the newest keys ahead of it:
//! all of them when there are at most 16. Keys created later are behind it, so the set of keys
//! ahead can only shrink.

use crate::error::{Error, Result};
use crate::held::HeldKey;
use crate::kv::{KeyValue, LeaseId, PutRequest, RangeRequest, Revision, SortOrder, SortTarget};
use crate::local::LocalHold;
use crate::session::Session;
use crate::txn::{Compare, CompareOp, Txn, TxnOp, TxnResponse};

/// Where a contender's predecessors live.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    /// The primitive's whole name prefix (`name/`): what a waiter next in line watches.
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
    /// How many keys were ahead (all of them, also past the ones named in `ahead`).
    pub position: usize,
}

/// A key ahead, with its create revision (the key may be written again later, behind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyAhead {
    pub key: Vec<u8>,
    pub rev: Revision,
}

/// Who is ahead of a contender.
pub(crate) enum Ahead {
    /// Every key ahead (none: my turn). Keys ahead of me can only go (a key created later is
    /// behind me), so once each of these is deleted, my turn has come.
    All(Vec<KeyAhead>),
    /// More keys are ahead than a read returns; these are the newest of them (the first is
    /// just ahead), never empty.
    Last(Vec<KeyAhead>),
    /// Not known yet (adopted key): read it.
    Unknown,
}

impl Ahead {
    /// From the keys ahead, newest first, as a read with a limit returned them (`more`: the
    /// limit left some out).
    fn from_newest<'a>(newest: impl Iterator<Item = &'a KeyValue>, more: bool) -> Ahead {
        let keys: Vec<KeyAhead> = newest
            .map(|kv| KeyAhead {
                key: kv.key.clone(),
                rev: kv.create_revision,
            })
            .collect();
        if more && !keys.is_empty() {
            Ahead::Last(keys)
        } else {
            Ahead::All(keys)
        }
    }

    /// Whether nobody is ahead.
    pub(crate) fn is_nobody(&self) -> bool {
        matches!(self, Ahead::All(keys) if keys.is_empty())
    }
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
            .check_txn(&txn, format_args!("writing the {what} key"))
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
            .check_txn(&txn, format_args!("writing the {} key", held.what))?;
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
                position: 0,
            });
        }
        held.rev = resp.header_revision;
        let rev = held.rev;
        let newest = resp.range(1)?;
        let ahead = newest
            .kvs
            .iter()
            .filter(|kv| kv.key != key && kv.create_revision < rev);
        // Every key of the range was there before mine (counted before the limit).
        let mine = usize::from(key.starts_with(&self.ahead_prefix));
        let position = usize::try_from(newest.count)
            .unwrap_or(0)
            .saturating_sub(mine);
        Ok(Enqueued {
            adopted: None,
            revision: resp.header_revision,
            ahead: Ahead::from_newest(ahead, newest.more),
            position,
        })
    }

    /// Joins the queue with `key`, which `local` (the session's in-process turn or claim on
    /// the name) entitles this contender to write: enqueues (one transaction, no watch). With
    /// `adopt`, a key this session already has there is taken over (a mutex or election key);
    /// without, it is an error (unique keys).
    pub(crate) async fn join(
        &self,
        session: &Session,
        key: Vec<u8>,
        value: &[u8],
        what: &'static str,
        local: LocalHold,
        adopt: bool,
    ) -> Result<(HeldKey, Enqueued)> {
        session.check_usable()?;
        let mut held = HeldKey::new(
            session.clone(),
            key,
            self.watch_prefix.clone(),
            what,
            Some(local),
        );
        let enqueued = self.enqueue(&mut held, value, !adopt).await?;
        Ok((held, enqueued))
    }

    /// For the try-variants: whether anyone is ahead right now.
    pub(crate) async fn is_blocked(&self, held: &HeldKey, enqueued: &Enqueued) -> Result<bool> {
        Ok(match &enqueued.ahead {
            Ahead::Unknown => !self.reread(held).await?.1.is_nobody(),
            known => !known.is_nobody(),
        })
    }

    /// One read of two single keys: does my key still exist, and does `ahead` (a key ahead of
    /// it)? Returns the read's revision and whether `ahead` is there. Fails when my key is gone
    /// ([`Error::NotHeld`], or the session's end). Cheaper than [`Queue::reread`], which ranges
    /// over the whole queue.
    pub(crate) async fn is_there(
        &self,
        held: &HeldKey,
        ahead: &KeyAhead,
    ) -> Result<(Revision, bool)> {
        let txn = Txn::new().and_then([
            TxnOp::Range(RangeRequest::key(held.key.to_vec()).with_keys_only()),
            TxnOp::Range(RangeRequest::key(ahead.key.clone()).with_keys_only()),
        ]);
        let resp = held.session.backend().txn(txn).await?;
        let mine = resp.range(0)?.kvs.first();
        if !matches!(mine, Some(kv) if kv.create_revision == held.rev) {
            return Err(held.gone_error().await);
        }
        let there =
            matches!(resp.range(1)?.kvs.first(), Some(kv) if kv.create_revision == ahead.rev);
        Ok((resp.header_revision, there))
    }

    /// One read: does my key still exist, and who is ahead of it now? Fails when the key is
    /// gone ([`Error::NotHeld`], or the session's end).
    pub(crate) async fn reread(&self, held: &HeldKey) -> Result<(Revision, Ahead)> {
        self.reread_since(held, 0).await
    }

    /// [`Queue::reread`] of a state at least as recent as revision `since` (a delete just
    /// seen): first serializable, which etcd answers without waiting behind the writes being
    /// made durable (the waiter woken by a release reads on the handoff's critical path); again
    /// in full if that answer is older than `since`. Either answer is a snapshot of the store
    /// at or after `since`: a key absent there is gone for good, and no key is created ahead
    /// of mine later, so "nobody ahead" is as true as from a linearizable read.
    pub(crate) async fn reread_since(
        &self,
        held: &HeldKey,
        since: Revision,
    ) -> Result<(Revision, Ahead)> {
        if since > 0 {
            let resp = held
                .session
                .backend()
                .txn(self.reread_txn(held, true))
                .await?;
            if resp.header_revision >= since {
                return self.ahead_in(held, resp).await;
            }
            tracing::debug!(
                since,
                answered = resp.header_revision,
                "serializable read behind the event; reading again"
            );
        }
        let resp = held
            .session
            .backend()
            .txn(self.reread_txn(held, false))
            .await?;
        self.ahead_in(held, resp).await
    }

    fn reread_txn(&self, held: &HeldKey, serializable: bool) -> Txn {
        let mut mine = RangeRequest::key(held.key.to_vec()).with_keys_only();
        let mut ahead = RangeRequest::prefix(self.ahead_prefix.clone())
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(KNOWN_AHEAD)
            .with_max_create_revision(held.rev - 1)
            .with_keys_only();
        if serializable {
            mine = mine.with_serializable();
            ahead = ahead.with_serializable();
        }
        Txn::new().and_then([TxnOp::Range(mine), TxnOp::Range(ahead)])
    }

    /// My key's presence and the keys ahead of it, from [`Queue::reread_txn`]'s answer.
    async fn ahead_in(&self, held: &HeldKey, resp: TxnResponse) -> Result<(Revision, Ahead)> {
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
}
