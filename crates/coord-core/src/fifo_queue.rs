//! Queue: a distributed FIFO queue, laid out as etcd's Go `recipes.Queue`.

use std::time::Duration;

use crate::backend::Backend;
use crate::barrier::into_dyn;
use crate::error::{Error, Result};
use crate::names::name_prefix;
use crate::queue_claim::{Elements, Order};
use crate::recipe_keys::{create_txn, unique_key};

/// A multi-producer, multi-consumer FIFO queue of byte strings.
///
/// Layout (Go's `recipes.Queue`), so Go and Rust processes share one queue on one etcd: each
/// element is a key `name/<unix nanos>` holding the element, on **no lease**: elements are
/// persistent, they stay in the store until dequeued, whatever becomes of the producer (as in
/// Go). The first element is the oldest key by create revision.
///
/// Each element is handed to exactly one consumer: a dequeue deletes it in the same transaction
/// that returns it (see [`Queue::dequeue`] for cancellation). FIFO: an element enqueued after
/// another completed is dequeued after it; with several consumers, elements are taken in that
/// order, and delivered as the consumers' calls return.
///
/// Needs no session: it is a handle on the store (`Clone`, cheap).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use coord::{mem::MemStore, Queue};
///
/// let jobs = Queue::new(MemStore::new(), "jobs")?;
/// jobs.enqueue("resize 1.png").await?;
/// jobs.enqueue("resize 2.png").await?;
/// assert_eq!(jobs.dequeue().await?, b"resize 1.png"); // oldest first
/// assert_eq!(jobs.try_dequeue().await?.as_deref(), Some(&b"resize 2.png"[..]));
/// assert_eq!(jobs.try_dequeue().await?, None); // empty: dequeue() would wait
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Queue {
    elements: Elements,
}

impl Queue {
    /// The queue named `name` (non-empty bytes, at most
    /// [`MAX_NAME_LEN`](crate::names::MAX_NAME_LEN)); its elements are under `name/`.
    pub fn new(backend: impl Backend, name: impl AsRef<[u8]>) -> Result<Queue> {
        Ok(Queue {
            elements: Elements {
                backend: into_dyn(backend),
                prefix: name_prefix(name.as_ref())?,
                order: Order::Created,
            },
        })
    }

    /// Appends `value`. [`Error::InvalidArgument`] (nothing written) when it is too large for
    /// the store.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes leaves the element enqueued or not (the write
    /// may have been sent), never twice.
    pub async fn enqueue(&self, value: impl AsRef<[u8]>) -> Result<()> {
        enqueue_unique(&self.elements, &self.elements.prefix, value.as_ref()).await
    }

    /// Removes and returns the first element, waiting for one while the queue is empty.
    ///
    /// A store failure is returned as the error (a read or a watch loses nothing; when the
    /// connection fails while a claim is in flight, that claim may still have taken the
    /// element, as with any queue whose acknowledgement is lost).
    ///
    /// Delivery is at most once to the process: the layout shared with Go's recipe has no
    /// acknowledgement, so a process killed after its taking transaction committed and before
    /// the element reached the caller loses that element (cancellation within a process never
    /// does: see below). Pass work that must survive a consumer's crash on through something
    /// the consumer acknowledges, or make its processing idempotent and re-enqueue on failure.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future never loses an element. While it waits it holds
    /// nothing; if it is dropped while the transaction taking an element is in flight, that
    /// element is written back (same key and value) in the background when the transaction
    /// answers; it is then behind the elements enqueued meanwhile. Use
    /// [`Queue::dequeue_timeout`] or [`tokio::time::timeout`] for a deadline.
    pub async fn dequeue(&self) -> Result<Vec<u8>> {
        self.elements.take().await
    }

    /// [`Queue::dequeue`] with a deadline: [`Error::Timeout`] when it passes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Queue::dequeue`].
    pub async fn dequeue_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        tokio::time::timeout(timeout, self.dequeue())
            .await
            .map_err(|_| Error::Timeout)?
    }

    /// Removes and returns the first element, or `None` at once when the queue is empty.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Queue::dequeue`].
    pub async fn try_dequeue(&self) -> Result<Option<Vec<u8>>> {
        self.elements.try_take().await
    }
}

/// Writes `value` under a new unique key `prefix<unix nanos>` (Go's `newUniqueKV`), on no
/// lease; a key taken by another process at the same nanosecond is retried with a new one.
pub(crate) async fn enqueue_unique(elements: &Elements, prefix: &[u8], value: &[u8]) -> Result<()> {
    loop {
        let key = unique_key(prefix);
        let txn = create_txn(&key, value, 0, []);
        elements
            .backend
            .limits()
            .check_txn(&txn, "enqueueing the element")?;
        if elements.backend.txn(txn).await?.succeeded {
            return Ok(());
        }
    }
}
