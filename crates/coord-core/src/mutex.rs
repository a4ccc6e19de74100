//! Distributed mutex, wire-compatible with etcd's Go `concurrency.Mutex`.

use std::time::Duration;

use tracing::Instrument;

use crate::error::{Error, Result};
use crate::guard::{LockGuard, LockKind};
use crate::held::HeldKey;
use crate::names::{name_prefix, session_key};
use crate::queue::{Enqueued, Queue};
use crate::session::Session;
use crate::telemetry::{self, Attempt, PrimitiveMetrics, SpanOp};
use crate::wait::wait_turn;

/// The `primitive` label of a mutex's metrics and spans.
const METRIC: &str = "mutex";

/// A named lock shared by every session that uses the same name on the same store.
///
/// Layout (Go's): each contender writes `name/<lease id in hex>` with an empty value on its
/// session's lease; the key with the smallest create revision holds the lock, the others wait
/// in create-revision order (FIFO). Within one session, holders of one name take turns
/// in-process, since they share the session's key.
#[derive(Debug, Clone)]
pub struct Mutex {
    session: Session,
    queue: Queue,
    key: Vec<u8>,
    metrics: PrimitiveMetrics,
}

impl Mutex {
    /// A mutex named `name` (see the crate docs for what names may be).
    pub fn new(session: &Session, name: impl AsRef<[u8]>) -> Result<Mutex> {
        let prefix = name_prefix(name.as_ref())?;
        Ok(Mutex {
            session: session.clone(),
            key: session_key(&prefix, session.lease()),
            metrics: PrimitiveMetrics::new(session, METRIC, name.as_ref()),
            queue: Queue::same_prefix(prefix),
        })
    }

    /// The key this session writes to contend: `name/<lease hex>`.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Waits until the lock is held.
    ///
    /// Fails with [`Error::SessionExpired`] if the session ends while waiting (never returns a
    /// guard for a lock it does not hold), [`Error::SessionClosed`] after `close`,
    /// [`Error::NotHeld`] if its key is deleted while it waits (an operator removed it), or a
    /// backend error. On any failure the contender key is removed.
    ///
    /// Within one session, holders of one name take turns in-process (they share the key): a
    /// second `lock` waits for the first guard of this session to be released, so a task must
    /// not lock a name it already holds through the same session.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future removes the contender key in the background (and the
    /// lease TTL is the backstop), so nobody waits behind an abandoned attempt. Wrap it in
    /// [`tokio::time::timeout`] or use [`Mutex::lock_timeout`] for a deadline.
    pub async fn lock(&self) -> Result<LockGuard> {
        let attempt = self.metrics.attempt();
        self.lock_with(&attempt).await
    }

    async fn lock_with(&self, attempt: &Attempt) -> Result<LockGuard> {
        let span = self.span();
        let locked = async {
            let (held, enqueued) = self.join(true).await?;
            let ahead = enqueued.position;
            let (revision, watch) = wait_turn(&self.queue, &held, enqueued).await?;
            if let Some(watch) = watch {
                held.keep_watching(watch);
            }
            Ok((held, revision, ahead))
        };
        let (held, revision, ahead) = attempt.check(locked.instrument(span.clone()).await)?;
        telemetry::record_held(&span, held.rev, revision);
        let held = held.with_hold(attempt.acquired(ahead));
        Ok(LockGuard::new(held, revision, LockKind::Mutex))
    }

    fn span(&self) -> tracing::Span {
        let name = telemetry::name_of(&self.queue.watch_prefix);
        telemetry::span(SpanOp::Acquire, METRIC, name, &self.key)
    }

    /// [`Mutex::lock`] with a deadline: [`Error::Timeout`] when it passes, leaving no key.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Mutex::lock`].
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard> {
        let attempt = self.metrics.attempt();
        attempt.deadline(timeout, self.lock_with(&attempt)).await
    }

    /// Takes the lock if nobody holds it, else fails at once with [`Error::Locked`] (after
    /// removing its contender key). A guard of this same session on this name counts as a
    /// holder: `try_lock` does not wait for it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Mutex::lock`].
    pub async fn try_lock(&self) -> Result<LockGuard> {
        let attempt = self.metrics.attempt();
        let span = self.span();
        let tried = async {
            let (held, enqueued) = self.join(false).await?;
            if self.queue.is_blocked(&held, &enqueued).await? {
                // The lock stays Locked even if this cleanup fails: it is retried in the
                // background.
                let _ = held.release().await;
                return Err(Error::Locked);
            }
            Ok((held, enqueued.revision))
        };
        let (held, revision) = attempt.check(tried.instrument(span.clone()).await)?;
        telemetry::record_held(&span, held.rev, revision);
        let held = held.with_hold(attempt.acquired(0));
        Ok(LockGuard::new(held, revision, LockKind::Mutex))
    }

    async fn join(&self, wait: bool) -> Result<(HeldKey, Enqueued)> {
        let turn = self.session.turn(&self.key, wait).await?;
        self.queue
            .join(
                &self.session,
                self.key.clone(),
                b"",
                LockKind::Mutex.name(),
                turn.into(),
                true,
            )
            .await
    }
}
