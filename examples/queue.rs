//! Work queues: producers and consumers share a FIFO queue and a priority queue.
//!
//! Producers enqueue numbered jobs while consumers dequeue them, all at once; then jobs of
//! mixed priorities come out lowest number first. The demo checks every job was delivered
//! exactly once, that each consumer saw a producer's jobs in order, and the priority order,
//! and exits non-zero on a violation. The queues are laid out as etcd's Go `contrib/recipes`,
//! so Go workers could share them on etcd.
//!
//! ```text
//! cargo run --example queue                       # on coord-mem
//! cargo run --example queue --features etcd -- --endpoints 127.0.0.1:2379
//! cargo run --example queue --features postgres -- --postgres postgres://user:pw@127.0.0.1/db
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use coord::{Backend, DeleteRequest, PriorityQueue, Queue};

mod store;

#[derive(Parser, Debug)]
#[command(about = "Producers and consumers on a FIFO queue and a priority queue")]
struct Args {
    /// Producers.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Consumers.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Jobs per producer.
    #[arg(long, default_value_t = 50)]
    jobs: usize,
    /// Where to run: coord-mem, etcd or PostgreSQL.
    #[command(flatten)]
    store: store::StoreArgs,
    /// Key prefix for everything the demo writes.
    #[arg(long, default_value = "coord-demo-queue")]
    prefix: String,
}

#[tokio::main]
async fn main() {
    store::finish("queue", run(Args::parse()).await)
}

async fn run(args: Args) -> coord::Result<usize> {
    let (backend, place) = store::connect(&args.store).await?;
    println!("queue demo on {place}");
    let name = format!("{}/{:x}/jobs", args.prefix, std::process::id());
    let mut violations = 0;

    // FIFO: every job to exactly one consumer.
    let total = args.producers * args.jobs;
    let started = Instant::now();
    let producers: Vec<_> = (0..args.producers)
        .map(|p| {
            let queue = Queue::new(backend.clone(), &name).expect("valid name");
            let jobs = args.jobs;
            tokio::spawn(async move {
                for i in 0..jobs {
                    queue.enqueue(format!("{p}:{i}")).await?;
                }
                Ok::<_, coord::Error>(())
            })
        })
        .collect();
    let share = total / args.consumers.max(1);
    let consumers: Vec<_> = (0..args.consumers)
        .map(|c| {
            let queue = Queue::new(backend.clone(), &name).expect("valid name");
            // The first consumers take the remainder.
            let n = share + usize::from(c < total % args.consumers.max(1));
            tokio::spawn(async move {
                let mut got = Vec::with_capacity(n);
                for _ in 0..n {
                    let job = queue.dequeue_timeout(Duration::from_secs(30)).await?;
                    got.push(String::from_utf8_lossy(&job).into_owned());
                }
                Ok::<_, coord::Error>(got)
            })
        })
        .collect();
    for p in producers {
        p.await.expect("producer task")?;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (c, consumer) in consumers.into_iter().enumerate() {
        let got = consumer.await.expect("consumer task")?;
        let mut last: HashMap<String, usize> = HashMap::new();
        for job in got {
            let (p, i) = job.split_once(':').unwrap_or(("?", "0"));
            let i: usize = i.parse().unwrap_or(0);
            if let Some(before) = last.insert(p.to_string(), i) {
                if before > i {
                    println!("VIOLATION: consumer {c} got job {p}:{i} after {p}:{before}");
                    violations += 1;
                }
            }
            *seen.entry(job).or_default() += 1;
        }
    }
    let elapsed = started.elapsed();
    let twice = seen.values().filter(|n| **n > 1).count();
    let missing = total - seen.len();
    if twice > 0 || missing > 0 {
        println!("VIOLATION: {twice} job(s) delivered twice, {missing} lost");
        violations += twice + missing;
    }
    let queue = Queue::new(backend.clone(), &name)?;
    if let Some(extra) = queue.try_dequeue().await? {
        println!(
            "VIOLATION: a job left over: {:?}",
            String::from_utf8_lossy(&extra)
        );
        violations += 1;
    }
    println!(
        "fifo: {total} jobs from {} producers to {} consumers in {:.0} ms ({:.0} jobs/s), each delivered once",
        args.producers,
        args.consumers,
        elapsed.as_secs_f64() * 1e3,
        total as f64 / elapsed.as_secs_f64()
    );

    // Priorities: lowest number first, FIFO within one.
    let pname = format!("{}/{:x}/urgent", args.prefix, std::process::id());
    let urgent = PriorityQueue::new(backend.clone(), &pname)?;
    let jobs = [
        ("backup", 9),
        ("page-oncall", 0),
        ("reindex", 5),
        ("restart", 0),
        ("report", 9),
    ];
    for (job, priority) in jobs {
        urgent.enqueue(job, priority).await?;
    }
    let mut order = Vec::new();
    while let Some(job) = urgent.try_dequeue().await? {
        order.push(String::from_utf8_lossy(&job).into_owned());
    }
    let expected = ["page-oncall", "restart", "reindex", "backup", "report"];
    if order != expected {
        println!("VIOLATION: priority order {order:?}, expected {expected:?}");
        violations += 1;
    }
    println!("priority: {}", order.join(" < "));
    // Go's recipe keeps one bookkeeping key per priority used (`__name/<priority>`): tidy up.
    backend
        .delete(DeleteRequest::prefix(format!("__{pname}/")))
        .await?;

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
            producers: 4,
            consumers: 4,
            jobs: 50,
            store: store::mem(),
            prefix: "coord-test-queue".into(),
        };
        assert_eq!(run(args).await.unwrap(), 0, "violations");
    }
}
