//! Guards, sessions and acquire futures are `Send + 'static` (and guards `Sync`), so they can be
//! spawned and held across awaits in any task. A compile-time check: the test fails to build if
//! a bound is lost.

use coord::{
    Election, LeaderStream, Leadership, LockGuard, Mutex, RwLock, Semaphore, SemaphorePermit,
    Session,
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
