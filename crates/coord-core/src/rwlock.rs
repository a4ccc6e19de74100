//! Distributed read-write lock, laid out as etcd's Go `recipes.RWMutex`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::Instrument;

use crate::error::{Error, Result};
use crate::guard::{LockGuard, LockKind};
use crate::names::name_prefix;
use crate::queue::Queue;
use crate::session::Session;
use crate::telemetry::{self, Attempt, PrimitiveMetrics, SpanOp};
use crate::wait::wait_turn;

/// Makes rwlock keys unique within a process; the lease id makes them unique across sessions.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A named read-write lock: many readers or one writer.
///
/// Layout (Go's recipe): readers write `name/read/<unique>`, writers `name/write/<unique>`, on
/// the session's lease. A reader waits for every earlier writer; a writer waits for every
/// earlier key. Order is by create revision, first come first served, so neither side starves:
/// a writer waits only for readers that came before it, and readers that come after a waiting
/// writer queue behind it.
///
/// # What one session may hold of one name
///
/// Any number of read locks, or write locks (taken in turn), but not both: asking for the
/// write lock while this session holds or awaits a read lock of the same name, or for a read
/// lock while it holds or awaits the write lock, fails at once with [`Error::WouldDeadlock`]
/// (it could only be granted after the session's own lock is released). Tasks that must wait
/// for each other use separate sessions. As with any fair read-write lock (tokio's too), a
/// task holding a read lock must not ask for a second one on the same name: a writer queued in
/// between makes it wait for ever.
#[derive(Debug, Clone)]
pub struct RwLock {
    session: Session,
    readers: Queue,
    writers: Queue,
    read_metrics: PrimitiveMetrics,
    write_metrics: PrimitiveMetrics,
}

impl RwLock {
    /// A read-write lock named `name` (see the crate docs for what names may be).
    pub fn new(session: &Session, name: impl AsRef<[u8]>) -> Result<RwLock> {
        let prefix = name_prefix(name.as_ref())?;
        let mut write_prefix = prefix.clone();
        write_prefix.extend_from_slice(b"write/");
        Ok(RwLock {
            session: session.clone(),
            readers: Queue {
                watch_prefix: prefix.clone(),
                ahead_prefix: write_prefix,
            },
            writers: Queue::same_prefix(prefix),
            read_metrics: PrimitiveMetrics::new(session, LockKind::Read.metric(), name.as_ref()),
            write_metrics: PrimitiveMetrics::new(session, LockKind::Write.metric(), name.as_ref()),
        })
    }

    /// Waits for a shared (read) lock. [`Error::WouldDeadlock`] at once when this session
    /// holds or awaits the write lock of this name.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future removes its key in the background.
    pub async fn read(&self) -> Result<LockGuard> {
        self.acquire_counted(LockKind::Read, true).await
    }

    /// Waits for the exclusive (write) lock. [`Error::WouldDeadlock`] at once when this
    /// session holds or awaits a read lock of this name.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future removes its key in the background.
    pub async fn write(&self) -> Result<LockGuard> {
        self.acquire_counted(LockKind::Write, true).await
    }

    /// A read lock if no writer holds or waits ahead, else [`Error::Locked`] at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`RwLock::read`].
    pub async fn try_read(&self) -> Result<LockGuard> {
        self.acquire_counted(LockKind::Read, false).await
    }

    /// The write lock if nobody holds or waits, else [`Error::Locked`] at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`RwLock::write`].
    pub async fn try_write(&self) -> Result<LockGuard> {
        self.acquire_counted(LockKind::Write, false).await
    }

    /// [`RwLock::read`] with a deadline: [`Error::Timeout`] when it passes, leaving no key.
    pub async fn read_timeout(&self, timeout: Duration) -> Result<LockGuard> {
        let attempt = self.metrics(LockKind::Read).attempt();
        let acquire = self.acquire(LockKind::Read, true, &attempt);
        attempt.deadline(timeout, acquire).await
    }

    /// [`RwLock::write`] with a deadline: [`Error::Timeout`] when it passes, leaving no key.
    pub async fn write_timeout(&self, timeout: Duration) -> Result<LockGuard> {
        let attempt = self.metrics(LockKind::Write).attempt();
        let acquire = self.acquire(LockKind::Write, true, &attempt);
        attempt.deadline(timeout, acquire).await
    }

    fn metrics(&self, kind: LockKind) -> &PrimitiveMetrics {
        match kind {
            LockKind::Read => &self.read_metrics,
            _ => &self.write_metrics,
        }
    }

    async fn acquire_counted(&self, kind: LockKind, wait: bool) -> Result<LockGuard> {
        let attempt = self.metrics(kind).attempt();
        self.acquire(kind, wait, &attempt).await
    }

    async fn acquire(&self, kind: LockKind, wait: bool, attempt: &Attempt) -> Result<LockGuard> {
        let (queue, side) = match kind {
            LockKind::Read => (&self.readers, "read/"),
            _ => (&self.writers, "write/"),
        };
        let mut key = queue.watch_prefix.clone();
        key.extend_from_slice(side.as_bytes());
        key.extend_from_slice(
            format!(
                "{:x}-{}",
                self.session.lease(),
                NEXT_KEY.fetch_add(1, Ordering::Relaxed)
            )
            .as_bytes(),
        );
        let name = telemetry::name_of(&self.writers.watch_prefix);
        let span = telemetry::span(SpanOp::Acquire, kind.metric(), name, &key);
        let acquired = async {
            self.session.check_usable()?;
            let claim = self.session.local().claim(
                &self.writers.watch_prefix,
                kind == LockKind::Write,
                wait,
            )?;
            let (held, enqueued) = queue
                .join(&self.session, key, b"", kind.name(), claim.into(), false)
                .await?;
            let ahead = enqueued.position;
            if wait {
                let (revision, watch) = wait_turn(queue, &held, enqueued).await?;
                // The prefix watch reports the key's loss from now on. A reader lets it go
                // (readers hold together: each one's release would reach every other) and sets
                // loss detection up on its first `lost()`.
                if let (Some(watch), LockKind::Write) = (watch, kind) {
                    held.keep_watching(watch);
                }
                return Ok((held, revision, ahead));
            }
            if queue.is_blocked(&held, &enqueued).await? {
                // The lock stays Locked even if this cleanup fails: it is retried in the
                // background.
                let _ = held.release().await;
                return Err(Error::Locked);
            }
            Ok((held, enqueued.revision, 0))
        };
        let (held, revision, ahead) = attempt.check(acquired.instrument(span.clone()).await)?;
        telemetry::record_held(&span, held.rev, revision);
        let held = held.with_hold(attempt.acquired(ahead));
        Ok(LockGuard::new(held, revision, kind))
    }
}
