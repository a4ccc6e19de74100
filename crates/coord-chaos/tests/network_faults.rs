//! A client cut off from etcd by the fault proxy: blackholed, slowed past its request
//! timeout, its connections reset. Every call returns within the deadline its caller set, the
//! session reports its loss within the TTL, and after the repair new sessions work.
//!
//! Only the client's path is broken, so these use `ETCD_ENDPOINTS` when set.

use std::future::Future;
use std::time::{Duration, Instant};

use coord_chaos::proxy::{Mode, Proxy};
use coord_chaos::support::{
    connect, keys_under, unique_prefix, variant, wait_leases_gone, wait_prefix_empty,
};
use coord_core::{
    Backend, Counting, Election, Error, KeyRange, Mutex, PutRequest, RangeRequest, Session,
    WatchRequest,
};
use coord_etcd::EtcdConfig;
use etcd_harness::endpoints_for_tests;
use futures::StreamExt;

/// TTL of the cut-off client's sessions, seconds.
const TTL: i64 = 2;
/// Its per-request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// The deadline it gives `lock_timeout`/`campaign_timeout`.
const DEADLINE: Duration = Duration::from_millis(1500);
/// Scheduling slack on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(1);

async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Retries `Session::new` until it works (a repaired connection may need a moment).
async fn new_session(backend: &coord_etcd::EtcdBackend, within: Duration) -> (Session, Duration) {
    let started = Instant::now();
    loop {
        match Session::new(backend.clone(), TTL).await {
            Ok(s) => return (s, started.elapsed()),
            Err(e) if started.elapsed() < within => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no session within {within:?} after the repair: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_client_fails_within_its_deadlines_and_recovers() {
    let Some(etcd) = endpoints_for_tests().await else {
        return;
    };
    let endpoints = etcd.endpoints();
    let admin = connect(&endpoints, Duration::from_secs(2)).await.unwrap();
    let proxy = Proxy::to_endpoint(&endpoints[0]).await.unwrap();
    let client = connect(&[proxy.endpoint()], REQUEST_TIMEOUT).await.unwrap();
    let root = unique_prefix("partition");
    let lock_name = format!("{root}lock");
    let other_lock = format!("{root}other");
    let election_name = format!("{root}election");
    let mut leases = Vec::new();

    // B, on a healthy path, holds the lock and leads, so the cut-off client has to wait.
    let b = Session::new(admin.clone(), 30).await.unwrap();
    leases.push(b.lease());
    let b_mutex = Mutex::new(&b, &lock_name).unwrap();
    let b_election = Election::new(&b, &election_name).unwrap();
    let b_guard = b_mutex.lock().await.unwrap();
    let b_lead = b_election.campaign("b").await.unwrap();

    // A warm client: session, watches registered.
    let a = Session::new(client.clone(), TTL).await.unwrap();
    leases.push(a.lease());
    let a_mutex = Mutex::new(&a, &lock_name).unwrap();
    let a_election = Election::new(&a, &election_name).unwrap();
    assert!(matches!(a_mutex.try_lock().await, Err(Error::Locked)));
    assert_eq!(a_election.leader().await.unwrap().value, b"b");

    // ---- Blackhole: nothing moves.
    proxy.set_mode(Mode::Blackhole);
    let cut = Instant::now();
    let other = Mutex::new(&a, &other_lock).unwrap();
    let (lock, campaign, plain_lock, read, lost) = tokio::join!(
        timed(a_mutex.lock_timeout(DEADLINE)),
        timed(a_election.campaign_timeout("a", DEADLINE)),
        timed(other.lock()),
        timed(client.range(RangeRequest::key(root.clone()))),
        tokio::time::timeout(Duration::from_secs(TTL as u64 + 5), a.lost()),
    );
    let lost_after = cut.elapsed();
    eprintln!(
        "MEASURED blackhole: lock_timeout({:?}) -> {} in {:.0} ms; campaign_timeout -> {} in \
         {:.0} ms; lock() without deadline -> {} in {:.0} ms (request timeout {:?}); a read -> \
         {} in {:.0} ms; session lost() {:.0} ms after the cut (TTL {TTL} s)",
        DEADLINE,
        lock.0.as_ref().map_or_else(variant, |_| "Ok"),
        ms(lock.1),
        campaign.0.as_ref().map_or_else(variant, |_| "Ok"),
        ms(campaign.1),
        plain_lock.0.as_ref().map_or_else(variant, |_| "Ok"),
        ms(plain_lock.1),
        REQUEST_TIMEOUT,
        read.0.as_ref().map_or_else(variant, |_| "Ok"),
        ms(read.1),
        ms(lost_after),
    );
    assert!(lock.0.is_err(), "no lock through a blackhole");
    assert!(
        lock.1 <= DEADLINE + MARGIN,
        "lock_timeout took {:?}",
        lock.1
    );
    assert!(campaign.0.is_err(), "no leadership through a blackhole");
    assert!(
        campaign.1 <= DEADLINE + MARGIN,
        "campaign_timeout took {:?}",
        campaign.1
    );
    // Even without a deadline of its own, a call is bounded by the request timeout the
    // caller configured.
    assert!(matches!(
        plain_lock.0,
        Err(Error::Unavailable { .. } | Error::SessionExpired { .. })
    ));
    assert!(
        plain_lock.1 <= 2 * REQUEST_TIMEOUT + MARGIN,
        "lock() took {:?}",
        plain_lock.1
    );
    assert!(matches!(read.0, Err(Error::Unavailable { .. })));
    assert!(read.1 <= REQUEST_TIMEOUT + MARGIN);
    assert!(lost.is_ok(), "the session must report its loss");
    assert!(
        lost_after <= Duration::from_secs(TTL as u64) + MARGIN,
        "lost() fired {lost_after:?} after the cut, TTL is {TTL} s"
    );
    assert!(a.is_lost());
    assert!(matches!(
        a_mutex.lock().await,
        Err(Error::SessionExpired { .. })
    ));

    // ---- Repair: new sessions work.
    proxy.set_mode(Mode::Pass);
    let (a2, first_session) = new_session(&client, Duration::from_secs(10)).await;
    leases.push(a2.lease());
    let a2_mutex = Mutex::new(&a2, &lock_name).unwrap();
    let a2_election = Election::new(&a2, &election_name).unwrap();
    b_guard.unlock().await.unwrap();
    b_lead.resign().await.unwrap();
    let g = a2_mutex
        .lock_timeout(Duration::from_secs(10))
        .await
        .unwrap();
    let l = a2_election
        .campaign_timeout("a2", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(a2_election.leader().await.unwrap().value, b"a2");
    g.unlock().await.unwrap();
    l.resign().await.unwrap();
    eprintln!(
        "MEASURED repair: new session {:.0} ms after the blackhole lifted",
        ms(first_session)
    );

    // ---- Small delay (below the request timeout): slow but working.
    proxy.set_mode(Mode::Delay(Duration::from_millis(100)));
    let (slow, slow_took) = timed(async {
        let g = a2_mutex.lock_timeout(Duration::from_secs(10)).await?;
        g.unlock().await
    })
    .await;
    slow.unwrap();
    assert!(slow_took >= Duration::from_millis(200), "the delay applied");
    eprintln!(
        "MEASURED delay 100 ms: lock + unlock took {:.0} ms",
        ms(slow_took)
    );

    // ---- Delay past the request timeout: every call fails in time, the session is lost.
    let b_guard = b_mutex.lock().await.unwrap();
    let b_lead = b_election.campaign("b").await.unwrap();
    proxy.set_mode(Mode::Delay(Duration::from_secs(2)));
    let cut = Instant::now();
    let (lock, campaign, session, lost) = tokio::join!(
        timed(a2_mutex.lock_timeout(DEADLINE)),
        timed(a2_election.campaign_timeout("a2", DEADLINE)),
        timed(Session::new(client.clone(), TTL)),
        tokio::time::timeout(Duration::from_secs(TTL as u64 + 5), a2.lost()),
    );
    let lost_after = cut.elapsed();
    eprintln!(
        "MEASURED delay 2 s: lock_timeout -> {} in {:.0} ms; campaign_timeout -> {} in {:.0} ms; \
         Session::new -> {} in {:.0} ms; session lost() {:.0} ms after the delay began",
        lock.0.as_ref().map_or_else(variant, |_| "Ok"),
        ms(lock.1),
        campaign.0.as_ref().map_or_else(variant, |_| "Ok"),
        ms(campaign.1),
        session.0.as_ref().map_or_else(variant, |_| "Ok"),
        ms(session.1),
        ms(lost_after),
    );
    assert!(lock.0.is_err() && lock.1 <= DEADLINE + MARGIN);
    assert!(campaign.0.is_err() && campaign.1 <= DEADLINE + MARGIN);
    assert!(matches!(session.0, Err(Error::Unavailable { .. })));
    assert!(session.1 <= REQUEST_TIMEOUT + MARGIN);
    assert!(lost.is_ok());
    assert!(lost_after <= Duration::from_secs(TTL as u64) + MARGIN);

    // ---- Repair again, then reset every connection: the client reconnects by itself, and
    // a live session survives a reset shorter than its TTL.
    proxy.set_mode(Mode::Pass);
    let (a3, _) = new_session(&client, Duration::from_secs(10)).await;
    leases.push(a3.lease());
    let a3_mutex = Mutex::new(&a3, &lock_name).unwrap();
    assert!(matches!(a3_mutex.try_lock().await, Err(Error::Locked)));
    let accepted_before = proxy.stats().accepted;
    proxy.reset_connections();
    let reset = Instant::now();
    // The call that meets the dead connection fails with a retryable error; the caller
    // retries, and the client has reconnected by then.
    let waiter = tokio::spawn({
        let m = a3_mutex.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut transient = 0;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match m.lock_timeout(left).await {
                    Err(e) if e.is_retryable() && !left.is_zero() => {
                        transient += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => return (other, transient),
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    b_guard.unlock().await.unwrap();
    let (g, transient) = waiter.await.unwrap();
    let g = g.expect("a lock after the reset");
    let back = reset.elapsed();
    assert!(
        !a3.is_lost(),
        "a reset shorter than the TTL costs no session"
    );
    assert!(
        proxy.stats().accepted > accepted_before,
        "the client reconnected"
    );
    eprintln!(
        "MEASURED reset: lock acquired {:.0} ms after every connection was reset (the holder \
         unlocked at 300 ms; {transient} retryable errors retried first); session kept",
        ms(back)
    );
    g.unlock().await.unwrap();
    b_lead.resign().await.unwrap();

    // Nothing left behind: keys written by late (delayed) requests die with their leases.
    for s in [&a, &a2, &a3, &b] {
        let _ = s.close().await;
    }
    for name in [&lock_name, &other_lock, &election_name] {
        wait_prefix_empty(
            &admin,
            format!("{name}/").as_bytes(),
            Duration::from_secs(TTL as u64 + 5),
        )
        .await
        .unwrap();
    }
    wait_leases_gone(&admin, &leases, Duration::from_secs(TTL as u64 + 5))
        .await
        .unwrap();
    assert!(keys_under(&admin, root.as_bytes())
        .await
        .unwrap()
        .is_empty());
}

/// A waiter cut off while it waits: its session expires, and its lock() fails with
/// `SessionExpired` — it never reports a lock it does not hold, even after the holder leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_cut_off_gets_session_expired_never_the_lock() {
    let Some(etcd) = endpoints_for_tests().await else {
        return;
    };
    let endpoints = etcd.endpoints();
    let admin = connect(&endpoints, Duration::from_secs(2)).await.unwrap();
    let proxy = Proxy::to_endpoint(&endpoints[0]).await.unwrap();
    let client = connect(&[proxy.endpoint()], REQUEST_TIMEOUT).await.unwrap();
    let name = format!("{}lock", unique_prefix("cutwaiter"));
    let prefix = format!("{name}/");

    let holder = Session::new(admin.clone(), 30).await.unwrap();
    let guard = Mutex::new(&holder, &name).unwrap().lock().await.unwrap();
    // Counted, to see when the waiter is really queued: it opens a watch to wait with, a call
    // it makes only once its acquire transaction has answered. (Its
    // key in etcd is not enough: that answer can still be on its way when the cut comes, and
    // then lock() fails with that transaction's timeout instead of waiting.)
    let counting = Counting::new(client);
    let waiter = Session::new(counting.clone(), TTL).await.unwrap();
    let mutex = Mutex::new(&waiter, &name).unwrap();
    let wait = tokio::spawn(async move { mutex.lock_timeout(Duration::from_secs(30)).await });
    assert!(
        coord_chaos::support::eventually(Duration::from_secs(10), || async {
            counting.counts().watch >= 1
        })
        .await,
        "the waiter never queued"
    );
    assert_eq!(
        keys_under(&admin, prefix.as_bytes()).await.unwrap().len(),
        2
    );
    proxy.set_mode(Mode::Blackhole);
    let cut = Instant::now();
    let result = wait.await.unwrap();
    let took = cut.elapsed();
    eprintln!(
        "MEASURED cut-off waiter: lock() -> {} {:.0} ms after the cut (TTL {TTL} s)",
        result.as_ref().map_or_else(variant, |_| "Ok"),
        ms(took)
    );
    assert!(
        matches!(result, Err(Error::SessionExpired { .. })),
        "got {:?}",
        result.map(|g| g.fencing_token())
    );
    assert!(took <= Duration::from_secs(TTL as u64) + MARGIN);
    // The store expires the waiter's key with its lease; the holder is undisturbed.
    wait_prefix_empty_but(&admin, &prefix, guard.key()).await;
    proxy.set_mode(Mode::Pass);
    guard.unlock().await.unwrap();
    holder.close().await.unwrap();
    wait_prefix_empty(&admin, prefix.as_bytes(), Duration::from_secs(5))
        .await
        .unwrap();
    wait_leases_gone(
        &admin,
        &[holder.lease(), waiter.lease()],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}

/// Waits until the only key under `prefix` is `keep`.
async fn wait_prefix_empty_but(admin: &coord_etcd::EtcdBackend, prefix: &str, keep: &[u8]) {
    let only = coord_chaos::support::eventually(Duration::from_secs(TTL as u64 + 5), || async {
        let keys = keys_under(admin, prefix.as_bytes()).await.unwrap();
        keys.len() == 1 && keys[0].key == keep
    })
    .await;
    assert!(only, "the waiter's key expires with its lease");
}

/// A connection that stops answering (blackholed) is found by the HTTP/2 keep-alive while a
/// watch is open on it: it is dropped, the watch re-opens on a new connection once the path
/// heals, and the event written meanwhile arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_drops_a_dead_connection_and_the_watch_resumes() {
    let Some(etcd) = endpoints_for_tests().await else {
        return;
    };
    let endpoints = etcd.endpoints();
    let admin = connect(&endpoints, Duration::from_secs(2)).await.unwrap();
    let proxy = Proxy::to_endpoint(&endpoints[0]).await.unwrap();
    let client = EtcdConfig::new([proxy.endpoint()])
        .with_request_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), Duration::from_millis(500))
        .with_watch_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .with_watch_reconnect_timeout(None)
        .connect()
        .await
        .unwrap();
    let key = format!("{}k", unique_prefix("keepalive")).into_bytes();
    let mut watch = client
        .watch(WatchRequest::new(KeyRange::key(key.clone())))
        .await
        .unwrap();
    let accepted = proxy.stats().accepted;
    proxy.set_mode(Mode::Blackhole);
    let cut = Instant::now();
    let put = admin.put(PutRequest::new(key.clone(), "v")).await.unwrap();
    // The stream re-opens itself while it is read.
    let next = tokio::spawn(async move {
        let first = watch.next().await;
        (first, watch)
    });
    // Only a dropped connection makes the watch dial again (the old one would carry the event
    // once the path heals).
    assert!(
        coord_chaos::support::eventually(Duration::from_secs(5), || async {
            proxy.stats().accepted > accepted
        })
        .await,
        "the unanswered keep-alive did not drop the connection"
    );
    let dropped_after = cut.elapsed();
    proxy.set_mode(Mode::Pass);
    let (first, mut watch) = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("the watch resumes")
        .unwrap();
    let event = first
        .expect("the stream goes on")
        .expect("an event, not an error");
    assert_eq!(event.revision(), put.header_revision);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), watch.next())
            .await
            .is_err(),
        "the event came once"
    );
    eprintln!(
        "MEASURED keep-alive: a blackholed connection dropped and re-dialled {:.0} ms after the \
         cut (ping every 1 s, 500 ms to answer)",
        ms(dropped_after)
    );
    admin
        .delete(coord_core::DeleteRequest::key(key))
        .await
        .unwrap();
}

/// A request whose future is parked (polled once, then left alone: a watch re-opening inside a
/// stream its consumer is not polling) while it is the one reconnecting must not hold up the
/// client's other requests. Seen after an etcd restart: every other call timed out for ~30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_request_does_not_hold_up_the_reconnect() {
    let Some(etcd) = endpoints_for_tests().await else {
        return;
    };
    let endpoints = etcd.endpoints();
    let proxy = Proxy::to_endpoint(&endpoints[0]).await.unwrap();
    let client = connect(&[proxy.endpoint()], REQUEST_TIMEOUT).await.unwrap();
    let key = format!("{}parked", unique_prefix("netfault"));
    client.range(RangeRequest::key(key.clone())).await.unwrap();

    let accepted_before = proxy.stats().accepted;
    proxy.reset_connections();
    // The client notices its connection gone (the reset reaches it at once on loopback).
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut parked = Box::pin(client.range(RangeRequest::key(key.clone())));
    assert!(
        futures::poll!(parked.as_mut()).is_pending(),
        "the first request after the reset starts a new connection"
    );
    let (other, took) = timed(client.range(RangeRequest::key(key.clone()))).await;
    other.expect("another request gets through while the first one is parked");
    assert!(
        proxy.stats().accepted == accepted_before + 1,
        "one connection made for both requests"
    );
    eprintln!(
        "MEASURED parked request: another request answered in {:.0} ms",
        ms(took)
    );
    // The parked request completes too, on the same connection.
    parked.await.unwrap();
    assert_eq!(proxy.stats().accepted, accepted_before + 1);
}
