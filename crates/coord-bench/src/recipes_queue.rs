//! The recipe scenarios, against etcd's Go `contrib/recipes` (`bench/go-recipes/queues`, the
//! same shapes): `queue_throughput` (4 producers and 4 consumers on one [`Queue`], elements/s;
//! latency = one dequeue) and `barrier_release` (`--workers` waiters on a held [`Barrier`];
//! latency = release until the last waiter is through).

use std::time::Duration;

use coord_core::{Barrier, Queue};
use serde_json::json;
use tokio::time::Instant;

use crate::scenarios::{Bench, BenchResultOr};
use crate::stats::BenchResult;

/// Producers and consumers of `queue_throughput`, as the Go anchor's defaults.
pub const PRODUCERS: usize = 4;
/// See [`PRODUCERS`].
pub const CONSUMERS: usize = 4;
/// How long the waiters of `barrier_release` get to start waiting, as the Go anchor's
/// `-settle`.
const SETTLE: Duration = Duration::from_millis(50);

impl Bench {
    /// `--iters` elements, enqueued by [`PRODUCERS`] and dequeued by [`CONSUMERS`], all at once,
    /// each on its own connection; checks every element was delivered once.
    pub(crate) async fn queue_throughput(&self) -> BenchResultOr<BenchResult> {
        let name = format!("queue_throughput_p{PRODUCERS}c{CONSUMERS}");
        let per = self.iters / CONSUMERS;
        let total = per * CONSUMERS;
        let mut producers = Vec::new();
        for _ in 0..PRODUCERS {
            producers.push(Queue::new(self.store().await?, "queue")?);
        }
        let mut consumers = Vec::new();
        for _ in 0..CONSUMERS {
            consumers.push(Queue::new(self.store().await?, "queue")?);
        }
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (p, queue) in producers.into_iter().enumerate() {
            let n = total / PRODUCERS + usize::from(p < total % PRODUCERS);
            tasks.push(tokio::spawn(async move {
                for i in 0..n {
                    queue.enqueue(format!("{p}:{i}")).await?;
                }
                BenchResultOr::Ok(())
            }));
        }
        let mut takers = Vec::new();
        for queue in consumers {
            takers.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                let mut got = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    got.push(queue.dequeue().await?);
                    lat.push(t.elapsed());
                }
                BenchResultOr::Ok((lat, got))
            }));
        }
        for t in tasks {
            t.await??;
        }
        let mut lat = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut duplicates = 0u64;
        for t in takers {
            let (l, got) = t.await??;
            lat.extend(l);
            for v in got {
                duplicates += u64::from(!seen.insert(v));
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        self.dump(&name, &lat)?;
        Ok(
            BenchResult::new(name, total as u64, seconds, &lat).with_extra(json!({
                "duplicates": duplicates,
                "lost": total - seen.len(),
            })),
        )
    }

    /// `--iters / 10` rounds: hold, `--workers` waiters (each on its own connection) start
    /// waiting, release; latency = release until the last waiter is through.
    pub(crate) async fn barrier_release(&self) -> BenchResultOr<BenchResult> {
        let name = format!("barrier_release_w{}", self.workers);
        let rounds = (self.iters / 10).max(1);
        let holder = self.store().await?;
        let mut waiters = Vec::new();
        for _ in 0..self.workers {
            waiters.push(self.store().await?);
        }
        let mut lat = Vec::with_capacity(rounds);
        let mut early = 0u64;
        let start = Instant::now();
        for r in 0..rounds {
            let key = format!("barrier/r{r:06}");
            let barrier = Barrier::new(holder.clone(), &key)?;
            barrier.hold().await?;
            let mut tasks = Vec::new();
            for store in &waiters {
                let waiter = Barrier::new(store.clone(), &key)?;
                tasks.push(tokio::spawn(async move {
                    waiter.wait().await?;
                    BenchResultOr::Ok(Instant::now())
                }));
            }
            tokio::time::sleep(SETTLE).await;
            early += tasks.iter().filter(|t| t.is_finished()).count() as u64;
            let released = Instant::now();
            barrier.release().await?;
            let mut last = released;
            for t in tasks {
                last = last.max(t.await??);
            }
            lat.push(last - released);
        }
        let seconds = start.elapsed().as_secs_f64();
        self.dump(&name, &lat)?;
        Ok(
            BenchResult::new(name, rounds as u64, seconds, &lat).with_extra(json!({
                "through_before_release": early,
            })),
        )
    }
}
