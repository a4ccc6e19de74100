//! `mutex_write_floor_wN`: the ceiling of any mutex on Go's key layout, measured on the store.
//!
//! W sessions, each on its own connection, take turns as `mutex_contended_wN` does, but make
//! only the two writes the layout cannot do without: the acquire transaction (our acquire's
//! exact shape: put the session's key if absent, read the newest keys ahead) and the release
//! (the delete guarded by the key's create revision). The turn is passed in-process, in
//! revision order, once the holder's delete has committed: no watch, no read. Any client that
//! keeps the layout shared with Go makes at least these two writes per acquisition, so what
//! this reaches is the most a real lock can reach on the same store at the same W (issue 11).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex};

use coord_core::kv::{
    DeleteRequest, LeaseId, PutRequest, RangeRequest, Revision, SortOrder, SortTarget,
};
use coord_core::txn::{Compare, CompareOp, Txn, TxnOp};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::scenarios::{Bench, BenchResultOr};
use crate::stats::BenchResult;

/// Keys of the acquire's read of the newest keys ahead, as `coord-core`'s queue asks for.
const ACQUIRE_READ_LIMIT: i64 = 17;

/// The transaction a `coord_core::Mutex` sends to take its place (the test below pins it):
/// put `key` on `lease` if absent, and read the newest keys of `prefix`.
fn acquire_txn(prefix: &[u8], key: &[u8], lease: LeaseId) -> Txn {
    let newest = RangeRequest::prefix(prefix.to_vec())
        .with_sort(SortTarget::Create, SortOrder::Descend)
        .with_limit(ACQUIRE_READ_LIMIT)
        .with_keys_only();
    Txn::new()
        .when([Compare::create_revision(key.to_vec(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::Put(PutRequest::new(key.to_vec(), Vec::new()).with_lease(lease)),
            TxnOp::Range(newest),
        ])
        .or_else([TxnOp::Range(RangeRequest::key(key.to_vec()))])
}

/// The transaction a `coord_core::Mutex` sends to release: delete `key` if it is still the one
/// created at `revision`.
fn release_txn(key: &[u8], revision: Revision) -> Txn {
    Txn::new()
        .when([Compare::create_revision(
            key.to_vec(),
            CompareOp::Equal,
            revision,
        )])
        .and_then([TxnOp::Delete(DeleteRequest::key(key.to_vec()))])
}

/// Who holds the turn, and who waits for it (by the revision of their acquire).
#[derive(Default)]
struct Line {
    busy: bool,
    waiting: BTreeMap<i64, oneshot::Sender<()>>,
}

impl Line {
    /// The turn at once, or a receiver told when it comes.
    fn join(&mut self, revision: i64) -> Option<oneshot::Receiver<()>> {
        if !self.busy {
            self.busy = true;
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(revision, tx);
        Some(rx)
    }

    /// Hands the turn to the oldest waiter, if any.
    fn pass(&mut self) {
        match self.waiting.pop_first() {
            Some((_, next)) => {
                // A receiver is dropped only with its task's error, which ends the run.
                let _ = next.send(());
            }
            None => self.busy = false,
        }
    }
}

impl Bench {
    pub(crate) async fn write_floor(&self) -> BenchResultOr<BenchResult> {
        let name = format!("mutex_write_floor_w{}", self.workers);
        let per = self.iters / self.workers.max(1);
        let line = Arc::new(StdMutex::new(Line::default()));
        let prefix = b"write-floor/".to_vec();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..self.workers {
            let bench = self.clone();
            let (line, prefix) = (line.clone(), prefix.clone());
            tasks.push(tokio::spawn(async move {
                let (session, _store) = bench.session(bench.ttl).await?;
                let backend = session.backend().clone();
                let mut key = prefix.clone();
                key.extend_from_slice(format!("{:x}", session.lease()).as_bytes());
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    let acquire = acquire_txn(&prefix, &key, session.lease());
                    let resp = backend.txn(acquire).await?;
                    if !resp.succeeded {
                        return Err("the session's key already existed".into());
                    }
                    let revision = resp.header_revision;
                    let turn = line.lock().map_err(|_| "line poisoned")?.join(revision);
                    if let Some(turn) = turn {
                        turn.await?;
                    }
                    lat.push(t.elapsed());
                    let release = release_txn(&key, revision);
                    if !backend.txn(release).await?.succeeded {
                        return Err("the session's key was gone at release".into());
                    }
                    line.lock().map_err(|_| "line poisoned")?.pass();
                }
                session.close().await?;
                BenchResultOr::Ok(lat)
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await??);
        }
        let seconds = start.elapsed().as_secs_f64();
        let ops = (per * self.workers) as u64;
        self.dump(&name, &lat)?;
        Ok(
            BenchResult::new(name, ops, seconds, &lat).with_extra(json!({
                "writes_per_op": 2,
            })),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex as StdMutex};

    use async_trait::async_trait;
    use coord_core::{Backend, Decorator, Mutex, Result, Session, TxnResponse};
    use coord_mem::MemStore;

    use super::*;

    /// Records every transaction sent through it.
    #[derive(Debug)]
    struct Recorded {
        inner: MemStore,
        txns: Arc<StdMutex<Vec<Txn>>>,
    }

    #[async_trait]
    impl Decorator for Recorded {
        type Inner = MemStore;
        fn inner(&self) -> &MemStore {
            &self.inner
        }
        async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
            self.txns.lock().unwrap().push(txn.clone());
            self.inner.txn(txn).await
        }
    }

    /// The floor's two writes are the very transactions an uncontended `Mutex` lock and
    /// unlock send, so the floor stays what it claims if the acquire changes shape.
    #[tokio::test]
    async fn its_writes_are_the_mutex_transactions() {
        let txns = Arc::new(StdMutex::new(Vec::new()));
        let store = Recorded {
            inner: MemStore::new(),
            txns: txns.clone(),
        };
        let session = Session::new(store, 10).await.unwrap();
        let guard = Mutex::new(&session, "floor").unwrap().lock().await.unwrap();
        let revision = guard.fencing_token();
        guard.unlock().await.unwrap();
        let key = format!("floor/{:x}", session.lease()).into_bytes();
        assert_eq!(
            *txns.lock().unwrap(),
            [
                acquire_txn(b"floor/", &key, session.lease()),
                release_txn(&key, revision),
            ]
        );
    }
}
