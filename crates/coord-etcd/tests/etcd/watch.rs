//! Watches: registration, order, filters, replay, compaction, resume across restarts,
//! cancel on drop.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use coord_core::{
    Backend, DeleteRequest, Error, EventKind, KeyRange, PutRequest, RangeRequest, Txn, TxnOp,
    WatchRequest,
};
use coord_etcd::EtcdConfig;
use etcd_harness::EtcdServer;
use futures::StreamExt;

use crate::{assert_quiet, connect, connect_server, key, next_events, next_item, prefix};

#[tokio::test]
async fn watch_from_now_sees_every_change_in_order() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    let b = connect(&etcd).await;
    let p = prefix("watch-now");
    let mut all = b
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())).with_prev_kv())
        .await
        .unwrap();
    let mut deletes = b
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())).with_no_put())
        .await
        .unwrap();
    let mut puts = b
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())).with_no_delete())
        .await
        .unwrap();
    let mut one = b
        .watch(WatchRequest::new(KeyRange::key(key(&p, "a"))))
        .await
        .unwrap();
    // Registered on return: a write right now is seen, no sleep needed.
    let (ka, kb) = (key(&p, "a"), key(&p, "b"));
    let r1 = b
        .put(PutRequest::new(ka.clone(), "1"))
        .await
        .unwrap()
        .header_revision;
    let r2 = b
        .put(PutRequest::new(ka.clone(), "2"))
        .await
        .unwrap()
        .header_revision;
    let r3 = b
        .txn(Txn::new().and_then([
            TxnOp::Put(PutRequest::new(kb.clone(), "x")),
            TxnOp::Delete(DeleteRequest::key(ka.clone())),
        ]))
        .await
        .unwrap()
        .header_revision;
    // Outside the prefix: not seen.
    let elsewhere = prefix("elsewhere");
    b.put(PutRequest::new(key(&elsewhere, "z"), "z"))
        .await
        .unwrap();

    let evs = next_events(&mut all, 4).await;
    let summary: Vec<_> = evs
        .iter()
        .map(|e| (e.kind, e.kv.key.clone(), e.revision()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (EventKind::Put, ka.clone(), r1),
            (EventKind::Put, ka.clone(), r2),
            (EventKind::Put, kb.clone(), r3),
            (EventKind::Delete, ka.clone(), r3),
        ]
    );
    assert_eq!(evs[1].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(evs[1].kv.version, 2);
    assert!(evs[3].kv.value.is_empty());
    assert_eq!(evs[3].prev_kv.as_ref().unwrap().value, b"2");
    assert!(evs[0].prev_kv.is_none());

    let d = next_item(&mut deletes).await.unwrap();
    assert_eq!((d.kind, d.revision()), (EventKind::Delete, r3));
    let ps = next_events(&mut puts, 3).await;
    assert!(ps.iter().all(|e| e.kind == EventKind::Put));
    let ones = next_events(&mut one, 3).await;
    assert!(ones.iter().all(|e| e.kv.key == ka));
    assert_quiet(&mut all, Duration::from_millis(200)).await;
    b.delete(DeleteRequest::prefix(p)).await.unwrap();
    b.delete(DeleteRequest::prefix(elsewhere)).await.unwrap();
}

#[tokio::test]
async fn watch_replays_history_from_a_past_revision() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    let b = connect(&etcd).await;
    let p = prefix("replay");
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(
            b.put(PutRequest::new(key(&p, &format!("k{i}")), format!("{i}")))
                .await
                .unwrap()
                .header_revision,
        );
    }
    b.delete(DeleteRequest::key(key(&p, "k0"))).await.unwrap();
    let mut w = b
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())).with_start_revision(revs[1]))
        .await
        .unwrap();
    let evs = next_events(&mut w, 5).await;
    let got: Vec<_> = evs.iter().map(|e| e.revision()).collect();
    assert_eq!(&got[..4], &revs[1..]);
    assert_eq!(evs[4].kind, EventKind::Delete);
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    // Then live events follow.
    let live = b.put(PutRequest::new(key(&p, "live"), "")).await.unwrap();
    assert_eq!(
        next_item(&mut w).await.unwrap().revision(),
        live.header_revision
    );
    b.delete(DeleteRequest::prefix(p)).await.unwrap();
}

#[tokio::test]
async fn compaction_gives_compacted_for_reads_and_watches() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let b = connect_server(&server).await;
    let p = prefix("compact");
    let k = key(&p, "k");
    let mut revs = Vec::new();
    for i in 0..4 {
        revs.push(
            b.put(PutRequest::new(k.clone(), format!("{i}")))
                .await
                .unwrap()
                .header_revision,
        );
    }
    // etcd keeps the revision compacted at: history below it is gone.
    b.compact(revs[2]).await.unwrap();

    let err = b
        .watch(WatchRequest::new(KeyRange::key(k.clone())).with_start_revision(revs[1]))
        .await;
    let item = match err {
        Err(e) => e,
        Ok(mut w) => next_item(&mut w).await.expect_err("compacted"),
    };
    assert!(
        matches!(item, Error::Compacted { compact_revision } if compact_revision == revs[2]),
        "{item:?}"
    );
    let mut w = b
        .watch(WatchRequest::new(KeyRange::key(k.clone())).with_start_revision(revs[2]))
        .await
        .unwrap();
    assert_eq!(next_item(&mut w).await.unwrap().revision(), revs[2]);

    let read = b
        .range(RangeRequest::key(k.clone()).with_revision(revs[1]))
        .await;
    assert!(
        matches!(read, Err(Error::Compacted { compact_revision }) if compact_revision == revs[2]),
        "{read:?}"
    );
    let in_txn = b
        .txn(Txn::new().and_then([TxnOp::Range(
            RangeRequest::key(k.clone()).with_revision(revs[0]),
        )]))
        .await;
    assert!(
        matches!(in_txn, Err(Error::Compacted { compact_revision }) if compact_revision == revs[2])
    );
    let again = b.compact(revs[1]).await;
    assert!(
        matches!(again, Err(Error::Compacted { compact_revision }) if compact_revision == revs[2])
    );
    assert!(b
        .range(RangeRequest::key(k).with_revision(revs[2]))
        .await
        .is_ok());
}

#[tokio::test]
async fn watch_survives_a_server_restart_without_gaps_or_repeats() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let b = EtcdConfig::new(server.endpoints())
        .with_request_timeout(Duration::from_secs(2))
        .with_watch_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let p = prefix("restart");
    let mut w = b
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())))
        .await
        .unwrap();
    let mut want = Vec::new();
    for i in 0..3 {
        want.push(
            b.put(PutRequest::new(key(&p, &format!("before{i}")), "v"))
                .await
                .unwrap()
                .header_revision,
        );
    }
    // Read one, leave two buffered or in flight while the server dies.
    assert_eq!(next_item(&mut w).await.unwrap().revision(), want[0]);
    server.kill();
    server.start_again().await.unwrap();
    // Writes right after the restart, before the watch has re-opened, must not be lost.
    for i in 0..3 {
        let put = loop {
            match b
                .put(PutRequest::new(key(&p, &format!("after{i}")), "v"))
                .await
            {
                Ok(put) => break put,
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("put after restart: {e:?}"),
            }
        };
        want.push(put.header_revision);
    }
    let got: Vec<_> = next_events(&mut w, 5)
        .await
        .iter()
        .map(|e| e.revision())
        .collect();
    assert_eq!(got, want[1..]);
    assert_quiet(&mut w, Duration::from_millis(300)).await;
    // A restart without killing (SIGTERM) works the same.
    server.restart().await.unwrap();
    let last = loop {
        match b.put(PutRequest::new(key(&p, "last"), "v")).await {
            Ok(put) => break put.header_revision,
            Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(next_item(&mut w).await.unwrap().revision(), last);
}

#[tokio::test]
async fn broken_watch_ends_with_unavailable_after_the_reconnect_timeout() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let b = EtcdConfig::new(server.endpoints())
        .with_request_timeout(Duration::from_millis(500))
        .with_watch_backoff(Duration::from_millis(50), Duration::from_millis(200))
        .with_watch_reconnect_timeout(Some(Duration::from_secs(1)))
        .connect()
        .await
        .unwrap();
    let mut w = b
        .watch(WatchRequest::new(KeyRange::prefix(prefix("gone"))))
        .await
        .unwrap();
    server.kill();
    let started = Instant::now();
    let item = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("the watch must not hang")
        .expect("the watch must not end silently");
    assert!(matches!(item, Err(Error::Unavailable { .. })), "{item:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(w.next().await.is_none(), "the stream ends after its error");
}

fn watcher_count(server: &EtcdServer) -> u64 {
    let mut conn = std::net::TcpStream::connect(server.endpoint()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    write!(conn, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .expect("watcher metric")
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

#[tokio::test]
async fn dropping_a_watch_cancels_it_on_the_server() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let b = connect_server(&server).await;
    assert_eq!(watcher_count(&server), 0);
    let mut streams = Vec::new();
    for i in 0..5 {
        streams.push(
            b.watch(WatchRequest::new(KeyRange::key(format!("w{i}"))))
                .await
                .unwrap(),
        );
    }
    assert_eq!(watcher_count(&server), 5);
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(3);
    while watcher_count(&server) != 0 {
        assert!(Instant::now() < deadline, "watchers leaked on the server");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
