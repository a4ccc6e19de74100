//! The backend trait: key-value with revisions, leases, watches and transactions.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::kv::{
    DeleteRequest, DeleteResponse, LeaseId, PutRequest, PutResponse, RangeRequest, RangeResponse,
    Revision,
};
use crate::lease::{LeaseGrant, LeaseTimeToLive};
use crate::txn::{Txn, TxnOp, TxnOpResponse, TxnResponse};
use crate::watch::{WatchRequest, WatchStream};

/// A shared, type-erased backend.
pub type DynBackend = Arc<dyn Backend>;

/// Sizes and bounds a backend enforces, so primitives can reject bad input before writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendLimits {
    /// Largest request (key plus value) the store accepts, in bytes.
    pub max_request_bytes: usize,
    /// Smallest lease TTL the store grants, in seconds.
    pub min_ttl: i64,
    /// Largest lease TTL the store grants, in seconds.
    pub max_ttl: i64,
}

impl BackendLimits {
    /// Limits with the given bounds.
    pub fn new(max_request_bytes: usize, min_ttl: i64, max_ttl: i64) -> Self {
        BackendLimits {
            max_request_bytes,
            min_ttl,
            max_ttl,
        }
    }

    /// [`Error::InvalidArgument`] when `txn` may be too large for this store (by
    /// [`Txn::size_bound`]), so a primitive can refuse it before sending anything. `what` names
    /// the request for the message.
    pub fn check_txn(&self, txn: &Txn, what: &str) -> Result<()> {
        let size = txn.size_bound();
        if size > self.max_request_bytes {
            return Err(Error::invalid(format!(
                "{what} would be a request of up to {size} bytes; this store takes at most {}",
                self.max_request_bytes
            )));
        }
        Ok(())
    }
}

impl Default for BackendLimits {
    /// etcd's defaults: 1.5 MiB requests, TTL from 1 s to `MaxLeaseTTL` (9,000,000,000 s).
    fn default() -> Self {
        BackendLimits {
            max_request_bytes: 1_572_864,
            min_ttl: 1,
            max_ttl: 9_000_000_000,
        }
    }
}

/// A store that offers key-value with revisions, leases, watches and transactions.
///
/// # Contract
///
/// Every primitive in `coord` rests on these promises; `coord_core::conformance` checks each.
///
/// - **Revisions**: one global revision per store, strictly increasing; a write transaction that
///   changes anything raises it by exactly one, and every change it makes carries that revision.
///   A transaction or delete that changes nothing leaves it as it is.
/// - **Keys** carry `create_revision`, `mod_revision`, `version` (1 on creation, +1 per put, reset
///   when deleted) and `lease`.
/// - **Key ranges** ([`KeyRange`](crate::KeyRange)) mean their literal set of keys in reads,
///   deletes and watches, in transactions or not: `Range { start, end }` is `[start, end)`, empty
///   when `end <= start`; an empty `end` or `[0]` is no sentinel ("to the end" is `FromKey`).
/// - **Range** reads a key or a range, sorted by key, create or mod revision, filtered by
///   `max_create_revision`/`max_mod_revision`, cut by `limit` (with `count`, counted before
///   `limit` and the filters as etcd does, and `more`), at the
///   current revision or at a past one ([`Error::Compacted`] when it is gone); every answer
///   carries the header revision.
/// - **Txn**: compares (create/mod revision, version, value, lease) then the success or failure
///   ops, atomically at one revision. A missing key compares as revision/version/lease `0`.
///   Reads and transactions are linearizable, also a transaction with compares only (an
///   ownership check): it sees every write acknowledged before it was sent.
/// - **Leases**: grant with a TTL in seconds, keep-alive (resets the TTL), revoke, time-to-live.
///   Expiry or revoke deletes every attached key in one revision, and watchers see the deletes.
///   An unknown lease is [`Error::LeaseNotFound`], also when a put names it.
/// - **Watch** a range from a start revision: every event with revision >= start, in order, none
///   missed, none repeated. When [`Backend::watch`] returns, the watch is registered: with start
///   `0` every change after that moment is delivered (on a cluster, a member that lags may also
///   deliver changes from just before it). A start revision below the compaction
///   point yields [`Error::Compacted`], never silence: either from `watch` itself or as the
///   stream's first item (etcd confirms the watch, then cancels it), so callers handle both.
///   A broken watch ends its stream with an error; it never stops silently. The events of one
///   revision are delivered together: once the first is yielded, the rest are ready without
///   waiting (etcd sends a revision in one response), so a reader can take a revision whole.
/// - **Errors** are mapped by meaning into [`Error`]; the backend's own error is kept as source.
#[async_trait]
pub trait Backend: Debug + Send + Sync + 'static {
    /// Runs a transaction.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Reads keys. The default runs a one-op transaction.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        match single_op(self.txn(Txn::new().and_then([TxnOp::Range(req)])).await?)? {
            TxnOpResponse::Range(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Writes one key. The default runs a one-op transaction.
    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        match single_op(self.txn(Txn::new().and_then([TxnOp::Put(req)])).await?)? {
            TxnOpResponse::Put(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes keys. The default runs a one-op transaction.
    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        match single_op(self.txn(Txn::new().and_then([TxnOp::Delete(req)])).await?)? {
            TxnOpResponse::Delete(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Grants a lease of `ttl` seconds, with the given id or (`None`) one the store picks.
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant>;

    /// Revokes a lease, deleting its keys. [`Error::LeaseNotFound`] when it does not exist.
    async fn lease_revoke(&self, id: LeaseId) -> Result<()>;

    /// Renews a lease once; returns the TTL now left, in seconds.
    /// [`Error::LeaseNotFound`] when the lease is gone.
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64>;

    /// What the store knows of a lease; [`Error::LeaseNotFound`] when it is gone.
    async fn lease_time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseTimeToLive>;

    /// Every live lease (for leak checks and tools).
    async fn lease_list(&self) -> Result<Vec<LeaseId>>;

    /// Opens a watch. Returns once the watch is registered (see the contract).
    async fn watch(&self, req: WatchRequest) -> Result<WatchStream>;

    /// Drops history below `revision`; later reads and watches of revisions below it give
    /// [`Error::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The bounds this store enforces.
    fn limits(&self) -> BackendLimits {
        BackendLimits::default()
    }
}

fn single_op(resp: TxnResponse) -> Result<TxnOpResponse> {
    resp.responses
        .into_iter()
        .next()
        .ok_or_else(|| Error::Backend {
            source: "transaction returned no response".into(),
        })
}

fn unexpected(resp: TxnOpResponse) -> Error {
    Error::Backend {
        source: format!("transaction returned the wrong kind of response: {resp:?}").into(),
    }
}

macro_rules! forward_backend {
    ($ptr:ident) => {
        #[async_trait]
        impl<T: Backend + ?Sized> Backend for $ptr<T> {
            async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
                (**self).txn(txn).await
            }
            async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
                (**self).range(req).await
            }
            async fn put(&self, req: PutRequest) -> Result<PutResponse> {
                (**self).put(req).await
            }
            async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
                (**self).delete(req).await
            }
            async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
                (**self).lease_grant(ttl, id).await
            }
            async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
                (**self).lease_revoke(id).await
            }
            async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
                (**self).lease_keep_alive(id).await
            }
            async fn lease_time_to_live(
                &self,
                id: LeaseId,
                with_keys: bool,
            ) -> Result<LeaseTimeToLive> {
                (**self).lease_time_to_live(id, with_keys).await
            }
            async fn lease_list(&self) -> Result<Vec<LeaseId>> {
                (**self).lease_list().await
            }
            async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
                (**self).watch(req).await
            }
            async fn compact(&self, revision: Revision) -> Result<()> {
                (**self).compact(revision).await
            }
            fn limits(&self) -> BackendLimits {
                (**self).limits()
            }
        }
    };
}

forward_backend!(Arc);
forward_backend!(Box);
