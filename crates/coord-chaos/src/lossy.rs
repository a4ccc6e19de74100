//! A backend wrapper that loses replies: the store applies a transaction, the client hears
//! only [`Error::Unavailable`] — what a timeout or a dropped connection does to a real client.
//! It can also apply a write late, whether or not its caller still waits — what a remote store
//! does with a request its client cancelled in flight.
//!
//! A client that retries such a call must not do twice what it meant to do once: an unlock
//! retried after its delete already landed must not delete a *newer* holder's key. The wrapper
//! also fails calls before they reach the store, and logs every transaction that deletes a key,
//! so a test can show which retry ran and what its compare decided.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use coord_core::{
    Backend, Decorator, DeleteRequest, Error, KeyRange, Result, Revision, Txn, TxnOp, TxnResponse,
};

/// What happened to one logged transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied, and the reply reached the caller.
    Applied {
        /// Whether its compares held.
        succeeded: bool,
    },
    /// Applied, but the caller got [`Error::Unavailable`].
    ReplyLost {
        /// Whether its compares held.
        succeeded: bool,
    },
    /// Failed before it reached the store: nothing changed.
    NotSent,
}

/// One transaction that deletes keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteTxn {
    /// The keys it deletes.
    pub keys: Vec<Vec<u8>>,
    /// Whether it was guarded by compares (an unguarded delete removes whatever is there).
    pub guarded: bool,
    /// What happened.
    pub outcome: Outcome,
    /// The store revision after it (0 when not sent).
    pub revision: Revision,
}

#[derive(Debug, Default)]
struct Control {
    lose_reply_of_delete: Mutex<Option<Vec<u8>>>,
    apply_late: Mutex<Option<(Vec<u8>, std::time::Duration)>>,
    fail_next: AtomicU64,
    log: Mutex<Vec<DeleteTxn>>,
}

/// Wraps a backend; clones share the controls.
#[derive(Clone, Debug)]
pub struct LossyBackend<B> {
    inner: B,
    ctl: Arc<Control>,
}

impl<B: Backend> LossyBackend<B> {
    /// Wraps `inner`, with no fault armed.
    pub fn new(inner: B) -> Self {
        LossyBackend {
            inner,
            ctl: Arc::default(),
        }
    }

    /// The next transaction that deletes `key` is applied, but its caller gets
    /// [`Error::Unavailable`].
    pub fn lose_reply_of_next_delete(&self, key: impl Into<Vec<u8>>) {
        *self
            .ctl
            .lose_reply_of_delete
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(key.into());
    }

    /// The next transaction that puts a key under `prefix` is applied `delay` later, in a task
    /// of its own: dropping the caller's future does not stop it (as a cancelled request
    /// already sent to a server is still applied).
    pub fn apply_next_write_late(&self, prefix: impl Into<Vec<u8>>, delay: std::time::Duration) {
        *self
            .ctl
            .apply_late
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((prefix.into(), delay));
    }

    /// The next `n` transactions fail with [`Error::Unavailable`] without reaching the store.
    pub fn fail_next_txns(&self, n: u64) {
        self.ctl.fail_next.store(n, Ordering::SeqCst);
    }

    /// Every transaction so far that deleted `key`, in order.
    pub fn deletes_of(&self, key: &[u8]) -> Vec<DeleteTxn> {
        self.ctl
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|t| t.keys.iter().any(|k| k == key))
            .cloned()
            .collect()
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

fn deleted_keys(txn: &Txn) -> Vec<Vec<u8>> {
    txn.success
        .iter()
        .chain(&txn.failure)
        .filter_map(|op| match op {
            TxnOp::Delete(DeleteRequest {
                range: KeyRange::Key(k),
                ..
            }) => Some(k.clone()),
            _ => None,
        })
        .collect()
}

#[async_trait]
impl<B: Backend + Clone> Decorator for LossyBackend<B> {
    type Inner = B;
    fn inner(&self) -> &B {
        &self.inner
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let keys = deleted_keys(&txn);
        let guarded = !txn.compares.is_empty();
        let log = |outcome: Outcome, revision: Revision| {
            if !keys.is_empty() {
                self.ctl
                    .log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(DeleteTxn {
                        keys: keys.clone(),
                        guarded,
                        outcome,
                        revision,
                    });
            }
        };
        let fail = self
            .ctl
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            log(Outcome::NotSent, 0);
            return Err(Error::unavailable(
                "injected: request lost before the store",
            ));
        }
        let lose = {
            let mut armed = self
                .ctl
                .lose_reply_of_delete
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match armed.as_ref() {
                Some(k) if keys.contains(k) => armed.take().is_some(),
                _ => false,
            }
        };
        let late = {
            let mut armed = self
                .ctl
                .apply_late
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let writes_under = |prefix: &[u8]| {
                txn.success
                    .iter()
                    .any(|op| matches!(op, TxnOp::Put(p) if p.key.starts_with(prefix)))
            };
            match armed.as_ref() {
                Some((prefix, _)) if writes_under(prefix) => armed.take().map(|(_, d)| d),
                _ => None,
            }
        };
        let resp = match late {
            Some(delay) => {
                let inner = self.inner.clone();
                let task = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    inner.txn(txn).await
                });
                task.await.map_err(|e| Error::Backend {
                    source: Box::new(e),
                })??
            }
            None => self.inner.txn(txn).await?,
        };
        if lose {
            log(
                Outcome::ReplyLost {
                    succeeded: resp.succeeded,
                },
                resp.header_revision,
            );
            return Err(Error::unavailable(
                "injected: reply lost after the store applied it",
            ));
        }
        log(
            Outcome::Applied {
                succeeded: resp.succeeded,
            },
            resp.header_revision,
        );
        Ok(resp)
    }
}
