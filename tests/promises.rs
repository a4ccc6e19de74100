//! Promises the docs make that need a fault or a clock to show, checked on coord-mem: a
//! guard's `lost()` through transient failures, a resumed lease with little time left, a
//! session whose runtime is gone, and a slow watch registration on one name.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use coord::mem::MemStore;
use coord::{Backend, CallKind, Decorator, DeleteRequest, Error, Mutex, Session};
use coord_core::{Result, WatchRequest, WatchStream};
use tokio::sync::Semaphore;

/// `lost()` first awaited while the store fails every watch registration and read: it keeps
/// trying, and reports the key's deletion once the store answers again (it used to fall back
/// to waiting for the session's end only, and never fired).
#[tokio::test(start_paused = true)]
async fn lost_reports_a_delete_after_transient_failures() {
    let store = MemStore::new();
    let s = Session::new(store.clone(), 10).await.unwrap();
    let other = Session::new(store.clone(), 10).await.unwrap();
    let guard = Mutex::new(&s, "job").unwrap().lock().await.unwrap();
    store.faults().fail_next_matching(CallKind::Watch, 5);
    store.faults().fail_next_matching(CallKind::Range, 5);
    {
        let lost = guard.lost();
        tokio::pin!(lost);
        // Through the failures: still held, still trying.
        assert!(tokio::time::timeout(Duration::from_secs(3), &mut lost)
            .await
            .is_err());
        store
            .delete(DeleteRequest::key(guard.key().to_vec()))
            .await
            .unwrap();
        let e = tokio::time::timeout(Duration::from_secs(5), lost)
            .await
            .expect("lost() fires after the key is deleted");
        assert!(matches!(e, Error::NotHeld { .. }), "{e:?}");
    }
    // The lock is free for others, as lost() says.
    let theirs = Mutex::new(&other, "job").unwrap().try_lock().await.unwrap();
    theirs.unlock().await.unwrap();
    drop(guard);
    s.close().await.unwrap();
    other.close().await.unwrap();
}

/// `with_lease` on a lease with 3 s of 15 left: the session renews it at once, so its lock
/// survives well past those 3 s; and once renewals stop, `is_lost()` turns true as soon as the
/// lease's time is up, without waiting for anything.
#[tokio::test(start_paused = true)]
async fn resumed_lease_is_renewed_and_its_end_is_seen_at_once() {
    let store = MemStore::new();
    let lease = store.lease_grant(15, None).await.unwrap();
    tokio::time::advance(Duration::from_secs(12)).await;
    let s = Session::builder(store.clone())
        .with_lease(lease.id)
        .build()
        .await
        .unwrap();
    assert_eq!(s.ttl(), 15);
    let guard = Mutex::new(&s, "job").unwrap().lock().await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(!s.is_lost(), "the resumed session lost its lease");
    assert_eq!(store.lease_list().await.unwrap(), vec![lease.id]);

    store.faults().block_keep_alives(lease.id, true);
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert!(s.is_lost(), "is_lost() once the lease's time is up");
    assert!(matches!(guard.lost().await, Error::SessionExpired { .. }));
}

/// A session built on one runtime and used on another: when its runtime shuts down, its
/// keep-alive cannot run, so the session ends (`lost()` fires, `is_lost()`), instead of looking
/// alive while its lease runs out.
#[test]
fn session_ends_when_its_runtime_shuts_down() {
    let store = MemStore::new();
    let first = tokio::runtime::Runtime::new().unwrap();
    let s = first.block_on(Session::new(store.clone(), 30)).unwrap();
    let other = tokio::runtime::Runtime::new().unwrap();
    let guard = other
        .block_on(Mutex::new(&s, "job").unwrap().lock())
        .unwrap();
    assert!(!s.is_lost());
    drop(first);
    other.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), s.lost())
            .await
            .expect("lost() fires once the session's runtime is gone");
        assert!(s.is_lost());
        let e = tokio::time::timeout(Duration::from_secs(5), guard.lost())
            .await
            .unwrap();
        assert!(matches!(e, Error::SessionExpired { .. }), "{e:?}");
    });
}

/// A session whose runtime is idle (a current-thread runtime nobody drives) cannot renew its
/// lease either: callers on another runtime see it end when the lease's time is up.
#[test]
fn session_on_an_idle_runtime_ends_when_its_lease_time_is_up() {
    let store = MemStore::new();
    let idle = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = idle.block_on(Session::new(store.clone(), 1)).unwrap();
    let other = tokio::runtime::Runtime::new().unwrap();
    other.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), s.lost())
            .await
            .expect("lost() fires when the lease's time is up");
        assert!(s.is_lost());
    });
    drop(idle);
}

/// A backend whose watch registrations of one prefix hang until released.
#[derive(Debug, Clone)]
struct SlowWatch {
    inner: MemStore,
    slow_prefix: Vec<u8>,
    gate: Arc<Semaphore>,
}

#[async_trait]
impl Decorator for SlowWatch {
    type Inner = MemStore;
    fn inner(&self) -> &MemStore {
        &self.inner
    }
    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        if req.range.start().starts_with(&self.slow_prefix) {
            let _permit = self.gate.acquire().await.unwrap();
        }
        self.inner.watch(req).await
    }
}

/// One name's watch registration hanging does not hold up waiting on another name of the same
/// session (the session's watch map used to stay locked across the registration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watch_registration_stalls_only_its_own_name() {
    let store = MemStore::new();
    let gate = Arc::new(Semaphore::new(0));
    let slow = SlowWatch {
        inner: store.clone(),
        slow_prefix: b"slow/".to_vec(),
        gate: gate.clone(),
    };
    let holder = Session::new(store.clone(), 10).await.unwrap();
    let worker = Session::new(slow, 10).await.unwrap();
    let held_slow = Mutex::new(&holder, "slow").unwrap().lock().await.unwrap();
    let held_fast = Mutex::new(&holder, "fast").unwrap().lock().await.unwrap();
    // The worker waits on "slow": its watch registration hangs.
    let slow_wait = tokio::spawn({
        let m = Mutex::new(&worker, "slow").unwrap();
        async move { m.lock().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Meanwhile it waits on "fast", which must not wait for the other registration.
    let fast_wait = tokio::spawn({
        let m = Mutex::new(&worker, "fast").unwrap();
        async move { m.lock().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    held_fast.unlock().await.unwrap();
    let fast = tokio::time::timeout(Duration::from_secs(5), fast_wait)
        .await
        .expect("the wait on another name is not held up")
        .unwrap()
        .unwrap();
    fast.unlock().await.unwrap();
    gate.add_permits(1);
    held_slow.unlock().await.unwrap();
    let slow = tokio::time::timeout(Duration::from_secs(5), slow_wait)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    slow.unlock().await.unwrap();
    worker.close().await.unwrap();
    holder.close().await.unwrap();
}
