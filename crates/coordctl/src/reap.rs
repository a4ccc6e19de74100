//! Killing a command and everything it started, when the lock it ran under is lost.
//!
//! Killing only the command would leave its children running (`sh -c 'a; b'` forks `a`), still
//! inside a critical section whose lock is gone. So coordctl makes itself the "child subreaper"
//! (Linux): descendants orphaned by the kill are re-parented to coordctl instead of init, where
//! they can be found and killed too, even ones that daemonized.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Makes this process the reaper of its orphaned descendants (Linux; elsewhere a no-op).
pub fn become_subreaper() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::debug!(error = %e, "cannot become a child subreaper");
    }
}

/// One process as `/proc/<pid>/stat` shows it.
struct Proc {
    pid: i32,
    ppid: i32,
    zombie: bool,
}

/// Every process visible in `/proc` (nothing where there is no `/proc`).
fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid …"; comm may hold spaces and parentheses.
        let mut rest = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
        let state = rest.next()?;
        let ppid = rest.next()?.parse().ok()?;
        Some(Proc {
            pid,
            ppid,
            zombie: state == "Z" || state == "X",
        })
    })
    .collect()
}

/// SIGKILLs `root` and every descendant of it that `/proc` shows now.
pub fn kill_tree(root: Pid) {
    let all = processes();
    let mut doomed = vec![root.as_raw()];
    let mut i = 0;
    while i < doomed.len() {
        let parent = doomed[i];
        doomed.extend(all.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        i += 1;
    }
    for pid in doomed {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// After the command itself was killed and reaped: kills whatever was re-parented to this
/// process (descendants that forked while being killed, or had daemonized), and reaps them,
/// until none is left or about a second has passed.
pub async fn kill_orphans() {
    let me = nix::unistd::getpid().as_raw();
    for _ in 0..100 {
        let children: Vec<Proc> = processes().into_iter().filter(|p| p.ppid == me).collect();
        if children.is_empty() {
            return;
        }
        for child in &children {
            let pid = Pid::from_raw(child.pid);
            if !child.zombie {
                kill_tree(pid);
            }
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::debug!("some processes the command started may still run");
}
