//! Queue and PriorityQueue: every element to exactly one consumer, none lost (also when a
//! consumer is cancelled mid-dequeue or its session closed, at random moments), FIFO, priority
//! order, Go's key layout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::support::{
    ensure, ensure_eq, eventually, expect_err, join, scenario, still_waiting, text, within, Ctx,
    Failure, Outcome, PROMPT,
};
use crate::backend::{Backend, DynBackend};
use crate::error::{Error, Result};
use crate::fifo_queue::Queue;
use crate::kv::DeleteRequest;
use crate::priority_queue::PriorityQueue;
use crate::session::{lock_unpoisoned, Session};
use crate::txn::{CompareTarget, Txn, TxnOp, TxnResponse};

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
        in_order_per_source(&got)?;
        for element in &got {
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

/// A store that holds every transaction `holds` picks until it is opened, and tells when one
/// arrived: a claim (or the write-back of a claimed element) caught in flight.
#[derive(Debug)]
struct Gate {
    inner: DynBackend,
    holds: fn(&Txn) -> bool,
    arrived: Notify,
    open: watch::Sender<bool>,
}

impl Gate {
    /// A closed gate in front of `inner`.
    fn new(inner: DynBackend, holds: fn(&Txn) -> bool) -> Arc<Gate> {
        Arc::new(Gate {
            inner,
            holds,
            arrived: Notify::new(),
            open: watch::Sender::new(false),
        })
    }

    /// Waits until a transaction it holds arrived.
    #[track_caller]
    fn arrived<'a>(&'a self, what: &'a str) -> impl std::future::Future<Output = Outcome> + 'a {
        super::support::within(super::support::PROMPT, what, self.arrived.notified())
    }

    /// Lets every held transaction (and every later one) through.
    fn open(&self) {
        self.open.send_replace(true);
    }
}

/// A consumer's claim: a transaction that deletes the element.
fn is_claim(txn: &Txn) -> bool {
    txn.success.iter().any(|op| matches!(op, TxnOp::Delete(_)))
}

/// The write-back of a claimed element: a write of a key only if it is absent.
fn is_write_back(txn: &Txn) -> bool {
    txn.compares
        .iter()
        .any(|c| c.target == CompareTarget::CreateRevision(0))
}

/// A priority-queue producer's write: guarded by its bookkeeping key's mod revision.
fn is_sequenced_put(txn: &Txn) -> bool {
    txn.compares
        .iter()
        .any(|c| matches!(c.target, CompareTarget::ModRevision(_)))
}

#[async_trait]
impl crate::backend::Decorator for Gate {
    type Inner = dyn Backend;
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        if (self.holds)(&txn) {
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
    let gate = Gate::new(ctx.store.clone(), is_claim);
    let gated = Queue::new(gate.clone(), "q")?;
    queue.enqueue("b").await?;
    let enqueued = ctx.keys(b"q/").await?;
    ensure_eq!(enqueued.len(), 1, "the element b");
    let original = enqueued[0].create_revision;
    let consumer = tokio::spawn(async move { gated.dequeue().await });
    gate.arrived("the claim reaches the store").await?;
    consumer.abort();
    let _ = consumer.await;
    gate.open();
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

/// A store that delays each claim (a transaction that deletes) by a random moment of up to
/// 2 ms before it is sent and up to 2 ms after it answered: a consumer cancelled at a random
/// moment often has its claim in flight, before or after the store took the element.
#[derive(Debug)]
struct Jitter {
    inner: DynBackend,
}

fn jitter_pause() -> Duration {
    Duration::from_micros(rand::random::<u64>() % 2_000)
}

#[async_trait]
impl crate::backend::Decorator for Jitter {
    type Inner = dyn Backend;
    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        if !is_claim(&txn) {
            return Backend::txn(&*self.inner, txn).await;
        }
        tokio::time::sleep(jitter_pause()).await;
        let answer = Backend::txn(&*self.inner, txn).await;
        tokio::time::sleep(jitter_pause()).await;
        answer
    }
}

/// A worker: its own session, and a loop dequeueing from `queue` into `got` until the session
/// ends (then its `dequeue` is dropped wherever it is).
async fn start_consumer(
    ctx: &Ctx,
    queue: &Queue,
    got: &Arc<StdMutex<Vec<String>>>,
) -> Outcome<(Session, JoinHandle<Result<()>>)> {
    let session = ctx.session().await?;
    let (queue, got, lost) = (queue.clone(), got.clone(), session.clone());
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = lost.lost() => return Ok(()),
                value = queue.dequeue() => {
                    // No await between the dequeue's return and the record: a cancellation
                    // cannot fall in between.
                    let value = text_of(value)?;
                    lock_unpoisoned(&got).push(value);
                }
            }
        }
    });
    Ok((session, task))
}

/// Ends a consumer: cancels its task (wherever it is) or closes its session, then closes the
/// session (its process is gone). An error of the consumer fails the scenario.
async fn stop_consumer((session, task): (Session, JoinHandle<Result<()>>), how: Stop) -> Outcome {
    match how {
        Stop::Abort => {
            task.abort();
            match within(PROMPT, "a cancelled consumer ends", task).await? {
                Err(e) if e.is_cancelled() => {}
                Err(e) => return Err(e.into()),
                Ok(result) => result?,
            }
            within(
                PROMPT,
                "closing the cancelled consumer's session",
                session.close(),
            )
            .await??;
        }
        Stop::CloseSession => {
            within(PROMPT, "closing a consumer's session", session.close()).await??;
            join("a consumer whose session was closed", task).await??;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Abort,
    CloseSession,
}

/// Every element of `expected` exactly once in `got`: reports the missing, the duplicated and
/// the unknown ones, and `how` they were received.
fn exactly_once(expected: &[String], got: &[String], how: &str) -> Outcome {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for element in got {
        *seen.entry(element.as_str()).or_default() += 1;
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|e| !seen.contains_key(e.as_str()))
        .collect();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let unknown: Vec<_> = seen
        .keys()
        .filter(|e| !expected.iter().any(|x| x == *e))
        .collect();
    ensure!(
        missing.is_empty() && twice.is_empty() && unknown.is_empty(),
        "{} element(s) enqueued, {} received{how}: missing {missing:?}, more than once \
         {twice:?}, never enqueued {unknown:?}",
        expected.len(),
        got.len()
    );
    Ok(())
}

scenario!(
    /// Consumers crash while producers and consumers run: 4 producers enqueue 30 distinct
    /// elements each (with small random pauses) while 3 consumers, each on its own session,
    /// dequeue in a loop; meanwhile a chaos loop ends a random consumer at a random moment and
    /// starts a replacement: mostly by cancelling its task (its `dequeue` dropped wherever it
    /// is, with claims delayed at random so that one is often in flight), every fourth time by
    /// closing its session (the consumer drops its `dequeue` then). Once every element is in,
    /// the remaining consumers are blocked in `dequeue` on the empty queue and their sessions
    /// are closed. What is left is drained: every element was received or drained exactly
    /// once, none lost, none twice, and nothing is left in the store.
    queue_consumer_crashes,
    Shared,
    queue_consumer_crashes_body
);

async fn queue_consumer_crashes_body(ctx: &Ctx) -> Outcome {
    const PRODUCERS: usize = 4;
    const EACH: usize = 30;
    const CONSUMERS: usize = 3;
    const CRASHES: usize = 24;
    let total = PRODUCERS * EACH;
    let queue = Queue::new(ctx.store.clone(), "jobs")?;
    let jittery = Queue::new(
        Arc::new(Jitter {
            inner: ctx.store.clone(),
        }),
        "jobs",
    )?;
    let got = Arc::new(StdMutex::new(Vec::new()));
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        consumers.push(start_consumer(ctx, &jittery, &got).await?);
    }
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let queue = queue.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    queue.enqueue(format!("{p}:{i}")).await?;
                    tokio::time::sleep(jitter_pause()).await;
                }
                Ok::<_, Error>(())
            })
        })
        .collect();

    // Chaos until the producers are done, and at least CRASHES times.
    let deadline = Instant::now() + 3 * PROMPT;
    let mut crashes = 0;
    while crashes < CRASHES || !producers.iter().all(JoinHandle::is_finished) {
        ensure!(
            Instant::now() < deadline,
            "producers not done after {:?} ({crashes} consumers ended)",
            3 * PROMPT
        );
        tokio::time::sleep(jitter_pause() * 3).await;
        let fresh = start_consumer(ctx, &jittery, &got).await?;
        let victim = std::mem::replace(&mut consumers[rand::random::<usize>() % CONSUMERS], fresh);
        let how = if crashes % 4 == 3 {
            Stop::CloseSession
        } else {
            Stop::Abort
        };
        stop_consumer(victim, how).await?;
        crashes += 1;
    }
    for p in producers {
        join("a producer", p).await??;
    }

    // Elements written back by cancelled consumers reach the remaining ones.
    let deadline = Instant::now() + PROMPT;
    while lock_unpoisoned(&got).len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The queue is empty now (or an element is lost): every consumer is blocked in dequeue.
    // Their sessions are closed under them.
    for (_, task) in &mut consumers {
        still_waiting("a consumer on the empty queue", task).await?;
    }
    for consumer in consumers {
        stop_consumer(consumer, Stop::CloseSession).await?;
    }
    let mut all = std::mem::take(&mut *lock_unpoisoned(&got));
    let received = all.len();
    while let Some(value) = queue.try_dequeue().await? {
        all.push(text(&value));
    }
    let expected: Vec<String> = (0..PRODUCERS)
        .flat_map(|p| (0..EACH).map(move |i| format!("{p}:{i}")))
        .collect();
    let how = format!(
        " ({received} by consumers, {} drained)",
        all.len() - received
    );
    exactly_once(&expected, &all, &how)?;
    ensure!(ctx.keys(b"jobs/").await?.is_empty(), "no element left");
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

/// Every element left in `queue`, in the order dequeued.
async fn drain(queue: &PriorityQueue) -> Outcome<Vec<String>> {
    let mut drained = Vec::new();
    while let Some(value) = queue.try_dequeue().await? {
        drained.push(text(&value));
    }
    Ok(drained)
}

/// Enqueues `element` alone at priority 3, and cancels a consumer whose claim of it is in
/// flight: returns once the claim took it and its write-back is held at the returned gate.
async fn claimed_in_flight(ctx: &Ctx, queue: &PriorityQueue, element: &str) -> Outcome<Arc<Gate>> {
    let claims = Gate::new(ctx.store.clone(), is_claim);
    let write_back = Gate::new(claims.clone(), is_write_back);
    let gated = PriorityQueue::new(write_back.clone(), "pq")?;
    queue.enqueue(element, 3).await?;
    let consumer = tokio::spawn(async move { gated.dequeue().await });
    claims.arrived("the claim reaches the store").await?;
    consumer.abort();
    let _ = consumer.await;
    claims.open();
    write_back
        .arrived("the write-back of the claimed element")
        .await?;
    ensure!(
        ctx.keys(b"pq/00003/").await?.is_empty(),
        "the claimed element is out of the queue until written back"
    );
    Ok(write_back)
}

scenario!(
    /// 4 producers enqueue 25 distinct elements each at mixed priorities (0, 1, 2, 7 and 300,
    /// at random) while 4 consumers dequeue 25 each, all at once: every element is delivered
    /// exactly once, and each consumer gets a producer's elements of one priority in the order
    /// they were enqueued. Then a consumer is cancelled while its claim is in flight (held at
    /// the store until after the drop), the priority's only element: it is written back, and
    /// is not lost to a producer of its priority writing meanwhile: one that read the priority
    /// empty before the write-back and writes after it (it must not overwrite the element with
    /// the same sequence number), one that enqueues while the element is out (and takes its
    /// key; the element then goes behind it). Nothing is left but the bookkeeping keys.
    priority_queue_producers_consumers,
    Shared,
    priority_queue_producers_consumers_body
);

async fn priority_queue_producers_consumers_body(ctx: &Ctx) -> Outcome {
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = 4;
    const EACH: usize = 25;
    const PRIORITIES: [u16; 5] = [0, 1, 2, 7, 300];
    let queue = PriorityQueue::new(ctx.store.clone(), "pq")?;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let queue = queue.clone();
            let priorities: Vec<u16> = (0..EACH)
                .map(|_| PRIORITIES[rand::random::<usize>() % PRIORITIES.len()])
                .collect();
            tokio::spawn(async move {
                let mut enqueued = Vec::new();
                for (i, priority) in priorities.into_iter().enumerate() {
                    let element = format!("{p}:{priority}:{i}");
                    queue.enqueue(&element, priority).await?;
                    enqueued.push(element);
                }
                Ok::<_, Error>(enqueued)
            })
        })
        .collect();
    let total = PRODUCERS * EACH;
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..total / CONSUMERS {
                    got.push(text_of(queue.dequeue().await)?);
                }
                Ok::<_, Error>(got)
            })
        })
        .collect();
    let mut expected = Vec::new();
    for p in producers {
        expected.extend(join("a producer", p).await??);
    }
    let mut all = Vec::new();
    for c in consumers {
        let got = join("a consumer", c).await??;
        // Per producer and priority, in the order it enqueued.
        in_order_per_source(&got)?;
        all.extend(got);
    }
    exactly_once(&expected, &all, "")?;
    ensure_eq!(queue.try_dequeue().await?, None, "the drained queue");

    // A cancelled consumer's element is written back, also while a producer of its priority
    // writes. One that read the priority empty (the claim took the element) and writes after
    // the write-back:
    let write_back = claimed_in_flight(ctx, &queue, "x").await?;
    let late = Gate::new(ctx.store.clone(), is_sequenced_put);
    let late_producer = {
        let queue = PriorityQueue::new(late.clone(), "pq")?;
        tokio::spawn(async move { queue.enqueue("z", 3).await })
    };
    late.arrived("the late producer's write").await?;
    write_back.open();
    ctx.wait_keys(b"pq/00003/", 1).await?;
    late.open();
    join("the late producer", late_producer).await??;
    ensure_eq!(
        drain(&queue).await?,
        vec!["x", "z"],
        "a producer that read before the write-back"
    );
    // One that enqueues while the element is out, and so takes its key:
    let write_back = claimed_in_flight(ctx, &queue, "x2").await?;
    queue.enqueue("y", 3).await?;
    write_back.open();
    ctx.wait_keys(b"pq/00003/", 2).await?;
    ensure_eq!(
        drain(&queue).await?,
        vec!["y", "x2"],
        "a producer that took the element's key"
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

/// Checks that one consumer got the elements of each source (`source:number`, the number after
/// the last `:`) in the order they were enqueued.
fn in_order_per_source(got: &[String]) -> Outcome {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for element in got {
        let (from, i) = element
            .rsplit_once(':')
            .ok_or_else(|| Failure::new(format!("unknown element {element:?}")))?;
        let i: usize = i.parse().map_err(|_| Failure::new("element number"))?;
        if let Some(before) = last.insert(from, i) {
            ensure!(
                before < i,
                "a consumer got {from}'s element {i} after its element {before}"
            );
        }
    }
    Ok(())
}
