//! A read-write lock on etcd, driven from stdin: `r` takes a read lock, `w` a write lock, each
//! for a random time, in the background.
//!
//! ```text
//! cargo run --example rwlock --features etcd
//! cargo run --example rwlock --features etcd     # in another terminal
//! ```
//!
//! Type `r` several times: the readers hold the lock together. Type `w`: the writer waits for
//! every earlier reader, and readers that come after it wait for the writer (first come, first
//! served, so neither side starves). Several letters on a line (`rrwr`) start several holders.
//! `q`, Ctrl-C or the end of input: release everything and exit.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use coord::{LockKind, RwLock};
use rand::Rng;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinSet;

#[derive(Parser, Debug)]
#[command(about = "Take read or write locks on etcd from stdin: r, w, q")]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdArgs,
    /// The lock's name.
    #[arg(long, default_value = "rwlock-demo")]
    name: String,
    /// Shortest hold, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    min_hold_ms: u64,
    /// Longest hold, in milliseconds.
    #[arg(long, default_value_t = 4000)]
    max_hold_ms: u64,
}

/// Prints with the time since start.
#[derive(Clone, Copy)]
struct Say(Instant);

impl Say {
    fn say(&self, what: impl AsRef<str>) {
        println!(
            "{:>8.3}s  {}",
            self.0.elapsed().as_secs_f64(),
            what.as_ref()
        );
    }
}

/// What this process holds right now.
#[derive(Default)]
struct Holding {
    readers: AtomicUsize,
    writers: AtomicUsize,
}

impl Holding {
    fn describe(&self) -> String {
        format!(
            "this process holds {} read, {} write",
            self.readers.load(Ordering::SeqCst),
            self.writers.load(Ordering::SeqCst)
        )
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let say = Say(Instant::now());
    let session = match common::connect(&args.etcd).await {
        Ok(session) => session,
        Err(message) => {
            eprintln!("rwlock: {message}");
            std::process::exit(1);
        }
    };
    let lock = match RwLock::new(&session, &args.name) {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("rwlock: {e}");
            std::process::exit(1);
        }
    };
    say.say(format!(
        "read-write lock {:?}, session lease {:x}; type r, w or q",
        args.name,
        session.lease()
    ));

    let holding = Arc::new(Holding::default());
    let mut holders = JoinSet::new();
    let mut next = 0;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    'input: loop {
        let line = tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => line,
                Ok(None) | Err(_) => break,
            },
            _ = &mut ctrl_c => break,
            _ = session.lost() => {
                say.say("the session is lost (its lease expired)");
                break;
            }
            // Reap finished holders as they end.
            Some(_) = holders.join_next(), if !holders.is_empty() => continue,
        };
        for c in line.chars().filter(|c| !c.is_whitespace()) {
            let kind = match c.to_ascii_lowercase() {
                'r' => LockKind::Read,
                'w' => LockKind::Write,
                'q' => break 'input,
                other => {
                    say.say(format!("unknown command {other:?}: r, w or q"));
                    continue;
                }
            };
            next += 1;
            let hold = Duration::from_millis(
                rand::thread_rng()
                    .gen_range(args.min_hold_ms..=args.max_hold_ms.max(args.min_hold_ms)),
            );
            holders.spawn(hold_for(
                lock.clone(),
                kind,
                next,
                hold,
                holding.clone(),
                say,
            ));
        }
    }
    // Aborting a holder drops its guard or its waiting future: both delete the key in the
    // background, and closing the session revokes the lease, which deletes whatever is left.
    holders.abort_all();
    while holders.join_next().await.is_some() {}
    if let Err(e) = session.close().await {
        eprintln!("rwlock: closing the session: {e}");
    }
    say.say("released everything; bye");
}

async fn hold_for(
    lock: RwLock,
    kind: LockKind,
    n: usize,
    hold: Duration,
    holding: Arc<Holding>,
    say: Say,
) {
    let side = if kind == LockKind::Read {
        "read"
    } else {
        "write"
    };
    say.say(format!("#{n} wants the {side} lock"));
    let asked = Instant::now();
    let guard = match kind {
        LockKind::Read => lock.read().await,
        _ => lock.write().await,
    };
    let guard = match guard {
        Ok(guard) => guard,
        Err(e) => {
            say.say(format!("#{n} could not take the {side} lock: {e}"));
            return;
        }
    };
    let counter = if kind == LockKind::Read {
        &holding.readers
    } else {
        &holding.writers
    };
    counter.fetch_add(1, Ordering::SeqCst);
    say.say(format!(
        "#{n} HOLDS the {side} lock after {:.0} ms (key {}, token {}), for {} ms; {}",
        asked.elapsed().as_secs_f64() * 1e3,
        String::from_utf8_lossy(guard.key()),
        guard.fencing_token(),
        hold.as_millis(),
        holding.describe()
    ));
    tokio::select! {
        _ = tokio::time::sleep(hold) => {}
        e = guard.lost() => say.say(format!("#{n} LOST the {side} lock: {e}")),
    }
    counter.fetch_sub(1, Ordering::SeqCst);
    match guard.unlock().await {
        Ok(()) => say.say(format!(
            "#{n} released the {side} lock; {}",
            holding.describe()
        )),
        Err(e) => say.say(format!("#{n} release: {e}")),
    }
}
