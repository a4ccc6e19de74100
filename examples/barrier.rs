//! A barrier: workers wait at it until a coordinator releases it, then all go at once.
//!
//! The coordinator holds the barrier, starts the workers (each waits), and releases it; the
//! demo checks that no worker got through before the release and that all did after it, prints
//! how long the last one took from the release, and exits non-zero on a violation. The
//! barrier is laid out as etcd's Go `recipes.Barrier` (one key, the name).
//!
//! ```text
//! cargo run --example barrier                       # on coord-mem
//! cargo run --example barrier --features etcd -- --endpoints 127.0.0.1:2379
//! cargo run --example barrier --features postgres -- --postgres postgres://user:pw@127.0.0.1/db
//! ```

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use coord::Barrier;

mod store;

#[derive(Parser, Debug)]
#[command(about = "Workers wait at a barrier until it is released")]
struct Args {
    /// Workers waiting at the barrier.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Where to run: coord-mem, etcd or PostgreSQL.
    #[command(flatten)]
    store: store::StoreArgs,
    /// Key prefix for everything the demo writes.
    #[arg(long, default_value = "coord-demo-barrier")]
    prefix: String,
}

#[tokio::main]
async fn main() {
    store::finish("barrier", run(Args::parse()).await)
}

async fn run(args: Args) -> coord::Result<usize> {
    let (backend, place) = store::connect(&args.store).await?;
    println!("barrier demo on {place}");
    let name = format!("{}/{:x}/start", args.prefix, std::process::id());
    let coordinator = Barrier::new(backend.clone(), &name)?;
    coordinator.hold().await?;
    let released = Arc::new(AtomicBool::new(false));
    let early = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..args.workers)
        .map(|_| {
            let barrier = Barrier::new(backend.clone(), &name).expect("valid name");
            let (released, early) = (released.clone(), early.clone());
            tokio::spawn(async move {
                barrier.wait_timeout(Duration::from_secs(30)).await?;
                if !released.load(Ordering::SeqCst) {
                    early.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, coord::Error>(Instant::now())
            })
        })
        .collect();
    // Let the workers reach the barrier (none may pass while it is held).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let through_early = workers.iter().filter(|w| w.is_finished()).count();
    println!(
        "{} workers waiting at the barrier",
        args.workers - through_early
    );
    released.store(true, Ordering::SeqCst);
    let release = Instant::now();
    coordinator.release().await?;
    let mut last = Duration::ZERO;
    for w in workers {
        let passed = w.await.expect("worker task")?;
        last = last.max(passed.saturating_duration_since(release));
    }
    let mut violations = early.load(Ordering::SeqCst);
    if violations > 0 {
        println!("VIOLATION: {violations} worker(s) passed before the release");
    }
    if coordinator.is_held().await? {
        println!("VIOLATION: the barrier is still held");
        violations += 1;
    }
    println!(
        "released: all {} workers through {:.2} ms after the release",
        args.workers,
        last.as_secs_f64() * 1e3
    );
    // Waiting on a released barrier returns at once.
    coordinator.wait_timeout(Duration::from_secs(5)).await?;
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
            workers: 8,
            store: store::mem(),
            prefix: "coord-test-barrier".into(),
        };
        assert_eq!(run(args).await.unwrap(), 0, "violations");
    }
}
