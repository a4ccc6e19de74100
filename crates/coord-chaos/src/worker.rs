//! The `chaos-worker` process: its line protocol, and a handle to drive one from a test.
//!
//! A test spawns a worker when a lock holder must really die (`SIGKILL`) or freeze (`SIGSTOP`):
//! the worker connects to its store (etcd, or PostgreSQL in a given schema), opens a session with a short TTL, takes a mutex, and reports on
//! stdout, one event per line ([`WorkerEvent`]). It then obeys commands on stdin:
//!
//! | command | what the worker does |
//! | --- | --- |
//! | `write KEY` | a fenced write: one transaction that puts its token into `KEY` only if the guard's `is_owner()` compare holds; reports [`WorkerEvent::Write`] |
//! | `sleep-write MS KEY` | sleeps `MS` ms, then `write KEY` (stop the process during the sleep to model a pause inside the critical section) |
//! | `unlock` | reports [`WorkerEvent::Releasing`], unlocks, reports [`WorkerEvent::Released`] |
//! | `exit` (or end of stdin) | closes the session and exits |
//!
//! Whenever the guard's `lost()` fires, the worker reports [`WorkerEvent::Lost`] (once).

use std::fmt;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;

use crate::history::Timestamp;
use crate::support::Store;

/// One line a worker prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerEvent {
    /// Session opened.
    Ready {
        /// The session's lease.
        lease: i64,
    },
    /// The lock is held.
    Acquired {
        /// The fencing token.
        token: i64,
        /// When `lock()` returned.
        at: Timestamp,
        /// The lock key, hex-encoded.
        key_hex: String,
    },
    /// A fenced write was tried.
    Write {
        /// The token written.
        token: i64,
        /// Whether the store accepted it (the `is_owner()` compare held).
        accepted: bool,
        /// When the answer came.
        at: Timestamp,
    },
    /// The guard's `lost()` fired.
    Lost {
        /// The error variant it reported (`SessionExpired`, `NotHeld`, …).
        error: String,
        /// When.
        at: Timestamp,
    },
    /// `unlock()` is about to be called.
    Releasing {
        /// When.
        at: Timestamp,
    },
    /// `unlock()` returned.
    Released {
        /// `ok` or the error variant.
        result: String,
    },
    /// Something failed.
    Failed {
        /// What was being done.
        op: String,
        /// The error variant.
        error: String,
    },
}

fn nanos(t: Timestamp) -> u128 {
    t.as_nanos()
}

fn from_nanos(s: &str) -> Option<Timestamp> {
    let n: u128 = s.parse().ok()?;
    Some(Duration::new(
        (n / 1_000_000_000) as u64,
        (n % 1_000_000_000) as u32,
    ))
}

impl fmt::Display for WorkerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerEvent::Ready { lease } => write!(f, "ready lease={lease}"),
            WorkerEvent::Acquired { token, at, key_hex } => {
                write!(f, "acquired token={token} at={} key={key_hex}", nanos(*at))
            }
            WorkerEvent::Write {
                token,
                accepted,
                at,
            } => write!(
                f,
                "write token={token} accepted={accepted} at={}",
                nanos(*at)
            ),
            WorkerEvent::Lost { error, at } => write!(f, "lost error={error} at={}", nanos(*at)),
            WorkerEvent::Releasing { at } => write!(f, "releasing at={}", nanos(*at)),
            WorkerEvent::Released { result } => write!(f, "released result={result}"),
            WorkerEvent::Failed { op, error } => write!(f, "failed op={op} error={error}"),
        }
    }
}

impl WorkerEvent {
    /// Parses one line; `None` when it is not an event.
    pub fn parse(line: &str) -> Option<WorkerEvent> {
        let mut words = line.split_whitespace();
        let kind = words.next()?;
        let fields: Vec<(&str, &str)> = words.filter_map(|w| w.split_once('=')).collect();
        let get = |name: &str| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        Some(match kind {
            "ready" => WorkerEvent::Ready {
                lease: get("lease")?.parse().ok()?,
            },
            "acquired" => WorkerEvent::Acquired {
                token: get("token")?.parse().ok()?,
                at: from_nanos(get("at")?)?,
                key_hex: get("key")?.to_string(),
            },
            "write" => WorkerEvent::Write {
                token: get("token")?.parse().ok()?,
                accepted: get("accepted")?.parse().ok()?,
                at: from_nanos(get("at")?)?,
            },
            "lost" => WorkerEvent::Lost {
                error: get("error")?.to_string(),
                at: from_nanos(get("at")?)?,
            },
            "releasing" => WorkerEvent::Releasing {
                at: from_nanos(get("at")?)?,
            },
            "released" => WorkerEvent::Released {
                result: get("result")?.to_string(),
            },
            "failed" => WorkerEvent::Failed {
                op: get("op")?.to_string(),
                error: get("error")?.to_string(),
            },
            _ => return None,
        })
    }
}

/// How to start a worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The store: etcd endpoints, or a PostgreSQL URL and schema.
    pub store: Store,
    /// The mutex name.
    pub name: String,
    /// Session TTL, seconds.
    pub ttl: i64,
    /// Request timeout of the worker's client.
    pub request_timeout: Duration,
}

/// A running worker process. Dropping it kills the process.
#[derive(Debug)]
pub struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::UnboundedReceiver<WorkerEvent>,
    pid: i32,
}

impl Worker {
    /// Starts `binary` (the `chaos-worker` executable) with `config`. The worker dies with the
    /// test process (parent-death signal) and when the handle is dropped.
    pub fn spawn(binary: &Path, config: &WorkerConfig) -> io::Result<Worker> {
        let mut cmd = std::process::Command::new(binary);
        cmd.arg("--endpoints")
            .arg(config.store.endpoints().join(","));
        if let Some(schema) = config.store.schema() {
            cmd.arg("--schema").arg(schema);
        }
        cmd.arg("--name")
            .arg(&config.name)
            .arg("--ttl")
            .arg(config.ttl.to_string())
            .arg("--request-timeout-ms")
            .arg(config.request_timeout.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: only prctl(2), async-signal-safe, runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
            });
        }
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let stdout = child.stdout.take().expect("stdout is piped");
        let stdin = child.stdin.take();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match WorkerEvent::parse(&line) {
                    Some(event) => {
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                    None => eprintln!("chaos-worker: {line}"),
                }
            }
        });
        Ok(Worker {
            child,
            stdin,
            events,
            pid,
        })
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The next event, or `None` when none came within `within` (or the worker exited).
    pub async fn next(&mut self, within: Duration) -> Option<WorkerEvent> {
        tokio::time::timeout(within, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for the first event `pick` accepts, skipping others; panics with what was seen
    /// when none comes within `within`.
    pub async fn expect<T>(
        &mut self,
        within: Duration,
        what: &str,
        mut pick: impl FnMut(&WorkerEvent) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(event) => {
                    if let Some(t) = pick(&event) {
                        return t;
                    }
                    seen.push(event);
                }
                None => panic!(
                    "worker {}: no {what} within {within:?}; saw {seen:?}",
                    self.pid
                ),
            }
        }
    }

    /// Sends one command line.
    pub async fn send(&mut self, command: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::other("stdin closed"))?;
        stdin.write_all(command.as_bytes()).await?;
        stdin.write_all(b"\n").await?;
        stdin.flush().await
    }

    /// Sends a signal (`SIGSTOP`, `SIGCONT`, `SIGKILL`, …).
    pub fn signal(&self, signal: Signal) {
        if self.pid > 0 {
            let _ = kill(Pid::from_raw(self.pid), signal);
        }
    }

    /// `SIGKILL`s the process and reaps it.
    pub async fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait().await;
    }

    /// Closes stdin (the worker then exits) and waits up to `within` for it to end; kills it
    /// after that.
    pub async fn finish(&mut self, within: Duration) {
        self.stdin = None;
        if tokio::time::timeout(within, self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_roundtrip_through_their_lines() {
        let at = Duration::new(1_700_000_000, 123_456_789);
        let events = [
            WorkerEvent::Ready { lease: 42 },
            WorkerEvent::Acquired {
                token: 17,
                at,
                key_hex: "6c2f3261".into(),
            },
            WorkerEvent::Write {
                token: 17,
                accepted: false,
                at,
            },
            WorkerEvent::Lost {
                error: "SessionExpired".into(),
                at,
            },
            WorkerEvent::Releasing { at },
            WorkerEvent::Released {
                result: "ok".into(),
            },
            WorkerEvent::Failed {
                op: "lock".into(),
                error: "Unavailable".into(),
            },
        ];
        for e in events {
            assert_eq!(WorkerEvent::parse(&e.to_string()), Some(e.clone()), "{e}");
        }
        assert_eq!(WorkerEvent::parse("hello world"), None);
        assert_eq!(WorkerEvent::parse(""), None);
    }
}
