//! Running a short-lived command (initdb, psql) with a deadline, its output captured.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::HarnessError;
use crate::process::spawn;

/// How often a running command is polled.
const POLL: Duration = Duration::from_millis(5);

/// A finished command.
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Finished {
    /// Its stdout when it exited with 0, else an error naming `what` and quoting its stderr.
    pub(crate) fn stdout_if_ok(self, what: &str) -> Result<String, HarnessError> {
        if self.status.success() {
            Ok(self.stdout)
        } else {
            Err(HarnessError::new(format!(
                "{what} failed ({}): {}",
                self.status,
                self.stderr.trim_end()
            )))
        }
    }
}

/// A command started by [`Running::start`]; wait for it with [`Running::wait`] (async) or
/// [`Running::wait_blocking`]. Past its deadline it is killed and the wait fails.
pub(crate) struct Running {
    what: String,
    child: Child,
    deadline: Instant,
    timeout: Duration,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

fn reader(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn text(handle: Option<JoinHandle<Vec<u8>>>) -> String {
    let bytes = handle.and_then(|h| h.join().ok()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Running {
    /// Spawns `cmd` (see [`spawn`]) with `input` on its stdin, and its stdout and stderr read by
    /// threads, so that neither pipe can fill up and block it.
    pub(crate) fn start(
        what: impl Into<String>,
        mut cmd: Command,
        input: Option<String>,
        timeout: Duration,
    ) -> Result<Running, HarnessError> {
        let what = what.into();
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child =
            spawn(cmd).map_err(|e| HarnessError::new(format!("spawning {what}")).with_source(e))?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            std::thread::spawn(move || {
                let _ = stdin.write_all(input.as_bytes());
            });
        }
        let stdout = child.stdout.take().map(reader);
        let stderr = child.stderr.take().map(reader);
        Ok(Running {
            what,
            child,
            deadline: Instant::now() + timeout,
            timeout,
            stdout,
            stderr,
        })
    }

    fn poll(&mut self) -> Result<Option<Finished>, HarnessError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Ok(Some(Finished {
                status,
                stdout: text(self.stdout.take()),
                stderr: text(self.stderr.take()),
            })),
            Ok(None) if Instant::now() < self.deadline => Ok(None),
            Ok(None) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(HarnessError::new(format!(
                    "{} did not finish within {:?} (killed)",
                    self.what, self.timeout
                )))
            }
            Err(e) => Err(HarnessError::new(format!("waiting for {}", self.what)).with_source(e)),
        }
    }

    /// Waits for the command, blocking the thread.
    pub(crate) fn wait_blocking(mut self) -> Result<Finished, HarnessError> {
        loop {
            if let Some(done) = self.poll()? {
                return Ok(done);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the command without blocking the runtime.
    pub(crate) async fn wait(mut self) -> Result<Finished, HarnessError> {
        loop {
            if let Some(done) = self.poll()? {
                return Ok(done);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropped unfinished (a cancelled wait): do not leave the command running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
