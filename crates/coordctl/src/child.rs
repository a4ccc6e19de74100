//! Running a command while a lock is held.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use coord_core::LockGuard;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::exit::{Failure, CANNOT_EXECUTE, ERROR, LOST, NOT_FOUND};
use crate::signals::{Signals, Stop};

/// Runs `command` with the lock's key and fencing token in its environment and waits for it.
///
/// Returns its exit code (128 + N when signal N killed it). SIGTERM is passed on to it; SIGINT
/// is not, as a Ctrl-C in a terminal reaches it directly (it runs in coordctl's process group,
/// so it can read the terminal), as with `etcdctl lock`. Either way coordctl waits for it to
/// exit. If the lock is lost first, the command and every process it started are killed
/// (SIGKILL) at once, since another holder may already be inside, and the run fails with
/// [`LOST`].
pub async fn run_holding(
    guard: &LockGuard,
    what: &str,
    command: &[OsString],
    signals: &mut Signals,
) -> Result<i32, Failure> {
    let (program, args) = command.split_first().expect("a command");
    let shown = program.to_string_lossy().into_owned();
    crate::reap::become_subreaper();
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("COORD_LOCK_KEY", std::ffi::OsStr::from_bytes(guard.key()))
        .env("COORD_FENCING_TOKEN", guard.fencing_token().to_string())
        .spawn()
        .map_err(|e| {
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
                if stop == Stop::Terminate {
                    if let Some(pid) = pid {
                        let _ = kill(pid, Signal::SIGTERM);
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

/// The exit code a shell would report for `status`.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(ERROR)
}
