//! Spawning children that die with the test process, as the right OS user; picking a port;
//! reading `/proc`.

use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};

use crate::error::HarnessError;

/// The OS user that runs `initdb` and `postgres`: both refuse to run as root, so when we are
/// root it is the `postgres` user (the one the Debian packages create), else ourselves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunAs {
    /// uid and gid to switch to; `None`: stay who we are.
    ids: Option<(u32, u32)>,
}

impl RunAs {
    pub(crate) fn detect() -> Result<RunAs, HarnessError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(RunAs { ids: None });
        }
        let user = User::from_name("postgres")
            .map_err(|e| HarnessError::new("looking up the `postgres` OS user").with_source(e))?
            .ok_or_else(|| {
                HarnessError::new(
                    "running as root, and there is no `postgres` OS user to run PostgreSQL as \
                     (initdb and postgres refuse root; `apt-get install postgresql` creates it)",
                )
            })?;
        Ok(RunAs {
            ids: Some((user.uid.as_raw(), user.gid.as_raw())),
        })
    }

    /// Hands `path` to that user (a no-op when we run as ourselves).
    pub(crate) fn chown(&self, path: &Path) -> io::Result<()> {
        match self.ids {
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }

    /// Makes `cmd` switch to that user between fork and exec (dropping supplementary groups).
    pub(crate) fn apply(&self, cmd: &mut Command) {
        if let Some((uid, gid)) = self.ids {
            cmd.uid(uid).gid(gid);
        }
    }
}

/// Removes the `PG*` variables (`PGDATA`, `PGPORT`, `PGHOST`, `PGUSER`, …) of the test's
/// environment from `cmd`: they would point initdb, postgres and psql elsewhere.
pub(crate) fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

/// A free port on 127.0.0.1, found by binding port 0 and releasing it. Another process may take
/// it before postgres binds it: callers retry when postgres cannot bind.
pub(crate) fn free_port() -> io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|a| a.port())
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from one long-lived helper thread, with `SIGKILL` as its parent-death signal:
/// Linux delivers it when the thread that forked the child ends, and that thread lives as long as
/// the test process, so no postmaster outlives a test run, even one that aborts (and its
/// backends exit when they see the postmaster gone).
///
/// The signal is set in `pre_exec`, which the standard library runs *after* it switched to the
/// uid and gid set with [`RunAs::apply`]: the kernel clears the parent-death signal when a
/// process changes credentials, so it must be set after the switch (`runuser`/`su`/`setpriv`
/// would lose it, and `runuser`/`su` also fork, leaving the signal on the wrong process).
pub(crate) fn spawn(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from));
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("pg-harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the pg-harness spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("pg-harness spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("pg-harness spawner thread is gone"))?
}

/// Sends `signal` to `pid`, ignoring errors (the process may be gone).
pub(crate) fn signal(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`, …) and the parent pid, or `None`
/// when there is no such process.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces and parentheses: split at the last.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The pids whose parent is `pid`.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| matches!(stat(p), Some((_, ppid)) if ppid == pid))
        .collect()
}

/// Whether the process is stopped by a signal (state `T`), or gone.
pub(crate) fn is_stopped_or_gone(pid: u32) -> bool {
    matches!(stat(pid), None | Some(('T' | 't' | 'Z' | 'X', _)))
}

/// Whether the process is gone (or a zombie: it holds no memory and no locks any more).
pub(crate) fn is_gone(pid: u32) -> bool {
    matches!(stat(pid), None | Some(('Z' | 'X', _)))
}

/// Polls `done` every millisecond for at most `timeout`; returns its last answer.
pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The last `lines` lines of a log file (at most the last 64 KiB of it).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::from("(no log)\n");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat() {
        let me = std::process::id();
        let (state, ppid) = stat(me).unwrap();
        assert!(state.is_ascii_uppercase());
        assert!(ppid > 0);
        assert!(!is_gone(me));
        assert!(children_of(ppid).contains(&me));
    }
}
