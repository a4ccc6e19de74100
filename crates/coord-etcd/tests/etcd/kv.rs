//! Range, put, delete, txn and their revisions.

use coord_core::{
    Backend, Compare, CompareOp, DeleteRequest, KeyRange, PutRequest, RangeRequest, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse,
};

use crate::{connect, key, prefix};

#[tokio::test]
async fn revisions_and_key_metadata() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    let exclusive = etcd.is_exclusive();
    let b = connect(&etcd).await;
    let p = prefix("revisions");
    let (k, k2, k3) = (key(&p, "k"), key(&p, "k2"), key(&p, "k3"));

    let r1 = b
        .put(PutRequest::new(k.clone(), "v1"))
        .await
        .unwrap()
        .header_revision;
    let got = b.range(RangeRequest::key(k.clone())).await.unwrap();
    assert_eq!(got.kvs.len(), 1);
    let kv = &got.kvs[0];
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r1, 1)
    );
    assert_eq!(kv.value, b"v1");
    assert_eq!(kv.lease, 0);
    assert!(got.header_revision >= r1);

    let put = b
        .put(PutRequest::new(k.clone(), "v2").with_prev_kv())
        .await
        .unwrap();
    let r2 = put.header_revision;
    assert_eq!(put.prev_kv.unwrap().value, b"v1");
    if exclusive {
        assert_eq!(r2, r1 + 1, "one write, one revision");
    }
    let kv = b
        .range(RangeRequest::key(k.clone()))
        .await
        .unwrap()
        .kvs
        .remove(0);
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );

    // One txn with three writes: one revision, shared by every change.
    let t = b
        .txn(Txn::new().and_then([
            TxnOp::Put(PutRequest::new(k.clone(), "v3")),
            TxnOp::Put(PutRequest::new(k2.clone(), "a")),
            TxnOp::Put(PutRequest::new(k3.clone(), "b")),
        ]))
        .await
        .unwrap();
    let r3 = t.header_revision;
    assert!(t.succeeded);
    if exclusive {
        assert_eq!(r3, r2 + 1);
    }
    let all = b.range(RangeRequest::prefix(p.clone())).await.unwrap();
    assert_eq!(all.kvs.len(), 3);
    assert!(all.kvs.iter().all(|kv| kv.mod_revision == r3));
    for resp in &t.responses {
        assert!(matches!(resp, TxnOpResponse::Put(p) if p.header_revision == r3));
    }

    // Changing nothing leaves the revision alone.
    let del = b
        .delete(DeleteRequest::key(key(&p, "missing")))
        .await
        .unwrap();
    assert_eq!(del.deleted, 0);
    let failed = b
        .txn(
            Txn::new()
                .when([Compare::version(k.clone(), CompareOp::Equal, 99)])
                .and_then([TxnOp::Put(PutRequest::new(k.clone(), "never"))]),
        )
        .await
        .unwrap();
    assert!(!failed.succeeded);
    assert!(failed.responses.is_empty());
    if exclusive {
        assert_eq!(del.header_revision, r3);
        assert_eq!(failed.header_revision, r3);
    }

    // The past is readable.
    let old = b
        .range(RangeRequest::key(k.clone()).with_revision(r1))
        .await
        .unwrap();
    assert_eq!(old.kvs[0].value, b"v1");
    let before = b
        .range(RangeRequest::key(k2.clone()).with_revision(r2))
        .await
        .unwrap();
    assert!(before.kvs.is_empty());

    // Delete with prev_kv; the version resets when the key comes back.
    let del = b
        .delete(DeleteRequest::prefix(p.clone()).with_prev_kv())
        .await
        .unwrap();
    assert_eq!(del.deleted, 3);
    assert_eq!(del.prev_kvs.len(), 3);
    let r5 = b
        .put(PutRequest::new(k.clone(), "again"))
        .await
        .unwrap()
        .header_revision;
    let kv = b
        .range(RangeRequest::key(k.clone()))
        .await
        .unwrap()
        .kvs
        .remove(0);
    assert_eq!((kv.create_revision, kv.version), (r5, 1));
    b.delete(DeleteRequest::prefix(p)).await.unwrap();
}

#[tokio::test]
async fn sort_limit_count_more_and_filters() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    let b = connect(&etcd).await;
    let p = prefix("sort");
    // Created in the order e, d, c, b, a: key order is the reverse of creation order.
    let mut revs = Vec::new();
    for name in ["e", "d", "c", "b", "a"] {
        revs.push(
            b.put(PutRequest::new(key(&p, name), name))
                .await
                .unwrap()
                .header_revision,
        );
    }
    // Touch "e" again: newest by mod revision.
    let re = b
        .put(PutRequest::new(key(&p, "e"), "e2"))
        .await
        .unwrap()
        .header_revision;

    let names = |kvs: &[coord_core::KeyValue]| -> Vec<String> {
        kvs.iter()
            .map(|kv| String::from_utf8(kv.key[p.len()..].to_vec()).unwrap())
            .collect()
    };

    let all = b.range(RangeRequest::prefix(p.clone())).await.unwrap();
    assert_eq!(names(&all.kvs), ["a", "b", "c", "d", "e"]);
    assert_eq!((all.count, all.more), (5, false));

    let first = b
        .range(RangeRequest::first_created(p.clone()))
        .await
        .unwrap();
    assert_eq!(names(&first.kvs), ["e"]);
    assert_eq!((first.count, first.more), (5, true));

    let last2 = b
        .range(RangeRequest::last_created(p.clone(), 2))
        .await
        .unwrap();
    assert_eq!(names(&last2.kvs), ["a", "b"]);

    let by_mod = b
        .range(RangeRequest::prefix(p.clone()).with_sort(SortTarget::Mod, SortOrder::Descend))
        .await
        .unwrap();
    assert_eq!(names(&by_mod.kvs), ["e", "a", "b", "c", "d"]);

    let by_key_desc = b
        .range(
            RangeRequest::prefix(p.clone())
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(3),
        )
        .await
        .unwrap();
    assert_eq!(names(&by_key_desc.kvs), ["e", "d", "c"]);
    assert!(by_key_desc.more);

    // Created at or before the third write: e, d, c.
    let created = b
        .range(RangeRequest::prefix(p.clone()).with_max_create_revision(revs[2]))
        .await
        .unwrap();
    assert_eq!(names(&created.kvs), ["c", "d", "e"]);
    // Last modified before the re-put of e: e drops out.
    let modded = b
        .range(RangeRequest::prefix(p.clone()).with_max_mod_revision(re - 1))
        .await
        .unwrap();
    assert_eq!(names(&modded.kvs), ["a", "b", "c", "d"]);

    let keys_only = b
        .range(RangeRequest::prefix(p.clone()).with_keys_only())
        .await
        .unwrap();
    assert_eq!(keys_only.kvs.len(), 5);
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));

    let count_only = b
        .range(RangeRequest::prefix(p.clone()).with_count_only())
        .await
        .unwrap();
    assert!(count_only.kvs.is_empty());
    assert_eq!(count_only.count, 5);

    let half_open = b
        .range(RangeRequest::new(KeyRange::Range {
            start: key(&p, "b"),
            end: key(&p, "d"),
        }))
        .await
        .unwrap();
    assert_eq!(names(&half_open.kvs), ["b", "c"]);

    let from_d = b
        .range(RangeRequest::new(KeyRange::FromKey(key(&p, "d"))).with_limit(2))
        .await
        .unwrap();
    assert_eq!(names(&from_d.kvs), ["d", "e"]);

    let del = b
        .delete(DeleteRequest::new(KeyRange::Range {
            start: key(&p, "a"),
            end: key(&p, "c"),
        }))
        .await
        .unwrap();
    assert_eq!(del.deleted, 2);
    b.delete(DeleteRequest::prefix(p)).await.unwrap();
}

#[tokio::test]
async fn txn_compares_and_branches() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    let b = connect(&etcd).await;
    let p = prefix("txn");
    let k = key(&p, "k");
    let missing = key(&p, "missing");
    let r1 = b
        .put(PutRequest::new(k.clone(), "v"))
        .await
        .unwrap()
        .header_revision;
    let lease = b.lease_grant(30, None).await.unwrap().id;
    let lk = key(&p, "leased");
    b.put(PutRequest::new(lk.clone(), "x").with_lease(lease))
        .await
        .unwrap();

    let holds = |c: Compare| {
        let b = b.clone();
        async move { b.txn(Txn::new().when([c])).await.unwrap().succeeded }
    };
    assert!(
        holds(Compare::create_revision(
            missing.clone(),
            CompareOp::Equal,
            0
        ))
        .await
    );
    assert!(holds(Compare::version(missing.clone(), CompareOp::Equal, 0)).await);
    assert!(!holds(Compare::value(missing.clone(), CompareOp::Equal, "")).await);
    assert!(holds(Compare::create_revision(k.clone(), CompareOp::Equal, r1)).await);
    assert!(holds(Compare::create_revision(k.clone(), CompareOp::Greater, 0)).await);
    assert!(holds(Compare::mod_revision(k.clone(), CompareOp::Less, r1 + 1)).await);
    assert!(!holds(Compare::mod_revision(k.clone(), CompareOp::NotEqual, r1)).await);
    assert!(holds(Compare::version(k.clone(), CompareOp::Equal, 1)).await);
    assert!(holds(Compare::value(k.clone(), CompareOp::Equal, "v")).await);
    assert!(holds(Compare::value(k.clone(), CompareOp::Greater, "u")).await);
    assert!(holds(Compare::lease(lk.clone(), CompareOp::Equal, lease)).await);
    assert!(holds(Compare::lease(k.clone(), CompareOp::Equal, 0)).await);

    // Go's mutex acquire: put if absent, then read the first key by create revision.
    let me = key(&p, "lock/me");
    let acquire = || {
        Txn::new()
            .when([Compare::create_revision(me.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::Put(PutRequest::new(me.clone(), "").with_lease(lease)),
                TxnOp::Range(RangeRequest::first_created(key(&p, "lock/"))),
            ])
            .or_else([
                TxnOp::Range(RangeRequest::key(me.clone())),
                TxnOp::Range(RangeRequest::first_created(key(&p, "lock/"))),
            ])
    };
    let first = b.txn(acquire()).await.unwrap();
    assert!(first.succeeded);
    assert_eq!(first.responses.len(), 2);
    let owner = first.range(1).unwrap();
    assert_eq!(owner.kvs[0].key, me);
    assert_eq!(owner.kvs[0].create_revision, first.header_revision);
    assert_eq!(owner.header_revision, first.header_revision);

    let again = b.txn(acquire()).await.unwrap();
    assert!(!again.succeeded);
    assert_eq!(again.range(0).unwrap().kvs[0].lease, lease);
    assert_eq!(again.range(1).unwrap().kvs[0].key, me);
    assert!(again.range(5).is_err());

    // Delete inside a txn, with prev_kv.
    let del = b
        .txn(Txn::new().and_then([TxnOp::Delete(DeleteRequest::key(me.clone()).with_prev_kv())]))
        .await
        .unwrap();
    match &del.responses[0] {
        TxnOpResponse::Delete(d) => {
            assert_eq!(d.deleted, 1);
            assert_eq!(d.prev_kvs[0].key, me);
        }
        other => panic!("expected a delete response, got {other:?}"),
    }
    b.lease_revoke(lease).await.unwrap();
    b.delete(DeleteRequest::prefix(p)).await.unwrap();
}
