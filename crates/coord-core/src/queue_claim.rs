//! What [`Queue`](crate::Queue) and [`PriorityQueue`](crate::PriorityQueue) share: taking the
//! first element under a prefix, so that each element goes to exactly one consumer and none is
//! lost, also when a consumer gives up mid-call.
//!
//! An element is a key under the queue's prefix; the first is the oldest (by create revision,
//! the FIFO queue) or the smallest key (the priority queue). A consumer reads the first few
//! keys (without values) and claims them in order: a claim is one transaction that deletes the
//! key if it is still the one read (same create revision) and returns its value (`prev_kv`),
//! so an element is removed only by the transaction that hands it out. Two consumers claiming
//! one key: one delete wins, the other moves to the next key.
//!
//! The claim runs in a task of its own. If the consumer's future is dropped while the claim is
//! in flight, the element it took is written back (same key, same value) instead of being lost;
//! on a FIFO queue it is then behind the elements enqueued meanwhile. If a producer took the
//! key meanwhile (a priority queue's producer reuses the sequence number of a priority emptied
//! by the claim), the element is enqueued again instead.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;

use crate::backend::DynBackend;
use crate::barrier::{rewatch, REWATCH_PAUSE};
use crate::error::{Error, Result};
use crate::fifo_queue::enqueue_unique;
use crate::kv::{DeleteRequest, KeyRange, KeyValue, PutRequest, RangeRequest, Revision};
use crate::kv::{SortOrder, SortTarget};
use crate::priority_queue::bookkeeping_key;
use crate::recipe_keys::create_txn;
use crate::txn::{Compare, CompareOp, Txn, TxnOp};
use crate::watch::{WatchRequest, WatchStream};

/// How many keys a consumer reads at once: the next ones to try when others take the first.
const READ_AHEAD: i64 = 8;

/// Which element is first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// The oldest key (Go's `Queue`: `WithFirstRev`).
    Created,
    /// The smallest key (Go's `PriorityQueue`: `WithFirstKey`).
    Key,
}

/// The elements under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Elements {
    pub backend: DynBackend,
    /// `name/`.
    pub prefix: Vec<u8>,
    pub order: Order,
}

/// What one pass over the head of the queue found.
enum Pass {
    Took(Vec<u8>),
    /// Nothing to take at this revision.
    Empty(Revision),
}

impl Elements {
    fn head(&self) -> RangeRequest {
        let read = RangeRequest::prefix(self.prefix.clone())
            .with_keys_only()
            .with_limit(READ_AHEAD);
        match self.order {
            Order::Created => read.with_sort(SortTarget::Create, SortOrder::Ascend),
            // Unsorted reads come in key order (the required level).
            Order::Key => read,
        }
    }

    /// Reads the head and claims its keys in order until one is taken; reads again when others
    /// took them all. `Empty` only when a read found no element.
    async fn pass(&self) -> Result<Pass> {
        loop {
            let head = self.backend.range(self.head()).await?;
            if head.kvs.is_empty() {
                return Ok(Pass::Empty(head.header_revision));
            }
            for kv in head.kvs {
                if let Some(value) = self.claim(kv).await? {
                    return Ok(Pass::Took(value));
                }
            }
        }
    }

    /// Takes the first element if there is one.
    pub(crate) async fn try_take(&self) -> Result<Option<Vec<u8>>> {
        Ok(match self.pass().await? {
            Pass::Took(value) => Some(value),
            Pass::Empty(_) => None,
        })
    }

    /// Takes the first element, waiting for one when the queue is empty: a watch of the
    /// prefix's puts, registered before the read that found it empty, wakes it on each new
    /// element, and it tries again.
    pub(crate) async fn take(&self) -> Result<Vec<u8>> {
        if let Pass::Took(value) = self.pass().await? {
            return Ok(value);
        }
        let mut puts: Option<WatchStream> = None;
        loop {
            if puts.is_none() {
                let req = WatchRequest::new(KeyRange::prefix(self.prefix.clone())).with_no_delete();
                puts = Some(self.backend.watch(req).await?);
            }
            let empty_at = match self.pass().await? {
                Pass::Took(value) => return Ok(value),
                Pass::Empty(revision) => revision,
            };
            let watch = puts.as_mut().expect("opened above");
            loop {
                match watch.next().await {
                    // A new key after the empty read: try again.
                    Some(Ok(e)) if e.revision() > empty_at => break,
                    Some(Ok(_)) => {}
                    Some(Err(e)) if !rewatch(&e) => return Err(e),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "queue watch broke; watching again");
                        puts = None;
                        tokio::time::sleep(REWATCH_PAUSE).await;
                        break;
                    }
                    None => {
                        puts = None;
                        break;
                    }
                }
            }
        }
    }

    /// Claims `kv`: deletes it if it is still the element read, and returns its value
    /// (`None`: someone else took it). The transaction runs in its own task, so that its
    /// outcome is never dropped: if this future is, a taken element is written back.
    async fn claim(&self, kv: KeyValue) -> Result<Option<Vec<u8>>> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                kv.key.clone(),
                CompareOp::Equal,
                kv.create_revision,
            )])
            .and_then([TxnOp::Delete(
                DeleteRequest::key(kv.key.clone()).with_prev_kv(),
            )]);
        let (sender, receiver) = oneshot::channel();
        let elements = self.clone();
        let key = kv.key;
        let task_key = key.clone();
        tokio::spawn(async move {
            let taken = elements.backend.txn(txn).await.map(|resp| {
                let deleted = resp.responses.into_iter().next();
                match deleted {
                    Some(crate::txn::TxnOpResponse::Delete(d)) if resp.succeeded => {
                        d.prev_kvs.into_iter().next().map(|kv| kv.value)
                    }
                    _ => None,
                }
            });
            if let Err(Ok(Some(value))) = sender.send(taken) {
                // The consumer gave up before the claim answered.
                put_back(elements, task_key, value).await;
            }
        });
        let mut claim = Claim {
            receiver,
            elements: self.clone(),
            key,
        };
        match (&mut claim.receiver).await {
            Ok(taken) => taken,
            Err(_) => Err(Error::Backend {
                source: "the claim task ended without an answer".into(),
            }),
        }
    }
}

/// The consumer's end of a claim in flight. Dropped before the answer was read (the consumer's
/// future was dropped just as the claim answered), it writes a taken element back.
struct Claim {
    receiver: oneshot::Receiver<Result<Option<Vec<u8>>>>,
    elements: Elements,
    key: Vec<u8>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // After this, the task's send fails (and the task writes back) unless it was done.
        self.receiver.close();
        if let Ok(Ok(Some(value))) = self.receiver.try_recv() {
            let elements = self.elements.clone();
            let key = std::mem::take(&mut self.key);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(put_back(elements, key, value));
            } else {
                tracing::error!(
                    key = %String::from_utf8_lossy(&key),
                    "a dequeued element was dropped outside a runtime and cannot be written back"
                );
            }
        }
    }
}

/// Writes a taken element back, retrying while the store is unreachable: under its own key
/// if that is free, else (a producer took the key meanwhile) enqueued anew, behind the
/// elements of its place.
///
/// On a priority queue the write also updates the bookkeeping key of the element's priority,
/// as a producer's does: a producer of that priority that read its keys while the element was
/// out fails its guarded write and reads again, instead of overwriting the element with the
/// same sequence number.
async fn put_back(elements: Elements, key: Vec<u8>, value: Vec<u8>) {
    let mut backoff = Duration::from_millis(20);
    // Whether an earlier attempt failed without an answer (it may have written).
    let mut unanswered = false;
    loop {
        match write_back(&elements, &key, &value, unanswered).await {
            Ok(at) => {
                tracing::debug!(
                    key = %String::from_utf8_lossy(&key),
                    own_key = at,
                    "element of a cancelled dequeue written back"
                );
                return;
            }
            Err(e) if e.is_retryable() => {
                unanswered = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                tracing::error!(
                    key = %String::from_utf8_lossy(&key),
                    error = %e,
                    "could not write back the element of a cancelled dequeue"
                );
                return;
            }
        }
    }
}

/// One attempt of [`put_back`]: `true` when the element is back under its own key, `false`
/// when it was enqueued anew. After an `unanswered` attempt, a key holding the element's value
/// is taken for that attempt's write (not enqueued a second time).
async fn write_back(
    elements: &Elements,
    key: &[u8],
    value: &[u8],
    unanswered: bool,
) -> Result<bool> {
    let priority = match elements.order {
        Order::Created => None,
        Order::Key => crate::priority_queue::priority_of(elements, key),
    };
    let bookkeeping =
        priority.map(|p| TxnOp::Put(PutRequest::new(bookkeeping_key(elements, p), Vec::new())));
    let own = create_txn(key, value, 0, bookkeeping)
        .or_else([TxnOp::Range(RangeRequest::key(key.to_vec()))]);
    let resp = elements.backend.txn(own).await?;
    if resp.succeeded {
        return Ok(true);
    }
    if unanswered
        && resp
            .range(0)?
            .kvs
            .first()
            .is_some_and(|kv| kv.value == value)
    {
        return Ok(true);
    }
    match (elements.order, priority) {
        (Order::Created, _) => enqueue_unique(elements, &elements.prefix, value).await?,
        (Order::Key, Some(p)) => crate::priority_queue::enqueue(elements, value, p).await?,
        (Order::Key, None) => {
            return Err(Error::Backend {
                source: "its key, not `<priority>/<number>`, was taken meanwhile".into(),
            })
        }
    }
    Ok(false)
}
