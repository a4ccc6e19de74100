//! Key ranges with their literal meaning (as [`KeyRange`] defines it), and request validation
//! as etcd does it for what coord-etcd sends.

use std::ops::Bound;

use coord_core::{BackendLimits, Error, KeyRange, PutRequest, Result, Txn, TxnOp};

/// Range bounds for `BTreeSet::range`, plus a prefix to `take_while` on.
pub(crate) type Bounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>, Option<&'a [u8]>);

/// The keys a [`KeyRange`] covers, borrowed from it (so matching never allocates).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Span<'a> {
    /// Nothing (a range whose end is at or before its start).
    Empty,
    /// Exactly one key.
    One(&'a [u8]),
    /// Every key starting with these (non-empty) bytes.
    Prefix(&'a [u8]),
    /// `[start, end)`.
    Between(&'a [u8], &'a [u8]),
    /// Every key `>= start` (all keys when `start` is empty).
    From(&'a [u8]),
}

impl<'a> Span<'a> {
    /// The span of `range`; an empty key (where etcd needs one) is `InvalidArgument`.
    pub(crate) fn of(range: &'a KeyRange) -> Result<Span<'a>> {
        Ok(match range {
            KeyRange::Key(k) => Span::One(non_empty(k)?),
            KeyRange::Prefix(p) if p.is_empty() => Span::From(p),
            KeyRange::Prefix(p) => Span::Prefix(p),
            KeyRange::FromKey(k) => Span::From(k),
            // Literal: an end at or before the start (an empty end too) holds no key.
            KeyRange::Range { start, end } if end <= start => Span::Empty,
            KeyRange::Range { start, end } => Span::Between(start, end),
        })
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match *self {
            Span::Empty => false,
            Span::One(k) => k == key,
            Span::Prefix(p) => key.starts_with(p),
            Span::Between(s, e) => key >= s && key < e,
            Span::From(s) => key >= s,
        }
    }

    /// Bounds for `BTreeSet::range`, plus a prefix the caller must `take_while` on.
    pub(crate) fn bounds(&self) -> Bounds<'a> {
        match *self {
            Span::Empty => (Bound::Included(b""), Bound::Excluded(b""), None),
            Span::One(k) => (Bound::Included(k), Bound::Included(k), None),
            Span::Prefix(p) => (Bound::Included(p), Bound::Unbounded, Some(p)),
            Span::Between(s, e) => (Bound::Included(s), Bound::Excluded(e), None),
            Span::From(s) => (Bound::Included(s), Bound::Unbounded, None),
        }
    }
}

fn non_empty(key: &[u8]) -> Result<&[u8]> {
    if key.is_empty() {
        Err(Error::invalid("key is not provided"))
    } else {
        Ok(key)
    }
}

fn too_large(size: usize, limits: &BackendLimits) -> Result<()> {
    if size > limits.max_request_bytes {
        Err(Error::invalid(format!(
            "request is too large: {size} bytes, the limit is {}",
            limits.max_request_bytes
        )))
    } else {
        Ok(())
    }
}

/// A put on its own: non-empty key, key plus value within the request limit.
pub(crate) fn check_put(req: &PutRequest, limits: &BackendLimits) -> Result<()> {
    non_empty(&req.key)?;
    too_large(req.key.len() + req.value.len(), limits)
}

/// A whole transaction, both branches, as etcd checks it before running anything: op counts,
/// keys, sizes, and no key put twice (or put and deleted) in one branch.
pub(crate) fn check_txn(txn: &Txn, limits: &BackendLimits, max_ops: usize) -> Result<()> {
    if txn.compares.len() > max_ops || txn.success.len() > max_ops || txn.failure.len() > max_ops {
        return Err(Error::invalid(format!(
            "too many operations in txn request (the limit is {max_ops})"
        )));
    }
    let mut size = 0;
    for c in &txn.compares {
        size += c.key.len();
        if let coord_core::CompareTarget::Value(v) = &c.target {
            size += v.len();
        }
    }
    for op in txn.success.iter().chain(&txn.failure) {
        size += match op {
            TxnOp::Range(r) => {
                Span::of(&r.range)?;
                r.range.request_bytes()
            }
            TxnOp::Put(p) => {
                check_put(p, limits)?;
                p.key.len() + p.value.len()
            }
            TxnOp::Delete(d) => {
                Span::of(&d.range)?;
                d.range.request_bytes()
            }
        };
    }
    too_large(size, limits)?;
    check_duplicates(&txn.success)?;
    check_duplicates(&txn.failure)
}

/// etcd's `checkIntervals`: within one branch a key may be put once, and not also deleted.
///
/// Like etcd, only bounded deletes count: coord-etcd sends a delete "to the end of the
/// keyspace" (from-key, the empty prefix, a prefix of all `0xff` bytes) with range end `[0]`,
/// which etcd's interval check never matches. An empty range matches nothing here or there.
fn check_duplicates(ops: &[TxnOp]) -> Result<()> {
    let puts = ops.iter().filter_map(|op| match op {
        TxnOp::Put(p) => Some(p.key.as_slice()),
        _ => None,
    });
    for (i, key) in puts.clone().enumerate() {
        let dup_put = puts.clone().skip(i + 1).any(|k| k == key);
        let deleted = ops.iter().any(|op| match op {
            TxnOp::Delete(d) => match Span::of(&d.range) {
                Ok(Span::From(_)) | Err(_) => false,
                Ok(Span::Prefix(p)) if p.iter().all(|b| *b == 0xff) => false,
                Ok(span) => span.contains(key),
            },
            _ => false,
        });
        if dup_put || deleted {
            return Err(Error::invalid("duplicate key given in txn request"));
        }
    }
    Ok(())
}
