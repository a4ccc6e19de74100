//! The semaphore benchmark: W sessions share a semaphore of 3 permits, each acquiring 1 and
//! releasing it in a loop, as the Go anchor (`bench/go-recipes/semaphore`) does on etcd.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use coord_core::{CallCounts, Semaphore};
use serde_json::json;
use tokio::sync::Barrier;
use tokio::time::Instant;

use crate::scenarios::{per_op, Bench, BenchResultOr};
use crate::stats::BenchResult;

/// The semaphore's permits in `semaphore_w{W}_p3`.
pub const PERMITS: u32 = 3;

impl Bench {
    /// W sessions, each acquire(1) → check that at most 3 hold → release; latency = the
    /// acquire's wait. Timed from when every session is ready.
    pub(crate) async fn semaphore(&self) -> BenchResultOr<BenchResult> {
        let name = format!("semaphore_w{}_p{PERMITS}", self.workers);
        let per = self.iters / self.workers.max(1);
        let holders = Arc::new(AtomicI64::new(0));
        let violations = Arc::new(AtomicU64::new(0));
        let ready = Arc::new(Barrier::new(self.workers + 1));
        let mut tasks = Vec::new();
        for _ in 0..self.workers {
            let bench = self.clone();
            let (holders, violations, ready) = (holders.clone(), violations.clone(), ready.clone());
            tasks.push(tokio::spawn(async move {
                let (session, store) = bench.session(bench.ttl).await?;
                let semaphore = Semaphore::new(&session, "semaphore", PERMITS)?;
                ready.wait().await;
                let before = store.counts();
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    let permit = semaphore.acquire(1).await?;
                    lat.push(t.elapsed());
                    if holders.fetch_add(1, Ordering::SeqCst) >= i64::from(PERMITS) {
                        violations.fetch_add(1, Ordering::SeqCst);
                    }
                    bench.inside_critical_section().await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    permit.release().await?;
                }
                let spent = store.counts().since(&before);
                session.close().await?;
                BenchResultOr::Ok((lat, spent))
            }));
        }
        ready.wait().await;
        let start = Instant::now();
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
}
