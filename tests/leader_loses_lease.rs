//! How to test your own failover code without an etcd: a service that must stop acting as
//! leader as soon as its lease is lost, checked on coord-mem under tokio's paused clock — no
//! sleeps, no flakiness, the whole scenario runs in milliseconds of real time.
//!
//! The fault: the leader's keep-alives stop reaching the store (a network partition). Its lease
//! runs out on the (paused) clock, the store deletes its key, another instance is elected, and
//! the old leader's `lost()` fires so it stops writing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord::mem::MemStore;
use coord::{Election, Error, Session};

/// The user's service: campaigns, then does leader work until its leadership is lost.
struct Service {
    is_leading: AtomicBool,
    leader_ticks: AtomicUsize,
}

impl Service {
    async fn run(self: Arc<Self>, session: Session, name: &'static str) -> Error {
        let election = Election::new(&session, "scheduler").unwrap();
        let leadership = election.campaign(name).await.unwrap();
        self.is_leading.store(true, Ordering::SeqCst);
        let work = async {
            loop {
                self.leader_ticks.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let reason = tokio::select! {
            reason = leadership.lost() => reason,
            _ = work => unreachable!(),
        };
        // The moment leadership is in doubt, stop acting as leader.
        self.is_leading.store(false, Ordering::SeqCst);
        reason
    }
}

fn service() -> Arc<Service> {
    Arc::new(Service {
        is_leading: AtomicBool::new(false),
        leader_ticks: AtomicUsize::new(0),
    })
}

#[tokio::test(start_paused = true)]
async fn leader_stops_when_its_lease_is_lost() {
    let store = MemStore::new();
    let ttl = 5;
    let session_a = Session::new(store.clone(), ttl).await.unwrap();
    let session_b = Session::new(store.clone(), ttl).await.unwrap();

    let a = service();
    let run_a = tokio::spawn(a.clone().run(session_a.clone(), "a"));
    // Let `a` win before `b` campaigns.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(a.is_leading.load(Ordering::SeqCst));
    let b = service();
    let run_b = tokio::spawn(b.clone().run(session_b.clone(), "b"));

    // A long healthy stretch: keep-alives keep `a` leading well past its TTL.
    tokio::time::sleep(Duration::from_secs(3 * ttl as u64)).await;
    assert!(a.is_leading.load(Ordering::SeqCst));
    assert!(!b.is_leading.load(Ordering::SeqCst));

    // Partition `a` from the store: its keep-alives stop arriving.
    store.faults().block_keep_alives(session_a.lease(), true);
    let cut = tokio::time::Instant::now();

    let reason = run_a.await.unwrap();
    assert!(
        matches!(reason, Error::SessionExpired { .. }),
        "a learns why it lost the lead: {reason}"
    );
    assert!(!a.is_leading.load(Ordering::SeqCst));
    // Within one TTL of the cut, on the paused clock.
    assert!(cut.elapsed() <= Duration::from_secs(ttl as u64));
    let ticks_at_loss = a.leader_ticks.load(Ordering::SeqCst);

    // `b` takes over, and `a` does no more leader work.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(b.is_leading.load(Ordering::SeqCst));
    let leader = Election::new(&session_b, "scheduler")
        .unwrap()
        .leader()
        .await
        .unwrap();
    assert_eq!(leader.value, b"b");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.leader_ticks.load(Ordering::SeqCst), ticks_at_loss);
    assert!(session_a.is_lost());

    run_b.abort();
    session_b.close().await.unwrap();
    assert_eq!(store.key_count(), 0, "nothing left behind");
    assert_eq!(store.lease_count(), 0);
}
