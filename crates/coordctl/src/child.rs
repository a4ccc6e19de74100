//! Running a command while a lock (or a semaphore's permits) is held.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::exit::{Failure, CANNOT_EXECUTE, ERROR, LOST, NOT_FOUND};
use crate::lock::Held;
use crate::signals::{Signals, Stop};

/// Runs `command` with the lock's key and fencing token in its environment and waits for it.
///
/// Returns its exit code (128 + N when signal N killed it). SIGTERM and SIGHUP are passed on to
/// it; SIGINT is not, as a Ctrl-C in a terminal reaches it directly (it runs in coordctl's
/// process group, so it can read the terminal), as with `etcdctl lock`. Either way coordctl
/// waits for it to exit. If the lock is lost first, the command and every process it started
/// are killed (SIGKILL) at once, since another holder may already be inside, and the run fails
/// with [`LOST`]. If coordctl dies (even of SIGKILL), the kernel kills the command (Linux).
pub async fn run_holding<H: Held>(
    guard: &H,
    what: &str,
    command: &[OsString],
    signals: &mut Signals,
) -> Result<i32, Failure> {
    let (program, args) = command.split_first().expect("a command");
    let shown = program.to_string_lossy().into_owned();
    crate::reap::become_subreaper();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("COORD_LOCK_KEY", std::ffi::OsStr::from_bytes(guard.key()))
        .env("COORD_FENCING_TOKEN", guard.fencing_token().to_string());
    #[cfg(target_os = "linux")]
    {
        // The parent-death signal comes when the *thread* that forked exits, not the process.
        // tokio's `spawn` forks on the calling thread, and this runs in the future that `main`
        // drives with `block_on` on the main thread, which lives as long as coordctl (never in
        // a spawned task: a worker or blocking-pool thread may stop first and kill the command
        // early).
        debug_assert_eq!(
            nix::unistd::gettid(),
            nix::unistd::getpid(),
            "the command must be forked by the main thread"
        );
        let parent = nix::unistd::getpid();
        // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe
        // calls are allowed: `die_with` makes two system calls and allocates nothing.
        unsafe { cmd.pre_exec(move || die_with(parent)) };
    }
    let mut child = cmd.spawn().map_err(|e| {
        let code = match e.kind() {
            ErrorKind::NotFound => NOT_FOUND,
            _ => CANNOT_EXECUTE,
        };
        Failure::new(code, format!("cannot run `{shown}`: {e}"))
    })?;
    let pid = child.id().map(|id| Pid::from_raw(id as i32));
    tracing::debug!(?pid, command = %shown, "running");
    let lost = guard.lost();
    tokio::pin!(lost);
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status
                    .map_err(|e| Failure::new(ERROR, format!("waiting for `{shown}`: {e}")))?;
                return Ok(exit_code(status));
            }
            stop = signals.recv() => {
                // SIGHUP as SIGTERM: one sent to coordctl alone (`kill -HUP`, a supervisor)
                // would never reach the command otherwise; after a terminal hangup that reached
                // its process group too, this one only repeats a pending SIGHUP.
                if matches!(stop, Stop::Terminate | Stop::Hangup) {
                    if let Some(pid) = pid {
                        let _ = kill(pid, stop.signal());
                    }
                }
                tracing::debug!(signal = stop.name(), "waiting for the command to exit");
            }
            error = &mut lost => {
                match pid {
                    Some(pid) => crate::reap::kill_tree(pid),
                    None => { let _ = child.start_kill(); }
                }
                let _ = child.wait().await;
                crate::reap::kill_orphans().await;
                return Err(Failure::new(
                    LOST,
                    format!("{what} lost while `{shown}` ran ({error}); killed it"),
                ));
            }
        }
    }
}

/// In the forked child, before exec: asks the kernel to SIGKILL it when coordctl dies.
///
/// SIGKILL, not SIGTERM: once coordctl is gone its lease ends within the TTL and another holder
/// may enter, so a command that handles, ignores or is slow on SIGTERM would run on inside
/// someone else's critical section; as when the lock is lost, it is killed outright. Exec keeps
/// the setting (except for set-user-ID programs); the command's own children do not inherit it.
#[cfg(target_os = "linux")]
fn die_with(parent: Pid) -> std::io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    // Had coordctl died between fork and prctl, no signal would ever come (the child is already
    // someone else's): then the command must not start. The error fails the spawn; the child
    // exits without exec.
    if nix::unistd::getppid() != parent {
        return Err(nix::errno::Errno::ESRCH.into());
    }
    Ok(())
}

/// The exit code a shell would report for `status`.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(ERROR)
}
