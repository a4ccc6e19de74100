//! Fenced writes: why a lock alone is not enough, and the one-line fix.
//!
//! ```text
//! cargo run --example fenced_write --features etcd
//! cargo run --example fenced_write --features etcd -- --endpoints 127.0.0.1:2379
//! ```
//!
//! Client A takes the lock and writes. Then A stalls — a GC pause, a `SIGSTOP`, a slow disk —
//! longer than its lease: etcd deletes A's lock key (here the stall is modelled by revoking A's
//! lease, which is what etcd does when the TTL runs out) and client B takes the lock and
//! writes. A wakes up still holding its guard, believing it holds the lock, and writes again.
//!
//! - A write guarded by the lock alone ("check, then write") lands, overwriting B's: two
//!   holders at once, as Jepsen's analysis of etcd 3.4 found with lease-based locks.
//! - A write that carries the guard's `is_owner()` compare in its own transaction is refused
//!   by etcd: the compare checks, in the same atomic step as the write, that A's lock key is
//!   still the one A created.
//! - A resource outside etcd uses the fencing token instead (`coord::Fence` here): it rejects
//!   any token lower than one it already accepted.

use std::time::Duration;

use clap::Parser;
use coord::etcd::EtcdConfig;
use coord::{
    Backend, DeleteRequest, Fence, LockGuard, Mutex, PutRequest, RangeRequest, Session, Txn, TxnOp,
};

#[derive(Parser, Debug)]
#[command(about = "A stale lock holder's write, refused by a fenced transaction")]
struct Args {
    /// etcd endpoints, comma-separated.
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    endpoints: Vec<String>,
    /// Key prefix for everything the example writes.
    #[arg(long, default_value = "fenced-write-demo/")]
    prefix: String,
}

/// Writes `value` to `key` only while `guard` still holds its lock: the guard's `is_owner()`
/// compare and the put are one transaction, so there is no gap between check and write.
async fn fenced_put(
    store: &dyn Backend,
    guard: &LockGuard,
    key: &str,
    value: &str,
) -> coord::Result<bool> {
    let txn = Txn::new()
        .when([guard.is_owner()])
        .and_then([TxnOp::Put(PutRequest::new(key, value))]);
    Ok(store.txn(txn).await?.succeeded)
}

async fn read(store: &dyn Backend, key: &str) -> coord::Result<String> {
    let resp = store.range(RangeRequest::key(key)).await?;
    Ok(resp
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .unwrap_or_default())
}

#[tokio::main]
async fn main() -> coord::Result<()> {
    let args = Args::parse();
    let store = EtcdConfig::new(args.endpoints.clone())
        .with_connect_timeout(Duration::from_secs(3))
        .with_request_timeout(Duration::from_secs(3))
        .connect()
        .await?;
    let lock = format!("{}lock", args.prefix);
    let fenced = format!("{}balance-fenced", args.prefix);
    let unfenced = format!("{}balance-unfenced", args.prefix);
    let fence = Fence::new(); // a resource outside etcd that checks tokens

    let a = Session::new(store.clone(), 5).await?;
    let b = Session::new(store.clone(), 5).await?;

    let guard_a = Mutex::new(&a, &lock)?
        .lock_timeout(Duration::from_secs(10))
        .await?;
    println!("A holds the lock, token {}", guard_a.fencing_token());
    fenced_put(&store, &guard_a, &fenced, "100 (by A)").await?;
    store
        .put(PutRequest::new(unfenced.clone(), "100 (by A)"))
        .await?;
    fence.accept(guard_a.fencing_token()).expect("A is current");

    // A stalls past its lease; etcd drops A's lock key.
    store.lease_revoke(a.lease()).await?;
    println!("A stalls longer than its lease: etcd deletes A's lock key");

    let guard_b = Mutex::new(&b, &lock)?
        .lock_timeout(Duration::from_secs(10))
        .await?;
    println!("B holds the lock, token {}", guard_b.fencing_token());
    fenced_put(&store, &guard_b, &fenced, "200 (by B)").await?;
    store
        .put(PutRequest::new(unfenced.clone(), "200 (by B)"))
        .await?;
    fence.accept(guard_b.fencing_token()).expect("B is current");

    // A wakes up, guard in hand, and writes.
    println!("A wakes up and writes with its old guard:");
    store
        .put(PutRequest::new(unfenced.clone(), "999 (by stale A)"))
        .await?;
    let accepted = fenced_put(&store, &guard_a, &fenced, "999 (by stale A)").await?;
    let token_check = fence.accept(guard_a.fencing_token());
    println!(
        "  unfenced write:         landed, the value is now {:?}",
        read(&store, &unfenced).await?
    );
    println!(
        "  write with is_owner():  {}, the value is still {:?}",
        if accepted { "ACCEPTED" } else { "refused" },
        read(&store, &fenced).await?
    );
    match token_check {
        Ok(()) => println!(
            "  token-checking resource: ACCEPTED token {}",
            guard_a.fencing_token()
        ),
        Err(stale) => println!("  token-checking resource: refused ({stale})"),
    }
    // A learns that it lost the lock, too late to stop that write but in time for the next.
    println!("  A's guard says: {}", guard_a.lost().await);
    assert!(
        !accepted,
        "a fenced write from a stale holder must be refused"
    );

    guard_b.unlock().await?;
    let _ = guard_a.unlock().await; // NotHeld / SessionExpired: A knows it lost the lock
    a.close().await?;
    b.close().await?;
    store.delete(DeleteRequest::prefix(args.prefix)).await?;
    Ok(())
}
