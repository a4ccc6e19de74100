//! A backend adapter that namespaces every key under a fixed prefix.

use async_trait::async_trait;
use futures::StreamExt;

use crate::backend::{Backend, Decorator};
use crate::error::Result;
use crate::kv::{
    prefix_end, DeleteRequest, DeleteResponse, KeyRange, KeyValue, LeaseId, PutRequest,
    PutResponse, RangeRequest, RangeResponse,
};
use crate::lease::LeaseTimeToLive;
use crate::txn::{Txn, TxnOp, TxnOpResponse, TxnResponse};
use crate::watch::{WatchRequest, WatchStream};

/// Runs every operation of the inner backend under `prefix`: keys are written as
/// `prefix + key` and read back without it, so primitives over a `Prefixed` backend cannot see
/// or touch keys outside the namespace (etcd's `namespace` package does the same).
///
/// A [`KeyRange`] keeps its literal meaning inside the namespace: a key, a prefix and
/// `[start, end)` get the prefix on each key they name (so `[a, "")`, empty outside, stays
/// empty inside), and "from `start` to the end" stops at the namespace's end.
///
/// Leases are not namespaced: they are global to the store, and [`Backend::lease_list`] lists
/// them all.
#[derive(Debug, Clone)]
pub struct Prefixed<B> {
    inner: B,
    prefix: Vec<u8>,
}

impl<B: Backend> Prefixed<B> {
    /// Wraps `inner` so that every key lives under `prefix`.
    pub fn new(inner: B, prefix: impl Into<Vec<u8>>) -> Self {
        Prefixed {
            inner,
            prefix: prefix.into(),
        }
    }

    /// The namespace prefix.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn add(&self, key: &[u8]) -> Vec<u8> {
        join(&self.prefix, key)
    }

    fn strip(&self, mut kv: KeyValue) -> KeyValue {
        if kv.key.starts_with(&self.prefix) {
            kv.key.drain(..self.prefix.len());
        }
        kv
    }

    fn range(&self, range: KeyRange) -> KeyRange {
        namespaced(&self.prefix, range)
    }

    fn range_req(&self, mut req: RangeRequest) -> RangeRequest {
        req.range = self.range(req.range);
        req
    }

    fn put_req(&self, mut req: PutRequest) -> PutRequest {
        req.key = self.add(&req.key);
        req
    }

    fn delete_req(&self, mut req: DeleteRequest) -> DeleteRequest {
        req.range = self.range(req.range);
        req
    }

    fn range_resp(&self, mut resp: RangeResponse) -> RangeResponse {
        resp.kvs = resp.kvs.into_iter().map(|kv| self.strip(kv)).collect();
        resp
    }

    fn put_resp(&self, mut resp: PutResponse) -> PutResponse {
        resp.prev_kv = resp.prev_kv.map(|kv| self.strip(kv));
        resp
    }

    fn delete_resp(&self, mut resp: DeleteResponse) -> DeleteResponse {
        resp.prev_kvs = resp.prev_kvs.into_iter().map(|kv| self.strip(kv)).collect();
        resp
    }

    fn op(&self, op: TxnOp) -> TxnOp {
        match op {
            TxnOp::Range(r) => TxnOp::Range(self.range_req(r)),
            TxnOp::Put(r) => TxnOp::Put(self.put_req(r)),
            TxnOp::Delete(r) => TxnOp::Delete(self.delete_req(r)),
        }
    }
}

/// `prefix + key`.
fn join(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + key.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(key);
    k
}

/// The keys of `range` inside the namespace `prefix`, as a range of the inner store: each form
/// maps literally, so `namespaced(p, r).contains(p + k) == r.contains(k)`, and no key outside
/// the namespace is in it.
fn namespaced(prefix: &[u8], range: KeyRange) -> KeyRange {
    if prefix.is_empty() {
        return range;
    }
    match range {
        KeyRange::Key(k) => KeyRange::Key(join(prefix, &k)),
        KeyRange::Prefix(p) => KeyRange::Prefix(join(prefix, &p)),
        KeyRange::Range { start, end } => KeyRange::Range {
            start: join(prefix, &start),
            end: join(prefix, &end),
        },
        // When nothing is above the namespace (a prefix of 0xff bytes), every key from
        // `prefix + start` on is in it.
        KeyRange::FromKey(start) => match prefix_end(prefix) {
            Some(end) => KeyRange::Range {
                start: join(prefix, &start),
                end,
            },
            None => KeyRange::FromKey(join(prefix, &start)),
        },
    }
}

#[async_trait]
impl<B: Backend + Clone> Decorator for Prefixed<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let txn = Txn {
            compares: txn
                .compares
                .into_iter()
                .map(|mut c| {
                    c.key = self.add(&c.key);
                    c
                })
                .collect(),
            success: txn.success.into_iter().map(|op| self.op(op)).collect(),
            failure: txn.failure.into_iter().map(|op| self.op(op)).collect(),
        };
        let mut resp = self.inner.txn(txn).await?;
        resp.responses = resp
            .responses
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Range(r) => TxnOpResponse::Range(self.range_resp(r)),
                TxnOpResponse::Put(r) => TxnOpResponse::Put(self.put_resp(r)),
                TxnOpResponse::Delete(r) => TxnOpResponse::Delete(self.delete_resp(r)),
            })
            .collect();
        Ok(resp)
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        Ok(self.range_resp(self.inner.range(self.range_req(req)).await?))
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        Ok(self.put_resp(self.inner.put(self.put_req(req)).await?))
    }

    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        Ok(self.delete_resp(self.inner.delete(self.delete_req(req)).await?))
    }

    async fn lease_time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseTimeToLive> {
        let mut ttl = self.inner.lease_time_to_live(id, with_keys).await?;
        // Keys outside the namespace stay hidden.
        ttl.keys = ttl
            .keys
            .into_iter()
            .filter(|k| k.starts_with(&self.prefix))
            .map(|k| k[self.prefix.len()..].to_vec())
            .collect();
        Ok(ttl)
    }

    async fn watch(&self, mut req: WatchRequest) -> Result<WatchStream> {
        req.range = self.range(req.range);
        let stream = self.inner.watch(req).await?;
        let this = self.clone();
        Ok(Box::pin(stream.map(move |item| {
            item.map(|mut ev| {
                ev.kv = this.strip(ev.kv);
                ev.prev_kv = ev.prev_kv.map(|kv| this.strip(kv));
                ev
            })
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::tests::KEYS;

    fn forms() -> Vec<KeyRange> {
        let range = |start: &[u8], end: &[u8]| KeyRange::Range {
            start: start.to_vec(),
            end: end.to_vec(),
        };
        vec![
            KeyRange::key("ab"),
            KeyRange::key(""),
            KeyRange::prefix("a"),
            KeyRange::prefix(""),
            KeyRange::prefix(b"\xff".to_vec()),
            range(b"a", b"b"),
            range(b"a", b""),
            range(b"a", b"\0"),
            range(b"", b"\0"),
            range(b"", b""),
            range(b"", b"ab"),
            range(b"b", b"a"),
            range(b"ab", b"ab"),
            range(b"\xff", b"\xff\xff"),
            KeyRange::FromKey(b"ab".to_vec()),
            KeyRange::FromKey(Vec::new()),
            KeyRange::FromKey(b"\xff\0".to_vec()),
        ]
    }

    /// Every form means inside a namespace what it means outside, and reaches no key outside:
    /// also where the namespace has no end (`0xff` bytes) and for the empty namespace.
    #[test]
    fn namespaced_ranges_keep_their_literal_meaning() {
        for prefix in [&b"ns/"[..], b"\0", b"n\xff", b"\xff", b"\xff\xff", b""] {
            for range in forms() {
                let inner = namespaced(prefix, range.clone());
                for key in KEYS {
                    assert_eq!(
                        inner.contains(&join(prefix, key)),
                        range.contains(key),
                        "{range:?} under {prefix:?} as {inner:?}, key {key:?}"
                    );
                    // Keys outside the namespace: every test key that does not start with it.
                    if !key.starts_with(prefix) {
                        assert!(
                            !inner.contains(key),
                            "{range:?} under {prefix:?} as {inner:?} reaches {key:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn from_key_stops_at_the_namespace_end() {
        assert_eq!(
            namespaced(b"ns/", KeyRange::FromKey(b"a".to_vec())),
            KeyRange::Range {
                start: b"ns/a".to_vec(),
                end: b"ns0".to_vec()
            }
        );
        assert_eq!(
            namespaced(b"\xff", KeyRange::FromKey(b"a".to_vec())),
            KeyRange::FromKey(b"\xffa".to_vec())
        );
    }
}
