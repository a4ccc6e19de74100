//! The benchmark scenarios. Each returns one [`BenchResult`].
//!
//! Every scenario works under the run's random prefix (a [`Prefixed`] backend) and counts the
//! calls each session makes (a [`Counting`] backend per session), so results state calls per
//! operation on etcd as well as on coord-mem.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use coord_core::{
    Backend, CallCounts, Compare, CompareOp, Counting, DeleteRequest, DynBackend, Election,
    KeyRange, Mutex, Prefixed, PutRequest, RangeRequest, RwLock, Session, SortOrder, SortTarget,
    Txn, TxnOp, WatchRequest,
};
use coord_etcd::EtcdConfig;
use coord_mem::MemStore;
use coord_postgres::PostgresBackend;
use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::crash::Crashable;
use crate::stats::{pct_ms, BenchResult};
use crate::timeline::{Mark, Timeline};

/// Errors of a benchmark run.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;
/// Result of a benchmark step.
pub type BenchResultOr<T> = std::result::Result<T, BenchError>;

/// The backend each session of a scenario runs on: the store, under the run's prefix, counted.
pub type Store = Counting<Prefixed<DynBackend>>;

/// Where the benchmark runs.
#[derive(Clone, Debug)]
pub enum Target {
    /// One in-memory store for the whole run.
    Mem(MemStore),
    /// etcd at these endpoints; every session gets its own connection, as in the anchors.
    Etcd(Vec<String>),
    /// PostgreSQL: one backend (a pool, one LISTEN connection, one reaper) shared by every
    /// session of the run, as a service shares one in its process; and the URL, for the
    /// scenarios that talk to the server directly.
    Postgres(PostgresBackend, String),
}

/// Every scenario, in the order `all` runs them. `mutex_contended` and `rwmutex_mixed` get the
/// worker count appended (`_w8`), and so does `stm_transfers`. The `mem_` ones run on coord-mem only.
pub const SCENARIOS: &[&str] = &[
    "mutex_uncontended_lock_unlock",
    "mutex_contended",
    "rwmutex_mixed",
    "mutex_handoff",
    "election_resign_handoff",
    "election_crash_failover",
    "watch_floor",
    "round_trips",
    "mem_calls_per_release_w1000",
    "mem_calls_per_release_w10000",
    "mem_memory_cycles",
    "pg_commit_rate",
    "pg_bounded",
    "idle_sessions",
    "election_candidates",
    "semaphore",
    "metrics_overhead",
    "stm_transfers",
    "queue_throughput",
    "barrier_release",
    "mutex_write_floor",
];

/// Scenarios `all` leaves out (each holds a thousand sessions for many seconds): they run
/// when named.
const ONLY_BY_NAME: &[&str] = &["idle_sessions", "election_candidates"];

/// The scenarios that report live heap bytes (`coord_bench::alloc`): the binary counts
/// allocations only when one of them is asked for (by name or alias; `all` runs
/// `mem_memory_cycles` too).
pub const HEAP_SCENARIOS: &[&str] = &["mem_memory_cycles", "idle_sessions", "election_candidates"];

/// Maps a name given on the command line (a full name, one with a `_wN` suffix, or the Go
/// anchor's short name) to a scenario of [`SCENARIOS`].
pub fn canonical(name: &str) -> Option<&'static str> {
    let short = match name {
        "uncontended" => "mutex_uncontended_lock_unlock",
        "contended" => "mutex_contended",
        "rwlock" => "rwmutex_mixed",
        "handoff" => "mutex_handoff",
        "failover" => "election_resign_handoff",
        "crash" => "election_crash_failover",
        "floor" => "watch_floor",
        "rtt" => "round_trips",
        "calls" => "mem_calls_per_release_w1000",
        "memory" => "mem_memory_cycles",
        // semaphore_w{W}_p3: W comes from --workers, the permits are fixed.
        other if other.starts_with("semaphore_w") => "semaphore",
        "metrics" => "metrics_overhead",
        "stm" => "stm_transfers",
        "queue" => "queue_throughput",
        "barrier" => "barrier_release",
        other => other,
    };
    let base = match short.rsplit_once("_w") {
        Some((base, n))
            if n.chars().all(|c| c.is_ascii_digit())
                && matches!(
                    base,
                    "mutex_contended"
                        | "mutex_write_floor"
                        | "rwmutex_mixed"
                        | "stm_transfers"
                        | "barrier_release"
                ) =>
        {
            base
        }
        _ => short,
    };
    SCENARIOS.iter().copied().find(|s| *s == base)
}

/// A benchmark run: where, how much, and where to dump raw latencies.
#[derive(Clone, Debug)]
pub struct Bench {
    /// The store.
    pub target: Target,
    /// The run's random key prefix (every key lives under it).
    pub prefix: String,
    /// Iterations (as the anchors' `-iters`).
    pub iters: usize,
    /// Contending sessions (as the anchors' `-workers`).
    pub workers: usize,
    /// Session TTL in seconds.
    pub ttl: i64,
    /// The crashing leader's lease TTL in `election_crash_failover`.
    pub crash_ttl: i64,
    /// Rounds of `election_crash_failover` (each lasts about `crash_ttl`).
    pub crash_rounds: usize,
    /// Releases measured in `mem_calls_per_release_w1000`.
    pub releases: usize,
    /// Cycles of `mem_memory_cycles`.
    pub memory_cycles: u64,
    /// If set, raw latencies (ms, one per line) go to `DIR/<scenario>.txt`.
    pub dump: Option<PathBuf>,
    /// Sessions of `idle_sessions`, candidates of `election_candidates`.
    pub sessions: usize,
    /// Observers of `election_candidates`.
    pub observers: usize,
    /// How long `idle_sessions` measures.
    pub idle: Duration,
}

impl Bench {
    /// A fresh connection to the store (on coord-mem: the same store).
    pub async fn raw(&self) -> BenchResultOr<DynBackend> {
        Ok(match &self.target {
            Target::Mem(store) => Arc::new(store.clone()),
            Target::Etcd(endpoints) => {
                Arc::new(EtcdConfig::new(endpoints.clone()).connect().await?)
            }
            Target::Postgres(backend, _) => Arc::new(backend.clone()),
        })
    }

    /// A fresh connection under the run's prefix, counted.
    pub async fn store(&self) -> BenchResultOr<Store> {
        Ok(Counting::new(Prefixed::new(
            self.raw().await?,
            self.prefix.as_bytes().to_vec(),
        )))
    }

    /// A session on a fresh connection, and the counting handle of its backend.
    pub async fn session(&self, ttl: i64) -> BenchResultOr<(Session, Store)> {
        let store = self.store().await?;
        let session = Session::new(store.clone(), ttl).await?;
        Ok((session, store))
    }

    fn is_mem(&self) -> bool {
        matches!(self.target, Target::Mem(_))
    }

    pub(crate) fn postgres(&self) -> Option<&PostgresBackend> {
        match &self.target {
            Target::Postgres(backend, _) => Some(backend),
            _ => None,
        }
    }

    /// The PostgreSQL URL, with its password (the backend's config shows it redacted).
    pub(crate) fn postgres_url(&self) -> Option<&str> {
        match &self.target {
            Target::Postgres(_, url) => Some(url),
            _ => None,
        }
    }

    /// Statements that `txn` calls sent to PostgreSQL so far, and prepares of any call (0
    /// elsewhere). A mutex's lock and unlock are `txn` calls only; the session's keep-alives,
    /// which run beside them, are other calls, so they are not in the first figure.
    fn txn_statements(&self) -> (u64, u64) {
        self.postgres().map_or((0, 0), |b| {
            (b.statements(coord_core::CallKind::Txn), b.prepares())
        })
    }

    /// What a contended worker does while it holds the lock. On coord-mem every call completes
    /// at once, so on its one thread a worker would lock and unlock again and again (until
    /// tokio's budget makes it yield) before the others even queue: it yields once while
    /// holding, so that they do and the lock really changes hands. On etcd the calls wait for
    /// the network anyway, and the holder does nothing, as in Go's anchor.
    pub(crate) async fn inside_critical_section(&self) {
        if self.is_mem() {
            tokio::task::yield_now().await;
        }
    }

    /// The scenarios `all` means on this target.
    pub fn all(&self) -> Vec<&'static str> {
        SCENARIOS
            .iter()
            .copied()
            .filter(|s| self.is_mem() || !s.starts_with("mem_"))
            .filter(|s| self.postgres().is_some() || !s.starts_with("pg_"))
            .filter(|s| !ONLY_BY_NAME.contains(s))
            .collect()
    }

    /// Runs one scenario (a name of [`SCENARIOS`]).
    pub async fn run(&self, scenario: &str) -> BenchResultOr<BenchResult> {
        match scenario {
            "mutex_uncontended_lock_unlock" => self.uncontended().await,
            "mutex_contended" => self.contended().await,
            "rwmutex_mixed" => self.rwmutex_mixed().await,
            "mutex_handoff" => self.handoff().await,
            "election_resign_handoff" => self.election_resign_handoff().await,
            "election_crash_failover" => self.election_crash_failover().await,
            "watch_floor" => self.watch_floor().await,
            "round_trips" => self.round_trips().await,
            "mem_calls_per_release_w1000" => self.calls_per_release(1_000).await,
            "mem_calls_per_release_w10000" => self.calls_per_release(10_000).await,
            "mem_memory_cycles" => self.memory_cycles().await,
            "pg_commit_rate" => self.pg_commit_rate().await,
            "pg_bounded" => self.pg_bounded().await,
            "idle_sessions" => self.idle_sessions().await,
            "election_candidates" => self.election_candidates().await,
            "semaphore" => self.semaphore().await,
            "metrics_overhead" => self.metrics_overhead().await,
            "stm_transfers" => self.stm_transfers().await,
            "queue_throughput" => self.queue_throughput().await,
            "barrier_release" => self.barrier_release().await,
            "mutex_write_floor" => self.write_floor().await,
            other => Err(format!("unknown scenario {other:?}").into()),
        }
    }

    pub(crate) fn dump(&self, scenario: &str, lat: &[Duration]) -> BenchResultOr<()> {
        if let Some(dir) = &self.dump {
            std::fs::create_dir_all(dir)?;
            let text: String = lat
                .iter()
                .map(|d| format!("{:.4}\n", d.as_secs_f64() * 1000.0))
                .collect();
            std::fs::write(dir.join(format!("{scenario}.txt")), text)?;
        }
        Ok(())
    }

    /// One session, lock + unlock in a loop; latency = lock + unlock.
    ///
    /// On PostgreSQL it also counts the statements (round trips) the lock + unlock calls
    /// send, after the first cycle (which prepares the statements on the pool's connection):
    /// only those of `txn` calls, the calls a lock and an unlock make, so the session's
    /// keep-alives beside them are not counted; a prepare that a later cycle still sends (a
    /// connection the pool opened for a keep-alive, first used by a lock) is reported apart.
    async fn uncontended(&self) -> BenchResultOr<BenchResult> {
        let name = "mutex_uncontended_lock_unlock";
        let (session, store) = self.session(self.ttl).await?;
        let mutex = Mutex::new(&session, "uncontended")?;
        let mut lat = Vec::with_capacity(self.iters);
        let before = store.counts();
        let mut first = CallCounts::default();
        let mut statements_after_first = (0, 0);
        let start = Instant::now();
        for i in 0..self.iters {
            let t = Instant::now();
            mutex.lock().await?.unlock().await?;
            lat.push(t.elapsed());
            if i == 0 {
                first = store.counts().since(&before);
                statements_after_first = self.txn_statements();
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let after_first = store.counts().since(&before).since(&first);
        let (statements, prepares) = self.txn_statements();
        let statements = statements - statements_after_first.0;
        let prepares = prepares - statements_after_first.1;
        session.close().await?;
        self.dump(name, &lat)?;
        let steady_ops = self.iters.saturating_sub(1).max(1) as f64;
        let pg = self.postgres().is_some();
        Ok(
            BenchResult::new(name, self.iters as u64, seconds, &lat).with_extra(json!({
                "first_lock_unlock_calls": first.to_string(),
                "calls_per_lock_unlock": after_first.kv_calls() as f64 / steady_ops,
                "txn_per_lock_unlock": after_first.txn as f64 / steady_ops,
                "calls_after_first": after_first.to_string(),
                // PostgreSQL only: statements (round trips) the lock + unlock calls sent per
                // cycle after the first, and the prepares of the same stretch (any call's).
                "statements_per_lock_unlock": pg.then(|| statements as f64 / steady_ops),
                "prepares_after_first": pg.then_some(prepares),
            })),
        )
    }

    /// W sessions, each lock → exclusion check → unlock; latency = acquire wait.
    async fn contended(&self) -> BenchResultOr<BenchResult> {
        let name = format!("mutex_contended_w{}", self.workers);
        let per = self.iters / self.workers.max(1);
        let holders = Arc::new(AtomicI64::new(0));
        let violations = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..self.workers {
            let bench = self.clone();
            let (holders, violations) = (holders.clone(), violations.clone());
            tasks.push(tokio::spawn(async move {
                let (session, store) = bench.session(bench.ttl).await?;
                let mutex = Mutex::new(&session, "contended")?;
                let before = store.counts();
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    let guard = mutex.lock().await?;
                    lat.push(t.elapsed());
                    if holders.fetch_add(1, Ordering::SeqCst) != 0 {
                        violations.fetch_add(1, Ordering::SeqCst);
                    }
                    bench.inside_critical_section().await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    guard.unlock().await?;
                }
                let spent = store.counts().since(&before);
                session.close().await?;
                BenchResultOr::Ok((lat, spent))
            }));
        }
        let mut lat = Vec::new();
        let mut calls = CallCounts::default();
        for t in tasks {
            let (l, c) = t.await??;
            lat.extend(l);
            calls = calls.plus(&c);
        }
        let seconds = start.elapsed().as_secs_f64();
        let ops = (per * self.workers) as u64;
        self.dump(&name, &lat)?;
        Ok(
            BenchResult::new(name, ops, seconds, &lat).with_extra(json!({
                "violations": violations.load(Ordering::SeqCst),
                "calls": per_op(&calls, ops),
            })),
        )
    }

    /// W sessions on one RwLock, one write in four (as the Go anchor); latency = acquire wait.
    async fn rwmutex_mixed(&self) -> BenchResultOr<BenchResult> {
        let name = format!("rwmutex_mixed_w{}", self.workers);
        let per = self.iters / self.workers.max(1);
        // Readers inside, and writers inside, to check exclusion.
        let state = Arc::new((AtomicI64::new(0), AtomicI64::new(0)));
        let violations = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..self.workers {
            let bench = self.clone();
            let (state, violations) = (state.clone(), violations.clone());
            tasks.push(tokio::spawn(async move {
                let (session, store) = bench.session(bench.ttl).await?;
                let lock = RwLock::new(&session, "rw")?;
                let before = store.counts();
                let mut lat = Vec::with_capacity(per);
                let (readers, writers) = (&state.0, &state.1);
                for i in 0..per {
                    let t = Instant::now();
                    if (i + w) % 4 == 0 {
                        let guard = lock.write().await?;
                        lat.push(t.elapsed());
                        if writers.fetch_add(1, Ordering::SeqCst) != 0
                            || readers.load(Ordering::SeqCst) != 0
                        {
                            violations.fetch_add(1, Ordering::SeqCst);
                        }
                        bench.inside_critical_section().await;
                        writers.fetch_sub(1, Ordering::SeqCst);
                        guard.unlock().await?;
                    } else {
                        let guard = lock.read().await?;
                        lat.push(t.elapsed());
                        readers.fetch_add(1, Ordering::SeqCst);
                        if writers.load(Ordering::SeqCst) != 0 {
                            violations.fetch_add(1, Ordering::SeqCst);
                        }
                        bench.inside_critical_section().await;
                        readers.fetch_sub(1, Ordering::SeqCst);
                        guard.unlock().await?;
                    }
                }
                let spent = store.counts().since(&before);
                session.close().await?;
                BenchResultOr::Ok((lat, spent))
            }));
        }
        let mut lat = Vec::new();
        let mut calls = CallCounts::default();
        for t in tasks {
            let (l, c) = t.await??;
            lat.extend(l);
            calls = calls.plus(&c);
        }
        let seconds = start.elapsed().as_secs_f64();
        let ops = (per * self.workers) as u64;
        self.dump(&name, &lat)?;
        Ok(
            BenchResult::new(name, ops, seconds, &lat).with_extra(json!({
                "violations": violations.load(Ordering::SeqCst),
                "calls": per_op(&calls, ops),
            })),
        )
    }

    /// A holds, B waits (50 ms, so B surely waits), A unlocks: time until B holds. Both
    /// sessions' backends are timestamped ([`Timeline`]) to split each handoff into its parts.
    async fn handoff(&self) -> BenchResultOr<BenchResult> {
        let name = "mutex_handoff";
        let timed = |raw: DynBackend| {
            let timeline = Timeline::new(Prefixed::new(raw, self.prefix.as_bytes().to_vec()));
            (timeline.clone(), Counting::new(timeline))
        };
        let (t1, c1) = timed(self.raw().await?);
        let (t2, c2) = timed(self.raw().await?);
        let s1 = Session::new(c1.clone(), self.ttl).await?;
        let s2 = Session::new(c2.clone(), self.ttl).await?;
        let rounds = self.iters / 10 + 1;
        let mut lat = Vec::with_capacity(rounds);
        let mut releaser = CallCounts::default();
        let mut waiter = CallCounts::default();
        let mut parts: [Vec<Duration>; 5] = Default::default();
        for _ in 0..rounds {
            let m1 = Mutex::new(&s1, "handoff")?;
            let m2 = Mutex::new(&s2, "handoff")?;
            let g1 = m1.lock().await?;
            let (tx, rx) = oneshot::channel();
            let b = tokio::spawn(async move {
                let g = m2.lock().await;
                let _ = tx.send(Instant::now());
                g
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (a0, b0) = (c1.counts(), c2.counts());
            t1.take();
            t2.take();
            let t = Instant::now();
            g1.unlock().await?;
            let got = rx.await?;
            lat.push(got.duration_since(t));
            releaser = releaser.plus(&c1.counts().since(&a0));
            waiter = waiter.plus(&c2.counts().since(&b0));
            if let Some(split) = split_handoff(t, &t1.take(), &t2.take(), got) {
                for (v, d) in parts.iter_mut().zip(split) {
                    v.push(d);
                }
            }
            b.await??.unlock().await?;
        }
        s1.close().await?;
        s2.close().await?;
        self.dump(name, &lat)?;
        let p = |i: usize| pct_ms(&parts[i], 0.5);
        Ok(
            BenchResult::new(name, rounds as u64, 0.0, &lat).with_extra(json!({
                "releaser_calls_per_handoff": releaser.calls() as f64 / rounds as f64,
                "waiter_calls_per_handoff": waiter.calls() as f64 / rounds as f64,
                "waiter_watch_events_per_handoff": waiter.watch_events as f64 / rounds as f64,
                "breakdown_p50_ms": {
                    "unlock_txn": p(0),
                    "unlock_call_to_event_at_waiter": p(1),
                    "event_to_waiter_read_sent": p(2),
                    "waiter_read_txn": p(3),
                    "event_or_read_to_lock_returned": p(4),
                },
            })),
        )
    }

    /// The leader resigns; time until the follower's campaign returns. New sessions each round,
    /// as the Go anchor.
    async fn election_resign_handoff(&self) -> BenchResultOr<BenchResult> {
        let name = "election_resign_handoff";
        let (c1, c2) = (self.store().await?, self.store().await?);
        let rounds = self.iters / 10 + 1;
        let mut lat = Vec::with_capacity(rounds);
        let mut waiter = CallCounts::default();
        for _ in 0..rounds {
            let s1 = Session::new(c1.clone(), self.ttl).await?;
            let s2 = Session::new(c2.clone(), self.ttl).await?;
            let e1 = Election::new(&s1, "election")?;
            let e2 = Election::new(&s2, "election")?;
            let leader = e1.campaign("a").await?;
            let (tx, rx) = oneshot::channel();
            let b = tokio::spawn(async move {
                let l = e2.campaign("b").await;
                let _ = tx.send(Instant::now());
                l
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let b0 = c2.counts();
            let t = Instant::now();
            leader.resign().await?;
            let won = rx.await?;
            lat.push(won.duration_since(t));
            waiter = waiter.plus(&c2.counts().since(&b0));
            b.await??.resign().await?;
            s1.close().await?;
            s2.close().await?;
        }
        self.dump(name, &lat)?;
        Ok(
            BenchResult::new(name, rounds as u64, 0.0, &lat).with_extra(json!({
                "follower_calls_per_handoff": waiter.calls() as f64 / rounds as f64,
            })),
        )
    }

    /// The leader's process "crashes" (its backend fails every call: no more keep-alives, no
    /// revoke); time until the follower's campaign returns, from the crash and from the
    /// leader's last lease renewal (after which the lease lives `crash_ttl` more seconds).
    async fn election_crash_failover(&self) -> BenchResultOr<BenchResult> {
        let name = "election_crash_failover";
        let (c1, c2) = (self.store().await?, self.store().await?);
        let mut from_crash = Vec::new();
        let mut from_renewal = Vec::new();
        let mut granted = 0;
        for _ in 0..self.crash_rounds {
            let crashable = Crashable::new(c1.clone());
            let s1 = Session::new(crashable.clone(), self.crash_ttl).await?;
            granted = s1.ttl();
            let s2 = Session::new(c2.clone(), self.ttl).await?;
            let leader = Election::new(&s1, "crash")?.campaign("a").await?;
            let e2 = Election::new(&s2, "crash")?;
            let (tx, rx) = oneshot::channel();
            let b = tokio::spawn(async move {
                let l = e2.campaign("b").await;
                let _ = tx.send(Instant::now());
                l
            });
            // At least 50 ms (the follower surely waits), then a random point of the
            // keep-alive cycle.
            let phase = rand::thread_rng().gen_range(0..(granted.max(1) as u64 * 1000));
            tokio::time::sleep(Duration::from_millis(50 + phase)).await;
            let t = Instant::now();
            crashable.crash();
            let won = rx.await?;
            let renewed = crashable.last_renewal_sent().unwrap_or(t);
            from_crash.push(won.duration_since(t));
            from_renewal.push(won.duration_since(renewed));
            b.await??.resign().await?;
            s2.close().await?;
            // The crashed side: its guard and session are dropped; their background release
            // fails (crashed), the lease is gone anyway.
            drop(leader);
            drop(s1);
        }
        let max_from_renewal = from_renewal.iter().max().copied().unwrap_or_default();
        self.dump(name, &from_crash)?;
        Ok(
            BenchResult::new(name, from_crash.len() as u64, 0.0, &from_crash).with_extra(json!({
                "ttl_s": granted,
                "latency": "crash -> follower elected",
                "from_last_renewal_p50_ms": pct_ms(&from_renewal, 0.5),
                "from_last_renewal_max_ms": max_from_renewal.as_secs_f64() * 1000.0,
                "from_crash_max_ms": from_crash.iter().max().copied().unwrap_or_default().as_secs_f64() * 1000.0,
            })),
        )
    }

    /// The physical floor of a handoff: a raw delete, and the time until a long-lived watch
    /// (on another connection, read by its own task) delivers it. Measured as `mutex_handoff`
    /// runs: iters/10+1 rounds, each after 50 ms idle (an idle client and etcd wake up slower:
    /// that is part of the handoff's floor); and back to back, `iters` times (in `extra`).
    async fn watch_floor(&self) -> BenchResultOr<BenchResult> {
        let name = "watch_floor";
        let writer = self.store().await?;
        let watcher = self.store().await?;
        let mut stream = watcher
            .watch(WatchRequest::new(KeyRange::prefix("floor/")).with_no_put())
            .await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let drain = tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let at = Instant::now();
                if tx.send(item.map(|ev| (ev.kv.key, at))).is_err() {
                    break;
                }
            }
        });
        let mut lat = Vec::new();
        for i in 0..self.iters / 10 + 1 {
            lat.push(floor_once(&writer, &mut rx, i, Duration::from_millis(50)).await?);
        }
        let mut warm = Vec::new();
        for i in 0..self.iters {
            warm.push(floor_once(&writer, &mut rx, i, Duration::ZERO).await?);
        }
        drain.abort();
        self.dump(name, &lat)?;
        Ok(BenchResult::new(name, lat.len() as u64, 0.0, &lat).with_extra(json!({
            "what": "delete call -> delete event on a long-lived watch of another connection, after 50 ms idle as in mutex_handoff",
            "back_to_back_p50_ms": pct_ms(&warm, 0.5),
            "back_to_back_p99_ms": pct_ms(&warm, 0.99),
            "back_to_back_ops": warm.len(),
        })))
    }

    /// Round trips of the three request shapes a handoff is made of, one connection, each
    /// `iters` times: a read txn (the waiter's check: own key + the key ahead), a guarded delete
    /// txn (unlock) and a create txn (the lock's put + range). p50/p99 = the read txn.
    async fn round_trips(&self) -> BenchResultOr<BenchResult> {
        let name = "round_trips";
        let store = self.store().await?;
        let (mut read, mut put, mut del, mut plain, mut watch) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..self.iters {
            let key = format!("rtt/{}", i % 8);
            let t = Instant::now();
            let r = store
                .txn(
                    Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([
                            TxnOp::Put(PutRequest::new(key.clone(), "")),
                            TxnOp::Range(
                                RangeRequest::prefix("rtt/")
                                    .with_sort(SortTarget::Create, SortOrder::Descend)
                                    .with_limit(2)
                                    .with_keys_only(),
                            ),
                        ]),
                )
                .await?;
            put.push(t.elapsed());
            let t = Instant::now();
            store
                .txn(
                    Txn::new().and_then([
                        TxnOp::Range(RangeRequest::key(key.clone()).with_keys_only()),
                        TxnOp::Range(
                            RangeRequest::prefix("rtt/")
                                .with_sort(SortTarget::Create, SortOrder::Descend)
                                .with_limit(1)
                                .with_max_create_revision(r.header_revision - 1)
                                .with_keys_only(),
                        ),
                    ]),
                )
                .await?;
            read.push(t.elapsed());
            let t = Instant::now();
            store
                .txn(
                    Txn::new()
                        .when([Compare::create_revision(
                            key.clone(),
                            CompareOp::Equal,
                            r.header_revision,
                        )])
                        .and_then([TxnOp::Delete(DeleteRequest::key(key.clone()))]),
                )
                .await?;
            del.push(t.elapsed());
            // The same delete as a plain delete request (what Go's Mutex.Unlock sends).
            store.put(PutRequest::new(key.clone(), "")).await?;
            let t = Instant::now();
            store.delete(DeleteRequest::key(key.clone())).await?;
            plain.push(t.elapsed());
            // A waiter's watch of one key, registered from now (returns once etcd confirmed
            // it), then cancelled.
            let t = Instant::now();
            let w = store
                .watch(WatchRequest::new(KeyRange::key(key.clone())).with_no_put())
                .await?;
            watch.push(t.elapsed());
            drop(w);
        }
        Ok(
            BenchResult::new(name, read.len() as u64, 0.0, &read).with_extra(json!({
                "read_txn_p50_ms": pct_ms(&read, 0.5),
                "create_txn_p50_ms": pct_ms(&put, 0.5),
                "delete_txn_p50_ms": pct_ms(&del, 0.5),
                "plain_delete_p50_ms": pct_ms(&plain, 0.5),
                "watch_open_p50_ms": pct_ms(&watch, 0.5),
                "read_txn_p99_ms": pct_ms(&read, 0.99),
                "create_txn_p99_ms": pct_ms(&put, 0.99),
                "delete_txn_p99_ms": pct_ms(&del, 0.99),
            })),
        )
    }

    /// `waiters` sessions (1,000 or 10,000) wait on one mutex; per release, the calls made
    /// and the watch events received between the holder's unlock and the next holder's
    /// acquisition, per session.
    async fn calls_per_release(&self, waiters: usize) -> BenchResultOr<BenchResult> {
        let name = format!("mem_calls_per_release_w{waiters}");
        let Target::Mem(mem) = &self.target else {
            return Err(format!("{name} runs on --backend mem only").into());
        };
        // A long TTL: no keep-alive falls into the measured windows.
        let ttl = 3600;
        let (acq_tx, mut acq_rx) = mpsc::unbounded_channel::<(usize, Instant)>();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<usize>();
        let mut release: Vec<Option<oneshot::Sender<()>>> = Vec::new();
        let mut counters = Vec::new();
        let mut sessions = Vec::new();
        let raw = self.store().await?;
        for idx in 0..=waiters {
            let (session, store) = self.session(ttl).await?;
            let mutex = Mutex::new(&session, "queue")?;
            let (rel_tx, rel_rx) = oneshot::channel();
            let (acq_tx, done_tx) = (acq_tx.clone(), done_tx.clone());
            tokio::spawn(async move {
                let Ok(guard) = mutex.lock().await else {
                    return;
                };
                let _ = acq_tx.send((idx, Instant::now()));
                if rel_rx.await.is_ok() {
                    let _ = guard.unlock().await;
                    let _ = done_tx.send(idx);
                }
            });
            if idx == 0 {
                // The first holder, before anyone queues.
                acq_rx.recv().await.ok_or("holder failed")?;
            }
            release.push(Some(rel_tx));
            counters.push(store);
            sessions.push(session);
        }
        // Wait until all have written their keys and gone quiet (a waiter also opens its
        // watches and reads once): no call for 50 ms.
        let mut last = u64::MAX;
        loop {
            let n = raw
                .range(RangeRequest::prefix("queue/").with_count_only())
                .await?
                .count;
            let calls: u64 = counters.iter().map(|c| c.counts().calls()).sum();
            if n == waiters as i64 + 1 && calls == last {
                break;
            }
            last = calls;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let releases = self.releases.min(waiters);
        let mut holder = 0usize;
        let mut per_release = Vec::new();
        let mut lat = Vec::new();
        let (mut releaser_calls, mut next_calls, mut others_calls, mut store_calls) =
            (0u64, 0u64, 0u64, 0u64);
        let (mut events, mut max_events) = (0u64, 0u64);
        let mut max_total = 0u64;
        for _ in 0..releases {
            let before: Vec<CallCounts> = counters.iter().map(|c| c.counts()).collect();
            let mem_before = mem.stats();
            let t = Instant::now();
            release[holder]
                .take()
                .ok_or("no holder")?
                .send(())
                .map_err(|_| "holder gone")?;
            let (next, at) = acq_rx.recv().await.ok_or("no next holder")?;
            let done = done_rx.recv().await.ok_or("releaser failed")?;
            if done != holder {
                return Err("wrong releaser".into());
            }
            lat.push(at.duration_since(t));
            let deltas: Vec<CallCounts> = counters
                .iter()
                .zip(&before)
                .map(|(c, b)| c.counts().since(b))
                .collect();
            let total: u64 = deltas.iter().map(CallCounts::calls).sum();
            let delivered: u64 = deltas.iter().map(|d| d.watch_events).sum();
            events += delivered;
            max_events = max_events.max(delivered);
            releaser_calls += deltas[holder].calls();
            next_calls += deltas[next].calls();
            others_calls += total - deltas[holder].calls() - deltas[next].calls();
            store_calls += mem.stats().since(&mem_before).calls();
            max_total = max_total.max(total);
            per_release.push(total);
            holder = next;
        }
        for s in &sessions {
            s.close().await?;
        }
        let n = releases.max(1) as f64;
        Ok(
            BenchResult::new(name, releases as u64, 0.0, &lat).with_extra(json!({
                "waiters": waiters,
                "calls_per_release": per_release.iter().sum::<u64>() as f64 / n,
                "max_calls_in_one_release": max_total,
                "releaser_calls_per_release": releaser_calls as f64 / n,
                "next_waiter_calls_per_release": next_calls as f64 / n,
                "other_waiters_calls_per_release": others_calls as f64 / n,
                "watch_events_per_release": events as f64 / n,
                "max_watch_events_in_one_release": max_events,
                "memstore_calls_per_release": store_calls as f64 / n,
                "latency": "unlock -> next holder acquired",
            })),
        )
    }

    /// Live heap bytes after 10,000 and after `memory_cycles` lock+unlock cycles.
    async fn memory_cycles(&self) -> BenchResultOr<BenchResult> {
        let name = "mem_memory_cycles";
        if !self.is_mem() {
            return Err("mem_memory_cycles runs on --backend mem only".into());
        }
        let (session, _store) = self.session(self.ttl).await?;
        let mutex = Mutex::new(&session, "memory")?;
        let early = 10_000u64.min(self.memory_cycles);
        let mut at_early = None;
        let start = Instant::now();
        for i in 1..=self.memory_cycles {
            mutex.lock().await?.unlock().await?;
            if i == early {
                // Let background tasks settle before reading.
                tokio::task::yield_now().await;
                at_early = crate::alloc::live_bytes();
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        tokio::task::yield_now().await;
        let at_end = crate::alloc::live_bytes();
        session.close().await?;
        let ratio = match (at_early, at_end) {
            (Some(a), Some(b)) if a > 0 => Value::from(b as f64 / a as f64),
            _ => Value::Null,
        };
        Ok(
            BenchResult::new(name, self.memory_cycles, seconds, &[]).with_extra(json!({
                "live_bytes_after_10k": at_early,
                "live_bytes_after_all": at_end,
                "cycles": self.memory_cycles,
                "ratio": ratio,
            })),
        )
    }

    /// Checks that the store is reachable and the prefix usable.
    pub async fn check(&self) -> BenchResultOr<()> {
        let store = self.store().await?;
        store.range(RangeRequest::key("check")).await?;
        Ok(())
    }
}

/// One `watch_floor` sample: put a key, idle, then time its delete until the watch has it.
async fn floor_once(
    writer: &Store,
    rx: &mut mpsc::UnboundedReceiver<coord_core::Result<(Vec<u8>, Instant)>>,
    i: usize,
    idle: Duration,
) -> BenchResultOr<Duration> {
    let key = format!("floor/{}", i % 8);
    writer.put(PutRequest::new(key.clone(), "")).await?;
    tokio::time::sleep(idle).await;
    let t = Instant::now();
    writer.delete(DeleteRequest::key(key.clone())).await?;
    let (got, at) = rx.recv().await.ok_or("watch ended")??;
    if got != key.as_bytes() {
        return Err(format!("unexpected delete of {}", String::from_utf8_lossy(&got)).into());
    }
    Ok(at.duration_since(t))
}

/// Splits one handoff (unlock called at `t`, lock returned at `got`) into: the unlock txn, the
/// unlock call → the delete event at the waiter, event → the waiter's read sent, the read txn
/// (both 0 when the waiter did not read), and the event or read answer → lock returned.
fn split_handoff(
    t: Instant,
    releaser: &[(Instant, Mark)],
    waiter: &[(Instant, Mark)],
    got: Instant,
) -> Option<[Duration; 5]> {
    let unlock_end = releaser.iter().find(|(_, m)| *m == Mark::TxnEnd)?.0;
    let event = waiter.iter().find(|(_, m)| *m == Mark::Event)?.0;
    let read_start = waiter
        .iter()
        .find(|(at, m)| *m == Mark::TxnStart && *at >= event)
        .map(|(at, _)| *at);
    let read_end = read_start.and_then(|start| {
        waiter
            .iter()
            .find(|(at, m)| *m == Mark::TxnEnd && *at >= start)
            .map(|(at, _)| *at)
    });
    let (to_read, read, last) = match (read_start, read_end) {
        (Some(s), Some(e)) => (s.duration_since(event), e.duration_since(s), e),
        _ => (Duration::ZERO, Duration::ZERO, event),
    };
    Some([
        unlock_end.duration_since(t),
        event.duration_since(t),
        to_read,
        read,
        got.duration_since(last),
    ])
}

/// Calls per operation, for `extra`.
pub(crate) fn per_op(calls: &CallCounts, ops: u64) -> Value {
    let n = ops.max(1) as f64;
    json!({
        "kv_calls_per_op": calls.kv_calls() as f64 / n,
        "txn_per_op": calls.txn as f64 / n,
        "watches_opened_per_op": calls.watch as f64 / n,
        // One release per acquisition: the events every session received, per release.
        "watch_events_per_op": calls.watch_events as f64 / n,
        "total": calls.to_string(),
    })
}
