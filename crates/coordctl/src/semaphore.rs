//! `coordctl semaphore`: run a command while holding permits of a named semaphore.

use coord_core::{Semaphore, SemaphorePermit, Session};

use crate::cli::{Global, SemaphoreArgs};
use crate::connect;
use crate::exit::Failure;
use crate::lock::{hold, Held};
use crate::signals::Signals;

impl Held for SemaphorePermit {
    fn key(&self) -> &[u8] {
        SemaphorePermit::key(self)
    }
    fn fencing_token(&self) -> i64 {
        SemaphorePermit::fencing_token(self)
    }
    async fn lost(&self) -> coord_core::Error {
        SemaphorePermit::lost(self).await
    }
    async fn release(self) -> coord_core::Result<()> {
        SemaphorePermit::release(self).await
    }
}

/// Takes `--weight` permits of the semaphore, then runs the command or holds until a stop
/// signal, as `coordctl lock` does; see `coordctl semaphore --help`.
pub async fn run(
    global: &Global,
    signals: &mut Signals,
    args: &SemaphoreArgs,
) -> Result<i32, Failure> {
    let what = format!(
        "semaphore {} ({} of {} permits)",
        args.name, args.weight, args.permits
    );
    let session = connect::connect_session(global, signals).await?;
    let acquired = acquire(&session, args, global);
    let result = hold(global, signals, &what, acquired, &args.command).await;
    connect::close(&session).await;
    result
}

async fn acquire(
    session: &Session,
    args: &SemaphoreArgs,
    global: &Global,
) -> coord_core::Result<SemaphorePermit> {
    let semaphore = Semaphore::new(session, &args.name, args.permits)?;
    match global.timeout {
        Some(t) if t.is_zero() => semaphore.try_acquire(args.weight).await,
        Some(t) => semaphore.acquire_timeout(args.weight, t).await,
        None => semaphore.acquire(args.weight).await,
    }
}
