//! Observing an election: the current leader, then every change.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use metrics::Counter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::backend::DynBackend;
use crate::error::{Error, Result};
use crate::kv::{KeyRange, KeyValue, RangeRequest, Revision, SortOrder, SortTarget};
use crate::watch::{next_revision, EventKind, WatchRequest};

/// One observation of an election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The leader's key-value (key, proposal, create revision), or `None`: no leader.
    pub leader: Option<KeyValue>,
    /// The store revision at which this was the state.
    pub revision: Revision,
}

/// The stream of an election's leaders, from [`crate::Election::observe`].
///
/// Yields the current state first, then at most one item per store revision that changes the
/// leader or the leader's value (all of a revision's events are applied before it is judged, so
/// a reported leader's key exists at the reported revision); revisions never go back, so it
/// never reports an older leader after a newer one.
/// Watch errors and compaction are handled inside: it re-reads and resubscribes. It ends only
/// with an error that retrying cannot fix (e.g. [`Error::PermissionDenied`]). Dropping it
/// stops the background task.
///
/// Every candidate key of the election is tracked in memory (an election has few).
pub struct LeaderStream {
    rx: mpsc::Receiver<Result<Observation>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for LeaderStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderStream").finish_non_exhaustive()
    }
}

impl LeaderStream {
    /// Observes the election under `prefix`, counting each new leader in `changes`.
    pub(crate) fn start(backend: DynBackend, prefix: Vec<u8>, changes: Counter) -> LeaderStream {
        let (tx, rx) = mpsc::channel(16);
        let span = tracing::info_span!(
            "coord.observe",
            name = %String::from_utf8_lossy(crate::telemetry::name_of(&prefix)),
        );
        let task = tokio::spawn(run(backend, prefix, tx, changes).instrument(span));
        LeaderStream { rx, task }
    }
}

impl Drop for LeaderStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for LeaderStream {
    type Item = Result<Observation>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// The candidates known at some revision, by create revision.
#[derive(Default)]
struct Candidates {
    by_create: BTreeMap<Revision, KeyValue>,
    create_of: HashMap<Vec<u8>, Revision>,
}

impl Candidates {
    fn put(&mut self, kv: KeyValue) {
        if let Some(old) = self.create_of.insert(kv.key.clone(), kv.create_revision) {
            self.by_create.remove(&old);
        }
        self.by_create.insert(kv.create_revision, kv);
    }

    fn delete(&mut self, key: &[u8]) {
        if let Some(rev) = self.create_of.remove(key) {
            self.by_create.remove(&rev);
        }
    }

    fn leader(&self) -> Option<&KeyValue> {
        self.by_create.values().next()
    }
}

/// What was last sent, to send only changes.
type Seen = Option<Option<(Vec<u8>, Revision, Revision)>>;

async fn emit(
    tx: &mpsc::Sender<Result<Observation>>,
    seen: &mut Seen,
    candidates: &Candidates,
    revision: Revision,
    changes: &Counter,
) -> std::result::Result<(), ()> {
    let leader = candidates.leader();
    let id = leader.map(|kv| (kv.key.clone(), kv.create_revision, kv.mod_revision));
    if seen.as_ref() == Some(&id) {
        return Ok(());
    }
    // A new leader (not the one seen first, nor a new value of the same term).
    let term = |id: &Option<(Vec<u8>, Revision, Revision)>| {
        id.as_ref().map(|(key, create, _)| (key.clone(), *create))
    };
    if let (Some(before), Some(_)) = (seen.as_ref(), &id) {
        if term(before) != term(&id) {
            changes.increment(1);
        }
    }
    *seen = Some(id);
    let obs = Observation {
        leader: leader.cloned(),
        revision,
    };
    tx.send(Ok(obs)).await.map_err(|_| ())
}

async fn run(
    backend: DynBackend,
    prefix: Vec<u8>,
    tx: mpsc::Sender<Result<Observation>>,
    leader_changes: Counter,
) {
    let mut seen: Seen = None;
    let mut backoff = Duration::from_millis(20);
    loop {
        // Watch first, from "now", then read: a watch registered before the read delivers
        // every change after it, and one that starts at the current revision stays in etcd's
        // synced group instead of waiting on its 100 ms catch-up loop.
        let watch = WatchRequest::new(KeyRange::prefix(prefix.clone()));
        let events = match backend.watch(watch).await {
            Ok(s) => s,
            Err(e) => match retry_or_stop(&tx, e, &mut backoff).await {
                true => continue,
                false => return,
            },
        };
        // The state at `revision`, always newer than anything sent before.
        let read =
            RangeRequest::prefix(prefix.clone()).with_sort(SortTarget::Create, SortOrder::Ascend);
        let resp = match backend.range(read).await {
            Ok(r) => r,
            Err(e) => match retry_or_stop(&tx, e, &mut backoff).await {
                true => continue,
                false => return,
            },
        };
        let mut candidates = Candidates::default();
        for kv in resp.kvs {
            candidates.put(kv);
        }
        let mut revision = resp.header_revision;
        if emit(&tx, &mut seen, &candidates, revision, &leader_changes)
            .await
            .is_err()
        {
            return;
        }
        backoff = Duration::from_millis(20);
        let mut events = events.peekable();
        loop {
            let item = tokio::select! {
                _ = tx.closed() => return,
                item = next_revision(&mut events) => item,
            };
            match item {
                // Already part of the read.
                Some(Ok((at, _))) if at <= revision => {}
                // Every event of the revision first, then one observation: a revision that
                // deletes the leader and the next in line has only the third as its leader.
                Some(Ok((at, changes))) => {
                    revision = at;
                    for event in changes {
                        match event.kind {
                            EventKind::Put => candidates.put(event.kv),
                            EventKind::Delete => candidates.delete(&event.kv.key),
                        }
                    }
                    if emit(&tx, &mut seen, &candidates, revision, &leader_changes)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Some(Err(e)) => {
                    if !retry_or_stop(&tx, e, &mut backoff).await {
                        return;
                    }
                    break;
                }
                None => break,
            }
        }
    }
}

/// After an error: `true` to re-read and resubscribe (after a backoff for transient errors),
/// `false` after sending an error that retrying cannot fix.
async fn retry_or_stop(
    tx: &mpsc::Sender<Result<Observation>>,
    error: Error,
    backoff: &mut Duration,
) -> bool {
    match error {
        Error::Compacted { .. } => true,
        e if e.is_retryable() => {
            tracing::debug!(error = %e, "observe: retrying");
            tokio::time::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(Duration::from_secs(1));
            true
        }
        e => {
            let _ = tx.send(Err(e)).await;
            false
        }
    }
}
