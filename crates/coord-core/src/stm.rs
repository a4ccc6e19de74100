//! Software transactional memory over the store, with the semantics of etcd's Go
//! `concurrency.STM` (`clientv3/concurrency/stm.go`).
//!
//! [`run`] calls a closure with an [`Stm`] handle. The closure reads keys ([`Stm::get`],
//! [`Stm::rev`]) and buffers writes ([`Stm::put`], [`Stm::delete`]); when it returns `Ok`, the
//! writes are committed as **one transaction** guarded by the compares of the chosen
//! [`Isolation`]. When a compare fails (a concurrent writer changed what the attempt depends
//! on), the closure runs again on a fresh attempt; when it returns `Err`, nothing is written
//! and the error is returned at once.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> coord::Result<()> {
//! use coord::stm::{self, Isolation};
//! use coord::{mem::MemStore, Backend, DynBackend, Error, PutRequest, Result};
//!
//! /// Moves 10 from `a` to `b`, or fails with "insufficient funds" writing nothing.
//! async fn transfer(store: &DynBackend) -> Result<()> {
//!     stm::run(store, Isolation::SerializableSnapshot, |tx| async move {
//!         let from = balance(tx.get("acct/a").await?);
//!         let to = balance(tx.get("acct/b").await?);
//!         if from < 10 {
//!             return Err(Error::invalid("insufficient funds")); // aborts, no retry
//!         }
//!         tx.put("acct/a", (from - 10).to_string()).await?;
//!         tx.put("acct/b", (to + 10).to_string()).await?;
//!         Ok(())
//!     })
//!     .await?;
//!     Ok(())
//! }
//!
//! fn balance(value: Option<Vec<u8>>) -> i64 {
//!     value.and_then(|v| String::from_utf8(v).ok()?.parse().ok()).unwrap_or(0)
//! }
//!
//! let store: DynBackend = std::sync::Arc::new(MemStore::new());
//! store.put(PutRequest::new("acct/a", "15")).await?;
//! transfer(&store).await?; // a: 5, b: 10
//! assert!(matches!(transfer(&store).await, Err(Error::InvalidArgument { .. })));
//! let a = store.range(coord::RangeRequest::key("acct/a")).await?;
//! assert_eq!(a.kvs[0].value, b"5"); // the refused transfer wrote nothing
//! # Ok(())
//! # }
//! ```
//!
//! # Isolation levels (Go's)
//!
//! Every level caches reads per attempt (a key read twice gives the same answer) and reads
//! the attempt's own buffered writes.
//!
//! | level | reads | commit compares |
//! |---|---|---|
//! | [`SerializableSnapshot`](Isolation::SerializableSnapshot) (default) | one snapshot: the first read's revision | every read key unchanged; every written key not modified after the snapshot |
//! | [`Serializable`](Isolation::Serializable) | one snapshot | every read key unchanged |
//! | [`RepeatableReads`](Isolation::RepeatableReads) | current, each at its own revision | every read key unchanged |
//! | [`ReadCommitted`](Isolation::ReadCommitted) | current | none |
//!
//! So `RepeatableReads` may show an attempt an inconsistent view (a transfer half done) that
//! its commit then rejects; the two serializable levels never do. `Serializable` commits a
//! blind write (a key written, never read) over a concurrent change; `SerializableSnapshot`
//! retries instead. `ReadCommitted` commits whatever changed after its reads.
//! The serializable levels also use Go's shortcut: a failed commit reads every key of the read
//! set in the same transaction, and the next attempt starts from those values.
//!
//! # Snapshots on a backend without past reads
//!
//! The snapshot levels read later keys at the first read's revision, which needs
//! [`Capability::PastRevisionReads`]. A backend without it keeps the same guarantee another
//! way: each later read is a transaction that also checks that every key read so far is
//! unchanged, so every value the attempt sees holds at the revision of its latest read; when
//! one changed, the read answers [`Error::Conflict`] and the attempt is retried. (A snapshot
//! read that finds its revision compacted is retried the same way.)
//!
//! # Retries and errors
//!
//! An attempt that conflicts is retried at most [`StmOptions::max_attempts`] times in all
//! ([`DEFAULT_MAX_ATTEMPTS`]), then [`run`] fails with [`Error::Conflict`]. The closure's own
//! error type `E` only needs `From<Error>`: errors of the store (and an exhausted retry budget)
//! come back as `E`, so `coord::Error`, `anyhow::Error` or an application error all work. An
//! operation of an attempt already known to conflict answers [`Error::Conflict`]; return it
//! (`?`) and the attempt is retried, whatever the closure returns after it.
//!
//! # Cancel safety
//!
//! [`run`] is cancel safe: dropping it before the commit was sent writes nothing; dropping it
//! while the commit is in flight leaves it applied whole or not at all. Wrap it in
//! [`tokio::time::timeout`] for a deadline.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Mutex as AsyncMutex;

use crate::backend::{Capability, DynBackend};
use crate::error::{Error, Result};
use crate::into_backend::IntoBackend;
use crate::kv::{DeleteRequest, KeyValue, LeaseId, PutRequest, RangeRequest, Revision};
use crate::txn::{Compare, CompareOp, Txn, TxnOp};

/// Attempts [`run`] makes before [`Error::Conflict`], unless told otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 1000;

/// How transactions interfere, as Go's `concurrency.Isolation` (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// Serializable, and a written key changed after the snapshot is a conflict too (Go's
    /// default).
    #[default]
    SerializableSnapshot,
    /// Reads from one snapshot; every read key must be unchanged at commit.
    Serializable,
    /// Reads are current and repeatable; every read key must be unchanged at commit.
    RepeatableReads,
    /// Reads are current; the commit checks nothing.
    ReadCommitted,
}

impl Isolation {
    /// Whether reads come from one snapshot.
    fn is_snapshot(self) -> bool {
        matches!(
            self,
            Isolation::SerializableSnapshot | Isolation::Serializable
        )
    }
}

/// How [`run`] runs a transaction.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StmOptions {
    /// The isolation level.
    pub isolation: Isolation,
    /// Attempts in all before [`Error::Conflict`] (at least 1).
    pub max_attempts: u32,
    /// Keys read together, in one request, at the start of every attempt (Go's
    /// `WithPrefetch`): saves a round trip per key a transaction always reads.
    pub prefetch: Vec<Vec<u8>>,
}

impl Default for StmOptions {
    fn default() -> Self {
        StmOptions {
            isolation: Isolation::default(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            prefetch: Vec::new(),
        }
    }
}

impl StmOptions {
    /// The isolation level.
    #[must_use]
    pub fn with_isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// At most `attempts` attempts (at least 1).
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Keys to read in one request at the start of every attempt.
    #[must_use]
    pub fn with_prefetch<K: Into<Vec<u8>>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.prefetch.extend(keys.into_iter().map(Into::into));
        self
    }
}

impl From<Isolation> for StmOptions {
    fn from(isolation: Isolation) -> Self {
        StmOptions::default().with_isolation(isolation)
    }
}

/// A committed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Committed<T> {
    /// What the closure returned.
    pub value: T,
    /// The store's revision after the commit.
    pub revision: Revision,
    /// How many attempts it took (1: no conflict).
    pub attempts: u32,
}

/// Runs `apply` as a transaction on `store` (a backend or a `&Session`) until it commits, it
/// returns an error, or `options.max_attempts` attempts conflicted. `options` is an
/// [`Isolation`] or [`StmOptions`].
///
/// `apply` gets a fresh [`Stm`] for each attempt and returns a future (`async move { … }`);
/// the future of `run` is `Send` when that future is.
///
/// # Cancel safety
///
/// Cancel safe (see the [module docs](self#cancel-safety)).
pub async fn run<F, Fut, T, E>(
    store: impl IntoBackend,
    options: impl Into<StmOptions>,
    mut apply: F,
) -> std::result::Result<Committed<T>, E>
where
    F: FnMut(Stm) -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
    E: From<Error>,
{
    let options = options.into();
    let backend = store.into_backend();
    let past_reads = backend.capabilities().has(Capability::PastRevisionReads);
    let max_attempts = options.max_attempts.max(1);
    let mut prefetched = HashMap::new();
    for attempt in 1..=max_attempts {
        let stm = Stm {
            backend: backend.clone(),
            isolation: options.isolation,
            past_reads,
            state: Arc::new(AsyncMutex::new(Attempt::new(prefetched))),
        };
        if !options.prefetch.is_empty() {
            stm.prefetch(&options.prefetch).await?;
        }
        let outcome = apply(stm.clone()).await;
        let mut state = stm.state.lock().await;
        state.open = false;
        match outcome {
            Err(e) if !state.conflicted => return Err(e),
            Err(_) => prefetched = HashMap::new(),
            Ok(value) => match stm.commit(&mut state).await? {
                Ok(revision) => {
                    return Ok(Committed {
                        value,
                        revision,
                        attempts: attempt,
                    })
                }
                Err(next) => prefetched = next,
            },
        }
        tracing::trace!(attempt, isolation = ?options.isolation, "stm attempt conflicted; retrying");
    }
    tracing::debug!(max_attempts, "stm gave up: every attempt conflicted");
    Err(Error::Conflict {
        attempts: max_attempts,
    }
    .into())
}

/// One attempt of a transaction: its reads and buffered writes. Cheap to clone (a handle);
/// operations of one attempt run one at a time. Once the attempt ends (its future finished),
/// every operation answers [`Error::InvalidArgument`].
#[derive(Clone)]
pub struct Stm {
    backend: DynBackend,
    isolation: Isolation,
    past_reads: bool,
    state: Arc<AsyncMutex<Attempt>>,
}

impl std::fmt::Debug for Stm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stm")
            .field("isolation", &self.isolation)
            .finish_non_exhaustive()
    }
}

/// A key as an attempt read it.
#[derive(Clone, Debug)]
struct Read {
    kv: Option<KeyValue>,
    /// The revision the read saw the store at.
    revision: Revision,
}

impl Read {
    /// The commit compare "this key is still as read" (Go's `isKeyCurrent`).
    fn unchanged(&self, key: &[u8]) -> Compare {
        let revision = self.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        Compare::mod_revision(key.to_vec(), CompareOp::Equal, revision)
    }
}

/// A buffered write.
#[derive(Clone, Debug)]
enum Write {
    Put(PutRequest),
    Delete,
}

/// The state of one attempt.
struct Attempt {
    /// Whether the closure's future still runs.
    open: bool,
    /// Whether the attempt is known to conflict already (it will be retried).
    conflicted: bool,
    reads: HashMap<Vec<u8>, Read>,
    /// Ordered, so that the commit is the same transaction whatever the map's hashing.
    writes: BTreeMap<Vec<u8>, Write>,
    /// The snapshot revision (snapshot levels): the first read's.
    snapshot: Option<Revision>,
    /// Keys read by the previous attempt's failed commit, used before reading again.
    prefetched: HashMap<Vec<u8>, Read>,
}

impl Attempt {
    fn new(prefetched: HashMap<Vec<u8>, Read>) -> Self {
        Attempt {
            open: true,
            conflicted: false,
            reads: HashMap::new(),
            writes: BTreeMap::new(),
            snapshot: None,
            prefetched,
        }
    }

    fn check_open(&self) -> Result<()> {
        if !self.open {
            return Err(Error::invalid(
                "this STM handle belongs to an attempt that has ended",
            ));
        }
        if self.conflicted {
            return Err(Error::Conflict { attempts: 1 });
        }
        Ok(())
    }

    fn read_compares(&self) -> Vec<Compare> {
        self.reads.iter().map(|(k, r)| r.unchanged(k)).collect()
    }
}

impl Stm {
    /// The isolation level of this transaction.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The value of `key` (`None`: no such key), from this attempt's writes, its reads, or the
    /// store as the isolation level reads it (the key joins the read set).
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        let key = key.into();
        let mut state = self.state.lock().await;
        state.check_open()?;
        if let Some(write) = state.writes.get(&key) {
            return Ok(match write {
                Write::Put(p) => Some(p.value.clone()),
                Write::Delete => None,
            });
        }
        Ok(self.read(&mut state, key).await?.kv.map(|kv| kv.value))
    }

    /// The mod revision of `key` as this attempt reads it (`0`: no such key); the key joins the
    /// read set. Buffered writes are not looked at (as Go's `Rev`).
    pub async fn rev(&self, key: impl Into<Vec<u8>>) -> Result<Revision> {
        let mut state = self.state.lock().await;
        state.check_open()?;
        let read = self.read(&mut state, key.into()).await?;
        Ok(read.kv.map_or(0, |kv| kv.mod_revision))
    }

    /// Buffers a write of `key` (on no lease).
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<()> {
        self.put_request(PutRequest::new(key, value)).await
    }

    /// Buffers a write of `key` attached to `lease`.
    pub async fn put_with_lease(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Result<()> {
        self.put_request(PutRequest::new(key, value).with_lease(lease))
            .await
    }

    async fn put_request(&self, put: PutRequest) -> Result<()> {
        let mut state = self.state.lock().await;
        state.check_open()?;
        state.writes.insert(put.key.clone(), Write::Put(put));
        Ok(())
    }

    /// Buffers a delete of `key`.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<()> {
        let mut state = self.state.lock().await;
        state.check_open()?;
        state.writes.insert(key.into(), Write::Delete);
        Ok(())
    }

    /// Reads `key` through the read set, as the level reads.
    async fn read(&self, state: &mut Attempt, key: Vec<u8>) -> Result<Read> {
        if let Some(read) = state.reads.get(&key) {
            return Ok(read.clone());
        }
        if let Some(read) = state.prefetched.remove(&key) {
            state.snapshot.get_or_insert(read.revision);
            state.reads.insert(key, read.clone());
            return Ok(read);
        }
        let read = match (self.isolation.is_snapshot(), state.snapshot) {
            (true, Some(snapshot)) if self.past_reads => {
                let req = RangeRequest::key(key.clone()).with_revision(snapshot);
                match self.backend.range(req).await {
                    Ok(resp) => Read {
                        kv: resp.kvs.into_iter().next(),
                        revision: snapshot,
                    },
                    // The snapshot is gone: start again from a newer one.
                    Err(Error::Compacted { .. }) => return Err(conflict(state)),
                    Err(e) => return Err(e),
                }
            }
            (true, Some(_)) => {
                let txn = Txn::new()
                    .when(state.read_compares())
                    .and_then([TxnOp::Range(RangeRequest::key(key.clone()))]);
                let resp = self.backend.txn(txn).await?;
                if !resp.succeeded {
                    return Err(conflict(state));
                }
                Read {
                    kv: resp.range(0)?.kvs.first().cloned(),
                    revision: resp.header_revision,
                }
            }
            _ => {
                let resp = self.backend.range(RangeRequest::key(key.clone())).await?;
                Read {
                    kv: resp.kvs.into_iter().next(),
                    revision: resp.header_revision,
                }
            }
        };
        if self.isolation.is_snapshot() {
            state.snapshot.get_or_insert(read.revision);
        }
        state.reads.insert(key, read.clone());
        Ok(read)
    }

    /// Reads `keys` in one request as the attempt's first reads (keys the previous attempt's
    /// failed commit read already are taken from there, when it has them all).
    async fn prefetch(&self, keys: &[Vec<u8>]) -> Result<()> {
        let mut state = self.state.lock().await;
        if keys.iter().all(|k| state.prefetched.contains_key(k)) {
            return Ok(());
        }
        state.prefetched.clear();
        let ops = keys
            .iter()
            .map(|k| TxnOp::Range(RangeRequest::key(k.clone())));
        let resp = self.backend.txn(Txn::new().and_then(ops)).await?;
        for (i, key) in keys.iter().enumerate() {
            let read = Read {
                kv: resp.range(i)?.kvs.first().cloned(),
                revision: resp.header_revision,
            };
            if self.isolation.is_snapshot() {
                state.snapshot.get_or_insert(read.revision);
            }
            state.reads.insert(key.clone(), read);
        }
        Ok(())
    }

    /// Commits the attempt: `Ok(revision)`, or `Err(prefetched)` when a compare failed (with the
    /// read set as the store has it now, for the snapshot levels' next attempt).
    async fn commit(
        &self,
        state: &mut Attempt,
    ) -> Result<std::result::Result<Revision, HashMap<Vec<u8>, Read>>> {
        if state.conflicted {
            return Ok(Err(HashMap::new()));
        }
        let mut compares = Vec::new();
        if self.isolation != Isolation::ReadCommitted {
            compares = state.read_compares();
        }
        if let (Isolation::SerializableSnapshot, Some(snapshot)) = (self.isolation, state.snapshot)
        {
            compares.extend(
                state
                    .writes
                    .keys()
                    .map(|k| Compare::mod_revision(k.clone(), CompareOp::Less, snapshot + 1)),
            );
        }
        let writes = state.writes.iter().map(|(key, write)| match write {
            Write::Put(put) => TxnOp::Put(put.clone()),
            Write::Delete => TxnOp::Delete(DeleteRequest::key(key.clone())),
        });
        let mut txn = Txn::new().when(compares).and_then(writes);
        // Go's shortcut: a failed commit reads the read set for the next attempt.
        let read_keys: Vec<Vec<u8>> = if self.isolation.is_snapshot() {
            state.reads.keys().cloned().collect()
        } else {
            Vec::new()
        };
        txn = txn.or_else(
            read_keys
                .iter()
                .map(|k| TxnOp::Range(RangeRequest::key(k.clone()))),
        );
        self.backend.limits().check_txn(&txn, "the STM commit")?;
        let resp = self.backend.txn(txn).await?;
        if resp.succeeded {
            return Ok(Ok(resp.header_revision));
        }
        let mut next = HashMap::with_capacity(read_keys.len());
        for (i, key) in read_keys.into_iter().enumerate() {
            let read = Read {
                kv: resp.range(i)?.kvs.first().cloned(),
                revision: resp.header_revision,
            };
            next.insert(key, read);
        }
        Ok(Err(next))
    }
}

/// Marks the attempt as conflicting and gives the error its operation answers.
fn conflict(state: &mut Attempt) -> Error {
    state.conflicted = true;
    Error::Conflict { attempts: 1 }
}
