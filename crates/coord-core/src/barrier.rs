//! Barrier: one key that blocks every waiter while it exists, laid out as etcd's Go
//! `recipes.Barrier`.

use std::time::Duration;

use futures::StreamExt;

use crate::backend::{Backend, DynBackend};
use crate::error::{Error, Result};
use crate::kv::{DeleteRequest, KeyRange, RangeRequest};
use crate::names::name_prefix;
use crate::recipe_keys::create_txn;
use crate::watch::WatchRequest;

/// A barrier: while it is held, [`Barrier::wait`] blocks; [`Barrier::release`] lets every
/// waiter through at once.
///
/// Layout (Go's `recipes.Barrier`): the key `name` itself (no `/` after it), empty value, on no
/// lease: a barrier stays held until someone releases it, whoever raised it and whether or not
/// that process still runs. Go and Rust processes share one barrier on one etcd.
///
/// Unlike Go's `Wait` (which waits for a put *then* a delete, so a barrier held before the wait
/// began is only seen released after it is held and released once more), [`Barrier::wait`]
/// returns as soon as the key is gone: at once when it is not held, and on its delete
/// otherwise.
///
/// Needs no session: it is a handle on the store (`Clone`, cheap).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use coord::{mem::MemStore, Barrier};
///
/// let store = MemStore::new();
/// let gate = Barrier::new(store.clone(), "deploy/gate")?;
/// assert!(gate.hold().await?); // this call raised it
/// let waiter = {
///     let gate = Barrier::new(store, "deploy/gate")?;
///     tokio::spawn(async move { gate.wait().await })
/// };
/// assert!(gate.release().await?); // it was held
/// waiter.await.unwrap()?; // the waiter went through
/// gate.wait().await?; // released: returns at once
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Barrier {
    backend: DynBackend,
    key: Vec<u8>,
}

impl Barrier {
    /// The barrier named `name` (non-empty bytes, at most
    /// [`MAX_NAME_LEN`](crate::names::MAX_NAME_LEN)): its key is `name`.
    pub fn new(backend: impl Backend, name: impl AsRef<[u8]>) -> Result<Barrier> {
        name_prefix(name.as_ref())?;
        Ok(Barrier {
            backend: into_dyn(backend),
            key: name.as_ref().to_vec(),
        })
    }

    /// The barrier's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Holds the barrier: creates its key if absent. Returns whether this call created it
    /// (`false`: it was held already, as Go's `Hold` reports with `ErrKeyExists`).
    pub async fn hold(&self) -> Result<bool> {
        let resp = self.backend.txn(create_txn(&self.key, b"", 0, [])).await?;
        tracing::debug!(key = %String::from_utf8_lossy(&self.key), created = resp.succeeded, "barrier held");
        Ok(resp.succeeded)
    }

    /// Releases the barrier: deletes its key, letting every waiter through. Returns whether it
    /// was held.
    pub async fn release(&self) -> Result<bool> {
        let resp = self
            .backend
            .delete(DeleteRequest::key(self.key.clone()))
            .await?;
        tracing::debug!(key = %String::from_utf8_lossy(&self.key), "barrier released");
        Ok(resp.deleted > 0)
    }

    /// Whether the barrier is held now.
    pub async fn is_held(&self) -> Result<bool> {
        let read = RangeRequest::key(self.key.clone()).with_keys_only();
        Ok(!self.backend.range(read).await?.kvs.is_empty())
    }

    /// Waits until the barrier is not held: returns at once when its key is absent, else when
    /// it is deleted. A watch that breaks is opened again (and the key read again), so no
    /// release is missed; other store failures are returned.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads and watches; dropping it cancels its watch. Wrap it in
    /// [`tokio::time::timeout`] or use [`Barrier::wait_timeout`] for a deadline.
    pub async fn wait(&self) -> Result<()> {
        loop {
            // Registered before the read, so that a delete after the read is seen.
            let watch = WatchRequest::new(KeyRange::key(self.key.clone())).with_no_put();
            let mut deletes = self.backend.watch(watch).await?;
            let read = RangeRequest::key(self.key.clone()).with_keys_only();
            let read = self.backend.range(read).await?;
            if read.kvs.is_empty() {
                return Ok(());
            }
            loop {
                match deletes.next().await {
                    // A delete before the read: the key was held again since.
                    Some(Ok(event)) if event.revision() <= read.header_revision => {}
                    Some(Ok(_)) => return Ok(()),
                    Some(Err(e)) if !rewatch(&e) => return Err(e),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "barrier watch broke; watching again");
                        break;
                    }
                    None => break,
                }
            }
            tokio::time::sleep(REWATCH_PAUSE).await;
        }
    }

    /// [`Barrier::wait`] with a deadline: [`Error::Timeout`] when it passes.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Barrier::wait`].
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        tokio::time::timeout(timeout, self.wait())
            .await
            .map_err(|_| Error::Timeout)?
    }
}

/// Pause before a broken watch is opened again, so a flapping store is not hammered.
pub(crate) const REWATCH_PAUSE: Duration = Duration::from_millis(20);

/// Whether a watch that ended with `e` is worth opening again (from now, after a read): it
/// broke or fell behind the history; any other error (permission) would only repeat.
pub(crate) fn rewatch(e: &Error) -> bool {
    e.is_retryable() || matches!(e, Error::Compacted { .. })
}

pub(crate) fn into_dyn(backend: impl Backend) -> DynBackend {
    std::sync::Arc::new(backend)
}
