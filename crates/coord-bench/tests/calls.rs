//! Calls per operation, pinned so they cannot creep: on coord-mem and on a real etcd.
//!
//! - An uncontended lock is 1 txn, the first one too (no watch); an unlock is 1 txn.
//! - Queueing: with one key ahead, a waiter opens its name's prefix watch and reads once;
//!   further back, it watches the key just ahead of it, and reads once.
//! - A contended handoff, whatever the length of the queue: the releasing holder makes 1 call
//!   (its unlock txn) and receives no event; the next waiter receives the release and makes no
//!   call when it waited on the prefix watch, else one read txn; every other waiter makes no
//!   call and receives nothing. So a release is delivered as at most 2 (in fact 1) watch
//!   events — pinned with 16, 20 and 64 waiters too.
//! - A waiter that gives up in the middle of the queue costs only the waiter right behind it
//!   (one read, one watch and one read to retarget); a reader behind writers waits as a writer
//!   does.
//! - An election handoff: the follower, second in line, makes no call between the leader's
//!   resign and its win.
//!
//! Beside the counts: the queue stays FIFO and exclusive past 16 waiters, and a waiter whose own
//! key is deleted while it waits fails with [`Error::NotHeld`], also when the delete comes in
//! one revision with the last key ahead of it.
//!
//! Each session runs on its own `coord_core::Counting` backend, so calls are attributed to
//! sessions. etcd comes from `ETCD_ENDPOINTS` or is started by `etcd-harness`; under `CI=true`
//! a missing etcd fails instead of skipping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    Backend, CallCounts, Counting, DeleteRequest, DynBackend, Election, Error, LockGuard, Mutex,
    Prefixed, RangeRequest, RwLock, Session, Txn, TxnOp,
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

    /// An uncounted connection to the test's namespace.
    async fn observer(&self) -> Prefixed<DynBackend> {
        Prefixed::new((self.connect)().await, self.prefix.clone())
    }

    /// Waits until `n` keys exist under `prefix` (seen through an uncounted connection).
    async fn wait_keys(&self, prefix: &str, n: i64) {
        let observer = self.observer().await;
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

/// Exactly `txn` txn and `watch` watches opened, and no other call.
fn txn_and_watch(c: &CallCounts, (txn, watch): (u64, u64), what: &str) {
    assert_eq!(
        (c.txn, c.watch, c.calls()),
        (txn, watch, txn + watch),
        "{what}: expected exactly {txn} txn and {watch} watch, got {c}"
    );
}

/// `txn` txn (and one lease grant) and one watch, plus at most [`CHECKS`] reads: a waiter
/// whose young watch (under 150 ms) might hold an event back checks by reading while its wait
/// runs longer than expected (see coord-core's `wait.rs`).
fn queued_with_checks(c: &CallCounts, txn: u64, what: &str) {
    let checks = c.txn.saturating_sub(txn);
    assert!(
        c.txn >= txn && checks <= CHECKS && c.watch == 1 && c.calls() == c.txn + c.watch + 1,
        "{what}: expected {txn} txn, one watch, a lease grant and at most {CHECKS} checks; got {c}"
    );
}

/// The most checks a young watch costs: at 2, 6, 14, 30, 62 and 126 ms (doubling, while the
/// watch is under 150 ms old), and one more for timer slack.
const CHECKS: u64 = 7;

/// What a waiter further back does when the key just ahead of it goes: it reads once.
const READS: (u64, u64) = (1, 0);
/// Nothing.
const NOTHING: (u64, u64) = (0, 0);

async fn uncontended(env: &Env) {
    let (session, store) = env.session().await;
    let mutex = Mutex::new(&session, "calls-uncontended").unwrap();

    // An uncontended acquire opens no watch, the first one of a session either.
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

/// Who held the lock, in order: `+i` when contender `i` got it, `-i` just before it unlocked.
type Log = Arc<std::sync::Mutex<Vec<String>>>;

fn log_line(log: &Log, line: String) {
    log.lock().unwrap().push(line);
}

/// The log of contenders `0..n` each holding the lock in turn, alone.
fn in_turn(n: usize) -> Vec<String> {
    (0..n)
        .flat_map(|i| [format!("+{i}"), format!("-{i}")])
        .collect()
}

type Acquire = Pin<Box<dyn Future<Output = coord_core::Result<LockGuard>> + Send>>;

/// Locks the mutex `name`.
fn mutex(name: &'static str) -> impl Fn(Session) -> Acquire {
    move |session| Box::pin(async move { Mutex::new(&session, name)?.lock().await })
}

/// Takes the read (or write) lock of the rwlock `name`.
fn rwlock(name: &'static str, write: bool) -> impl Fn(Session) -> Acquire {
    move |session| {
        Box::pin(async move {
            let rw = RwLock::new(&session, name)?;
            if write {
                rw.write().await
            } else {
                rw.read().await
            }
        })
    }
}

/// A session that locks, says so (or how it failed), and unlocks when told.
struct Contender {
    store: Store,
    session: Session,
    acquired: Option<oneshot::Receiver<coord_core::Result<()>>>,
    release: Option<oneshot::Sender<()>>,
    task: JoinHandle<coord_core::Result<()>>,
}

impl Contender {
    async fn start(
        env: &Env,
        id: usize,
        log: &Log,
        lock: &impl Fn(Session) -> Acquire,
    ) -> Contender {
        let (session, store) = env.session().await;
        let acquire = lock(session.clone());
        let log = log.clone();
        let (acq_tx, acq_rx) = oneshot::channel();
        let (rel_tx, rel_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let guard = match acquire.await {
                Ok(guard) => guard,
                Err(e) => {
                    let _ = acq_tx.send(Err(e));
                    return Ok(());
                }
            };
            log_line(&log, format!("+{id}"));
            let _ = acq_tx.send(Ok(()));
            let _ = rel_rx.await;
            log_line(&log, format!("-{id}"));
            guard.unlock().await
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

    /// How its acquire ended.
    async fn outcome(&mut self) -> coord_core::Result<()> {
        let Some(acquired) = self.acquired.take() else {
            return Ok(()); // already seen
        };
        tokio::time::timeout(Duration::from_secs(10), acquired)
            .await
            .expect("acquire ended in time")
            .expect("lock task alive")
    }

    async fn wait_acquired(&mut self) {
        self.outcome().await.expect("lock");
    }

    /// Tells it to unlock; returns how the unlock went.
    async fn release(&mut self) -> coord_core::Result<()> {
        self.release.take().unwrap().send(()).unwrap();
        (&mut self.task).await.unwrap()
    }

    /// Calls made since `before`.
    fn since(&self, before: &CallCounts) -> CallCounts {
        self.store.counts().since(before)
    }
}

/// Starts contenders `ids` on `lock`, one after the other: each once the key of the one before
/// exists under `key_prefix` (where contenders `0..ids.start` have a key each). Returns them
/// once each is quiet.
async fn queue_up(
    env: &Env,
    log: &Log,
    key_prefix: &str,
    ids: std::ops::Range<usize>,
    lock: impl Fn(Session) -> Acquire,
) -> Vec<Contender> {
    let mut out = Vec::new();
    for id in ids {
        out.push(Contender::start(env, id, log, &lock).await);
        env.wait_keys(key_prefix, id as i64 + 1).await;
    }
    for c in &out {
        c.quiet().await;
    }
    out
}

/// Releases `all[h]` and checks the handoff to `all[h + 1]`: the holder makes its unlock txn,
/// the next waiter `next` calls (txn, watch), everyone else nothing; and all sessions together
/// receive at most 2 watch events. `settle` is how long any stray call or event is given to
/// happen.
async fn handoff(all: &mut [Contender], h: usize, next: (u64, u64), settle: Duration) {
    let before: Vec<CallCounts> = all.iter().map(|c| c.store.counts()).collect();
    all[h].release().await.expect("unlock");
    all[h + 1].wait_acquired().await;
    // Give any stray call by the other waiters time to happen (none may).
    tokio::time::sleep(settle).await;
    let spent: Vec<CallCounts> = all.iter().zip(&before).map(|(c, b)| c.since(b)).collect();
    only_txn(&spent[h], 1, &format!("handoff {h}: the releasing holder"));
    txn_and_watch(
        &spent[h + 1],
        next,
        &format!("handoff {h}: the next waiter"),
    );
    for (i, s) in spent.iter().enumerate().skip(h + 2) {
        assert_eq!(s.calls(), 0, "handoff {h}: waiter {i} made calls: {s}");
        assert_eq!(
            s.watch_events, 0,
            "handoff {h}: waiter {i} received events: {s}"
        );
    }
    let events: u64 = spent.iter().map(|s| s.watch_events).sum();
    assert!(
        events <= 2,
        "handoff {h}: {events} watch events for one release (at most 2): {:?}",
        spent.iter().map(|s| s.watch_events).collect::<Vec<_>>()
    );
}

async fn close_all(all: &[Contender]) {
    for c in all {
        c.session.close().await.unwrap();
    }
}

async fn contended_handoff(env: &Env) {
    const NAME: &str = "calls-contended";
    let key_prefix = format!("{NAME}/");
    let log = Log::default();
    let mut holder = Contender::start(env, 0, &log, &mutex(NAME)).await;
    holder.wait_acquired().await;
    let mut all = vec![holder];
    // Three waiters, queued one after the other (FIFO by create revision).
    all.extend(queue_up(env, &log, &key_prefix, 1..4, mutex(NAME)).await);
    // Queued, then quiet: with one key ahead, a waiter opens its prefix watch and reads once;
    // further back, it watches the key just ahead, and reads once (plus the checks of a young
    // watch while its wait runs long).
    for (i, c) in all.iter().enumerate().skip(1) {
        let queued = c.quiet().await;
        queued_with_checks(&queued, 2, &format!("waiter {i} queueing"));
    }
    // Waiter 1 waited on the prefix watch: no call; waiter 2 further back: one read.
    handoff(&mut all, 0, NOTHING, SETTLE).await;
    handoff(&mut all, 1, READS, SETTLE).await;
    for c in &mut all[2..] {
        c.wait_acquired().await;
        c.release().await.expect("unlock");
    }
    assert_eq!(*log.lock().unwrap(), in_turn(4));
    close_all(&all).await;
}

/// How long a handoff gives stray calls and events to happen.
const SETTLE: Duration = Duration::from_millis(200);

/// `waiters` queued behind a holder (more than one read returns when over 16): every release
/// costs the releaser its unlock and the next waiter one read (none for the first, which
/// waited on the prefix watch), nobody else anything, and is delivered as at most 2 watch
/// events; the lock goes to one at a time, in order.
async fn long_queue(env: &Env, name: &'static str, waiters: usize, settle: Duration) {
    let log = Log::default();
    let mut holder = Contender::start(env, 0, &log, &mutex(name)).await;
    holder.wait_acquired().await;
    let mut all = vec![holder];
    let key_prefix = format!("{name}/");
    all.extend(queue_up(env, &log, &key_prefix, 1..waiters + 1, mutex(name)).await);
    for h in 0..waiters {
        handoff(&mut all, h, if h == 0 { NOTHING } else { READS }, settle).await;
    }
    all[waiters].release().await.expect("unlock");
    assert_eq!(*log.lock().unwrap(), in_turn(waiters + 1));
    close_all(&all).await;
}

/// A waiter in the middle of the queue gives up: only the waiter right behind it (which watched
/// its key) notices, reads, watches the key now ahead of it and reads again; the lock still
/// goes to the others in order.
async fn middle_cancelled(env: &Env) {
    const NAME: &str = "calls-cancel";
    let log = Log::default();
    let mut holder = Contender::start(env, 0, &log, &mutex(NAME)).await;
    holder.wait_acquired().await;
    let mut all = vec![holder];
    all.extend(queue_up(env, &log, "calls-cancel/", 1..4, mutex(NAME)).await);
    let before: Vec<CallCounts> = all.iter().map(|c| c.store.counts()).collect();
    // Waiter 1 is just ahead of 2 (which watches it) and two ahead of 3 (which watches 2).
    let gone = all.remove(1);
    gone.task.abort();
    env.wait_keys("calls-cancel/", 3).await;
    tokio::time::sleep(SETTLE).await;
    let c = all[1].since(&before[2]);
    let checks = c.txn.saturating_sub(2);
    assert!(
        c.txn >= 2 && checks <= CHECKS && c.watch == 1 && c.calls() == c.txn + 1,
        "the waiter just behind the one that gave up: a read, a watch, a read, and at most \
         {CHECKS} checks; got {c}"
    );
    txn_and_watch(
        &all[2].since(&before[3]),
        NOTHING,
        "the waiter two behind the one that gave up",
    );
    handoff(&mut all, 0, READS, SETTLE).await;
    handoff(&mut all, 1, READS, SETTLE).await;
    all[2].release().await.expect("unlock");
    assert_eq!(*log.lock().unwrap(), ["+0", "-0", "+2", "-2", "+3", "-3"]);
    close_all(&all).await;
    gone.session.close().await.unwrap();
}

/// A reader behind two writers knows both (the writers' prefix is all it waits for, though its
/// own key is not under it): neither release costs it a call.
async fn reader_behind_writers(env: &Env) {
    const NAME: &str = "calls-rw";
    let log = Log::default();
    let mut holder = Contender::start(env, 0, &log, &rwlock(NAME, true)).await;
    holder.wait_acquired().await;
    let mut all = vec![holder];
    all.extend(queue_up(env, &log, "calls-rw/", 1..2, rwlock(NAME, true)).await);
    all.extend(queue_up(env, &log, "calls-rw/", 2..3, rwlock(NAME, false)).await);
    // Writer 1 waited on the prefix watch; the reader watched writer 1 and reads once.
    handoff(&mut all, 0, NOTHING, SETTLE).await;
    handoff(&mut all, 1, READS, SETTLE).await;
    all[2].release().await.expect("unlock");
    assert_eq!(*log.lock().unwrap(), in_turn(3));
    close_all(&all).await;
}

/// A waiter's own key is deleted behind its back while it waits: its `lock()` fails with
/// [`Error::NotHeld`] (its lease lives), never with a guard. With one key ahead (waiting on the
/// prefix watch) at once, also when its key goes in one transaction with the key ahead;
/// further back when the key just ahead of it goes (it reads then).
async fn own_key_deleted(env: &Env) {
    const NAME: &str = "calls-own";
    let observer = env.observer().await;
    let key = |c: &Contender| Mutex::new(&c.session, NAME).unwrap().key().to_vec();
    let not_held = |r: &coord_core::Result<()>| matches!(r, Err(Error::NotHeld { .. }));
    let log = Log::default();
    let mut holder = Contender::start(env, 0, &log, &mutex(NAME)).await;
    holder.wait_acquired().await;
    let mut all = vec![holder];
    all.extend(queue_up(env, &log, "calls-own/", 1..5, mutex(NAME)).await);

    // Waiter 1 (one key ahead): its key goes, it fails at once.
    observer
        .delete(DeleteRequest::key(key(&all[1])))
        .await
        .unwrap();
    let r = all[1].outcome().await;
    assert!(not_held(&r), "waiter 1, own key deleted: {r:?}");

    // Waiter 3 (further back): its key goes; it fails once waiter 2, just ahead, goes.
    observer
        .delete(DeleteRequest::key(key(&all[3])))
        .await
        .unwrap();
    all[0].release().await.expect("unlock");
    all[2].wait_acquired().await;
    all[2].release().await.expect("unlock");
    let r = all[3].outcome().await;
    assert!(not_held(&r), "waiter 3, own key deleted: {r:?}");
    all[4].wait_acquired().await;

    // A waiter with one key ahead whose key goes in one transaction with that key.
    let mut last = Contender::start(env, 5, &log, &mutex(NAME)).await;
    env.wait_keys("calls-own/", 2).await;
    last.quiet().await;
    let both = Txn::new().and_then([
        TxnOp::Delete(DeleteRequest::key(key(&all[4]))),
        TxnOp::Delete(DeleteRequest::key(key(&last))),
    ]);
    observer.txn(both).await.unwrap();
    let r = last.outcome().await;
    assert!(
        not_held(&r),
        "waiter 5, own key deleted with the key ahead: {r:?}"
    );
    let r = all[4].release().await;
    assert!(
        matches!(r, Err(Error::NotHeld { .. })),
        "holder 4, key deleted: {r:?}"
    );
    assert_eq!(*log.lock().unwrap(), ["+0", "-0", "+2", "-2", "+4", "-4"]);
    close_all(&all).await;
    last.session.close().await.unwrap();
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
    // Quiet: the follower (one key ahead) opens its prefix watch and reads once.
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
    long_queue(&env, "calls-long", 20, SETTLE).await;
    long_queue(&env, "calls-w16", 16, Duration::from_millis(30)).await;
    long_queue(&env, "calls-w64", 64, Duration::from_millis(30)).await;
    middle_cancelled(&env).await;
    reader_behind_writers(&env).await;
    own_key_deleted(&env).await;
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
