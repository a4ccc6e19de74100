//! One delete-only watch per (session, name), shared by the session's waiters and holders of
//! that name, and closed once none of them is left.
//!
//! Why one per name rather than one per wait: a watch opened per wait starts at a revision the
//! store may have to catch up on (etcd serves such "unsynced" watchers from a loop that runs
//! every 100 ms), so each handoff would pay up to 100 ms. A watch registered once, before the
//! acquires that use it, stays synced: releases reach the waiter as soon as they are committed.
//! Waiters subscribe *before* their acquire transaction, so every delete after it reaches them.
//!
//! Why it closes: a worker that locks `order/<id>` for thousands of ids must not keep a watch
//! (a server-side watcher, a task, map entries) per name it ever waited on. Each waiter and
//! holder keeps a [`WatchUse`]; when the last one goes, the watch lingers for
//! [`DEFAULT_WATCH_LINGER`] (so a name locked in a loop does not reopen it each time) and then
//! closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::runtime::Handle;
use tokio::sync::{broadcast, Notify, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::DynBackend;
use crate::error::{Error, Result};
use crate::kv::{KeyRange, RangeRequest, Revision};
use crate::session::{lock_unpoisoned, shrink_if_sparse};
use crate::watch::{next_revision, EventKind, PeekableWatch, WatchRequest};

/// How long a name's watch stays open after its last waiter or holder is gone, by default.
pub const DEFAULT_WATCH_LINGER: Duration = Duration::from_secs(1);

/// What a waiter learns from the name's watch.
#[derive(Clone, Debug)]
pub(crate) enum Notice {
    /// `keys` were deleted at `revision`: every key of the name deleted in that revision, in
    /// one notice, so a waiter sees at once that its own key went with the last one ahead.
    Deleted {
        keys: Arc<[Arc<[u8]>]>,
        revision: Revision,
    },
    /// Events may have been missed (the watch broke and history was compacted): re-read.
    Resync,
}

/// Notices buffered per subscriber; a subscriber that falls further behind re-reads instead.
const CAPACITY: usize = 1024;

/// A session's name watches.
pub(crate) struct NameWatches {
    entries: StdMutex<HashMap<Vec<u8>, Entry>>,
    backend: DynBackend,
    /// The session's end: every watch stops.
    stop: CancellationToken,
    runtime: Handle,
    linger: Duration,
}

struct Entry {
    watch: Arc<NameWatch>,
    /// Live [`WatchUse`]s of it.
    users: usize,
}

/// One name's watch: the notices waiters subscribe to, and the holders whose key's deletion
/// it reports.
pub(crate) struct NameWatch {
    prefix: Vec<u8>,
    notices: broadcast::Sender<Notice>,
    holders: StdMutex<HashMap<Arc<[u8]>, Holder>>,
    /// The task draining the store's watch, once registered.
    drain: OnceCell<JoinHandle<()>>,
    /// Told when the last user left.
    idle: Notify,
}

/// A held key whose deletion the watch reports by cancelling `gone`.
struct Holder {
    rev: Revision,
    gone: CancellationToken,
    id: u64,
}

impl NameWatches {
    pub(crate) fn new(
        backend: DynBackend,
        stop: CancellationToken,
        runtime: Handle,
        linger: Duration,
    ) -> Arc<NameWatches> {
        Arc::new(NameWatches {
            entries: StdMutex::default(),
            backend,
            stop,
            runtime,
            linger,
        })
    }

    /// A use of the name's watch if it is registered and running; `None` opens nothing.
    pub(crate) fn running(self: &Arc<Self>, prefix: &[u8]) -> Option<WatchUse> {
        let mut entries = lock_unpoisoned(&self.entries);
        let entry = entries.get_mut(prefix)?;
        if !entry.watch.is_running() {
            return None;
        }
        entry.users += 1;
        Some(WatchUse {
            watches: self.clone(),
            watch: entry.watch.clone(),
        })
    }

    /// A use of the name's watch, registering it first when needed. Returns once the store
    /// confirmed the watch: every delete after that is seen. Only callers of the same name
    /// wait for a registration; no lock is held across it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call leaves no user behind, and another caller takes over a
    /// registration it started.
    pub(crate) async fn open(self: &Arc<Self>, prefix: &[u8]) -> Result<WatchUse> {
        let usage = {
            let mut entries = lock_unpoisoned(&self.entries);
            let entry = entries.entry(prefix.to_vec()).or_insert_with(|| Entry {
                watch: Arc::new(NameWatch::new(prefix.to_vec())),
                users: 0,
            });
            entry.users += 1;
            WatchUse {
                watches: self.clone(),
                watch: entry.watch.clone(),
            }
        };
        let watch = usage.watch.clone();
        watch
            .drain
            .get_or_try_init(|| async {
                let stream = self.backend.watch(request(prefix, 0)).await?;
                let drain = drain(
                    Arc::downgrade(self),
                    watch.clone(),
                    self.backend.clone(),
                    stream.peekable(),
                    self.stop.clone(),
                    self.linger,
                );
                Ok::<_, Error>(self.runtime.spawn(drain))
            })
            .await?;
        Ok(usage)
    }

    /// How many name watches are open (registered and not yet closed).
    pub(crate) fn open_count(&self) -> usize {
        lock_unpoisoned(&self.entries)
            .values()
            .filter(|e| e.watch.is_running())
            .count()
    }

    fn leave(&self, watch: &Arc<NameWatch>) {
        let mut entries = lock_unpoisoned(&self.entries);
        let Some(entry) = entries.get_mut(&watch.prefix) else {
            return;
        };
        if !Arc::ptr_eq(&entry.watch, watch) {
            return;
        }
        entry.users -= 1;
        if entry.users == 0 {
            if watch.drain.initialized() {
                // The drain task closes it after the linger, unless a user comes back.
                watch.idle.notify_one();
            } else {
                // Never registered (the registration failed or was dropped): nothing to close.
                entries.remove(&watch.prefix);
                shrink_if_sparse(&mut entries);
            }
        }
    }

    /// Removes `watch` if it still has no user; `true` when it is gone.
    fn remove_if_idle(&self, watch: &Arc<NameWatch>) -> bool {
        let mut entries = lock_unpoisoned(&self.entries);
        match entries.get(&watch.prefix) {
            Some(entry) if Arc::ptr_eq(&entry.watch, watch) => {
                if entry.users > 0 {
                    return false;
                }
                entries.remove(&watch.prefix);
                shrink_if_sparse(&mut entries);
                true
            }
            _ => true,
        }
    }
}

impl NameWatch {
    fn new(prefix: Vec<u8>) -> NameWatch {
        NameWatch {
            prefix,
            notices: broadcast::channel(CAPACITY).0,
            holders: StdMutex::default(),
            drain: OnceCell::new(),
            idle: Notify::new(),
        }
    }

    fn is_running(&self) -> bool {
        self.drain.get().is_some_and(|task| !task.is_finished())
    }

    /// Tells the holders of `keys` (deleted at `revision`) that their key is gone.
    fn deleted(&self, keys: &[Arc<[u8]>], revision: Revision) {
        let holders = lock_unpoisoned(&self.holders);
        for key in keys {
            if let Some(h) = holders.get(key) {
                if revision > h.rev {
                    h.gone.cancel();
                }
            }
        }
    }

    fn holders(&self) -> Vec<(Arc<[u8]>, Revision, CancellationToken)> {
        lock_unpoisoned(&self.holders)
            .iter()
            .map(|(k, h)| (k.clone(), h.rev, h.gone.clone()))
            .collect()
    }
}

/// A waiter's or holder's use of a name's watch: the watch stays open while one exists.
pub(crate) struct WatchUse {
    watches: Arc<NameWatches>,
    watch: Arc<NameWatch>,
}

impl WatchUse {
    /// A receiver of every notice from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.watch.notices.subscribe()
    }

    /// Reports a delete of `key` after `rev` by cancelling `gone`, until the returned
    /// registration is dropped. A delete already broadcast before this call is not reported:
    /// the caller checks its receiver (or reads) afterwards.
    pub(crate) fn hold(&self, key: Arc<[u8]>, rev: Revision, gone: CancellationToken) -> Holding {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock_unpoisoned(&self.watch.holders).insert(key.clone(), Holder { rev, gone, id });
        Holding {
            watch: self.watch.clone(),
            key,
            id,
        }
    }
}

impl Drop for WatchUse {
    fn drop(&mut self) {
        self.watches.leave(&self.watch);
    }
}

/// A key registered with [`WatchUse::hold`]; dropping it unregisters the key.
pub(crate) struct Holding {
    watch: Arc<NameWatch>,
    key: Arc<[u8]>,
    id: u64,
}

impl Drop for Holding {
    fn drop(&mut self) {
        let mut holders = lock_unpoisoned(&self.watch.holders);
        if holders.get(&self.key).is_some_and(|h| h.id == self.id) {
            holders.remove(&self.key);
            shrink_if_sparse(&mut holders);
        }
    }
}

fn request(prefix: &[u8], start: Revision) -> WatchRequest {
    WatchRequest::new(KeyRange::prefix(prefix))
        .with_no_put()
        .with_start_revision(start)
}

/// Drains the store's watch into notices until the session ends, or until the watch has had
/// no user for `linger`.
async fn drain(
    watches: Weak<NameWatches>,
    watch: Arc<NameWatch>,
    backend: DynBackend,
    mut stream: PeekableWatch,
    stop: CancellationToken,
    linger: Duration,
) {
    let mut last_seen: Revision = 0;
    let mut close_at: Option<Instant> = None;
    loop {
        let item = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = watch.idle.notified() => {
                close_at = Some(Instant::now() + linger);
                continue;
            }
            _ = tokio::time::sleep_until(close_at.unwrap_or_else(Instant::now)), if close_at.is_some() => {
                close_at = None;
                match watches.upgrade() {
                    Some(w) if !w.remove_if_idle(&watch) => continue,
                    _ => {
                        tracing::trace!(prefix = %String::from_utf8_lossy(&watch.prefix), "name watch closed");
                        return;
                    }
                }
            }
            item = next_revision(&mut stream) => item,
        };
        match item {
            Some(Ok((revision, events))) => {
                last_seen = revision;
                let keys: Vec<Arc<[u8]>> = events
                    .into_iter()
                    .filter(|e| e.kind == EventKind::Delete)
                    .map(|e| e.kv.key.into())
                    .collect();
                if !keys.is_empty() {
                    let keys: Arc<[Arc<[u8]>]> = keys.into();
                    // Broadcast first, then tell holders: a holder registering meanwhile
                    // finds the notice in its receiver (see `WatchUse::hold`).
                    let _ = watch.notices.send(Notice::Deleted {
                        keys: keys.clone(),
                        revision,
                    });
                    watch.deleted(&keys, revision);
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "name watch broke; reopening");
                match reopen(&backend, &watch, &mut last_seen, &stop).await {
                    Some(s) => stream = s,
                    None => return,
                }
            }
            None => match reopen(&backend, &watch, &mut last_seen, &stop).await {
                Some(s) => stream = s,
                None => return,
            },
        }
    }
}

/// Reopens the watch after the last event seen, so nothing is missed; when that is impossible
/// (nothing seen yet, or compacted) it reopens from now, tells waiters to re-read and checks
/// each holder's key itself.
async fn reopen(
    backend: &DynBackend,
    watch: &NameWatch,
    last_seen: &mut Revision,
    stop: &CancellationToken,
) -> Option<PeekableWatch> {
    let mut backoff = Duration::from_millis(20);
    loop {
        let start = if *last_seen > 0 { *last_seen + 1 } else { 0 };
        let attempt = tokio::select! {
            _ = stop.cancelled() => return None,
            r = backend.watch(request(&watch.prefix, start)) => r,
        };
        match attempt {
            Ok(stream) => {
                if start == 0 {
                    let _ = watch.notices.send(Notice::Resync);
                    recheck_holders(backend, watch, stop).await?;
                }
                return Some(stream.peekable());
            }
            Err(Error::Compacted { .. }) => {
                *last_seen = 0;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "name watch reopen failed");
                sleep_or_stop(&mut backoff, stop).await?;
            }
        }
    }
}

/// After a gap in the events: every holder whose key is no longer its own is told so.
async fn recheck_holders(
    backend: &DynBackend,
    watch: &NameWatch,
    stop: &CancellationToken,
) -> Option<()> {
    let mut backoff = Duration::from_millis(20);
    for (key, rev, gone) in watch.holders() {
        loop {
            let read = tokio::select! {
                _ = stop.cancelled() => return None,
                r = backend.range(RangeRequest::key(key.to_vec()).with_keys_only()) => r,
            };
            match read {
                Ok(resp) => {
                    if !resp.kvs.iter().any(|kv| kv.create_revision == rev) {
                        gone.cancel();
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "name watch: holder re-check failed; retrying");
                    sleep_or_stop(&mut backoff, stop).await?;
                }
            }
        }
    }
    Some(())
}

async fn sleep_or_stop(backoff: &mut Duration, stop: &CancellationToken) -> Option<()> {
    tokio::select! {
        _ = stop.cancelled() => return None,
        _ = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(1));
    Some(())
}
