//! What the conformance suite cannot see: round trips per call, revision order under
//! concurrent writers, lease expiry on the database clock with two reapers, the watch hub's
//! replay/live/compaction, killed connections, schema installation and versioning.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coord_core::{
    Backend, CallKind, Counting, DeleteRequest, Error, EventKind, KeyRange, Mutex, PutRequest,
    RangeRequest, Session, Txn, WatchEvent, WatchRequest, WatchStream,
};
use coord_postgres::PostgresBackend;
use futures::StreamExt;

mod common;

/// A prefix of this test's own.
fn prefix(what: &str) -> String {
    format!("test/{what}/{:x}/", common::random())
}

/// The next event of `watch` within `limit`.
async fn next_event(watch: &mut WatchStream, limit: Duration) -> WatchEvent {
    match tokio::time::timeout(limit, watch.next()).await {
        Ok(Some(Ok(e))) => e,
        other => panic!("expected a watch event within {limit:?}, got {other:?}"),
    }
}

/// An uncontended lock + unlock is two backend calls, each one statement (one round trip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_unlock_is_two_statements() {
    let Some(store) = common::backend().await else {
        return;
    };
    let counted = Arc::new(Counting::new(store.clone()));
    let session = Session::new(counted.clone(), 30).await.unwrap();
    let mutex = Mutex::new(&session, prefix("rt")).unwrap();
    // Warm up: each pooled connection prepares a statement the first time it runs it.
    for _ in 0..20 {
        mutex.lock().await.unwrap().unlock().await.unwrap();
    }
    let (calls, trips) = (counted.counts(), store.round_trips());
    let cycles = 50;
    for _ in 0..cycles {
        mutex.lock().await.unwrap().unlock().await.unwrap();
    }
    let calls = counted.counts().since(&calls);
    let trips = store.round_trips() - trips;
    assert_eq!(
        calls.get(CallKind::Txn),
        2 * cycles,
        "calls of {cycles} lock + unlock: {calls}"
    );
    // Whatever else ran meanwhile (a keep-alive) is one statement per call too.
    assert_eq!(trips, calls.calls(), "statements per call: {calls}");
    session.close().await.unwrap();
}

/// N writers at once: every write gets its own revision, and a watcher of the whole store sees
/// revisions rise one at a time (never r+1 before r), with every write of the writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revisions_in_commit_order_under_concurrent_writers() {
    let Some(store) = common::backend().await else {
        return;
    };
    let other = common::config(&common::url().unwrap())
        .connect()
        .await
        .unwrap();
    let p = prefix("order");
    let mut all = store
        .watch(WatchRequest::new(KeyRange::prefix("")))
        .await
        .unwrap();
    let (writers, each) = (8, 150);
    let mut tasks = Vec::new();
    for w in 0..writers {
        // Half the writers on another backend (another pool, as another process would).
        let s = if w % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..each {
                let t = Txn::new().and_then([
                    PutRequest::new(format!("{p}{w}/{i}"), "v").into(),
                    PutRequest::new(format!("{p}{w}/last"), format!("{i}")).into(),
                ]);
                revs.push(s.txn(t).await.unwrap().header_revision);
            }
            revs
        }));
    }
    let mut written = BTreeSet::new();
    for t in tasks {
        for rev in t.await.unwrap() {
            assert!(written.insert(rev), "revision {rev} given to two writes");
        }
    }
    let (first, last) = (*written.first().unwrap(), *written.last().unwrap());
    let mut seen = BTreeMap::<i64, usize>::new();
    let mut prev: Option<i64> = None;
    // Until both puts of the last write arrived.
    while seen.get(&last) != Some(&2) {
        let e = next_event(&mut all, Duration::from_secs(10)).await;
        let rev = e.revision();
        if let Some(p) = prev {
            assert!(
                rev == p || rev == p + 1,
                "a watcher of everything saw revision {rev} after {p}"
            );
        }
        prev = Some(rev);
        if e.kv.key.starts_with(p.as_bytes()) {
            *seen.entry(rev).or_default() += 1;
        }
    }
    let mine: BTreeSet<i64> = seen.keys().copied().filter(|r| *r >= first).collect();
    assert_eq!(
        mine, written,
        "revisions of the writes, as the watcher saw them"
    );
    assert!(
        seen.values().all(|n| *n == 2),
        "each write transaction's two puts arrive at one revision"
    );
    store.delete(DeleteRequest::prefix(p)).await.unwrap();
}

/// A lease ends on the database clock within TTL + 1 s: its keys are deleted at one revision,
/// with delete events, by the reaper, with no call from the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expires_within_ttl_and_a_second() {
    let Some(store) = common::backend().await else {
        return;
    };
    let p = prefix("expiry");
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())).with_no_put())
        .await
        .unwrap();
    let started = Instant::now();
    let lease = store.lease_grant(2, None).await.unwrap();
    for k in ["a", "b", "c"] {
        store
            .put(PutRequest::new(format!("{p}{k}"), "v").with_lease(lease.id))
            .await
            .unwrap();
    }
    let mut revs = BTreeSet::new();
    for _ in 0..3 {
        let e = next_event(&mut watch, Duration::from_secs(4)).await;
        assert_eq!(e.kind, EventKind::Delete);
        revs.insert(e.revision());
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took <= Duration::from_secs(3),
        "a 2 s lease ended after {took:?}"
    );
    assert_eq!(
        revs.len(),
        1,
        "the expiry's deletes share one revision: {revs:?}"
    );
    assert!(matches!(
        store.lease_keep_alive(lease.id).await,
        Err(Error::LeaseNotFound { .. })
    ));
    assert_eq!(store.range(RangeRequest::prefix(p)).await.unwrap().count, 0);
}

/// An expired lease never comes back: once its time has passed, keep-alive, put and
/// time-to-live say it is gone, even before a reaper ended it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_is_gone_before_it_is_reaped() {
    let Some(url) = common::url() else {
        return;
    };
    // A reaper that (almost) never runs.
    let store = common::config(&url)
        .with_reap_interval(Duration::from_secs(3600))
        .connect()
        .await
        .unwrap();
    let p = prefix("gone");
    let lease = store.lease_grant(1, None).await.unwrap();
    store
        .put(PutRequest::new(format!("{p}k"), "v").with_lease(lease.id))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let gone = |r: &coord_core::Result<_>| matches!(r, Err(Error::LeaseNotFound { lease: l }) if *l == lease.id);
    assert!(gone(&store.lease_keep_alive(lease.id).await.map(|_| ())));
    assert!(gone(
        &store.lease_time_to_live(lease.id, false).await.map(|_| ())
    ));
    assert!(gone(
        &store
            .put(PutRequest::new(format!("{p}k2"), "v").with_lease(lease.id))
            .await
            .map(|_| ())
    ));
    assert!(!store.lease_list().await.unwrap().contains(&lease.id));
    // Another backend's reaper (the one of `common::backend`) ends it.
    let reaper = common::backend().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while reaper
        .range(RangeRequest::prefix(p.clone()))
        .await
        .unwrap()
        .count
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "the key of an expired lease is still there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two backends (two reapers, as two processes) expire many leases together: each lease's keys
/// are deleted once, at one revision per lease, none twice, none left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_reapers_expire_together() {
    let Some(url) = common::url() else {
        return;
    };
    let fast = |c: coord_postgres::PostgresConfig| c.with_reap_interval(Duration::from_millis(20));
    let a = fast(common::config(&url)).connect().await.unwrap();
    let b = fast(common::config(&url)).connect().await.unwrap();
    let p = prefix("reapers");
    let mut watch = a
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())).with_no_put())
        .await
        .unwrap();
    let (leases, keys) = (40, 3);
    // Events are timestamped as they arrive, while the leases are still being granted.
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..leases * keys {
            let e = next_event(&mut watch, Duration::from_secs(10)).await;
            got.push((e, Instant::now()));
        }
        got
    });
    let mut expected = BTreeMap::new();
    let mut granted = Vec::new();
    for l in 0..leases {
        let s = if l % 2 == 0 { &a } else { &b };
        granted.push(Instant::now());
        let lease = s.lease_grant(1, None).await.unwrap();
        for k in 0..keys {
            let key = format!("{p}{l}/{k}");
            s.put(PutRequest::new(key.clone(), "v").with_lease(lease.id))
                .await
                .unwrap();
            expected.insert(key, l);
        }
    }
    let mut by_lease: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    let mut deleted = BTreeSet::new();
    for (e, at) in reader.await.unwrap() {
        let key = String::from_utf8(e.kv.key.clone()).unwrap();
        assert!(deleted.insert(key.clone()), "{key} deleted twice");
        let l = expected[&key];
        let took = at - granted[l as usize];
        assert!(
            took < Duration::from_secs(2),
            "the keys of a 1 s lease went {took:?} after its grant"
        );
        by_lease.entry(l).or_default().insert(e.revision());
    }
    assert!(
        by_lease.values().all(|revs| revs.len() == 1),
        "each lease's keys go at one revision: {by_lease:?}"
    );
    let all: BTreeSet<i64> = by_lease.values().flatten().copied().collect();
    assert_eq!(all.len(), leases as usize, "one revision per lease");
    assert_eq!(a.range(RangeRequest::prefix(p)).await.unwrap().count, 0);
}

/// A watch from a past revision replays the log, then goes on live, with nothing repeated; a
/// watch from below the compact revision gives Compacted; a compaction does not disturb a live
/// watch that already had those revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replay_live_and_compacted() {
    // A schema of its own: compacting the process's shared schema would cut the history that
    // other tests' watches are still reading.
    let Some((store, schema)) = common::backend_in_own_schema().await else {
        return;
    };
    let p = prefix("replay");
    let mut revs = Vec::new();
    for i in 0..10 {
        let r = store
            .put(PutRequest::new(format!("{p}k"), format!("{i}")))
            .await
            .unwrap()
            .header_revision;
        revs.push(r);
    }
    let mut live = store
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())).with_start_revision(revs[0]))
        .await
        .unwrap();
    for (i, r) in revs.iter().enumerate() {
        let e = next_event(&mut live, Duration::from_secs(5)).await;
        assert_eq!(
            (e.revision(), e.kv.value.clone()),
            (*r, format!("{i}").into_bytes())
        );
        assert_eq!(e.kv.version, i as i64 + 1);
    }
    store.compact(revs[5]).await.unwrap();
    let after = store
        .put(PutRequest::new(format!("{p}k"), "after"))
        .await
        .unwrap()
        .header_revision;
    let e = next_event(&mut live, Duration::from_secs(5)).await;
    assert_eq!(e.revision(), after, "the live event after the compaction");
    match store
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())).with_start_revision(revs[1]))
        .await
    {
        Err(Error::Compacted { compact_revision }) => assert!(compact_revision >= revs[5]),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a watch from a compacted revision opened"),
    }
    // From the compact revision itself: its revision and the rest.
    let mut from = store
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())).with_start_revision(revs[5]))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut from, Duration::from_secs(5))
            .await
            .revision(),
        revs[5]
    );
    store.delete(DeleteRequest::prefix(p)).await.unwrap();
    drop((live, from, store));
    common::drop_schema_now(&schema).await;
}

/// The automatic compaction (retention 20 revisions, a reaper pass every 20 ms; no `compact()`
/// call): once the compactor has run, a watch from before the retained history ends with
/// Compacted, and one from inside it replays every event from its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_below_the_automatic_retention_is_compacted() {
    let Some(url) = common::url() else {
        return;
    };
    // A schema of its own, as in watch_replay_live_and_compacted.
    let schema = format!("coord_test_{:016x}", common::random());
    let store = common::config(&url)
        .with_schema(schema.clone())
        .with_history_retention(20)
        .with_reap_interval(Duration::from_millis(20))
        .connect()
        .await
        .unwrap();
    let p = prefix("autocompact");
    let mut revs = Vec::new();
    for i in 0..60 {
        let r = store
            .put(PutRequest::new(format!("{p}k"), format!("{i}")))
            .await
            .unwrap()
            .header_revision;
        revs.push(r);
    }
    // Wait for the compactor: the history kept is the retention (and less than a step more).
    let deadline = Instant::now() + Duration::from_secs(10);
    let compacted = loop {
        let rows = common::psql(&format!("SELECT compact_revision FROM \"{schema}\".meta")).await;
        let compacted: i64 = rows[0].get(0);
        if compacted >= revs[59] - 25 {
            break compacted;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted within 10 s: compact revision {compacted}, current {}",
            revs[59]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Compacted from `watch` itself or as the stream's first item: the contract allows both.
    let error = match store
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())).with_start_revision(revs[0]))
        .await
    {
        Err(e) => e,
        Ok(mut watch) => match tokio::time::timeout(Duration::from_secs(5), watch.next()).await {
            Ok(Some(Err(e))) => e,
            other => panic!("a watch from a compacted revision: {other:?}"),
        },
    };
    match error {
        Error::Compacted { compact_revision } => assert!(
            compact_revision >= compacted && compact_revision > revs[0],
            "compact revision {compact_revision}, compacted to {compacted}"
        ),
        e => panic!("wrong error: {e}"),
    }
    // From inside the retained history: its events, in order.
    let mut kept = store
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())).with_start_revision(revs[55]))
        .await
        .unwrap();
    for (i, r) in revs.iter().enumerate().skip(55) {
        let e = next_event(&mut kept, Duration::from_secs(5)).await;
        assert_eq!(
            (e.revision(), e.kv.value.clone()),
            (*r, format!("{i}").into_bytes())
        );
    }
    drop((kept, store));
    common::drop_schema_now(&schema).await;
}

/// Every connection of a backend killed (`pg_terminate_backend`), pooled and listening: calls
/// fail retryably or are retried, the watch resumes with no lost event, the session survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_survived() {
    let Some(url) = common::url() else {
        return;
    };
    let app = format!("coord-kill-{:x}", common::random());
    let store = common::config(&url)
        .with_application_name(app.clone())
        .connect()
        .await
        .unwrap();
    let p = prefix("kill");
    let session = Session::new(store.clone(), 5).await.unwrap();
    let mutex = Mutex::new(&session, format!("{p}lock")).unwrap();
    let guard = mutex.lock().await.unwrap();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix(format!("{p}w/"))))
        .await
        .unwrap();
    let mut expected = Vec::new();
    let mut failures = 0;
    for round in 0..3 {
        let killed = common::psql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE '{app}%'"
        ))
        .await;
        assert!(
            !killed.is_empty(),
            "round {round}: no connection of the backend to kill"
        );
        for i in 0..5 {
            match store
                .put(PutRequest::new(format!("{p}w/{round}/{i}"), "v"))
                .await
            {
                Ok(r) => expected.push(r.header_revision),
                Err(e) => {
                    assert!(
                        e.is_retryable(),
                        "a call after the kill failed for good: {e}"
                    );
                    failures += 1;
                }
            }
        }
    }
    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.push(
            next_event(&mut watch, Duration::from_secs(10))
                .await
                .revision(),
        );
    }
    assert_eq!(
        got, expected,
        "the watch after the kills: every write once, in order"
    );
    assert!(
        failures <= 3,
        "{failures} writes failed (retryably) after 3 kills"
    );
    assert!(!session.is_lost(), "the session did not survive the kills");
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
}

/// Several processes connecting at once to a schema that does not exist yet: one installs it,
/// the others wait and find it. A schema of a newer version is refused, clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_installed_once_and_versioned() {
    let Some(url) = common::url() else {
        return;
    };
    let schema = format!("coord_install_{:x}", common::random());
    let connects = (0..4).map(|_| {
        coord_postgres::PostgresConfig::new(url.clone())
            .with_schema(schema.clone())
            .connect()
    });
    let backends: Vec<PostgresBackend> = futures::future::try_join_all(connects).await.unwrap();
    let r = backends[0].put(PutRequest::new("k", "v")).await.unwrap();
    assert_eq!(
        r.header_revision, 2,
        "the first write of a fresh store is revision 2"
    );
    drop(backends);
    common::psql(&format!("UPDATE \"{schema}\".meta SET schema_version = 99")).await;
    let err = coord_postgres::PostgresConfig::new(url.clone())
        .with_schema(schema.clone())
        .connect()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("backend") && format!("{err:?}").contains("version 99"),
        "{err:?}"
    );
    common::drop_schema_now(&schema).await;
}

/// A store installed at version 1 (NOTIFY named the revision only) is upgraded on connect:
/// its functions are replaced, its data kept, and its watches get the new payloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_is_upgraded_on_connect() {
    let Some(url) = common::url() else {
        return;
    };
    let schema = format!("coord_upgrade_{:x}", common::random());
    let connect = || {
        coord_postgres::PostgresConfig::new(url.clone())
            .with_schema(schema.clone())
            .connect()
    };
    let first = connect().await.unwrap();
    first.put(PutRequest::new("k", "v")).await.unwrap();
    drop(first);
    // What version 1 was: no notify() (nor version 3's change_text()).
    for f in ["notify(bigint)", "notify(bigint, text)", "change_text"] {
        common::psql(&format!("DROP FUNCTION \"{schema}\".{f}")).await;
    }
    common::psql(&format!("UPDATE \"{schema}\".meta SET schema_version = 1")).await;
    let store = connect().await.unwrap();
    let version: i32 =
        common::psql(&format!("SELECT schema_version FROM \"{schema}\".meta")).await[0].get(0);
    assert_eq!(version, 3);
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::key("k")))
        .await
        .unwrap();
    store.put(PutRequest::new("k", "w")).await.unwrap();
    let e = next_event(&mut watch, Duration::from_secs(10)).await;
    assert_eq!((e.kv.value.as_slice(), e.kv.version), (&b"w"[..], 2));
    drop((watch, store));
    common::drop_schema_now(&schema).await;
}

/// NOTIFY carries a revision's changes when they fit, else the revision alone: the payloads
/// as a listener sees them. A watch gets both kinds of revision, in order, with their values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_carries_changes_that_fit() {
    let Some((store, schema)) = common::backend_in_own_schema().await else {
        return;
    };
    let url = common::url().unwrap();
    let (client, mut conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut payloads) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{schema}.changes\""))
        .await
        .unwrap();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::key("big")).with_prev_kv())
        .await
        .unwrap();
    let small = store.put(PutRequest::new("big", "ab")).await.unwrap();
    let big_value = vec![b'x'; 5_000];
    let big = store
        .put(PutRequest::new("big", big_value.clone()))
        .await
        .unwrap();
    let payload = |p: Option<String>| p.expect("a notification");
    let wait = Duration::from_secs(10);
    let first = payload(tokio::time::timeout(wait, payloads.recv()).await.unwrap());
    let rev = small.header_revision;
    // The key and value in hex; a create (no previous key): the prev fields are NULL.
    assert_eq!(first, format!("{rev} 0,p,626967,6162,{rev},1,0,-,-,-,-,-"));
    let second = payload(tokio::time::timeout(wait, payloads.recv()).await.unwrap());
    assert_eq!(
        second,
        big.header_revision.to_string(),
        "10,000 hex digits do not fit"
    );
    let e = next_event(&mut watch, wait).await;
    assert_eq!(
        (e.kv.value.as_slice(), e.kv.mod_revision),
        (&b"ab"[..], rev)
    );
    let e = next_event(&mut watch, wait).await;
    assert_eq!(e.kv.value, big_value);
    assert_eq!(e.prev_kv.expect("prev_kv").value, b"ab");
    drop((watch, store, client));
    common::drop_schema_now(&schema).await;
}

/// Bad input is refused before anything is sent, with InvalidArgument, and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused() {
    let Some(store) = common::backend().await else {
        return;
    };
    let before = store.round_trips();
    let big = vec![0u8; 2 << 20];
    for r in [
        store.put(PutRequest::new("", "v")).await.map(|_| ()),
        store.put(PutRequest::new("k", big)).await.map(|_| ()),
        store.range(RangeRequest::key("")).await.map(|_| ()),
        store.lease_grant(0, None).await.map(|_| ()),
        store.lease_grant(10, Some(-5)).await.map(|_| ()),
        store
            .watch(WatchRequest::new(KeyRange::key("k")).with_start_revision(-1))
            .await
            .map(|_| ()),
    ] {
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    }
    assert_eq!(store.round_trips(), before, "nothing was sent");
    let current = store
        .range(RangeRequest::key("x"))
        .await
        .unwrap()
        .header_revision;
    assert!(matches!(
        store.compact(current + 1000).await,
        Err(Error::InvalidArgument { .. })
    ));
}

/// The backend is `Clone + Debug + Send + Sync + 'static`; when its last clone is dropped,
/// its background tasks (reaper, watch hub) end and every connection closes, and a watch still
/// open ends with an error instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_clone_stops_everything() {
    fn bounds<T: Clone + std::fmt::Debug + Send + Sync + 'static>() {}
    bounds::<PostgresBackend>();
    let Some(url) = common::url() else {
        return;
    };
    let app = format!("coord-drop-{:x}", common::random());
    let store = common::config(&url)
        .with_application_name(app.clone())
        .connect()
        .await
        .unwrap();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix(prefix("drop"))))
        .await
        .unwrap();
    let clone = store.clone();
    clone
        .put(PutRequest::new(prefix("drop"), "v"))
        .await
        .unwrap();
    let count = || async {
        let rows = common::psql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '{app}%'"
        ))
        .await;
        rows[0].get::<_, i64>(0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while count().await < 2 {
        assert!(
            Instant::now() < deadline,
            "no pooled and listening connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(store);
    drop(clone);
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch ends when the backend is dropped");
    assert!(
        matches!(ended, Some(Err(Error::Unavailable { .. }))),
        "{ended:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while count().await > 0 {
        assert!(Instant::now() < deadline, "connections left after the drop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
