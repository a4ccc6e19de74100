//! RwLock: readers share, writers exclude, first come first served, try-variants.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use super::mutex::{acquired, holds, three, two};
use super::support::{
    ensure, ensure_eq, expect_err, join, scenario, still_waiting, within, Ctx, Failure, Outcome,
    PROMPT,
};
use crate::error::{Error, Result};
use crate::guard::{LockGuard, LockKind};
use crate::rwlock::RwLock;
use crate::session::lock_unpoisoned;

fn spawn_read(lock: &RwLock) -> JoinHandle<Result<LockGuard>> {
    let lock = lock.clone();
    tokio::spawn(async move { lock.read().await })
}

fn spawn_write(lock: &RwLock) -> JoinHandle<Result<LockGuard>> {
    let lock = lock.clone();
    tokio::spawn(async move { lock.write().await })
}

fn locked(e: &Error) -> bool {
    matches!(e, Error::Locked)
}

scenario!(
    /// Readers share: a second reader (another session, or the same one) gets the lock while
    /// the first holds it, and `try_read` too.
    rwlock_readers_share,
    Shared,
    readers_share
);

async fn readers_share(ctx: &Ctx) -> Outcome {
    let [a, b] = two(ctx.sessions(2).await?)?;
    let la = RwLock::new(&a, "rw")?;
    let lb = RwLock::new(&b, "rw")?;
    let g1 = la.read().await?;
    ensure_eq!(g1.kind(), LockKind::Read, "kind of a read guard");
    let g2 = within(PROMPT, "a second reader while one holds", lb.read()).await??;
    let g3 = acquired(
        la.try_read().await,
        "try_read by a holding reader's session",
    )?;
    let g4 = acquired(lb.try_read().await, "try_read while two readers hold")?;
    ensure_eq!(
        ctx.keys(b"rw/read/").await?.len(),
        4,
        "reader keys while four readers hold"
    );
    for g in [&g1, &g2, &g3, &g4] {
        ensure!(
            holds(ctx, g.is_owner()).await?,
            "a reader's is_owner() while it holds"
        );
    }
    for g in [g1, g2, g3, g4] {
        g.unlock().await?;
    }
    Ok(())
}

scenario!(
    /// A writer excludes everyone: while it holds, `try_read`/`try_write` fail with
    /// [`Error::Locked`] (leaving no key) and `read()`/`write()` wait; after it, the earlier
    /// reader goes first, then the later writer.
    rwlock_writer_excludes,
    Shared,
    writer_excludes
);

async fn writer_excludes(ctx: &Ctx) -> Outcome {
    let [w, r, w2] = three(ctx.sessions(3).await?)?;
    let (lw, lr, lw2) = (
        RwLock::new(&w, "rw")?,
        RwLock::new(&r, "rw")?,
        RwLock::new(&w2, "rw")?,
    );
    let gw = lw.write().await?;
    ensure_eq!(gw.kind(), LockKind::Write, "kind of a write guard");
    expect_err(lr.try_read().await, locked, "try_read while a writer holds")?;
    expect_err(
        lw2.try_write().await,
        locked,
        "try_write while a writer holds",
    )?;
    ensure_eq!(
        ctx.keys(b"rw/").await?.len(),
        1,
        "keys after failed try-locks: the writer's only"
    );
    let mut reader = spawn_read(&lr);
    ctx.wait_keys(b"rw/", 2).await?;
    let mut writer = spawn_write(&lw2);
    ctx.wait_keys(b"rw/", 3).await?;
    still_waiting("a reader while a writer holds", &mut reader).await?;
    still_waiting("a writer while a writer holds", &mut writer).await?;
    gw.unlock().await?;
    let gr = acquired(join("the reader after the writer", reader).await?, "reader")?;
    still_waiting("a writer while a reader holds", &mut writer).await?;
    gr.unlock().await?;
    let gw2 = acquired(join("the second writer", writer).await?, "second writer")?;
    gw2.unlock().await?;
    Ok(())
}

scenario!(
    /// First come, first served: with a reader holding and a writer waiting, a later reader
    /// waits behind the writer (the writer is not starved), `try_read` fails; when the first
    /// reader leaves the writer goes, then the later reader. Tokens follow that order.
    rwlock_fifo_fairness,
    Shared,
    fifo_fairness
);

async fn fifo_fairness(ctx: &Ctx) -> Outcome {
    let sessions = ctx.sessions(4).await?;
    let locks: Vec<RwLock> = sessions
        .iter()
        .map(|s| RwLock::new(s, "rw"))
        .collect::<Result<_>>()?;
    let g1 = locks[0].read().await?;
    let t1 = g1.fencing_token();
    let mut writer = spawn_write(&locks[1]);
    ctx.wait_keys(b"rw/", 2).await?;
    let mut reader = spawn_read(&locks[2]);
    ctx.wait_keys(b"rw/", 3).await?;
    still_waiting("the writer behind a holding reader", &mut writer).await?;
    still_waiting("a reader behind a waiting writer", &mut reader).await?;
    expect_err(
        locks[3].try_read().await,
        locked,
        "try_read behind a waiting writer",
    )?;
    ensure_eq!(
        ctx.keys(b"rw/").await?.len(),
        3,
        "keys after the failed try_read"
    );
    g1.unlock().await?;
    let gw = acquired(
        join("the writer after the first reader", writer).await?,
        "writer",
    )?;
    still_waiting("the later reader while the writer holds", &mut reader).await?;
    let tw = gw.fencing_token();
    gw.unlock().await?;
    let g2 = acquired(
        join("the later reader after the writer", reader).await?,
        "later reader",
    )?;
    let t2 = g2.fencing_token();
    ensure!(
        t1 < tw && tw < t2,
        "tokens in arrival order: reader {t1}, writer {tw}, reader {t2}"
    );
    g2.unlock().await?;
    // Readers proceed together again after the writer.
    let g3 = within(PROMPT, "a reader once no writer is left", locks[3].read()).await??;
    g3.unlock().await?;
    Ok(())
}

scenario!(
    /// Mixed readers and writers on six sessions, each taking the lock many times: never a
    /// writer together with anyone else (in-process counters check), every acquisition done,
    /// and writers really waited (the write path is exercised: a writer is queued behind a
    /// reader before the rush starts).
    rwlock_contention,
    Shared,
    contention
);

#[derive(Default)]
struct Occupancy {
    readers: AtomicUsize,
    writers: AtomicUsize,
    most_readers: AtomicUsize,
    reads: AtomicUsize,
    writes: AtomicUsize,
    writes_that_waited: AtomicUsize,
    violations: std::sync::Mutex<Vec<String>>,
}

async fn contention(ctx: &Ctx) -> Outcome {
    const SESSIONS: usize = 6;
    const ROUNDS: usize = 6;
    let sessions = ctx.sessions(SESSIONS + 1).await?;
    let gate = RwLock::new(&sessions[SESSIONS], "rw")?.read().await?;
    let occupancy = Arc::new(Occupancy::default());
    let start = Arc::new(Barrier::new(SESSIONS + 1));
    let mut tasks = Vec::new();
    for (i, session) in sessions.iter().take(SESSIONS).enumerate() {
        let (lock, occupancy, start) = (
            RwLock::new(session, "rw")?,
            occupancy.clone(),
            start.clone(),
        );
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for round in 0..ROUNDS {
                // Writers first in each round of sessions 0 and 3, so one queues behind the gate.
                if (i + round) % 3 == 0 {
                    let g = lock.write().await?;
                    let others = occupancy.writers.fetch_add(1, Ordering::SeqCst);
                    let readers = occupancy.readers.load(Ordering::SeqCst);
                    if others != 0 || readers != 0 {
                        lock_unpoisoned(&occupancy.violations).push(format!(
                            "writer (token {}) inside with {others} writer(s) and {readers} reader(s)",
                            g.fencing_token()
                        ));
                    }
                    if g.revision() > g.fencing_token() {
                        occupancy.writes_that_waited.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    occupancy.writers.fetch_sub(1, Ordering::SeqCst);
                    occupancy.writes.fetch_add(1, Ordering::SeqCst);
                    g.unlock().await?;
                } else {
                    let g = lock.read().await?;
                    let now = occupancy.readers.fetch_add(1, Ordering::SeqCst) + 1;
                    occupancy.most_readers.fetch_max(now, Ordering::SeqCst);
                    let writers = occupancy.writers.load(Ordering::SeqCst);
                    if writers != 0 {
                        lock_unpoisoned(&occupancy.violations).push(format!(
                            "reader (token {}) inside with {writers} writer(s)",
                            g.fencing_token()
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    occupancy.readers.fetch_sub(1, Ordering::SeqCst);
                    occupancy.reads.fetch_add(1, Ordering::SeqCst);
                    g.unlock().await?;
                }
            }
            Ok::<(), Failure>(())
        }));
    }
    start.wait().await;
    // Hold the gate until at least one writer queued behind it.
    super::support::eventually("a writer queued behind the gate", || async {
        Ok(!ctx.keys(b"rw/write/").await?.is_empty())
    })
    .await?;
    gate.unlock().await?;
    for task in tasks {
        within(Duration::from_secs(60), "a contender's rounds", task).await???;
    }
    let violations = lock_unpoisoned(&occupancy.violations).clone();
    ensure!(violations.is_empty(), "exclusion broken: {violations:?}");
    let writes = occupancy.writes.load(Ordering::SeqCst);
    let reads = occupancy.reads.load(Ordering::SeqCst);
    ensure_eq!(writes + reads, SESSIONS * ROUNDS, "acquisitions done");
    ensure!(writes >= SESSIONS * ROUNDS / 3, "writes done: {writes}");
    ensure!(
        occupancy.writes_that_waited.load(Ordering::SeqCst) >= 1,
        "no writer ever waited: the write path was not exercised"
    );
    Ok(())
}

scenario!(
    /// Try-variants: on a free lock `try_write` wins; with a writer holding both fail; with
    /// readers holding `try_read` wins and `try_write` fails; every failure leaves no key.
    rwlock_try_variants,
    Shared,
    try_variants
);

async fn try_variants(ctx: &Ctx) -> Outcome {
    let [a, b] = two(ctx.sessions(2).await?)?;
    let (la, lb) = (RwLock::new(&a, "rw")?, RwLock::new(&b, "rw")?);
    let gw = acquired(la.try_write().await, "try_write on a free lock")?;
    expect_err(lb.try_read().await, locked, "try_read while a writer holds")?;
    expect_err(
        lb.try_write().await,
        locked,
        "try_write while a writer holds",
    )?;
    expect_err(
        la.try_write().await,
        locked,
        "try_write by the writer's own session",
    )?;
    ensure_eq!(
        ctx.keys(b"rw/").await?.len(),
        1,
        "keys after failed try-locks"
    );
    gw.unlock().await?;
    let r1 = acquired(la.try_read().await, "try_read on a free lock")?;
    let r2 = acquired(lb.try_read().await, "try_read beside a reader")?;
    expect_err(lb.try_write().await, locked, "try_write while readers hold")?;
    ensure_eq!(
        ctx.keys(b"rw/").await?.len(),
        2,
        "keys after the failed try_write"
    );
    r1.unlock().await?;
    expect_err(
        la.try_write().await,
        locked,
        "try_write while one reader holds",
    )?;
    r2.unlock().await?;
    let gw = acquired(lb.try_write().await, "try_write once every reader left")?;
    gw.unlock().await?;
    Ok(())
}

scenario!(
    /// A writer that gives up (`write_timeout` → [`Error::Timeout`], or its task aborted)
    /// leaves no key, and readers behind it are let in at once.
    rwlock_cancelled_writer,
    Shared,
    cancelled_writer
);

async fn cancelled_writer(ctx: &Ctx) -> Outcome {
    let [r1, w, r2] = three(ctx.sessions(3).await?)?;
    let (l1, lw, l2) = (
        RwLock::new(&r1, "rw")?,
        RwLock::new(&w, "rw")?,
        RwLock::new(&r2, "rw")?,
    );
    let g1 = l1.read().await?;
    let waiting_writer = spawn_write(&lw);
    ctx.wait_keys(b"rw/", 2).await?;
    let mut reader = spawn_read(&l2);
    ctx.wait_keys(b"rw/", 3).await?;
    still_waiting("a reader behind a waiting writer", &mut reader).await?;
    waiting_writer.abort();
    let g2 = acquired(
        join("a reader once the writer ahead was aborted", reader).await?,
        "reader",
    )?;
    g2.unlock().await?;
    ctx.wait_keys(b"rw/", 1).await?;
    expect_err(
        lw.write_timeout(Duration::from_millis(100)).await,
        |e| matches!(e, Error::Timeout),
        "write_timeout while a reader holds",
    )?;
    ctx.wait_keys(b"rw/", 1).await?;
    let g3 = acquired(l2.try_read().await, "try_read after the writer timed out")?;
    g3.unlock().await?;
    g1.unlock().await?;
    Ok(())
}

scenario!(
    /// A writer waiting behind a reader whose lease is revoked gets the lock; the reader's
    /// `unlock()` then fails.
    rwlock_reader_expires,
    Shared,
    reader_expires
);

async fn reader_expires(ctx: &Ctx) -> Outcome {
    let [r, w] = two(ctx.sessions(2).await?)?;
    let g = RwLock::new(&r, "rw")?.read().await?;
    let writer = spawn_write(&RwLock::new(&w, "rw")?);
    ctx.wait_keys(b"rw/", 2).await?;
    ctx.store.lease_revoke(r.lease()).await?;
    let gw = acquired(
        join("the writer after the reader expired", writer).await?,
        "writer",
    )?;
    expect_err(
        g.unlock().await,
        |e| matches!(e, Error::NotHeld { .. } | Error::SessionExpired { .. }),
        "unlock() of the expired reader",
    )?;
    gw.unlock().await?;
    Ok(())
}

scenario!(
    /// One session may hold read locks or write locks of a name, not both: the write lock
    /// asked while the session holds (or awaits) a read lock, or a read lock while it holds
    /// the write lock, is [`Error::WouldDeadlock`] at once (the try-variants: [`Error::Locked`]),
    /// and nothing is written; once released, the other side works. Other sessions are not
    /// affected.
    rwlock_same_session_conflicts,
    Shared,
    same_session_conflicts
);

async fn same_session_conflicts(ctx: &Ctx) -> Outcome {
    let [s, other] = two(ctx.sessions(2).await?)?;
    let lock = RwLock::new(&s, "rw")?;
    let deadlock = |e: &Error| matches!(e, Error::WouldDeadlock { .. });
    let r = lock.read().await?;
    expect_err(
        within(PROMPT, "write() while reading", lock.write()).await?,
        deadlock,
        "write() while this session holds a read lock",
    )?;
    expect_err(
        within(
            PROMPT,
            "write_timeout() while reading",
            lock.write_timeout(PROMPT * 2),
        )
        .await?,
        deadlock,
        "write_timeout() while this session holds a read lock",
    )?;
    expect_err(lock.try_write().await, locked, "try_write() while reading")?;
    ensure_eq!(ctx.keys(b"rw/").await?.len(), 1, "keys: only the read lock");
    let r2 = lock.read().await?;
    r2.unlock().await?;
    r.unlock().await?;

    let w = lock.write().await?;
    expect_err(
        within(PROMPT, "read() while writing", lock.read()).await?,
        deadlock,
        "read() while this session holds the write lock",
    )?;
    expect_err(lock.try_read().await, locked, "try_read() while writing")?;
    let mut theirs = spawn_read(&RwLock::new(&other, "rw")?);
    still_waiting(
        "another session's read() while the write lock is held",
        &mut theirs,
    )
    .await?;
    w.unlock().await?;
    let theirs = acquired(join("the other session's read()", theirs).await?, "read")?;

    // A read that is still waiting counts too.
    let writer = RwLock::new(&other, "rw2")?.write().await?;
    let mut waiting = spawn_read(&RwLock::new(&s, "rw2")?);
    ctx.wait_keys(b"rw2/", 2).await?;
    expect_err(
        within(
            PROMPT,
            "write() while a read waits",
            RwLock::new(&s, "rw2")?.write(),
        )
        .await?,
        deadlock,
        "write() while this session awaits a read lock",
    )?;
    still_waiting("the waiting read", &mut waiting).await?;
    writer.unlock().await?;
    let read = acquired(join("the waiting read", waiting).await?, "read")?;
    read.unlock().await?;
    theirs.unlock().await?;
    Ok(())
}
