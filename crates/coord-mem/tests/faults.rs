//! Fault injection and call counters.

use std::time::Duration;

use coord_core::{
    Backend, DeleteRequest, Error, EventKind, KeyRange, PutRequest, RangeRequest, Txn, WatchRequest,
};
use coord_mem::{CallKind, MemStore};
use futures::{FutureExt, StreamExt};
use tokio::time::advance;

fn unavailable<T: std::fmt::Debug>(r: coord_core::Result<T>) -> bool {
    matches!(r, Err(Error::Unavailable { .. }))
}

#[tokio::test(start_paused = true)]
async fn fail_next_fails_any_kind_and_changes_nothing() {
    let store = MemStore::new();
    let lease = store.lease_grant(10, None).await.unwrap();
    store.faults().fail_next(4);
    assert!(unavailable(store.put(PutRequest::new("k", "v")).await));
    assert!(unavailable(
        store
            .txn(Txn::new().and_then([PutRequest::new("k", "v").into()]))
            .await
    ));
    assert!(unavailable(store.lease_revoke(lease.id).await));
    assert!(unavailable(store.delete(DeleteRequest::key("k")).await));
    assert_eq!((store.revision(), store.lease_count()), (1, 1));
    store.put(PutRequest::new("k", "v")).await.unwrap();
    assert_eq!(store.revision(), 2);
    // Every kind can fail, watch and compact included.
    store.faults().fail_next(2);
    assert!(store
        .watch(WatchRequest::new(KeyRange::key("k")))
        .await
        .is_err());
    assert!(unavailable(store.compact(2).await));
    assert_eq!((store.watch_count(), store.compact_revision()), (0, 0));
    // Retryable, as a caller would see it.
    store.faults().fail_next(1);
    assert!(store
        .range(RangeRequest::key("k"))
        .await
        .unwrap_err()
        .is_retryable());
    // 0 cancels.
    store.faults().fail_next(5);
    store.faults().fail_next(0);
    assert!(store.range(RangeRequest::key("k")).await.is_ok());
}

#[tokio::test]
async fn fail_next_matching_only_hits_its_kind() {
    let store = MemStore::new();
    store.faults().fail_next_matching(CallKind::Txn, 2);
    store.put(PutRequest::new("k", "v")).await.unwrap();
    store.range(RangeRequest::key("k")).await.unwrap();
    assert!(unavailable(store.txn(Txn::new()).await));
    assert!(unavailable(store.txn(Txn::new()).await));
    assert!(store.txn(Txn::new()).await.is_ok());
    // Matching first, then the general count: one call takes one failure.
    store.faults().fail_next_matching(CallKind::Range, 1);
    store.faults().fail_next(1);
    assert!(unavailable(store.range(RangeRequest::key("k")).await));
    assert!(unavailable(store.range(RangeRequest::key("k")).await));
    assert!(store.range(RangeRequest::key("k")).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn expire_lease_now() {
    let store = MemStore::new();
    let lease = store.lease_grant(3600, None).await.unwrap();
    store
        .put(PutRequest::new("a", "").with_lease(lease.id))
        .await
        .unwrap();
    store
        .put(PutRequest::new("b", "").with_lease(lease.id))
        .await
        .unwrap();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("")))
        .await
        .unwrap();
    store.faults().expire_lease(lease.id).unwrap();
    assert_eq!(
        (store.key_count(), store.lease_count(), store.revision()),
        (0, 0, 4)
    );
    for _ in 0..2 {
        let ev = watch.next().await.unwrap().unwrap();
        assert_eq!((ev.kind, ev.revision()), (EventKind::Delete, 4));
    }
    assert!(matches!(
        store.faults().expire_lease(lease.id),
        Err(Error::LeaseNotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn blocked_keep_alives_let_the_lease_expire() {
    let store = MemStore::new();
    let lease = store.lease_grant(6, None).await.unwrap();
    store
        .put(PutRequest::new("k", "").with_lease(lease.id))
        .await
        .unwrap();
    store.faults().block_keep_alives(lease.id, true);
    for _ in 0..2 {
        advance(Duration::from_secs(2)).await;
        assert!(unavailable(store.lease_keep_alive(lease.id).await));
    }
    // Other calls on the lease still work, and the clock still runs.
    assert_eq!(
        store.lease_time_to_live(lease.id, false).await.unwrap().ttl,
        2
    );
    advance(Duration::from_secs(2)).await;
    assert_eq!(store.key_count(), 0);
    // The block ended with the lease: keep-alive now says the lease is gone.
    assert!(matches!(
        store.lease_keep_alive(lease.id).await,
        Err(Error::LeaseNotFound { .. })
    ));
    // Unblocked in time, keep-alives work again.
    let lease = store.lease_grant(6, None).await.unwrap();
    store.faults().block_keep_alives(lease.id, true);
    assert!(unavailable(store.lease_keep_alive(lease.id).await));
    store.faults().block_keep_alives(lease.id, false);
    assert_eq!(store.lease_keep_alive(lease.id).await.unwrap(), 6);
}

#[tokio::test]
async fn drop_watches_ends_every_stream_with_an_error_after_its_events() {
    let store = MemStore::new();
    let mut a = store
        .watch(WatchRequest::new(KeyRange::prefix("")))
        .await
        .unwrap();
    let mut b = store
        .watch(WatchRequest::new(KeyRange::key("x")))
        .await
        .unwrap();
    store.put(PutRequest::new("k", "")).await.unwrap();
    assert_eq!(store.faults().drop_watches(), 2);
    assert_eq!(store.watch_count(), 0);
    assert!(a.next().await.unwrap().is_ok());
    assert!(matches!(
        a.next().await,
        Some(Err(Error::Unavailable { .. }))
    ));
    assert!(a.next().await.is_none());
    assert!(matches!(
        b.next().await,
        Some(Err(Error::Unavailable { .. }))
    ));
    assert!(b.next().await.is_none());
    // New watches work.
    let mut c = store
        .watch(WatchRequest::new(KeyRange::prefix("")))
        .await
        .unwrap();
    store.put(PutRequest::new("k", "")).await.unwrap();
    assert!(c.next().await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn delayed_watches_deliver_late_and_in_order() {
    let store = MemStore::new();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("")))
        .await
        .unwrap();
    store.faults().delay_watches(Duration::from_millis(100));
    let start = tokio::time::Instant::now();
    store.put(PutRequest::new("a", "")).await.unwrap(); // due at +100ms
    advance(Duration::from_millis(50)).await;
    store.put(PutRequest::new("b", "")).await.unwrap(); // due at +150ms
    assert!(tokio::task::unconstrained(watch.next())
        .now_or_never()
        .is_none());
    advance(Duration::from_millis(50)).await;
    let a = tokio::task::unconstrained(watch.next())
        .now_or_never()
        .expect("due")
        .unwrap()
        .unwrap();
    assert_eq!(a.kv.key, b"a");
    assert!(
        tokio::task::unconstrained(watch.next())
            .now_or_never()
            .is_none(),
        "b is not due yet"
    );
    let b = watch.next().await.unwrap().unwrap();
    assert_eq!(b.kv.key, b"b");
    assert_eq!(start.elapsed(), Duration::from_millis(150));
    // Turning it off: later events come at once.
    store.faults().delay_watches(Duration::ZERO);
    store.put(PutRequest::new("c", "")).await.unwrap();
    assert!(tokio::task::unconstrained(watch.next())
        .now_or_never()
        .is_some());
}

#[tokio::test(start_paused = true)]
async fn clear_lifts_every_fault() {
    let store = MemStore::new();
    let lease = store.lease_grant(10, None).await.unwrap();
    let f = store.faults();
    f.fail_next(10);
    f.fail_next_matching(CallKind::Put, 10);
    f.block_keep_alives(lease.id, true);
    f.delay_watches(Duration::from_secs(1));
    f.clear();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("")))
        .await
        .unwrap();
    store.put(PutRequest::new("k", "")).await.unwrap();
    assert!(tokio::task::unconstrained(watch.next())
        .now_or_never()
        .is_some());
    assert_eq!(store.lease_keep_alive(lease.id).await.unwrap(), 10);
}

#[tokio::test(start_paused = true)]
async fn stats_count_each_call_once_under_its_own_kind() {
    let store = MemStore::new();
    let lease = store.lease_grant(10, None).await.unwrap();
    store.put(PutRequest::new("k", "")).await.unwrap();
    store.range(RangeRequest::key("k")).await.unwrap();
    store.delete(DeleteRequest::key("k")).await.unwrap();
    store.txn(Txn::new()).await.unwrap();
    store.lease_keep_alive(lease.id).await.unwrap();
    store.lease_time_to_live(lease.id, true).await.unwrap();
    store.lease_list().await.unwrap();
    let _w = store
        .watch(WatchRequest::new(KeyRange::key("k")))
        .await
        .unwrap();
    store.compact(2).await.unwrap();
    store.lease_revoke(lease.id).await.unwrap();
    // Failed calls count too.
    let _ = store.put(PutRequest::new("", "")).await;
    let s = store.stats();
    for kind in CallKind::ALL {
        let expect = if kind == CallKind::Put { 2 } else { 1 };
        assert_eq!(s.get(kind), expect, "{kind:?}");
    }
    assert_eq!(s.calls(), 12);
    // Reads of the store's own state are not calls.
    let _ = (store.revision(), store.key_count(), store.watch_count());
    assert_eq!(store.stats(), s);
    // Lease expiry in the background is not a call either.
    let l = store.lease_grant(1, None).await.unwrap();
    advance(Duration::from_secs(2)).await;
    assert!(!store.lease_list().await.unwrap().contains(&l.id));
    let d = store.stats().since(&s);
    assert_eq!((d.lease_grant, d.lease_list, d.calls()), (1, 1, 2));
    store.reset_stats();
    assert_eq!(store.stats().calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn stats_count_delivered_watch_items_as_counting_does() {
    let store = MemStore::new();
    // A Counting wrapper over the same store must see the same calls and items.
    let counting = coord_core::Counting::new(store.clone());
    let mut watch = counting
        .watch(WatchRequest::new(KeyRange::prefix("k")))
        .await
        .unwrap();
    store.faults().delay_watches(Duration::from_millis(100));
    counting.put(PutRequest::new("k1", "")).await.unwrap();
    counting.put(PutRequest::new("k2", "")).await.unwrap();
    // Pushed but not yet delivered: not counted.
    assert!(tokio::task::unconstrained(watch.next())
        .now_or_never()
        .is_none());
    assert_eq!(store.stats().watch_events, 0);
    advance(Duration::from_millis(100)).await;
    watch.next().await.unwrap().unwrap();
    watch.next().await.unwrap().unwrap();
    assert_eq!(store.stats().watch_events, 2);
    // The error item that ends a dropped watch counts too, as Counting counts it.
    store.faults().clear();
    store.faults().drop_watches();
    assert!(watch.next().await.unwrap().is_err());
    assert!(watch.next().await.is_none());
    let s = store.stats();
    assert_eq!((s.watch, s.put, s.watch_events, s.calls()), (1, 2, 3, 3));
    assert_eq!(s, counting.counts());
    store.reset_stats();
    assert_eq!(store.stats().watch_events, 0);
}
