//! A waiter further back, woken by the delete of the key just ahead, reads the queue
//! serializably (etcd answers that from the member's own state, without waiting behind the
//! writes being made durable). Such an answer may lag: one older than the delete is read again
//! in full, never trusted. Shown on coord-mem with a decorator that answers every serializable
//! read from a revision of the test's choosing, as a lagging etcd member would.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coord::mem::MemStore;
use coord::{Backend, Decorator, Mutex, Session, Txn, TxnOp, TxnResponse};
use coord_core::Result;

/// Answers transactions made only of serializable ranges as of `stale_at` (when set), with
/// that revision in the header; everything else as the store is now.
#[derive(Debug, Clone)]
struct Lagging {
    inner: MemStore,
    stale_at: Arc<AtomicI64>,
    /// Serializable transactions answered, and how many of them from the past.
    serializable: Arc<AtomicUsize>,
    stale: Arc<AtomicUsize>,
}

#[async_trait]
impl Decorator for Lagging {
    type Inner = MemStore;
    fn inner(&self) -> &MemStore {
        &self.inner
    }
    async fn txn(&self, mut txn: Txn) -> Result<TxnResponse> {
        let ops = || txn.success.iter().chain(&txn.failure);
        let serializable =
            ops().count() > 0 && ops().all(|op| matches!(op, TxnOp::Range(r) if r.serializable));
        if !serializable {
            return self.inner.txn(txn).await;
        }
        self.serializable.fetch_add(1, Ordering::Relaxed);
        let at = self.stale_at.load(Ordering::Relaxed);
        if at == 0 {
            return self.inner.txn(txn).await;
        }
        self.stale.fetch_add(1, Ordering::Relaxed);
        for op in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
            if let TxnOp::Range(r) = op {
                r.revision = at;
            }
        }
        let mut resp = self.inner.txn(txn).await?;
        resp.header_revision = at;
        Ok(resp)
    }
}

/// Three in line on one mutex; the third, woken by the second's release, gets a serializable
/// answer from before its own key existed. It reads again in full and holds; trusting that
/// answer would have failed it with "key gone".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_serializable_answer_is_read_again() {
    let store = MemStore::new();
    let lagging = Lagging {
        inner: store.clone(),
        stale_at: Arc::new(AtomicI64::new(0)),
        serializable: Arc::new(AtomicUsize::new(0)),
        stale: Arc::new(AtomicUsize::new(0)),
    };
    let first = Session::new(store.clone(), 10).await.unwrap();
    let second = Session::new(store.clone(), 10).await.unwrap();
    let third = Session::new(lagging.clone(), 10).await.unwrap();
    let held = Mutex::new(&first, "job").unwrap().lock().await.unwrap();
    // Before the third's key: the revision a lagging member would answer from.
    let before = store.txn(Txn::new()).await.unwrap().header_revision;
    let waiting_second = tokio::spawn({
        let m = Mutex::new(&second, "job").unwrap();
        async move { m.lock().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiting_third = tokio::spawn({
        let m = Mutex::new(&third, "job").unwrap();
        async move { m.lock().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    lagging.stale_at.store(before, Ordering::Relaxed);

    held.unlock().await.unwrap();
    let second_guard = tokio::time::timeout(Duration::from_secs(5), waiting_second)
        .await
        .expect("the second holds")
        .unwrap()
        .unwrap();
    assert!(!waiting_third.is_finished(), "the third waits its turn");
    second_guard.unlock().await.unwrap();
    let third_guard = tokio::time::timeout(Duration::from_secs(5), waiting_third)
        .await
        .expect("the third holds")
        .unwrap()
        .expect("a stale answer is not trusted");
    assert!(
        lagging.stale.load(Ordering::Relaxed) >= 1,
        "the third was woken by the delete and read serializably ({} serializable reads)",
        lagging.serializable.load(Ordering::Relaxed)
    );
    third_guard.unlock().await.unwrap();
}

/// With a current answer, the woken waiter holds after one serializable read: no read in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_waiter_reads_serializably_once() {
    let store = MemStore::new();
    let lagging = Lagging {
        inner: store.clone(),
        stale_at: Arc::new(AtomicI64::new(0)),
        serializable: Arc::new(AtomicUsize::new(0)),
        stale: Arc::new(AtomicUsize::new(0)),
    };
    let first = Session::new(store.clone(), 10).await.unwrap();
    let second = Session::new(store.clone(), 10).await.unwrap();
    let third = Session::new(lagging.clone(), 10).await.unwrap();
    let held = Mutex::new(&first, "job").unwrap().lock().await.unwrap();
    let waiting_second = tokio::spawn({
        let m = Mutex::new(&second, "job").unwrap();
        async move { m.lock().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiting_third = tokio::spawn({
        let m = Mutex::new(&third, "job").unwrap();
        async move { m.lock().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    held.unlock().await.unwrap();
    waiting_second
        .await
        .unwrap()
        .unwrap()
        .unlock()
        .await
        .unwrap();
    let third_guard = tokio::time::timeout(Duration::from_secs(5), waiting_third)
        .await
        .expect("the third holds")
        .unwrap()
        .unwrap();
    assert_eq!(lagging.serializable.load(Ordering::Relaxed), 1);
    third_guard.unlock().await.unwrap();
}
