//! Leases: grant, keep-alive, time-to-live, list, revoke, expiry.

use std::time::{Duration, Instant};

use coord_core::{
    Backend, DeleteRequest, Error, EventKind, PutRequest, RangeRequest, WatchRequest,
};

use crate::{connect, key, next_events, prefix};

#[tokio::test]
async fn grant_keep_alive_ttl_list_revoke() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    let b = connect(&etcd).await;
    let p = prefix("lease");
    let grant = b.lease_grant(20, None).await.unwrap();
    assert_ne!(grant.id, 0);
    assert_eq!(grant.ttl, 20);
    assert!(b.lease_list().await.unwrap().contains(&grant.id));

    let (k1, k2) = (key(&p, "a"), key(&p, "b"));
    b.put(PutRequest::new(k1.clone(), "1").with_lease(grant.id))
        .await
        .unwrap();
    b.put(PutRequest::new(k2.clone(), "2").with_lease(grant.id))
        .await
        .unwrap();
    let kv = b
        .range(RangeRequest::key(k1.clone()))
        .await
        .unwrap()
        .kvs
        .remove(0);
    assert_eq!(kv.lease, grant.id);

    let ttl = b.lease_time_to_live(grant.id, true).await.unwrap();
    assert_eq!(ttl.id, grant.id);
    assert_eq!(ttl.granted_ttl, 20);
    assert!(ttl.ttl > 0 && ttl.ttl <= 20);
    let mut keys = ttl.keys.clone();
    keys.sort();
    assert_eq!(keys, vec![k1.clone(), k2.clone()]);
    assert!(b
        .lease_time_to_live(grant.id, false)
        .await
        .unwrap()
        .keys
        .is_empty());

    // Repeated renewals reuse one stream; each answers with the full TTL.
    for _ in 0..5 {
        let left = b.lease_keep_alive(grant.id).await.unwrap();
        assert!((19..=20).contains(&left), "{left}");
    }
    // Concurrent renewals of one lease each get an answer of their own.
    let renewals = (0..8).map(|_| {
        let b = b.clone();
        tokio::spawn(async move { b.lease_keep_alive(grant.id).await })
    });
    for r in renewals {
        assert!(r.await.unwrap().unwrap() >= 19);
    }

    // Revoking deletes the keys in one revision, and watchers see the deletes.
    let mut watch = b
        .watch(WatchRequest::new(coord_core::KeyRange::prefix(p.clone())))
        .await
        .unwrap();
    b.lease_revoke(grant.id).await.unwrap();
    let events = next_events(&mut watch, 2).await;
    assert!(events.iter().all(|e| e.kind == EventKind::Delete));
    assert_eq!(events[0].revision(), events[1].revision());
    assert!(b
        .range(RangeRequest::prefix(p.clone()))
        .await
        .unwrap()
        .kvs
        .is_empty());
    assert!(!b.lease_list().await.unwrap().contains(&grant.id));

    // Gone is gone, for every lease call.
    assert!(matches!(
        b.lease_keep_alive(grant.id).await,
        Err(Error::LeaseNotFound { lease }) if lease == grant.id
    ));
    assert!(matches!(
        b.lease_time_to_live(grant.id, false).await,
        Err(Error::LeaseNotFound { lease }) if lease == grant.id
    ));
    assert!(matches!(
        b.lease_revoke(grant.id).await,
        Err(Error::LeaseNotFound { lease }) if lease == grant.id
    ));
    assert!(matches!(
        b.put(PutRequest::new(k1.clone(), "x").with_lease(grant.id)).await,
        Err(Error::LeaseNotFound { lease }) if lease == grant.id
    ));
    b.delete(DeleteRequest::prefix(p)).await.unwrap();
}

#[tokio::test]
async fn grant_with_id_and_bad_ttls() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    let b = connect(&etcd).await;
    let id = 0x7000_0000_0000_0000 + i64::from(std::process::id()) * 1000 + 17;
    let grant = b.lease_grant(30, Some(id)).await.unwrap();
    assert_eq!(grant.id, id);
    assert!(matches!(
        b.lease_grant(30, Some(id)).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        b.lease_grant(0, None).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        b.lease_grant(-5, None).await,
        Err(Error::InvalidArgument { .. })
    ));
    let max = b.limits().max_ttl;
    assert!(matches!(
        b.lease_grant(max + 1, None).await,
        Err(Error::InvalidArgument { .. })
    ));
    b.lease_revoke(id).await.unwrap();
}

#[tokio::test]
async fn expiry_deletes_keys_and_watchers_see_it() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    let b = connect(&etcd).await;
    let p = prefix("expiry");
    // etcd's smallest TTL is about 2 s (1.5 × the election timeout, rounded up).
    let grant = b.lease_grant(1, None).await.unwrap();
    let k = key(&p, "k");
    b.put(PutRequest::new(k.clone(), "v").with_lease(grant.id))
        .await
        .unwrap();
    let mut watch = b
        .watch(WatchRequest::new(coord_core::KeyRange::prefix(p.clone())))
        .await
        .unwrap();
    let started = Instant::now();
    let ev = tokio::time::timeout(Duration::from_secs(6), futures::StreamExt::next(&mut watch))
        .await
        .expect("lease expiry within 6 s")
        .unwrap()
        .unwrap();
    assert_eq!(ev.kind, EventKind::Delete);
    assert_eq!(ev.kv.key, k);
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(b.range(RangeRequest::key(k)).await.unwrap().kvs.is_empty());
    assert!(matches!(
        b.lease_keep_alive(grant.id).await,
        Err(Error::LeaseNotFound { .. })
    ));
}
