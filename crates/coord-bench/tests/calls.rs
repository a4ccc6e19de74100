//! Calls per operation, pinned so they cannot creep: on coord-mem and on a real etcd.
//!
//! - An uncontended lock is 1 txn, the first one too (the name's delete-only watch is opened
//!   on a session's first contention, not before); an unlock is 1 txn.
//! - A contended handoff: the releasing holder makes 1 call (its unlock txn), every waiter but
//!   the next none, and the next waiter exactly 1 read txn — or none when the released key was
//!   the only one ahead of it when it queued (it then knows nobody else can be ahead).
//! - An election handoff: the follower, second in line, makes no call between the leader's
//!   resign and its win.
//!
//! Each session runs on its own `coord_core::Counting` backend, so calls are attributed to
//! sessions. etcd comes from `ETCD_ENDPOINTS` or is started by `etcd-harness`; under `CI=true`
//! a missing etcd fails instead of skipping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    Backend, CallCounts, Counting, DynBackend, Election, Mutex, Prefixed, RangeRequest, Session,
};
use coord_etcd::EtcdConfig;
use coord_mem::MemStore;
use rand::Rng;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type Store = Counting<Prefixed<DynBackend>>;
type Connect = Box<dyn Fn() -> Pin<Box<dyn Future<Output = DynBackend> + Send>> + Send + Sync>;

/// Makes fresh connections, all under one random prefix.
struct Env {
    connect: Connect,
    prefix: Vec<u8>,
}

impl Env {
    fn new(connect: Connect) -> Env {
        let prefix = format!(
            "/coord-calls-test/{:016x}/",
            rand::thread_rng().gen::<u64>()
        );
        Env {
            connect,
            prefix: prefix.into_bytes(),
        }
    }

    async fn store(&self) -> Store {
        Counting::new(Prefixed::new((self.connect)().await, self.prefix.clone()))
    }

    async fn session(&self) -> (Session, Store) {
        let store = self.store().await;
        // A long TTL: no keep-alive falls into a measured window.
        let session = Session::new(store.clone(), 60).await.expect("session");
        (session, store)
    }

    /// Waits until `n` keys exist under `prefix` (seen through an uncounted connection).
    async fn wait_keys(&self, prefix: &str, n: i64) {
        let observer = Prefixed::new((self.connect)().await, self.prefix.clone());
        for _ in 0..2000 {
            let count = observer
                .range(RangeRequest::prefix(prefix).with_count_only())
                .await
                .expect("range")
                .count;
            if count == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{n} keys never appeared under {prefix}");
    }
}

/// Exactly `n` txn and no other call.
fn only_txn(c: &CallCounts, n: u64, what: &str) {
    assert_eq!(
        (c.txn, c.calls()),
        (n, n),
        "{what}: expected exactly {n} txn and nothing else, got {c}"
    );
}

async fn uncontended(env: &Env) {
    let (session, store) = env.session().await;
    let mutex = Mutex::new(&session, "calls-uncontended").unwrap();

    // An uncontended acquire opens no watch: the name's watch is opened on first contention.
    let c0 = store.counts();
    let guard = mutex.lock().await.unwrap();
    only_txn(&store.counts().since(&c0), 1, "first lock");
    let c1 = store.counts();
    guard.unlock().await.unwrap();
    only_txn(&store.counts().since(&c1), 1, "first unlock");

    for i in 0..5 {
        let c = store.counts();
        let guard = mutex.lock().await.unwrap();
        only_txn(&store.counts().since(&c), 1, &format!("lock #{}", i + 2));
        let c = store.counts();
        guard.unlock().await.unwrap();
        only_txn(&store.counts().since(&c), 1, &format!("unlock #{}", i + 2));
    }
    session.close().await.unwrap();
}

/// A session that locks, says so, and unlocks when told.
struct Contender {
    store: Store,
    session: Session,
    acquired: Option<oneshot::Receiver<()>>,
    release: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Contender {
    async fn start(env: &Env, name: &'static str) -> Contender {
        let (session, store) = env.session().await;
        let mutex = Mutex::new(&session, name).unwrap();
        let (acq_tx, acq_rx) = oneshot::channel();
        let (rel_tx, rel_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let guard = mutex.lock().await.expect("lock");
            let _ = acq_tx.send(());
            let _ = rel_rx.await;
            guard.unlock().await.expect("unlock");
        });
        Contender {
            store,
            session,
            acquired: Some(acq_rx),
            release: Some(rel_tx),
            task,
        }
    }

    /// Waits until this contender has made no call for 100 ms; returns its counts since its
    /// session began.
    async fn quiet(&self) -> CallCounts {
        let mut last = self.store.counts();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.store.counts();
            if now.calls() == last.calls() {
                return now;
            }
            last = now;
        }
    }

    async fn wait_acquired(&mut self) {
        let Some(acquired) = self.acquired.take() else {
            return; // already seen
        };
        tokio::time::timeout(Duration::from_secs(10), acquired)
            .await
            .expect("acquired in time")
            .expect("lock task alive");
    }

    async fn release(&mut self) {
        self.release.take().unwrap().send(()).unwrap();
        (&mut self.task).await.unwrap();
    }
}

async fn contended_handoff(env: &Env) {
    const NAME: &str = "calls-contended";
    let key_prefix = format!("{NAME}/");
    let mut holder = Contender::start(env, NAME).await;
    holder.wait_acquired().await;
    let mut all = vec![holder];
    // Three waiters, queued one after the other (FIFO by create revision).
    for n in 2..=4 {
        all.push(Contender::start(env, NAME).await);
        env.wait_keys(&key_prefix, n).await;
    }
    // Queued, then quiet: a waiter's first contention opens the name's watch and reads once.
    for (i, c) in all.iter().enumerate().skip(1) {
        let queued = c.quiet().await;
        assert_eq!(
            (queued.txn, queued.watch, queued.calls()),
            (2, 1, 4),
            "waiter {i} queueing: lease grant, enqueue txn, watch, one read; got {queued}"
        );
    }
    // Two handoffs: holder → waiter 1 (the holder was the only key ahead of waiter 1 when it
    // queued: no read), waiter 1 → waiter 2 (the holder was ahead of waiter 2 too: one read).
    for (h, next_reads) in [(0, 0), (1, 1)] {
        let before: Vec<CallCounts> = all.iter().map(|c| c.store.counts()).collect();
        all[h].release().await;
        all[h + 1].wait_acquired().await;
        // Give any stray call by the other waiters time to happen (none may).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let spent: Vec<CallCounts> = all
            .iter()
            .zip(&before)
            .map(|(c, b)| c.store.counts().since(b))
            .collect();
        only_txn(&spent[h], 1, &format!("handoff {h}: the releasing holder"));
        only_txn(
            &spent[h + 1],
            next_reads,
            &format!("handoff {h}: the next waiter"),
        );
        for (i, s) in spent.iter().enumerate().skip(h + 2) {
            assert_eq!(s.calls(), 0, "handoff {h}: waiter {i} made calls: {s}");
        }
    }
    for mut c in all.drain(2..) {
        c.wait_acquired().await;
        c.release().await;
    }
    for c in &all {
        c.session.close().await.unwrap();
    }
}

async fn election_handoff(env: &Env) {
    let (s1, _c1) = env.session().await;
    let (s2, c2) = env.session().await;
    let leader = Election::new(&s1, "calls-election")
        .unwrap()
        .campaign("a")
        .await
        .unwrap();
    let e2 = Election::new(&s2, "calls-election").unwrap();
    let follower = tokio::spawn(async move { e2.campaign("b").await });
    env.wait_keys("calls-election/", 2).await;
    // Quiet: the follower's first contention opens the watch and reads once.
    let mut last = c2.counts().calls();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if c2.counts().calls() == last {
            break;
        }
        last = c2.counts().calls();
    }
    let before = c2.counts();
    leader.resign().await.unwrap();
    let won = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("elected in time")
        .unwrap()
        .unwrap();
    only_txn(
        &c2.counts().since(&before),
        0,
        "the follower, resign → elected",
    );
    won.resign().await.unwrap();
    s1.close().await.unwrap();
    s2.close().await.unwrap();
}

async fn all(env: Env) {
    uncontended(&env).await;
    contended_handoff(&env).await;
    election_handoff(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_per_operation_on_mem() {
    let store = MemStore::new();
    let env = Env::new(Box::new(move || {
        let store = store.clone();
        Box::pin(async move { Arc::new(store) as DynBackend })
    }));
    tokio::time::timeout(Duration::from_secs(60), all(env))
        .await
        .expect("finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_per_operation_on_etcd() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    let endpoints = etcd.endpoints();
    let env = Env::new(Box::new(move || {
        let endpoints = endpoints.clone();
        Box::pin(async move {
            Arc::new(
                EtcdConfig::new(endpoints)
                    .connect()
                    .await
                    .expect("connect to etcd"),
            ) as DynBackend
        })
    }));
    tokio::time::timeout(Duration::from_secs(120), all(env))
        .await
        .expect("finished in time");
    drop(etcd);
}
