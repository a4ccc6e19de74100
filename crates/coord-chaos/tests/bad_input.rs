//! Bad input, on every backend: each case gets a typed error (the variant is asserted), creates
//! nothing (the test's key space is empty afterwards) and leaks no lease (the store's lease list
//! is back to where it was). Each store is the test's own (a fresh coord-mem store, an etcd
//! spawned for the test, a PostgreSQL schema of the test's own), so the lease count is exact.
//!
//! Names are bytes: non-UTF-8 and NUL bytes are allowed (as in etcd keys) and are tested to
//! work; `a` and `ab` are separate names.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use coord_chaos::pg;
use coord_chaos::support::{keys_under, variant};
use coord_core::names::MAX_NAME_LEN;
use coord_core::{
    Backend, DeleteRequest, DynBackend, Election, Mutex, Prefixed, RangeRequest, Result, RwLock,
    Session,
};
use coord_mem::MemStore;
use etcd_harness::EtcdServer;

struct Ctx {
    /// The store, unprefixed: leases, and raw deletes that model a key lost under a guard.
    raw: DynBackend,
    /// The test's namespace: every case runs here, and it must be empty after each.
    ns: Arc<Prefixed<DynBackend>>,
}

impl Ctx {
    async fn session(&self) -> Session {
        Session::new(self.ns.clone(), 30).await.unwrap()
    }

    /// Deletes a key behind its holder's back (how a key gets lost without a fault).
    async fn delete_key(&self, key: &[u8]) {
        let deleted = self
            .ns
            .delete(DeleteRequest::key(key.to_vec()))
            .await
            .unwrap()
            .deleted;
        assert_eq!(deleted, 1);
    }
}

type CaseResult = std::result::Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Checks that `r` failed with the variant named `want`.
fn expect_err<T: Debug>(r: Result<T>, want: &str, what: &str) -> CaseResult {
    match r {
        Err(e) if variant(&e) == want => Ok(()),
        Err(e) => Err(format!(
            "{what}: expected {want}, got {} ({e})",
            variant(&e)
        )),
        Ok(v) => Err(format!("{what}: expected {want}, got Ok({v:?})")),
    }
}

fn big(n: usize) -> Vec<u8> {
    vec![b'x'; n]
}

// ---- The cases.

async fn empty_names(ctx: &Ctx) -> CaseResult {
    let s = ctx.session().await;
    expect_err(Mutex::new(&s, ""), "InvalidArgument", "Mutex::new(\"\")")?;
    expect_err(RwLock::new(&s, b""), "InvalidArgument", "RwLock::new(\"\")")?;
    expect_err(
        Election::new(&s, ""),
        "InvalidArgument",
        "Election::new(\"\")",
    )?;
    s.close().await.unwrap();
    Ok(())
}

async fn too_long_names(ctx: &Ctx) -> CaseResult {
    let s = ctx.session().await;
    let long = big(MAX_NAME_LEN + 1);
    expect_err(Mutex::new(&s, &long), "InvalidArgument", "Mutex, long name")?;
    expect_err(
        RwLock::new(&s, &long),
        "InvalidArgument",
        "RwLock, long name",
    )?;
    expect_err(
        Election::new(&s, &long),
        "InvalidArgument",
        "Election, long name",
    )?;
    // The longest allowed name works.
    let g = Mutex::new(&s, big(MAX_NAME_LEN))
        .unwrap()
        .lock()
        .await
        .map_err(|e| format!("a {MAX_NAME_LEN}-byte name: {e}"))?;
    g.unlock().await.unwrap();
    s.close().await.unwrap();
    Ok(())
}

async fn prefix_names_are_separate(ctx: &Ctx) -> CaseResult {
    let (s1, s2) = (ctx.session().await, ctx.session().await);
    let a = Mutex::new(&s1, "a").unwrap().try_lock().await;
    let ab = Mutex::new(&s2, "ab").unwrap().try_lock().await;
    ensure!(
        a.is_ok() && ab.is_ok(),
        "a and ab are separate locks: {a:?} {ab:?}"
    );
    let (a, ab) = (a.unwrap(), ab.unwrap());
    ensure!(
        a.key().starts_with(b"a/") && ab.key().starts_with(b"ab/"),
        "key layout"
    );
    // (Elections get names of their own: a mutex and an election of one name share keys.)
    let la = Election::new(&s1, "e")
        .unwrap()
        .campaign("1")
        .await
        .unwrap();
    let lab = Election::new(&s2, "eb")
        .unwrap()
        .campaign("2")
        .await
        .unwrap();
    let leader_a = Election::new(&s2, "e").unwrap().leader().await.unwrap();
    ensure!(leader_a.value == b"1", "a's leader is not ab's");
    for g in [a, ab] {
        g.unlock().await.unwrap();
    }
    la.resign().await.unwrap();
    lab.resign().await.unwrap();
    s1.close().await.unwrap();
    s2.close().await.unwrap();
    Ok(())
}

async fn non_utf8_and_nul_names_work(ctx: &Ctx) -> CaseResult {
    let (s1, s2) = (ctx.session().await, ctx.session().await);
    let names: [&[u8]; 3] = [b"\xff\xfe\x80", b"a\0b", b"\0"];
    for name in names {
        let g = Mutex::new(&s1, name)
            .unwrap()
            .try_lock()
            .await
            .map_err(|e| format!("lock {name:?}: {e}"))?;
        ensure!(g.key().starts_with(name), "the key keeps the raw bytes");
        // Another session sees it held.
        expect_err(
            Mutex::new(&s2, name).unwrap().try_lock().await,
            "Locked",
            "second locker",
        )?;
        g.unlock().await.unwrap();
        let l = Election::new(&s1, name)
            .unwrap()
            .campaign(name)
            .await
            .unwrap();
        let leader = Election::new(&s2, name).unwrap().leader().await.unwrap();
        ensure!(leader.value == name, "the leader's value is the raw bytes");
        l.resign().await.unwrap();
    }
    // "a\0b" is not "a".
    let g1 = Mutex::new(&s1, b"a\0b").unwrap().try_lock().await.unwrap();
    let g2 = Mutex::new(&s2, b"a").unwrap().try_lock().await;
    ensure!(g2.is_ok(), "a and a\\0b are separate locks");
    g1.unlock().await.unwrap();
    g2.unwrap().unlock().await.unwrap();
    s1.close().await.unwrap();
    s2.close().await.unwrap();
    Ok(())
}

async fn proposal_over_the_store_limit(ctx: &Ctx) -> CaseResult {
    let s = ctx.session().await;
    let limit = ctx.raw.limits().max_request_bytes;
    let e = Election::new(&s, "big").unwrap();
    expect_err(
        e.campaign(big(limit + 1)).await,
        "InvalidArgument",
        "campaign",
    )?;
    s.close().await.unwrap();
    Ok(())
}

/// A proposal that passes coord's own size check (limit minus key minus framing) but not the
/// store's, because a long name repeats in the acquire transaction: the store's refusal is
/// still a typed error, and nothing is written.
async fn proposal_at_the_edge_with_a_long_name(ctx: &Ctx) -> CaseResult {
    let s = ctx.session().await;
    let limit = ctx.raw.limits().max_request_bytes;
    let e = Election::new(&s, big(MAX_NAME_LEN)).unwrap();
    let room = limit - e.key().len() - 512;
    expect_err(
        e.campaign(big(room)).await,
        "InvalidArgument",
        "campaign at the edge",
    )?;
    s.close().await.unwrap();
    Ok(())
}

async fn proclaim_over_the_store_limit(ctx: &Ctx) -> CaseResult {
    let s = ctx.session().await;
    let limit = ctx.raw.limits().max_request_bytes;
    let e = Election::new(&s, "big").unwrap();
    let l = e.campaign("small").await.unwrap();
    expect_err(
        l.proclaim(big(limit + 1)).await,
        "InvalidArgument",
        "proclaim",
    )?;
    ensure!(
        e.leader().await.unwrap().value == b"small",
        "value unchanged"
    );
    l.resign().await.unwrap();
    s.close().await.unwrap();
    Ok(())
}

async fn ttl_out_of_range(ctx: &Ctx) -> CaseResult {
    let max = ctx.raw.limits().max_ttl;
    for ttl in [0, -1, -3600, i64::MIN, max + 1, i64::MAX] {
        expect_err(
            Session::new(ctx.ns.clone(), ttl).await,
            "InvalidArgument",
            &format!("TTL {ttl}"),
        )?;
    }
    Ok(())
}

async fn unknown_lease(ctx: &Ctx) -> CaseResult {
    expect_err(
        Session::builder(ctx.ns.clone())
            .with_lease(0x7a11_0000_dead)
            .build()
            .await,
        "LeaseNotFound",
        "with_lease(unknown)",
    )
}

async fn revoked_lease(ctx: &Ctx) -> CaseResult {
    let grant = ctx.raw.lease_grant(30, None).await.unwrap();
    ctx.raw.lease_revoke(grant.id).await.unwrap();
    expect_err(
        Session::builder(ctx.ns.clone())
            .with_lease(grant.id)
            .build()
            .await,
        "LeaseNotFound",
        "with_lease(revoked)",
    )
}

async fn invalid_lease_ids(ctx: &Ctx) -> CaseResult {
    for id in [0, -1] {
        expect_err(
            Session::builder(ctx.ns.clone())
                .with_lease(id)
                .build()
                .await,
            "InvalidArgument",
            &format!("with_lease({id})"),
        )?;
    }
    Ok(())
}

/// "Unlock twice" cannot compile (`unlock` consumes the guard); its runtime twin is an unlock
/// after the key is already gone.
async fn unlock_after_the_key_is_gone(ctx: &Ctx) -> CaseResult {
    let s = ctx.session().await;
    let g = Mutex::new(&s, "m").unwrap().lock().await.unwrap();
    ctx.delete_key(g.key()).await;
    expect_err(g.unlock().await, "NotHeld", "unlock of a deleted key")?;
    let w = RwLock::new(&s, "rw").unwrap().write().await.unwrap();
    ctx.delete_key(w.key()).await;
    expect_err(w.unlock().await, "NotHeld", "write unlock of a deleted key")?;
    s.close().await.unwrap();
    Ok(())
}

async fn resign_and_proclaim_when_not_leader(ctx: &Ctx) -> CaseResult {
    let s = ctx.session().await;
    let e = Election::new(&s, "e").unwrap();
    let l = e.campaign("v").await.unwrap();
    ctx.delete_key(l.key()).await;
    expect_err(
        l.proclaim("w").await,
        "NotLeader",
        "proclaim after losing the key",
    )?;
    expect_err(l.resign().await, "NotLeader", "resign after losing the key")?;
    s.close().await.unwrap();
    Ok(())
}

async fn resume_what_is_not_ours(ctx: &Ctx) -> CaseResult {
    let (s1, s2) = (ctx.session().await, ctx.session().await);
    let e1 = Election::new(&s1, "e").unwrap();
    let l = e1.campaign("leader").await.unwrap();
    let e2 = Election::new(&s2, "e").unwrap();
    // Someone else's key.
    expect_err(
        e2.resume(l.key(), l.rev()).await,
        "NotLeader",
        "resume another's key",
    )?;
    // Our own key while not leading (a candidacy that timed out and was withdrawn).
    expect_err(
        e2.campaign_timeout("second", Duration::from_millis(300))
            .await,
        "Timeout",
        "second candidate",
    )?;
    let withdrawn = coord_chaos::support::eventually(Duration::from_secs(5), || async {
        keys_under(&*ctx.ns, b"e/").await.unwrap().len() == 1
    })
    .await;
    ensure!(withdrawn, "the timed-out candidacy is withdrawn");
    expect_err(
        e2.resume(e2.key(), 1).await,
        "NotLeader",
        "resume while not leading",
    )?;
    // This session's own live leadership: a second handle is refused at once, not awaited.
    expect_err(
        e1.resume(l.key(), l.rev()).await,
        "Locked",
        "resume a live leadership",
    )?;
    // A second live session on the lease is refused; a resumed one (the first detached, as
    // a restarted process's predecessor is gone) with a made-up revision, then the right one.
    expect_err(
        Session::builder(ctx.ns.clone())
            .with_lease(s1.lease())
            .build()
            .await,
        "InvalidArgument",
        "a second live session on a lease",
    )?;
    s1.detach();
    let resumed = Session::builder(ctx.ns.clone())
        .with_lease(s1.lease())
        .build()
        .await
        .unwrap();
    let e3 = Election::new(&resumed, "e").unwrap();
    expect_err(
        e3.resume(l.key(), l.rev() + 1000).await,
        "NotLeader",
        "resume wrong rev",
    )?;
    let back = e3
        .resume(l.key(), l.rev())
        .await
        .map_err(|e| format!("the right key and revision resume: {e}"))?;
    back.resign().await.unwrap();
    expect_err(
        l.resign().await,
        "SessionClosed",
        "the detached session's handle after the resumed one resigned",
    )?;
    resumed.close().await.unwrap();
    s1.close().await.unwrap();
    s2.close().await.unwrap();
    Ok(())
}

async fn operations_after_close(ctx: &Ctx) -> CaseResult {
    let s = ctx.session().await;
    let m = Mutex::new(&s, "m").unwrap();
    let rw = RwLock::new(&s, "rw").unwrap();
    let e = Election::new(&s, "e").unwrap();
    let held = Mutex::new(&s, "held").unwrap().lock().await.unwrap();
    let lead = Election::new(&s, "led")
        .unwrap()
        .campaign("v")
        .await
        .unwrap();
    s.close().await.unwrap();
    let want = "SessionClosed";
    expect_err(m.lock().await, want, "lock")?;
    expect_err(m.try_lock().await, want, "try_lock")?;
    expect_err(
        m.lock_timeout(Duration::from_secs(1)).await,
        want,
        "lock_timeout",
    )?;
    expect_err(rw.read().await, want, "read")?;
    expect_err(rw.write().await, want, "write")?;
    expect_err(rw.try_read().await, want, "try_read")?;
    expect_err(rw.try_write().await, want, "try_write")?;
    expect_err(e.campaign("v").await, want, "campaign")?;
    expect_err(e.resume(e.key(), 1).await, want, "resume")?;
    expect_err(lead.proclaim("w").await, want, "proclaim")?;
    expect_err(held.unlock().await, want, "unlock")?;
    expect_err(lead.resign().await, want, "resign")?;
    ensure!(s.close().await.is_ok(), "closing twice is a no-op");
    Ok(())
}

async fn lock_on_a_revoked_session(ctx: &Ctx) -> CaseResult {
    let s = ctx.session().await;
    ctx.raw.lease_revoke(s.lease()).await.unwrap();
    expect_err(
        Mutex::new(&s, "m").unwrap().lock().await,
        "SessionExpired",
        "lock",
    )?;
    ensure!(s.is_lost(), "the session knows it is lost");
    expect_err(
        RwLock::new(&s, "rw").unwrap().read().await,
        "SessionExpired",
        "read",
    )?;
    Ok(())
}

async fn futures_dropped_before_their_first_poll(ctx: &Ctx) -> CaseResult {
    let s = ctx.session().await;
    let m = Mutex::new(&s, "m").unwrap();
    let e = Election::new(&s, "e").unwrap();
    let rw = RwLock::new(&s, "rw").unwrap();
    drop(m.lock());
    drop(m.try_lock());
    drop(e.campaign("v"));
    drop(rw.write());
    ensure!(
        keys_under(&*ctx.ns, b"").await.unwrap().is_empty(),
        "a future never polled writes nothing"
    );
    // And nothing was left in the way.
    let other = ctx.session().await;
    let g = Mutex::new(&other, "m").unwrap().try_lock().await;
    ensure!(
        g.is_ok(),
        "the lock is free: {:?}",
        g.map(|g| g.fencing_token())
    );
    g.unwrap().unlock().await.unwrap();
    s.close().await.unwrap();
    other.close().await.unwrap();
    Ok(())
}

async fn zero_deadlines(ctx: &Ctx) -> CaseResult {
    let (holder, s) = (ctx.session().await, ctx.session().await);
    let g = Mutex::new(&holder, "m").unwrap().lock().await.unwrap();
    let l = Election::new(&holder, "e")
        .unwrap()
        .campaign("h")
        .await
        .unwrap();
    let w = RwLock::new(&holder, "rw").unwrap().write().await.unwrap();
    expect_err(
        Mutex::new(&s, "m")
            .unwrap()
            .lock_timeout(Duration::ZERO)
            .await,
        "Timeout",
        "lock_timeout(0)",
    )?;
    expect_err(
        Election::new(&s, "e")
            .unwrap()
            .campaign_timeout("s", Duration::ZERO)
            .await,
        "Timeout",
        "campaign_timeout(0)",
    )?;
    expect_err(
        RwLock::new(&s, "rw")
            .unwrap()
            .read_timeout(Duration::ZERO)
            .await,
        "Timeout",
        "read_timeout(0)",
    )?;
    expect_err(
        Mutex::new(&s, "m").unwrap().try_lock().await,
        "Locked",
        "try_lock while held",
    )?;
    expect_err(
        RwLock::new(&s, "rw").unwrap().try_read().await,
        "Locked",
        "try_read while written",
    )?;
    // The attempts leave nothing behind, the holder's keys alone remain.
    let only_holders = coord_chaos::support::eventually(Duration::from_secs(5), || async {
        keys_under(&*ctx.ns, b"").await.unwrap().len() == 3
    })
    .await;
    ensure!(only_holders, "timed-out attempts removed their keys");
    g.unlock().await.unwrap();
    l.resign().await.unwrap();
    w.unlock().await.unwrap();
    holder.close().await.unwrap();
    s.close().await.unwrap();
    Ok(())
}

async fn no_leader(ctx: &Ctx) -> CaseResult {
    let s = ctx.session().await;
    expect_err(
        Election::new(&s, "nobody").unwrap().leader().await,
        "NoLeader",
        "leader of an empty election",
    )?;
    s.close().await.unwrap();
    Ok(())
}

// ---- The driver.

/// Runs one case and checks that it left no key in the namespace and no lease in the store.
async fn run_case(ctx: &Ctx, name: &str, case: impl Future<Output = CaseResult>) -> CaseResult {
    let before = {
        let mut l = ctx.raw.lease_list().await.unwrap();
        l.sort();
        l
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), case)
        .await
        .map_err(|_| format!("{name}: did not finish in 60 s"))?;
    outcome.map_err(|e| format!("{name}: {e}"))?;
    let ns_empty =
        coord_chaos::support::wait_prefix_empty(&*ctx.ns, b"", Duration::from_secs(5)).await;
    ns_empty.map_err(|keys| format!("{name}: keys left behind: {keys:?}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (leases_back, after) = loop {
        let mut after = ctx.raw.lease_list().await.unwrap();
        after.sort();
        if after == before || tokio::time::Instant::now() >= deadline {
            break (after == before, after);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure!(
        leases_back,
        "{name}: leases leaked: before {before:?}, after {after:?}"
    );
    Ok(())
}

macro_rules! run_cases {
    ($ctx:expr, $($case:ident),+ $(,)?) => {{
        let mut failures = Vec::new();
        let mut count = 0;
        $(
            count += 1;
            if let Err(e) = run_case($ctx, stringify!($case), $case($ctx)).await {
                failures.push(e);
            }
        )+
        (count, failures)
    }};
}

async fn all_cases(raw: DynBackend, label: &str) {
    let ns: Arc<Prefixed<DynBackend>> = Arc::new(Prefixed::new(raw.clone(), "bad-input/"));
    let ctx = Ctx { raw, ns };
    let (count, failures) = run_cases!(
        &ctx,
        empty_names,
        too_long_names,
        prefix_names_are_separate,
        non_utf8_and_nul_names_work,
        proposal_over_the_store_limit,
        proposal_at_the_edge_with_a_long_name,
        proclaim_over_the_store_limit,
        ttl_out_of_range,
        unknown_lease,
        revoked_lease,
        invalid_lease_ids,
        unlock_after_the_key_is_gone,
        resign_and_proclaim_when_not_leader,
        resume_what_is_not_ours,
        operations_after_close,
        lock_on_a_revoked_session,
        futures_dropped_before_their_first_poll,
        zero_deadlines,
        no_leader,
    );
    eprintln!(
        "MEASURED bad input on {label}: {count} cases, {} failed",
        failures.len()
    );
    assert!(count >= 15);
    assert!(
        failures.is_empty(),
        "{label}: {} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The whole store is clean too.
    let all = ctx
        .raw
        .range(RangeRequest::prefix(b"".to_vec()))
        .await
        .unwrap();
    assert!(all.kvs.is_empty(), "{label}: keys left in the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_mem() {
    all_cases(Arc::new(MemStore::new()), "coord-mem").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_etcd() {
    // A server of its own: the lease list must be this test's alone.
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let backend = coord_chaos::support::connect(&server.endpoints(), Duration::from_secs(5))
        .await
        .unwrap();
    all_cases(Arc::new(backend), "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_postgres() {
    // `POSTGRES_URL` or a server of its own; either way a schema of its own, so the lease list
    // is this test's alone.
    let Some(server) = pg_harness::postgres_for_tests().await else {
        return;
    };
    let url = server.url();
    let schema = pg::unique_schema("badinput");
    let backend = pg::connect(&url, &schema, "chaos-bad-input", Duration::from_secs(5))
        .await
        .unwrap();
    all_cases(Arc::new(backend), "PostgreSQL").await;
    pg::drop_schema(&url, &schema).await;
}
