//! One delete-only watch per (session, name prefix), fanned out in-process to waiters.
//!
//! Why: a watch opened per wait starts at a revision the store may have to catch up on (etcd
//! serves such "unsynced" watchers from a loop that runs every 100 ms), so each handoff would
//! pay up to 100 ms. A watch registered once, before the first acquire, stays synced: releases
//! reach the waiter as soon as they are committed. Waiters subscribe *before* their acquire
//! transaction, so every delete after it reaches them.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::DynBackend;
use crate::error::{Error, Result};
use crate::kv::{KeyRange, Revision};
use crate::watch::{EventKind, WatchRequest, WatchStream};

/// What a waiter learns from the prefix watch.
#[derive(Clone, Debug)]
pub(crate) enum Notice {
    /// `keys` were deleted at `revision`: every key of the prefix deleted in that revision, in
    /// one notice, so a waiter sees at once that its own key went with the last one ahead.
    Deleted {
        keys: Arc<[Arc<[u8]>]>,
        revision: Revision,
    },
    /// Events may have been missed (the watch broke and history was compacted): re-read.
    Resync,
}

/// A running delete-only watch on a prefix.
pub(crate) struct PrefixWatch {
    notices: broadcast::Sender<Notice>,
    task: JoinHandle<()>,
}

/// Notices buffered per subscriber; a subscriber that falls further behind re-reads instead.
const CAPACITY: usize = 1024;

impl PrefixWatch {
    /// Registers the watch (returns once the store confirmed it) and starts draining it.
    pub(crate) async fn start(
        backend: DynBackend,
        prefix: Vec<u8>,
        stop: CancellationToken,
    ) -> Result<Arc<PrefixWatch>> {
        let stream = backend.watch(request(&prefix, 0)).await?;
        let (notices, _) = broadcast::channel(CAPACITY);
        let task = tokio::spawn(drain(backend, prefix, stream, notices.clone(), stop));
        Ok(Arc::new(PrefixWatch { notices, task }))
    }

    /// A receiver of every notice from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// False once the drain task ended (its session ended).
    pub(crate) fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for PrefixWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn request(prefix: &[u8], start: Revision) -> WatchRequest {
    WatchRequest::new(KeyRange::prefix(prefix))
        .with_no_put()
        .with_start_revision(start)
}

async fn drain(
    backend: DynBackend,
    prefix: Vec<u8>,
    stream: WatchStream,
    notices: broadcast::Sender<Notice>,
    stop: CancellationToken,
) {
    let mut stream = stream.peekable();
    let mut last_seen: Revision = 0;
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => return,
            item = stream.next() => item,
        };
        match item {
            Some(Ok(event)) => {
                last_seen = event.revision();
                let mut deleted = Vec::new();
                let mut event = Some(event);
                // With the rest of this revision's events: a backend delivers a revision's
                // events together (etcd in one response), so they are ready now.
                while let Some(e) = event.take() {
                    if e.kind == EventKind::Delete {
                        deleted.push(e.kv.key.into());
                    }
                    if let Some(Some(Ok(next))) = Pin::new(&mut stream)
                        .next_if(|item| matches!(item, Ok(e) if e.revision() == last_seen))
                        .now_or_never()
                    {
                        event = Some(next);
                    }
                }
                if !deleted.is_empty() {
                    let _ = notices.send(Notice::Deleted {
                        keys: deleted.into(),
                        revision: last_seen,
                    });
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "prefix watch broke; reopening");
                stream = match reopen(&backend, &prefix, &mut last_seen, &notices, &stop).await {
                    Some(s) => s.peekable(),
                    None => return,
                };
            }
            None => {
                stream = match reopen(&backend, &prefix, &mut last_seen, &notices, &stop).await {
                    Some(s) => s.peekable(),
                    None => return,
                };
            }
        }
    }
}

/// Reopens the watch after the last event seen, so nothing is missed; when that is impossible
/// (nothing seen yet, or compacted) it reopens from now and tells waiters to re-read.
async fn reopen(
    backend: &DynBackend,
    prefix: &[u8],
    last_seen: &mut Revision,
    notices: &broadcast::Sender<Notice>,
    stop: &CancellationToken,
) -> Option<WatchStream> {
    let mut backoff = Duration::from_millis(20);
    loop {
        let start = if *last_seen > 0 { *last_seen + 1 } else { 0 };
        let attempt = tokio::select! {
            _ = stop.cancelled() => return None,
            r = backend.watch(request(prefix, start)) => r,
        };
        match attempt {
            Ok(stream) => {
                if start == 0 {
                    let _ = notices.send(Notice::Resync);
                }
                return Some(stream);
            }
            Err(Error::Compacted { .. }) => {
                *last_seen = 0;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "prefix watch reopen failed");
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
