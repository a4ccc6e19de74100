//! Semaphore: never more permits in use than its capacity, weighted first come first served
//! without barging, try/timeout/cancel leave nothing, session loss frees permits, the capacity
//! is agreed on, bad input, fencing tokens.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use super::mutex::{holds, three, two};
use super::support::{
    ensure, ensure_eq, expect_err, join, scenario, still_waiting, text, within, Ctx, Failure,
    Outcome, PROMPT,
};
use crate::error::{Error, Result};
use crate::kv::{DeleteRequest, RangeRequest, Revision, SortOrder, SortTarget};
use crate::names::MAX_NAME_LEN;
use crate::semaphore::{Semaphore, SemaphorePermit};
use crate::session::lock_unpoisoned;

/// `semaphore.acquire(permits)` in a task of its own.
fn spawn_acquire(semaphore: &Semaphore, permits: u32) -> JoinHandle<Result<SemaphorePermit>> {
    let semaphore = semaphore.clone();
    tokio::spawn(async move { semaphore.acquire(permits).await })
}

/// Unwraps an acquire result that must be a permit.
#[track_caller]
fn granted(result: Result<SemaphorePermit>, what: &str) -> Outcome<SemaphorePermit> {
    result.map_err(|e| Failure::new(format!("{what}: expected permits, got {e} ({e:?})")))
}

fn locked(e: &Error) -> bool {
    matches!(e, Error::Locked)
}

fn invalid(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument { .. })
}

/// One semaphore of `name` and `capacity` per session.
fn semaphores(sessions: &[crate::Session], capacity: u32) -> Result<Vec<Semaphore>> {
    sessions
        .iter()
        .map(|s| Semaphore::new(s, "sem", capacity))
        .collect()
}

scenario!(
    /// Eight sessions share a semaphore of 3 permits, each acquiring 1 or 2 permits six times,
    /// all at once: never more than 3 permits in use (an in-process counter checks), the
    /// store agrees at each grant (the permits of the keys up to the holder's, by create
    /// revision, fit the capacity), every acquisition is done, and several holders were
    /// inside at once at some point (the semaphore is not a mutex).
    semaphore_exclusion,
    Shared,
    exclusion
);

async fn exclusion(ctx: &Ctx) -> Outcome {
    const SESSIONS: usize = 8;
    const ROUNDS: usize = 6;
    const CAPACITY: u32 = 3;
    let sessions = ctx.sessions(SESSIONS).await?;
    let in_use = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(SESSIONS));
    let mut tasks = Vec::new();
    for (i, semaphore) in semaphores(&sessions, CAPACITY)?.into_iter().enumerate() {
        let (in_use, most, done, start, store) = (
            in_use.clone(),
            most.clone(),
            done.clone(),
            start.clone(),
            ctx.store.clone(),
        );
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for round in 0..ROUNDS {
                let permits = 1 + ((i + round) % 2) as u32;
                let permit = semaphore.acquire(permits).await?;
                let now = in_use.fetch_add(permits, Ordering::SeqCst) + permits;
                most.fetch_max(now, Ordering::SeqCst);
                ensure!(
                    now <= CAPACITY,
                    "{now} permits in use of {CAPACITY} (token {})",
                    permit.fencing_token()
                );
                let keys = store
                    .range(
                        RangeRequest::prefix("sem/")
                            .with_sort(SortTarget::Create, SortOrder::Ascend)
                            .with_max_create_revision(permit.fencing_token()),
                    )
                    .await?;
                let counted: u32 = keys
                    .kvs
                    .iter()
                    .map(|kv| {
                        text(&kv.value)
                            .split_once('/')
                            .and_then(|(p, _)| p.parse::<u32>().ok())
                            .unwrap_or(u32::MAX / 16)
                    })
                    .sum();
                ensure!(
                    counted <= CAPACITY,
                    "the store holds {counted} permits up to a holder's key (token {}): {:?}",
                    permit.fencing_token(),
                    keys.kvs
                        .iter()
                        .map(|kv| (text(&kv.key), text(&kv.value)))
                        .collect::<Vec<_>>()
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
                in_use.fetch_sub(permits, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                permit.release().await?;
            }
            Ok::<(), Failure>(())
        }));
    }
    for task in tasks {
        within(Duration::from_secs(60), "a contender's rounds", task).await???;
    }
    ensure_eq!(
        done.load(Ordering::SeqCst),
        SESSIONS * ROUNDS,
        "acquisitions done"
    );
    ensure!(
        most.load(Ordering::SeqCst) > 1,
        "never more than one permit in use at once: the semaphore served one at a time"
    );
    Ok(())
}

scenario!(
    /// Weighted, first come first served, no barging (capacity 3): with 2 held, a request for
    /// 3 waits, and a later request for 1 waits behind it although one permit is free
    /// (`try_acquire(1)` is [`Error::Locked`]). When the 2 go, the 3 are granted, then the 1
    /// after them. Two holders of 1 hold together. Tokens follow arrival order.
    semaphore_fifo_no_barging,
    Shared,
    fifo_no_barging
);

async fn fifo_no_barging(ctx: &Ctx) -> Outcome {
    let sessions = ctx.sessions(4).await?;
    let sems = semaphores(&sessions, 3)?;
    let two_held = sems[0].acquire(2).await?;
    let mut three_wanted = spawn_acquire(&sems[1], 3);
    ctx.wait_keys(b"sem/", 2).await?;
    let mut one_wanted = spawn_acquire(&sems[2], 1);
    ctx.wait_keys(b"sem/", 3).await?;
    still_waiting("a request for 3 while 2 of 3 are held", &mut three_wanted).await?;
    still_waiting(
        "a request for 1 behind a waiting request for 3 (no barging)",
        &mut one_wanted,
    )
    .await?;
    expect_err(
        sems[3].try_acquire(1).await,
        locked,
        "try_acquire(1) behind a waiting request",
    )?;
    ctx.wait_keys(b"sem/", 3).await?;
    let t2 = two_held.fencing_token();
    two_held.release().await?;
    let three_held = granted(
        join("the request for 3 after the 2 went", three_wanted).await?,
        "request for 3",
    )?;
    ensure_eq!(three_held.permits(), 3, "permits of the guard");
    still_waiting("a request for 1 while all 3 are held", &mut one_wanted).await?;
    let t3 = three_held.fencing_token();
    three_held.release().await?;
    let one_held = granted(
        join("the request for 1 after the 3 went", one_wanted).await?,
        "request for 1",
    )?;
    let t1 = one_held.fencing_token();
    ensure!(
        t2 < t3 && t3 < t1,
        "tokens in arrival order: {t2} (2), {t3} (3), {t1} (1)"
    );
    // Holders of 1 and 2 share the semaphore.
    let another = within(PROMPT, "2 more while 1 of 3 is held", sems[3].acquire(2)).await??;
    for p in [&one_held, &another] {
        ensure!(holds(ctx, p.is_owner()).await?, "is_owner() while holding");
    }
    one_held.release().await?;
    another.release().await?;
    Ok(())
}

scenario!(
    /// `try_acquire` takes free permits at once and fails with [`Error::Locked`], leaving no
    /// key, when too few are free; permits of one session count like anyone's.
    semaphore_try_acquire,
    Shared,
    try_acquire
);

async fn try_acquire(ctx: &Ctx) -> Outcome {
    let [a, b] = two(ctx.sessions(2).await?)?;
    let (sa, sb) = (Semaphore::new(&a, "sem", 2)?, Semaphore::new(&b, "sem", 2)?);
    let first = granted(sa.try_acquire(1).await, "try_acquire(1) of 2 free")?;
    expect_err(
        sb.try_acquire(2).await,
        locked,
        "try_acquire(2) with 1 free",
    )?;
    let second = granted(sa.try_acquire(1).await, "try_acquire(1) of 1 free")?;
    expect_err(
        sb.try_acquire(1).await,
        locked,
        "try_acquire(1) with none free",
    )?;
    ensure_eq!(
        ctx.keys(b"sem/").await?.len(),
        2,
        "keys after the failed try_acquires: the holders' only"
    );
    first.release().await?;
    let third = granted(sb.try_acquire(1).await, "try_acquire(1) after a release")?;
    second.release().await?;
    third.release().await?;
    Ok(())
}

scenario!(
    /// `acquire_timeout` gives [`Error::Timeout`] when the permits do not come in time (also
    /// with a zero timeout) and leaves no key; a dropped guard releases its permits in the
    /// background.
    semaphore_timeout_leaves_nothing,
    Shared,
    timeout_leaves_nothing
);

async fn timeout_leaves_nothing(ctx: &Ctx) -> Outcome {
    let [a, b] = two(ctx.sessions(2).await?)?;
    let (sa, sb) = (Semaphore::new(&a, "sem", 2)?, Semaphore::new(&b, "sem", 2)?);
    let held = sa.acquire(2).await?;
    for timeout in [Duration::from_millis(100), Duration::ZERO] {
        expect_err(
            sb.acquire_timeout(1, timeout).await,
            |e| matches!(e, Error::Timeout),
            format!("acquire_timeout({timeout:?}) with no permit free"),
        )?;
        ctx.wait_keys(b"sem/", 1).await?;
    }
    drop(held);
    ctx.wait_keys(b"sem/", 0).await?;
    let both = within(PROMPT, "2 permits after a dropped guard", sb.acquire(2)).await??;
    both.release().await?;
    Ok(())
}

scenario!(
    /// A cancelled acquire removes its key: a request for 3 (capacity 3, 1 held) is aborted,
    /// and the request for 1 queued behind it is granted at once, with the first permit still
    /// held. No watch is left open once the permits are released.
    semaphore_cancelled_waiter,
    Shared,
    cancelled_waiter
);

async fn cancelled_waiter(ctx: &Ctx) -> Outcome {
    let [a, b, c] = three(ctx.sessions(3).await?)?;
    let (sa, sb, sc) = (
        Semaphore::new(&a, "sem", 3)?,
        Semaphore::new(&b, "sem", 3)?,
        Semaphore::new(&c, "sem", 3)?,
    );
    let held = sa.acquire(1).await?;
    let big = spawn_acquire(&sb, 3);
    ctx.wait_keys(b"sem/", 2).await?;
    let mut small = spawn_acquire(&sc, 1);
    ctx.wait_keys(b"sem/", 3).await?;
    still_waiting("a request for 1 behind a waiting request for 3", &mut small).await?;
    big.abort();
    let small = granted(
        join("the request for 1 once the one ahead gave up", small).await?,
        "request for 1",
    )?;
    ensure!(
        holds(ctx, held.is_owner()).await?,
        "the first holder still holds"
    );
    ctx.wait_keys(b"sem/", 2).await?;
    held.release().await?;
    small.release().await?;
    for s in [&a, &b, &c] {
        ensure_eq!(s.watched_names(), 0, "names watched after the releases");
    }
    // The session that gave up can acquire again.
    let again = within(PROMPT, "acquire by the session that gave up", sb.acquire(3)).await??;
    again.release().await?;
    Ok(())
}

scenario!(
    /// A holder's permits come back when its session ends: its lease revoked, the waiter gets
    /// them and the holder's `lost()` says [`Error::SessionExpired`]; a waiter whose lease is
    /// revoked fails with it. A holder whose key is deleted sees [`Error::NotHeld`] from
    /// `lost()` and `release()`.
    semaphore_session_loss_frees_permits,
    Shared,
    session_loss_frees_permits
);

async fn session_loss_frees_permits(ctx: &Ctx) -> Outcome {
    let [a, b, c] = three(ctx.sessions(3).await?)?;
    let (sa, sb, sc) = (
        Semaphore::new(&a, "sem", 2)?,
        Semaphore::new(&b, "sem", 2)?,
        Semaphore::new(&c, "sem", 2)?,
    );
    let held = sa.acquire(2).await?;
    let waiter = spawn_acquire(&sb, 1);
    ctx.wait_keys(b"sem/", 2).await?;
    let doomed = spawn_acquire(&sc, 1);
    ctx.wait_keys(b"sem/", 3).await?;
    let lease_c = c.lease();
    ctx.store.lease_revoke(lease_c).await?;
    expect_err(
        join("the waiter whose lease was revoked", doomed).await?,
        |e| matches!(e, Error::SessionExpired { lease } if *lease == lease_c),
        "acquire() of a revoked waiter",
    )?;
    let lease_a = a.lease();
    ctx.store.lease_revoke(lease_a).await?;
    let got = granted(
        join("the waiter after the holder's lease went", waiter).await?,
        "waiter",
    )?;
    let lost = within(PROMPT, "lost() of the revoked holder", held.lost()).await?;
    ensure!(
        matches!(lost, Error::SessionExpired { lease } if lease == lease_a),
        "lost() of the revoked holder: {lost:?}"
    );
    expect_err(
        held.release().await,
        |e| matches!(e, Error::SessionExpired { .. }),
        "release() after the session ended",
    )?;
    ctx.store
        .delete(DeleteRequest::key(got.key().to_vec()))
        .await?;
    let lost = within(PROMPT, "lost() after the key's deletion", got.lost()).await?;
    ensure!(
        matches!(lost, Error::NotHeld { .. }),
        "lost() after the key's deletion: {lost:?}"
    );
    expect_err(
        got.release().await,
        |e| matches!(e, Error::NotHeld { .. }),
        "release() after the key's deletion",
    )?;
    Ok(())
}

scenario!(
    /// Users of a name agree on its capacity: while a holder counts with 3, acquiring with 2
    /// (`acquire`, `try_acquire`) is [`Error::CapacityMismatch`] and leaves no key; once the
    /// name is idle, it may be used with 2.
    semaphore_capacity_mismatch,
    Shared,
    capacity_mismatch
);

async fn capacity_mismatch(ctx: &Ctx) -> Outcome {
    let [a, b] = two(ctx.sessions(2).await?)?;
    let (three, two) = (Semaphore::new(&a, "sem", 3)?, Semaphore::new(&b, "sem", 2)?);
    let held = three.acquire(1).await?;
    let mismatch = |e: &Error| {
        matches!(
            e,
            Error::CapacityMismatch {
                requested: 2,
                in_use: 3
            }
        )
    };
    expect_err(two.acquire(1).await, mismatch, "acquire with capacity 2")?;
    expect_err(
        two.try_acquire(1).await,
        mismatch,
        "try_acquire with capacity 2",
    )?;
    ctx.wait_keys(b"sem/", 1).await?;
    held.release().await?;
    let now_two = within(PROMPT, "capacity 2 once idle", two.acquire(2)).await??;
    ensure_eq!(now_two.capacity(), 2, "capacity of the guard");
    now_two.release().await?;
    Ok(())
}

scenario!(
    /// Bad input is [`Error::InvalidArgument`] before anything is written: no permits, a
    /// request for 0 or more than the capacity, an empty or over-long name; a closed session
    /// gives [`Error::SessionClosed`].
    semaphore_bad_input,
    Shared,
    bad_input
);

async fn bad_input(ctx: &Ctx) -> Outcome {
    let s = ctx.session().await?;
    expect_err(Semaphore::new(&s, "sem", 0), invalid, "a semaphore of 0")?;
    expect_err(Semaphore::new(&s, "", 1), invalid, "an empty name")?;
    expect_err(
        Semaphore::new(&s, vec![b'n'; MAX_NAME_LEN + 1], 1),
        invalid,
        "a name over the limit",
    )?;
    let sem = Semaphore::new(&s, "sem", 2)?;
    for permits in [0, 3, u32::MAX] {
        expect_err(
            sem.acquire(permits).await,
            invalid,
            format!("acquire({permits}) of 2"),
        )?;
        expect_err(
            sem.try_acquire(permits).await,
            invalid,
            format!("try_acquire({permits}) of 2"),
        )?;
    }
    ensure_eq!(
        ctx.keys(b"").await?.len(),
        0,
        "keys written by refused calls"
    );
    let closed = ctx.session().await?;
    let on_closed = Semaphore::new(&closed, "sem", 2)?;
    closed.close().await?;
    expect_err(
        on_closed.acquire(1).await,
        |e| matches!(e, Error::SessionClosed),
        "acquire on a closed session",
    )?;
    ensure_eq!(
        ctx.keys(b"").await?.len(),
        0,
        "keys after the closed session's call"
    );
    Ok(())
}

scenario!(
    /// Fencing tokens (the keys' create revisions) rise with each grant, across sessions and
    /// within one, and `is_owner()` holds only while the permits are held.
    semaphore_tokens_rise,
    Shared,
    tokens_rise
);

async fn tokens_rise(ctx: &Ctx) -> Outcome {
    let [a, b] = two(ctx.sessions(2).await?)?;
    let (sa, sb) = (Semaphore::new(&a, "sem", 2)?, Semaphore::new(&b, "sem", 2)?);
    let tokens = std::sync::Mutex::new(Vec::<Revision>::new());
    let mut kept = Vec::new();
    for round in 0..3 {
        for sem in [&sa, &sb] {
            let p = sem.acquire(1).await?;
            ensure!(
                p.revision() >= p.fencing_token(),
                "seen held at {} before its key was written at {}",
                p.revision(),
                p.fencing_token()
            );
            lock_unpoisoned(&tokens).push(p.fencing_token());
            if round == 2 {
                kept.push(p);
            } else {
                let owner = p.is_owner();
                p.release().await?;
                ensure!(!holds(ctx, owner).await?, "is_owner() after the release");
            }
        }
    }
    let tokens = lock_unpoisoned(&tokens).clone();
    ensure!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens must rise: {tokens:?}"
    );
    for p in kept {
        p.release().await?;
    }
    Ok(())
}
