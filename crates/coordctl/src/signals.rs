//! SIGINT, SIGTERM and SIGHUP, caught from the start so that no wait is ever left half-done.

use std::fmt;
use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::exit::Failure;

/// A signal that asks coordctl to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// SIGHUP (the terminal or ssh session closed): handled as SIGTERM.
    Hangup,
}

impl Stop {
    /// The signal, for passing on to a child.
    pub fn signal(self) -> nix::sys::signal::Signal {
        match self {
            Stop::Interrupt => nix::sys::signal::Signal::SIGINT,
            Stop::Terminate => nix::sys::signal::Signal::SIGTERM,
            Stop::Hangup => nix::sys::signal::Signal::SIGHUP,
        }
    }

    /// The exit code of a run it interrupted: 128 + the signal number, as shells report it.
    pub fn exit_code(self) -> i32 {
        128 + self.signal() as i32
    }

    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        self.signal().as_str()
    }

    /// The failure of a run it interrupted while `doing` something.
    pub fn interrupted(self, doing: impl fmt::Display) -> Failure {
        Failure::new(
            self.exit_code(),
            format!("interrupted by {} while {doing}", self.name()),
        )
    }
}

/// The stop signals, caught: once this exists they no longer kill the process.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    /// `None` when SIGHUP was ignored at start (`nohup`).
    hangup: Option<Signal>,
}

impl Signals {
    /// Starts catching SIGINT, SIGTERM and SIGHUP (unless SIGHUP was ignored).
    pub fn new() -> io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: if hangup_ignored() {
                None
            } else {
                Some(signal(SignalKind::hangup())?)
            },
        })
    }

    /// The next stop signal.
    ///
    /// Cancel safe: a signal that arrives while no one waits is kept for the next call.
    pub async fn recv(&mut self) -> Stop {
        let hangup = async {
            match &mut self.hangup {
                Some(hangup) => hangup.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.interrupt.recv() => Stop::Interrupt,
            _ = self.terminate.recv() => Stop::Terminate,
            _ = hangup => Stop::Hangup,
        }
    }
}

/// Whether SIGHUP was ignored when coordctl started, as under `nohup`. Catching it then would
/// undo what the user asked for, for coordctl and for its command too (exec resets a caught
/// signal to its default, but keeps an ignored one ignored), so it stays ignored.
fn hangup_ignored() -> bool {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    // There is no query-only call: swap in "ignore", then put back what was there unless it
    // was "ignore" too. A SIGHUP in between is lost, before coordctl did anything.
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    // SAFETY: only "ignore" and the action read back from the kernel are installed; no handler
    // of ours runs.
    match unsafe { sigaction(Signal::SIGHUP, &ignore) } {
        Ok(old) if old.handler() == SigHandler::SigIgn => true,
        Ok(old) => {
            // SAFETY: as above; `old` is what the kernel just returned.
            let _ = unsafe { sigaction(Signal::SIGHUP, &old) };
            false
        }
        Err(_) => false,
    }
}
