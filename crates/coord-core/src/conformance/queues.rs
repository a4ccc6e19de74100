//! Queue and PriorityQueue: every element to exactly one consumer, none lost (also when a
//! consumer is cancelled mid-dequeue), FIFO, priority order, Go's key layout.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

use super::support::{
    ensure, ensure_eq, eventually, expect_err, join, scenario, still_waiting, text, Ctx, Failure,
    Outcome,
};
use crate::backend::{Backend, DynBackend};
use crate::error::{Error, Result};
use crate::fifo_queue::Queue;
use crate::kv::DeleteRequest;
use crate::priority_queue::PriorityQueue;
use crate::txn::{Txn, TxnOp, TxnResponse};

fn text_of(value: Result<Vec<u8>>) -> Result<String> {
    value.map(|v| String::from_utf8_lossy(&v).into_owned())
}

scenario!(
    /// Three producers enqueue 20 elements each while three consumers dequeue 20 each, all at
    /// once: every element is delivered exactly once, none is lost, and each consumer gets a
    /// producer's elements in the order they were enqueued. The queue is empty afterwards
    /// (`try_dequeue` is `None`) and no key is left. Go's layout: `name/<unix nanos>`, the
    /// element as value, on no lease.
    queue_producers_consumers,
    Shared,
    queue_producers_consumers_body
);

async fn queue_producers_consumers_body(ctx: &Ctx) -> Outcome {
    const PRODUCERS: usize = 3;
    const CONSUMERS: usize = 3;
    const EACH: usize = 20;
    let queue = Queue::new(ctx.store.clone(), "jobs")?;
    // The layout, with one element first.
    queue.enqueue("first").await?;
    let keys = ctx.keys(b"jobs/").await?;
    ensure!(
        keys.len() == 1
            && keys[0].lease == 0
            && keys[0].value == b"first"
            && keys[0].key[5..].iter().all(u8::is_ascii_digit),
        "an element's key is `jobs/<unix nanos>`, on no lease: {:?}",
        keys.iter().map(|kv| text(&kv.key)).collect::<Vec<_>>()
    );
    ensure_eq!(text_of(queue.dequeue().await)?, "first", "the one element");

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let queue = Queue::new(ctx.store.clone(), "jobs").expect("valid name");
            tokio::spawn(async move {
                for i in 0..EACH {
                    queue.enqueue(format!("{p}:{i}")).await?;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();
    let total = PRODUCERS * EACH;
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let queue = Queue::new(ctx.store.clone(), "jobs").expect("valid name");
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..total / CONSUMERS {
                    got.push(text_of(queue.dequeue().await)?);
                }
                Ok::<_, Error>(got)
            })
        })
        .collect();
    for p in producers {
        join("a producer", p).await??;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for c in consumers {
        let got = join("a consumer", c).await??;
        // Per producer, in the order it enqueued.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for element in &got {
            let (p, i) = element
                .split_once(':')
                .ok_or_else(|| Failure::new(format!("unknown element {element:?}")))?;
            let i: usize = i.parse().map_err(|_| Failure::new("element number"))?;
            if let Some(before) = last.insert(p, i) {
                ensure!(
                    before < i,
                    "a consumer got producer {p}'s element {i} after its element {before}"
                );
            }
            *seen.entry(element.clone()).or_default() += 1;
        }
    }
    ensure_eq!(seen.len(), total, "distinct elements delivered");
    ensure!(
        seen.values().all(|n| *n == 1),
        "an element delivered twice: {:?}",
        seen.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    ensure_eq!(
        queue.try_dequeue().await?,
        None,
        "try_dequeue on the drained queue"
    );
    ensure!(ctx.keys(b"jobs/").await?.is_empty(), "no element left");
    Ok(())
}

scenario!(
    /// One producer, one consumer: elements come out in the order they went in. A `dequeue`
    /// on an empty queue waits, and takes the element enqueued next; `dequeue_timeout` on an
    /// empty queue gives [`Error::Timeout`].
    queue_fifo_single_producer,
    Shared,
    queue_fifo_single_producer_body
);

async fn queue_fifo_single_producer_body(ctx: &Ctx) -> Outcome {
    let queue = Queue::new(ctx.store.clone(), "fifo")?;
    for i in 0..20 {
        queue.enqueue(format!("{i}")).await?;
    }
    for i in 0..20 {
        ensure_eq!(
            text_of(queue.dequeue().await)?,
            format!("{i}"),
            "element {i}"
        );
    }
    let mut waiting = {
        let queue = queue.clone();
        tokio::spawn(async move { text_of(queue.dequeue().await) })
    };
    still_waiting("dequeue on an empty queue", &mut waiting).await?;
    queue.enqueue("late").await?;
    ensure_eq!(
        join("dequeue once an element came", waiting).await??,
        "late",
        "the late element"
    );
    expect_err(
        queue.dequeue_timeout(super::support::SETTLE).await,
        |e| matches!(e, Error::Timeout),
        "dequeue_timeout on an empty queue",
    )?;
    ensure_eq!(
        queue.try_dequeue().await?,
        None,
        "try_dequeue on an empty queue"
    );
    Ok(())
}

/// A store that holds every transaction that deletes something until it is opened, and tells
/// when one arrived: a claim caught in flight.
#[derive(Debug)]
struct Gate {
    inner: DynBackend,
    arrived: Notify,
    open: watch::Sender<bool>,
}

#[async_trait]
impl crate::backend::Decorator for Gate {
    type Inner = dyn Backend;
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        if txn.success.iter().any(|op| matches!(op, TxnOp::Delete(_))) {
            self.arrived.notify_one();
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|open| *open).await;
        }
        Backend::txn(&*self.inner, txn).await
    }
}

scenario!(
    /// A consumer cancelled mid-dequeue loses nothing: dropped while waiting on an empty queue,
    /// it takes nothing, and the next element goes to another consumer; dropped while its
    /// claim of an element is in flight (held at the store until after the drop), the element
    /// is written back and another consumer gets it, once.
    queue_cancelled_consumer,
    Shared,
    queue_cancelled_consumer_body
);

async fn queue_cancelled_consumer_body(ctx: &Ctx) -> Outcome {
    let queue = Queue::new(ctx.store.clone(), "q")?;
    let mut waiting = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.dequeue().await })
    };
    still_waiting("dequeue on an empty queue", &mut waiting).await?;
    waiting.abort();
    let _ = waiting.await;
    queue.enqueue("a").await?;
    ensure_eq!(
        queue.try_dequeue().await?.map(|v| text(&v)),
        Some("a".to_string()),
        "the element after a cancelled waiter"
    );

    // A claim in flight when the consumer is dropped.
    let gate = Arc::new(Gate {
        inner: ctx.store.clone(),
        arrived: Notify::new(),
        open: watch::Sender::new(false),
    });
    let gated = Queue::new(gate.clone(), "q")?;
    queue.enqueue("b").await?;
    let enqueued = ctx.keys(b"q/").await?;
    ensure_eq!(enqueued.len(), 1, "the element b");
    let original = enqueued[0].create_revision;
    let consumer = tokio::spawn(async move { gated.dequeue().await });
    super::support::within(
        super::support::PROMPT,
        "the claim reaches the store",
        gate.arrived.notified(),
    )
    .await?;
    consumer.abort();
    let _ = consumer.await;
    gate.open.send_replace(true);
    // Written back: another consumer gets it, exactly once.
    // Taken by the claim, then written again (a new create revision).
    eventually("the element of the cancelled claim is back", || async {
        Ok(ctx
            .keys(b"q/")
            .await?
            .iter()
            .any(|kv| kv.create_revision > original))
    })
    .await?;
    let got = queue.try_dequeue().await?;
    ensure_eq!(
        got.map(|v| text(&v)),
        Some("b".to_string()),
        "the element written back"
    );
    ensure_eq!(queue.try_dequeue().await?, None, "nothing more");
    Ok(())
}

scenario!(
    /// Lowest priority number first, FIFO within a priority; a waiting `dequeue` takes an
    /// element enqueued later. Go's layout: `name/<priority %05d>/<sequence %016d>` on no
    /// lease, and the bookkeeping key `__name/<priority %05d>`, which stays (Go's recipe
    /// needs it; the scenario deletes it itself).
    priority_queue_order,
    Shared,
    priority_queue_order_body
);

async fn priority_queue_order_body(ctx: &Ctx) -> Outcome {
    let queue = PriorityQueue::new(ctx.store.clone(), "pq")?;
    for (value, priority) in [
        ("a", 5),
        ("b", 1),
        ("c", 5),
        ("d", 0),
        ("e", 1),
        ("f", 65535),
    ] {
        queue.enqueue(value, priority).await?;
    }
    let keys: Vec<String> = ctx
        .keys(b"pq/")
        .await?
        .iter()
        .map(|kv| text(&kv.key))
        .collect();
    ensure_eq!(
        keys,
        vec![
            "pq/00005/0000000000000000",
            "pq/00001/0000000000000000",
            "pq/00005/0000000000000001",
            "pq/00000/0000000000000000",
            "pq/00001/0000000000000001",
            "pq/65535/0000000000000000",
        ],
        "element keys, oldest first"
    );
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(text_of(queue.dequeue().await)?);
    }
    ensure_eq!(order, vec!["d", "b", "e", "a", "c", "f"], "dequeue order");
    // The sequence number follows the last element of its priority (Go's): 0 again once
    // the priority was emptied, the next one while an element is in.
    queue.enqueue("g", 5).await?;
    queue.enqueue("g2", 5).await?;
    ensure_eq!(
        ctx.keys(b"pq/")
            .await?
            .iter()
            .map(|kv| text(&kv.key))
            .collect::<Vec<_>>(),
        vec!["pq/00005/0000000000000000", "pq/00005/0000000000000001"],
        "sequence numbers of an emptied priority"
    );
    ensure_eq!(text_of(queue.dequeue().await)?, "g", "g");
    ensure_eq!(text_of(queue.dequeue().await)?, "g2", "g2");
    let mut waiting = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let first = text_of(queue.dequeue().await)?;
            let second = text_of(queue.dequeue().await)?;
            Ok::<_, Error>((first, second))
        })
    };
    still_waiting("dequeue on an empty priority queue", &mut waiting).await?;
    queue.enqueue("h", 7).await?;
    queue.enqueue("i", 7).await?;
    ensure_eq!(
        join("dequeues once elements came", waiting).await??,
        ("h".to_string(), "i".to_string()),
        "late elements"
    );
    ensure_eq!(
        queue.try_dequeue().await?,
        None,
        "try_dequeue on an empty queue"
    );
    let books: Vec<String> = ctx
        .keys(b"__pq/")
        .await?
        .iter()
        .map(|kv| text(&kv.key))
        .collect();
    let mut books_sorted = books.clone();
    books_sorted.sort();
    ensure_eq!(
        books_sorted,
        vec![
            "__pq/00000",
            "__pq/00001",
            "__pq/00005",
            "__pq/00007",
            "__pq/65535"
        ],
        "bookkeeping keys, one per priority used"
    );
    ensure_eq!(
        queue.bookkeeping_key(7),
        b"__pq/00007".to_vec(),
        "bookkeeping_key"
    );
    ctx.store.delete(DeleteRequest::prefix("__pq/")).await?;
    Ok(())
}

scenario!(
    /// Bad input gets a typed error and writes nothing: empty and over-long names of every
    /// recipe, a double barrier for 0 participants, elements too large for the store.
    recipes_reject_bad_input,
    Shared,
    recipes_reject_bad_input_body
);

async fn recipes_reject_bad_input_body(ctx: &Ctx) -> Outcome {
    let invalid = |e: &Error| matches!(e, Error::InvalidArgument { .. });
    let long = vec![b'n'; crate::names::MAX_NAME_LEN + 1];
    let session = ctx.session().await?;
    for name in [&b""[..], &long[..]] {
        expect_err(Queue::new(ctx.store.clone(), name), invalid, "Queue name")?;
        expect_err(
            PriorityQueue::new(ctx.store.clone(), name),
            invalid,
            "PriorityQueue name",
        )?;
        expect_err(
            crate::Barrier::new(ctx.store.clone(), name),
            invalid,
            "Barrier name",
        )?;
        expect_err(
            crate::DoubleBarrier::new(&session, name, 2),
            invalid,
            "DoubleBarrier name",
        )?;
    }
    expect_err(
        crate::DoubleBarrier::new(&session, "db", 0),
        invalid,
        "0 participants",
    )?;
    let huge = vec![0u8; ctx.store.limits().max_request_bytes + 1];
    let queue = Queue::new(ctx.store.clone(), "q")?;
    expect_err(
        queue.enqueue(&huge).await,
        invalid,
        "an element over the store's limit",
    )?;
    let pq = PriorityQueue::new(ctx.store.clone(), "pq")?;
    expect_err(
        pq.enqueue(&huge, 3).await,
        invalid,
        "a priority element over the limit",
    )?;
    ensure!(ctx.keys(b"").await?.is_empty(), "nothing written");
    Ok(())
}
