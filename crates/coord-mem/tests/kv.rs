//! Keys, revisions and ranges: the key-value half of the contract.

use coord_core::{
    Backend, DeleteRequest, Error, KeyRange, KeyValue, PutRequest, RangeRequest, SortOrder,
    SortTarget,
};
use coord_mem::MemStore;

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter()
        .map(|kv| std::str::from_utf8(&kv.key).unwrap())
        .collect()
}

async fn put(store: &MemStore, k: &str, v: &str) -> i64 {
    store
        .put(PutRequest::new(k, v))
        .await
        .unwrap()
        .header_revision
}

#[tokio::test]
async fn fresh_store_is_at_revision_one_and_first_write_is_two() {
    let store = MemStore::new();
    assert_eq!(store.revision(), 1);
    let r = store.range(RangeRequest::key("k")).await.unwrap();
    assert_eq!((r.header_revision, r.count, r.more), (1, 0, false));
    assert_eq!(put(&store, "k", "v").await, 2);
    assert_eq!(put(&store, "k", "w").await, 3);
    assert_eq!(store.revision(), 3);
}

#[tokio::test]
async fn key_metadata_follows_etcd() {
    let store = MemStore::new();
    put(&store, "a", "1").await; // 2
    put(&store, "b", "1").await; // 3
    put(&store, "a", "2").await; // 4
    let a = &store.range(RangeRequest::key("a")).await.unwrap().kvs[0];
    assert_eq!(
        a,
        &KeyValue {
            key: b"a".to_vec(),
            value: b"2".to_vec(),
            create_revision: 2,
            mod_revision: 4,
            version: 2,
            lease: 0,
        }
    );
    // Delete, then create again: version and create revision start over.
    let d = store.delete(DeleteRequest::key("a")).await.unwrap();
    assert_eq!((d.header_revision, d.deleted), (5, 1));
    assert_eq!(put(&store, "a", "3").await, 6);
    let a = &store.range(RangeRequest::key("a")).await.unwrap().kvs[0];
    assert_eq!((a.create_revision, a.mod_revision, a.version), (6, 6, 1));
}

#[tokio::test]
async fn put_and_delete_return_previous_values() {
    let store = MemStore::new();
    let r = store
        .put(PutRequest::new("k", "1").with_prev_kv())
        .await
        .unwrap();
    assert_eq!(r.prev_kv, None);
    let r = store
        .put(PutRequest::new("k", "2").with_prev_kv())
        .await
        .unwrap();
    assert_eq!(r.prev_kv.unwrap().value, b"1");
    let r = store.put(PutRequest::new("k", "3")).await.unwrap();
    assert_eq!(r.prev_kv, None, "not asked for");
    let d = store
        .delete(DeleteRequest::key("k").with_prev_kv())
        .await
        .unwrap();
    assert_eq!(d.prev_kvs.len(), 1);
    assert_eq!(d.prev_kvs[0].value, b"3");
    assert_eq!(d.prev_kvs[0].version, 3);
}

#[tokio::test]
async fn delete_of_nothing_does_not_bump_the_revision() {
    let store = MemStore::new();
    put(&store, "a", "1").await;
    let d = store.delete(DeleteRequest::key("zzz")).await.unwrap();
    assert_eq!((d.header_revision, d.deleted), (2, 0));
    let d = store.delete(DeleteRequest::prefix("q")).await.unwrap();
    assert_eq!((d.header_revision, d.deleted), (2, 0));
    assert_eq!(store.revision(), 2);
}

#[tokio::test]
async fn prefix_delete_is_one_revision() {
    let store = MemStore::new();
    for k in ["p/a", "p/b", "p/c", "q"] {
        put(&store, k, "v").await;
    }
    let d = store
        .delete(DeleteRequest::prefix("p/").with_prev_kv())
        .await
        .unwrap();
    assert_eq!((d.header_revision, d.deleted), (6, 3));
    assert_eq!(keys(&d.prev_kvs), ["p/a", "p/b", "p/c"]);
    assert_eq!(store.key_count(), 1);
}

#[tokio::test]
async fn range_kinds() {
    let store = MemStore::new();
    for k in ["a", "ab", "abc", "b", "ba", "c"] {
        put(&store, k, "v").await;
    }
    let get = |range: KeyRange| {
        let store = store.clone();
        async move { store.range(RangeRequest::new(range)).await.unwrap() }
    };
    assert_eq!(keys(&get(KeyRange::key("ab")).await.kvs), ["ab"]);
    assert_eq!(
        keys(&get(KeyRange::prefix("a")).await.kvs),
        ["a", "ab", "abc"]
    );
    assert_eq!(keys(&get(KeyRange::prefix("")).await.kvs).len(), 6);
    assert_eq!(
        keys(&get(KeyRange::FromKey(b"b".to_vec())).await.kvs),
        ["b", "ba", "c"]
    );
    assert_eq!(
        keys(
            &get(KeyRange::Range {
                start: b"ab".to_vec(),
                end: b"ba".to_vec()
            })
            .await
            .kvs
        ),
        ["ab", "abc", "b"]
    );
    // Literal [start, end): an empty end and [0] are no sentinels, end <= start is nothing.
    let empty_end = KeyRange::Range {
        start: b"b".to_vec(),
        end: vec![],
    };
    assert_eq!(get(empty_end).await.count, 0);
    let zero_end = KeyRange::Range {
        start: b"b".to_vec(),
        end: vec![0],
    };
    assert_eq!(get(zero_end).await.count, 0);
    let from_first = KeyRange::Range {
        start: vec![],
        end: b"b".to_vec(),
    };
    assert_eq!(keys(&get(from_first).await.kvs), ["a", "ab", "abc"]);
    let nothing = KeyRange::Range {
        start: vec![],
        end: vec![],
    };
    assert_eq!(get(nothing).await.count, 0);
    let backwards = KeyRange::Range {
        start: b"c".to_vec(),
        end: b"a".to_vec(),
    };
    assert_eq!(get(backwards).await.count, 0);
}

#[tokio::test]
async fn prefix_of_0xff_bytes_reaches_the_end() {
    let store = MemStore::new();
    put(&store, "\u{7f}", "v").await;
    store
        .put(PutRequest::new(vec![0xff, 0xff], "v"))
        .await
        .unwrap();
    store
        .put(PutRequest::new(vec![0xff, 0xff, 0x01], "v"))
        .await
        .unwrap();
    let r = store
        .range(RangeRequest::prefix(vec![0xff, 0xff]))
        .await
        .unwrap();
    assert_eq!(r.count, 2);
}

#[tokio::test]
async fn sort_limit_count_more() {
    let store = MemStore::new();
    // Created in the order c, a, b; then a is modified last.
    put(&store, "p/c", "v").await; // 2
    put(&store, "p/a", "v").await; // 3
    put(&store, "p/b", "v").await; // 4
    put(&store, "p/a", "w").await; // 5
    put(&store, "q", "v").await; // 6
    let sorted = |t, o, limit| {
        let store = store.clone();
        async move {
            store
                .range(RangeRequest::prefix("p/").with_sort(t, o).with_limit(limit))
                .await
                .unwrap()
        }
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(
        keys(&sorted(Key, Ascend, 0).await.kvs),
        ["p/a", "p/b", "p/c"]
    );
    assert_eq!(
        keys(&sorted(Key, Descend, 0).await.kvs),
        ["p/c", "p/b", "p/a"]
    );
    assert_eq!(
        keys(&sorted(Create, Ascend, 0).await.kvs),
        ["p/c", "p/a", "p/b"]
    );
    assert_eq!(
        keys(&sorted(Create, Descend, 0).await.kvs),
        ["p/b", "p/a", "p/c"]
    );
    assert_eq!(
        keys(&sorted(Mod, Ascend, 0).await.kvs),
        ["p/c", "p/b", "p/a"]
    );
    assert_eq!(
        keys(&sorted(Mod, Descend, 0).await.kvs),
        ["p/a", "p/b", "p/c"]
    );

    let r = sorted(Create, Ascend, 1).await;
    assert_eq!(keys(&r.kvs), ["p/c"]);
    assert_eq!((r.count, r.more, r.header_revision), (3, true, 6));
    let r = sorted(Create, Descend, 2).await;
    assert_eq!(keys(&r.kvs), ["p/b", "p/a"]);
    assert_eq!((r.count, r.more), (3, true));
    let r = sorted(Create, Descend, 3).await;
    assert_eq!((r.count, r.more), (3, false));

    // Unsorted with a limit.
    let r = store
        .range(RangeRequest::prefix("p/").with_limit(2))
        .await
        .unwrap();
    assert_eq!(keys(&r.kvs), ["p/a", "p/b"]);
    assert_eq!((r.count, r.more), (3, true));
    // The shorthands used by the lock.
    let r = store
        .range(RangeRequest::first_created("p/"))
        .await
        .unwrap();
    assert_eq!(keys(&r.kvs), ["p/c"]);
    let r = store
        .range(RangeRequest::last_created("p/", 2))
        .await
        .unwrap();
    assert_eq!(keys(&r.kvs), ["p/b", "p/a"]);
}

#[tokio::test]
async fn revision_filters_keep_etcds_count() {
    let store = MemStore::new();
    put(&store, "p/a", "v").await; // 2
    put(&store, "p/b", "v").await; // 3
    put(&store, "p/c", "v").await; // 4
    put(&store, "p/a", "w").await; // 5
    let r = store
        .range(RangeRequest::prefix("p/").with_max_create_revision(3))
        .await
        .unwrap();
    assert_eq!(keys(&r.kvs), ["p/a", "p/b"]);
    // As in etcd, `count` is the keys in the range, before the filters.
    assert_eq!((r.count, r.more), (3, false));
    let r = store
        .range(RangeRequest::prefix("p/").with_max_mod_revision(4))
        .await
        .unwrap();
    assert_eq!(keys(&r.kvs), ["p/b", "p/c"]);
    // Go's waitDeletes: the newest key created before mine.
    let r = store
        .range(
            RangeRequest::last_created("p/", 1)
                .with_max_create_revision(3)
                .with_keys_only(),
        )
        .await
        .unwrap();
    assert_eq!(keys(&r.kvs), ["p/b"]);
    assert!(r.kvs[0].value.is_empty());
    // Filter plus limit: `more` counts what the filter kept.
    let r = store
        .range(
            RangeRequest::prefix("p/")
                .with_max_create_revision(3)
                .with_limit(1),
        )
        .await
        .unwrap();
    assert_eq!((r.kvs.len(), r.more), (1, true));
}

#[tokio::test]
async fn keys_only_and_count_only() {
    let store = MemStore::new();
    put(&store, "a", "value").await;
    put(&store, "b", "value").await;
    let r = store
        .range(RangeRequest::prefix("").with_keys_only())
        .await
        .unwrap();
    assert_eq!(keys(&r.kvs), ["a", "b"]);
    assert!(r
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
    let r = store
        .range(RangeRequest::prefix("").with_count_only().with_limit(1))
        .await
        .unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 2, false));
}

#[tokio::test]
async fn reads_in_the_past() {
    let store = MemStore::new();
    put(&store, "a", "1").await; // 2
    put(&store, "b", "1").await; // 3
    put(&store, "a", "2").await; // 4
    store.delete(DeleteRequest::key("b")).await.unwrap(); // 5
    put(&store, "c", "1").await; // 6
    let at = |rev| {
        let store = store.clone();
        async move {
            store
                .range(RangeRequest::prefix("").with_revision(rev))
                .await
                .unwrap()
        }
    };
    let r = at(1).await;
    assert_eq!((r.count, r.header_revision), (0, 6));
    let r = at(3).await;
    assert_eq!(keys(&r.kvs), ["a", "b"]);
    assert_eq!(r.kvs[0].value, b"1");
    let r = at(4).await;
    assert_eq!(r.kvs[0].value, b"2");
    assert_eq!((r.kvs[0].version, r.kvs[0].mod_revision), (2, 4));
    assert_eq!(keys(&at(5).await.kvs), ["a"]);
    assert_eq!(keys(&at(6).await.kvs), ["a", "c"]);
    // Sorting and limits apply to the past view too.
    let r = store
        .range(RangeRequest::last_created("", 1).with_revision(3))
        .await
        .unwrap();
    assert_eq!((keys(&r.kvs), r.count, r.more), (vec!["b"], 2, true));
}

#[tokio::test]
async fn future_revision_is_invalid() {
    let store = MemStore::new();
    put(&store, "a", "1").await;
    let err = store
        .range(RangeRequest::key("a").with_revision(3))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn bad_input_is_rejected_and_writes_nothing() {
    let store = MemStore::builder()
        .limits(coord_core::BackendLimits::new(16, 1, 100))
        .build();
    for req in [
        PutRequest::new("", "v"),
        PutRequest::new("k", vec![b'x'; 16]),
        PutRequest::new(vec![b'k'; 10], vec![b'x'; 7]),
    ] {
        let err = store.put(req).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    }
    store
        .put(PutRequest::new(vec![b'k'; 10], vec![b'x'; 6]))
        .await
        .expect("exactly at the limit is fine");
    let range = KeyRange::key("");
    let err = store
        .range(RangeRequest::new(range.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    let err = store.delete(DeleteRequest::new(range)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_eq!(store.revision(), 2);
}

#[tokio::test]
async fn put_with_unknown_lease_writes_nothing() {
    let store = MemStore::new();
    let err = store
        .put(PutRequest::new("k", "v").with_lease(42))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LeaseNotFound { lease: 42 }), "{err:?}");
    assert_eq!((store.revision(), store.key_count()), (1, 0));
}

#[tokio::test]
async fn clones_share_one_store_and_debug_shows_it() {
    let store = MemStore::new();
    let other = store.clone();
    put(&other, "k", "v").await;
    assert_eq!(store.key_count(), 1);
    let debug = format!("{store:?}");
    assert!(debug.contains("revision: 2"), "{debug}");
    fn bounds<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    bounds::<MemStore>();
    // Usable as a shared, type-erased backend.
    let dyn_backend: coord_core::DynBackend = std::sync::Arc::new(store);
    assert_eq!(
        dyn_backend
            .range(RangeRequest::key("k"))
            .await
            .unwrap()
            .count,
        1
    );
}
