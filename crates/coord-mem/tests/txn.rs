//! Transactions: compares, branches, atomicity, etcd's request checks.

use coord_core::{
    Backend, Compare, CompareOp, DeleteRequest, Error, KeyRange, PutRequest, RangeRequest, Txn,
    TxnOp, TxnOpResponse,
};
use coord_mem::MemStore;

async fn store_with_a() -> MemStore {
    let store = MemStore::new();
    let lease = store.lease_grant(60, Some(7)).await.unwrap();
    store.put(PutRequest::new("a", "m")).await.unwrap(); // 2
    store
        .put(PutRequest::new("a", "m").with_lease(lease.id))
        .await
        .unwrap(); // 3: create 2, mod 3, version 2, lease 7
    store
}

async fn holds(store: &MemStore, c: Compare) -> bool {
    let r = store.txn(Txn::new().when([c])).await.unwrap();
    assert!(r.responses.is_empty());
    r.succeeded
}

#[tokio::test]
async fn compares_on_every_target() {
    use CompareOp::*;
    let store = store_with_a().await;
    let cases = [
        (Compare::create_revision("a", Equal, 2), true),
        (Compare::create_revision("a", NotEqual, 2), false),
        (Compare::create_revision("a", Greater, 1), true),
        (Compare::create_revision("a", Less, 2), false),
        (Compare::mod_revision("a", Equal, 3), true),
        (Compare::mod_revision("a", Less, 4), true),
        (Compare::mod_revision("a", Greater, 3), false),
        (Compare::version("a", Equal, 2), true),
        (Compare::version("a", Greater, 2), false),
        (Compare::version("a", NotEqual, 1), true),
        (Compare::value("a", Equal, "m"), true),
        (Compare::value("a", Greater, "l"), true),
        (Compare::value("a", Less, "mm"), true),
        (Compare::value("a", NotEqual, "m"), false),
        (Compare::lease("a", Equal, 7), true),
        (Compare::lease("a", NotEqual, 0), true),
        // A missing key has 0 for revisions, version and lease ...
        (Compare::create_revision("zz", Equal, 0), true),
        (Compare::mod_revision("zz", Equal, 0), true),
        (Compare::version("zz", Less, 1), true),
        (Compare::lease("zz", Equal, 0), true),
        // ... and a value compare on it is false whatever the operator.
        (Compare::value("zz", Equal, ""), false),
        (Compare::value("zz", NotEqual, "x"), false),
        (Compare::value("zz", Less, "x"), false),
        (Compare::value("zz", Greater, ""), false),
    ];
    for (c, expect) in cases {
        assert_eq!(holds(&store, c.clone()).await, expect, "{c:?}");
    }
    assert_eq!(store.revision(), 3, "compares alone never write");
}

#[tokio::test]
async fn all_compares_must_hold() {
    let store = store_with_a().await;
    let r = store
        .txn(
            Txn::new()
                .when([
                    Compare::version("a", CompareOp::Equal, 2),
                    Compare::value("a", CompareOp::Equal, "nope"),
                ])
                .and_then([PutRequest::new("s", "1").into()])
                .or_else([PutRequest::new("f", "1").into()]),
        )
        .await
        .unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.header_revision, 4);
    assert_eq!(store.range(RangeRequest::key("f")).await.unwrap().count, 1);
    assert_eq!(store.range(RangeRequest::key("s")).await.unwrap().count, 0);
}

#[tokio::test]
async fn one_revision_per_txn_and_ops_see_earlier_ops() {
    let store = MemStore::new();
    store.put(PutRequest::new("p/old", "x")).await.unwrap(); // 2
    let r = store
        .txn(Txn::new().and_then([
            TxnOp::Range(RangeRequest::prefix("p/")),
            PutRequest::new("p/a", "1").into(),
            PutRequest::new("p/b", "2").into(),
            TxnOp::Range(RangeRequest::prefix("p/")),
            DeleteRequest::key("p/old").into(),
            TxnOp::Range(RangeRequest::prefix("p/")),
            // An explicit past revision inside the txn reads before the txn's writes.
            TxnOp::Range(RangeRequest::prefix("p/").with_revision(2)),
        ]))
        .await
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(r.header_revision, 3);
    let ranges: Vec<_> = r
        .responses
        .iter()
        .filter_map(TxnOpResponse::as_range)
        .collect();
    assert_eq!((ranges[0].count, ranges[0].header_revision), (1, 2));
    assert_eq!((ranges[1].count, ranges[1].header_revision), (3, 3));
    assert_eq!(ranges[2].count, 2);
    assert_eq!(ranges[3].count, 1);
    let kvs = store.range(RangeRequest::prefix("p/")).await.unwrap().kvs;
    assert!(kvs
        .iter()
        .all(|kv| kv.create_revision == 3 && kv.mod_revision == 3));
    match &r.responses[1] {
        TxnOpResponse::Put(p) => assert_eq!(p.header_revision, 3),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_txn_that_changes_nothing_keeps_the_revision() {
    let store = MemStore::new();
    store.put(PutRequest::new("a", "1")).await.unwrap();
    let r = store
        .txn(Txn::new().and_then([
            TxnOp::Range(RangeRequest::key("a")),
            DeleteRequest::key("missing").into(),
        ]))
        .await
        .unwrap();
    assert_eq!(r.header_revision, 2);
    match &r.responses[1] {
        TxnOpResponse::Delete(d) => assert_eq!((d.deleted, d.header_revision), (0, 2)),
        other => panic!("{other:?}"),
    }
    let r = store.txn(Txn::new()).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(store.revision(), 2);
}

#[tokio::test]
async fn lock_acquire_shape() {
    // The mutex's acquire txn: create my key if absent, then read owner and predecessor.
    let store = MemStore::new();
    let lease = store.lease_grant(10, None).await.unwrap();
    let acquire = |key: &'static str| {
        Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([
                PutRequest::new(key, "").with_lease(lease.id).into(),
                RangeRequest::first_created("m/").into(),
                RangeRequest::last_created("m/", 2).into(),
            ])
            .or_else([
                RangeRequest::key(key).into(),
                RangeRequest::first_created("m/").into(),
                RangeRequest::last_created("m/", 2).into(),
            ])
    };
    let r = store.txn(acquire("m/1")).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(r.range(1).unwrap().kvs[0].key, b"m/1");
    let r = store.txn(acquire("m/2")).await.unwrap();
    let last_two = &r.range(2).unwrap().kvs;
    assert_eq!(last_two[0].key, b"m/2");
    assert_eq!(last_two[1].key, b"m/1", "predecessor");
    let r = store.txn(acquire("m/2")).await.unwrap();
    assert!(!r.succeeded, "my key exists: failure branch");
    assert_eq!(r.range(0).unwrap().kvs[0].create_revision, 3);
    // Release: compare + delete.
    let r = store
        .txn(
            Txn::new()
                .when([Compare::create_revision("m/1", CompareOp::Equal, 2)])
                .and_then([DeleteRequest::key("m/1").into()]),
        )
        .await
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(r.header_revision, 4);
}

#[tokio::test]
async fn unknown_lease_fails_the_whole_txn() {
    let store = MemStore::new();
    let err = store
        .txn(Txn::new().and_then([
            PutRequest::new("a", "1").into(),
            PutRequest::new("b", "1").with_lease(99).into(),
        ]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { lease: 99 }), "{err:?}");
    assert_eq!((store.revision(), store.key_count()), (1, 0));
    // Only the branch that runs is checked, as in etcd.
    let r = store
        .txn(
            Txn::new()
                .and_then([PutRequest::new("a", "1").into()])
                .or_else([PutRequest::new("b", "1").with_lease(99).into()]),
        )
        .await
        .unwrap();
    assert!(r.succeeded);
}

#[tokio::test]
async fn bad_ranges_in_the_running_branch_fail_the_txn() {
    let store = MemStore::new();
    store.put(PutRequest::new("a", "1")).await.unwrap();
    let err = store
        .txn(Txn::new().and_then([
            PutRequest::new("b", "1").into(),
            RangeRequest::key("a").with_revision(3).into(),
        ]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_eq!(store.key_count(), 1);
}

#[tokio::test]
async fn etcd_request_checks() {
    let store = MemStore::new();
    let invalid = |r: coord_core::Result<_>| matches!(r, Err(Error::InvalidArgument { .. }));
    // The same key put twice, in either branch (even the one that does not run).
    let dup = Txn::new().or_else([
        PutRequest::new("k", "1").into(),
        PutRequest::new("k", "2").into(),
    ]);
    assert!(invalid(store.txn(dup).await));
    // A key put and deleted in one branch.
    let dup = Txn::new().and_then([
        DeleteRequest::prefix("k").into(),
        PutRequest::new("k/1", "2").into(),
    ]);
    assert!(invalid(store.txn(dup).await));
    // Put in one branch, delete in the other: fine.
    let ok = Txn::new()
        .and_then([PutRequest::new("k", "1").into()])
        .or_else([DeleteRequest::key("k").into()]);
    assert!(store.txn(ok).await.is_ok());
    // Empty keys anywhere.
    let empty = Txn::new().or_else([RangeRequest::new(KeyRange::key("")).into()]);
    assert!(invalid(store.txn(empty).await));
    let empty = Txn::new().and_then([PutRequest::new("", "v").into()]);
    assert!(invalid(store.txn(empty).await));
    // Too many ops (etcd's --max-txn-ops, 128).
    let many = Txn::new().and_then((0..129).map(|i| RangeRequest::key(format!("k{i}")).into()));
    assert!(invalid(store.txn(many).await));
    let fine = Txn::new().and_then((0..128).map(|i| PutRequest::new(format!("k{i}"), "").into()));
    assert!(store.txn(fine).await.is_ok());
    // Too large in total.
    let big = MemStore::builder()
        .limits(coord_core::BackendLimits::new(100, 1, 10))
        .build();
    let large =
        Txn::new().and_then((0..4).map(|i| PutRequest::new(format!("k{i}"), vec![0u8; 30]).into()));
    assert!(invalid(big.txn(large).await));
    assert_eq!(big.revision(), 1);
}
