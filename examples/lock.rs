//! Take a named lock on etcd, hold it for a random time, release it — in both styles.
//!
//! ```text
//! cargo run --example lock --features etcd                              # two rounds
//! cargo run --example lock --features etcd -- --rounds 5 --wait-timeout 3
//! ```
//!
//! Run it in two terminals to see one wait for the other. Round 1 releases explicitly with
//! `guard.unlock().await` (the outcome is reported); round 2 just drops the guard (RAII: the key
//! is deleted in the background); and so on alternately. The lock's key is printed as the store
//! has it before the wait, while held, and after the release. `--wait-timeout` bounds each wait;
//! Ctrl-C while waiting cancels the wait cleanly (no key is left for others to wait behind).
//!
//! The lock is shared with `etcdctl lock lock-demo` and Go's `concurrency.Mutex`.

mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use coord::{Error, LockGuard, Mutex, RangeRequest, Session};
use rand::Rng;

#[derive(Parser, Debug)]
#[command(about = "Take a named lock on etcd, hold it a random time, release it")]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdArgs,
    /// The lock's name.
    #[arg(long, default_value = "lock-demo")]
    name: String,
    /// How many times to take the lock; odd rounds unlock explicitly, even rounds drop.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Give up a wait after this many seconds.
    #[arg(long)]
    wait_timeout: Option<f64>,
    /// Shortest hold, in milliseconds.
    #[arg(long, default_value_t = 500)]
    min_hold_ms: u64,
    /// Longest hold, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    max_hold_ms: u64,
}

/// How a round releases the lock.
#[derive(Clone, Copy, Debug)]
enum Style {
    /// `guard.unlock().await`: deletes the key now and reports the outcome.
    Explicit,
    /// `drop(guard)`: the key is deleted in the background.
    Drop,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let start = Instant::now();
    let say = |what: String| println!("{:>8.3}s  {what}", start.elapsed().as_secs_f64());

    let session = match common::connect(&args.etcd).await {
        Ok(session) => session,
        Err(message) => {
            eprintln!("lock: {message}");
            std::process::exit(1);
        }
    };
    let mutex = match Mutex::new(&session, &args.name) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("lock: {e}");
            std::process::exit(1);
        }
    };
    let key = mutex.key().to_vec();
    say(format!(
        "session lease {:x} (TTL {} s); my key for lock {:?} is {}",
        session.lease(),
        session.ttl(),
        args.name,
        String::from_utf8_lossy(&key)
    ));

    // One Ctrl-C future for the whole run: listening starts at its first poll, and every
    // branch it wins ends the program.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut code = 0;
    for round in 1..=args.rounds {
        let style = if round % 2 == 1 {
            Style::Explicit
        } else {
            Style::Drop
        };
        say(format!("round {round} ({style:?} release)"));
        say(format!("  before: {}", describe(&session, &key).await));
        say(format!(
            "  waiting for {:?}; {}",
            args.name,
            holder(&session, &args.name).await
        ));
        let waited = Instant::now();
        let acquire = async {
            match args.wait_timeout {
                Some(secs) => mutex.lock_timeout(Duration::from_secs_f64(secs)).await,
                None => mutex.lock().await,
            }
        };
        let guard = tokio::select! {
            guard = acquire => guard,
            _ = &mut ctrl_c => {
                // The acquire future is dropped here: that withdraws the key in the background,
                // and closing the session below revokes the lease, which surely deletes it.
                say("  Ctrl-C: wait cancelled".to_string());
                code = 130;
                break;
            }
        };
        let guard = match guard {
            Ok(guard) => guard,
            Err(Error::Timeout) => {
                eprintln!(
                    "lock: gave up after {:.1} s waiting for {:?}: held elsewhere",
                    waited.elapsed().as_secs_f64(),
                    args.name
                );
                code = 3;
                break;
            }
            Err(e) => {
                eprintln!("lock: {e}");
                code = 1;
                break;
            }
        };
        say(format!(
            "  ACQUIRED after {:.0} ms, fencing token {}",
            waited.elapsed().as_secs_f64() * 1e3,
            guard.fencing_token()
        ));
        say(format!("  held:   {}", describe(&session, &key).await));

        let hold =
            rand::thread_rng().gen_range(args.min_hold_ms..=args.max_hold_ms.max(args.min_hold_ms));
        say(format!("  holding for {hold} ms"));
        let interrupted = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(hold)) => false,
            e = guard.lost() => {
                // The session could not keep the lease alive: stop touching the resource.
                eprintln!("lock: lost the lock while holding it: {e}");
                code = 1;
                break;
            }
            _ = &mut ctrl_c => true,
        };
        release(guard, style, &session, &key, &say).await;
        if interrupted {
            say("  Ctrl-C: released early".to_string());
            code = 130;
            break;
        }
    }
    if let Err(e) = session.close().await {
        eprintln!("lock: closing the session: {e}");
    }
    // The session's backend stays usable for reads after `close`.
    say(format!(
        "session closed (lease revoked); after: {}",
        describe(&session, &key).await
    ));
    std::process::exit(code);
}

async fn release(
    guard: LockGuard,
    style: Style,
    session: &Session,
    key: &[u8],
    say: &impl Fn(String),
) {
    match style {
        Style::Explicit => match guard.unlock().await {
            Ok(()) => say(format!(
                "  unlocked; after: {}",
                describe(session, key).await
            )),
            Err(e) => say(format!("  unlock failed: {e}")),
        },
        Style::Drop => {
            let dropped = Instant::now();
            drop(guard);
            say(format!(
                "  dropped the guard; right after: {}",
                describe(session, key).await
            ));
            // The delete runs in the background: watch it land.
            while present(session, key).await && dropped.elapsed() < Duration::from_secs(2) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            say(format!(
                "  {:.1} ms after the drop: {}",
                dropped.elapsed().as_secs_f64() * 1e3,
                describe(session, key).await
            ));
        }
    }
}

/// Who holds the lock now: the first key of the name by create revision, as Go's package says.
async fn holder(session: &Session, name: &str) -> String {
    let first = RangeRequest::first_created(format!("{name}/"));
    match session.backend().range(first).await {
        Ok(r) => match r.kvs.first() {
            Some(kv) => format!(
                "held by {} (token {})",
                String::from_utf8_lossy(&kv.key),
                kv.create_revision
            ),
            None => "nobody holds it".to_string(),
        },
        Err(e) => format!("cannot read the holder: {e}"),
    }
}

async fn present(session: &Session, key: &[u8]) -> bool {
    session
        .backend()
        .range(RangeRequest::key(key.to_vec()))
        .await
        .map(|r| !r.kvs.is_empty())
        .unwrap_or(false)
}

/// The key as the store has it.
async fn describe(session: &Session, key: &[u8]) -> String {
    let name = String::from_utf8_lossy(key);
    match session
        .backend()
        .range(RangeRequest::key(key.to_vec()))
        .await
    {
        Ok(r) => match r.kvs.first() {
            Some(kv) => format!(
                "key {name} exists (create revision {}, lease {:x}), store at revision {}",
                kv.create_revision, kv.lease, r.header_revision
            ),
            None => format!("key {name} absent, store at revision {}", r.header_revision),
        },
        Err(e) => format!("key {name}: cannot read: {e}"),
    }
}
