//! `coordctl lock` and `coordctl rwlock`, and holding while a command runs (also for
//! `coordctl semaphore`).

use std::ffi::OsString;
use std::time::Duration;

use coord_core::{Error, LockGuard, Mutex, RwLock, Session};

use crate::cli::Global;
use crate::exit::{Failure, ERROR, LOST, OK, TIMEOUT};
use crate::signals::Signals;
use crate::{child, connect, human, print_lines};

/// Which lock to take.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    /// A mutex.
    Mutex,
    /// The read side of a read-write lock.
    Read,
    /// The write side of a read-write lock.
    Write,
}

impl Side {
    fn describe(self, name: &str) -> String {
        match self {
            Side::Mutex => format!("lock {name}"),
            Side::Read => format!("read lock {name}"),
            Side::Write => format!("write lock {name}"),
        }
    }
}

/// Takes the lock, then runs `command` or holds until a stop signal; see `coordctl lock --help`.
pub async fn run(
    global: &Global,
    signals: &mut Signals,
    side: Side,
    name: &str,
    command: &[OsString],
) -> Result<i32, Failure> {
    let what = side.describe(name);
    let session = connect::connect_session(global, signals).await?;
    let acquired = acquire(&session, side, name, global.timeout);
    let result = hold(global, signals, &what, acquired, command).await;
    connect::close(&session).await;
    result
}

/// What coordctl holds while a command runs or until a stop signal: a lock's guard or a
/// semaphore's permits.
pub(crate) trait Held {
    /// The key written for it.
    fn key(&self) -> &[u8];
    /// Its fencing token.
    fn fencing_token(&self) -> i64;
    /// Resolves when it is lost.
    async fn lost(&self) -> Error;
    /// Releases it.
    async fn release(self) -> coord_core::Result<()>;
}

impl Held for LockGuard {
    fn key(&self) -> &[u8] {
        LockGuard::key(self)
    }
    fn fencing_token(&self) -> i64 {
        LockGuard::fencing_token(self)
    }
    async fn lost(&self) -> Error {
        LockGuard::lost(self).await
    }
    async fn release(self) -> coord_core::Result<()> {
        self.unlock().await
    }
}

/// Waits for `acquired` (interrupted by a stop signal), then runs `command` while holding what
/// it gives, or holds it until a stop signal; releases it. `what` names it in messages.
pub(crate) async fn hold<H: Held>(
    global: &Global,
    signals: &mut Signals,
    what: &str,
    acquired: impl std::future::Future<Output = coord_core::Result<H>>,
    command: &[OsString],
) -> Result<i32, Failure> {
    let guard = tokio::select! {
        guard = acquired => match guard {
            Ok(guard) => guard,
            Err(Error::Timeout) => return Err(Failure::new(
                TIMEOUT,
                format!("timed out after {} waiting for {what}", human(global.timeout.unwrap_or_default())),
            )),
            Err(Error::Locked) => return Err(Failure::new(TIMEOUT, format!("{what} is held elsewhere"))),
            Err(e) => return Err(Failure::coord(format!("cannot take {what}"), &e)),
        },
        stop = signals.recv() => {
            // Dropping the acquire future withdraws the key; closing the session makes sure.
            return Err(stop.interrupted(format_args!("waiting for {what}")));
        }
    };
    tracing::info!(
        key = %String::from_utf8_lossy(guard.key()),
        token = guard.fencing_token(),
        "acquired {what}"
    );
    if command.is_empty() {
        print_lines(&[guard.key()])?;
        let stop = tokio::select! {
            stop = signals.recv() => stop,
            error = guard.lost() => return Err(Failure::new(LOST, format!("{what} lost: {error}"))),
        };
        tracing::info!(signal = stop.name(), "releasing {what}");
        release(guard, what, "").await?;
        return Ok(OK);
    }
    let code = child::run_holding(&guard, what, command, signals).await?;
    release(guard, what, " before the command finished").await?;
    Ok(code)
}

async fn acquire(
    session: &Session,
    side: Side,
    name: &str,
    timeout: Option<Duration>,
) -> coord_core::Result<LockGuard> {
    match side {
        Side::Mutex => {
            let mutex = Mutex::new(session, name)?;
            match timeout {
                Some(t) if t.is_zero() => mutex.try_lock().await,
                Some(t) => mutex.lock_timeout(t).await,
                None => mutex.lock().await,
            }
        }
        Side::Read | Side::Write => {
            let lock = RwLock::new(session, name)?;
            let read = matches!(side, Side::Read);
            match (timeout, read) {
                (Some(t), true) if t.is_zero() => lock.try_read().await,
                (Some(t), false) if t.is_zero() => lock.try_write().await,
                (Some(t), true) => lock.read_timeout(t).await,
                (Some(t), false) => lock.write_timeout(t).await,
                (None, true) => lock.read().await,
                (None, false) => lock.write().await,
            }
        }
    }
}

/// Releases; a lock or permit found already gone is [`LOST`].
async fn release<H: Held>(guard: H, what: &str, when: &str) -> Result<(), Failure> {
    match guard.release().await {
        Ok(()) => Ok(()),
        Err(e @ (Error::NotHeld { .. } | Error::SessionExpired { .. })) => Err(Failure::new(
            LOST,
            format!("{what} was lost{when}: {}", crate::exit::one_line(&e)),
        )),
        Err(e) => Err(Failure {
            code: ERROR,
            ..Failure::coord(format!("cannot release {what} (its TTL will)"), &e)
        }),
    }
}
