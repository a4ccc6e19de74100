//! The store's state: keys, the revision, the history, and every operation on them.
//!
//! All of it sits behind one mutex in [`crate::store`]; nothing here awaits. History is an undo
//! log: each change keeps the key-value after it and the one before it, so a past read is the
//! current state with the later changes undone, and a watch replay is a scan of the log.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use coord_core::{
    Compare, CompareOp, CompareTarget, DeleteRequest, DeleteResponse, Error, KeyValue, LeaseId,
    PutRequest, PutResponse, RangeRequest, RangeResponse, Result, Revision, SortOrder, SortTarget,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchRequest,
};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::lease::LeaseTable;
use crate::span::Span;
use crate::watch::{Envelope, Watcher, Watchers};

/// A live key, ordered and looked up by its key bytes, so the key is stored once.
#[derive(Debug)]
struct Slot(Arc<KeyValue>);

impl Borrow<[u8]> for Slot {
    fn borrow(&self) -> &[u8] {
        &self.0.key
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for Slot {}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Slot {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.key.cmp(&other.0.key)
    }
}

/// One change of one key, as kept in the history.
#[derive(Debug)]
pub(crate) struct Change {
    /// The revision of the change.
    pub(crate) rev: Revision,
    /// The key after a put; `None` for a delete.
    pub(crate) new: Option<Arc<KeyValue>>,
    /// The key before the change; always present for a delete.
    pub(crate) prev: Option<Arc<KeyValue>>,
}

impl Change {
    pub(crate) fn key(&self) -> &[u8] {
        match (&self.new, &self.prev) {
            (Some(kv), _) | (None, Some(kv)) => &kv.key,
            (None, None) => &[],
        }
    }
}

/// Everything the store holds.
#[derive(Debug)]
pub(crate) struct State {
    keys: BTreeSet<Slot>,
    rev: Revision,
    /// Reads and watches below this revision are compacted away (etcd's `compactMainRev`).
    compact_rev: Revision,
    /// Every change with revision `>= compact_rev`, oldest first.
    history: VecDeque<Change>,
    history_limit: i64,
    pub(crate) leases: LeaseTable,
    pub(crate) watchers: Watchers,
}

impl State {
    pub(crate) fn new(history_limit: u64, lease_seed: Option<u64>) -> Self {
        State {
            keys: BTreeSet::new(),
            // A fresh etcd is at revision 1; its first write makes revision 2.
            rev: 1,
            compact_rev: 0,
            history: VecDeque::new(),
            history_limit: i64::try_from(history_limit).unwrap_or(i64::MAX),
            leases: LeaseTable::new(lease_seed),
            watchers: Watchers::default(),
        }
    }

    pub(crate) fn revision(&self) -> Revision {
        self.rev
    }

    pub(crate) fn compact_revision(&self) -> Revision {
        self.compact_rev
    }

    pub(crate) fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn history_len(&self) -> usize {
        self.history.len()
    }

    fn get(&self, key: &[u8]) -> Option<&Arc<KeyValue>> {
        self.keys.get(key).map(|slot| &slot.0)
    }

    /// The live keys of `span`, in key order, without scanning keys outside it.
    fn iter<'a>(&'a self, span: Span<'a>) -> impl Iterator<Item = &'a Arc<KeyValue>> + 'a {
        let (lo, hi, prefix) = span.bounds();
        self.keys
            .range::<[u8], _>((lo, hi))
            .map(|slot| &slot.0)
            .take_while(move |kv| prefix.map_or(true, |p| kv.key.starts_with(p)))
    }

    // ----- leases -------------------------------------------------------------------------

    /// Expires every lease whose deadline has passed.
    pub(crate) fn expire_due(&mut self, now: Instant) {
        while let Some(id) = self.leases.first_expired(now) {
            tracing::debug!(lease = id, "lease expired");
            self.revoke_lease(id);
        }
    }

    /// Removes a lease and deletes its keys, all in one revision (none if it had no keys).
    /// `false` when there is no such lease.
    pub(crate) fn revoke_lease(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(id) else {
            return false;
        };
        let rev = self.rev + 1;
        let log_start = self.history.len();
        for key in lease.keys {
            if self.get(&key).is_some_and(|kv| kv.lease == id) {
                if let Some(slot) = self.keys.take(key.as_slice()) {
                    self.log_delete(slot.0, rev);
                }
            }
        }
        if self.history.len() > log_start {
            self.commit(rev, log_start);
        }
        true
    }

    pub(crate) fn check_lease(&self, lease: LeaseId) -> Result<()> {
        if lease == 0 || self.leases.contains(lease) {
            Ok(())
        } else {
            Err(Error::LeaseNotFound { lease })
        }
    }

    // ----- reads --------------------------------------------------------------------------

    /// etcd's `checkRange`: a past revision must be kept, a future one is refused.
    pub(crate) fn check_range(&self, req: &RangeRequest, current: Revision) -> Result<()> {
        if req.revision > current {
            return Err(Error::invalid(format!(
                "required revision {} is a future revision (current: {current})",
                req.revision
            )));
        }
        if req.revision > 0 && req.revision < self.compact_rev {
            return Err(Error::Compacted {
                compact_revision: self.compact_rev,
            });
        }
        Ok(())
    }

    /// Serves a checked range request; `header` is the revision to report.
    pub(crate) fn range(&self, req: &RangeRequest, header: Revision) -> RangeResponse {
        let Ok(span) = Span::of(&req.range) else {
            // Checked by the caller; an invalid range matches nothing.
            return RangeResponse {
                header_revision: header,
                ..RangeResponse::default()
            };
        };
        let at = req.revision;
        if at > 0 && self.history.back().is_some_and(|c| c.rev > at) {
            // The past: the current keys of the range with every later change undone.
            let mut view: BTreeMap<&[u8], &KeyValue> = self
                .iter(span)
                .map(|kv| (kv.key.as_slice(), &**kv))
                .collect();
            for change in self.history.iter().rev().take_while(|c| c.rev > at) {
                let key = change.key();
                if !span.contains(key) {
                    continue;
                }
                match &change.prev {
                    Some(prev) => view.insert(key, &**prev),
                    None => view.remove(key),
                };
            }
            finish_range(req, header, view.into_values())
        } else {
            finish_range(req, header, self.iter(span).map(|kv| &**kv))
        }
    }

    /// Evaluates one compare, as etcd's `applyCompare` does.
    fn compare(&self, c: &Compare) -> bool {
        let kv = self.get(&c.key);
        let field = |f: fn(&KeyValue) -> i64| kv.map_or(0, |kv| f(kv));
        let ord = match &c.target {
            // A value compare on a missing key is false, whatever the operator.
            CompareTarget::Value(v) => match kv {
                Some(kv) => kv.value.as_slice().cmp(v.as_slice()),
                None => return false,
            },
            CompareTarget::CreateRevision(r) => field(|kv| kv.create_revision).cmp(r),
            CompareTarget::ModRevision(r) => field(|kv| kv.mod_revision).cmp(r),
            CompareTarget::Version(v) => field(|kv| kv.version).cmp(v),
            CompareTarget::Lease(l) => field(|kv| kv.lease).cmp(l),
        };
        match c.op {
            CompareOp::Equal => ord == Ordering::Equal,
            CompareOp::NotEqual => ord != Ordering::Equal,
            CompareOp::Greater => ord == Ordering::Greater,
            CompareOp::Less => ord == Ordering::Less,
        }
    }

    // ----- writes -------------------------------------------------------------------------

    /// Runs a transaction already checked by `span::check_txn`.
    ///
    /// The branch is checked (leases of its puts, revisions of its ranges) before anything is
    /// applied, so a failing transaction changes nothing; after that nothing can fail. Ops see
    /// the effects of earlier ops of the same transaction, as in etcd.
    pub(crate) fn txn(&mut self, txn: Txn) -> Result<TxnResponse> {
        let succeeded = txn.compares.iter().all(|c| self.compare(c));
        let ops = if succeeded { txn.success } else { txn.failure };
        let begin = self.rev;
        for op in &ops {
            match op {
                TxnOp::Range(r) => self.check_range(r, begin)?,
                TxnOp::Put(p) => self.check_lease(p.lease)?,
                TxnOp::Delete(_) => {}
            }
        }
        let rev = begin + 1;
        let log_start = self.history.len();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let changed = self.history.len() > log_start;
            responses.push(match op {
                TxnOp::Range(r) => {
                    TxnOpResponse::Range(self.range(&r, if changed { rev } else { begin }))
                }
                TxnOp::Put(p) => TxnOpResponse::Put(self.apply_put(p, rev)),
                TxnOp::Delete(d) => {
                    let mut resp = self.apply_delete(&d, rev);
                    let changed = self.history.len() > log_start;
                    resp.header_revision = if changed { rev } else { begin };
                    TxnOpResponse::Delete(resp)
                }
            });
        }
        if self.history.len() > log_start {
            self.commit(rev, log_start);
        }
        Ok(TxnResponse {
            succeeded,
            header_revision: self.rev,
            responses,
        })
    }

    /// A put on its own (checked by the caller).
    pub(crate) fn put(&mut self, req: PutRequest) -> Result<PutResponse> {
        self.check_lease(req.lease)?;
        let rev = self.rev + 1;
        let log_start = self.history.len();
        let resp = self.apply_put(req, rev);
        self.commit(rev, log_start);
        Ok(resp)
    }

    /// A delete on its own (checked by the caller).
    pub(crate) fn delete(&mut self, req: &DeleteRequest) -> DeleteResponse {
        let rev = self.rev + 1;
        let log_start = self.history.len();
        let mut resp = self.apply_delete(req, rev);
        if self.history.len() > log_start {
            self.commit(rev, log_start);
        }
        resp.header_revision = self.rev;
        resp
    }

    fn apply_put(&mut self, req: PutRequest, rev: Revision) -> PutResponse {
        let prev = self.get(&req.key).cloned();
        let (create_revision, version, old_lease) = match &prev {
            Some(kv) => (kv.create_revision, kv.version + 1, kv.lease),
            None => (rev, 1, 0),
        };
        if old_lease != req.lease {
            if old_lease != 0 {
                self.leases.detach(old_lease, &req.key);
            }
            if req.lease != 0 {
                self.leases.attach(req.lease, &req.key);
            }
        }
        let kv = Arc::new(KeyValue {
            key: req.key,
            value: req.value,
            create_revision,
            mod_revision: rev,
            version,
            lease: req.lease,
        });
        self.keys.replace(Slot(kv.clone()));
        let prev_kv = if req.prev_kv {
            prev.as_deref().cloned()
        } else {
            None
        };
        self.history.push_back(Change {
            rev,
            new: Some(kv),
            prev,
        });
        PutResponse {
            header_revision: rev,
            prev_kv,
        }
    }

    /// Deletes the keys of `req` at `rev`; `header_revision` is left for the caller to set.
    fn apply_delete(&mut self, req: &DeleteRequest, rev: Revision) -> DeleteResponse {
        let mut resp = DeleteResponse::default();
        let Ok(span) = Span::of(&req.range) else {
            return resp;
        };
        let mut record = |kv: &Arc<KeyValue>| {
            resp.deleted += 1;
            if req.prev_kv {
                resp.prev_kvs.push(KeyValue::clone(kv));
            }
        };
        if let Span::One(key) = span {
            // The common case (an unlock) without collecting into a vector.
            if let Some(slot) = self.keys.take(key) {
                record(&slot.0);
                self.log_delete(slot.0, rev);
            }
        } else {
            let doomed: Vec<Arc<KeyValue>> = self.iter(span).cloned().collect();
            for kv in doomed {
                self.keys.remove(kv.key.as_slice());
                record(&kv);
                self.log_delete(kv, rev);
            }
        }
        resp
    }

    /// Records the delete of `kv` (already out of `keys`) and detaches it from its lease.
    fn log_delete(&mut self, kv: Arc<KeyValue>, rev: Revision) {
        if kv.lease != 0 {
            self.leases.detach(kv.lease, &kv.key);
        }
        self.history.push_back(Change {
            rev,
            new: None,
            prev: Some(kv),
        });
    }

    /// Makes `rev` current, sends its changes (from `log_start` on) to the watchers, and
    /// trims the history to its limit.
    fn commit(&mut self, rev: Revision, log_start: usize) {
        self.rev = rev;
        let at = self.watchers.deliver_at();
        let changes: Vec<&Change> = self.history.range(log_start..).collect();
        self.watchers.publish(&changes, at);
        if self.rev - self.compact_rev > self.history_limit {
            self.compact_to(self.rev - self.history_limit);
        }
    }

    // ----- compaction ---------------------------------------------------------------------

    /// Explicit compaction, as etcd: a future revision is refused, an already compacted one is
    /// [`Error::Compacted`].
    pub(crate) fn compact(&mut self, rev: Revision) -> Result<()> {
        if rev > self.rev {
            return Err(Error::invalid(format!(
                "required revision {rev} is a future revision (current: {})",
                self.rev
            )));
        }
        if rev <= self.compact_rev {
            return Err(Error::Compacted {
                compact_revision: self.compact_rev,
            });
        }
        self.compact_to(rev);
        tracing::debug!(revision = rev, "compacted");
        Ok(())
    }

    /// Drops the history below `rev`: the state at `rev` stays readable, as in etcd.
    fn compact_to(&mut self, rev: Revision) {
        self.compact_rev = rev;
        while self.history.front().is_some_and(|c| c.rev < rev) {
            self.history.pop_front();
        }
    }

    // ----- watches ------------------------------------------------------------------------

    /// Registers a watch (range already checked), first replaying the kept history from its
    /// start revision. Returns the watcher's id.
    pub(crate) fn watch(
        &mut self,
        req: WatchRequest,
        tx: UnboundedSender<Envelope>,
    ) -> Result<u64> {
        let start = req.start_revision;
        if start < 0 {
            return Err(Error::invalid(format!(
                "negative watch start revision {start}"
            )));
        }
        if start > 0 && start < self.compact_rev {
            return Err(Error::Compacted {
                compact_revision: self.compact_rev,
            });
        }
        let min_rev = if start > 0 { start } else { self.rev + 1 };
        let watcher = Watcher::new(req, min_rev, tx);
        if start > 0 && start <= self.rev {
            let at = self.watchers.deliver_at();
            let from = self.history.partition_point(|c| c.rev < start);
            let replay: Vec<&Change> = self.history.range(from..).collect();
            // One message per revision, as live events.
            for revision in replay.chunk_by(|a, b| a.rev == b.rev) {
                watcher.offer(revision.iter().copied(), at);
            }
        }
        Ok(self.watchers.insert(watcher))
    }
}

/// Filters, sorts and cuts the keys of a range (given in key order), as etcd's `Range` does.
///
/// Like etcd, `count` is the number of keys in the range at the read revision: the
/// `max_*_revision` filters and `limit` do not change it.
fn finish_range<'a>(
    req: &RangeRequest,
    header: Revision,
    kvs: impl Iterator<Item = &'a KeyValue>,
) -> RangeResponse {
    let mut resp = RangeResponse {
        header_revision: header,
        ..RangeResponse::default()
    };
    if req.count_only {
        resp.count = count(kvs.count());
        return resp;
    }
    let limit = if req.limit > 0 {
        usize::try_from(req.limit).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    let out = |kv: &KeyValue| {
        if req.keys_only {
            KeyValue {
                key: kv.key.clone(),
                value: Vec::new(),
                ..*kv
            }
        } else {
            kv.clone()
        }
    };
    let order = match req.sort {
        None | Some((SortTarget::Key, SortOrder::Ascend)) => None,
        Some(order) => Some(order),
    };
    let filtered = req.max_create_revision > 0 || req.max_mod_revision > 0;
    if order.is_none() && !filtered {
        let mut n = 0;
        for kv in kvs {
            n += 1;
            if resp.kvs.len() < limit {
                resp.kvs.push(out(kv));
            }
        }
        resp.count = count(n);
        resp.more = n > resp.kvs.len();
        return resp;
    }
    let mut n = 0;
    let mut picked: Vec<&KeyValue> = kvs
        .inspect(|_| n += 1)
        .filter(|kv| {
            (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
                && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        })
        .collect();
    resp.count = count(n);
    // Ties (keys written in one revision) stay in key order: the sort key ends with the
    // position in key order. Only the first `limit` are sorted (a waiter reads the newest 16
    // of a queue of any length).
    let rank = |rev: i64, descend: bool| if descend { -rev } else { rev };
    let by = match order {
        None | Some((SortTarget::Key, SortOrder::Ascend)) => None,
        Some((SortTarget::Key, SortOrder::Descend)) => {
            picked.reverse();
            None
        }
        Some((SortTarget::Create, o)) => Some((true, o == SortOrder::Descend)),
        Some((SortTarget::Mod, o)) => Some((false, o == SortOrder::Descend)),
    };
    if let Some((create, descend)) = by {
        let mut keyed: Vec<((i64, usize), &KeyValue)> = picked
            .iter()
            .enumerate()
            .map(|(i, kv)| {
                let rev = if create {
                    kv.create_revision
                } else {
                    kv.mod_revision
                };
                ((rank(rev, descend), i), *kv)
            })
            .collect();
        if keyed.len() > limit {
            keyed.select_nth_unstable_by_key(limit, |(k, _)| *k);
        }
        let top = keyed.len().min(limit);
        keyed[..top].sort_unstable_by_key(|(k, _)| *k);
        let more = keyed.len() > limit;
        resp.more = more;
        resp.kvs = keyed[..top].iter().map(|(_, kv)| out(kv)).collect();
        return resp;
    }
    resp.more = picked.len() > limit;
    picked.truncate(limit);
    resp.kvs = picked.into_iter().map(out).collect();
    resp
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
