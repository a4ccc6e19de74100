//! Election: leaders in order, failover, recampaign and resume, observe, proclaim, tokens.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use super::mutex::{three, two};
use super::support::{
    ensure, ensure_eq, eventually, expect_err, join, lost_is_pending_and_cheap, next_item,
    scenario, still_waiting, text, within, Ctx, Failure, Outcome, PROMPT,
};
use crate::election::{Election, Leadership};
use crate::error::{Error, Result};
use crate::kv::{DeleteRequest, PutRequest, Revision};
use crate::observe::{LeaderStream, Observation};
use crate::session::{lock_unpoisoned, Session};

fn spawn_campaign(e: &Election, value: &str) -> JoinHandle<Result<Leadership>> {
    let (e, value) = (e.clone(), value.to_string());
    tokio::spawn(async move { e.campaign(value).await })
}

#[track_caller]
fn elected(result: Result<Leadership>, what: &str) -> Outcome<Leadership> {
    result.map_err(|e| Failure::new(format!("{what}: expected leadership, got {e} ({e:?})")))
}

/// The leader an observation reports: `(value, key, create revision)`, or `None`.
type Leader = Option<(String, Vec<u8>, Revision)>;

fn leader_of(o: &Observation) -> Leader {
    o.leader
        .as_ref()
        .map(|kv| (text(&kv.value), kv.key.clone(), kv.create_revision))
}

fn is(l: &Leadership, value: &str) -> Leader {
    Some((value.to_string(), l.key().to_vec(), l.rev()))
}

/// The next observation, which must report `expected`; its revision must exceed `after`.
#[track_caller]
fn expect_observed<'a>(
    stream: &'a mut LeaderStream,
    expected: Leader,
    after: &'a mut Revision,
    what: &'a str,
) -> impl std::future::Future<Output = Outcome<Observation>> + 'a {
    let location = std::panic::Location::caller();
    async move {
        let o = next_item(what, stream).await?.map_err(|e| {
            Failure::new(format!(
                "{what} (checked at {location}): observe failed: {e} ({e:?})"
            ))
        })?;
        let got = leader_of(&o);
        if got != expected {
            return Err(Failure::new(format!(
                "{what} (checked at {location}): observed {:?}, expected {:?}",
                got.map(|g| (g.0, text(&g.1), g.2)),
                expected.map(|e| (e.0, text(&e.1), e.2))
            )));
        }
        if o.revision <= *after && *after > 0 {
            return Err(Failure::new(format!(
                "{what} (checked at {location}): observation revision {} does not rise above {after}",
                o.revision
            )));
        }
        *after = o.revision;
        Ok(o)
    }
}

scenario!(
    /// An observer sees the leaders in order: none, the first, the next one when the first
    /// resigns (no "none" in between, as a candidate waits), none when the last resigns, then
    /// a new leader; observation revisions and leaders' tokens rise.
    election_observe_leaders,
    Shared,
    observe_leaders
);

async fn observe_leaders(ctx: &Ctx) -> Outcome {
    let [s1, s2, s3] = three(ctx.sessions(3).await?)?;
    let mut obs = Election::new(&s3, "e")?.observe();
    let mut rev = 0;
    expect_observed(
        &mut obs,
        None,
        &mut rev,
        "the first observation of an empty election",
    )
    .await?;
    let l1 = Election::new(&s1, "e")?.campaign("v1").await?;
    expect_observed(&mut obs, is(&l1, "v1"), &mut rev, "the first leader").await?;
    let c2 = spawn_campaign(&Election::new(&s2, "e")?, "v2");
    ctx.wait_keys(b"e/", 2).await?;
    let t1 = l1.rev();
    l1.resign().await?;
    let l2 = elected(join("the second candidate", c2).await?, "second candidate")?;
    expect_observed(
        &mut obs,
        is(&l2, "v2"),
        &mut rev,
        "the second leader, right after the first resigned",
    )
    .await?;
    let t2 = l2.rev();
    l2.resign().await?;
    expect_observed(
        &mut obs,
        None,
        &mut rev,
        "no leader after the last resigned",
    )
    .await?;
    let l3 = Election::new(&s3, "e")?.campaign("v3").await?;
    expect_observed(&mut obs, is(&l3, "v3"), &mut rev, "the third leader").await?;
    ensure!(
        t1 < t2 && t2 < l3.rev(),
        "leaders' tokens must rise: {t1}, {t2}, {}",
        l3.rev()
    );
    l3.resign().await?;
    expect_observed(&mut obs, None, &mut rev, "no leader at the end").await?;
    Ok(())
}

scenario!(
    /// `Leadership::lost()` reports an operator's delete of the leader's key
    /// ([`Error::NotHeld`]), whether the leadership was won at once or after waiting; after
    /// its setup (a watch and a read at most, none for a leader that waited) it costs no call,
    /// so it can sit in a `select!` loop; another candidate is then elected.
    election_lost_on_key_delete,
    Shared,
    election_lost_on_key_delete_run
);

async fn election_lost_on_key_delete_run(ctx: &Ctx) -> Outcome {
    let counting = crate::counting::Counting::new(ctx.store.clone());
    let s = Session::new(counting.clone(), super::support::SESSION_TTL).await?;
    ctx.track_session(&s);
    let other = ctx.session().await?;
    let deleted = |e: &Error| matches!(e, Error::NotHeld { .. });

    // Elected at once: nothing watched until lost() is first awaited.
    let l = Election::new(&s, "e")?.campaign("first").await?;
    lost_is_pending_and_cheap(&counting, || l.lost(), true).await?;
    ctx.store
        .delete(DeleteRequest::key(l.key().to_vec()))
        .await?;
    let e = within(PROMPT, "lost() after the key was deleted", l.lost()).await?;
    ensure!(
        deleted(&e),
        "lost() after an operator deleted the key: {e:?}"
    );
    let next = within(
        PROMPT,
        "another candidate's campaign after the delete",
        Election::new(&other, "e")?.campaign("second"),
    )
    .await??;
    expect_err(
        l.resign().await,
        |e| matches!(e, Error::NotHeld { .. } | Error::NotLeader),
        "resign() of a deleted leadership",
    )?;

    // Elected after waiting: the wait's watch keeps reporting, no setup call at all.
    let waiting = spawn_campaign(&Election::new(&s, "e")?, "third");
    ctx.wait_keys(b"e/", 2).await?;
    next.resign().await?;
    let l = elected(
        join("the waiting candidate", waiting).await?,
        "waiting candidate",
    )?;
    lost_is_pending_and_cheap(&counting, || l.lost(), false).await?;
    ctx.store
        .delete(DeleteRequest::key(l.key().to_vec()))
        .await?;
    let e = within(PROMPT, "lost() of the leader that waited", l.lost()).await?;
    ensure!(deleted(&e), "lost() of the leader that waited: {e:?}");
    drop(l);
    Ok(())
}

scenario!(
    /// When the leader's session closes, the waiting candidate is elected; the old
    /// leadership's `lost()` says [`Error::SessionClosed`] and its `resign()` fails; with
    /// nobody left, `leader()` is [`Error::NoLeader`].
    election_failover_on_close,
    Shared,
    failover_on_close
);

async fn failover_on_close(ctx: &Ctx) -> Outcome {
    let [s1, s2] = two(ctx.sessions(2).await?)?;
    let e2 = Election::new(&s2, "e")?;
    let l1 = Election::new(&s1, "e")?.campaign("a").await?;
    let c2 = spawn_campaign(&e2, "b");
    ctx.wait_keys(b"e/", 2).await?;
    s1.close().await?;
    let l2 = elected(
        join("the candidate after the leader's session closed", c2).await?,
        "candidate",
    )?;
    let leader = e2.leader().await?;
    ensure_eq!(
        (
            leader.key.clone(),
            text(&leader.value),
            leader.create_revision
        ),
        (l2.key().to_vec(), "b".to_string(), l2.rev()),
        "leader() after the failover"
    );
    let lost = within(PROMPT, "lost() of the closed leader", l1.lost()).await?;
    ensure!(
        matches!(lost, Error::SessionClosed),
        "lost() of a leadership whose session closed: {lost:?}"
    );
    ensure!(
        l1.resign().await.is_err(),
        "resign() of a leadership whose session closed must fail"
    );
    l2.resign().await?;
    expect_err(
        e2.leader().await,
        |e| matches!(e, Error::NoLeader),
        "leader() with no candidates",
    )?;
    Ok(())
}

scenario!(
    /// Campaigning again with the same lease (a restarted process: the old session detached,
    /// a new one on its lease) and another value takes over the existing candidacy and
    /// proclaims the new value, which observers see; the detached leadership's resign sends
    /// nothing.
    election_recampaign_proclaims,
    Shared,
    recampaign_proclaims
);

async fn recampaign_proclaims(ctx: &Ctx) -> Outcome {
    let s1 = ctx.session().await?;
    let l1 = Election::new(&s1, "e")?.campaign("abc").await?;
    let mut obs = Election::new(&s1, "e")?.observe();
    let mut rev = 0;
    expect_observed(
        &mut obs,
        is(&l1, "abc"),
        &mut rev,
        "the leader before the recampaign",
    )
    .await?;
    s1.detach();
    let again = Session::builder(ctx.store.clone())
        .with_lease(s1.lease())
        .build()
        .await?;
    ctx.track_session(&again);
    ensure_eq!(
        again.lease(),
        s1.lease(),
        "lease of a session on an existing lease"
    );
    let e = Election::new(&again, "e")?;
    let l2 = within(PROMPT, "recampaign on the same lease", e.campaign("def")).await??;
    ensure_eq!(
        (l2.key().to_vec(), l2.rev()),
        (l1.key().to_vec(), l1.rev()),
        "(key, token) of the recampaign: the same candidacy"
    );
    expect_observed(
        &mut obs,
        is(&l2, "def"),
        &mut rev,
        "the proclaimed value of the recampaign",
    )
    .await?;
    ensure_eq!(
        text(&e.leader().await?.value),
        "def",
        "leader() value after the recampaign"
    );
    ensure_eq!(ctx.keys(b"e/").await?.len(), 1, "candidate keys: still one");
    expect_err(
        l1.resign().await,
        |e| matches!(e, Error::SessionClosed),
        "resign() of the detached session's leadership",
    )?;
    ensure_eq!(
        ctx.keys(b"e/").await?.len(),
        1,
        "the detached session's resign deleted nothing"
    );
    l2.resign().await?;
    expect_observed(&mut obs, None, &mut rev, "no leader after the resign").await?;
    Ok(())
}

scenario!(
    /// `resume(key, rev)` from a new session on the leader's lease takes the leadership back
    /// (proclaim and resign work through it); a wrong revision, another key or a follower's
    /// key is [`Error::NotLeader`].
    election_resume,
    Shared,
    resume
);

async fn resume(ctx: &Ctx) -> Outcome {
    let [s1, s2] = two(ctx.sessions(2).await?)?;
    let l1 = Election::new(&s1, "e")?.campaign("v").await?;
    let (key, rev) = (l1.key().to_vec(), l1.rev());
    let c2 = spawn_campaign(&Election::new(&s2, "e")?, "w");
    ctx.wait_keys(b"e/", 2).await?;
    let follower = ctx
        .keys(b"e/")
        .await?
        .pop()
        .ok_or_else(|| Failure::new("no follower key"))?;

    // One live session per lease in a process: resuming needs the old one detached, as a
    // restarted process's predecessor is gone.
    expect_err(
        Session::builder(ctx.store.clone())
            .with_lease(s1.lease())
            .build()
            .await,
        |e| matches!(e, Error::InvalidArgument { .. }),
        "a second live session on the leader's lease",
    )?;
    s1.detach();
    let restarted = Session::builder(ctx.store.clone())
        .with_lease(s1.lease())
        .build()
        .await?;
    ctx.track_session(&restarted);
    let e = Election::new(&restarted, "e")?;
    let not_leader = |e: &Error| matches!(e, Error::NotLeader);
    expect_err(
        e.resume(key.clone(), rev + 1).await,
        not_leader,
        "resume with a wrong revision",
    )?;
    expect_err(
        e.resume(b"e/other".to_vec(), rev).await,
        not_leader,
        "resume with another key",
    )?;
    expect_err(
        Election::new(&s2, "e")?
            .resume(follower.key.clone(), follower.create_revision)
            .await,
        not_leader,
        "resume of a follower's candidacy",
    )?;
    let resumed = e.resume(key.clone(), rev).await?;
    ensure_eq!(
        (resumed.key().to_vec(), resumed.rev()),
        (key, rev),
        "(key, token) of the resumed leadership"
    );
    resumed.proclaim("v2").await?;
    ensure_eq!(
        text(&e.leader().await?.value),
        "v2",
        "leader() after proclaiming through the resumed leadership"
    );
    resumed.resign().await?;
    let l2 = elected(
        join("the follower after the resumed leader resigned", c2).await?,
        "follower",
    )?;
    expect_err(
        l1.resign().await,
        |e| matches!(e, Error::SessionClosed),
        "resign() of the detached session's leadership (sends nothing)",
    )?;
    l2.resign().await?;
    Ok(())
}

scenario!(
    /// An election named `test` elects at once even though keys `test` and `testa` exist:
    /// only `test/` keys are candidates.
    election_name_prefix_of_key,
    Shared,
    name_prefix_of_key
);

async fn name_prefix_of_key(ctx: &Ctx) -> Outcome {
    ctx.store.put(PutRequest::new("testa", "x")).await?;
    ctx.store.put(PutRequest::new("test", "y")).await?;
    let s = ctx.session().await?;
    let e = Election::new(&s, "test")?;
    expect_err(
        e.leader().await,
        |e| matches!(e, Error::NoLeader),
        "leader() with only keys `test` and `testa`",
    )?;
    let l = within(
        PROMPT,
        "campaign on `test` beside key `testa`",
        e.campaign("me"),
    )
    .await??;
    let leader = e.leader().await?;
    ensure_eq!(
        (leader.key.clone(), text(&leader.value)),
        (l.key().to_vec(), "me".to_string()),
        "leader()"
    );
    let mut obs = e.observe();
    let mut rev = 0;
    expect_observed(&mut obs, is(&l, "me"), &mut rev, "observe of `test`").await?;
    l.resign().await?;
    expect_observed(
        &mut obs,
        None,
        &mut rev,
        "observe of `test` after the resign",
    )
    .await?;
    ctx.store.delete(DeleteRequest::prefix("test")).await?;
    Ok(())
}

scenario!(
    /// Observers keep reporting the right leader across a compaction: one running through it
    /// and one started after it, through a proclaim and a resign. Compacts only the
    /// scenario's own revisions, and runs alone in the process.
    election_observe_after_compaction,
    Exclusive,
    observe_after_compaction,
    needs [Compaction]
);

async fn observe_after_compaction(ctx: &Ctx) -> Outcome {
    let s = ctx.session().await?;
    let e = Election::new(&s, "e")?;
    let l = e.campaign("a").await?;
    let mut before = e.observe();
    let mut rev_b = 0;
    expect_observed(
        &mut before,
        is(&l, "a"),
        &mut rev_b,
        "observer started before the compaction",
    )
    .await?;
    let mut last = 0;
    for i in 0..5 {
        last = ctx
            .store
            .put(PutRequest::new(format!("junk{i}"), "x"))
            .await?
            .header_revision;
    }
    match ctx.store.compact(last).await {
        Ok(()) | Err(Error::Compacted { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut after = e.observe();
    let mut rev_a = 0;
    expect_observed(
        &mut after,
        is(&l, "a"),
        &mut rev_a,
        "observer started after the compaction",
    )
    .await?;
    l.proclaim("b").await?;
    expect_observed(
        &mut before,
        is(&l, "b"),
        &mut rev_b,
        "proclaim, seen by the older observer",
    )
    .await?;
    expect_observed(
        &mut after,
        is(&l, "b"),
        &mut rev_a,
        "proclaim, seen by the newer observer",
    )
    .await?;
    l.resign().await?;
    expect_observed(
        &mut before,
        None,
        &mut rev_b,
        "resign, seen by the older observer",
    )
    .await?;
    expect_observed(
        &mut after,
        None,
        &mut rev_a,
        "resign, seen by the newer observer",
    )
    .await?;
    ctx.store.delete(DeleteRequest::prefix("junk")).await?;
    Ok(())
}

scenario!(
    /// Each proclaim is observed, in order, with rising revisions; the leader's key and token
    /// stay, its value and mod revision change.
    election_proclaim_observed,
    Shared,
    proclaim_observed
);

async fn proclaim_observed(ctx: &Ctx) -> Outcome {
    let s = ctx.session().await?;
    let e = Election::new(&s, "e")?;
    let l = e.campaign("v0").await?;
    let mut obs = e.observe();
    let mut rev = 0;
    let mut mod_rev = expect_observed(&mut obs, is(&l, "v0"), &mut rev, "the leader")
        .await?
        .leader
        .map_or(0, |kv| kv.mod_revision);
    for i in 1..=5 {
        let value = format!("v{i}");
        l.proclaim(value.clone()).await?;
        let o = expect_observed(&mut obs, is(&l, &value), &mut rev, "a proclaimed value").await?;
        let m = o.leader.map_or(0, |kv| kv.mod_revision);
        ensure!(
            m > mod_rev,
            "mod revision of proclaim {i} ({m}) must rise above {mod_rev}"
        );
        mod_rev = m;
    }
    ensure_eq!(
        text(&e.leader().await?.value),
        "v5",
        "leader() after the proclaims"
    );
    l.resign().await?;
    expect_observed(&mut obs, None, &mut rev, "no leader after the resign").await?;
    Ok(())
}

scenario!(
    /// A leadership whose lease was revoked can neither proclaim (no key is written back)
    /// nor resign: [`Error::NotLeader`] (or [`Error::SessionExpired`] once the session
    /// noticed); the next candidate is elected and unaffected. `leader()` of an empty election
    /// is [`Error::NoLeader`].
    election_not_leader_after_loss,
    Shared,
    not_leader_after_loss
);

async fn not_leader_after_loss(ctx: &Ctx) -> Outcome {
    let [s1, s2] = two(ctx.sessions(2).await?)?;
    let e2 = Election::new(&s2, "e")?;
    expect_err(
        e2.leader().await,
        |e| matches!(e, Error::NoLeader),
        "leader() of an empty election",
    )?;
    let l1 = Election::new(&s1, "e")?.campaign("a").await?;
    ctx.store.lease_revoke(s1.lease()).await?;
    let lost = |e: &Error| matches!(e, Error::NotLeader | Error::SessionExpired { .. });
    expect_err(
        l1.proclaim("b").await,
        lost,
        "proclaim() after the lease was revoked",
    )?;
    ensure_eq!(
        ctx.keys(b"e/").await?.len(),
        0,
        "keys after a failed proclaim"
    );
    let l2 = within(
        PROMPT,
        "campaign after the leader was lost",
        e2.campaign("c"),
    )
    .await??;
    expect_err(
        l1.proclaim("d").await,
        lost,
        "proclaim() of the lost leadership while another leads",
    )?;
    ensure_eq!(
        text(&e2.leader().await?.value),
        "c",
        "leader() after the lost leader's proclaim"
    );
    expect_err(l1.resign().await, lost, "resign() of the lost leadership")?;
    ensure!(
        e2.leader().await?.key == l2.key(),
        "the new leader survived the old one's resign"
    );
    l2.resign().await?;
    expect_err(
        e2.leader().await,
        |e| matches!(e, Error::NoLeader),
        "leader() after the last resign",
    )?;
    Ok(())
}

scenario!(
    /// Five sessions campaign at once, twice each: one leader at a time (in-process check),
    /// `leader()` agrees, and leadership tokens strictly rise.
    election_tokens_rise,
    Shared,
    tokens_rise
);

async fn tokens_rise(ctx: &Ctx) -> Outcome {
    const SESSIONS: usize = 5;
    const ROUNDS: usize = 2;
    let sessions = ctx.sessions(SESSIONS).await?;
    let leading = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(std::sync::Mutex::new(Vec::<Revision>::new()));
    let start = Arc::new(Barrier::new(SESSIONS));
    let mut tasks = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        let (e, leading, tokens, start) = (
            Election::new(session, "e")?,
            leading.clone(),
            tokens.clone(),
            start.clone(),
        );
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            for round in 0..ROUNDS {
                let value = format!("s{i}r{round}");
                let l = e.campaign(value.clone()).await?;
                let others = leading.fetch_add(1, Ordering::SeqCst);
                ensure!(others == 0, "{others} other leader(s) at once");
                lock_unpoisoned(&tokens).push(l.rev());
                let leader = e.leader().await?;
                ensure!(
                    leader.key == l.key() && text(&leader.value) == value,
                    "leader() {:?} is not the elected {value}",
                    text(&leader.value)
                );
                tokio::task::yield_now().await;
                leading.fetch_sub(1, Ordering::SeqCst);
                l.resign().await?;
            }
            Ok::<(), Failure>(())
        }));
    }
    for task in tasks {
        within(Duration::from_secs(60), "a candidate's rounds", task).await???;
    }
    let tokens = lock_unpoisoned(&tokens).clone();
    ensure_eq!(tokens.len(), SESSIONS * ROUNDS, "terms");
    ensure!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "leadership tokens must strictly rise: {tokens:?}"
    );
    Ok(())
}

scenario!(
    /// A campaign that gives up (`campaign_timeout` → [`Error::Timeout`], or its task
    /// aborted) leaves no key, and the next candidate is elected when the leader resigns.
    election_cancelled_campaign,
    Shared,
    cancelled_campaign
);

async fn cancelled_campaign(ctx: &Ctx) -> Outcome {
    let [s1, s2, s3] = three(ctx.sessions(3).await?)?;
    let l1 = Election::new(&s1, "e")?.campaign("a").await?;
    let e2 = Election::new(&s2, "e")?;
    expect_err(
        e2.campaign_timeout("b", Duration::from_millis(100)).await,
        |e| matches!(e, Error::Timeout),
        "campaign_timeout while another leads",
    )?;
    ctx.wait_keys(b"e/", 1).await?;
    let aborted = spawn_campaign(&e2, "b2");
    ctx.wait_keys(b"e/", 2).await?;
    aborted.abort();
    ctx.wait_keys(b"e/", 1).await?;
    let mut c3 = spawn_campaign(&Election::new(&s3, "e")?, "c");
    ctx.wait_keys(b"e/", 2).await?;
    still_waiting("a candidate while another leads", &mut c3).await?;
    l1.resign().await?;
    let l3 = elected(
        join("the candidate after the cancelled ones", c3).await?,
        "candidate",
    )?;
    ensure_eq!(
        text(&e2.leader().await?.value),
        "c",
        "leader() after the handover"
    );
    l3.resign().await?;
    let l2 = within(
        PROMPT,
        "campaign by a session that gave up before",
        e2.campaign("b3"),
    )
    .await??;
    l2.resign().await?;
    eventually("no candidate left", || async {
        Ok(ctx.keys(b"e/").await?.is_empty())
    })
    .await?;
    Ok(())
}

scenario!(
    /// One revision that deletes several candidates is one observation: when a transaction
    /// deletes the leader and the next in line, the observer reports the third (never the
    /// deleted second), as `leader()` does; when one delete removes every candidate, it
    /// reports no leader.
    election_observe_one_revision,
    Shared,
    observe_one_revision
);

async fn observe_one_revision(ctx: &Ctx) -> Outcome {
    let [s1, s2, s3] = three(ctx.sessions(3).await?)?;
    let e1 = Election::new(&s1, "e")?;
    let l1 = e1.campaign("one").await?;
    let c2 = spawn_campaign(&Election::new(&s2, "e")?, "two");
    ctx.wait_keys(b"e/", 2).await?;
    let c3 = spawn_campaign(&Election::new(&s3, "e")?, "three");
    ctx.wait_keys(b"e/", 3).await?;
    let mut obs = e1.observe();
    let mut rev = 0;
    expect_observed(&mut obs, is(&l1, "one"), &mut rev, "the first leader").await?;
    let keys = ctx.keys(b"e/").await?;
    let txn = crate::txn::Txn::new().and_then([
        crate::txn::TxnOp::Delete(DeleteRequest::key(keys[0].key.clone())),
        crate::txn::TxnOp::Delete(DeleteRequest::key(keys[1].key.clone())),
    ]);
    ctx.store.txn(txn).await?;
    let third = Some((
        "three".to_string(),
        keys[2].key.clone(),
        keys[2].create_revision,
    ));
    let o = expect_observed(
        &mut obs,
        third,
        &mut rev,
        "the leader after one txn deleted the first two",
    )
    .await?;
    let l3 = elected(join("the third candidate", c3).await?, "third")?;
    ensure_eq!(
        l3.rev(),
        keys[2].create_revision,
        "the third candidate's term"
    );
    ensure_eq!(
        e1.leader().await?.key,
        keys[2].key,
        "leader() after the txn"
    );
    expect_err(
        join("the second candidate, whose key was deleted", c2).await?,
        |e| matches!(e, Error::NotHeld { .. }),
        "campaign() of the deleted second candidate",
    )?;
    ensure!(o.revision > 0, "observation revision");

    expect_err(
        l1.resign().await,
        |e| matches!(e, Error::NotLeader),
        "resign() of the leadership whose key the txn deleted",
    )?;
    // Every candidate at once (`etcdctl del --prefix`).
    let mut c4 = spawn_campaign(&Election::new(&s1, "e")?, "four");
    ctx.wait_keys(b"e/", 2).await?;
    still_waiting("the fourth candidate", &mut c4).await?;
    ctx.store
        .delete(DeleteRequest::prefix(b"e/".to_vec()))
        .await?;
    expect_observed(&mut obs, None, &mut rev, "no leader after del --prefix").await?;
    expect_err(
        e1.leader().await,
        |e| matches!(e, Error::NoLeader),
        "leader() after del --prefix",
    )?;
    expect_err(
        join("the fourth candidate", c4).await?,
        |e| matches!(e, Error::NotHeld { .. }),
        "campaign() whose key del --prefix removed",
    )?;
    drop(l3);
    Ok(())
}

scenario!(
    /// The proposal size check matches the store: with the longest name, the largest proposal
    /// `campaign` accepts is stored, and one byte more is [`Error::InvalidArgument`] before
    /// anything is sent; `proclaim` likewise.
    election_proposal_size_limit,
    Shared,
    proposal_size_limit
);

async fn proposal_size_limit(ctx: &Ctx) -> Outcome {
    // Counted, so that a refusal is shown to happen before anything is sent: the store's own
    // "request too large" is an InvalidArgument too.
    let counting = crate::counting::Counting::new(ctx.store.clone());
    let s = crate::session::Session::new(counting.clone(), super::support::SESSION_TTL).await?;
    ctx.track_session(&s);
    let name = vec![b'n'; crate::names::MAX_NAME_LEN];
    let e = Election::new(&s, &name)?;
    let limit = ctx.store.limits().max_request_bytes;
    let biggest = largest_accepted(limit, &counting, |len| {
        let e = e.clone();
        async move {
            let l = e.campaign(vec![b'v'; len]).await?;
            l.resign().await
        }
    })
    .await?;
    ensure!(
        biggest + 64 * 1024 > limit,
        "the largest accepted proposal ({biggest} bytes) is far below the store's limit"
    );
    refused_unsent(
        &counting,
        e.campaign(vec![b'v'; biggest + 1]),
        "campaign one byte over",
    )
    .await?;
    let l = e.campaign(vec![b'v'; biggest]).await?;
    ensure_eq!(
        e.leader().await?.value.len(),
        biggest,
        "the largest proposal is stored"
    );
    let leader = &l;
    let biggest_proclaim = largest_accepted(limit, &counting, |len| async move {
        leader.proclaim(vec![b'w'; len]).await
    })
    .await?;
    ensure!(
        biggest_proclaim >= biggest,
        "proclaim accepts less ({biggest_proclaim}) than campaign ({biggest})"
    );
    refused_unsent(
        &counting,
        l.proclaim(vec![b'w'; biggest_proclaim + 1]),
        "proclaim one byte over",
    )
    .await?;
    ensure_eq!(
        e.leader().await?.value.len(),
        biggest_proclaim,
        "the largest proclaimed value is stored"
    );
    l.resign().await?;
    ensure_eq!(ctx.keys(b"").await?.len(), 0, "keys left by refused calls");
    Ok(())
}

/// Checks that `call` fails with [`Error::InvalidArgument`] having sent nothing to the store.
async fn refused_unsent<T: std::fmt::Debug>(
    counting: &crate::counting::Counting<crate::DynBackend>,
    call: impl std::future::Future<Output = Result<T>>,
    what: &str,
) -> Outcome {
    let before = counting.counts();
    let result = call.await;
    let sent = counting.counts().since(&before);
    expect_err(result, |e| matches!(e, Error::InvalidArgument { .. }), what)?;
    ensure!(
        sent.kv_calls() == 0,
        "store calls made by a refused {what}: {sent}"
    );
    Ok(())
}

/// The largest length in `0..=limit` that `call` accepts, by bisection: a length it refuses
/// must be [`Error::InvalidArgument`] with nothing sent to the store (checked on `counting`,
/// the backend of the session `call` uses), so the search costs only the accepted calls; any
/// other error means the library accepted what the store refused.
async fn largest_accepted<F, Fut>(
    limit: usize,
    counting: &crate::counting::Counting<crate::DynBackend>,
    mut call: F,
) -> Outcome<usize>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let (mut ok, mut refused) = (0usize, limit + 1);
    while refused - ok > 1 {
        let mid = ok + (refused - ok) / 2;
        let before = counting.counts();
        match call(mid).await {
            Ok(()) => ok = mid,
            Err(Error::InvalidArgument { .. }) => {
                let sent = counting.counts().since(&before);
                ensure!(
                    sent.kv_calls() == 0,
                    "store calls made by a refused {mid}-byte value: {sent}"
                );
                refused = mid
            }
            Err(err) => {
                return Err(Failure::new(format!(
                    "a {mid}-byte value the library accepted failed at the store: {err} ({err:?})"
                )))
            }
        }
    }
    Ok(ok)
}
