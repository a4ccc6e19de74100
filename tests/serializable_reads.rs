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
use coord::{Backend, Decorator, LockGuard, Mutex, Session, Txn, TxnOp, TxnResponse};
use coord_core::Result;
use tokio::task::JoinHandle;

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

impl Lagging {
    fn new(inner: MemStore) -> Lagging {
        Lagging {
            inner,
            stale_at: Arc::new(AtomicI64::new(0)),
            serializable: Arc::new(AtomicUsize::new(0)),
            stale: Arc::new(AtomicUsize::new(0)),
        }
    }
}

type Waiting = JoinHandle<Result<LockGuard>>;

/// Three in line on one mutex "job": the first holds, the second waits right behind it, the
/// third (on `lagging`) behind the second. Also the revision before the third's key.
async fn three_in_line(store: &MemStore, lagging: &Lagging) -> (LockGuard, Waiting, Waiting, i64) {
    let first = Session::new(store.clone(), 10).await.unwrap();
    let second = Session::new(store.clone(), 10).await.unwrap();
    let third = Session::new(lagging.clone(), 10).await.unwrap();
    let held = Mutex::new(&first, "job").unwrap().lock().await.unwrap();
    let before = store.txn(Txn::new()).await.unwrap().header_revision;
    let wait = |session: &Session| {
        let m = Mutex::new(session, "job").unwrap();
        tokio::spawn(async move { m.lock().await })
    };
    let waiting_second = wait(&second);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiting_third = wait(&third);
    tokio::time::sleep(Duration::from_millis(50)).await;
    (held, waiting_second, waiting_third, before)
}

/// Releases the first's lock, then the second's once it holds; the third's guard.
async fn hand_over_twice(held: LockGuard, second: Waiting, third: Waiting) -> Result<LockGuard> {
    held.unlock().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second holds")
        .unwrap()
        .unwrap();
    assert!(!third.is_finished(), "the third waits its turn");
    second.unlock().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("the third is answered")
        .unwrap()
}

/// The third, woken by the second's release, gets a serializable answer from before its own
/// key existed. It reads again in full and holds; trusting that answer would have failed it
/// with "key gone".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_serializable_answer_is_read_again() {
    let store = MemStore::new();
    let lagging = Lagging::new(store.clone());
    let (held, second, third, before) = three_in_line(&store, &lagging).await;
    lagging.stale_at.store(before, Ordering::Relaxed);
    let guard = hand_over_twice(held, second, third)
        .await
        .expect("a stale answer is not trusted");
    assert!(
        lagging.stale.load(Ordering::Relaxed) >= 1,
        "the third was woken by the delete and read serializably ({} serializable reads)",
        lagging.serializable.load(Ordering::Relaxed)
    );
    guard.unlock().await.unwrap();
}

/// With a current answer, the woken waiter holds after one serializable read: no read in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_waiter_reads_serializably_once() {
    let store = MemStore::new();
    let lagging = Lagging::new(store.clone());
    let (held, second, third, _) = three_in_line(&store, &lagging).await;
    let guard = hand_over_twice(held, second, third).await.unwrap();
    assert_eq!(lagging.serializable.load(Ordering::Relaxed), 1);
    guard.unlock().await.unwrap();
}
