//! Guards, sessions and acquire futures are `Send + 'static` (and guards `Sync`), so they can be
//! spawned and held across awaits in any task. A compile-time check: the test fails to build if
//! a bound is lost.

use coord::{
    Barrier, Counter, DoubleBarrier, DoubleBarrierEntry, Election, LeaderStream, Leadership,
    LockGuard, Mutex, PriorityQueue, Queue, RwLock, Semaphore, SemaphorePermit, Session, Stm,
};

fn send_static<T: Send + 'static>(_: &T) {}
fn send_sync_static<T: Send + Sync + 'static>() {}

#[test]
fn guards_and_handles_are_send_sync_static() {
    send_sync_static::<Session>();
    send_sync_static::<Mutex>();
    send_sync_static::<RwLock>();
    send_sync_static::<Election>();
    send_sync_static::<LockGuard>();
    send_sync_static::<Semaphore>();
    send_sync_static::<SemaphorePermit>();
    send_sync_static::<Leadership>();
    send_sync_static::<coord::Error>();
    send_sync_static::<Counter>();
    send_sync_static::<Stm>();
    send_sync_static::<Barrier>();
    send_sync_static::<DoubleBarrier>();
    send_sync_static::<DoubleBarrierEntry>();
    send_sync_static::<Queue>();
    send_sync_static::<PriorityQueue>();
    fn send_static_type<T: Send + 'static>() {}
    send_static_type::<LeaderStream>();
}

#[tokio::test]
async fn acquire_futures_are_send_static() {
    let session = Session::new(coord::mem::MemStore::new(), 5).await.unwrap();
    let mutex = Mutex::new(&session, "bounds").unwrap();
    let rwlock = RwLock::new(&session, "bounds-rw").unwrap();
    let election = Election::new(&session, "bounds-el").unwrap();

    // Owned clones moved into the futures, as a user spawning them would.
    let (m, r, w, e) = (
        mutex.clone(),
        rwlock.clone(),
        rwlock.clone(),
        election.clone(),
    );
    let lock = async move { m.lock().await };
    let read = async move { r.read().await };
    let write = async move { w.try_write().await };
    let campaign = async move { e.campaign("v").await };
    send_static(&lock);
    send_static(&read);
    send_static(&write);
    send_static(&campaign);

    // And they really run on a multi-threaded runtime.
    let guard = tokio::spawn(lock).await.unwrap().unwrap();
    let lost = {
        let s = session.clone();
        async move { s.lost().await }
    };
    send_static(&lost);
    let unlock = guard.unlock();
    send_static(&unlock);
    unlock.await.unwrap();
    drop((read, write, campaign));

    let semaphore = Semaphore::new(&session, "bounds-sem", 2).unwrap();
    let (s1, s2, s3) = (semaphore.clone(), semaphore.clone(), semaphore.clone());
    let acquire = async move { s1.acquire(1).await };
    let try_acquire = async move { s2.try_acquire(1).await };
    let timed = async move {
        s3.acquire_timeout(1, std::time::Duration::from_secs(5))
            .await
    };
    send_static(&acquire);
    send_static(&try_acquire);
    send_static(&timed);
    let permit = tokio::spawn(acquire).await.unwrap().unwrap();
    let release = permit.release();
    send_static(&release);
    release.await.unwrap();
    drop((try_acquire, timed));
    session.close().await.unwrap();
}

#[tokio::test]
async fn counter_and_stm_futures_are_send_static() {
    let store: coord::DynBackend = std::sync::Arc::new(coord::mem::MemStore::new());
    let counter = Counter::new(&store, "bounds-counter").unwrap();
    let add = {
        let c = counter.clone();
        async move { c.add(1).await }
    };
    send_static(&add);
    assert_eq!(tokio::spawn(add).await.unwrap().unwrap(), 1);

    let run = coord::stm::run(
        store.clone(),
        coord::Isolation::default(),
        |tx| async move {
            let v = tx.get("bounds-stm").await?;
            tx.put("bounds-stm", "1").await?;
            Ok::<_, coord::Error>(v)
        },
    );
    send_static(&run);
    let committed = tokio::spawn(run).await.unwrap().unwrap();
    assert_eq!(committed.value, None);
}

#[tokio::test]
async fn recipe_futures_are_send_static() {
    let store = coord::mem::MemStore::new();
    let session = Session::new(store.clone(), 5).await.unwrap();
    let queue = Queue::new(store.clone(), "bounds-q").unwrap();
    let pq = PriorityQueue::new(store.clone(), "bounds-pq").unwrap();
    let barrier = Barrier::new(store.clone(), "bounds-b").unwrap();
    let double = DoubleBarrier::new(&session, "bounds-db", 1).unwrap();

    let (q1, q2, q3) = (queue.clone(), queue.clone(), queue.clone());
    let enqueue = async move { q1.enqueue("x").await };
    let dequeue = async move { q2.dequeue().await };
    let try_dequeue = async move { q3.try_dequeue().await };
    let (p1, p2) = (pq.clone(), pq.clone());
    let penqueue = async move { p1.enqueue("y", 1).await };
    let pdequeue = async move { p2.dequeue().await };
    let (b1, b2) = (barrier.clone(), barrier.clone());
    let hold = async move { b1.hold().await };
    let wait = async move { b2.wait().await };
    let d = double.clone();
    let enter = async move { d.enter().await };
    send_static(&enqueue);
    send_static(&dequeue);
    send_static(&try_dequeue);
    send_static(&penqueue);
    send_static(&pdequeue);
    send_static(&hold);
    send_static(&wait);
    send_static(&enter);

    // And they run on a multi-threaded runtime.
    tokio::spawn(enqueue).await.unwrap().unwrap();
    assert_eq!(tokio::spawn(dequeue).await.unwrap().unwrap(), b"x");
    tokio::spawn(penqueue).await.unwrap().unwrap();
    assert_eq!(tokio::spawn(pdequeue).await.unwrap().unwrap(), b"y");
    assert_eq!(tokio::spawn(try_dequeue).await.unwrap().unwrap(), None);
    assert!(tokio::spawn(hold).await.unwrap().unwrap());
    barrier.release().await.unwrap();
    tokio::spawn(wait).await.unwrap().unwrap();
    let entry = tokio::spawn(enter).await.unwrap().unwrap();
    let leave = entry.leave();
    send_static(&leave);
    leave.await.unwrap();
    session.close().await.unwrap();
}
