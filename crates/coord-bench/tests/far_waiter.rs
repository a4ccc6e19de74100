//! A waiter far back in a long queue (twice its expected wait past 150 ms) watches the key just
//! ahead of it from just after its last read, and reads nothing after registering it (see
//! coord-core's `wait.rs`). On coord-mem, with a store that acts right before that watch is
//! registered:
//!
//! - the key just ahead is deleted (its contender gives up): the watch replays the delete (a
//!   far waiter has no fallback check: without the replay it would wait for ever), and the
//!   waiter still gets the lock in its turn;
//! - the history is compacted past the read: the waiter watches from now and reads instead,
//!   and still gets the lock in its turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coord_core::{
    Backend, Decorator, DeleteRequest, DynBackend, Mutex, RangeRequest, Result, Session,
    WatchRequest, WatchStream,
};
use coord_mem::MemStore;

/// What the store does right before a watch from a past revision is registered.
#[derive(Debug, Clone, Copy)]
enum Before {
    /// Deletes this key (once).
    Delete,
    /// Compacts the history up to now (once).
    Compact,
}

/// A store that does [`Before`] once, right before the first watch from a past revision.
#[derive(Debug)]
struct Acting {
    inner: MemStore,
    before: Before,
    /// The key to delete.
    victim: Vec<u8>,
    /// Watches from a past revision seen.
    history_watches: AtomicUsize,
}

#[async_trait]
impl Decorator for Acting {
    type Inner = MemStore;

    fn inner(&self) -> &MemStore {
        &self.inner
    }

    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        if req.start_revision > 0 && self.history_watches.fetch_add(1, Ordering::SeqCst) == 0 {
            match self.before {
                Before::Delete => {
                    self.inner
                        .delete(DeleteRequest::key(self.victim.clone()))
                        .await?;
                }
                Before::Compact => {
                    let now = self
                        .inner
                        .range(RangeRequest::key(b"any".to_vec()))
                        .await?
                        .header_revision;
                    self.inner.compact(now).await?;
                }
            }
        }
        self.inner.watch(req).await
    }
}

/// Keys ahead of the waiter: enough for its wait to count as long with a fresh session's
/// handoff estimate (1 ms per key: twice 80 ms is past 150 ms).
const AHEAD: usize = 80;

async fn far_waiter_gets_its_turn(before: Before) {
    let store = MemStore::new();
    let name = format!("far-waiter-{before:?}");
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut sessions = Vec::new();
    let mut tasks = Vec::new();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    // A holder and AHEAD - 1 waiters, queued one after the other; each unlocks when told.
    for id in 0..AHEAD {
        let session = Session::new(Arc::new(store.clone()) as DynBackend, 60)
            .await
            .unwrap();
        let mutex = Mutex::new(&session, &name).unwrap();
        let (order, mut release) = (order.clone(), release_rx.clone());
        tasks.push(tokio::spawn(async move {
            let guard = mutex.lock().await?;
            order.lock().unwrap().push(id);
            let _ = release.wait_for(|go| *go).await;
            guard.unlock().await
        }));
        sessions.push(session);
        wait_keys(&store, &name, id + 1).await;
    }
    // The one just ahead of the far waiter: gives up when the far waiter registers its watch.
    let just_ahead = Mutex::new(&sessions[AHEAD - 1], &name)
        .unwrap()
        .key()
        .to_vec();
    let acting = Arc::new(Acting {
        inner: store.clone(),
        before,
        victim: just_ahead,
        history_watches: AtomicUsize::new(0),
    });
    let session = Session::new(acting.clone() as DynBackend, 60)
        .await
        .unwrap();
    let far = Mutex::new(&session, &name).unwrap();
    let far_task = {
        let order = order.clone();
        tokio::spawn(async move {
            let guard = far.lock().await?;
            order.lock().unwrap().push(AHEAD);
            guard.unlock().await
        })
    };
    wait_keys(
        &store,
        &name,
        AHEAD + 1 - usize::from(matches!(before, Before::Delete)),
    )
    .await;
    // Everyone goes, in turn.
    release_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), far_task)
        .await
        .expect("the far waiter got its turn in time")
        .unwrap()
        .expect("the far waiter locked and unlocked");
    // (After a replayed delete it watches the new key just ahead the same way: 2.)
    assert!(
        acting.history_watches.load(Ordering::SeqCst) >= 1,
        "the far waiter watched the key ahead from its read's revision"
    );
    let order = order.lock().unwrap().clone();
    let mut expected: Vec<usize> = (0..=AHEAD).collect();
    if matches!(before, Before::Delete) {
        // The one just ahead gave up (its key was deleted): it never held.
        expected.retain(|&id| id != AHEAD - 1);
    }
    assert_eq!(order, expected, "FIFO, one at a time");
    for task in tasks {
        // The one whose key was deleted ends with NotHeld; the others unlocked.
        let _ = task.await.unwrap();
    }
    for s in sessions {
        s.close().await.unwrap();
    }
    session.close().await.unwrap();
}

/// Waits until `n` keys exist under `name/`.
async fn wait_keys(store: &MemStore, name: &str, n: usize) {
    for _ in 0..2000 {
        let count = store
            .range(RangeRequest::prefix(format!("{name}/").into_bytes()).with_count_only())
            .await
            .unwrap()
            .count;
        if count == n as i64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("{n} keys never appeared under {name}/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_waiter_sees_a_delete_before_its_watch() {
    far_waiter_gets_its_turn(Before::Delete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_waiter_falls_back_when_its_revision_is_compacted() {
    far_waiter_gets_its_turn(Before::Compact).await;
}
