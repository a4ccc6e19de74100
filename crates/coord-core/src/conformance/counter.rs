//! Counter: concurrent adds sum exactly, compare-and-set, overflow, bad values, delete.

use std::time::Duration;

use super::support::{ensure, ensure_eq, expect_err, scenario, within, Ctx, Outcome};
use crate::counter::Counter;
use crate::error::Error;
use crate::kv::{PutRequest, RangeRequest};

/// Bound on a scenario's whole batch of concurrent updates (each is a few round trips).
const BATCH: Duration = Duration::from_secs(60);

scenario!(
    /// Concurrent `add(1)`s from 8 sessions, 25 each, leave exactly 200, and the new values
    /// they return are exactly 1..=200 (each add saw every add before it). The key is on no
    /// lease: it outlives every session, and `delete` removes it.
    counter_concurrent_adds,
    Shared,
    concurrent_adds
);

async fn concurrent_adds(ctx: &Ctx) -> Outcome {
    let sessions = ctx.sessions(8).await?;
    let mut tasks = Vec::new();
    for session in &sessions {
        let counter = Counter::new(session, "hits")?;
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..25 {
                seen.push(counter.add(1).await?);
            }
            Ok::<_, Error>(seen)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(within(BATCH, "a client's adds", task).await???);
    }
    all.sort_unstable();
    ensure_eq!(
        all,
        (1..=200).collect::<Vec<i64>>(),
        "values returned by the adds"
    );
    let counter = Counter::new(&ctx.store, "hits")?;
    ensure_eq!(counter.get().await?, 200, "the counter after the adds");
    let kv = ctx.store.range(RangeRequest::key("hits")).await?.kvs;
    ensure_eq!(
        kv.first().map(|kv| kv.lease),
        Some(0),
        "lease of the counter's key"
    );
    ensure_eq!(
        kv.first().map(|kv| kv.value.clone()),
        Some(200i64.to_be_bytes().to_vec()),
        "stored form (8 bytes, big-endian)"
    );
    for session in &sessions {
        session.close().await?;
    }
    ensure_eq!(
        counter.get().await?,
        200,
        "the counter after every session closed"
    );
    ensure!(counter.delete().await?, "delete found no key");
    ensure!(!counter.delete().await?, "a second delete found a key");
    ensure_eq!(counter.get().await?, 0, "the counter after delete");
    Ok(())
}

scenario!(
    /// `compare_and_set` writes only when the value is the one expected (a missing key counts
    /// as 0); of 8 concurrent `compare_and_set(0, i)` exactly one wins; `set` overwrites; an
    /// add past `i64::MAX` is [`Error::Overflow`] and writes nothing; a key that does not hold 8
    /// bytes is [`Error::InvalidArgument`] for every operation and stays as it was; bad names
    /// are refused.
    counter_compare_and_set,
    Shared,
    compare_and_set
);

async fn compare_and_set(ctx: &Ctx) -> Outcome {
    let counter = Counter::new(&ctx.store, "c")?;
    ensure_eq!(counter.get().await?, 0, "a counter with no key");
    ensure!(
        !counter.compare_and_set(1, 5).await?,
        "cas(1, 5) on a missing key"
    );
    ensure!(ctx.keys(b"c").await?.is_empty(), "a failed cas wrote a key");
    ensure!(
        counter.compare_and_set(0, 5).await?,
        "cas(0, 5) on a missing key"
    );
    ensure!(!counter.compare_and_set(0, 7).await?, "cas(0, 7) on 5");
    ensure_eq!(counter.get().await?, 5, "after a failed cas");
    ensure!(counter.compare_and_set(5, 7).await?, "cas(5, 7)");
    ensure_eq!(counter.get().await?, 7, "after cas(5, 7)");

    counter.set(0).await?;
    let mut tasks = Vec::new();
    for i in 1..=8i64 {
        let counter = counter.clone();
        tasks.push(tokio::spawn(
            async move { counter.compare_and_set(0, i).await },
        ));
    }
    let mut winners = Vec::new();
    for (i, task) in (1..=8i64).zip(tasks) {
        if within(BATCH, "a concurrent cas", task).await??? {
            winners.push(i);
        }
    }
    ensure_eq!(
        winners.len(),
        1,
        "winners of 8 concurrent cas(0, i): {winners:?}"
    );
    ensure_eq!(counter.get().await?, winners[0], "the value after the race");

    counter.set(i64::MAX - 1).await?;
    ensure_eq!(counter.add(1).await?, i64::MAX, "add up to i64::MAX");
    expect_err(
        counter.add(1).await,
        |e| {
            matches!(
                e,
                Error::Overflow {
                    value: i64::MAX,
                    delta: 1
                }
            )
        },
        "an add past i64::MAX",
    )?;
    ensure_eq!(counter.get().await?, i64::MAX, "after a refused add");
    counter.set(i64::MIN).await?;
    expect_err(
        counter.add(-1).await,
        |e| matches!(e, Error::Overflow { .. }),
        "an add below i64::MIN",
    )?;
    ensure_eq!(counter.add(-3 - i64::MIN).await?, -3, "a large add back");

    ctx.store.put(PutRequest::new("c", "12")).await?;
    let not_a_counter = |e: &Error| matches!(e, Error::InvalidArgument { .. });
    expect_err(counter.get().await, not_a_counter, "get of a 2-byte value")?;
    expect_err(counter.add(1).await, not_a_counter, "add to a 2-byte value")?;
    expect_err(
        counter.compare_and_set(0, 1).await,
        not_a_counter,
        "cas on a 2-byte value",
    )?;
    let kv = ctx.store.range(RangeRequest::key("c")).await?.kvs;
    ensure_eq!(
        kv.first().map(|kv| kv.value.clone()),
        Some(b"12".to_vec()),
        "a non-counter value after refused updates"
    );
    ensure!(counter.delete().await?, "delete");

    expect_err(
        Counter::new(&ctx.store, ""),
        |e| matches!(e, Error::InvalidArgument { .. }),
        "an empty name",
    )?;
    expect_err(
        Counter::new(&ctx.store, vec![b'x'; crate::names::MAX_NAME_LEN + 1]),
        |e| matches!(e, Error::InvalidArgument { .. }),
        "an over-long name",
    )?;
    Ok(())
}
