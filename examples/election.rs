//! An interactive election node on etcd: run it in two terminals and play leader and follower.
//!
//! ```text
//! cargo run --example election --features etcd -- --id node-1
//! cargo run --example election --features etcd -- --id node-2    # in another terminal
//! ```
//!
//! Then type commands, one a line:
//!
//! | command | what it does |
//! |---------|--------------|
//! | `elect` | campaign in the background (with the value `--id`); prints when elected |
//! | `proclaim VALUE` | as leader, replace the leader's value without giving up the lead |
//! | `resign` | give up the lead, or withdraw a campaign still waiting |
//! | `watch` | print the leader now and at every change (`watch` again stops) |
//! | `query` | print the current leader's key and value |
//! | `rev` | print this node's leadership revision (its fencing token) |
//! | `quit` | resign, close the session and exit (also Ctrl-C, end of input) |
//!
//! Works with `etcdctl elect election-demo VALUE` and `etcdctl elect -l election-demo` too: the
//! keys are laid out as etcd's Go `concurrency` package lays them out.

mod common;

use std::time::Instant;

use clap::Parser;
use coord::{Election, Error, Leadership, Revision};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

#[derive(Parser, Debug)]
#[command(about = "An election node on etcd, driven by commands on stdin")]
struct Args {
    #[command(flatten)]
    etcd: common::EtcdArgs,
    /// This node's name: the value it campaigns with.
    #[arg(long)]
    id: String,
    /// The election's name.
    #[arg(long, default_value = "election-demo")]
    name: String,
}

/// Prints with the time since start and the node's id.
#[derive(Clone)]
struct Say {
    start: Instant,
    id: String,
}

impl Say {
    fn say(&self, what: impl AsRef<str>) {
        println!(
            "{:>8.3}s [{}] {}",
            self.start.elapsed().as_secs_f64(),
            self.id,
            what.as_ref()
        );
    }
}

/// What the main loop asks of the candidate task.
enum Ask {
    Proclaim(String, oneshot::Sender<coord::Result<()>>),
    Rev(oneshot::Sender<Option<(Revision, Vec<u8>)>>),
    Resign(oneshot::Sender<coord::Result<()>>),
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let say = Say {
        start: Instant::now(),
        id: args.id.clone(),
    };
    let session = match common::connect(&args.etcd).await {
        Ok(session) => session,
        Err(message) => {
            eprintln!("election: {message}");
            std::process::exit(1);
        }
    };
    let election = match Election::new(&session, &args.name) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("election: {e}");
            std::process::exit(1);
        }
    };
    say.say(format!(
        "connected to {}; election {:?}; session lease {:x} (TTL {} s). Type `help`.",
        args.etcd.endpoints.join(","),
        args.name,
        session.lease(),
        session.ttl()
    ));

    let mut candidate: Option<(mpsc::Sender<Ask>, JoinHandle<()>)> = None;
    let mut watcher: Option<JoinHandle<()>> = None;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let line = tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => line,
                Ok(None) | Err(_) => break,
            },
            _ = &mut ctrl_c => {
                say.say("Ctrl-C");
                break;
            }
            _ = session.lost() => {
                say.say("the session is lost (its lease expired): exiting");
                break;
            }
        };
        // A campaign that ended (lost, failed) leaves its task finished.
        if candidate
            .as_ref()
            .is_some_and(|(_, task)| task.is_finished())
        {
            candidate = None;
        }
        let (command, rest) = match line.trim().split_once(' ') {
            Some((c, r)) => (c, r.trim()),
            None => (line.trim(), ""),
        };
        match command {
            "" => {}
            "elect" => {
                if candidate.is_some() {
                    say.say("already campaigning or leading");
                    continue;
                }
                let value = if rest.is_empty() { &args.id } else { rest };
                let (tx, rx) = mpsc::channel(4);
                let task = tokio::spawn(run_candidate(
                    election.clone(),
                    value.to_string(),
                    rx,
                    say.clone(),
                ));
                say.say(format!(
                    "campaigning with {value:?} as {}",
                    String::from_utf8_lossy(election.key())
                ));
                candidate = Some((tx, task));
            }
            "proclaim" => match &candidate {
                Some((tx, _)) => {
                    let (reply, answer) = oneshot::channel();
                    let _ = tx.send(Ask::Proclaim(rest.to_string(), reply)).await;
                    match answer.await {
                        Ok(Ok(())) => say.say(format!("proclaimed {rest:?}")),
                        Ok(Err(e)) => say.say(format!("proclaim failed: {e}")),
                        Err(_) => say.say("not campaigning"),
                    }
                }
                None => say.say("not leader (type `elect` first)"),
            },
            "resign" => match candidate.take() {
                Some((tx, task)) => {
                    let (reply, answer) = oneshot::channel();
                    let _ = tx.send(Ask::Resign(reply)).await;
                    match answer.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => say.say(format!("resign failed: {e}")),
                        Err(_) => say.say("was not campaigning"),
                    }
                    let _ = task.await;
                }
                None => say.say("not campaigning"),
            },
            "rev" => match &candidate {
                Some((tx, _)) => {
                    let (reply, answer) = oneshot::channel();
                    let _ = tx.send(Ask::Rev(reply)).await;
                    match answer.await {
                        Ok(Some((rev, key))) => say.say(format!(
                            "leadership rev {rev} (key {}): the fencing token of this term",
                            String::from_utf8_lossy(&key)
                        )),
                        _ => say.say("not leader yet"),
                    }
                }
                None => say.say("not campaigning"),
            },
            "query" => match election.leader().await {
                Ok(kv) => say.say(format!(
                    "leader: key {} value {:?} (rev {})",
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value),
                    kv.create_revision
                )),
                Err(Error::NoLeader) => say.say("no leader"),
                Err(e) => say.say(format!("query failed: {e}")),
            },
            "watch" => match watcher.take() {
                Some(task) => {
                    task.abort();
                    say.say("stopped watching");
                }
                None => watcher = Some(tokio::spawn(watch(election.clone(), say.clone()))),
            },
            "quit" | "exit" => break,
            "help" | "?" => say.say(
                "commands: elect [VALUE] | proclaim VALUE | resign | watch | query | rev | quit",
            ),
            other => say.say(format!("unknown command {other:?}; type `help`")),
        }
    }

    if let Some(task) = watcher {
        task.abort();
    }
    if let Some((tx, task)) = candidate {
        let (reply, answer) = oneshot::channel();
        if tx.send(Ask::Resign(reply)).await.is_ok() {
            let _ = answer.await;
        }
        let _ = task.await;
    }
    // Revokes the lease: whatever this node still had on the election is gone now.
    if let Err(e) = session.close().await {
        eprintln!("election: closing the session: {e}");
    }
}

/// Campaigns; once elected, serves proclaim/rev/resign until resigned or lost.
async fn run_candidate(election: Election, value: String, mut asks: mpsc::Receiver<Ask>, say: Say) {
    let campaign = election.campaign(value);
    tokio::pin!(campaign);
    let leadership: Leadership = loop {
        tokio::select! {
            elected = &mut campaign => match elected {
                Ok(leadership) => break leadership,
                Err(e) => {
                    say.say(format!("campaign failed: {e}"));
                    return;
                }
            },
            ask = asks.recv() => match ask {
                Some(Ask::Proclaim(_, reply)) => { let _ = reply.send(Err(Error::NotLeader)); }
                Some(Ask::Rev(reply)) => { let _ = reply.send(None); }
                Some(Ask::Resign(reply)) => {
                    // Dropping the campaign future withdraws the candidacy (its key is deleted).
                    say.say("campaign withdrawn");
                    let _ = reply.send(Ok(()));
                    return;
                }
                None => return,
            },
        }
    };
    say.say(format!(
        "ELECTED: leader key {} rev {}",
        String::from_utf8_lossy(leadership.key()),
        leadership.rev()
    ));
    let reply = {
        let lost = leadership.lost();
        tokio::pin!(lost);
        loop {
            tokio::select! {
                e = &mut lost => {
                    say.say(format!("LOST the leadership: {e}"));
                    return;
                }
                ask = asks.recv() => match ask {
                    Some(Ask::Proclaim(value, reply)) => {
                        let _ = reply.send(leadership.proclaim(value).await);
                    }
                    Some(Ask::Rev(reply)) => {
                        let _ = reply.send(Some((leadership.rev(), leadership.key().to_vec())));
                    }
                    Some(Ask::Resign(reply)) => break Some(reply),
                    None => break None,
                },
            }
        }
    };
    let result = leadership.resign().await;
    match &result {
        Ok(()) => say.say("resigned"),
        Err(e) => say.say(format!("resign: {e}")),
    }
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
}

/// Prints the leader now and at every change.
async fn watch(election: Election, say: Say) {
    let mut leaders = election.observe();
    while let Some(observation) = leaders.next().await {
        match observation {
            Ok(o) => match o.leader {
                Some(kv) => say.say(format!(
                    "watch: leader {:?} (key {}, rev {}) at revision {}",
                    String::from_utf8_lossy(&kv.value),
                    String::from_utf8_lossy(&kv.key),
                    kv.create_revision,
                    o.revision
                )),
                None => say.say(format!("watch: no leader at revision {}", o.revision)),
            },
            Err(e) => {
                say.say(format!("watch failed: {e}"));
                return;
            }
        }
    }
}
