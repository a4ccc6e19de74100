//! Transactions: compares, then success or failure operations, applied atomically.

use crate::kv::{
    DeleteRequest, DeleteResponse, LeaseId, PutRequest, PutResponse, RangeRequest, RangeResponse,
    Revision,
};

/// How a [`Compare`] relates the key's field to the given value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// Field `==` value.
    Equal,
    /// Field `!=` value.
    NotEqual,
    /// Field `>` value.
    Greater,
    /// Field `<` value.
    Less,
}

/// The field of a key a [`Compare`] looks at, with the value to compare with.
///
/// A missing key has create revision, mod revision, version and lease `0`, and no value (a value
/// compare on a missing key is false, as in etcd).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CompareTarget {
    /// The key's create revision.
    CreateRevision(Revision),
    /// The key's mod revision.
    ModRevision(Revision),
    /// The key's version.
    Version(i64),
    /// The key's value bytes.
    Value(Vec<u8>),
    /// The key's lease.
    Lease(LeaseId),
}

/// One condition of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Compare {
    /// The key compared.
    pub key: Vec<u8>,
    /// The relation.
    pub op: CompareOp,
    /// The field and the value.
    pub target: CompareTarget,
}

impl Compare {
    /// A compare of `key`'s field.
    pub fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget) -> Self {
        Compare {
            key: key.into(),
            op,
            target,
        }
    }

    /// `create_revision(key) == revision`; with `0`, "the key does not exist".
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: Revision) -> Self {
        Self::new(key, op, CompareTarget::CreateRevision(revision))
    }

    /// `mod_revision(key) op revision`.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: Revision) -> Self {
        Self::new(key, op, CompareTarget::ModRevision(revision))
    }

    /// `version(key) op version`.
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Self::new(key, op, CompareTarget::Version(version))
    }

    /// `value(key) op value`.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self::new(key, op, CompareTarget::Value(value.into()))
    }

    /// `lease(key) op lease`.
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: LeaseId) -> Self {
        Self::new(key, op, CompareTarget::Lease(lease))
    }
}

/// One operation inside a [`Txn`] branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// A read.
    Range(RangeRequest),
    /// A write.
    Put(PutRequest),
    /// A delete.
    Delete(DeleteRequest),
}

impl From<RangeRequest> for TxnOp {
    fn from(r: RangeRequest) -> Self {
        TxnOp::Range(r)
    }
}

impl From<PutRequest> for TxnOp {
    fn from(r: PutRequest) -> Self {
        TxnOp::Put(r)
    }
}

impl From<DeleteRequest> for TxnOp {
    fn from(r: DeleteRequest) -> Self {
        TxnOp::Delete(r)
    }
}

/// The answer to one [`TxnOp`], in the same position as its operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// Answer to [`TxnOp::Range`].
    Range(RangeResponse),
    /// Answer to [`TxnOp::Put`].
    Put(PutResponse),
    /// Answer to [`TxnOp::Delete`].
    Delete(DeleteResponse),
}

impl TxnOpResponse {
    /// The range answer, if this is one.
    pub fn as_range(&self) -> Option<&RangeResponse> {
        match self {
            TxnOpResponse::Range(r) => Some(r),
            _ => None,
        }
    }

    /// Takes the range answer, if this is one.
    pub fn into_range(self) -> Option<RangeResponse> {
        match self {
            TxnOpResponse::Range(r) => Some(r),
            _ => None,
        }
    }
}

/// An atomic transaction: if every compare holds, run `success`, else run `failure`; either
/// way at one revision. Nested transactions are not part of the contract.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// The conditions, all of which must hold for `success` to run.
    pub compares: Vec<Compare>,
    /// Operations when every compare holds.
    pub success: Vec<TxnOp>,
    /// Operations otherwise.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds conditions.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    /// Adds success operations.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Adds failure operations.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }
}

/// Bytes a protobuf field can add around its payload: a tag of up to 2 bytes and a length of
/// up to 5.
const FIELD: usize = 7;
/// A bound on the integers and flags of one operation or compare (each varint at most 11
/// bytes with its tag; a range request has 11 of them).
const SCALARS: usize = 11 * 11;
/// What a store adds around the transaction (etcd: the raft request header with its id and
/// user name).
const ENVELOPE: usize = 512;

impl Txn {
    /// An upper bound on the size of this transaction as a store receives it: every key, range
    /// end and value, plus a fixed bound per field (etcd's protobuf encoding, which is what its
    /// request limit counts). A transaction whose bound fits
    /// [`BackendLimits::max_request_bytes`](crate::BackendLimits) is never refused as too large.
    pub fn size_bound(&self) -> usize {
        let compares: usize = self
            .compares
            .iter()
            .map(|c| {
                let value = match &c.target {
                    CompareTarget::Value(v) => v.len(),
                    _ => 0,
                };
                3 * FIELD + c.key.len() + value + SCALARS
            })
            .sum();
        let ops: usize = self
            .success
            .iter()
            .chain(&self.failure)
            .map(|op| {
                let bytes = match op {
                    TxnOp::Range(r) => range_bytes(&r.range),
                    TxnOp::Put(p) => p.key.len() + p.value.len(),
                    TxnOp::Delete(d) => range_bytes(&d.range),
                };
                4 * FIELD + bytes + SCALARS
            })
            .sum();
        ENVELOPE + compares + ops
    }
}

/// A range's key and end bytes, at their longest encoding.
fn range_bytes(range: &crate::kv::KeyRange) -> usize {
    use crate::kv::KeyRange;
    match range {
        KeyRange::Key(k) => k.len(),
        KeyRange::Prefix(p) | KeyRange::FromKey(p) => 2 * p.len() + 1,
        KeyRange::Range { start, end } => start.len() + end.len() + 1,
    }
}

/// The answer to a [`Txn`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (so `success` ran).
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub header_revision: Revision,
    /// One answer per operation of the branch that ran.
    pub responses: Vec<TxnOpResponse>,
}

impl TxnResponse {
    /// The range answer at `index`, or an error naming a backend that broke the contract.
    pub fn range(&self, index: usize) -> crate::Result<&RangeResponse> {
        self.responses
            .get(index)
            .and_then(TxnOpResponse::as_range)
            .ok_or_else(|| crate::Error::Backend {
                source: format!("txn response {index} is not a range response").into(),
            })
    }
}
