//! Key-value types shared by every backend: keys, ranges, reads, writes.

/// A store revision. Every write transaction raises the store's revision by exactly one.
pub type Revision = i64;

/// A lease id. `0` means "no lease" on the wire, so ids handed out are never `0`.
pub type LeaseId = i64;

/// One key with its value and its MVCC metadata, as the store holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key's bytes.
    pub key: Vec<u8>,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since it last did not exist).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
    /// Number of writes since creation, starting at 1. A deleted key has version 0.
    pub version: i64,
    /// Lease the key is attached to, `0` for none.
    pub lease: LeaseId,
}

/// Which keys an operation applies to.
///
/// Every form means a literal set of keys in byte order, and no byte string is a sentinel: each
/// form is the keys from [`KeyRange::start`] (included) up to [`KeyRange::end_bound`]
/// (excluded; no upper bound when it is `None`). How a backend spells a range on its wire
/// (etcd's `(key, range_end)` pair, with its empty and `[0]` ends) is that backend's business.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyRange {
    /// Exactly one key.
    Key(Vec<u8>),
    /// Every key starting with these bytes. An empty prefix means every key.
    Prefix(Vec<u8>),
    /// The keys in `[start, end)`, taken literally: an `end` at or before `start` (an empty
    /// `end` among them) is an empty range, an empty `start` starts at the first key, and
    /// `end == [0]` is the byte string `"\0"` (only the empty key is below it). A range that
    /// runs to the end of the keyspace is [`KeyRange::FromKey`].
    Range {
        /// First key included.
        start: Vec<u8>,
        /// First key excluded.
        end: Vec<u8>,
    },
    /// Every key `>= start` (every key when `start` is empty): to the end of the keyspace.
    FromKey(Vec<u8>),
}

impl KeyRange {
    /// One key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        KeyRange::Key(key.into())
    }

    /// Every key under a prefix.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        KeyRange::Prefix(prefix.into())
    }

    /// Whether `key` falls in this range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Key(k) => k.as_slice() == key,
            KeyRange::Prefix(p) => key.starts_with(p),
            KeyRange::Range { start, end } => start.as_slice() <= key && key < end.as_slice(),
            KeyRange::FromKey(start) => start.as_slice() <= key,
        }
    }

    /// The range's lower bound, included: no key below it is in the range.
    pub fn start(&self) -> &[u8] {
        match self {
            KeyRange::Key(k) | KeyRange::Prefix(k) | KeyRange::FromKey(k) => k,
            KeyRange::Range { start, .. } => start,
        }
    }

    /// The range's upper bound, excluded: the smallest key above every key of the range
    /// (`key + "\0"` for one key, [`prefix_end`] for a prefix, `end` for a [`KeyRange::Range`],
    /// whether or not it is above `start`). `None` when the range runs to the end of the
    /// keyspace: [`KeyRange::FromKey`], and a prefix that [`prefix_end`] has no end for.
    pub fn end_bound(&self) -> Option<Vec<u8>> {
        match self {
            KeyRange::Key(k) => {
                let mut end = Vec::with_capacity(k.len() + 1);
                end.extend_from_slice(k);
                end.push(0);
                Some(end)
            }
            KeyRange::Prefix(p) => prefix_end(p),
            KeyRange::Range { end, .. } => Some(end.clone()),
            KeyRange::FromKey(_) => None,
        }
    }

    /// The bytes of key and range end that an etcd request for this range carries, counted
    /// as a backend counts them against [`BackendLimits::max_request_bytes`]: a single key has
    /// no range end; a prefix's or an open range's end is taken at its longest (the key and
    /// one byte). At most the share [`Txn::size_bound`] counts for it.
    ///
    /// [`BackendLimits::max_request_bytes`]: crate::BackendLimits::max_request_bytes
    /// [`Txn::size_bound`]: crate::Txn::size_bound
    pub fn request_bytes(&self) -> usize {
        match self {
            KeyRange::Key(k) => k.len(),
            KeyRange::Prefix(k) | KeyRange::FromKey(k) => 2 * k.len() + 1,
            KeyRange::Range { start, end } => start.len() + end.len(),
        }
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`, without its sentinel): `None` when no key is, that is when `prefix` is
/// empty or all `0xff` bytes (every key from `prefix` on then starts with it).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// What to sort a range by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SortTarget {
    /// By key bytes.
    Key,
    /// By create revision.
    Create,
    /// By mod revision.
    Mod,
}

/// Sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SortOrder {
    /// Smallest first.
    Ascend,
    /// Largest first.
    Descend,
}

/// A read of a key or a range of keys.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RangeRequest {
    /// Which keys.
    pub range: KeyRange,
    /// Sort target and order; `None` returns keys in key order.
    pub sort: Option<(SortTarget, SortOrder)>,
    /// Most keys to return, `0` for no limit.
    pub limit: i64,
    /// Only keys with `create_revision <= max_create_revision` (`0`: no filter).
    pub max_create_revision: Revision,
    /// Only keys with `mod_revision <= max_mod_revision` (`0`: no filter).
    pub max_mod_revision: Revision,
    /// Read the store as it was at this revision (`0`: the current revision).
    pub revision: Revision,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// May be answered from the answering server's own state, which can lag behind the
    /// store's (etcd's serializable read: no round through the consensus, and no wait behind
    /// the writes being made durable). The answer is a consistent snapshot all the same, at
    /// its header revision, which says how current it is: a caller that needs at least
    /// revision `r` checks it. Backends whose every read is current ignore it.
    pub serializable: bool,
}

impl RangeRequest {
    /// A read of `range`, unsorted, unlimited, at the current revision.
    pub fn new(range: KeyRange) -> Self {
        RangeRequest {
            range,
            sort: None,
            limit: 0,
            max_create_revision: 0,
            max_mod_revision: 0,
            revision: 0,
            keys_only: false,
            count_only: false,
            serializable: false,
        }
    }

    /// A read of one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::key(key))
    }

    /// A read of every key under a prefix.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::prefix(prefix))
    }

    /// Sort the result.
    pub fn with_sort(mut self, target: SortTarget, order: SortOrder) -> Self {
        self.sort = Some((target, order));
        self
    }

    /// Return at most `limit` keys.
    pub fn with_limit(mut self, limit: i64) -> Self {
        self.limit = limit;
        self
    }

    /// Only keys created at or before `revision`.
    pub fn with_max_create_revision(mut self, revision: Revision) -> Self {
        self.max_create_revision = revision;
        self
    }

    /// Only keys last modified at or before `revision`.
    pub fn with_max_mod_revision(mut self, revision: Revision) -> Self {
        self.max_mod_revision = revision;
        self
    }

    /// Read at a past revision.
    pub fn with_revision(mut self, revision: Revision) -> Self {
        self.revision = revision;
        self
    }

    /// Leave values out.
    pub fn with_keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    /// Count only.
    pub fn with_count_only(mut self) -> Self {
        self.count_only = true;
        self
    }

    /// Allow a serializable answer (see [`RangeRequest::serializable`]).
    pub fn with_serializable(mut self) -> Self {
        self.serializable = true;
        self
    }

    /// Shorthand: the key with the smallest create revision (Go's `WithFirstCreate`).
    pub fn first_created(prefix: impl Into<Vec<u8>>) -> Self {
        Self::prefix(prefix)
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1)
    }

    /// Shorthand: the `n` keys with the largest create revisions, newest first.
    pub fn last_created(prefix: impl Into<Vec<u8>>, n: i64) -> Self {
        Self::prefix(prefix)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(n)
    }
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The store's revision when the read was served.
    pub header_revision: Revision,
    /// The keys found (none with `count_only`).
    pub kvs: Vec<KeyValue>,
    /// How many keys are in the range, before `limit` and the `max_*_revision` filters (as etcd).
    pub count: i64,
    /// Whether `limit` left keys out.
    pub more: bool,
}

/// A write of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutRequest {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Lease to attach the key to, `0` for none.
    pub lease: LeaseId,
    /// Return the key's previous value.
    pub prev_kv: bool,
}

impl PutRequest {
    /// A put without lease.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        PutRequest {
            key: key.into(),
            value: value.into(),
            lease: 0,
            prev_kv: false,
        }
    }

    /// Attach the key to a lease.
    pub fn with_lease(mut self, lease: LeaseId) -> Self {
        self.lease = lease;
        self
    }

    /// Return the previous key-value.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// The answer to a [`PutRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The revision of the write.
    pub header_revision: Revision,
    /// The previous key-value, when asked for and present.
    pub prev_kv: Option<KeyValue>,
}

/// A delete of a key or a range.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeleteRequest {
    /// Which keys.
    pub range: KeyRange,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

impl DeleteRequest {
    /// Delete `range`.
    pub fn new(range: KeyRange) -> Self {
        DeleteRequest {
            range,
            prev_kv: false,
        }
    }

    /// Delete one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::key(key))
    }

    /// Delete every key under a prefix.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        Self::new(KeyRange::prefix(prefix))
    }

    /// Return the deleted key-values.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// The answer to a [`DeleteRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteResponse {
    /// The store's revision after the delete (unchanged when nothing was deleted).
    pub header_revision: Revision,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted key-values, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Keys with `0x00` and `0xff` bytes first, inside and last, and the empty key, in byte
    /// order: what the range tests match forms against.
    pub(crate) const KEYS: &[&[u8]] = &[
        b"",
        b"\0",
        b"\0\0",
        b"a",
        b"a\0",
        b"ab",
        b"a\xff",
        b"b",
        b"\xff",
        b"\xff\0",
        b"\xff\xff",
    ];

    #[test]
    fn prefix_end_edges() {
        assert_eq!(prefix_end(b"a"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\0"), Some(vec![1]));
        assert_eq!(prefix_end(b"\xfe\xff"), Some(vec![0xff]));
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    /// Every form against keys with `0x00` and `0xff` bytes, in byte order; and each form is
    /// `[start(), end_bound())`.
    #[test]
    fn ranges_are_literal() {
        let range = |start: &[u8], end: &[u8]| KeyRange::Range {
            start: start.to_vec(),
            end: end.to_vec(),
        };
        let cases: Vec<(KeyRange, Vec<&[u8]>)> = vec![
            (KeyRange::key("a"), vec![b"a"]),
            (KeyRange::key(""), vec![b""]),
            (KeyRange::prefix("a"), vec![b"a", b"a\0", b"ab", b"a\xff"]),
            (KeyRange::prefix(""), KEYS.to_vec()),
            (
                KeyRange::prefix(b"\xff".to_vec()),
                vec![b"\xff", b"\xff\0", b"\xff\xff"],
            ),
            (KeyRange::prefix(b"\0".to_vec()), vec![b"\0", b"\0\0"]),
            (range(b"a", b"b"), vec![b"a", b"a\0", b"ab", b"a\xff"]),
            // An empty end is no "single key", `[0]` no "to the end": both are below "a".
            (range(b"a", b""), vec![]),
            (range(b"a", b"\0"), vec![]),
            (range(b"", b"\0"), vec![b""]),
            (range(b"\0", b"\0\0"), vec![b"\0"]),
            (range(b"", b""), vec![]),
            (range(b"b", b"a"), vec![]),
            (range(b"a", b"a"), vec![]),
            (range(b"", b"a"), vec![b"", b"\0", b"\0\0"]),
            (range(b"\xff", b"\xff\xff"), vec![b"\xff", b"\xff\0"]),
            (
                KeyRange::FromKey(b"ab".to_vec()),
                vec![b"ab", b"a\xff", b"b", b"\xff", b"\xff\0", b"\xff\xff"],
            ),
            (KeyRange::FromKey(Vec::new()), KEYS.to_vec()),
        ];
        for (range, expected) in cases {
            let got: Vec<&[u8]> = KEYS.iter().copied().filter(|k| range.contains(k)).collect();
            assert_eq!(got, expected, "contains, {range:?}");
            let end = range.end_bound();
            let bounded: Vec<&[u8]> = KEYS
                .iter()
                .copied()
                .filter(|k| range.start() <= *k && end.as_deref().map_or(true, |e| *k < e))
                .collect();
            assert_eq!(bounded, expected, "[start, end_bound), {range:?}");
        }
    }
}
