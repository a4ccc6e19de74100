//! PostgreSQL itself, or the client's connections to it, fail:
//!
//! - the client's connections are killed with `pg_terminate_backend` (an administrator, a
//!   pooler recycling, a failover proxy) while a holder holds, a waiter waits and an observer
//!   observes, several rounds: calls fail retryably or are retried inside, the sessions survive,
//!   the watches resume with no lost event;
//! - PostgreSQL is restarted (fast shutdown and start on the same data) while a waiter waits:
//!   the waiter acquires after the holder unlocks, fencing tokens keep rising;
//! - PostgreSQL is frozen (`SIGSTOP`) for less than the TTL: calls fail at the request timeout
//!   with `Unavailable`, the sessions survive, everything goes on after `SIGCONT`.
//!
//! The first breaks only its own client's connections (picked by `application_name`), so it
//! uses `POSTGRES_URL` when set; the others start the server they break. Each test works in a
//! schema of its own. Holder SIGKILL, SIGSTOP and the lock-set with pauses on PostgreSQL are in
//! `process_faults.rs`, bad input in `bad_input.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use coord_chaos::pg::{self, unique_schema};
use coord_chaos::support::{eventually, keys_under, variant, wait_leases_gone, wait_prefix_empty};
use coord_core::{
    Backend, DeleteRequest, DynBackend, Election, Error, KeyRange, Mutex, Observation, PutRequest,
    RangeRequest, Revision, Session, Txn, TxnOp, WatchRequest,
};
use futures::StreamExt;
use pg_harness::{postgres_for_tests, PgServer};

/// Session TTL, seconds, where the fault is shorter than it.
const TTL: i64 = 2;
/// Request timeout of the clients under test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Scheduling slack on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(1);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

/// Counts the sessions whose `lost()` fired.
fn count_losses(sessions: &[&Session]) -> Arc<AtomicUsize> {
    let lost = Arc::new(AtomicUsize::new(0));
    for s in sessions {
        let (s, lost) = ((*s).clone(), lost.clone());
        tokio::spawn(async move {
            s.lost().await;
            if !s.is_closed() {
                lost.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    lost
}

/// Collects `observe()`'s items (an error ends the test: observe retries what can be retried).
fn observe(session: &Session, name: &str) -> Arc<StdMutex<Vec<Observation>>> {
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let mut stream = Election::new(session, name).unwrap().observe();
    let sink = seen.clone();
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            sink.lock()
                .unwrap()
                .push(item.expect("observe() fails only for good"));
        }
    });
    seen
}

fn leader_value(o: &Observation) -> Option<String> {
    o.leader
        .as_ref()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

/// What an error says, with its source (the PostgreSQL error behind `Unavailable`).
fn describe(e: &Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{}: {source}", variant(e)),
        None => e.to_string(),
    }
}

/// Waits until `backend` answers a read again; the errors met on the way must be retryable.
/// Returns how long it took and the errors of the calls that failed.
async fn until_answered(backend: &DynBackend, within: Duration) -> (Duration, Vec<String>) {
    let started = Instant::now();
    let mut failed = Vec::new();
    loop {
        match backend.range(RangeRequest::key("probe")).await {
            Ok(_) => return (started.elapsed(), failed),
            Err(e) => {
                assert!(e.is_retryable(), "a read failed for good: {e}");
                failed.push(describe(&e));
                assert!(
                    started.elapsed() < within,
                    "no answer within {within:?}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Waits until `n` keys are under each prefix.
async fn queued(admin: &DynBackend, prefixes: &[&str], n: usize) -> bool {
    eventually(Duration::from_secs(10), || async {
        for p in prefixes {
            if keys_under(&**admin, p.as_bytes()).await.unwrap().len() != n {
                return false;
            }
        }
        true
    })
    .await
}

/// Kill every connection of two clients (pooled and listening) with `pg_terminate_backend`,
/// three rounds, while one holds the lock and leads, the other waits for both, and an observer
/// watches the election; writes go on through the cut. Every call fails retryably or succeeds,
/// no session is lost (TTL 2 s), the waiter acquires and is elected after the holder lets go,
/// the observer sees every leader change, and a raw watch delivers every acknowledged write
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_postgres_connections_are_survived_by_holder_waiter_and_observer() {
    let Some(pg) = postgres_for_tests().await else {
        return;
    };
    let url = pg.url();
    let schema = unique_schema("cut");
    let tag = format!("chaos-cut-{:08x}", rand::random::<u32>());
    let admin: DynBackend = Arc::new(
        pg::connect(&url, &schema, "chaos-admin", Duration::from_secs(2))
            .await
            .unwrap(),
    );
    let mut clients: Vec<DynBackend> = Vec::new();
    for side in ["a", "b"] {
        let app = format!("{tag}-{side}");
        clients.push(Arc::new(
            pg::connect(&url, &schema, &app, REQUEST_TIMEOUT)
                .await
                .unwrap(),
        ));
    }
    let sessions = [
        Session::new(clients[0].clone(), TTL).await.unwrap(),
        Session::new(clients[1].clone(), TTL).await.unwrap(),
    ];
    let observer = Session::new(clients[1].clone(), TTL).await.unwrap();
    let lost = count_losses(&[&sessions[0], &sessions[1], &observer]);
    let (lock_name, election_name) = ("lock", "election");
    let (lock_prefix, election_prefix) = ("lock/", "election/");

    // A raw watch on the written keys, through client b's hub (whose connection is cut too).
    let mut raw = clients[1]
        .watch(WatchRequest::new(KeyRange::prefix("w/")))
        .await
        .unwrap();

    let mut guard = Mutex::new(&sessions[0], lock_name)
        .unwrap()
        .lock()
        .await
        .unwrap();
    let mut leadership = Election::new(&sessions[0], election_name)
        .unwrap()
        .campaign("0")
        .await
        .unwrap();
    let observations = observe(&observer, election_name);
    let mut tokens = vec![guard.fencing_token()];
    let mut expected_leaders = vec!["0".to_string()];
    let mut acked: BTreeMap<Revision, String> = BTreeMap::new();
    let mut uncertain: BTreeSet<String> = BTreeSet::new();
    // Why calls failed (retryably), for the report.
    let mut failures: BTreeSet<String> = BTreeSet::new();
    let (mut write_errors, mut read_errors, mut unlock_errors) = (0, 0, 0);
    let rounds = 3;
    for round in 0..rounds {
        let (h, w) = (round % 2, 1 - round % 2);
        let waiting_lock = tokio::spawn({
            let m = Mutex::new(&sessions[w], lock_name).unwrap();
            async move {
                let g = m.lock_timeout(Duration::from_secs(30)).await;
                (g, Instant::now())
            }
        });
        let waiting_campaign = tokio::spawn({
            let e = Election::new(&sessions[w], election_name).unwrap();
            let value = (round + 1).to_string();
            async move { e.campaign_timeout(value, Duration::from_secs(30)).await }
        });
        assert!(
            queued(&admin, &[lock_prefix, election_prefix], 2).await,
            "round {round}: the waiter and the candidate queued"
        );
        assert!(
            eventually(Duration::from_secs(5), || async {
                observations.lock().unwrap().last().and_then(leader_value)
                    == expected_leaders.last().cloned()
            })
            .await
        );

        // The holder's loss detection is set up (its first lost() registers with the name's
        // watch and confirms the key) before the cut.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), guard.lost())
                .await
                .is_err(),
            "round {round}: lost() fired before the cut"
        );

        // Writes through the cut, on both clients.
        let writer = tokio::spawn({
            let clients = clients.clone();
            async move {
                let mut out = Vec::new();
                for i in 0..20 {
                    let key = format!("w/{round}/{i}");
                    let r = clients[i % 2].put(PutRequest::new(key.clone(), "v")).await;
                    out.push((key, r.map(|r| r.header_revision)));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                out
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let cut = Instant::now();
        let killed = pg::terminate_backends(&pg, &format!("{tag}-%")).await;
        let cut_took = cut.elapsed();
        let mut answered = Vec::new();
        for c in &clients {
            let (took, failed) = until_answered(c, Duration::from_secs(5)).await;
            answered.push(ms(took));
            read_errors += failed.len();
            failures.extend(failed);
        }
        let mut round_write_errors = 0;
        for (key, r) in writer.await.unwrap() {
            match r {
                Ok(rev) => {
                    acked.insert(rev, key);
                }
                Err(e) => {
                    assert!(e.is_retryable(), "a write failed for good: {e}");
                    round_write_errors += 1;
                    uncertain.insert(key);
                    failures.insert(describe(&e));
                }
            }
        }
        write_errors += round_write_errors;

        // The holder still holds: its is_owner() write goes through.
        let still = Txn::new()
            .when([guard.is_owner()])
            .and_then([TxnOp::Put(PutRequest::new(format!("w/owner/{round}"), "h"))]);
        let still = sessions[h].backend().txn(still).await.unwrap();
        assert!(still.succeeded, "round {round}: the holder lost its lock");
        acked.insert(still.header_revision, format!("w/owner/{round}"));
        assert!(!sessions[h].is_lost() && !sessions[w].is_lost());
        // Its lost() did not take the cut watch for a loss.
        if let Ok(e) = tokio::time::timeout(Duration::from_millis(300), guard.lost()).await {
            panic!("round {round}: the holder's lost() fired after the cut: {e}");
        }

        // Hand over: the waiter hears of the unlock through its resumed watch.
        let unlocked = Instant::now();
        if let Err(e) = guard.unlock().await {
            // Retried in the background (the delete is guarded by the key's revision).
            assert!(e.is_retryable(), "unlock failed for good: {e}");
            unlock_errors += 1;
        }
        let (got, acquired) = waiting_lock.await.unwrap();
        guard = got.unwrap_or_else(|e| panic!("round {round}: the waiter did not acquire: {e}"));
        let handoff = acquired.duration_since(unlocked);
        assert!(guard.fencing_token() > *tokens.last().unwrap());
        tokens.push(guard.fencing_token());

        let resigned = Instant::now();
        if let Err(e) = leadership.resign().await {
            assert!(e.is_retryable(), "resign failed for good: {e}");
            unlock_errors += 1;
        }
        leadership = waiting_campaign
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: the candidate was not elected: {e}"));
        expected_leaders.push((round + 1).to_string());
        let want = expected_leaders.last().cloned();
        assert!(
            eventually(Duration::from_secs(5), || async {
                observations.lock().unwrap().last().and_then(leader_value) == want
            })
            .await,
            "round {round}: observe() reports the new leader: {:?}",
            observations.lock().unwrap()
        );
        let observed = resigned.elapsed();
        eprintln!(
            "MEASURED pg_terminate_backend round {round}: {killed} connections killed in {:.0} ms; \
             first read answered {:.0} / {:.0} ms after the kill (clients a / b); {round_write_errors} \
             of 20 writes failed (retryably); lock handed over {:.0} ms after unlock; observer \
             named the new leader {:.0} ms after resign",
            ms(cut_took),
            answered[0],
            answered[1],
            ms(handoff),
            ms(observed),
        );
        assert!(
            killed >= 4,
            "both clients' pooled and listening connections were killed ({killed})"
        );
    }

    // The raw watch: every acknowledged write once, in revision order; nothing else but the
    // writes whose outcome was unknown.
    let sentinel = admin
        .put(PutRequest::new("w/sentinel", "end"))
        .await
        .unwrap()
        .header_revision;
    let mut got: Vec<(Revision, String)> = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), raw.next())
            .await
            .expect("the raw watch delivers")
            .expect("the raw watch is open")
            .expect("the raw watch does not fail");
        if event.revision() == sentinel {
            break;
        }
        got.push((
            event.revision(),
            String::from_utf8_lossy(&event.kv.key).into_owned(),
        ));
    }
    let revisions: Vec<Revision> = got.iter().map(|(r, _)| *r).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "events in order, none twice: {revisions:?}"
    );
    let missed: Vec<_> = acked
        .iter()
        .filter(|(rev, key)| !got.contains(&(**rev, (*key).clone())))
        .collect();
    assert!(
        missed.is_empty(),
        "acknowledged writes never watched: {missed:?}"
    );
    let extra: Vec<_> = got
        .iter()
        .filter(|(rev, key)| !acked.contains_key(rev) && !uncertain.contains(key))
        .collect();
    assert!(extra.is_empty(), "events of no write: {extra:?}");

    // Every leader change, in order, revisions rising.
    let seen = observations.lock().unwrap().clone();
    let values: Vec<Option<String>> = seen.iter().map(leader_value).collect();
    let want: Vec<Option<String>> = expected_leaders.iter().cloned().map(Some).collect();
    assert_eq!(values, want, "observe() saw every leader once, in order");
    assert!(seen.windows(2).all(|w| w[0].revision < w[1].revision));
    let lost_sessions = lost.load(Ordering::SeqCst);
    eprintln!(
        "MEASURED pg_terminate_backend: {rounds} rounds; {} writes acknowledged, {write_errors} \
         failed retryably ({} of those committed anyway), {read_errors} reads failed retryably \
         ({failures:?}), {unlock_errors} unlock/resign errors (retryable); raw watch: {} events, 0 missed, 0 \
         repeated; observer saw {:?}; tokens {tokens:?}; sessions lost: {lost_sessions}",
        acked.len(),
        got.iter().filter(|(r, _)| !acked.contains_key(r)).count(),
        got.len(),
        values.iter().flatten().collect::<Vec<_>>(),
    );
    assert_eq!(lost_sessions, 0, "a session did not survive the kills");

    guard.unlock().await.unwrap();
    leadership.resign().await.unwrap();
    for s in [&sessions[0], &sessions[1], &observer] {
        s.close().await.unwrap();
    }
    admin.delete(DeleteRequest::prefix("w/")).await.unwrap();
    wait_prefix_empty(&*admin, b"", Duration::from_secs(5))
        .await
        .unwrap();
    wait_leases_gone(
        &*admin,
        &[sessions[0].lease(), sessions[1].lease(), observer.lease()],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    pg::drop_schema(&url, &schema).await;
}

/// Sessions that must outlive a restart: fast shutdown, checkpoint, start (1–3 s here). A
/// lease expires on the database clock, which runs on while the server is down.
const RESTART_TTL: i64 = 10;

/// Restart PostgreSQL (fast shutdown, start on the same port and data) while a waiter is
/// blocked and an observer watches: the waiter acquires after the holder unlocks after the
/// restart, the observer reports the right leader, and fencing tokens taken after the restart
/// are above every token before it. Then crash it (`SIGKILL`, crash recovery on start): the
/// lock is still held and tokens still rise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_resumes_waiters_and_tokens_keep_rising() {
    let Some(server) = PgServer::start_or_skip().await else {
        return;
    };
    let url = server.url();
    let schema = unique_schema("restart");
    let connect = |app: &'static str| {
        let (url, schema) = (url.clone(), schema.clone());
        async move {
            let b: DynBackend = Arc::new(
                pg::connect(&url, &schema, app, Duration::from_secs(2))
                    .await
                    .unwrap(),
            );
            b
        }
    };
    let admin = connect("chaos-admin").await;
    let waiter_backend = connect("chaos-waiter").await;
    let holder = Session::new(admin.clone(), RESTART_TTL).await.unwrap();
    let waiter = Session::new(waiter_backend.clone(), RESTART_TTL)
        .await
        .unwrap();
    let observer = Session::new(admin.clone(), RESTART_TTL).await.unwrap();
    let lost = count_losses(&[&holder, &waiter, &observer]);

    // Tokens before: a few lock cycles on another name.
    let mut tokens_before = Vec::new();
    for _ in 0..3 {
        let g = Mutex::new(&holder, "t").unwrap().lock().await.unwrap();
        tokens_before.push(g.fencing_token());
        g.unlock().await.unwrap();
    }
    let guard = Mutex::new(&holder, "lock").unwrap().lock().await.unwrap();
    tokens_before.push(guard.fencing_token());
    let lead = Election::new(&holder, "election")
        .unwrap()
        .campaign("holder")
        .await
        .unwrap();
    let waiting_lock = tokio::spawn({
        let m = Mutex::new(&waiter, "lock").unwrap();
        async move {
            (
                m.lock_timeout(Duration::from_secs(60)).await,
                Instant::now(),
            )
        }
    });
    let waiting_campaign = tokio::spawn({
        let e = Election::new(&waiter, "election").unwrap();
        async move { e.campaign_timeout("waiter", Duration::from_secs(60)).await }
    });
    let observations = observe(&observer, "election");
    assert!(queued(&admin, &["lock/", "election/"], 2).await);
    assert!(
        eventually(Duration::from_secs(5), || async {
            !observations.lock().unwrap().is_empty()
        })
        .await
    );
    let rev_before = admin
        .range(RangeRequest::key("x"))
        .await
        .unwrap()
        .header_revision;

    let restart = Instant::now();
    server.restart().await.unwrap();
    let downtime = restart.elapsed();
    let (admin_back, admin_failed) = until_answered(&admin, Duration::from_secs(10)).await;
    let admin_failed = admin_failed.len();
    let (waiter_back, waiter_failed) =
        until_answered(&waiter_backend, Duration::from_secs(10)).await;
    let waiter_failed = waiter_failed.len();
    let rev_after = admin
        .range(RangeRequest::key("x"))
        .await
        .unwrap()
        .header_revision;
    assert!(rev_after >= rev_before, "the revision survived the restart");

    // The holder leaves after the restart; the waiter hears of it through its resumed watch.
    let unlocked = Instant::now();
    guard.unlock().await.unwrap();
    let (got, acquired) = waiting_lock.await.unwrap();
    let got = got.expect("the waiter acquires after the restart");
    let handoff = acquired.duration_since(unlocked);
    lead.resign().await.unwrap();
    let leadership = waiting_campaign
        .await
        .unwrap()
        .expect("the waiting candidate is elected after the restart");
    assert!(
        eventually(Duration::from_secs(10), || async {
            observations.lock().unwrap().last().is_some_and(|o| {
                o.leader
                    .as_ref()
                    .is_some_and(|kv| kv.value == b"waiter" && kv.key == leadership.key())
            })
        })
        .await,
        "observe() reports the new leader after the restart: {:?}",
        observations.lock().unwrap()
    );

    // Tokens after: the waiter's, then a few more cycles.
    let mut tokens_after = vec![got.fencing_token()];
    for _ in 0..3 {
        let g = Mutex::new(&holder, "t").unwrap().lock().await.unwrap();
        tokens_after.push(g.fencing_token());
        g.unlock().await.unwrap();
    }

    // Then a crash (SIGKILL to every process; crash recovery on start): what was committed
    // stays, the lock is still the waiter's, and tokens still rise.
    let crashed = Instant::now();
    server.kill();
    server.start_again().await.unwrap();
    let recovery = crashed.elapsed();
    until_answered(&admin, Duration::from_secs(10)).await;
    let still = Txn::new()
        .when([got.is_owner()])
        .and_then([TxnOp::Put(PutRequest::new("owner", "waiter"))]);
    assert!(
        admin.txn(still).await.unwrap().succeeded,
        "the lock survived the crash"
    );
    let mut tokens_after_crash = Vec::new();
    for _ in 0..3 {
        let g = Mutex::new(&holder, "t").unwrap().lock().await.unwrap();
        tokens_after_crash.push(g.fencing_token());
        g.unlock().await.unwrap();
    }
    admin.delete(DeleteRequest::key("owner")).await.unwrap();

    let seen = observations.lock().unwrap().clone();
    let lost_sessions = lost.load(Ordering::SeqCst);
    eprintln!(
        "MEASURED postgres restart: down {:.0} ms; first read answered {:.0} ms (admin, {} \
         retryable failures) / {:.0} ms (waiter, {} failures) after it was back; waiter acquired \
         {:.0} ms after the post-restart unlock; tokens before {tokens_before:?}, after \
         {tokens_after:?}, after a crash ({:.0} ms to recover) {tokens_after_crash:?}; observe \
         saw {:?}; sessions lost: {lost_sessions}",
        ms(downtime),
        ms(admin_back),
        admin_failed,
        ms(waiter_back),
        waiter_failed,
        ms(handoff),
        ms(recovery),
        seen.iter().map(leader_value).collect::<Vec<_>>(),
    );
    let all: Vec<Revision> = tokens_before
        .iter()
        .chain(&tokens_after)
        .chain(&tokens_after_crash)
        .copied()
        .collect();
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "tokens rise across the restart and the crash: {all:?}"
    );
    assert!(seen.windows(2).all(|w| w[0].revision < w[1].revision));
    assert_eq!(
        seen.iter().map(leader_value).collect::<Vec<_>>(),
        vec![Some("holder".to_string()), Some("waiter".to_string())],
        "observe() saw the holder, then the waiter, nothing else"
    );
    assert_eq!(lost_sessions, 0, "a session did not survive the restart");

    got.unlock().await.unwrap();
    leadership.resign().await.unwrap();
    for s in [&holder, &waiter, &observer] {
        s.close().await.unwrap();
    }
    wait_prefix_empty(&*admin, b"", Duration::from_secs(5))
        .await
        .unwrap();
    wait_leases_gone(
        &*admin,
        &[holder.lease(), waiter.lease(), observer.lease()],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}

/// TTL of the sessions in the pause test: the pause plus a keep-alive period (TTL / 3) must
/// fit in it, with room.
const PAUSE_TTL: i64 = 3;
/// How long PostgreSQL is frozen.
const PAUSE: Duration = Duration::from_millis(1500);

/// Freeze PostgreSQL (`SIGSTOP` to the postmaster and every backend) for 1.5 s, less than the
/// TTL (3 s), while a holder holds and a waiter waits: calls made meanwhile fail with
/// `Unavailable` at the request timeout (1 s), no session is lost, and after `SIGCONT` the
/// lock changes hands as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_paused_shorter_than_the_ttl_fails_calls_in_time_and_resumes() {
    let Some(server) = PgServer::start_or_skip().await else {
        return;
    };
    let url = server.url();
    let schema = unique_schema("pause");
    let mut clients: Vec<DynBackend> = Vec::new();
    for app in ["chaos-holder", "chaos-waiter"] {
        clients.push(Arc::new(
            pg::connect(&url, &schema, app, REQUEST_TIMEOUT)
                .await
                .unwrap(),
        ));
    }
    let holder = Session::new(clients[0].clone(), PAUSE_TTL).await.unwrap();
    let waiter = Session::new(clients[1].clone(), PAUSE_TTL).await.unwrap();
    let lost = count_losses(&[&holder, &waiter]);
    let guard = Mutex::new(&holder, "lock").unwrap().lock().await.unwrap();
    let waiting = tokio::spawn({
        let m = Mutex::new(&waiter, "lock").unwrap();
        async move {
            (
                m.lock_timeout(Duration::from_secs(30)).await,
                Instant::now(),
            )
        }
    });
    assert!(queued(&clients[0], &["lock/"], 2).await);

    tokio::task::block_in_place(|| server.pause());
    let paused = Instant::now();
    // Calls while it is frozen: a read, a write, a new session, a lock with its own deadline.
    let other = Mutex::new(&holder, "other").unwrap();
    let (read, write, session, lock) = tokio::join!(
        timed(clients[0].range(RangeRequest::key("probe"))),
        timed(clients[1].put(PutRequest::new("probe/paused", "v"))),
        timed(Session::new(clients[1].clone(), PAUSE_TTL)),
        timed(other.lock_timeout(Duration::from_millis(1200))),
    );
    let calls = [
        ("read", read.0.map(|_| ()), read.1),
        ("write", write.0.map(|_| ()), write.1),
        ("Session::new", session.0.map(|_| ()), session.1),
        ("lock_timeout(1.2 s)", lock.0.map(|_| ()), lock.1),
    ];
    let left = PAUSE.saturating_sub(paused.elapsed());
    tokio::time::sleep(left).await;
    server.resume();
    let frozen = paused.elapsed();
    let (back, failed_after) = until_answered(&clients[0], Duration::from_secs(5)).await;
    let failed_after = failed_after.len();

    let unlocked = Instant::now();
    guard.unlock().await.unwrap();
    let (got, acquired) = waiting.await.unwrap();
    let got = got.expect("the waiter acquires after the pause");
    let handoff = acquired.duration_since(unlocked);
    // A write that timed out was still in the frozen server's socket: it may commit on SIGCONT
    // (`Unavailable` means "unknown outcome").
    let late_commit = !clients[1]
        .range(RangeRequest::key("probe/paused"))
        .await
        .unwrap()
        .kvs
        .is_empty();
    // The lock attempt that failed while frozen removes its key in the background, also when
    // its write commits late (it deletes the key whatever its revision).
    let (orphan_gone, cleaned) = timed(wait_prefix_empty(
        &*clients[0],
        b"other/",
        Duration::from_secs(5),
    ))
    .await;
    let lost_sessions = lost.load(Ordering::SeqCst);
    eprintln!(
        "MEASURED postgres paused {:.0} ms (TTL {PAUSE_TTL} s, request timeout {:.0} ms): {}; \
         first read answered {:.0} ms after SIGCONT ({failed_after} retryable failures); \
         waiter acquired {:.0} ms after the unlock; the timed-out write committed on SIGCONT: \
         {late_commit}; the failed lock's key gone {:.0} ms later ({orphan_gone:?}); sessions \
         lost: {lost_sessions}",
        ms(frozen),
        ms(REQUEST_TIMEOUT),
        calls
            .iter()
            .map(|(what, r, took)| format!(
                "{what} → {} in {:.0} ms",
                r.as_ref().err().map(variant).unwrap_or("Ok"),
                ms(*took)
            ))
            .collect::<Vec<_>>()
            .join(", "),
        ms(back),
        ms(handoff),
        ms(cleaned),
    );
    for (what, r, took) in &calls {
        assert!(
            matches!(r, Err(Error::Unavailable { .. })),
            "{what} while frozen: {r:?}"
        );
        assert!(
            *took >= REQUEST_TIMEOUT - Duration::from_millis(50)
                && *took <= REQUEST_TIMEOUT + MARGIN,
            "{what} failed after {took:?}, not at the request timeout"
        );
    }
    assert_eq!(
        lost_sessions, 0,
        "a pause shorter than the TTL cost a session"
    );
    assert!(!holder.is_lost() && !waiter.is_lost());
    orphan_gone.expect("the failed lock attempt left no key");

    got.unlock().await.unwrap();
    holder.close().await.unwrap();
    waiter.close().await.unwrap();
    clients[0]
        .delete(DeleteRequest::prefix("probe/"))
        .await
        .unwrap();
    wait_prefix_empty(&*clients[0], b"", Duration::from_secs(5))
        .await
        .unwrap();
    wait_leases_gone(
        &*clients[0],
        &[holder.lease(), waiter.lease()],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}
