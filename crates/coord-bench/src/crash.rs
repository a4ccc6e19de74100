//! A backend a benchmark can "crash": from [`Crashable::crash`] on, every call fails as if the
//! process had lost its connection, so its session stops renewing its lease without revoking
//! it — what the store sees of a crashed or partitioned client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use coord_core::{
    Backend, BackendLimits, DeleteRequest, DeleteResponse, Error, LeaseGrant, LeaseId,
    LeaseTimeToLive, PutRequest, PutResponse, RangeRequest, RangeResponse, Result, Revision, Txn,
    TxnResponse, WatchRequest, WatchStream,
};
use tokio::time::Instant;

/// Wraps a backend; see the module docs. Clones share the crash switch.
#[derive(Clone, Debug)]
pub struct Crashable<B> {
    inner: B,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    crashed: AtomicBool,
    /// When the last successful lease grant or keep-alive was *sent*: the store renewed the
    /// lease no earlier than that, so it expires no earlier than this + TTL.
    last_renewal_sent: Mutex<Option<Instant>>,
}

impl<B> Crashable<B> {
    /// A working backend, until [`Crashable::crash`].
    pub fn new(inner: B) -> Self {
        Crashable {
            inner,
            shared: Arc::new(Shared {
                crashed: AtomicBool::new(false),
                last_renewal_sent: Mutex::new(None),
            }),
        }
    }

    /// From now on every call fails with [`Error::Unavailable`].
    pub fn crash(&self) {
        self.shared.crashed.store(true, Ordering::SeqCst);
    }

    /// When the last successful lease grant or renewal was sent.
    pub fn last_renewal_sent(&self) -> Option<Instant> {
        *self
            .shared
            .last_renewal_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> Result<()> {
        if self.shared.crashed.load(Ordering::SeqCst) {
            Err(Error::unavailable("crashed (benchmark)"))
        } else {
            Ok(())
        }
    }

    fn renewed(&self, sent: Instant) {
        *self
            .shared
            .last_renewal_sent
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(sent);
    }
}

#[async_trait]
impl<B: Backend> Backend for Crashable<B> {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.check()?;
        self.inner.txn(txn).await
    }
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.check()?;
        self.inner.range(req).await
    }
    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        self.check()?;
        self.inner.put(req).await
    }
    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        self.check()?;
        self.inner.delete(req).await
    }
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.check()?;
        let sent = Instant::now();
        let grant = self.inner.lease_grant(ttl, id).await?;
        self.renewed(sent);
        Ok(grant)
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.check()?;
        self.inner.lease_revoke(id).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.check()?;
        let sent = Instant::now();
        let left = self.inner.lease_keep_alive(id).await?;
        // Recorded even when answered after the crash: the store did renew the lease.
        self.renewed(sent);
        Ok(left)
    }
    async fn lease_time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseTimeToLive> {
        self.check()?;
        self.inner.lease_time_to_live(id, with_keys).await
    }
    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        self.check()?;
        self.inner.lease_list().await
    }
    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        self.check()?;
        self.inner.watch(req).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.check()?;
        self.inner.compact(revision).await
    }
    fn limits(&self) -> BackendLimits {
        self.inner.limits()
    }
}
