//! A double barrier of 1,000 participants on coord-mem (the conformance scenario
//! `double_barrier_large_count` has 100, on every backend): all enter at once; the oldest
//! leaves first and the 999 others one after the other; all get out and nothing is left. The
//! entering and the oldest's leaving are polled on a thread whose stack (192 KiB) is about
//! twice what they need, with 5 participants as with 1,000, in a debug build (80-96 KiB): the
//! oldest loops over the 999 departures, where Go's recipe recursed once per departure seen,
//! so a stack that grew by even 100 bytes per departure would overflow here.
#![cfg(feature = "mem")]

use std::future::Future;
use std::time::Duration;

use coord::mem::MemStore;
use coord::{Backend, DoubleBarrier, RangeRequest, Session, SortOrder, SortTarget};
use futures::future::try_join_all;

const PARTICIPANTS: usize = 1_000;
const SMALL_STACK: usize = 192 * 1024;
const ROUND: Duration = Duration::from_secs(30);

/// Polls `fut` to completion on a thread with a [`SMALL_STACK`], within the test's runtime.
async fn on_small_stack<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let runtime = tokio::runtime::Handle::current();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("small-stack".into())
        .stack_size(SMALL_STACK)
        .spawn(move || {
            let _ = sender.send(runtime.block_on(fut));
        })
        .expect("spawn a thread");
    receiver.await.expect("the small-stack thread answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_barrier_of_a_thousand() {
    let store = MemStore::new();
    let mut barriers = Vec::with_capacity(PARTICIPANTS);
    let mut sessions = Vec::with_capacity(PARTICIPANTS);
    for _ in 0..PARTICIPANTS {
        let session = Session::new(store.clone(), 30).await.expect("session");
        barriers.push(DoubleBarrier::new(&session, "big", PARTICIPANTS).expect("barrier"));
        sessions.push(session);
    }
    let entering = on_small_stack(try_join_all(
        barriers.into_iter().map(|b| async move { b.enter().await }),
    ));
    let mut entries = tokio::time::timeout(ROUND, entering)
        .await
        .expect("1,000 participants enter in time")
        .expect("entering");
    assert_eq!(entries.len(), PARTICIPANTS);
    // Every participant's key, and `big/ready`.
    assert_eq!(store.key_count(), PARTICIPANTS + 1);
    // The oldest leaves first, on the small stack: it waits for the 999 others, who leave one
    // after the other.
    let keys = store
        .range(
            RangeRequest::prefix("big/waiters/").with_sort(SortTarget::Create, SortOrder::Ascend),
        )
        .await
        .expect("read the keys")
        .kvs;
    let oldest = entries
        .iter()
        .position(|e| e.key() == keys[0].key)
        .expect("a participant has the oldest key");
    let oldest = tokio::spawn(on_small_stack(entries.swap_remove(oldest).leave()));
    let mut leaving = Vec::new();
    for (left, entry) in entries.into_iter().enumerate() {
        leaving.push(tokio::spawn(entry.leave()));
        // Its key gone (the last one's with the oldest's and `big/ready` right after it).
        let deadline = tokio::time::Instant::now() + ROUND;
        while store.key_count() > PARTICIPANTS - left {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a participant leaving"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    tokio::time::timeout(ROUND, oldest)
        .await
        .expect("the oldest leaves in time")
        .expect("the oldest's task")
        .expect("the oldest leaving");
    for l in leaving {
        l.await.expect("a leaving task").expect("leaving");
    }
    assert_eq!(store.key_count(), 0, "keys left after the round");
    for session in sessions {
        session.close().await.expect("close");
    }
    assert_eq!(store.lease_count(), 0, "leases left");
}
