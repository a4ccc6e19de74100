//! Watches: live events, replay from the past, filters, compaction, cleanup.

use coord_core::{
    Backend, Compare, CompareOp, DeleteRequest, Error, EventKind, KeyRange, PutRequest, Txn,
    WatchEvent, WatchRequest, WatchStream,
};
use coord_mem::MemStore;
use futures::{FutureExt, StreamExt};

/// Every event already delivered, without waiting for more.
fn drain(watch: &mut WatchStream) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    while let Some(Some(item)) = tokio::task::unconstrained(watch.next()).now_or_never() {
        out.push(item.unwrap());
    }
    out
}

fn summary(events: &[WatchEvent]) -> Vec<(EventKind, String, i64)> {
    events
        .iter()
        .map(|e| {
            (
                e.kind,
                String::from_utf8(e.kv.key.clone()).unwrap(),
                e.revision(),
            )
        })
        .collect()
}

async fn put(store: &MemStore, k: &str, v: &str) {
    store.put(PutRequest::new(k, v)).await.unwrap();
}

#[tokio::test]
async fn from_now_sees_every_later_change_of_its_range() {
    let store = MemStore::new();
    put(&store, "p/before", "x").await; // 2
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("p/")))
        .await
        .unwrap();
    put(&store, "p/a", "1").await; // 3
    put(&store, "q/a", "1").await; // 4: not in range
    put(&store, "p/a", "2").await; // 5
    store.delete(DeleteRequest::key("p/before")).await.unwrap(); // 6
    use EventKind::*;
    let events = drain(&mut watch);
    assert_eq!(
        summary(&events),
        [
            (Put, "p/a".into(), 3),
            (Put, "p/a".into(), 5),
            (Delete, "p/before".into(), 6)
        ]
    );
    let put2 = &events[1];
    assert_eq!(put2.kv.value, b"2");
    assert_eq!((put2.kv.create_revision, put2.kv.version), (3, 2));
    assert_eq!(put2.prev_kv, None, "not asked for");
}

#[tokio::test]
async fn a_txn_is_delivered_in_op_order_at_one_revision() {
    let store = MemStore::new();
    put(&store, "k/z", "").await; // 2
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("k/")))
        .await
        .unwrap();
    store
        .txn(
            Txn::new()
                .when([Compare::version("k/z", CompareOp::Equal, 1)])
                .and_then([
                    PutRequest::new("k/b", "").into(),
                    DeleteRequest::key("k/z").into(),
                    PutRequest::new("k/a", "").into(),
                ]),
        )
        .await
        .unwrap();
    use EventKind::*;
    assert_eq!(
        summary(&drain(&mut watch)),
        [
            (Put, "k/b".into(), 3),
            (Delete, "k/z".into(), 3),
            (Put, "k/a".into(), 3)
        ]
    );
}

#[tokio::test]
async fn filters_and_prev_kv() {
    let store = MemStore::new();
    let mut deletes = store
        .watch(
            WatchRequest::new(KeyRange::prefix(""))
                .with_no_put()
                .with_prev_kv(),
        )
        .await
        .unwrap();
    let mut puts = store
        .watch(
            WatchRequest::new(KeyRange::prefix(""))
                .with_no_delete()
                .with_prev_kv(),
        )
        .await
        .unwrap();
    put(&store, "a", "1").await; // 2
    put(&store, "a", "2").await; // 3
    store.delete(DeleteRequest::key("a")).await.unwrap(); // 4
    let p = drain(&mut puts);
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].prev_kv, None);
    assert_eq!(p[1].prev_kv.as_ref().unwrap().value, b"1");
    let d = drain(&mut deletes);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].kind, EventKind::Delete);
    assert_eq!(d[0].kv.mod_revision, 4);
    let prev = d[0].prev_kv.as_ref().unwrap();
    assert_eq!(
        (prev.value.as_slice(), prev.mod_revision, prev.version),
        (&b"2"[..], 3, 2)
    );
}

#[tokio::test]
async fn replay_from_a_past_revision_then_live_without_gaps_or_repeats() {
    let store = MemStore::new();
    for i in 0..10 {
        put(&store, &format!("r/{}", i % 3), &i.to_string()).await; // revs 2..=11
    }
    put(&store, "other", "").await; // 12
    let mut in_range: Vec<i64> = (2..=11).collect();
    for start in [1, 2, 5, 11, 12, 13, 15] {
        let mut watch = store
            .watch(WatchRequest::new(KeyRange::prefix("r/")).with_start_revision(start))
            .await
            .unwrap();
        let replayed: Vec<i64> = drain(&mut watch).iter().map(|e| e.revision()).collect();
        let expect: Vec<i64> = in_range.iter().copied().filter(|r| *r >= start).collect();
        assert_eq!(replayed, expect, "start {start}");
        // Live events continue right after.
        put(&store, "r/x", "").await;
        store.delete(DeleteRequest::key("r/x")).await.unwrap();
        let rev = store.revision();
        in_range.extend([rev - 1, rev]);
        let live: Vec<i64> = drain(&mut watch).iter().map(|e| e.revision()).collect();
        assert_eq!(live, [rev - 1, rev], "start {start}");
    }
}

#[tokio::test]
async fn a_future_start_revision_waits_for_it() {
    let store = MemStore::new();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::key("k")).with_start_revision(4))
        .await
        .unwrap();
    put(&store, "k", "2").await;
    put(&store, "k", "3").await;
    put(&store, "k", "4").await;
    let events = drain(&mut watch);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].revision(), 4);
}

#[tokio::test]
async fn ranges_other_than_prefix_and_key() {
    let store = MemStore::new();
    let mut from = store
        .watch(WatchRequest::new(KeyRange::FromKey(b"m".to_vec())))
        .await
        .unwrap();
    let mut between = store
        .watch(WatchRequest::new(KeyRange::Range {
            start: b"b".to_vec(),
            end: b"d".to_vec(),
        }))
        .await
        .unwrap();
    let mut all = store
        .watch(WatchRequest::new(KeyRange::prefix("")))
        .await
        .unwrap();
    for k in ["a", "b", "c", "d", "m", "z"] {
        put(&store, k, "").await;
    }
    let keys = |w: &mut WatchStream| -> Vec<String> {
        summary(&drain(w)).into_iter().map(|(_, k, _)| k).collect()
    };
    assert_eq!(keys(&mut from), ["m", "z"]);
    assert_eq!(keys(&mut between), ["b", "c"]);
    assert_eq!(keys(&mut all).len(), 6);
}

#[tokio::test]
async fn many_watchers_each_get_their_own_events() {
    let store = MemStore::new();
    let mut watches = Vec::new();
    for i in 0..50 {
        let range = if i % 2 == 0 {
            KeyRange::prefix(format!("n/{i}/"))
        } else {
            KeyRange::key(format!("n/{}/k", i - 1))
        };
        watches.push(store.watch(WatchRequest::new(range)).await.unwrap());
    }
    for i in (0..50).step_by(2) {
        put(&store, &format!("n/{i}/k"), "").await;
        put(&store, &format!("n/{i}/other"), "").await;
    }
    for (i, w) in watches.iter_mut().enumerate() {
        let n = drain(w).len();
        assert_eq!(n, if i % 2 == 0 { 2 } else { 1 }, "watch {i}");
    }
}

#[tokio::test]
async fn compacted_start_fails_the_call() {
    let store = MemStore::new();
    for i in 0..5 {
        put(&store, "k", &i.to_string()).await; // 2..=6
    }
    store.compact(5).await.unwrap();
    let err = store
        .watch(WatchRequest::new(KeyRange::key("k")).with_start_revision(4))
        .await
        .err()
        .expect("compacted");
    assert!(
        matches!(
            err,
            Error::Compacted {
                compact_revision: 5
            }
        ),
        "{err:?}"
    );
    // From the compaction point itself: the state at 5 is kept (etcd's rule).
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::key("k")).with_start_revision(5))
        .await
        .unwrap();
    let revs: Vec<i64> = drain(&mut watch).iter().map(|e| e.revision()).collect();
    assert_eq!(revs, [5, 6]);
    assert_eq!(store.watch_count(), 1);
}

#[tokio::test]
async fn dropping_the_stream_unregisters_the_watch() {
    let store = MemStore::new();
    let a = store
        .watch(WatchRequest::new(KeyRange::prefix("a")))
        .await
        .unwrap();
    let b = store
        .watch(WatchRequest::new(KeyRange::key("b")))
        .await
        .unwrap();
    let c = store
        .watch(WatchRequest::new(KeyRange::FromKey(b"c".to_vec())))
        .await
        .unwrap();
    assert_eq!(store.watch_count(), 3);
    drop(a);
    drop(b);
    assert_eq!(store.watch_count(), 1);
    drop(c);
    assert_eq!(store.watch_count(), 0);
    put(&store, "a", "").await;
    put(&store, "b", "").await;
}

#[tokio::test]
async fn a_stream_outliving_its_store_ends() {
    let store = MemStore::new();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("")))
        .await
        .unwrap();
    put(&store, "k", "").await;
    drop(store);
    assert!(watch.next().await.unwrap().is_ok());
    // Not silence: the stream says why it ends.
    assert!(matches!(
        watch.next().await,
        Some(Err(Error::Unavailable { .. }))
    ));
    assert!(watch.next().await.is_none());
}

#[tokio::test]
async fn a_slow_reader_never_blocks_writers() {
    let store = MemStore::new();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("")))
        .await
        .unwrap();
    for i in 0..10_000 {
        put(&store, "k", &i.to_string()).await;
    }
    let events = drain(&mut watch);
    assert_eq!(events.len(), 10_000);
    assert!(events
        .windows(2)
        .all(|w| w[1].revision() == w[0].revision() + 1));
}

#[tokio::test]
async fn invalid_watch_ranges_are_rejected() {
    let store = MemStore::new();
    let err = store
        .watch(WatchRequest::new(KeyRange::key("")))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_eq!(store.watch_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_seen_in_revision_order() {
    let store = MemStore::new();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("")))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..500 {
                    let r = store
                        .put(PutRequest::new(format!("t{t}/{}", i % 7), ""))
                        .await
                        .unwrap();
                    revs.push(r.header_revision);
                }
                revs
            })
        })
        .collect();
    let mut written = Vec::new();
    for t in tasks {
        written.extend(t.await.unwrap());
    }
    written.sort();
    assert_eq!(
        written,
        (2..2002).collect::<Vec<i64>>(),
        "one revision each"
    );
    let seen: Vec<i64> = (0..2000)
        .map(|_| {
            tokio::task::unconstrained(watch.next())
                .now_or_never()
                .unwrap()
                .unwrap()
                .unwrap()
                .revision()
        })
        .collect();
    assert_eq!(seen, written, "every event, in revision order");
}
