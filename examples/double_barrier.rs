//! A double barrier: workers start a phase together once all have arrived, and finish it
//! together once all are done, even when one of them crashes.
//!
//! Each worker has its own session (a lease): it enters, works, and leaves. One worker
//! "crashes" after entering (its session ends without leaving); the others still get out, as
//! its key goes with its lease. The demo checks nobody entered before all had arrived and
//! nobody left before all others had left or crashed, and exits non-zero on a violation. The
//! barrier is laid out as etcd's Go `recipes.DoubleBarrier`.
//!
//! ```text
//! cargo run --example double_barrier                       # on coord-mem
//! cargo run --example double_barrier --features etcd -- --endpoints 127.0.0.1:2379
//! cargo run --example double_barrier --features postgres -- --postgres postgres://user:pw@127.0.0.1/db
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use coord::{DoubleBarrier, Session};

mod store;

#[derive(Parser, Debug)]
#[command(about = "Workers enter and leave a double barrier together; one crashes")]
struct Args {
    /// Workers (the barrier's count).
    #[arg(long, default_value_t = 5)]
    workers: usize,
    /// Session TTL in seconds.
    #[arg(long, default_value_t = 5)]
    ttl: i64,
    /// Where to run: coord-mem, etcd or PostgreSQL.
    #[command(flatten)]
    store: store::StoreArgs,
    /// Key prefix for everything the demo writes.
    #[arg(long, default_value = "coord-demo-double-barrier")]
    prefix: String,
}

#[tokio::main]
async fn main() {
    store::finish("double_barrier", run(Args::parse()).await)
}

async fn run(args: Args) -> coord::Result<usize> {
    let (backend, place) = store::connect(&args.store).await?;
    println!("double barrier demo on {place}");
    if args.workers < 2 {
        return Err(coord::Error::invalid("--workers must be at least 2"));
    }
    let name = format!("{}/{:x}/phase", args.prefix, std::process::id());
    let started = Instant::now();
    let arrived = Arc::new(AtomicUsize::new(0));
    // Workers that called leave, or crashed.
    let done = Arc::new(AtomicUsize::new(0));
    let violations = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..args.workers {
        let session = Session::new(backend.clone(), args.ttl).await?;
        let barrier = DoubleBarrier::new(&session, &name, args.workers)?;
        let (arrived, done, violations) = (arrived.clone(), done.clone(), violations.clone());
        let workers_n = args.workers;
        workers.push(tokio::spawn(async move {
            arrived.fetch_add(1, Ordering::SeqCst);
            let entered = barrier.enter_timeout(Duration::from_secs(30)).await?;
            let seen = arrived.load(Ordering::SeqCst);
            if seen < workers_n {
                println!("VIOLATION: worker {w} entered with {seen} of {workers_n} arrived");
                violations.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(10 * w as u64)).await; // the phase's work
            if w == 1 {
                // Crash: the session ends without leaving; its key goes with its lease.
                done.fetch_add(1, Ordering::SeqCst);
                drop(entered);
                session.close().await?;
                return Ok::<_, coord::Error>(false);
            }
            done.fetch_add(1, Ordering::SeqCst);
            entered.leave_timeout(Duration::from_secs(30)).await?;
            let seen = done.load(Ordering::SeqCst);
            if seen < workers_n {
                println!("VIOLATION: worker {w} left with {seen} of {workers_n} done");
                violations.fetch_add(1, Ordering::SeqCst);
            }
            session.close().await?;
            Ok(true)
        }));
    }
    let mut left = 0;
    for w in workers {
        left += usize::from(w.await.expect("worker task")?);
    }
    let violations = violations.load(Ordering::SeqCst);
    println!(
        "{} workers entered together, {left} left together (1 crashed) in {:.0} ms",
        args.workers,
        started.elapsed().as_secs_f64() * 1e3
    );
    println!("violations: {violations}");
    Ok(violations)
}

/// `cargo test` runs the demo on coord-mem (`test = true` in Cargo.toml).
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_coord_mem_without_violations() {
        let args = Args {
            workers: 5,
            ttl: 5,
            store: store::mem(),
            prefix: "coord-test-double-barrier".into(),
        };
        assert_eq!(run(args).await.unwrap(), 0, "violations");
    }
}
