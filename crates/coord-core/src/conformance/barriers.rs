//! Barrier and DoubleBarrier: held / released / waited for; entering and leaving together,
//! with a participant crashing, and with many participants.

use std::future::Future;
use std::time::Duration;

use futures::future::try_join_all;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::support::{
    ensure, ensure_eq, eventually, expect_err, join, scenario, still_waiting, text, within, Ctx,
    Failure, Outcome, PROMPT, SETTLE,
};
use crate::barrier::Barrier;
use crate::double_barrier::{DoubleBarrier, DoubleBarrierEntry};
use crate::error::{Error, Result};
use crate::session::Session;

fn spawn_wait(barrier: &Barrier) -> JoinHandle<Result<()>> {
    let barrier = barrier.clone();
    tokio::spawn(async move { barrier.wait().await })
}

scenario!(
    /// A held barrier blocks every waiter; its release lets them all through. Its key is the
    /// name itself (Go's layout), on no lease; `hold` reports whether it raised the barrier,
    /// `release` whether it was held; nothing is left after the release.
    barrier_hold_wait_release,
    Shared,
    barrier_hold_wait_release_body
);

async fn barrier_hold_wait_release_body(ctx: &Ctx) -> Outcome {
    let barrier = Barrier::new(ctx.store.clone(), "gate")?;
    ensure!(barrier.hold().await?, "the first hold raises the barrier");
    ensure!(!barrier.hold().await?, "a second hold finds it held");
    ensure!(barrier.is_held().await?, "is_held while held");
    let keys = ctx.keys(b"gate").await?;
    ensure_eq!(
        keys.iter()
            .map(|kv| (text(&kv.key), kv.lease))
            .collect::<Vec<_>>(),
        vec![("gate".to_string(), 0)],
        "the barrier's key: the name, on no lease"
    );
    let mut waiters: Vec<_> = (0..3).map(|_| spawn_wait(&barrier)).collect();
    for w in &mut waiters {
        still_waiting("a waiter of a held barrier", w).await?;
    }
    // Another handle (another process) releases it.
    let other = Barrier::new(ctx.store.clone(), "gate")?;
    ensure!(other.release().await?, "release of a held barrier");
    for w in waiters {
        join("a waiter after the release", w).await??;
    }
    ensure!(!barrier.is_held().await?, "is_held after the release");
    ensure!(
        !other.release().await?,
        "a second release finds nothing held"
    );
    Ok(())
}

scenario!(
    /// `wait` returns at once on a barrier never held, and on one held then released before
    /// the wait began (Go's `Wait` would wait for another hold and release); `wait_timeout`
    /// on a held barrier gives [`Error::Timeout`].
    barrier_wait_after_release,
    Shared,
    barrier_wait_after_release_body
);

async fn barrier_wait_after_release_body(ctx: &Ctx) -> Outcome {
    let barrier = Barrier::new(ctx.store.clone(), "b")?;
    within(PROMPT, "wait on a barrier never held", barrier.wait()).await??;
    barrier.hold().await?;
    // Something else written after the hold: Go's Wait would then miss the release.
    ctx.store
        .put(crate::kv::PutRequest::new("unrelated", "x"))
        .await?;
    barrier.release().await?;
    within(PROMPT, "wait after the release", barrier.wait()).await??;
    barrier.hold().await?;
    expect_err(
        barrier.wait_timeout(super::support::SETTLE).await,
        |e| matches!(e, Error::Timeout),
        "wait_timeout on a held barrier",
    )?;
    barrier.release().await?;
    within(PROMPT, "wait after the second release", barrier.wait()).await??;
    ctx.store
        .delete(crate::kv::DeleteRequest::key("unrelated"))
        .await?;
    Ok(())
}

fn spawn_enter(barrier: &DoubleBarrier) -> JoinHandle<Result<DoubleBarrierEntry>> {
    let barrier = barrier.clone();
    tokio::spawn(async move { barrier.enter().await })
}

fn spawn_leave(entry: DoubleBarrierEntry) -> JoinHandle<Result<()>> {
    tokio::spawn(async move { entry.leave().await })
}

/// `k` participants of the double barrier `name`, each on its own session, entered, in the
/// order their keys were written (the first is the oldest).
async fn enter_all(
    ctx: &Ctx,
    name: &str,
    k: usize,
) -> Outcome<(Vec<Session>, Vec<DoubleBarrierEntry>)> {
    let sessions = ctx.sessions(k).await?;
    let waiters = format!("{name}/waiters/");
    let mut entering = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        entering.push(spawn_enter(&DoubleBarrier::new(s, name, k)?));
        // One at a time: keys in a known order, the oldest first.
        ctx.wait_keys(waiters.as_bytes(), i + 1).await?;
        if i + 1 < k {
            for e in &mut entering {
                still_waiting("a participant before the last one entered", e).await?;
            }
        }
    }
    let mut entries = Vec::new();
    for e in entering {
        entries.push(join("entering once all have come", e).await??);
    }
    Ok((sessions, entries))
}

scenario!(
    /// K participants (K sessions) of one double barrier: none gets in before the K-th comes,
    /// then all do; a (K+1)-th is refused ([`Error::InvalidArgument`]) and its key removed.
    /// Go's layout: `name/waiters/<unix nanos>` on each session's lease, `name/ready` on none.
    /// Leaving: nobody gets out while one has not called `leave`; then everyone does, and
    /// nothing is left (the last out deleted `name/ready`).
    double_barrier_enter_leave,
    Shared,
    double_barrier_enter_leave_body
);

async fn double_barrier_enter_leave_body(ctx: &Ctx) -> Outcome {
    const K: usize = 4;
    let (sessions, mut entries) = enter_all(ctx, "db", K).await?;
    let waiters = ctx.keys(b"db/waiters/").await?;
    ensure_eq!(waiters.len(), K, "one key per participant");
    for (kv, s) in waiters.iter().zip(&sessions) {
        ensure_eq!(
            kv.lease,
            s.lease(),
            "a participant's key is on its session's lease"
        );
        let suffix = &kv.key[b"db/waiters/".len()..];
        ensure!(
            !suffix.is_empty() && suffix.iter().all(u8::is_ascii_digit),
            "a participant's key ends with decimal unix nanos: {}",
            text(&kv.key)
        );
    }
    let ready = ctx.keys(b"db/ready").await?;
    ensure!(
        ready.len() == 1 && ready[0].lease == 0,
        "`db/ready` written, on no lease: {ready:?}"
    );
    let extra = ctx.session().await?;
    expect_err(
        DoubleBarrier::new(&extra, "db", K)?.enter().await,
        |e| matches!(e, Error::InvalidArgument { .. }),
        "a participant over the count",
    )?;
    ctx.wait_keys(b"db/waiters/", K).await?;

    // Everyone but the second leaves: nobody gets out, the oldest included.
    let second = entries.remove(1);
    let mut leaving: Vec<_> = entries.into_iter().map(spawn_leave).collect();
    for l in &mut leaving {
        still_waiting("a participant leaving while one has not", l).await?;
    }
    leaving.push(spawn_leave(second));
    for l in leaving {
        join("leaving once all have", l).await??;
    }
    ensure!(
        ctx.keys(b"db/").await?.is_empty(),
        "nothing left after the round"
    );
    Ok(())
}

scenario!(
    /// A participant crashes (its lease revoked) while the others leave: they are let out as
    /// it counts as left, also when it was the oldest (the one the others wait for) and when
    /// it crashes before entering is over (the count then waits for a new participant; the
    /// crashed one's `enter` fails with [`Error::SessionExpired`]). A waiting participant whose
    /// key is deleted by someone fails with [`Error::NotHeld`]. Nothing is left afterwards.
    double_barrier_crash,
    Shared,
    double_barrier_crash_body
);

async fn double_barrier_crash_body(ctx: &Ctx) -> Outcome {
    const K: usize = 3;
    // The oldest crashes while the others leave.
    let (sessions, mut entries) = enter_all(ctx, "crash", K).await?;
    let oldest = entries.remove(0);
    let mut leaving: Vec<_> = entries.into_iter().map(spawn_leave).collect();
    for l in &mut leaving {
        still_waiting("a participant leaving while the oldest has not", l).await?;
    }
    ctx.store.lease_revoke(sessions[0].lease()).await?;
    for l in leaving {
        join("leaving once the oldest crashed", l).await??;
    }
    drop(oldest);
    ensure!(
        ctx.keys(b"crash/").await?.is_empty(),
        "nothing left after the round"
    );

    // A participant crashes while waiting to enter: the count is not reached by it.
    let [a, b, c, d] = <[Session; 4]>::try_from(ctx.sessions(4).await?)
        .map_err(|_| super::support::Failure::new("four sessions"))?;
    let mut ea = spawn_enter(&DoubleBarrier::new(&a, "crash2", K)?);
    let mut eb = spawn_enter(&DoubleBarrier::new(&b, "crash2", K)?);
    ctx.wait_keys(b"crash2/waiters/", 2).await?;
    ctx.store.lease_revoke(a.lease()).await?;
    expect_err(
        join("a waiting participant whose lease is gone", ea).await?,
        |e| matches!(e, Error::SessionExpired { .. }),
        "entering with a revoked lease",
    )
    .map(|_| ())?;
    ea = spawn_enter(&DoubleBarrier::new(&c, "crash2", K)?);
    ctx.wait_keys(b"crash2/waiters/", 2).await?;
    still_waiting("two of three participants", &mut eb).await?;
    let ed = spawn_enter(&DoubleBarrier::new(&d, "crash2", K)?);
    let entries = vec![
        join("b enters", eb).await??,
        join("c enters", ea).await??,
        join("d enters", ed).await??,
    ];
    let leaving: Vec<_> = entries.into_iter().map(spawn_leave).collect();
    for l in leaving {
        join("leaving", l).await??;
    }
    ensure!(
        ctx.keys(b"crash2/").await?.is_empty(),
        "nothing left after the second round"
    );

    // A waiting participant whose key an operator deletes fails with NotHeld.
    let e = ctx.session().await?;
    let entering = spawn_enter(&DoubleBarrier::new(&e, "crash3", 2)?);
    ctx.wait_keys(b"crash3/waiters/", 1).await?;
    ctx.store
        .delete(crate::kv::DeleteRequest::prefix("crash3/waiters/"))
        .await?;
    expect_err(
        join("a participant whose key was deleted", entering).await?,
        |e| matches!(e, Error::NotHeld { .. }),
        "entering after the key was deleted",
    )?;
    Ok(())
}

/// The stack of the thread [`on_small_stack`] polls on: an eighth of a Rust thread's default.
/// A round of [`double_barrier_large_count`] needs the same stack for 5 participants as for
/// 100 (debug build: 80-96 KiB on coord-mem, 144-160 KiB on PostgreSQL, 160-176 KiB on
/// etcd): a recursion adding 1 KiB per participant would overflow it.
const SMALL_STACK: usize = 256 * 1024;

/// Polls `fut` to completion on a thread of its own with a [`SMALL_STACK`], within the
/// scenario's runtime (its tasks, timers and I/O): a future whose polling went deeper with
/// each participant (as a recursion would) overflows that stack, which aborts the process.
fn on_small_stack<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = Outcome<T>> {
    let runtime = tokio::runtime::Handle::current();
    let (sender, receiver) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("conformance-small-stack".into())
        .stack_size(SMALL_STACK)
        .spawn(move || {
            let _ = sender.send(runtime.block_on(fut));
        });
    async move {
        thread.map_err(|e| Failure::new(format!("spawning a thread: {e}")))?;
        receiver
            .await
            .map_err(|_| Failure::new("the small-stack thread ended without an answer"))
    }
}

scenario!(
    /// 100 participants (100 sessions) of one double barrier, entering all at once, all get
    /// in once the last has come (`name/ready` written once, 100 keys). Then the oldest leaves
    /// first (it waits for all the others), and the others leave one after the other, each
    /// once the previous one's key is gone: all get out, and nothing is left. The oldest's
    /// leaving (and everyone's entering) is polled on a thread with a small stack
    /// (`SMALL_STACK`): it loops over the 99 departures, where Go's recipe recursed once per
    /// departure seen (its stack grew with the count). 1,000 participants on coord-mem:
    /// `tests/double_barrier_large.rs` of the `coord` crate.
    double_barrier_large_count,
    Shared,
    double_barrier_large_count_body
);

async fn double_barrier_large_count_body(ctx: &Ctx) -> Outcome {
    const PARTICIPANTS: usize = 100;
    /// Bounds a whole phase of the round.
    const PHASE: Duration = Duration::from_secs(20);
    let sessions = ctx.sessions(PARTICIPANTS).await?;
    let barriers = sessions
        .iter()
        .map(|s| DoubleBarrier::new(s, "big", PARTICIPANTS))
        .collect::<Result<Vec<_>>>()?;
    let entering = on_small_stack(try_join_all(
        barriers.into_iter().map(|b| async move { b.enter().await }),
    ));
    let mut entries = within(PHASE, "100 participants entering", entering).await???;
    ensure_eq!(entries.len(), PARTICIPANTS, "participants in");
    let waiters = ctx.keys(b"big/waiters/").await?;
    ensure_eq!(waiters.len(), PARTICIPANTS, "one key per participant");
    ensure_eq!(ctx.keys(b"big/ready").await?.len(), 1, "`big/ready`");

    let oldest = entries
        .iter()
        .position(|e| e.key() == waiters[0].key)
        .ok_or_else(|| Failure::new("no participant has the oldest key"))?;
    let mut oldest = Box::pin(on_small_stack(entries.swap_remove(oldest).leave()));
    ensure!(
        tokio::time::timeout(SETTLE, &mut oldest).await.is_err(),
        "the oldest participant got out while the others were in"
    );
    let leaving = async {
        let mut leaving = Vec::new();
        for (left, entry) in entries.into_iter().enumerate() {
            leaving.push(spawn_leave(entry));
            // Its key gone (the last one's with the oldest's right after it).
            let left = PARTICIPANTS - 1 - left;
            eventually(format!("{left} participant(s) in"), || async {
                Ok(ctx.keys(b"big/waiters/").await?.len() <= left)
            })
            .await?;
        }
        Ok::<_, Failure>(leaving)
    };
    let leaving = within(PHASE, "99 participants leaving one by one", leaving).await??;
    within(PROMPT, "the oldest participant leaving", oldest).await???;
    for l in leaving {
        join("a participant leaving", l).await??;
    }
    ensure!(
        ctx.keys(b"big/").await?.is_empty(),
        "nothing left after the round"
    );
    Ok(())
}
