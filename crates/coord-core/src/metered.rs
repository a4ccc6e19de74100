//! A backend decorator that times every call and counts its errors (`coord_backend_*`), each in
//! a debug-level `coord.backend` span. Every [`Session`](crate::Session) applies it.

use std::future::Future;

use async_trait::async_trait;
use metrics::Histogram;
use tokio::time::Instant;
use tracing::Instrument;

use crate::backend::{Backend, Decorator};
use crate::error::Result;
use crate::kv::{
    DeleteRequest, DeleteResponse, LeaseId, PutRequest, PutResponse, RangeRequest, RangeResponse,
    Revision,
};
use crate::lease::{LeaseGrant, LeaseTimeToLive};
use crate::telemetry::{error_label, BACKEND_CALL, BACKEND_ERRORS};
use crate::txn::{Txn, TxnResponse};
use crate::watch::{WatchRequest, WatchStream};

/// The `op` label of each backend method, in [`Metered`]'s handle order.
const OPS: [&str; 11] = [
    "txn",
    "range",
    "put",
    "delete",
    "lease_grant",
    "lease_revoke",
    "lease_keep_alive",
    "lease_time_to_live",
    "lease_list",
    "watch",
    "compact",
];

/// Wraps a backend to record `coord_backend_call_seconds{op}` and
/// `coord_backend_errors_total{op, error}` for each call (see [`crate::telemetry`]).
///
/// The latency handles are registered once, when it is built, with the recorder installed
/// then.
#[derive(Debug)]
pub struct Metered<B: ?Sized> {
    latency: [Histogram; 11],
    inner: B,
}

impl<B: Backend> Metered<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Metered {
            latency: OPS.map(|op| metrics::histogram!(BACKEND_CALL, "op" => op)),
            inner,
        }
    }
}

impl<B: Backend + ?Sized> Metered<B> {
    async fn timed<T>(&self, op: usize, call: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let result = call
            .instrument(tracing::debug_span!("coord.backend", op = OPS[op]))
            .await;
        self.latency[op].record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            // Registered on the error path only: errors are rare, their words few.
            metrics::counter!(BACKEND_ERRORS, "op" => OPS[op], "error" => error_label(e))
                .increment(1);
        }
        result
    }
}

#[async_trait]
impl<B: Backend + ?Sized> Decorator for Metered<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.timed(0, self.inner.txn(txn)).await
    }
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        self.timed(1, self.inner.range(req)).await
    }
    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        self.timed(2, self.inner.put(req)).await
    }
    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        self.timed(3, self.inner.delete(req)).await
    }
    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        self.timed(4, self.inner.lease_grant(ttl, id)).await
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        self.timed(5, self.inner.lease_revoke(id)).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.timed(6, self.inner.lease_keep_alive(id)).await
    }
    async fn lease_time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseTimeToLive> {
        self.timed(7, self.inner.lease_time_to_live(id, with_keys))
            .await
    }
    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        self.timed(8, self.inner.lease_list()).await
    }
    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        self.timed(9, self.inner.watch(req)).await
    }
    async fn compact(&self, revision: Revision) -> Result<()> {
        self.timed(10, self.inner.compact(revision)).await
    }
}
