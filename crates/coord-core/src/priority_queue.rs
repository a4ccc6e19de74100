//! PriorityQueue: a distributed priority queue, laid out as etcd's Go `recipes.PriorityQueue`.

use std::time::Duration;

use crate::backend::{Backend, Capability};
use crate::barrier::into_dyn;
use crate::error::{Error, Result};
use crate::kv::{PutRequest, RangeRequest, SortOrder, SortTarget};
use crate::names::name_prefix;
use crate::queue_claim::{Elements, Order};
use crate::txn::{Compare, CompareOp, Txn, TxnOp};

/// A multi-producer, multi-consumer queue of byte strings ordered by priority: the lowest
/// priority number first, and FIFO among equal priorities.
///
/// Layout (Go's `recipes.PriorityQueue`), so Go and Rust processes share one queue on one etcd:
/// an element of priority `p` is the key `name/<p as %05d>/<sequence as %016d>`, on **no
/// lease** (elements are persistent, as in Go); the first element is the smallest key. The
/// sequence number of each priority is the last one plus one, allocated by a transaction
/// guarded by a bookkeeping key `__name/<p as %05d>` (empty value, no lease), which Go's
/// recipe writes too and which stays in the store: one small key per priority ever used. It
/// must stay: deleting it would let a producer that read an old last key reuse a dequeued
/// sequence number, ahead of elements enqueued before it.
///
/// Each element is handed to exactly one consumer, as with [`Queue`](crate::Queue).
///
/// Needs no session: it is a handle on the store (`Clone`, cheap).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use coord::{mem::MemStore, PriorityQueue};
///
/// let alerts = PriorityQueue::new(MemStore::new(), "alerts")?;
/// alerts.enqueue("disk 80%", 5).await?;
/// alerts.enqueue("node down", 0).await?; // a lower number comes out first
/// alerts.enqueue("disk 90%", 5).await?;
/// assert_eq!(alerts.dequeue().await?, b"node down");
/// assert_eq!(alerts.dequeue().await?, b"disk 80%"); // FIFO within a priority
/// assert_eq!(alerts.dequeue().await?, b"disk 90%");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PriorityQueue {
    elements: Elements,
}

impl PriorityQueue {
    /// The priority queue named `name` (non-empty bytes, at most
    /// [`MAX_NAME_LEN`](crate::names::MAX_NAME_LEN)); its elements are under `name/`.
    pub fn new(backend: impl Backend, name: impl AsRef<[u8]>) -> Result<PriorityQueue> {
        Ok(PriorityQueue {
            elements: Elements {
                backend: into_dyn(backend),
                prefix: name_prefix(name.as_ref())?,
                order: Order::Key,
            },
        })
    }

    /// The bookkeeping key of `priority`: `__name/<priority as %05d>`.
    pub fn bookkeeping_key(&self, priority: u16) -> Vec<u8> {
        bookkeeping_key(&self.elements, priority)
    }

    /// Adds `value` with `priority` (lower numbers are dequeued first).
    /// [`Error::InvalidArgument`] (nothing written) when it is too large for the store.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes leaves the element enqueued or not (the write
    /// may have been sent), never twice.
    pub async fn enqueue(&self, value: impl AsRef<[u8]>, priority: u16) -> Result<()> {
        enqueue(&self.elements, value.as_ref(), priority).await
    }

    /// Removes and returns the first element (lowest priority number, then oldest), waiting for
    /// one while the queue is empty. Store failures as for [`Queue::dequeue`](crate::Queue::dequeue).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future never loses an element; one whose taking transaction
    /// was in flight is written back under its own key (so at its own place) in the
    /// background, or, when a producer of its priority took that key meanwhile, enqueued again
    /// at its priority. Use [`PriorityQueue::dequeue_timeout`] or [`tokio::time::timeout`] for a
    /// deadline.
    pub async fn dequeue(&self) -> Result<Vec<u8>> {
        self.elements.take().await
    }

    /// [`PriorityQueue::dequeue`] with a deadline: [`Error::Timeout`] when it passes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`PriorityQueue::dequeue`].
    pub async fn dequeue_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        tokio::time::timeout(timeout, self.dequeue())
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// Removes and returns the first element, or `None` at once when the queue is empty.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`PriorityQueue::dequeue`].
    pub async fn try_dequeue(&self) -> Result<Option<Vec<u8>>> {
        self.elements.try_take().await
    }
}

/// The bookkeeping key of `priority`: `__name/<priority as %05d>`.
pub(crate) fn bookkeeping_key(elements: &Elements, priority: u16) -> Vec<u8> {
    let mut key = b"__".to_vec();
    key.extend_from_slice(&level(elements, priority));
    key
}

/// `name/<priority as %05d>`.
fn level(elements: &Elements, priority: u16) -> Vec<u8> {
    let mut level = elements.prefix.clone();
    level.extend_from_slice(format!("{priority:05}").as_bytes());
    level
}

/// The priority of the element `key`, `name/<priority as %05d>/<sequence>` (`None` for a key
/// not laid out so).
pub(crate) fn priority_of(elements: &Elements, key: &[u8]) -> Option<u16> {
    let rest = key.strip_prefix(&elements.prefix[..])?;
    let priority = rest.split(|b| *b == b'/').next()?;
    std::str::from_utf8(priority).ok()?.parse().ok()
}

/// [`PriorityQueue::enqueue`] (also the write-back of a claimed element whose key was taken).
pub(crate) async fn enqueue(elements: &Elements, value: &[u8], priority: u16) -> Result<()> {
    let backend = &elements.backend;
    let mut under = level(elements, priority);
    under.push(b'/');
    let base = bookkeeping_key(elements, priority);
    // Size check before anything is sent (the sequence number has a fixed width).
    let sized = sequence_txn(&base, &under, 0, 0, value);
    backend
        .limits()
        .check_txn(&sized, "enqueueing the element")?;
    loop {
        let (read_at, next) = next_sequence(elements, &under).await?;
        let txn = sequence_txn(&base, &under, read_at, next, value);
        if backend.txn(txn).await?.succeeded {
            return Ok(());
        }
        // Another producer of this priority wrote meanwhile: read the last key again.
    }
}

/// Go's `newSequentialKV`: the new key `under<next as %016d>` and the bookkeeping key, if
/// the bookkeeping key was not written after `read_at`.
fn sequence_txn(base: &[u8], under: &[u8], read_at: i64, next: u64, value: &[u8]) -> Txn {
    let mut key = under.to_vec();
    key.extend_from_slice(format!("{next:016}").as_bytes());
    Txn::new()
        .when([Compare::mod_revision(
            base.to_vec(),
            CompareOp::Less,
            read_at + 1,
        )])
        .and_then([
            TxnOp::Put(PutRequest::new(base.to_vec(), Vec::new())),
            TxnOp::Put(PutRequest::new(key, value.to_vec())),
        ])
}

/// The revision of the read, and the sequence number after the last key under `under`
/// (`0` when there is none).
async fn next_sequence(elements: &Elements, under: &[u8]) -> Result<(i64, u64)> {
    let backend = &elements.backend;
    let read = RangeRequest::prefix(under.to_vec()).with_keys_only();
    let read = if backend.capabilities().has(Capability::SortByKeyOrMod) {
        read.with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(1)
    } else {
        // Unsorted reads come in key order: the last key is the last of them all.
        read
    };
    let resp = backend.range(read).await?;
    let next = match resp.kvs.iter().map(|kv| &kv.key).max() {
        None => 0,
        Some(last) => {
            let field = last.rsplit(|b| *b == b'/').next().unwrap_or_default();
            let seq: u64 = std::str::from_utf8(field)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Backend {
                    source: format!(
                        "a key under the priority queue is not `<priority>/<number>`: {:?}",
                        String::from_utf8_lossy(last)
                    )
                    .into(),
                })?;
            seq + 1
        }
    };
    Ok((resp.header_revision, next))
}
