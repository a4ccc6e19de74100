//! A backend adapter that timestamps what passes through it — the start and end of each call,
//! and each watch event as the primitives receive it — to split a handoff into its parts.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use coord_core::{Backend, Decorator, Result, Txn, TxnResponse, WatchRequest, WatchStream};
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
impl<B: Backend> Decorator for Timeline<B> {
    type Inner = B;
    fn inner(&self) -> &B {
        &self.inner
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        Self::mark(&self.marks, Mark::TxnStart);
        let r = self.inner.txn(txn).await;
        Self::mark(&self.marks, Mark::TxnEnd);
        r
    }
    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        let stream = self.inner.watch(req).await?;
        let marks = self.marks.clone();
        Ok(Box::pin(
            stream.inspect(move |_| Self::mark(&marks, Mark::Event)),
        ))
    }
}
