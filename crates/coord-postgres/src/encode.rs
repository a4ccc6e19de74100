//! A [`Txn`] as the arguments of `txn_w`/`txn_r` (arrays, one element per compare and per
//! operation of both branches), and their result rows back as a [`TxnResponse`]. Also the
//! checks etcd makes before running a transaction, done here before anything is sent.

use coord_core::{
    BackendLimits, CompareOp, CompareTarget, DeleteResponse, Error, KeyRange, KeyValue,
    PutResponse, RangeResponse, Result, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::error;

/// etcd's default `--max-txn-ops`: most compares, and most ops per branch.
pub(crate) const MAX_TXN_OPS: usize = 128;

/// The arguments of `txn_w`/`txn_r`, borrowing the transaction's bytes.
#[derive(Default)]
pub(crate) struct Args<'a> {
    c_key: Vec<&'a [u8]>,
    c_target: Vec<i16>,
    c_op: Vec<i16>,
    c_num: Vec<i64>,
    c_val: Vec<Option<&'a [u8]>>,
    o_branch: Vec<bool>,
    o_kind: Vec<i16>,
    o_key: Vec<&'a [u8]>,
    o_end: Vec<Option<Vec<u8>>>,
    o_value: Vec<&'a [u8]>,
    o_lease: Vec<i64>,
    o_flags: Vec<i32>,
    o_limit: Vec<i64>,
    o_max_create: Vec<i64>,
    o_max_mod: Vec<i64>,
    o_rev: Vec<i64>,
    /// Whether some op of either branch writes (then `txn_w`, else the lock-free `txn_r`).
    pub(crate) writes: bool,
}

impl<'a> Args<'a> {
    /// Encodes a transaction already checked by [`check_txn`].
    pub(crate) fn new(txn: &'a Txn) -> Self {
        let mut a = Args::default();
        for c in &txn.compares {
            let (target, num, val) = match &c.target {
                CompareTarget::CreateRevision(r) => (0, *r, None),
                CompareTarget::ModRevision(r) => (1, *r, None),
                CompareTarget::Version(v) => (2, *v, None),
                CompareTarget::Value(v) => (3, 0, Some(v.as_slice())),
                CompareTarget::Lease(l) => (4, *l, None),
            };
            a.c_key.push(&c.key);
            a.c_target.push(target);
            a.c_op.push(match c.op {
                CompareOp::Equal => 0,
                CompareOp::NotEqual => 1,
                CompareOp::Greater => 2,
                CompareOp::Less => 3,
            });
            a.c_num.push(num);
            a.c_val.push(val);
        }
        for (branch, ops) in [(true, &txn.success), (false, &txn.failure)] {
            for op in ops {
                a.push(branch, op);
            }
        }
        a
    }

    fn push(&mut self, branch: bool, op: &'a TxnOp) {
        self.o_branch.push(branch);
        match op {
            TxnOp::Range(r) => {
                self.o_kind.push(0);
                self.push_range(&r.range);
                self.o_value.push(&[]);
                self.o_lease.push(0);
                let sort = match r.sort {
                    None => 0,
                    Some((SortTarget::Key, SortOrder::Ascend)) => 1,
                    Some((SortTarget::Key, SortOrder::Descend)) => 2,
                    Some((SortTarget::Create, SortOrder::Ascend)) => 3,
                    Some((SortTarget::Create, SortOrder::Descend)) => 4,
                    Some((SortTarget::Mod, SortOrder::Ascend)) => 5,
                    Some((SortTarget::Mod, SortOrder::Descend)) => 6,
                };
                self.o_flags.push(
                    (i32::from(r.keys_only) << 1) | (i32::from(r.count_only) << 2) | (sort << 4),
                );
                self.o_limit.push(r.limit.max(0));
                self.o_max_create.push(r.max_create_revision.max(0));
                self.o_max_mod.push(r.max_mod_revision.max(0));
                self.o_rev.push(r.revision);
            }
            TxnOp::Put(p) => {
                self.writes = true;
                self.o_kind.push(1);
                self.o_key.push(&p.key);
                self.o_end.push(None);
                self.o_value.push(&p.value);
                self.o_lease.push(p.lease);
                self.o_flags.push(i32::from(p.prev_kv));
                self.push_zeros();
            }
            TxnOp::Delete(d) => {
                self.writes = true;
                self.o_kind.push(2);
                self.push_range(&d.range);
                self.o_value.push(&[]);
                self.o_lease.push(0);
                // Bit 3: one key, which txn_w deletes without the range machinery.
                let one = matches!(d.range, KeyRange::Key(_));
                self.o_flags
                    .push(i32::from(d.prev_kv) | (i32::from(one) << 3));
                self.push_zeros();
            }
        }
    }

    /// A range as `[start, end)`, `end` NULL for "to the end of the keyspace". The literal
    /// meaning of every form (an `end` at or before `start` is empty) is what SQL's
    /// `key >= start AND key < end` gives.
    fn push_range(&mut self, range: &'a KeyRange) {
        self.o_key.push(range.start());
        self.o_end.push(range.end_bound());
    }

    fn push_zeros(&mut self) {
        self.o_limit.push(0);
        self.o_max_create.push(0);
        self.o_max_mod.push(0);
        self.o_rev.push(0);
    }

    /// The statement's parameters, in order.
    pub(crate) fn params(&self) -> [&(dyn ToSql + Sync); 16] {
        [
            &self.c_key,
            &self.c_target,
            &self.c_op,
            &self.c_num,
            &self.c_val,
            &self.o_branch,
            &self.o_kind,
            &self.o_key,
            &self.o_end,
            &self.o_value,
            &self.o_lease,
            &self.o_flags,
            &self.o_limit,
            &self.o_max_create,
            &self.o_max_mod,
            &self.o_rev,
        ]
    }
}

/// Builds the response from `txn`'s result rows (see `{s}.result` in `schema.sql`).
pub(crate) fn decode(txn: &Txn, rows: &[Row]) -> Result<TxnResponse> {
    let summary = rows
        .last()
        .filter(|r| r.get::<_, i32>(0) == -1)
        .ok_or_else(|| error::protocol("transaction result without its summary row"))?;
    let succeeded = summary.get::<_, i64>(2) == 1;
    let header_revision: i64 = summary.get(1);
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let mut responses: Vec<TxnOpResponse> = ops
        .iter()
        .map(|op| match op {
            TxnOp::Range(_) => TxnOpResponse::Range(RangeResponse::default()),
            TxnOp::Put(_) => TxnOpResponse::Put(PutResponse::default()),
            TxnOp::Delete(_) => TxnOpResponse::Delete(DeleteResponse::default()),
        })
        .collect();
    for row in &rows[..rows.len() - 1] {
        let op: i32 = row.get(0);
        let resp = usize::try_from(op)
            .ok()
            .and_then(|i| responses.get_mut(i))
            .ok_or_else(|| error::protocol(format!("result row for op {op} of {}", ops.len())))?;
        let rev: i64 = row.get(1);
        let key: Option<Vec<u8>> = row.get(4);
        match key {
            None => match resp {
                TxnOpResponse::Range(r) => {
                    r.header_revision = rev;
                    r.count = row.get(2);
                    r.more = row.get(3);
                }
                TxnOpResponse::Put(p) => p.header_revision = rev,
                TxnOpResponse::Delete(d) => {
                    d.header_revision = rev;
                    d.deleted = row.get(2);
                }
            },
            Some(key) => {
                let kv = KeyValue {
                    key,
                    value: row.get(5),
                    create_revision: row.get(6),
                    mod_revision: row.get(7),
                    version: row.get(8),
                    lease: row.get(9),
                };
                match resp {
                    TxnOpResponse::Range(r) => r.kvs.push(kv),
                    TxnOpResponse::Put(p) => p.prev_kv = Some(kv),
                    TxnOpResponse::Delete(d) => d.prev_kvs.push(kv),
                }
            }
        }
    }
    Ok(TxnResponse {
        succeeded,
        header_revision,
        responses,
    })
}

/// An empty key where etcd needs one (a single-key range, a put) is refused, as etcd does.
fn check_range(range: &KeyRange) -> Result<()> {
    if matches!(range, KeyRange::Key(k) if k.is_empty()) {
        return Err(Error::invalid("key is not provided"));
    }
    Ok(())
}

/// The checks etcd makes before running a transaction: op counts, keys, request size, and no
/// key put twice (or put and deleted) in one branch; plus what PostgreSQL cannot take (a
/// negative revision, limit or lease).
pub(crate) fn check_txn(txn: &Txn, limits: &BackendLimits) -> Result<()> {
    if txn.compares.len() > MAX_TXN_OPS
        || txn.success.len() > MAX_TXN_OPS
        || txn.failure.len() > MAX_TXN_OPS
    {
        return Err(Error::invalid(format!(
            "too many operations in txn request (the limit is {MAX_TXN_OPS})"
        )));
    }
    let mut size = 0;
    for c in &txn.compares {
        size += c.key.len();
        if let CompareTarget::Value(v) = &c.target {
            size += v.len();
        }
    }
    for op in txn.success.iter().chain(&txn.failure) {
        size += match op {
            TxnOp::Range(r) => {
                check_range(&r.range)?;
                if r.revision < 0 {
                    return Err(Error::invalid(format!("negative revision {}", r.revision)));
                }
                r.range.request_bytes()
            }
            TxnOp::Put(p) => {
                if p.key.is_empty() {
                    return Err(Error::invalid("key is not provided"));
                }
                if p.lease < 0 {
                    return Err(Error::invalid(format!("negative lease id {}", p.lease)));
                }
                p.key.len() + p.value.len()
            }
            TxnOp::Delete(d) => {
                check_range(&d.range)?;
                d.range.request_bytes()
            }
        };
    }
    if size > limits.max_request_bytes {
        return Err(Error::invalid(format!(
            "request is too large: {size} bytes, the limit is {}",
            limits.max_request_bytes
        )));
    }
    check_duplicates(&txn.success)?;
    check_duplicates(&txn.failure)
}

/// etcd's `checkIntervals`: within one branch a key may be put once, and not also deleted by a
/// bounded delete (etcd never matches a delete "to the end of the keyspace", which coord-etcd
/// sends with range end `[0]`; this backend follows, so all backends agree).
fn check_duplicates(ops: &[TxnOp]) -> Result<()> {
    let puts = ops.iter().filter_map(|op| match op {
        TxnOp::Put(p) => Some(p.key.as_slice()),
        _ => None,
    });
    for (i, key) in puts.clone().enumerate() {
        let dup_put = puts.clone().skip(i + 1).any(|k| k == key);
        let deleted = ops.iter().any(|op| match op {
            TxnOp::Delete(d) => match &d.range {
                KeyRange::FromKey(_) => false,
                KeyRange::Prefix(p) if p.iter().all(|b| *b == 0xff) => false,
                range => range.contains(key),
            },
            _ => false,
        });
        if dup_put || deleted {
            return Err(Error::invalid("duplicate key given in txn request"));
        }
    }
    Ok(())
}

/// `(compared key, its create revision, the key deleted)` when `txn` is a release: "if
/// create_revision(k) = r then delete the one key d" (no prev_kv, nothing else), which
/// `txn_guarded_delete()` answers with the same rows as `txn_w()`.
pub(crate) fn guarded_delete(txn: &Txn) -> Option<(&[u8], i64, &[u8])> {
    let ([compare], [TxnOp::Delete(delete)], []) =
        (&txn.compares[..], &txn.success[..], &txn.failure[..])
    else {
        return None;
    };
    let (CompareOp::Equal, CompareTarget::CreateRevision(rev)) = (compare.op, &compare.target)
    else {
        return None;
    };
    match &delete.range {
        KeyRange::Key(key) if !delete.prev_kv => Some((&compare.key, *rev, key)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use coord_core::{DeleteRequest, PutRequest, RangeRequest};

    use super::*;

    #[test]
    fn etcds_checks() {
        let limits = BackendLimits::default();
        let ok = Txn::new().and_then([
            PutRequest::new("a", "1").into(),
            DeleteRequest::new(KeyRange::Range {
                start: b"a".to_vec(),
                end: b"a".to_vec(),
            })
            .into(),
            DeleteRequest::prefix("").into(),
        ]);
        assert!(check_txn(&ok, &limits).is_ok());
        for bad in [
            Txn::new().and_then([
                PutRequest::new("a", "1").into(),
                PutRequest::new("a", "2").into(),
            ]),
            Txn::new().and_then([
                PutRequest::new("a", "1").into(),
                DeleteRequest::prefix("a").into(),
            ]),
            Txn::new().and_then([PutRequest::new("", "1").into()]),
            Txn::new().and_then([RangeRequest::key("").into()]),
            Txn::new().and_then([PutRequest::new("k", vec![0; 2 << 20]).into()]),
            Txn::new().and_then((0..129).map(|i| PutRequest::new(format!("k{i}"), "").into())),
        ] {
            assert!(matches!(
                check_txn(&bad, &limits),
                Err(Error::InvalidArgument { .. })
            ));
        }
    }

    #[test]
    fn writes_pick_the_locking_function() {
        let read = Txn::new().and_then([RangeRequest::prefix("a").into()]);
        assert!(!Args::new(&read).writes);
        let write = Txn::new()
            .and_then([RangeRequest::prefix("a").into()])
            .or_else([DeleteRequest::key("a").into()]);
        assert!(Args::new(&write).writes);
    }
}
