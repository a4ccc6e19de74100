//! Sessions and bad input: TTL checks, existing and unknown leases, close, loss, names.

use std::collections::BTreeSet;

use super::mutex::holds;
use super::support::{ensure, ensure_eq, expect_err, scenario, within, Ctx, Outcome, PROMPT};
use crate::backend::Capability;
use crate::election::Election;
use crate::error::Error;
use crate::kv::LeaseId;
use crate::mutex::Mutex;
use crate::names::MAX_NAME_LEN;
use crate::rwlock::RwLock;
use crate::session::Session;

fn invalid(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument { .. })
}

fn closed(e: &Error) -> bool {
    matches!(e, Error::SessionClosed)
}

scenario!(
    /// A session TTL of `0`, negative, or above the store's maximum is
    /// [`Error::InvalidArgument`], as is a lease id `<= 0`, and (where leases can be listed) no
    /// lease is created. Runs alone in the process, as it compares the store's whole lease list.
    session_invalid_ttl,
    Exclusive,
    invalid_ttl
);

async fn invalid_ttl(ctx: &Ctx) -> Outcome {
    let listed = ctx.has(Capability::LeaseList);
    let before: BTreeSet<LeaseId> = if listed {
        ctx.store.lease_list().await?.into_iter().collect()
    } else {
        BTreeSet::new()
    };
    let mut ttls = vec![0, -1, i64::MIN];
    let max = ctx.store.limits().max_ttl;
    if max < i64::MAX {
        ttls.push(max + 1);
    }
    for ttl in ttls {
        expect_err(
            Session::new(ctx.store.clone(), ttl).await,
            invalid,
            format!("a session with TTL {ttl}"),
        )?;
    }
    for id in [0, -1] {
        expect_err(
            Session::builder(ctx.store.clone())
                .with_lease(id)
                .build()
                .await,
            invalid,
            format!("a session on lease id {id}"),
        )?;
    }
    if !listed {
        return Ok(());
    }
    let after: BTreeSet<LeaseId> = ctx.store.lease_list().await?.into_iter().collect();
    let created: Vec<String> = after
        .difference(&before)
        .map(|id| format!("{id:x}"))
        .collect();
    ensure!(
        created.is_empty(),
        "leases created by refused sessions: {created:?}"
    );
    Ok(())
}

scenario!(
    /// A session on an unknown or revoked lease is [`Error::LeaseNotFound`].
    session_unknown_lease,
    Shared,
    unknown_lease
);

async fn unknown_lease(ctx: &Ctx) -> Outcome {
    let id = super::lease::unknown_lease(ctx).await?;
    expect_err(
        Session::builder(ctx.store.clone())
            .with_lease(id)
            .build()
            .await,
        |e| matches!(e, Error::LeaseNotFound { lease } if *lease == id),
        "a session on an unknown lease",
    )?;
    let lease = ctx.grant(30).await?;
    ctx.store.lease_revoke(lease.id).await?;
    expect_err(
        Session::builder(ctx.store.clone())
            .with_lease(lease.id)
            .build()
            .await,
        |e| matches!(e, Error::LeaseNotFound { .. }),
        "a session on a revoked lease",
    )?;
    Ok(())
}

scenario!(
    /// A session on an existing lease uses it (its id and TTL) for its keys, and `close()`
    /// revokes it.
    session_existing_lease,
    Shared,
    existing_lease
);

async fn existing_lease(ctx: &Ctx) -> Outcome {
    let lease = ctx.grant(20).await?;
    let s = Session::builder(ctx.store.clone())
        .with_lease(lease.id)
        .build()
        .await?;
    ctx.track_session(&s);
    ensure_eq!(
        (s.lease(), s.ttl()),
        (lease.id, 20),
        "(lease, ttl) of a session on an existing lease"
    );
    let g = Mutex::new(&s, "lock")?.lock().await?;
    let keys = ctx.keys(b"lock/").await?;
    ensure!(
        keys.len() == 1 && keys[0].lease == lease.id,
        "the lock key is on the given lease: {keys:?}"
    );
    g.unlock().await?;
    s.close().await?;
    ensure!(
        !ctx.lease_alive(lease.id).await?,
        "close() revokes the lease the session was built on"
    );
    Ok(())
}

scenario!(
    /// `close()` revokes the lease (its keys go: a held lock, a candidacy), ends the session
    /// (`lost()` resolves, `is_closed`), is idempotent; afterwards every primitive call is
    /// [`Error::SessionClosed`].
    session_close,
    Shared,
    close
);

async fn close(ctx: &Ctx) -> Outcome {
    let s = ctx.session().await?;
    let mutex = Mutex::new(&s, "lock")?;
    let rw = RwLock::new(&s, "rw")?;
    let election = Election::new(&s, "e")?;
    let guard = mutex.lock().await?;
    let read = rw.read().await?;
    let leadership = election.campaign("v").await?;
    ensure_eq!(ctx.keys(b"").await?.len(), 3, "keys held before close");
    let owner = guard.is_owner();
    s.close().await?;
    ensure!(
        s.is_closed() && s.is_lost(),
        "is_closed/is_lost after close"
    );
    within(PROMPT, "lost() after close", s.lost()).await?;
    ensure_eq!(ctx.keys(b"").await?.len(), 0, "keys left after close");
    ensure!(
        !ctx.lease_alive(s.lease()).await?,
        "the lease is revoked by close"
    );
    ensure!(!holds(ctx, owner).await?, "is_owner() after close");
    s.close().await?;

    expect_err(mutex.lock().await, closed, "lock() after close")?;
    expect_err(mutex.try_lock().await, closed, "try_lock() after close")?;
    expect_err(
        Mutex::new(&s, "other")?.lock().await,
        closed,
        "lock() of a new mutex after close",
    )?;
    expect_err(rw.read().await, closed, "read() after close")?;
    expect_err(rw.write().await, closed, "write() after close")?;
    expect_err(rw.try_read().await, closed, "try_read() after close")?;
    expect_err(rw.try_write().await, closed, "try_write() after close")?;
    expect_err(
        election.campaign("w").await,
        closed,
        "campaign() after close",
    )?;
    expect_err(
        election
            .resume(leadership.key().to_vec(), leadership.rev())
            .await,
        closed,
        "resume() after close",
    )?;
    expect_err(
        leadership.proclaim("w").await,
        closed,
        "proclaim() after close",
    )?;
    expect_err(guard.unlock().await, closed, "unlock() after close")?;
    expect_err(
        read.unlock().await,
        closed,
        "unlock() of a read lock after close",
    )?;
    expect_err(
        leadership.resign().await,
        |e| matches!(e, Error::SessionClosed | Error::NotLeader),
        "resign() after close",
    )?;
    ensure_eq!(
        ctx.keys(b"").await?.len(),
        0,
        "keys written by calls after close"
    );
    Ok(())
}

scenario!(
    /// A session whose lease is revoked behind its back notices within its TTL (`lost()`
    /// resolves, `is_lost`, not `is_closed`), then refuses primitives with
    /// [`Error::SessionExpired`]; `close()` still succeeds.
    session_lost_on_revoke,
    Shared,
    lost_on_revoke
);

async fn lost_on_revoke(ctx: &Ctx) -> Outcome {
    let s = ctx.session_ttl(2).await?;
    ensure!(!s.is_lost(), "a new session is not lost");
    ctx.store.lease_revoke(s.lease()).await?;
    let limit = std::time::Duration::from_secs(s.ttl() as u64) + PROMPT;
    within(
        limit,
        "the session noticing its lease was revoked",
        s.lost(),
    )
    .await?;
    ensure!(
        s.is_lost() && !s.is_closed(),
        "is_lost/is_closed after the revoke"
    );
    let expired = |e: &Error| matches!(e, Error::SessionExpired { lease } if *lease == s.lease());
    expect_err(
        Mutex::new(&s, "lock")?.lock().await,
        expired,
        "lock() on an expired session",
    )?;
    expect_err(
        Election::new(&s, "e")?.campaign("v").await,
        expired,
        "campaign() on an expired session",
    )?;
    expect_err(
        RwLock::new(&s, "rw")?.write().await,
        expired,
        "write() on an expired session",
    )?;
    s.close().await?;
    ensure_eq!(
        ctx.keys(b"").await?.len(),
        0,
        "keys written by calls on an expired session"
    );
    Ok(())
}

scenario!(
    /// Bad input gets [`Error::InvalidArgument`] and writes nothing: empty names and names
    /// over [`MAX_NAME_LEN`] for every primitive, and an election proposal over the store's
    /// request limit.
    primitives_reject_bad_input,
    Shared,
    reject_bad_input
);

async fn reject_bad_input(ctx: &Ctx) -> Outcome {
    let s = ctx.session().await?;
    let long = vec![b'n'; MAX_NAME_LEN + 1];
    for (what, name) in [
        ("an empty name", Vec::new()),
        ("a name over the limit", long),
    ] {
        expect_err(Mutex::new(&s, &name), invalid, format!("Mutex with {what}"))?;
        expect_err(
            RwLock::new(&s, &name),
            invalid,
            format!("RwLock with {what}"),
        )?;
        expect_err(
            Election::new(&s, &name),
            invalid,
            format!("Election with {what}"),
        )?;
    }
    let longest = vec![b'n'; MAX_NAME_LEN];
    let g = Mutex::new(&s, &longest)?.lock().await?;
    g.unlock().await?;
    let huge = vec![b'x'; ctx.store.limits().max_request_bytes + 1];
    let e = Election::new(&s, "e")?;
    expect_err(
        e.campaign(huge.clone()).await,
        invalid,
        "a proposal over the request limit",
    )?;
    let l = e.campaign("ok").await?;
    expect_err(
        l.proclaim(huge).await,
        invalid,
        "proclaiming a value over the request limit",
    )?;
    ensure_eq!(
        crate::conformance::support::text(&e.leader().await?.value),
        "ok",
        "the leader's value after the refused proclaim"
    );
    l.resign().await?;
    ensure_eq!(
        ctx.keys(b"").await?.len(),
        0,
        "keys written by refused calls"
    );
    Ok(())
}

scenario!(
    /// One live session per lease in a process: a second one on the lease of a live session
    /// is [`Error::InvalidArgument`] (two would share one lock key and both hold it). After
    /// `detach()` the first is ended (`lost()` resolves, its guard's release sends nothing and
    /// is [`Error::SessionClosed`]) while the lease and its keys stay, and a new session on
    /// the lease takes them over.
    session_one_per_lease,
    Shared,
    one_per_lease
);

async fn one_per_lease(ctx: &Ctx) -> Outcome {
    let s1 = ctx.session().await?;
    let g1 = Mutex::new(&s1, "lock")?.lock().await?;
    expect_err(
        Session::builder(ctx.store.clone())
            .with_lease(s1.lease())
            .build()
            .await,
        invalid,
        "a second session on a live session's lease",
    )?;
    ensure!(holds(ctx, g1.is_owner()).await?, "the holder still holds");
    let lease = s1.detach();
    ensure!(
        s1.is_lost() && s1.is_closed(),
        "is_lost/is_closed after detach()"
    );
    within(PROMPT, "lost() after detach()", s1.lost()).await?;
    ensure!(
        ctx.store.lease_time_to_live(lease, false).await.is_ok(),
        "detach() left the lease alive"
    );
    ensure_eq!(ctx.keys(b"lock/").await?.len(), 1, "detach() left the key");
    let s2 = Session::builder(ctx.store.clone())
        .with_lease(lease)
        .build()
        .await?;
    ctx.track_session(&s2);
    let g2 = within(
        PROMPT,
        "lock() on the resumed lease",
        Mutex::new(&s2, "lock")?.lock(),
    )
    .await??;
    ensure_eq!(g2.key(), g1.key(), "the resumed session's key");
    expect_err(
        g1.unlock().await,
        closed,
        "unlock() through the detached session",
    )?;
    ensure!(
        holds(ctx, g2.is_owner()).await?,
        "the detached guard's unlock left the resumed holder's key"
    );
    g2.unlock().await?;
    Ok(())
}

scenario!(
    /// A session on an existing lease renews it at once: a lease with little time left does
    /// not expire under the new session.
    session_resumed_lease_renewed,
    Shared,
    resumed_lease_renewed
);

async fn resumed_lease_renewed(ctx: &Ctx) -> Outcome {
    let lease = ctx.grant(4).await?;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let s = Session::builder(ctx.store.clone())
        .with_lease(lease.id)
        .build()
        .await?;
    ctx.track_session(&s);
    let left = ctx.store.lease_time_to_live(lease.id, false).await?;
    ensure!(
        left.ttl >= 3,
        "TTL left right after the session resumed the lease: {} s of {}",
        left.ttl,
        left.granted_ttl
    );
    ensure_eq!(s.ttl(), 4, "the session's TTL");
    Ok(())
}
