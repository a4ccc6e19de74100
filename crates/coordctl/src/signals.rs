//! SIGINT and SIGTERM, caught from the start so that no wait is ever left half-done.

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
}

impl Stop {
    /// The signal, for passing on to a child.
    pub fn signal(self) -> nix::sys::signal::Signal {
        match self {
            Stop::Interrupt => nix::sys::signal::Signal::SIGINT,
            Stop::Terminate => nix::sys::signal::Signal::SIGTERM,
        }
    }

    /// The exit code of a run it interrupted: 128 + the signal number, as shells report it.
    pub fn exit_code(self) -> i32 {
        128 + self.signal() as i32
    }

    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        }
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
}

impl Signals {
    /// Starts catching SIGINT and SIGTERM.
    pub fn new() -> io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next stop signal.
    ///
    /// Cancel safe: a signal that arrives while no one waits is kept for the next call.
    pub async fn recv(&mut self) -> Stop {
        tokio::select! {
            _ = self.interrupt.recv() => Stop::Interrupt,
            _ = self.terminate.recv() => Stop::Terminate,
        }
    }
}
