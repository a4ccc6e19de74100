//! Leases on tokio's paused clock: grant, keep-alive, expiry, revoke.

use std::time::Duration;

use coord_core::{
    Backend, BackendLimits, DeleteRequest, Error, EventKind, KeyRange, PutRequest, RangeRequest,
    WatchRequest,
};
use coord_mem::MemStore;
use futures::{FutureExt, StreamExt};
use tokio::time::advance;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(start_paused = true)]
async fn grant_checks_ttl_and_ids() {
    let store = MemStore::builder()
        .limits(BackendLimits::new(1024, 2, 100))
        .build();
    for ttl in [0, 1, 101, -5] {
        let err = store.lease_grant(ttl, None).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{ttl}: {err:?}"
        );
    }
    let a = store.lease_grant(2, None).await.unwrap();
    assert!(a.id > 0);
    assert_eq!(a.ttl, 2);
    let b = store.lease_grant(100, Some(1234)).await.unwrap();
    assert_eq!((b.id, b.ttl), (1234, 100));
    let err = store.lease_grant(10, Some(1234)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    let mut list = store.lease_list().await.unwrap();
    list.sort();
    let mut expect = vec![a.id, 1234];
    expect.sort();
    assert_eq!(list, expect);
    assert_eq!(store.revision(), 1, "leases are not revisions");
}

#[tokio::test(start_paused = true)]
async fn seeded_ids_repeat() {
    let ids = |seed| async move {
        let store = MemStore::builder().lease_id_seed(seed).build();
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(store.lease_grant(5, None).await.unwrap().id);
        }
        out
    };
    assert_eq!(ids(9).await, ids(9).await);
    assert_ne!(ids(9).await, ids(10).await);
}

#[tokio::test(start_paused = true)]
async fn expiry_deletes_keys_in_one_revision_and_watchers_see_it() {
    let store = MemStore::new();
    let lease = store.lease_grant(10, None).await.unwrap();
    let other = store.lease_grant(100, None).await.unwrap();
    for k in ["l/a", "l/b", "l/c"] {
        store
            .put(PutRequest::new(k, "v").with_lease(lease.id))
            .await
            .unwrap();
    }
    store
        .put(PutRequest::new("l/d", "v").with_lease(other.id))
        .await
        .unwrap(); // rev 5
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("l/")).with_prev_kv())
        .await
        .unwrap();

    advance(secs(9)).await;
    assert_eq!(
        store.range(RangeRequest::prefix("l/")).await.unwrap().count,
        4
    );
    advance(secs(1)).await;
    // A read right at the deadline never sees the expired keys, task or not.
    let r = store.range(RangeRequest::prefix("l/")).await.unwrap();
    assert_eq!((r.count, r.header_revision), (1, 6));
    for k in ["l/a", "l/b", "l/c"] {
        let ev = watch.next().await.unwrap().unwrap();
        assert_eq!(ev.kind, EventKind::Delete);
        assert_eq!(ev.kv.key, k.as_bytes());
        assert_eq!(ev.revision(), 6);
        assert_eq!(ev.prev_kv.unwrap().lease, lease.id);
    }
    assert!(tokio::task::unconstrained(watch.next())
        .now_or_never()
        .is_none());
    let err = store.lease_keep_alive(lease.id).await.unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{err:?}");
    assert_eq!(store.lease_list().await.unwrap(), vec![other.id]);
}

#[tokio::test(start_paused = true)]
async fn the_background_task_expires_leases_without_calls() {
    let store = MemStore::new();
    let lease = store.lease_grant(5, None).await.unwrap();
    store
        .put(PutRequest::new("k", "v").with_lease(lease.id))
        .await
        .unwrap();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::key("k")))
        .await
        .unwrap();
    let before = store.stats();
    // Nothing calls the store: the paused clock jumps to the deadline and the task fires.
    let ev = watch.next().await.unwrap().unwrap();
    assert_eq!(ev.kind, EventKind::Delete);
    assert_eq!(store.stats().since(&before).calls(), 0);
    assert_eq!(store.lease_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lease_without_keys_expires_without_a_revision() {
    let store = MemStore::new();
    let lease = store.lease_grant(3, None).await.unwrap();
    advance(secs(3)).await;
    assert!(store.lease_list().await.unwrap().is_empty());
    assert_eq!(store.revision(), 1);
    let err = store.lease_revoke(lease.id).await.unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn keep_alive_resets_the_deadline() {
    let store = MemStore::new();
    let lease = store.lease_grant(10, None).await.unwrap();
    for _ in 0..5 {
        advance(secs(8)).await;
        assert_eq!(store.lease_keep_alive(lease.id).await.unwrap(), 10);
    }
    let ttl = store.lease_time_to_live(lease.id, false).await.unwrap();
    assert_eq!((ttl.ttl, ttl.granted_ttl), (10, 10));
    advance(Duration::from_millis(9_500)).await;
    // Remaining 0.5 s rounds up to 1.
    let ttl = store.lease_time_to_live(lease.id, false).await.unwrap();
    assert_eq!(ttl.ttl, 1);
    advance(Duration::from_millis(500)).await;
    let err = store.lease_time_to_live(lease.id, false).await.unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn time_to_live_lists_keys() {
    let store = MemStore::new();
    let lease = store.lease_grant(30, None).await.unwrap();
    for k in ["b", "a", "c"] {
        store
            .put(PutRequest::new(k, "").with_lease(lease.id))
            .await
            .unwrap();
    }
    // Moving a key to no lease detaches it; deleting a key detaches it.
    store.put(PutRequest::new("c", "")).await.unwrap();
    store.delete(DeleteRequest::key("b")).await.unwrap();
    let ttl = store.lease_time_to_live(lease.id, true).await.unwrap();
    assert_eq!(ttl.keys, vec![b"a".to_vec()]);
    assert_eq!(ttl.ttl, 30);
    assert!(store
        .lease_time_to_live(lease.id, false)
        .await
        .unwrap()
        .keys
        .is_empty());
    // The detached key outlives the lease.
    store.lease_revoke(lease.id).await.unwrap();
    let r = store.range(RangeRequest::prefix("")).await.unwrap();
    assert_eq!(r.kvs.len(), 1);
    assert_eq!((r.kvs[0].key.as_slice(), r.kvs[0].lease), (&b"c"[..], 0));
}

#[tokio::test(start_paused = true)]
async fn moving_a_key_between_leases() {
    let store = MemStore::new();
    let a = store.lease_grant(10, None).await.unwrap();
    let b = store.lease_grant(100, None).await.unwrap();
    store
        .put(PutRequest::new("k", "").with_lease(a.id))
        .await
        .unwrap();
    store
        .put(PutRequest::new("k", "").with_lease(b.id))
        .await
        .unwrap();
    advance(secs(10)).await;
    assert_eq!(store.key_count(), 1, "k is on lease b now");
    store.lease_revoke(b.id).await.unwrap();
    assert_eq!(store.key_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn revoke_deletes_keys_in_one_revision() {
    let store = MemStore::new();
    let lease = store.lease_grant(60, None).await.unwrap();
    for k in ["x/1", "x/2"] {
        store
            .put(PutRequest::new(k, "").with_lease(lease.id))
            .await
            .unwrap();
    }
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("x/")).with_no_put())
        .await
        .unwrap();
    store.lease_revoke(lease.id).await.unwrap();
    assert_eq!(store.revision(), 4);
    let a = watch.next().await.unwrap().unwrap();
    let b = watch.next().await.unwrap().unwrap();
    assert_eq!((a.revision(), b.revision()), (4, 4));
    assert_eq!(
        (a.kv.key.as_slice(), b.kv.key.as_slice()),
        (&b"x/1"[..], &b"x/2"[..])
    );
    // Delete events carry only the key and the revision, as etcd's.
    assert_eq!((a.kv.create_revision, a.kv.version, a.kv.lease), (0, 0, 0));
    assert!(a.kv.value.is_empty());
    let err = store.lease_revoke(lease.id).await.unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn several_leases_expire_in_deadline_order() {
    let store = MemStore::new();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("")))
        .await
        .unwrap();
    for (k, ttl) in [("late", 7), ("early", 3), ("mid", 5)] {
        let lease = store.lease_grant(ttl, None).await.unwrap();
        store
            .put(PutRequest::new(k, "").with_lease(lease.id))
            .await
            .unwrap();
        watch.next().await.unwrap().unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        let ev = watch.next().await.unwrap().unwrap();
        order.push((String::from_utf8(ev.kv.key).unwrap(), ev.kv.mod_revision));
    }
    assert_eq!(
        order,
        [("early".into(), 5), ("mid".into(), 6), ("late".into(), 7)]
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_store_ends_the_expiry_task() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let base = metrics.num_alive_tasks();
    let store = MemStore::new();
    store.lease_grant(100, None).await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(metrics.num_alive_tasks(), base + 1);
    drop(store);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(metrics.num_alive_tasks(), base);
}
