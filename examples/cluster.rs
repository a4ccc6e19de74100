//! The main demo: a small cluster of nodes in one process.
//!
//! The nodes elect a leader; the leader's session is killed (its lease revoked, as when a process
//! dies and its TTL runs out) and another node takes over, several times. Then workers contend
//! on a mutex and on a read-write lock. It prints a timeline (leader changes, lock holders,
//! fencing tokens) and a summary with the safety checks.
//!
//! ```text
//! cargo run --example cluster                       # on coord-mem
//! cargo run --example cluster --features etcd -- --endpoints 127.0.0.1:2379
//! cargo run --example cluster --features postgres -- --postgres postgres://user:pw@127.0.0.1/db
//! cargo run --example cluster -- --metrics-addr 127.0.0.1:9464   # with Prometheus metrics
//! ```
//!
//! With `--metrics-addr`, it serves Prometheus text there and reads it back over HTTP: each
//! mutex holder checks that `coord_held` shows one holder, and the summary checks the
//! counters against what the demo did.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use coord::{Backend, DynBackend, Election, Error, Mutex, RwLock, Session};
use futures::StreamExt;
use tokio::task::JoinSet;

mod metrics;
mod store;

#[derive(Parser, Debug)]
#[command(about = "Leader election, failover and lock contention among N nodes in one process")]
struct Args {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Leader crashes to survive.
    #[arg(long, default_value_t = 3)]
    failovers: usize,
    /// Lock acquisitions per node, for the mutex and for the read-write lock.
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Session TTL in seconds.
    #[arg(long, default_value_t = 5)]
    ttl: i64,
    /// Where to run: coord-mem, etcd or PostgreSQL.
    #[command(flatten)]
    store: store::StoreArgs,
    /// Key prefix for everything the demo writes.
    #[arg(long, default_value = "coord-demo")]
    prefix: String,
    /// Serve Prometheus metrics on HOST:PORT (and check them against what happened).
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
}

/// Timeline printer: milliseconds since start.
#[derive(Clone)]
struct Timeline(Instant);

impl Timeline {
    fn say(&self, what: impl AsRef<str>) {
        println!(
            "{:>7.1} ms  {}",
            self.0.elapsed().as_secs_f64() * 1e3,
            what.as_ref()
        );
    }
}

#[derive(Default)]
struct Summary {
    failovers: usize,
    mutex_handoffs: usize,
    rw_reads: usize,
    rw_writes: usize,
    max_parallel_readers: usize,
    violations: usize,
}

#[tokio::main]
async fn main() {
    store::finish("cluster", run(Args::parse()).await)
}

/// Runs the demo; the number of broken promises it saw.
async fn run(args: Args) -> coord::Result<usize> {
    if args.nodes < 2 {
        return Err(Error::invalid("--nodes must be at least 2"));
    }
    if let Some(addr) = args.metrics_addr {
        metrics::serve(addr).map_err(Error::invalid)?;
    }
    let (backend, what) = store::connect(&args.store).await?;
    // A fresh namespace per run, so runs never see each other's keys.
    let ns = format!("{}/{:x}/", args.prefix, rand::random::<u32>());
    let backend: DynBackend = Arc::new(coord::Prefixed::new(backend, ns.clone()));
    let t = Timeline(Instant::now());
    t.say(format!(
        "{} nodes on {what}, namespace {ns}, session TTL {} s",
        args.nodes, args.ttl
    ));
    let mut summary = Summary::default();
    elections(&args, &backend, &t, &mut summary).await?;
    mutex_contention(&args, &backend, &t, &mut summary).await?;
    rwlock_contention(&args, &backend, &t, &mut summary).await?;

    if let Some(addr) = args.metrics_addr {
        check_metrics(addr, &t, &mut summary).await;
    }

    let left = backend.range(coord::RangeRequest::prefix("")).await?.count;
    if left != 0 {
        summary.violations += 1;
        t.say(format!("VIOLATION: {left} keys left behind"));
    }
    println!();
    println!("summary");
    println!("  failovers:             {}", summary.failovers);
    println!("  mutex handoffs:        {}", summary.mutex_handoffs);
    println!(
        "  rwlock reads/writes:   {}/{} (up to {} readers at once)",
        summary.rw_reads, summary.rw_writes, summary.max_parallel_readers
    );
    println!("  keys left behind:      {left}");
    println!("  violations:            {}", summary.violations);
    Ok(summary.violations)
}

/// Reads the metrics back over HTTP and checks them against the demo's own counts.
async fn check_metrics(addr: SocketAddr, t: &Timeline, summary: &mut Summary) {
    t.say(format!("-- metrics, scraped from http://{addr}/metrics --"));
    let scrape = match metrics::scrape(addr).await {
        Ok(scrape) => scrape,
        Err(e) => {
            summary.violations += 1;
            t.say(format!("VIOLATION: cannot scrape the metrics: {e}"));
            return;
        }
    };
    let leaders = (summary.failovers + 1) as f64;
    let checks = [
        (
            "coord_acquisitions_total",
            "mutex",
            "",
            summary.mutex_handoffs as f64,
        ),
        (
            "coord_acquire_wait_seconds_count",
            "mutex",
            "",
            summary.mutex_handoffs as f64,
        ),
        (
            "coord_hold_seconds_count",
            "mutex",
            "",
            summary.mutex_handoffs as f64,
        ),
        ("coord_held", "mutex", "", 0.0),
        (
            "coord_acquisitions_total",
            "rwlock_read",
            "",
            summary.rw_reads as f64,
        ),
        (
            "coord_acquisitions_total",
            "rwlock_write",
            "",
            summary.rw_writes as f64,
        ),
        (
            "coord_losses_total",
            "election",
            "lease_expired",
            summary.failovers as f64,
        ),
        ("coord_held", "election", "", 0.0),
    ];
    for (name, primitive, cause, expected) in checks {
        let mut labels = vec![("primitive", primitive)];
        if !cause.is_empty() {
            labels.push(("cause", cause));
        }
        let seen = scrape.value(name, &labels);
        let verdict = if seen == expected { "ok" } else { "VIOLATION" };
        if seen != expected {
            summary.violations += 1;
        }
        t.say(format!(
            "{verdict}: {name}{{{}}} = {seen} (expected {expected})",
            labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    // Every leader observed; one more candidate may win between the last resign and the end of
    // the campaigns.
    let won = scrape.value("coord_acquisitions_total", &[("primitive", "election")]);
    let fits = won == leaders || won == leaders + 1.0;
    if !fits {
        summary.violations += 1;
    }
    t.say(format!(
        "{}: coord_acquisitions_total{{primitive=\"election\"}} = {won} (expected {leaders} or {})",
        if fits { "ok" } else { "VIOLATION" },
        leaders + 1.0
    ));
}

/// Every node campaigns; the leader is killed `failovers` times; an observer checks that
/// leaders follow each other with rising tokens.
async fn elections(
    args: &Args,
    backend: &DynBackend,
    t: &Timeline,
    summary: &mut Summary,
) -> coord::Result<()> {
    t.say("-- election --");
    let observer_session = Session::new(backend.clone(), args.ttl).await?;
    let mut leaders = Election::new(&observer_session, "leader")?.observe();

    let mut sessions = Vec::new();
    let mut campaigns = JoinSet::new();
    for node in 0..args.nodes {
        let session = Session::new(backend.clone(), args.ttl).await?;
        sessions.push(session.clone());
        let election = Election::new(&session, "leader")?;
        campaigns.spawn(async move {
            let leadership = election.campaign(format!("node-{node}")).await;
            (node, leadership)
        });
    }

    let mut last_token = 0;
    let mut killed = 0;
    // Each round: wait for the next leader to be observed, check it, kill it.
    while killed <= args.failovers && killed < args.nodes {
        let observation = match leaders.next().await {
            Some(o) => o?,
            None => return Err(Error::invalid("observe stream ended")),
        };
        let Some(leader) = observation.leader else {
            t.say("observer: no leader");
            continue;
        };
        let name = String::from_utf8_lossy(&leader.value).into_owned();
        t.say(format!(
            "observer: leader is {name} (token {}, revision {})",
            leader.create_revision, observation.revision
        ));
        if leader.create_revision <= last_token {
            summary.violations += 1;
            t.say("VIOLATION: leader token did not rise");
        }
        last_token = leader.create_revision;
        // The campaign that won must agree with the observer.
        let (node, leadership) = campaigns
            .join_next()
            .await
            .expect("a campaign is running")
            .expect("campaign task");
        let leadership = leadership?;
        if leadership.rev() != leader.create_revision || name != format!("node-{node}") {
            summary.violations += 1;
            t.say(format!(
                "VIOLATION: node-{node} won, the observer saw {name}"
            ));
        }
        if killed == args.failovers {
            t.say(format!("node-{node} resigns"));
            leadership.resign().await?;
            break;
        }
        t.say(format!("node-{node} crashes (its lease is revoked)"));
        let session = &sessions[node];
        backend.lease_revoke(session.lease()).await?;
        let lost =
            tokio::time::timeout(Duration::from_secs(args.ttl as u64 + 1), leadership.lost())
                .await
                .map_err(|_| Error::Timeout)?;
        t.say(format!("node-{node} learns it lost the lead: {lost}"));
        killed += 1;
        summary.failovers += 1;
    }
    campaigns.abort_all();
    while campaigns.join_next().await.is_some() {}
    for session in sessions {
        session.close().await?;
    }
    observer_session.close().await?;
    Ok(())
}

async fn mutex_contention(
    args: &Args,
    backend: &DynBackend,
    t: &Timeline,
    summary: &mut Summary,
) -> coord::Result<()> {
    t.say("-- mutex --");
    let holders = Arc::new(AtomicUsize::new(0));
    let last_token = Arc::new(AtomicI64::new(0));
    let violations = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for node in 0..args.nodes {
        let session = Session::new(backend.clone(), args.ttl).await?;
        let (holders, last_token, violations, t) = (
            holders.clone(),
            last_token.clone(),
            violations.clone(),
            t.clone(),
        );
        let rounds = args.rounds;
        let metrics_addr = args.metrics_addr;
        workers.spawn(async move {
            let mutex = Mutex::new(&session, "jobs")?;
            for _ in 0..rounds {
                let guard = mutex.lock().await?;
                let token = guard.fencing_token();
                if holders.fetch_add(1, Ordering::SeqCst) != 0
                    || last_token.swap(token, Ordering::SeqCst) >= token
                {
                    violations.fetch_add(1, Ordering::SeqCst);
                    t.say("VIOLATION: two holders, or a token that did not rise");
                }
                t.say(format!("node-{node} holds the mutex (token {token})"));
                if let Some(addr) = metrics_addr {
                    // What a dashboard shows now: one holder, whoever waits.
                    let held = match metrics::scrape(addr).await {
                        Ok(scrape) => scrape.value("coord_held", &[("primitive", "mutex")]),
                        Err(_) => -1.0,
                    };
                    if held != 1.0 {
                        violations.fetch_add(1, Ordering::SeqCst);
                        t.say(format!("VIOLATION: coord_held shows {held} mutex holders"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                guard.unlock().await?;
            }
            session.close().await
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("worker task")?;
    }
    summary.mutex_handoffs = args.nodes * args.rounds;
    summary.violations += violations.load(Ordering::SeqCst);
    Ok(())
}

async fn rwlock_contention(
    args: &Args,
    backend: &DynBackend,
    t: &Timeline,
    summary: &mut Summary,
) -> coord::Result<()> {
    t.say("-- read-write lock (1 write in 4) --");
    let readers = Arc::new(AtomicUsize::new(0));
    let writers = Arc::new(AtomicUsize::new(0));
    let max_readers = Arc::new(AtomicUsize::new(0));
    let violations = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for node in 0..args.nodes {
        let session = Session::new(backend.clone(), args.ttl).await?;
        let (readers, writers, max_readers, violations, t) = (
            readers.clone(),
            writers.clone(),
            max_readers.clone(),
            violations.clone(),
            t.clone(),
        );
        let rounds = args.rounds;
        workers.spawn(async move {
            let lock = RwLock::new(&session, "config")?;
            let (mut reads, mut writes) = (0, 0);
            for round in 0..rounds {
                if (round + node) % 4 == 0 {
                    let guard = lock.write().await?;
                    if writers.fetch_add(1, Ordering::SeqCst) != 0
                        || readers.load(Ordering::SeqCst) != 0
                    {
                        violations.fetch_add(1, Ordering::SeqCst);
                        t.say("VIOLATION: a writer alongside another holder");
                    }
                    t.say(format!(
                        "node-{node} writes (token {})",
                        guard.fencing_token()
                    ));
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    writers.fetch_sub(1, Ordering::SeqCst);
                    guard.unlock().await?;
                    writes += 1;
                } else {
                    let guard = lock.read().await?;
                    let now = readers.fetch_add(1, Ordering::SeqCst) + 1;
                    max_readers.fetch_max(now, Ordering::SeqCst);
                    if writers.load(Ordering::SeqCst) != 0 {
                        violations.fetch_add(1, Ordering::SeqCst);
                        t.say("VIOLATION: a reader alongside a writer");
                    }
                    t.say(format!("node-{node} reads ({now} reading)"));
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    readers.fetch_sub(1, Ordering::SeqCst);
                    guard.unlock().await?;
                    reads += 1;
                }
            }
            session.close().await?;
            Ok::<_, Error>((reads, writes))
        });
    }
    while let Some(done) = workers.join_next().await {
        let (reads, writes) = done.expect("worker task")?;
        summary.rw_reads += reads;
        summary.rw_writes += writes;
    }
    summary.max_parallel_readers = max_readers.load(Ordering::SeqCst);
    summary.violations += violations.load(Ordering::SeqCst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smaller cluster than the command's default, so that each store takes seconds.
    fn small(store: store::StoreArgs, prefix: &str) -> Args {
        Args {
            nodes: 3,
            failovers: 1,
            rounds: 2,
            ttl: 2,
            store,
            prefix: prefix.into(),
            metrics_addr: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_coord_mem_without_violations() {
        let violations = run(small(store::mem(), "coord-test-cluster"))
            .await
            .unwrap();
        assert_eq!(violations, 0, "violations");
    }

    /// The demo as `cargo run --example cluster --features etcd -- --endpoints …` runs it, on
    /// the etcd of the README's test command (`ETCD_ENDPOINTS`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_etcd_without_violations() {
        if let Some(store) = store::etcd_from_env() {
            let prefix = format!("coord-test-cluster-{}", std::process::id());
            assert_eq!(run(small(store, &prefix)).await.unwrap(), 0, "violations");
        }
    }

    /// The demo as `cargo run --example cluster --features postgres -- --postgres URL` runs it,
    /// on the PostgreSQL of the README's test command (`POSTGRES_URL`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_postgres_without_violations() {
        if let Some(store) = store::postgres_from_env() {
            let prefix = format!("coord-test-cluster-{}", std::process::id());
            assert_eq!(run(small(store, &prefix)).await.unwrap(), 0, "violations");
        }
    }
}
