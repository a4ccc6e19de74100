//! Concurrent bank transfers with the STM: workers move money between accounts at once; the
//! total never changes, checked inside every attempt and at the end. Also counts the
//! transfers with a `Counter`.
//!
//! ```text
//! cargo run --example stm_transfers                       # on coord-mem
//! cargo run --example stm_transfers --features etcd -- --endpoints 127.0.0.1:2379
//! cargo run --example stm_transfers --features postgres -- --postgres postgres://user:pw@127.0.0.1/db
//! ```
//!
//! Exits with status 2 when a check fails (a sum that changed, a count that differs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use coord::stm::{self, Isolation, StmOptions};
use coord::{Backend, Counter, DynBackend, Error};
use tokio::task::JoinSet;

mod store;

#[derive(Parser, Debug)]
#[command(about = "Concurrent STM transfers between accounts, with a sum check")]
struct Args {
    /// Concurrent workers.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Accounts.
    #[arg(long, default_value_t = 10)]
    accounts: usize,
    /// Transfers per worker.
    #[arg(long, default_value_t = 50)]
    transfers: usize,
    /// Isolation level: snapshot, serializable, repeatable or committed. Only the two
    /// serializable ones keep the sum; the others show why.
    #[arg(long, default_value = "snapshot")]
    isolation: String,
    /// Where to run: coord-mem, etcd or PostgreSQL.
    #[command(flatten)]
    store: store::StoreArgs,
    /// Key prefix for everything the demo writes.
    #[arg(long, default_value = "coord-demo-stm")]
    prefix: String,
}

const START_BALANCE: i64 = 1000;

#[tokio::main]
async fn main() {
    store::finish("stm_transfers", run(Args::parse()).await)
}

/// A random number in `range` (the thread's generator, not kept across awaits).
fn pick<T: rand::distributions::uniform::SampleUniform + PartialOrd>(
    range: impl rand::distributions::uniform::SampleRange<T>,
) -> T {
    rand::Rng::gen_range(&mut rand::thread_rng(), range)
}

fn account(i: usize) -> String {
    format!("account/{i:03}")
}

fn balance(value: Option<Vec<u8>>) -> coord::Result<i64> {
    let Some(value) = value else { return Ok(0) };
    String::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::invalid("an account holds something that is not a number"))
}

/// Runs the demo; the number of broken promises it saw.
async fn run(args: Args) -> coord::Result<usize> {
    let isolation = match args.isolation.as_str() {
        "snapshot" => Isolation::SerializableSnapshot,
        "serializable" => Isolation::Serializable,
        "repeatable" => Isolation::RepeatableReads,
        "committed" => Isolation::ReadCommitted,
        other => return Err(Error::invalid(format!("unknown isolation level {other:?}"))),
    };
    if args.accounts < 2 || args.workers == 0 {
        return Err(Error::invalid("need at least 2 accounts and 1 worker"));
    }
    let (backend, what) = store::connect(&args.store).await?;
    // A fresh namespace per run, so runs never see each other's keys.
    let ns = format!("{}/{:x}/", args.prefix, rand::random::<u32>());
    let backend: DynBackend = Arc::new(coord::Prefixed::new(backend, ns.clone()));
    println!(
        "{} workers x {} transfers between {} accounts on {what} ({isolation:?}), namespace {ns}",
        args.workers, args.transfers, args.accounts
    );
    for i in 0..args.accounts {
        backend
            .put(coord::PutRequest::new(
                account(i),
                START_BALANCE.to_string(),
            ))
            .await?;
    }
    let total = START_BALANCE * args.accounts as i64;
    let done = Counter::new(&backend, "transfers-done")?;
    let bad_sums = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for worker in 0..args.workers {
        let (backend, done, bad_sums) = (backend.clone(), done.clone(), bad_sums.clone());
        let (accounts, transfers) = (args.accounts, args.transfers);
        workers.spawn(async move {
            let mut attempts = 0u64;
            for _ in 0..transfers {
                let from = pick(0..accounts);
                let to = (from + pick(1..accounts)) % accounts;
                let amount = pick(1..=100);
                // Every attempt reads every account (prefetched in one request) to check
                // the sum, then moves `amount` if `from` has it.
                let options = StmOptions::from(isolation).with_prefetch((0..accounts).map(account));
                let bad_sums = bad_sums.clone();
                let committed = stm::run(&backend, options, |tx| {
                    let bad_sums = bad_sums.clone();
                    async move {
                        let mut sum = 0;
                        for i in 0..accounts {
                            sum += balance(tx.get(account(i)).await?)?;
                        }
                        if sum != total {
                            bad_sums.fetch_add(1, Ordering::Relaxed);
                        }
                        let (a, b) = (
                            balance(tx.get(account(from)).await?)?,
                            balance(tx.get(account(to)).await?)?,
                        );
                        if a >= amount {
                            tx.put(account(from), (a - amount).to_string()).await?;
                            tx.put(account(to), (b + amount).to_string()).await?;
                        }
                        Ok::<_, Error>(())
                    }
                })
                .await?;
                attempts += u64::from(committed.attempts);
                done.add(1).await?;
            }
            Ok::<_, Error>((worker, attempts))
        });
    }
    let mut attempts = 0;
    while let Some(joined) = workers.join_next().await {
        let (worker, n) = joined.map_err(|e| Error::invalid(format!("a worker failed: {e}")))??;
        println!("  worker {worker}: {n} attempts");
        attempts += n;
    }
    let elapsed = started.elapsed();
    let mut sum = 0;
    for i in 0..args.accounts {
        let kv = backend
            .range(coord::RangeRequest::key(account(i)))
            .await?
            .kvs;
        sum += balance(kv.into_iter().next().map(|kv| kv.value))?;
    }
    let transactions = (args.workers * args.transfers) as u64;
    let counted = done.get().await?;
    println!();
    println!("summary");
    println!(
        "  transfers:             {transactions} in {:.0} ms ({:.0}/s)",
        elapsed.as_secs_f64() * 1e3,
        transactions as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  attempts:              {attempts} ({} conflicts retried)",
        attempts - transactions
    );
    println!("  counter of transfers:  {counted}");
    println!("  sum:                   {sum} (expected {total})");
    println!(
        "  attempts that saw another sum: {}",
        bad_sums.load(Ordering::Relaxed)
    );
    backend.delete(coord::DeleteRequest::prefix("")).await?;
    let mut violations = 0;
    if sum != total {
        println!("VIOLATION: the sum changed");
        violations += 1;
    }
    if counted != transactions as i64 {
        println!("VIOLATION: the counter says {counted} transfers");
        violations += 1;
    }
    if bad_sums.load(Ordering::Relaxed) > 0
        && matches!(
            isolation,
            Isolation::SerializableSnapshot | Isolation::Serializable
        )
    {
        println!("VIOLATION: a serializable attempt saw a sum other than {total}");
        violations += 1;
    }
    Ok(violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_coord_mem_without_violations() {
        let args = Args {
            workers: 8,
            accounts: 10,
            transfers: 30,
            isolation: "snapshot".into(),
            store: store::mem(),
            prefix: "coord-test-stm".into(),
        };
        assert_eq!(run(args).await.unwrap(), 0, "violations");
    }
}
