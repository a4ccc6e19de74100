//! A release ("if create_revision(k) = r then delete the one key d") runs as a statement of its
//! own, `txn_guarded_delete()`, not the generic `txn_w()`. It must answer exactly as the
//! generic transaction does: each case below runs on a fresh schema and on coord-mem (the
//! reference, etcd's semantics) from revision 1, and the answers, the store's contents and the
//! watch events must be the same.

use std::time::Duration;

use coord_core::{
    Backend, Compare, CompareOp, DeleteRequest, KeyRange, PutRequest, RangeRequest, Txn, TxnOp,
    TxnResponse, WatchEvent, WatchRequest,
};
use coord_mem::MemStore;
use futures::StreamExt;

mod common;

fn release(compared: &str, rev: i64, deleted: &str) -> Txn {
    Txn::new()
        .when([Compare::create_revision(compared, CompareOp::Equal, rev)])
        .and_then([TxnOp::Delete(DeleteRequest::key(deleted))])
}

/// What a store answers to the cases, its keys at the end, and its watch events.
async fn run(store: &dyn Backend) -> (Vec<TxnResponse>, Vec<(Vec<u8>, i64)>, Vec<WatchEvent>) {
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("")).with_prev_kv())
        .await
        .unwrap();
    store.put(PutRequest::new("a", "1")).await.unwrap(); // revision 2
    store.put(PutRequest::new("b", "2")).await.unwrap(); // revision 3
    let cases = [
        release("a", 2, "a"),   // holds: a deleted at 4
        release("a", 2, "a"),   // a is gone: the compare fails, nothing changes
        release("zz", 0, "zz"), // holds (no such key), nothing to delete: no new revision
        release("b", 7, "b"),   // wrong revision: fails
        release("zz", 0, "b"),  // holds on another key: b deleted at 5
    ];
    let mut answers = Vec::new();
    for txn in cases {
        answers.push(store.txn(txn).await.unwrap());
    }
    let left = store
        .range(RangeRequest::prefix(""))
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.mod_revision))
        .collect();
    let mut events = Vec::new();
    while events.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
            Ok(Some(Ok(e))) => events.push(e),
            other => panic!("expected 4 watch events, got {events:?} then {other:?}"),
        }
    }
    (answers, left, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_answers_as_the_generic_transaction() {
    let Some((store, schema)) = common::backend_in_own_schema().await else {
        return;
    };
    let got = run(&store).await;
    let want = run(&MemStore::new()).await;
    assert_eq!(got.0, want.0, "answers");
    assert_eq!(got.1, want.1, "keys left");
    assert_eq!(got.2, want.2, "watch events");
    // The cases that changed something made revisions 4 and 5, nothing else.
    assert_eq!(got.0[4].header_revision, 5);
    drop(store);
    common::drop_schema_now(&schema).await;
}
