//! `coord-bench`: runs coord's benchmark scenarios on etcd or coord-mem and prints one JSON
//! line per scenario, with the fields of the anchors (`go-etcd-bench`, `rust-etcd-client-lock`).
//!
//! ```text
//! coord-bench --endpoints 127.0.0.1:2379 --scenario all --iters 400 --workers 8
//! coord-bench --backend mem --scenario mutex_uncontended_lock_unlock --iters 200000
//! coord-bench --postgres-url postgres://u:p@127.0.0.1/db --scenario uncontended,handoff
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use coord_bench::alloc::CountingAlloc;
use coord_bench::scenarios::{canonical, Bench, Target, HEAP_SCENARIOS, SCENARIOS};
use coord_mem::MemStore;
use rand::Rng;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// etcd at --endpoints.
    Etcd,
    /// One in-memory coord-mem store.
    Mem,
    /// PostgreSQL at --postgres-url.
    Postgres,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    /// tokio's current-thread runtime: everything on one core.
    Current,
    /// tokio's multi-thread runtime, one worker per core.
    Multi,
}

/// Benchmarks coord's Mutex, RwLock and Election on etcd or coord-mem.
///
/// Prints one JSON line per scenario: scenario, ops, seconds, ops_per_s, p50_ms, p99_ms (what
/// is timed is the anchors' choice: lock+unlock, or the acquire wait) and an `extra` object
/// (calls per operation, exclusion violations, TTLs, memory). Every key lives under a random
/// prefix, so runs never meet. Scenarios: mutex_uncontended_lock_unlock, mutex_contended (as
/// mutex_contended_w{W}), rwmutex_mixed (rwmutex_mixed_w{W}, one write in four), mutex_handoff,
/// election_resign_handoff, election_crash_failover, watch_floor, on --backend mem also
/// mem_calls_per_release_w1000, mem_calls_per_release_w10000, mem_memory_cycles, and on
/// --backend postgres also pg_commit_rate (the server's single-writer commit rate) and
/// pg_bounded (table sizes over --memory-cycles lock cycles); metrics_overhead (short: metrics)
/// times lock + unlock with a Prometheus recorder against none, alternately;
/// mutex_write_floor (mutex_write_floor_w{W}) is the most any lock on Go's key layout can do at
/// W sessions: only its two writes per acquisition, the turn passed in-process; and, only when
/// named, idle_sessions (--sessions idle sessions on one connection: CPU, memory, etcd watchers
/// and streams) and election_candidates (--sessions candidates, --observers observers, the
/// leader crashes --crash-rounds times). The Go anchor's short names
/// (uncontended,
/// contended, rwlock, handoff, failover) work too.
#[derive(Debug, Parser)]
#[command(name = "coord-bench", version)]
struct Args {
    /// etcd endpoints, comma-separated (implies --backend etcd).
    #[arg(long, env = "ETCD_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// The store: etcd (needs --endpoints), mem, or postgres (needs --postgres-url).
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,
    /// PostgreSQL URL (implies --backend postgres when no --endpoints are given).
    #[arg(long, env = "POSTGRES_URL", value_name = "URL")]
    postgres_url: Option<String>,
    /// Scenario names, comma-separated, or `all`.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    scenario: Vec<String>,
    /// Iterations (lock+unlock pairs; handoff scenarios run iters/10+1 rounds).
    #[arg(long, default_value_t = 400)]
    iters: usize,
    /// Contending sessions in mutex_contended and rwmutex_mixed.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Session lease TTL, seconds.
    #[arg(long, default_value_t = 10)]
    ttl: i64,
    /// The crashing leader's lease TTL in election_crash_failover, seconds.
    #[arg(long, default_value_t = 2)]
    crash_ttl: i64,
    /// Rounds of election_crash_failover (each lasts about the crash TTL).
    #[arg(long, default_value_t = 5)]
    crash_rounds: usize,
    /// Releases measured by mem_calls_per_release_w1000.
    #[arg(long, default_value_t = 100)]
    releases: usize,
    /// Lock+unlock cycles of mem_memory_cycles.
    #[arg(long, default_value_t = 1_000_000)]
    memory_cycles: u64,
    /// Sessions of idle_sessions, candidates of election_candidates.
    #[arg(long, default_value_t = 1_000)]
    sessions: usize,
    /// Observers of election_candidates.
    #[arg(long, default_value_t = 100)]
    observers: usize,
    /// Seconds idle_sessions measures for.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// tokio runtime (default: current for mem — one core —, multi for etcd).
    #[arg(long, value_enum)]
    runtime: Option<RuntimeKind>,
    /// Write raw latencies (ms, one per line) to DIR/<scenario>.txt.
    #[arg(long, value_name = "DIR")]
    dump_latencies: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Only the scenarios that report heap figures pay for counting every allocation.
    // (Before parsing: `--scenario a,b` or `--scenario=a,b`; `all` includes one.)
    if std::env::args().any(|a| {
        let list = a.rsplit('=').next().unwrap_or_default();
        list.split(',')
            .any(|s| s == "all" || canonical(s).is_some_and(|s| HEAP_SCENARIOS.contains(&s)))
    }) {
        coord_bench::alloc::enable();
    }
    let args = Args::parse();
    let backend = match (args.backend, args.endpoints.is_empty(), &args.postgres_url) {
        (Some(b), _, _) => b,
        (None, false, _) => BackendKind::Etcd,
        (None, true, Some(_)) => BackendKind::Postgres,
        (None, true, None) => {
            eprintln!(
                "coord-bench: give --endpoints HOST:PORT, --postgres-url URL or --backend mem"
            );
            return ExitCode::from(2);
        }
    };
    if backend == BackendKind::Postgres && args.postgres_url.is_none() {
        eprintln!("coord-bench: --backend postgres needs --postgres-url (or POSTGRES_URL)");
        return ExitCode::from(2);
    }
    if backend == BackendKind::Etcd && args.endpoints.is_empty() {
        eprintln!("coord-bench: --backend etcd needs --endpoints");
        return ExitCode::from(2);
    }
    let runtime = args.runtime.unwrap_or(match backend {
        BackendKind::Mem => RuntimeKind::Current,
        BackendKind::Etcd | BackendKind::Postgres => RuntimeKind::Multi,
    });
    let rt = match runtime {
        RuntimeKind::Current => tokio::runtime::Builder::new_current_thread(),
        RuntimeKind::Multi => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    // The scenarios run as a spawned task, on a worker thread, as a service's work does (and
    // as the Go anchor's goroutines do). The future given to `block_on` is polled on the main
    // thread, outside the workers: every wake-up between it and the connection's tasks then
    // crosses threads, which cost a serial loop of requests about 10% of its rate here.
    rt.block_on(async move {
        tokio::spawn(run(args, backend))
            .await
            .expect("the benchmark task panicked")
    })
}

async fn run(args: Args, backend: BackendKind) -> ExitCode {
    let target = match backend {
        BackendKind::Mem => Target::Mem(MemStore::new()),
        BackendKind::Etcd => Target::Etcd(args.endpoints.clone()),
        BackendKind::Postgres => {
            let url = args.postgres_url.clone().unwrap_or_default();
            // One backend for the run, its pool sized for the contenders' concurrent calls.
            let config = coord_postgres::PostgresConfig::new(url.clone())
                .with_application_name("coord-bench")
                .with_pool_size((args.workers + 2).min(32));
            match config.connect().await {
                Ok(backend) => Target::Postgres(backend, url),
                Err(e) => {
                    eprintln!("coord-bench: cannot connect to PostgreSQL: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let prefix = format!("/coord-bench/{:016x}/", rand::thread_rng().gen::<u64>());
    let bench = Bench {
        target,
        prefix,
        iters: args.iters,
        workers: args.workers.max(1),
        ttl: args.ttl,
        crash_ttl: args.crash_ttl,
        crash_rounds: args.crash_rounds,
        releases: args.releases,
        memory_cycles: args.memory_cycles,
        dump: args.dump_latencies.clone(),
        sessions: args.sessions.max(1),
        observers: args.observers,
        idle: std::time::Duration::from_secs(args.idle_secs),
    };
    let mut names = Vec::new();
    for s in &args.scenario {
        if s == "all" {
            names.extend(bench.all());
        } else if let Some(name) = canonical(s) {
            names.push(name);
        } else {
            eprintln!(
                "coord-bench: unknown scenario {s:?}; known: all, {}",
                SCENARIOS.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    if let Err(e) = bench.check().await {
        eprintln!("coord-bench: cannot reach the store: {e}");
        return ExitCode::FAILURE;
    }
    let mut failed = false;
    for name in names {
        match bench.run(name).await {
            Ok(result) => println!(
                "{}",
                serde_json::to_string(&result).expect("results serialize")
            ),
            Err(e) => {
                eprintln!("coord-bench: {name} failed: {e} ({e:?})");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
