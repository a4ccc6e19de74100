//! The STM benchmark: concurrent transfers between accounts, the workload of the Go anchor
//! `bench/go-recipes/stm` (etcd's `concurrency.NewSTM`), so the two compare on one etcd.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use coord_core::stm::{self, Isolation};
use coord_core::{Backend, CallCounts, DeleteRequest, DynBackend, Error, PutRequest, RangeRequest};
use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use crate::scenarios::{per_op, Bench, BenchResultOr};
use crate::stats::BenchResult;

/// Accounts the transfers move money between (as the Go anchor's default).
const ACCOUNTS: usize = 10;
/// Every account's starting balance: transfers never run out.
const START_BALANCE: i64 = 1_000_000;

fn account(i: usize) -> String {
    format!("acct/{i}")
}

fn balance(value: Option<Vec<u8>>) -> i64 {
    value
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

impl Bench {
    /// `workers` tasks, each on its own connection, make `iters` transfers in all with
    /// [`stm::run`] (`SerializableSnapshot`): each moves 1 from a random account to another,
    /// reading both and writing both. Latency = one transfer, retries included; `extra` has
    /// the attempts per transfer, the calls per transfer and whether the sum held.
    pub(crate) async fn stm_transfers(&self) -> BenchResultOr<BenchResult> {
        let name = format!("stm_transfers_w{}", self.workers);
        let admin = self.store().await?;
        for i in 0..ACCOUNTS {
            admin
                .put(PutRequest::new(account(i), START_BALANCE.to_string()))
                .await?;
        }
        let attempts = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..self.workers {
            let n = self.iters / self.workers + usize::from(w < self.iters % self.workers);
            let (bench, attempts) = (self.clone(), attempts.clone());
            tasks.push(tokio::spawn(async move {
                let store = bench.store().await?;
                let backend: DynBackend = Arc::new(store.clone());
                let before = store.counts();
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let (from, to) = {
                        let mut rng = rand::thread_rng();
                        let from = rng.gen_range(0..ACCOUNTS);
                        (from, (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS)
                    };
                    let t = Instant::now();
                    let committed =
                        stm::run(&backend, Isolation::SerializableSnapshot, |tx| async move {
                            let a = balance(tx.get(account(from)).await?);
                            let b = balance(tx.get(account(to)).await?);
                            if a >= 1 {
                                tx.put(account(from), (a - 1).to_string()).await?;
                                tx.put(account(to), (b + 1).to_string()).await?;
                            }
                            Ok::<_, Error>(())
                        })
                        .await?;
                    lat.push(t.elapsed());
                    attempts.fetch_add(u64::from(committed.attempts), Ordering::Relaxed);
                }
                BenchResultOr::Ok((lat, store.counts().since(&before)))
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
        let mut sum = 0;
        for i in 0..ACCOUNTS {
            let kv = admin.range(RangeRequest::key(account(i))).await?.kvs;
            sum += balance(kv.into_iter().next().map(|kv| kv.value));
        }
        admin.delete(DeleteRequest::prefix("acct/")).await?;
        let ops = lat.len() as u64;
        self.dump(&name, &lat)?;
        Ok(
            BenchResult::new(name, ops, seconds, &lat).with_extra(json!({
                "attempts_per_transfer": attempts.load(Ordering::Relaxed) as f64 / ops.max(1) as f64,
                "sum_violations": u64::from(sum != START_BALANCE * ACCOUNTS as i64),
                "accounts": ACCOUNTS,
                "calls": per_op(&calls, ops),
            })),
        )
    }
}
