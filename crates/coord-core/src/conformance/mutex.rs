//! Mutex: exclusion, try-lock, waiters that expire or give up, release paths, fencing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use super::support::scenario;
use super::support::{
    ensure, ensure_eq, eventually, expect_err, join, lost_is_pending_and_cheap, still_waiting,
    text, within, Ctx, Failure, Outcome, PROMPT, SETTLE,
};
use crate::error::{Error, Result};
use crate::fencing::Fence;
use crate::guard::LockGuard;
use crate::kv::{DeleteRequest, PutRequest, RangeRequest, Revision};
use crate::mutex::Mutex;
use crate::session::lock_unpoisoned;
use crate::txn::{Compare, Txn};

/// `mutex.lock()` in a task of its own.
pub(crate) fn spawn_lock(mutex: &Mutex) -> JoinHandle<Result<LockGuard>> {
    let mutex = mutex.clone();
    tokio::spawn(async move { mutex.lock().await })
}

/// Whether a transaction guarded by `compare` runs its success branch (which writes nothing).
pub(crate) async fn holds(ctx: &Ctx, compare: Compare) -> Outcome<bool> {
    let resp = ctx
        .store
        .txn(Txn::new().when([compare]).and_then([]))
        .await?;
    Ok(resp.succeeded)
}

/// Unwraps a lock result that must be a guard.
#[track_caller]
pub(crate) fn acquired(result: Result<LockGuard>, what: &str) -> Outcome<LockGuard> {
    result.map_err(|e| Failure::new(format!("{what}: expected the lock, got {e} ({e:?})")))
}

scenario!(
    /// Eight sessions take one mutex four times each, all at once: never two holders (an
    /// in-process counter checks), the store agrees on the holder each time, fencing tokens
    /// strictly rise in acquisition order, and a counter updated under `is_owner()` loses no
    /// update.
    mutex_exclusion,
    Shared,
    exclusion
);

async fn exclusion(ctx: &Ctx) -> Outcome {
    const SESSIONS: usize = 8;
    const ROUNDS: usize = 4;
    let sessions = ctx.sessions(SESSIONS).await?;
    ctx.store.put(PutRequest::new("counter", "0")).await?;
    let inside = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(std::sync::Mutex::new(Vec::<Revision>::new()));
    let start = Arc::new(Barrier::new(SESSIONS));
    let mut tasks = Vec::new();
    for session in sessions {
        let (inside, tokens, start, store) = (
            inside.clone(),
            tokens.clone(),
            start.clone(),
            ctx.store.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mutex = Mutex::new(&session, "lock")?;
            start.wait().await;
            for _ in 0..ROUNDS {
                let guard = mutex.lock().await?;
                let before = inside.fetch_add(1, Ordering::SeqCst);
                ensure!(
                    before == 0,
                    "{before} other holder(s) inside the critical section"
                );
                lock_unpoisoned(&tokens).push(guard.fencing_token());
                let first = store.range(RangeRequest::first_created("lock/")).await?;
                ensure!(
                    first
                        .kvs
                        .first()
                        .is_some_and(|kv| kv.key == guard.key()
                            && kv.create_revision == guard.fencing_token()),
                    "the holder's key {:?} (token {}) is not the first of the prefix: {:?}",
                    text(guard.key()),
                    guard.fencing_token(),
                    first.kvs
                );
                let counter = store.range(RangeRequest::key("counter")).await?;
                let n: u64 = counter
                    .kvs
                    .first()
                    .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok())
                    .unwrap_or(u64::MAX);
                tokio::task::yield_now().await;
                let write = store
                    .txn(
                        Txn::new()
                            .when([guard.is_owner()])
                            .and_then([PutRequest::new("counter", (n + 1).to_string()).into()]),
                    )
                    .await?;
                ensure!(
                    write.succeeded,
                    "a write guarded by is_owner() failed while holding the lock"
                );
                inside.fetch_sub(1, Ordering::SeqCst);
                guard.unlock().await?;
            }
            Ok::<(), Failure>(())
        }));
    }
    for task in tasks {
        within(Duration::from_secs(60), "a contender's rounds", task).await???;
    }
    let tokens = lock_unpoisoned(&tokens).clone();
    ensure_eq!(tokens.len(), SESSIONS * ROUNDS, "acquisitions");
    ensure!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens must strictly rise in acquisition order: {tokens:?}"
    );
    let counter = ctx.store.range(RangeRequest::key("counter")).await?;
    ensure_eq!(
        counter.kvs.first().map(|kv| text(&kv.value)),
        Some((SESSIONS * ROUNDS).to_string()),
        "the counter incremented once per acquisition"
    );
    ctx.store.delete(DeleteRequest::key("counter")).await?;
    Ok(())
}

scenario!(
    /// Six sessions `try_lock` at once: exactly one wins, the others get [`Error::Locked`] and
    /// leave no key; once the winner unlocks, a `try_lock` wins again.
    mutex_try_lock_one_wins,
    Shared,
    try_lock_one_wins
);

async fn try_lock_one_wins(ctx: &Ctx) -> Outcome {
    const N: usize = 6;
    let sessions = ctx.sessions(N).await?;
    let start = Arc::new(Barrier::new(N));
    let mut tasks = Vec::new();
    for session in &sessions {
        let (mutex, start) = (Mutex::new(session, "lock")?, start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            mutex.try_lock().await
        }));
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match join("a try_lock", task).await? {
            Ok(guard) => winners.push((i, guard)),
            Err(Error::Locked) => losers.push(i),
            Err(e) => return Err(Failure::new(format!("try_lock: wrong error {e} ({e:?})"))),
        }
    }
    ensure_eq!(
        winners.len(),
        1,
        "winners among {N} concurrent try_locks (losers: {losers:?})"
    );
    let (w, guard) = winners.remove(0);
    let token = guard.fencing_token();
    let keys = ctx.keys(b"lock/").await?;
    ensure_eq!(
        super::support::keys_of(&keys),
        vec![text(guard.key())],
        "keys once every try_lock returned: the winner's only"
    );
    let loser = &sessions[losers[0]];
    expect_err(
        Mutex::new(loser, "lock")?.try_lock().await,
        |e| matches!(e, Error::Locked),
        "try_lock while held",
    )?;
    guard.unlock().await?;
    let again = acquired(
        Mutex::new(loser, "lock")?.try_lock().await,
        "try_lock once free",
    )?;
    ensure!(
        again.fencing_token() > token,
        "token of the second winner {} <= the first's {token} (first winner: session {w})",
        again.fencing_token()
    );
    again.unlock().await?;
    Ok(())
}

scenario!(
    /// `try_lock` while the same session holds the lock fails at once with
    /// [`Error::Locked`] (it must not wait for the session's own guard), and leaves the
    /// holder's key alone.
    mutex_try_lock_same_session,
    Shared,
    try_lock_same_session
);

async fn try_lock_same_session(ctx: &Ctx) -> Outcome {
    let s = ctx.session().await?;
    let mutex = Mutex::new(&s, "lock")?;
    let guard = mutex.lock().await?;
    let second = within(PROMPT, "try_lock on the holding session", mutex.try_lock()).await?;
    expect_err(
        second,
        |e| matches!(e, Error::Locked),
        "try_lock on the holding session",
    )?;
    ensure!(
        holds(ctx, guard.is_owner()).await?,
        "the holder still owns the lock after the failed try_lock"
    );
    guard.unlock().await?;
    let again = acquired(
        mutex.try_lock().await,
        "try_lock once the session's own guard is unlocked",
    )?;
    again.unlock().await?;
    Ok(())
}

scenario!(
    /// Unlocking a guard whose key is already gone fails: deleted by someone else →
    /// [`Error::NotHeld`] (and `lost()` reports it); lease revoked → [`Error::NotHeld`] or
    /// [`Error::SessionExpired`]. ("Unlock twice" itself does not compile: `unlock` consumes
    /// the guard.)
    mutex_unlock_after_key_gone,
    Shared,
    unlock_after_key_gone
);

async fn unlock_after_key_gone(ctx: &Ctx) -> Outcome {
    let s = ctx.session().await?;
    let mutex = Mutex::new(&s, "lock")?;
    let guard = mutex.lock().await?;
    {
        let lost = guard.lost();
        tokio::pin!(lost);
        ensure!(
            tokio::time::timeout(SETTLE, &mut lost).await.is_err(),
            "lost() resolved while the lock was held"
        );
        ctx.store
            .delete(DeleteRequest::key(guard.key().to_vec()))
            .await?;
        let e = within(PROMPT, "lost() after the key was deleted", lost).await?;
        ensure!(
            matches!(e, Error::NotHeld { .. }),
            "lost() after the key was deleted: {e:?}"
        );
    }
    expect_err(
        guard.unlock().await,
        |e| matches!(e, Error::NotHeld { .. }),
        "unlock after the key was deleted",
    )?;

    let guard = within(PROMPT, "relock after the key was deleted", mutex.lock()).await??;
    ctx.store.lease_revoke(s.lease()).await?;
    expect_err(
        guard.unlock().await,
        |e| matches!(e, Error::NotHeld { .. } | Error::SessionExpired { .. }),
        "unlock after the session's lease was revoked",
    )?;
    Ok(())
}

scenario!(
    /// A waiter whose session's lease is revoked while it waits fails with
    /// [`Error::SessionExpired`], never with a guard; the holder keeps the lock.
    mutex_waiter_session_revoked,
    Shared,
    waiter_session_revoked
);

async fn waiter_session_revoked(ctx: &Ctx) -> Outcome {
    let [h, w] = two(ctx.sessions(2).await?)?;
    let guard = Mutex::new(&h, "lock")?.lock().await?;
    let waiter = spawn_lock(&Mutex::new(&w, "lock")?);
    ctx.wait_keys(b"lock/", 2).await?;
    ctx.store.lease_revoke(w.lease()).await?;
    let lease = w.lease();
    expect_err(
        join("the revoked waiter", waiter).await?,
        |e| matches!(e, Error::SessionExpired { lease: l } if *l == lease),
        "lock() of a waiter whose lease was revoked",
    )?;
    ensure!(
        holds(ctx, guard.is_owner()).await?,
        "the holder lost the lock when a waiter expired"
    );
    ctx.wait_keys(b"lock/", 1).await?;
    guard.unlock().await?;
    Ok(())
}

/// Two sessions out of a vector of two.
pub(crate) fn two<T>(v: Vec<T>) -> Outcome<[T; 2]> {
    v.try_into()
        .map_err(|_| Failure::new("scenario self-check: expected two items"))
}

/// Three out of three.
pub(crate) fn three<T>(v: Vec<T>) -> Outcome<[T; 3]> {
    v.try_into()
        .map_err(|_| Failure::new("scenario self-check: expected three items"))
}

scenario!(
    /// Holder H, waiters W1 then W2. W1's lease is revoked: W2 must keep waiting for H (not
    /// take the lock because its predecessor vanished), and gets it once H unlocks.
    mutex_waiter_ahead_expires,
    Shared,
    waiter_ahead_expires
);

async fn waiter_ahead_expires(ctx: &Ctx) -> Outcome {
    let [h, w1, w2] = three(ctx.sessions(3).await?)?;
    let guard = Mutex::new(&h, "lock")?.lock().await?;
    let first = spawn_lock(&Mutex::new(&w1, "lock")?);
    ctx.wait_keys(b"lock/", 2).await?;
    let mut second = spawn_lock(&Mutex::new(&w2, "lock")?);
    ctx.wait_keys(b"lock/", 3).await?;
    ctx.store.lease_revoke(w1.lease()).await?;
    expect_err(
        join("the expired waiter", first).await?,
        |e| matches!(e, Error::SessionExpired { .. }),
        "lock() of the expired waiter",
    )?;
    still_waiting(
        "the waiter behind the expired one, while the holder holds",
        &mut second,
    )
    .await?;
    guard.unlock().await?;
    let next = acquired(
        join("the last waiter", second).await?,
        "the waiter after the holder unlocked",
    )?;
    ensure!(
        holds(ctx, next.is_owner()).await?,
        "the last waiter's guard is not the owner"
    );
    next.unlock().await?;
    Ok(())
}

scenario!(
    /// A session relocks after unlocking (with a higher token), and a second `lock()` of the
    /// same session waits for the first guard's unlock, without jumping ahead of another
    /// session that queued before it.
    mutex_same_session_relock,
    Shared,
    same_session_relock
);

async fn same_session_relock(ctx: &Ctx) -> Outcome {
    let [s, other] = two(ctx.sessions(2).await?)?;
    let mutex = Mutex::new(&s, "lock")?;
    let g1 = mutex.lock().await?;
    let t1 = g1.fencing_token();
    g1.unlock().await?;
    let g2 = within(PROMPT, "relock by the same session", mutex.lock()).await??;
    ensure!(
        g2.fencing_token() > t1,
        "token after relock {} <= {t1}",
        g2.fencing_token()
    );
    let mut theirs = spawn_lock(&Mutex::new(&other, "lock")?);
    ctx.wait_keys(b"lock/", 2).await?;
    // A second handle on the same name and session: same key, so it takes turns in-process.
    let mut mine = spawn_lock(&Mutex::new(&s, "lock")?);
    still_waiting("a second lock() of the holding session", &mut mine).await?;
    still_waiting("another session's lock()", &mut theirs).await?;
    g2.unlock().await?;
    let g3 = acquired(
        join("the other session's lock()", theirs).await?,
        "other session",
    )?;
    still_waiting(
        "the session's second lock(), queued after the other session",
        &mut mine,
    )
    .await?;
    let t3 = g3.fencing_token();
    g3.unlock().await?;
    let g4 = acquired(
        join("the session's second lock()", mine).await?,
        "second lock()",
    )?;
    ensure!(
        g4.fencing_token() > t3,
        "tokens must rise: {t3} then {}",
        g4.fencing_token()
    );
    g4.unlock().await?;
    Ok(())
}

scenario!(
    /// A waiter that gives up (`lock_timeout` → [`Error::Timeout`], a zero timeout, or its
    /// task aborted) leaves no key and does not hold up the next waiter.
    mutex_cancelled_waiter,
    Shared,
    cancelled_waiter
);

async fn cancelled_waiter(ctx: &Ctx) -> Outcome {
    let sessions = ctx.sessions(4).await?;
    let mutexes: Vec<Mutex> = sessions
        .iter()
        .map(|s| Mutex::new(s, "lock"))
        .collect::<Result<_>>()?;
    let guard = mutexes[0].lock().await?;
    expect_err(
        mutexes[1].lock_timeout(Duration::from_millis(100)).await,
        |e| matches!(e, Error::Timeout),
        "lock_timeout while held",
    )?;
    ctx.wait_keys(b"lock/", 1).await?;
    expect_err(
        mutexes[1].lock_timeout(Duration::ZERO).await,
        |e| matches!(e, Error::Timeout),
        "lock_timeout(0) while held",
    )?;
    ctx.wait_keys(b"lock/", 1).await?;
    let aborted = spawn_lock(&mutexes[2]);
    ctx.wait_keys(b"lock/", 2).await?;
    aborted.abort();
    ctx.wait_keys(b"lock/", 1).await?;
    let next = spawn_lock(&mutexes[3]);
    ctx.wait_keys(b"lock/", 2).await?;
    guard.unlock().await?;
    let g = acquired(
        join("the waiter after the cancelled ones", next).await?,
        "next waiter",
    )?;
    g.unlock().await?;
    // The sessions that gave up can lock again.
    for m in &mutexes[1..3] {
        let g = within(PROMPT, "lock by a session that gave up before", m.lock()).await??;
        g.unlock().await?;
    }
    Ok(())
}

scenario!(
    /// Closing the holder's session releases the lock: the waiter gets it, the old guard's
    /// `lost()` reports [`Error::SessionClosed`], and its `unlock()` fails.
    mutex_released_on_session_close,
    Shared,
    released_on_session_close
);

async fn released_on_session_close(ctx: &Ctx) -> Outcome {
    let [h, w] = two(ctx.sessions(2).await?)?;
    let guard = Mutex::new(&h, "lock")?.lock().await?;
    let waiter = spawn_lock(&Mutex::new(&w, "lock")?);
    ctx.wait_keys(b"lock/", 2).await?;
    h.close().await?;
    let next = acquired(
        join("the waiter after the holder's session closed", waiter).await?,
        "waiter",
    )?;
    let e = within(PROMPT, "lost() of the closed session's guard", guard.lost()).await?;
    ensure!(
        matches!(e, Error::SessionClosed),
        "lost() of a guard whose session was closed: {e:?}"
    );
    expect_err(
        guard.unlock().await,
        |e| matches!(e, Error::SessionClosed),
        "unlock() of a guard whose session was closed",
    )?;
    next.unlock().await?;
    Ok(())
}

scenario!(
    /// Closing a waiter's own session while it waits ends its `lock()` with
    /// [`Error::SessionClosed`] and removes its key.
    mutex_waiter_session_closed,
    Shared,
    waiter_session_closed
);

async fn waiter_session_closed(ctx: &Ctx) -> Outcome {
    let [h, w] = two(ctx.sessions(2).await?)?;
    let guard = Mutex::new(&h, "lock")?.lock().await?;
    let waiter = spawn_lock(&Mutex::new(&w, "lock")?);
    ctx.wait_keys(b"lock/", 2).await?;
    w.close().await?;
    expect_err(
        join("the waiter whose session closed", waiter).await?,
        |e| matches!(e, Error::SessionClosed),
        "lock() whose session was closed while waiting",
    )?;
    ctx.wait_keys(b"lock/", 1).await?;
    ensure!(
        holds(ctx, guard.is_owner()).await?,
        "the holder lost the lock"
    );
    guard.unlock().await?;
    Ok(())
}

scenario!(
    /// When the holder's lease is revoked behind its back, the guard's `lost()` fires
    /// promptly, the session notices within its TTL, and the session then refuses to lock
    /// with [`Error::SessionExpired`].
    mutex_guard_lost_on_revoke,
    Shared,
    guard_lost_on_revoke
);

async fn guard_lost_on_revoke(ctx: &Ctx) -> Outcome {
    let s = ctx.session_ttl(2).await?;
    let mutex = Mutex::new(&s, "lock")?;
    let guard = mutex.lock().await?;
    {
        let lost = guard.lost();
        tokio::pin!(lost);
        ensure!(
            tokio::time::timeout(SETTLE, &mut lost).await.is_err(),
            "lost() resolved while the lock was held"
        );
        ctx.store.lease_revoke(s.lease()).await?;
        let e = within(PROMPT, "lost() after the lease was revoked", lost).await?;
        ensure!(
            matches!(e, Error::SessionExpired { .. } | Error::NotHeld { .. }),
            "lost() after the lease was revoked: {e:?}"
        );
    }
    within(
        Duration::from_secs(s.ttl() as u64) + PROMPT,
        "the session noticing its lease is gone",
        s.lost(),
    )
    .await?;
    ensure!(
        s.is_lost() && !s.is_closed(),
        "is_lost/is_closed after the revoke"
    );
    expect_err(
        guard.unlock().await,
        |e| matches!(e, Error::SessionExpired { .. }),
        "unlock() once the session noticed its lease is gone",
    )?;
    expect_err(
        mutex.lock().await,
        |e| matches!(e, Error::SessionExpired { .. }),
        "lock() on an expired session",
    )?;
    Ok(())
}

scenario!(
    /// `is_owner()` in a user transaction holds while the guard holds and fails after the
    /// unlock, also once another session holds; tokens rise, and a [`Fence`] rejects the old
    /// one.
    mutex_is_owner_fencing,
    Shared,
    is_owner_fencing
);

async fn is_owner_fencing(ctx: &Ctx) -> Outcome {
    let [a, b] = two(ctx.sessions(2).await?)?;
    let ga = Mutex::new(&a, "lock")?.lock().await?;
    let owner_a = ga.is_owner();
    let token_a = ga.fencing_token();
    let write = |compare: Compare, value: &'static str| {
        let store = ctx.store.clone();
        async move {
            store
                .txn(
                    Txn::new()
                        .when([compare])
                        .and_then([PutRequest::new("resource", value).into()]),
                )
                .await
                .map(|r| r.succeeded)
        }
    };
    ensure!(
        write(owner_a.clone(), "a").await?,
        "a write guarded by the holder's is_owner()"
    );
    let waiter = spawn_lock(&Mutex::new(&b, "lock")?);
    ctx.wait_keys(b"lock/", 2).await?;
    ensure!(
        write(owner_a.clone(), "a2").await?,
        "is_owner() while another session waits"
    );
    ga.unlock().await?;
    let gb = acquired(join("the second holder", waiter).await?, "second holder")?;
    ensure!(
        !write(owner_a.clone(), "stale").await?,
        "a write guarded by the released guard's is_owner() must fail"
    );
    ensure!(
        write(gb.is_owner(), "b").await?,
        "a write guarded by the new holder's is_owner()"
    );
    let token_b = gb.fencing_token();
    ensure!(
        token_b > token_a,
        "tokens must rise: {token_a} then {token_b}"
    );
    let fence = Fence::new();
    ensure!(
        fence.accept(token_a).is_ok() && fence.accept(token_b).is_ok(),
        "the fence accepts rising tokens"
    );
    ensure!(
        fence.accept(token_a).is_err(),
        "the fence must reject the older token"
    );
    let owner_b = gb.is_owner();
    gb.unlock().await?;
    ensure!(
        !write(owner_b, "late").await?,
        "is_owner() after unlock must fail"
    );
    let v = ctx.store.range(RangeRequest::key("resource")).await?;
    ensure_eq!(
        v.kvs.first().map(|kv| text(&kv.value)),
        Some("b".to_string()),
        "the resource's value"
    );
    ctx.store.delete(DeleteRequest::key("resource")).await?;
    Ok(())
}

scenario!(
    /// Dropping a guard without `unlock` releases the lock in the background: the waiter gets
    /// it, and the dropping session can lock again.
    mutex_dropped_guard_releases,
    Shared,
    dropped_guard_releases
);

async fn dropped_guard_releases(ctx: &Ctx) -> Outcome {
    let [h, w] = two(ctx.sessions(2).await?)?;
    let mutex = Mutex::new(&h, "lock")?;
    let guard = mutex.lock().await?;
    let waiter = spawn_lock(&Mutex::new(&w, "lock")?);
    ctx.wait_keys(b"lock/", 2).await?;
    drop(guard);
    let next = acquired(
        join("the waiter after a dropped guard", waiter).await?,
        "waiter",
    )?;
    let mut again = spawn_lock(&mutex);
    still_waiting("relock by the session that dropped its guard", &mut again).await?;
    drop(next);
    let g = acquired(
        join("relock after the other guard was dropped", again).await?,
        "relock",
    )?;
    g.unlock().await?;
    Ok(())
}

scenario!(
    /// Names are kept apart by the trailing `/`: `a` and `ab` are different locks, `test`
    /// ignores a key `testa`; names may hold any bytes (NUL, non-UTF-8).
    mutex_names_apart,
    Shared,
    names_apart
);

async fn names_apart(ctx: &Ctx) -> Outcome {
    let [a, b] = two(ctx.sessions(2).await?)?;
    let ga = Mutex::new(&a, "a")?.lock().await?;
    let gab = acquired(
        Mutex::new(&b, "ab")?.try_lock().await,
        "lock `ab` while `a` is held",
    )?;
    ctx.store.put(PutRequest::new("testa", "x")).await?;
    ctx.store.put(PutRequest::new("test", "x")).await?;
    let gt = acquired(
        Mutex::new(&b, "test")?.try_lock().await,
        "lock `test` beside keys `test` and `testa`",
    )?;
    let odd: &[u8] = b"n\0\xff";
    let godd = acquired(
        Mutex::new(&a, odd)?.try_lock().await,
        "lock with a NUL and non-UTF-8 name",
    )?;
    ensure!(
        godd.key().starts_with(b"n\0\xff/"),
        "key of the odd name: {:?}",
        godd.key()
    );
    expect_err(
        Mutex::new(&b, odd)?.try_lock().await,
        |e| matches!(e, Error::Locked),
        "the odd name is one lock",
    )?;
    for g in [ga, gab, gt, godd] {
        g.unlock().await?;
    }
    ctx.store.delete(DeleteRequest::prefix("test")).await?;
    eventually("the namespace empty", || async {
        Ok(ctx.keys(b"").await?.is_empty())
    })
    .await?;
    Ok(())
}

scenario!(
    /// A guard's `lost()` reports a delete of its key by someone else (an operator's `del`)
    /// with [`Error::NotHeld`], for a lock taken at once and for one taken after waiting; and
    /// it is cheap in a `select!` loop: once set up (the first call of an uncontended holder:
    /// one watch and one read; none for a holder that waited), calling it again costs no
    /// backend call.
    mutex_lost_on_key_delete,
    Shared,
    lost_on_key_delete
);

async fn lost_on_key_delete(ctx: &Ctx) -> Outcome {
    let counting = crate::counting::Counting::new(ctx.store.clone());
    let s = crate::session::Session::new(counting.clone(), super::support::SESSION_TTL).await?;
    ctx.track_session(&s);
    let other = ctx.session().await?;

    // Taken at once: nothing watched until lost() is first awaited.
    let guard = Mutex::new(&s, "a")?.lock().await?;
    lost_is_pending_and_cheap(&counting, || guard.lost(), true).await?;
    ctx.store
        .delete(DeleteRequest::key(guard.key().to_vec()))
        .await?;
    let e = within(PROMPT, "lost() after the key was deleted", guard.lost()).await?;
    ensure!(
        matches!(e, Error::NotHeld { .. }),
        "lost() after an operator deleted the key: {e:?}"
    );
    let other_guard = within(
        PROMPT,
        "another session's try_lock after the delete",
        Mutex::new(&other, "a")?.try_lock(),
    )
    .await??;
    other_guard.unlock().await?;
    expect_err(
        guard.unlock().await,
        |e| matches!(e, Error::NotHeld { .. }),
        "unlock() of a deleted key",
    )?;

    // Taken after waiting: the wait's watch keeps reporting, no setup call at all.
    let held = Mutex::new(&other, "b")?.lock().await?;
    let waiter = spawn_lock(&Mutex::new(&s, "b")?);
    ctx.wait_keys(b"b/", 2).await?;
    held.unlock().await?;
    let guard = acquired(join("the waiter", waiter).await?, "waiter")?;
    lost_is_pending_and_cheap(&counting, || guard.lost(), false).await?;
    ctx.store
        .delete(DeleteRequest::key(guard.key().to_vec()))
        .await?;
    let e = within(
        PROMPT,
        "lost() of the waiter after the delete",
        guard.lost(),
    )
    .await?;
    ensure!(
        matches!(e, Error::NotHeld { .. }),
        "lost() of the waiter after the delete: {e:?}"
    );
    drop(guard);
    Ok(())
}

scenario!(
    /// A waiter whose key is deleted by someone else while its lease lives gets
    /// [`Error::NotHeld`] (not [`Error::SessionExpired`]), and its session stays usable.
    mutex_waiter_key_deleted,
    Shared,
    waiter_key_deleted
);

async fn waiter_key_deleted(ctx: &Ctx) -> Outcome {
    let [h, w] = two(ctx.sessions(2).await?)?;
    let guard = Mutex::new(&h, "lock")?.lock().await?;
    let mutex = Mutex::new(&w, "lock")?;
    let waiter = spawn_lock(&mutex);
    ctx.wait_keys(b"lock/", 2).await?;
    ctx.store
        .delete(DeleteRequest::key(mutex.key().to_vec()))
        .await?;
    expect_err(
        join("the waiter whose key was deleted", waiter).await?,
        |e| matches!(e, Error::NotHeld { .. }),
        "lock() of a waiter whose key an operator deleted",
    )?;
    ensure!(!w.is_lost(), "the waiter's session ended with its key");
    guard.unlock().await?;
    let again = within(PROMPT, "lock() again on that session", mutex.lock()).await??;
    again.unlock().await?;
    Ok(())
}

scenario!(
    /// A session keeps a watch on a name only while it has a waiter or holder there: after
    /// locking many contended names in turn, it keeps none open once it holds nothing.
    mutex_watches_bounded,
    Shared,
    watches_bounded
);

async fn watches_bounded(ctx: &Ctx) -> Outcome {
    let holder = ctx.session().await?;
    let worker =
        crate::session::Session::new(ctx.store.clone(), super::support::SESSION_TTL).await?;
    ctx.track_session(&worker);
    for i in 0..40 {
        let name = format!("order/{i}");
        let held = Mutex::new(&holder, &name)?.lock().await?;
        let waiter = spawn_lock(&Mutex::new(&worker, &name)?);
        ctx.wait_keys(format!("{name}/").as_bytes(), 2).await?;
        held.unlock().await?;
        let guard = acquired(join("the worker", waiter).await?, "worker")?;
        ensure!(
            worker.watched_names() >= 1,
            "the worker watches the name it waited on"
        );
        guard.unlock().await?;
    }
    eventually("the worker's watches closed", || async {
        Ok(worker.watched_names() == 0)
    })
    .await?;
    Ok(())
}
