//! A backend adapter that timestamps what passes through it — the start and end of each call,
//! and each watch event as the primitives receive it — to split a handoff into its parts.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use coord_core::{
    Backend, BackendLimits, DeleteRequest, DeleteResponse, LeaseGrant, LeaseId, LeaseTimeToLive,
    PutRequest, PutResponse, RangeRequest, RangeResponse, Result, Revision, Txn, TxnResponse,
    WatchRequest, WatchStream,
};
use futures::StreamExt;
use tokio::time::Instant;

/// What happened, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// A `txn` call started.
    TxnStart,
    /// A `txn` call returned.
    TxnEnd,
    /// A watch event reached the primitive's side of the stream.
    Event,
}

/// Wraps a backend and records [`Mark`]s (only `txn` calls and watch events; other calls pass
/// through). Clones share the record.
#[derive(Clone, Debug)]
pub struct Timeline<B> {
    inner: B,
    marks: Arc<Mutex<Vec<(Instant, Mark)>>>,
}

impl<B> Timeline<B> {
    /// Wraps `inner` with an empty record.
    pub fn new(inner: B) -> Self {
        Timeline {
            inner,
            marks: Arc::default(),
        }
    }

    fn mark(marks: &Mutex<Vec<(Instant, Mark)>>, m: Mark) {
        marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Instant::now(), m));
    }

    /// Takes the marks recorded so far.
    pub fn take(&self) -> Vec<(Instant, Mark)> {
        std::mem::take(&mut *self.marks.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait]
impl<B: Backend> Backend for Timeline<B> {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        Self::mark(&self.marks, Mark::TxnStart);
        let r = self.inner.txn(txn).await;
        Self::mark(&self.marks, Mark::TxnEnd);
        r
    }
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.inner.range(req).await
    }
    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        self.inner.put(req).await
    }
    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        self.inner.delete(req).await
    }
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.inner.lease_grant(ttl, id).await
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.inner.lease_revoke(id).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.inner.lease_keep_alive(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseTimeToLive> {
        self.inner.lease_time_to_live(id, with_keys).await
    }
    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        self.inner.lease_list().await
    }
    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        let stream = self.inner.watch(req).await?;
        let marks = self.marks.clone();
        Ok(Box::pin(
            stream.inspect(move |_| Self::mark(&marks, Mark::Event)),
        ))
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }
    fn limits(&self) -> BackendLimits {
        self.inner.limits()
    }
}
