//! A contender's key, from its write to its release, and how its loss is detected.
//!
//! A key is lost when the session ends or when anyone but its own release deletes it (an
//! operator's `etcdctl del`, a revoke). A watch reports the delete: a holder that waited on its
//! name's prefix watch keeps it (registered before its key was last seen), any other opens a
//! watch of its key on its first [`HeldKey::lost`] and reads the key once. After that, `lost()` only waits: it is cheap in a `select!` loop. The watch is
//! dropped before the release's delete is sent, so a holder is not told of its own release.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sync_wrapper::SyncWrapper;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::kv::{DeleteRequest, RangeRequest, Revision};
use crate::local::LocalHold;
use crate::session::Session;
use crate::telemetry::{Hold, LossCause};
use crate::txn::{Compare, CompareOp, Txn, TxnOp, TxnResponse};
use crate::watcher::{DeleteWatch, Watched};

/// A key written for a contender, deleted again unless it is handed over to a guard.
///
/// Dropping it once its write was sent (a cancelled acquire, a failed wait, a dropped guard)
/// spawns the delete on the session's runtime; the session's lease is the backstop.
pub(crate) struct HeldKey {
    pub session: Session,
    pub key: Arc<[u8]>,
    /// Create revision, `0` while unknown (then the cleanup deletes unconditionally, which is
    /// safe: the key is this session's alone, serialised by `local` where it is reused).
    pub rev: Revision,
    /// What holds the key, for messages ("mutex", "read lock", "leadership").
    pub what: &'static str,
    /// This session's in-process turn or claim on the name, kept until the key is gone.
    local: Option<LocalHold>,
    /// The key's name prefix (`name/`).
    watch_prefix: Vec<u8>,
    /// The transaction writing the key, while its answer is awaited (see `write_txn`). In a
    /// `SyncWrapper`, only ever reached through `&mut`, so that `&HeldKey` can cross awaits.
    in_flight: SyncWrapper<Option<BoxFuture<'static, Result<TxnResponse>>>>,
    /// Cancelled when the key's watch (or a read) finds the key deleted.
    gone: CancellationToken,
    /// Loss detection, once set up: kept while the key is held.
    watching: OnceCell<Watching>,
    /// Whether dropping this deletes the key: once its write was sent, until it is released.
    release_on_drop: bool,
    /// The hold's metrics, once the key is held (`coord_held`, hold time, loss by cause).
    hold: Option<Hold>,
}

/// Loss detection in place: the task that drains the key's watch (aborted, and the watch
/// cancelled, when this is dropped).
struct Watching(JoinHandle<()>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for HeldKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldKey")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("rev", &self.rev)
            .finish()
    }
}

impl HeldKey {
    /// A key about to be written (nothing to clean up until [`HeldKey::write_txn`] sends it).
    pub(crate) fn new(
        session: Session,
        key: Vec<u8>,
        watch_prefix: Vec<u8>,
        what: &'static str,
        local: Option<LocalHold>,
    ) -> Self {
        HeldKey {
            session,
            key: key.into(),
            rev: 0,
            what,
            local,
            watch_prefix,
            in_flight: SyncWrapper::new(None),
            gone: CancellationToken::new(),
            watching: OnceCell::new(),
            release_on_drop: false,
            hold: None,
        }
    }

    /// A key that exists already, created at `rev` (a resumed leadership).
    pub(crate) fn existing(mut self, rev: Revision) -> Self {
        self.rev = rev;
        self.release_on_drop = true;
        self
    }

    /// The key is held from now on: `hold` records how the hold ends.
    pub(crate) fn with_hold(mut self, hold: Hold) -> Self {
        self.hold = Some(hold);
        self
    }

    /// Records a loss that `error` reports (once per hold).
    fn record_loss(&self, error: &Error) {
        if let Some(hold) = &self.hold {
            hold.lost_by(error);
        }
    }

    /// The key's name prefix (`name/`), under which its watches are counted.
    pub(crate) fn name(&self) -> &[u8] {
        &self.watch_prefix
    }

    /// Runs the transaction that writes this key, kept in `self` while it is awaited. A store
    /// may still apply a write whose caller gave up, and a cleanup delete sent meanwhile could
    /// be applied *before* it and leave the key behind until the lease expires, holding up
    /// everyone queued after it. So when the acquire is dropped mid-call, the cleanup (in
    /// `Drop`) takes over this same call, waits for its outcome, then deletes what it wrote.
    /// (Awaited in place rather than spawned: an acquire that is not cancelled pays no task.)
    pub(crate) async fn write_txn(&mut self, txn: Txn) -> Result<TxnResponse> {
        let backend = self.session.backend().clone();
        self.release_on_drop = true;
        let call = self
            .in_flight
            .get_mut()
            .insert(Box::pin(async move { backend.txn(txn).await }));
        let result = call.await;
        *self.in_flight.get_mut() = None;
        result
    }

    /// The compare that holds while this key is the one it was: fencing for callers' txns.
    pub(crate) fn is_current(&self) -> Compare {
        Compare::create_revision(self.key.to_vec(), CompareOp::Equal, self.rev)
    }

    /// Deletes the key if it is still this one; when it was already gone, says why
    /// ([`Error::NotHeld`] or the session's end). After the session ended nothing is sent: its
    /// keys are gone, or (detached) belong to whoever took the lease over.
    pub(crate) async fn release(mut self) -> Result<()> {
        self.release_on_drop = false;
        // Not told of its own delete.
        drop(self.watching.take());
        if let Err(e) = self.session.check_usable() {
            self.record_loss(&e);
            return Err(e);
        }
        if let Some(hold) = &self.hold {
            hold.releasing();
        }
        match delete_if_current(&self.session, &self.key, self.rev).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                let e = self.gone_error().await;
                self.record_loss(&e);
                Err(e)
            }
            Err(e) => {
                // Leave it to the background retry.
                self.release_on_drop = true;
                Err(e)
            }
        }
    }

    /// Resolves when the key is lost: the session ended, or the key was deleted by anyone but
    /// this holder's own release. Returns the error that describes it; or, when loss cannot be
    /// watched at all, the error that prevents it (e.g. [`Error::PermissionDenied`]).
    /// Transient failures (store unreachable, restarting) are retried, never taken as "still
    /// held": the first call (unless the holder kept its prefix watch) watches the key and
    /// confirms it once; later calls only wait.
    pub(crate) async fn lost(&self) -> Error {
        let error = self.detect_loss().await;
        self.record_loss(&error);
        error
    }

    async fn detect_loss(&self) -> Error {
        let watching = tokio::select! {
            w = self.watching.get_or_try_init(|| self.watch_for_loss()) => w,
            _ = self.session.lost() => return self.session.ended_error(),
        };
        if let Err(e) = watching {
            return e;
        }
        tokio::select! {
            _ = self.gone.cancelled() => self.gone_error().await,
            _ = self.session.lost() => self.session.ended_error(),
        }
    }

    async fn watch_for_loss(&self) -> Result<Watching> {
        let session = &self.session;
        let watch = retry_transient(session, || {
            DeleteWatch::open(session, &self.watch_prefix, Watched::Key(self.key.to_vec()))
        })
        .await?;
        // The key was written before the watch was registered: confirm it is still there.
        if !retry_transient(session, || key_exists(session, &self.key, self.rev)).await? {
            self.gone.cancel();
        }
        Ok(self.drain(watch))
    }

    /// Keeps the prefix watch a waiter waited on to detect the key's loss with no further call:
    /// it was registered before the key was last seen, and reports every later delete.
    pub(crate) fn keep_watching(&self, watch: DeleteWatch) {
        let _ = self.watching.set(self.drain(watch));
    }

    fn drain(&self, watch: DeleteWatch) -> Watching {
        let task = watch_loss(
            self.session.clone(),
            self.key.clone(),
            self.watch_prefix.clone(),
            self.rev,
            watch,
            self.gone.clone(),
        );
        Watching(self.session.runtime().spawn(task))
    }

    /// Why the key is gone: the session's lease ended (asking the store, since the keep-alive
    /// task may not have noticed yet), or someone deleted the key ([`Error::NotHeld`]).
    pub(crate) async fn gone_error(&self) -> Error {
        // Closed counts from the start of close(), before its revoke deletes the key.
        if self.session.is_lost() || self.session.is_closed() {
            return self.session.ended_error();
        }
        let lease = self.session.lease();
        match self
            .session
            .backend()
            .lease_time_to_live(lease, false)
            .await
        {
            Err(Error::LeaseNotFound { .. }) => {
                self.session.lease_error(Error::LeaseNotFound { lease })
            }
            _ => Error::NotHeld { what: self.what },
        }
    }
}

impl Drop for HeldKey {
    fn drop(&mut self) {
        drop(self.watching.take());
        if let Some(hold) = self.hold.take() {
            // Lost before anyone asked: count it by what is known now (else released).
            if self.session.is_closed() {
                hold.lost(LossCause::SessionClosed);
            } else if self.session.is_lost() {
                hold.lost(LossCause::LeaseExpired);
            } else if self.gone.is_cancelled() {
                hold.lost(LossCause::KeyDeleted);
            }
        }
        if !self.release_on_drop {
            return;
        }
        let session = self.session.clone();
        let key = self.key.clone();
        let mut rev = self.rev;
        let local = self.local.take();
        let in_flight = self.in_flight.get_mut().take();
        session.clone().runtime().spawn(async move {
            // The acquire was cancelled while its write was in flight: learn what it wrote
            // before deleting, so the delete cannot overtake it. (Unknown outcome: delete the
            // key whatever its revision; it is this session's alone.)
            if let Some(call) = in_flight {
                if let Ok(resp) = call.await {
                    rev = if resp.succeeded {
                        resp.header_revision
                    } else {
                        resp.range(0)
                            .ok()
                            .and_then(|r| r.kvs.first().map(|kv| kv.create_revision))
                            .unwrap_or(0)
                    };
                }
            }
            let mut backoff = Duration::from_millis(50);
            // Retry until the delete lands or the lease (and so the key) is gone anyway.
            while !session.is_lost() {
                match delete_if_current(&session, &key, rev).await {
                    Ok(_) => break,
                    Err(e) if !e.is_retryable() => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "background release failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
            // Only now may another local holder write the key again.
            drop(local);
        });
    }
}

async fn delete_if_current(session: &Session, key: &[u8], rev: Revision) -> Result<bool> {
    let mut txn = Txn::new().and_then([TxnOp::Delete(DeleteRequest::key(key))]);
    if rev > 0 {
        txn = txn.when([Compare::create_revision(key, CompareOp::Equal, rev)]);
    }
    let resp = session.backend().txn(txn).await?;
    Ok(resp.succeeded)
}

/// Drains a delete watch that covers `key` until the key (created at `rev`) is deleted, then
/// cancels `gone`; ends with the session. When the watch breaks, watches the key alone from now
/// and reads it once, so no delete is missed.
async fn watch_loss(
    session: Session,
    key: Arc<[u8]>,
    name: Vec<u8>,
    rev: Revision,
    mut watch: DeleteWatch,
    gone: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            _ = session.lost() => return,
            batch = watch.next() => batch,
        };
        match batch {
            Ok((revision, keys)) => {
                if revision > rev && keys.iter().any(|k| **k == *key) {
                    gone.cancel();
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "loss watch broke; reopening");
                loop {
                    let reopened = async {
                        let w = retry_transient(&session, || {
                            DeleteWatch::open(&session, &name, Watched::Key(key.to_vec()))
                        })
                        .await?;
                        let exists =
                            retry_transient(&session, || key_exists(&session, &key, rev)).await?;
                        Ok::<_, Error>((w, exists))
                    };
                    match reopened.await {
                        Ok((w, true)) => {
                            watch = w;
                            break;
                        }
                        Ok((_, false)) => {
                            gone.cancel();
                            return;
                        }
                        Err(_) if session.is_lost() => return,
                        Err(e) => {
                            tracing::debug!(error = %e, "loss watch reopen failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        }
    }
}

async fn key_exists(session: &Session, key: &[u8], rev: Revision) -> Result<bool> {
    let resp = session
        .backend()
        .range(RangeRequest::key(key).with_keys_only())
        .await?;
    Ok(resp.kvs.first().is_some_and(|kv| kv.create_revision == rev))
}

/// Runs `call`, retrying transient failures (store unreachable, restarting, electing a raft
/// leader) while the session lives: a waiter keeps its place in the queue through a blip, and a
/// holder's loss detection is set up after one. The caller's deadline (a timeout around the
/// acquire) still bounds the whole wait; a lost session ends it with its error.
pub(crate) async fn retry_transient<T, F, Fut>(session: &Session, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut backoff = Duration::from_millis(20);
    loop {
        match call().await {
            // The session ended while the call failed (e.g. timed out while cut off): its end
            // is the reason, not the call's failure.
            Err(e) if e.is_retryable() && session.is_lost() => return Err(session.ended_error()),
            Err(e) if e.is_retryable() => {
                tracing::debug!(error = %e, "call failed; retrying");
                tokio::select! {
                    _ = session.lost() => return Err(session.ended_error()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}
