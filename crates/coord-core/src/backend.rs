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
    pub fn check_txn(&self, txn: &Txn, what: impl std::fmt::Display) -> Result<()> {
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

/// An optional part of the [`Backend`] contract, which a backend declares in
/// [`Backend::capabilities`]. A backend without it answers a request that needs it with
/// [`Error::Unsupported`]; the conformance suite runs its scenarios only where it is declared.
/// No primitive of `coord` needs any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// Reads at a past revision ([`RangeRequest::revision`] `!= 0`).
    PastRevisionReads,
    /// Explicit compaction ([`Backend::compact`]).
    Compaction,
    /// Listing every live lease ([`Backend::lease_list`]).
    LeaseList,
    /// Count-only reads ([`RangeRequest::count_only`]).
    CountOnly,
    /// The `max_mod_revision` filter of reads ([`RangeRequest::max_mod_revision`]).
    ModRevisionFilter,
    /// Sorting reads by key or by mod revision (create-revision order is required).
    SortByKeyOrMod,
    /// Compares on a key's version ([`CompareTarget::Version`](crate::CompareTarget)).
    VersionCompares,
    /// Each write transaction raises the revision by exactly one (etcd's), not just by some
    /// amount.
    DenseRevisions,
}

impl Capability {
    /// Every capability, in declaration order.
    pub const ALL: [Capability; 8] = [
        Capability::PastRevisionReads,
        Capability::Compaction,
        Capability::LeaseList,
        Capability::CountOnly,
        Capability::ModRevisionFilter,
        Capability::SortByKeyOrMod,
        Capability::VersionCompares,
        Capability::DenseRevisions,
    ];

    const fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// The set of optional [`Capability`]s a backend has.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u32);

impl Capabilities {
    /// The required level only.
    pub const fn none() -> Self {
        Capabilities(0)
    }

    /// Every capability (etcd's and coord-mem's).
    pub const fn all() -> Self {
        let mut set = Capabilities(0);
        let mut i = 0;
        while i < Capability::ALL.len() {
            set = set.with(Capability::ALL[i]);
            i += 1;
        }
        set
    }

    /// This set and `capability`.
    #[must_use]
    pub const fn with(self, capability: Capability) -> Self {
        Capabilities(self.0 | capability.bit())
    }

    /// Whether `capability` is in the set.
    pub const fn has(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    /// [`Error::Unsupported`] unless `capability` is in the set.
    pub fn require(self, capability: Capability) -> Result<()> {
        if self.has(capability) {
            Ok(())
        } else {
            Err(Error::Unsupported { capability })
        }
    }
}

impl Capabilities {
    /// [`Error::Unsupported`] when the read `req` needs a capability this set lacks (a past
    /// revision, count-only, the `max_mod_revision` filter, a sort by key or mod revision).
    pub fn check_range(self, req: &RangeRequest) -> Result<()> {
        use crate::kv::SortTarget;
        if req.revision != 0 {
            self.require(Capability::PastRevisionReads)?;
        }
        if req.count_only {
            self.require(Capability::CountOnly)?;
        }
        if req.max_mod_revision != 0 {
            self.require(Capability::ModRevisionFilter)?;
        }
        if matches!(req.sort, Some((SortTarget::Key | SortTarget::Mod, _))) {
            self.require(Capability::SortByKeyOrMod)?;
        }
        Ok(())
    }

    /// [`Error::Unsupported`] when the transaction needs a capability this set lacks: in a
    /// compare (version) or in a read of either branch.
    pub fn check_txn(self, txn: &Txn) -> Result<()> {
        if txn
            .compares
            .iter()
            .any(|c| matches!(c.target, crate::txn::CompareTarget::Version(_)))
        {
            self.require(Capability::VersionCompares)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            if let TxnOp::Range(r) = op {
                self.check_range(r)?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(Capability::ALL.iter().filter(|c| self.has(**c)))
            .finish()
    }
}

/// A store that offers key-value with revisions, leases, watches and transactions.
///
/// The contract comes in two levels. The **required level** is what every primitive and recipe
/// of `coord` uses, and what a new backend implements first; the **optional
/// [`Capability`]s** are etcd's extras, declared in [`Backend::capabilities`]. The conformance
/// suite (`coord_core::conformance`) checks the required level on every backend and each
/// capability where it is declared. See [`backend_guide`](crate::backend_guide) for writing a
/// backend.
///
/// # Contract: the required level
///
/// - **Revisions**: one global revision per store, strictly increasing in commit order; every
///   change of a write transaction carries that transaction's one revision, and a revision
///   once observed (in a read, a watch, a fencing token) is never taken by another write. A
///   transaction or delete that changes nothing leaves the revision as it is. (Exactly `+1`
///   per write is [`Capability::DenseRevisions`].)
/// - **Keys** carry `create_revision`, `mod_revision`, `version` (1 on creation, +1 per put,
///   reset when deleted) and `lease`.
/// - **Key ranges** ([`KeyRange`](crate::KeyRange)) mean their literal set of keys in reads,
///   deletes and watches, in transactions or not: `Range { start, end }` is `[start, end)`, empty
///   when `end <= start`; an empty `end` or `[0]` is no sentinel ("to the end" is `FromKey`).
/// - **Range** reads a key or a range at the current revision, unsorted (key order) or sorted by
///   create revision either way, filtered by `max_create_revision`, cut by `limit` (with
///   `count`, counted before `limit` and the filters as etcd does, and `more`), values left out
///   with `keys_only`; every answer carries the header revision.
/// - **Txn**: compares on create revision, mod revision, value and lease (a missing key compares
///   as revision/lease `0`), then the success or failure ops (put, delete, range), atomically at
///   one revision. Reads and transactions are linearizable, also a transaction with compares
///   only (an ownership check): it sees every write acknowledged before it was sent.
/// - **Leases**: grant with a TTL in seconds, keep-alive (resets the TTL), revoke,
///   time-to-live. Expiry or revoke deletes every attached key in one revision, and watchers see
///   the deletes. An unknown or expired lease is [`Error::LeaseNotFound`], also when a put names
///   it; a lease expires on the store's clock.
/// - **Watch** a range from a start revision: every event with revision >= start, in order, none
///   missed, none repeated. When [`Backend::watch`] returns, the watch is registered: with start
///   `0` every change after that moment is delivered (on a cluster, a member that lags may also
///   deliver changes from just before it). A start revision below the retained history
///   yields [`Error::Compacted`], never silence: either from `watch` itself or as the
///   stream's first item (etcd confirms the watch, then cancels it), so callers handle both.
///   A broken watch ends its stream with an error; it never stops silently. The events of one
///   revision are delivered together: once the first is yielded, the rest are ready without
///   waiting (etcd sends a revision in one response), so a reader can take a revision whole.
/// - **Errors** are mapped by meaning into [`Error`]; the backend's own error is kept as source.
///
/// # Optional capabilities
///
/// Reads at a past revision, explicit compaction, lease listing, count-only reads, the
/// `max_mod_revision` filter, sorting by key or mod revision, version compares and dense
/// revisions: see [`Capability`]. A backend without one returns [`Error::Unsupported`] when a
/// request needs it ([`Backend::lease_list`] and [`Backend::compact`] do so by default).
///
/// # Wrapping a backend
///
/// A decorator (namespacing, counting, fault injection) implements [`Decorator`] instead: its
/// inner backend, and only the methods it changes.
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

    /// Every live lease (for leak checks and tools): [`Capability::LeaseList`]. The default
    /// answers [`Error::Unsupported`].
    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        Err(Error::Unsupported {
            capability: Capability::LeaseList,
        })
    }

    /// Opens a watch. Returns once the watch is registered (see the contract).
    async fn watch(&self, req: WatchRequest) -> Result<WatchStream>;

    /// Drops history below `revision`; later reads and watches of revisions below it give
    /// [`Error::Compacted`]: [`Capability::Compaction`]. The default answers
    /// [`Error::Unsupported`].
    async fn compact(&self, revision: Revision) -> Result<()> {
        let _ = revision;
        Err(Error::Unsupported {
            capability: Capability::Compaction,
        })
    }

    /// The bounds this store enforces.
    fn limits(&self) -> BackendLimits {
        BackendLimits::default()
    }

    /// The optional capabilities this store has (default: none, the required level only).
    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }
}

/// A backend that wraps another and changes some of its calls: namespacing, counting, fault
/// injection, tracing. Implement [`Decorator::inner`] and the methods that differ; every other
/// method forwards to the inner backend, and every `Decorator` is a [`Backend`].
///
/// ```
/// use coord_core::{Backend, Decorator, Result, Txn, TxnResponse};
///
/// /// Logs every transaction, forwards the rest.
/// #[derive(Debug)]
/// struct Logged<B>(B);
///
/// #[async_trait::async_trait]
/// impl<B: Backend> Decorator for Logged<B> {
///     type Inner = B;
///     fn inner(&self) -> &B {
///         &self.0
///     }
///     async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
///         println!("txn with {} compares", txn.compares.len());
///         self.0.txn(txn).await
///     }
/// }
///
/// /// Every `Decorator` is a `Backend`.
/// fn logged(store: impl Backend) -> impl Backend {
///     Logged(store)
/// }
/// ```
#[async_trait]
pub trait Decorator: Debug + Send + Sync + 'static {
    /// The wrapped backend.
    type Inner: Backend + ?Sized;

    /// The wrapped backend.
    fn inner(&self) -> &Self::Inner;

    /// See [`Backend::txn`].
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.inner().txn(txn).await
    }
    /// See [`Backend::range`].
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.inner().range(req).await
    }
    /// See [`Backend::put`].
    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        self.inner().put(req).await
    }
    /// See [`Backend::delete`].
    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        self.inner().delete(req).await
    }
    /// See [`Backend::lease_grant`].
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.inner().lease_grant(ttl, id).await
    }
    /// See [`Backend::lease_revoke`].
    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.inner().lease_revoke(id).await
    }
    /// See [`Backend::lease_keep_alive`].
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.inner().lease_keep_alive(id).await
    }
    /// See [`Backend::lease_time_to_live`].
    async fn lease_time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseTimeToLive> {
        self.inner().lease_time_to_live(id, with_keys).await
    }
    /// See [`Backend::lease_list`].
    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        self.inner().lease_list().await
    }
    /// See [`Backend::watch`].
    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        self.inner().watch(req).await
    }
    /// See [`Backend::compact`].
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner().compact(revision).await
    }
    /// See [`Backend::limits`].
    fn limits(&self) -> BackendLimits {
        self.inner().limits()
    }
    /// See [`Backend::capabilities`].
    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }
}

#[async_trait]
impl<D: Decorator> Backend for D {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        Decorator::txn(self, txn).await
    }
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        Decorator::range(self, req).await
    }
    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        Decorator::put(self, req).await
    }
    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        Decorator::delete(self, req).await
    }
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        Decorator::lease_grant(self, ttl, id).await
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        Decorator::lease_revoke(self, id).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        Decorator::lease_keep_alive(self, id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseTimeToLive> {
        Decorator::lease_time_to_live(self, id, with_keys).await
    }
    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        Decorator::lease_list(self).await
    }
    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        Decorator::watch(self, req).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        Decorator::compact(self, revision).await
    }
    fn limits(&self) -> BackendLimits {
        Decorator::limits(self)
    }
    fn capabilities(&self) -> Capabilities {
        Decorator::capabilities(self)
    }
}

/// `Arc<B>` and `Box<B>` are their backend.
impl<T: Backend + ?Sized> Decorator for Arc<T> {
    type Inner = T;
    fn inner(&self) -> &T {
        self
    }
}

impl<T: Backend + ?Sized> Decorator for Box<T> {
    type Inner = T;
    fn inner(&self) -> &T {
        self
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
