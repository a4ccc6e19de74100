//! Compaction: explicit, automatic, and what it does to past reads and watches.

use coord_core::{Backend, DeleteRequest, Error, KeyRange, PutRequest, RangeRequest, WatchRequest};
use coord_mem::MemStore;
use futures::{FutureExt, StreamExt};

async fn writes(store: &MemStore, n: usize) {
    for i in 0..n {
        store
            .put(PutRequest::new(format!("k{}", i % 4), i.to_string()))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn explicit_compaction_follows_etcd() {
    let store = MemStore::new();
    writes(&store, 9).await; // revs 2..=10
    let err = store.compact(11).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    store.compact(6).await.unwrap();
    assert_eq!(store.compact_revision(), 6);
    // Compacting again at or below the point is `Compacted`.
    for rev in [6, 3] {
        let err = store.compact(rev).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Compacted {
                    compact_revision: 6
                }
            ),
            "{err:?}"
        );
    }
    // Below the point: gone. At the point: kept (etcd keeps the state at the compact revision).
    let err = store
        .range(RangeRequest::prefix("k").with_revision(5))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Compacted {
                compact_revision: 6
            }
        ),
        "{err:?}"
    );
    let r = store
        .range(RangeRequest::prefix("k").with_revision(6))
        .await
        .unwrap();
    assert_eq!(r.count, 4);
    assert_eq!(r.kvs.iter().map(|kv| kv.mod_revision).max(), Some(6));
    // The present is untouched.
    let r = store.range(RangeRequest::prefix("k")).await.unwrap();
    assert_eq!((r.count, r.header_revision), (4, 10));
    store.compact(10).await.unwrap();
    assert!(store.range(RangeRequest::prefix("k")).await.is_ok());
}

#[tokio::test]
async fn compacted_past_read_inside_a_txn_fails_it() {
    let store = MemStore::new();
    writes(&store, 5).await;
    store.compact(4).await.unwrap();
    let err = store
        .txn(coord_core::Txn::new().and_then([
            PutRequest::new("new", "").into(),
            RangeRequest::prefix("k").with_revision(2).into(),
        ]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Compacted { .. }), "{err:?}");
    assert_eq!(store.revision(), 6);
}

#[tokio::test]
async fn history_is_bounded_automatically() {
    let store = MemStore::builder().history_limit(100).build();
    writes(&store, 1_000).await; // revs 2..=1001
    assert_eq!(store.revision(), 1001);
    assert_eq!(store.compact_revision(), 901);
    assert!(store.history_len() <= 101, "{}", store.history_len());
    let err = store
        .range(RangeRequest::prefix("k").with_revision(900))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Compacted {
                compact_revision: 901
            }
        ),
        "{err:?}"
    );
    let r = store
        .range(RangeRequest::key("k0").with_revision(901))
        .await
        .unwrap();
    assert_eq!(r.kvs[0].mod_revision, 898);
    let err = store
        .watch(WatchRequest::new(KeyRange::prefix("k")).with_start_revision(900))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Compacted { .. }), "{err:?}");
    let mut w = store
        .watch(WatchRequest::new(KeyRange::prefix("k")).with_start_revision(901))
        .await
        .unwrap();
    let mut n = 0;
    while let Some(Some(ev)) = tokio::task::unconstrained(w.next()).now_or_never() {
        assert_eq!(ev.unwrap().revision(), 901 + n);
        n += 1;
    }
    assert_eq!(n, 101);
}

#[tokio::test]
async fn a_watcher_behind_keeps_its_events_through_compaction() {
    let store = MemStore::builder().history_limit(10).build();
    let mut w = store
        .watch(WatchRequest::new(KeyRange::prefix("")))
        .await
        .unwrap();
    writes(&store, 200).await;
    store.delete(DeleteRequest::prefix("k")).await.unwrap();
    let mut n = 0;
    while let Some(Some(ev)) = tokio::task::unconstrained(w.next()).now_or_never() {
        ev.unwrap();
        n += 1;
    }
    assert_eq!(n, 204);
}

#[tokio::test]
async fn history_limit_zero_keeps_only_the_present() {
    let store = MemStore::builder().history_limit(0).build();
    writes(&store, 3).await; // 2..=4
    assert_eq!(store.compact_revision(), 4);
    assert!(store
        .range(RangeRequest::prefix("k").with_revision(4))
        .await
        .is_ok());
    assert!(store
        .range(RangeRequest::prefix("k").with_revision(3))
        .await
        .is_err());
}
