//! STM: concurrent transfers keep their sum, each isolation level's guarantee and anomaly,
//! snapshots without past reads, user errors, retry bounds.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::sync::Barrier;

use super::support::{ensure, ensure_eq, expect_err, scenario, text, within, Ctx, Outcome};
use crate::backend::{Backend, Capabilities, Capability, DynBackend};
use crate::error::{Error, Result};
use crate::kv::{DeleteRequest, PutRequest, RangeRequest, RangeResponse};
use crate::session::lock_unpoisoned;
use crate::stm::{self, Isolation, StmOptions};
use crate::txn::{Txn, TxnOp};

/// Bound on a scenario's batch of transactions.
const BATCH: Duration = Duration::from_secs(120);

const ACCOUNTS: usize = 10;
const WORKERS: usize = 8;
const TRANSFERS: usize = 10;
const START_BALANCE: i64 = 100;

fn account(i: usize) -> String {
    format!("acct/{i}")
}

/// A decimal balance; a missing key is 0.
fn number(value: Option<Vec<u8>>) -> i64 {
    value
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// The same store without [`Capability::PastRevisionReads`]: such reads are refused.
#[derive(Debug)]
struct NoPastReads(DynBackend);

#[async_trait::async_trait]
impl crate::backend::Decorator for NoPastReads {
    type Inner = DynBackend;
    fn inner(&self) -> &DynBackend {
        &self.0
    }
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        Backend::capabilities(self).check_range(&req)?;
        self.0.as_ref().range(req).await
    }
    async fn txn(&self, txn: Txn) -> Result<crate::txn::TxnResponse> {
        Backend::capabilities(self).check_txn(&txn)?;
        self.0.as_ref().txn(txn).await
    }
    fn capabilities(&self) -> Capabilities {
        Capability::ALL
            .iter()
            .filter(|c| {
                **c != Capability::PastRevisionReads && self.0.as_ref().capabilities().has(**c)
            })
            .fold(Capabilities::none(), |set, c| set.with(*c))
    }
}

/// The scenario's store, and the same without past reads (the snapshot levels' fallback).
fn both_stores(ctx: &Ctx) -> [(&'static str, DynBackend); 2] {
    [
        ("as declared", ctx.store.clone()),
        (
            "without past reads",
            Arc::new(NoPastReads(ctx.store.clone())) as DynBackend,
        ),
    ]
}

scenario!(
    /// 8 workers make 10 transfers each between 10 accounts at once (`SerializableSnapshot`;
    /// half of them with `prefetch`). Every attempt reads all accounts and sees the starting
    /// sum; so does the store afterwards. The first transfers are made to collide (all read
    /// before any commits), so conflicts are retried: at least 7 retries in all.
    stm_transfers_keep_sum,
    Shared,
    transfers_keep_sum
);

async fn transfers_keep_sum(ctx: &Ctx) -> Outcome {
    for i in 0..ACCOUNTS {
        ctx.store
            .put(PutRequest::new(account(i), START_BALANCE.to_string()))
            .await?;
    }
    let total = START_BALANCE * ACCOUNTS as i64;
    let violations = Arc::new(StdMutex::new(Vec::<i64>::new()));
    let collide = Arc::new(Barrier::new(WORKERS));
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let store = ctx.store.clone();
        let violations = violations.clone();
        let collide = collide.clone();
        tasks.push(tokio::spawn(async move {
            let waited = Arc::new(AtomicBool::new(false));
            let mut attempts = 0;
            for n in 0..TRANSFERS {
                let (from, to) = ((worker + n) % ACCOUNTS, (worker * 3 + n + 1) % ACCOUNTS);
                let to = if to == from { (to + 1) % ACCOUNTS } else { to };
                let mut options = StmOptions::default();
                if worker % 2 == 1 {
                    options = options.with_prefetch((0..ACCOUNTS).map(account));
                }
                let committed = stm::run(&store, options, |tx| {
                    let (violations, collide, waited) =
                        (violations.clone(), collide.clone(), waited.clone());
                    async move {
                        let mut balances = Vec::with_capacity(ACCOUNTS);
                        for i in 0..ACCOUNTS {
                            balances.push(number(tx.get(account(i)).await?));
                        }
                        let sum: i64 = balances.iter().sum();
                        if sum != total {
                            lock_unpoisoned(&violations).push(sum);
                        }
                        if !waited.swap(true, Ordering::SeqCst) {
                            collide.wait().await;
                        }
                        let amount = 1 + (n as i64 % 7);
                        if balances[from] >= amount {
                            tx.put(account(from), (balances[from] - amount).to_string())
                                .await?;
                            tx.put(account(to), (balances[to] + amount).to_string())
                                .await?;
                        }
                        Ok::<_, Error>(())
                    }
                })
                .await?;
                attempts += committed.attempts;
            }
            Ok::<_, Error>(attempts)
        }));
    }
    let mut attempts = 0;
    for task in tasks {
        attempts += within(BATCH, "a worker's transfers", task).await???;
    }
    let seen = lock_unpoisoned(&violations).clone();
    ensure!(
        seen.is_empty(),
        "attempts saw sums other than {total}: {seen:?}"
    );
    let mut sum = 0;
    for i in 0..ACCOUNTS {
        let kv = ctx.store.range(RangeRequest::key(account(i))).await?.kvs;
        sum += number(kv.first().map(|kv| kv.value.clone()));
    }
    ensure_eq!(sum, total, "the sum of the accounts after the transfers");
    let transactions = (WORKERS * TRANSFERS) as u32;
    ensure!(
        attempts >= transactions + (WORKERS as u32 - 1),
        "{attempts} attempts for {transactions} transfers: the colliding first ones were not retried"
    );
    ctx.store.delete(DeleteRequest::prefix("acct/")).await?;
    Ok(())
}

/// Runs, under `isolation`, an attempt that reads `a` then `b` while another client moves 1
/// from `a` to `b` between the two reads (on the first attempt only). Returns the sums
/// `a + b` each attempt saw and the attempts taken.
async fn read_across_a_transfer(
    store: &DynBackend,
    isolation: Isolation,
) -> Result<(Vec<i64>, u32)> {
    store.put(PutRequest::new("a", "5")).await?;
    store.put(PutRequest::new("b", "5")).await?;
    let sums = Arc::new(StdMutex::new(Vec::new()));
    let calls = Arc::new(AtomicU32::new(0));
    let committed = stm::run(store, isolation, |tx| {
        let (store, sums, calls) = (store.clone(), sums.clone(), calls.clone());
        async move {
            let a = number(tx.get("a").await?);
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                let transfer = Txn::new().and_then([
                    TxnOp::Put(PutRequest::new("a", "4")),
                    TxnOp::Put(PutRequest::new("b", "6")),
                ]);
                store.txn(transfer).await?;
            }
            let b = number(tx.get("b").await?);
            lock_unpoisoned(&sums).push(a + b);
            tx.put("seen", (a + b).to_string()).await?;
            Ok::<_, Error>(())
        }
    })
    .await?;
    store.delete(DeleteRequest::prefix("")).await?;
    let sums = lock_unpoisoned(&sums).clone();
    Ok((sums, committed.attempts))
}

scenario!(
    /// Reads across a concurrent transfer (`a -> b` between the attempt's reads of `a` and
    /// `b`): `ReadCommitted` sees the half-done sum and commits it (no abort on a changed
    /// read); `RepeatableReads` sees it too but its commit is retried; `Serializable` and
    /// `SerializableSnapshot` never see it and retry — also on a backend without past reads.
    stm_isolation_reads,
    Shared,
    isolation_reads
);

async fn isolation_reads(ctx: &Ctx) -> Outcome {
    let (sums, attempts) = read_across_a_transfer(&ctx.store, Isolation::ReadCommitted).await?;
    ensure_eq!(
        (sums, attempts),
        (vec![11], 1),
        "ReadCommitted: (sums seen, attempts)"
    );
    let (sums, attempts) = read_across_a_transfer(&ctx.store, Isolation::RepeatableReads).await?;
    ensure_eq!(
        (sums, attempts),
        (vec![11, 10], 2),
        "RepeatableReads: (sums seen, attempts)"
    );
    for (what, store) in both_stores(ctx) {
        for isolation in [Isolation::Serializable, Isolation::SerializableSnapshot] {
            let (sums, attempts) = read_across_a_transfer(&store, isolation).await?;
            ensure!(
                sums.iter().all(|s| *s == 10) && !sums.is_empty(),
                "{isolation:?} {what}: saw sums {sums:?}, not only 10"
            );
            ensure_eq!(attempts, 2, "{isolation:?} {what}: attempts");
        }
    }
    Ok(())
}

/// Under `isolation`: reads `a`, and writes `c` (never read) after another client wrote `c`
/// (first attempt only). Returns `c` afterwards and the attempts taken.
async fn blind_write(store: &DynBackend, isolation: Isolation) -> Result<(String, u32)> {
    store.put(PutRequest::new("a", "1")).await?;
    let calls = Arc::new(AtomicU32::new(0));
    let committed = stm::run(store, isolation, |tx| {
        let (store, calls) = (store.clone(), calls.clone());
        async move {
            tx.get("a").await?;
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                store.put(PutRequest::new("c", "theirs")).await?;
            }
            tx.put("c", "mine").await?;
            Ok::<_, Error>(())
        }
    })
    .await?;
    let c = store.range(RangeRequest::key("c")).await?.kvs;
    store.delete(DeleteRequest::prefix("")).await?;
    Ok((text(&c[0].value), committed.attempts))
}

scenario!(
    /// A blind write (a key written, never read) over a change made after the attempt's
    /// snapshot: `Serializable` commits it at once; `SerializableSnapshot` retries — also on a
    /// backend without past reads. Reads are cached per attempt, at every level.
    stm_isolation_writes,
    Shared,
    isolation_writes
);

async fn isolation_writes(ctx: &Ctx) -> Outcome {
    for (what, store) in both_stores(ctx) {
        let got = blind_write(&store, Isolation::Serializable).await?;
        ensure_eq!(
            got,
            ("mine".to_string(), 1),
            "Serializable {what}: (c, attempts)"
        );
        let got = blind_write(&store, Isolation::SerializableSnapshot).await?;
        ensure_eq!(
            got,
            ("mine".to_string(), 2),
            "SerializableSnapshot {what}: (c, attempts)"
        );
    }
    for isolation in [
        Isolation::SerializableSnapshot,
        Isolation::Serializable,
        Isolation::RepeatableReads,
        Isolation::ReadCommitted,
    ] {
        ctx.store.put(PutRequest::new("k", "1")).await?;
        let store = ctx.store.clone();
        let calls = Arc::new(AtomicU32::new(0));
        let twice = stm::run(&ctx.store, isolation, |tx| {
            let (store, calls) = (store.clone(), calls.clone());
            async move {
                let first = tx.get("k").await?;
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    store.put(PutRequest::new("k", "2")).await?;
                }
                let second = tx.get("k").await?;
                Ok::<_, Error>((first, second))
            }
        })
        .await?;
        let (first, second) = twice.value;
        ensure_eq!(
            first,
            second,
            "{isolation:?}: two reads of k in one attempt"
        );
    }
    ctx.store.delete(DeleteRequest::prefix("")).await?;
    Ok(())
}

scenario!(
    /// An attempt reads its own buffered writes and deletes; `rev` is the key's mod revision;
    /// the commit applies puts and deletes at the returned revision. A closure's error aborts
    /// at once: one call, nothing written. An attempt that always conflicts stops after
    /// `max_attempts` with [`Error::Conflict`], having written nothing. A handle kept past its
    /// attempt refuses every operation.
    stm_commit_and_abort,
    Shared,
    commit_and_abort
);

async fn commit_and_abort(ctx: &Ctx) -> Outcome {
    let s = &ctx.store;
    let put_rev = s.put(PutRequest::new("old", "x")).await?.header_revision;
    let kept = Arc::new(StdMutex::new(None));
    let committed = stm::run(s, Isolation::default(), |tx| {
        let kept = kept.clone();
        async move {
            *lock_unpoisoned(&kept) = Some(tx.clone());
            let rev = tx.rev("old").await?;
            tx.put("new", "1").await?;
            let own = tx.get("new").await?;
            tx.delete("old").await?;
            let deleted = tx.get("old").await?;
            Ok::<_, Error>((rev, own, deleted))
        }
    })
    .await?;
    ensure_eq!(
        committed.value,
        (put_rev, Some(b"1".to_vec()), None),
        "(rev of old, own write, own delete) inside the attempt"
    );
    let new = s.range(RangeRequest::key("new")).await?.kvs;
    ensure_eq!(
        new.first().map(|kv| kv.mod_revision),
        Some(committed.revision),
        "new's revision"
    );
    ensure!(
        s.range(RangeRequest::key("old")).await?.kvs.is_empty(),
        "old survived its delete"
    );
    let kept = lock_unpoisoned(&kept).take().expect("the closure ran");
    expect_err(
        kept.put("late", "1").await,
        |e| matches!(e, Error::InvalidArgument { .. }),
        "a put through a handle whose attempt ended",
    )?;

    let calls = Arc::new(AtomicU32::new(0));
    let aborted = stm::run(s, Isolation::default(), |tx| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tx.put("x", "1").await?;
            tx.delete("new").await?;
            Err::<(), _>(Error::invalid("insufficient funds"))
        }
    })
    .await;
    expect_err(
        aborted,
        |e| matches!(e, Error::InvalidArgument { reason } if reason == "insufficient funds"),
        "a closure's own error",
    )?;
    ensure_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "calls of an aborted closure"
    );
    ensure!(
        s.range(RangeRequest::key("x")).await?.kvs.is_empty(),
        "an aborted put landed"
    );
    ensure!(
        !s.range(RangeRequest::key("new")).await?.kvs.is_empty(),
        "an aborted delete landed"
    );

    let calls = Arc::new(AtomicU32::new(0));
    let store = s.clone();
    let exhausted = stm::run(s, StmOptions::default().with_max_attempts(3), |tx| {
        let (store, calls) = (store.clone(), calls.clone());
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            tx.get("new").await?;
            store.put(PutRequest::new("new", n.to_string())).await?;
            tx.put("y", "1").await?;
            Ok::<_, Error>(())
        }
    })
    .await;
    expect_err(
        exhausted,
        |e| matches!(e, Error::Conflict { attempts: 3 }),
        "an attempt that always conflicts",
    )?;
    ensure_eq!(calls.load(Ordering::SeqCst), 3, "calls before giving up");
    ensure!(
        s.range(RangeRequest::key("y")).await?.kvs.is_empty(),
        "a conflicting put landed"
    );
    s.delete(DeleteRequest::prefix("")).await?;
    Ok(())
}
