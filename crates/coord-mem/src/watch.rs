//! Watchers: who watches what, how a change finds its watchers, and the stream they read.
//!
//! Events are pushed at write time, under the store's lock, into one unbounded channel per
//! watcher: a slow reader never blocks a writer, and a watcher that is behind never misses an
//! event to compaction. A revision's events go to each watcher as one message, so once its
//! first event is read the rest are ready (the contract: a revision is delivered together; sent
//! one by one, a reader on another thread could see the first before the second was sent). Exact-key and prefix watchers are indexed, so finding the watchers of a
//! change costs a few hash lookups however many watchers there are.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use coord_core::{
    AtomicCallCounts, Error, EventKind, KeyValue, Result, Revision, WatchEvent, WatchRequest,
};
use futures::Stream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::{Instant, Sleep};

use crate::span::Span;
use crate::state::Change;
use crate::store::Inner;

/// One revision's items (or an error) on their way to a watcher, with the time they may be
/// delivered ([`crate::Faults::delay_watches`]).
#[derive(Debug)]
pub(crate) struct Envelope {
    items: Vec<Result<WatchEvent>>,
    at: Option<Instant>,
}

/// One registered watch.
#[derive(Debug)]
pub(crate) struct Watcher {
    req: WatchRequest,
    /// Events below this revision are not for this watcher (a start revision in the future).
    min_rev: Revision,
    tx: UnboundedSender<Envelope>,
}

impl Watcher {
    pub(crate) fn new(req: WatchRequest, min_rev: Revision, tx: UnboundedSender<Envelope>) -> Self {
        Watcher { req, min_rev, tx }
    }

    /// The event this watcher wants for `change`, if any.
    fn event_for(&self, change: &Change) -> Option<WatchEvent> {
        if change.rev < self.min_rev {
            return None;
        }
        let is_put = change.new.is_some();
        if (is_put && self.req.no_put) || (!is_put && self.req.no_delete) {
            return None;
        }
        Some(event(change, self.req.prev_kv))
    }

    /// Sends the events this watcher wants of one revision's `changes`, in one message;
    /// `false` when the stream is gone.
    pub(crate) fn offer<'a>(
        &self,
        changes: impl IntoIterator<Item = &'a Change>,
        at: Option<Instant>,
    ) -> bool {
        let items: Vec<_> = changes
            .into_iter()
            .filter(|c| self.covers(c.key()))
            .filter_map(|c| self.event_for(c).map(Ok))
            .collect();
        items.is_empty() || self.tx.send(Envelope { items, at }).is_ok()
    }

    /// Whether this watcher's range holds `key` (for watchers that are not indexed).
    pub(crate) fn covers(&self, key: &[u8]) -> bool {
        Span::of(&self.req.range).is_ok_and(|s| s.contains(key))
    }

    fn fail(&self, error: Error, at: Option<Instant>) {
        let _ = self.tx.send(Envelope {
            items: vec![Err(error)],
            at,
        });
    }
}

/// The event a watcher sees for `change`. A delete carries the key and the delete's revision
/// only, as etcd's tombstones do.
fn event(change: &Change, with_prev: bool) -> WatchEvent {
    match (&change.new, &change.prev) {
        (Some(kv), prev) => WatchEvent {
            kind: EventKind::Put,
            kv: KeyValue::clone(kv),
            prev_kv: if with_prev {
                prev.as_deref().cloned()
            } else {
                None
            },
        },
        (None, Some(prev)) => WatchEvent {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: prev.key.clone(),
                mod_revision: change.rev,
                ..KeyValue::default()
            },
            prev_kv: if with_prev {
                Some(KeyValue::clone(prev))
            } else {
                None
            },
        },
        (None, None) => unreachable!("a change is a put or a delete of an existing key"),
    }
}

/// Where a watcher is indexed.
#[derive(Debug)]
enum Index {
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
    Other,
}

impl Index {
    fn of(req: &WatchRequest) -> Index {
        match Span::of(&req.range) {
            Ok(Span::One(k)) => Index::Exact(k.to_vec()),
            Ok(Span::Prefix(p)) => Index::Prefix(p.to_vec()),
            _ => Index::Other,
        }
    }
}

/// Every registered watcher, with indexes by exact key and by prefix.
#[derive(Debug, Default)]
pub(crate) struct Watchers {
    next_id: u64,
    all: HashMap<u64, (Watcher, Index)>,
    exact: HashMap<Vec<u8>, Vec<u64>>,
    prefixes: HashMap<Vec<u8>, Vec<u64>>,
    /// Distinct prefix lengths (with how many prefixes have each): a change to key `k` looks up
    /// `k[..len]` for each, instead of testing every prefix watcher.
    prefix_lens: BTreeMap<usize, usize>,
    other: Vec<u64>,
    /// Injected delivery delay.
    pub(crate) delay: Duration,
    dead: Vec<u64>,
}

impl Watchers {
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    /// The delivery time of an event published now.
    pub(crate) fn deliver_at(&self) -> Option<Instant> {
        (!self.delay.is_zero()).then(|| Instant::now() + self.delay)
    }

    pub(crate) fn insert(&mut self, watcher: Watcher) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let index = Index::of(&watcher.req);
        match &index {
            Index::Exact(k) => self.exact.entry(k.clone()).or_default().push(id),
            Index::Prefix(p) => {
                *self.prefix_lens.entry(p.len()).or_default() += 1;
                self.prefixes.entry(p.clone()).or_default().push(id);
            }
            Index::Other => self.other.push(id),
        }
        self.all.insert(id, (watcher, index));
        id
    }

    pub(crate) fn remove(&mut self, id: u64) {
        let Some((_, index)) = self.all.remove(&id) else {
            return;
        };
        // Memory follows the watches open now, not the most ever open (maps never shrink by
        // themselves).
        if self.all.capacity() > 64 && self.all.len() < self.all.capacity() / 4 {
            self.all.shrink_to(self.all.len() * 2);
            self.prefixes.shrink_to(self.prefixes.len() * 2);
            self.exact.shrink_to(self.exact.len() * 2);
        }
        fn unlist(map: &mut HashMap<Vec<u8>, Vec<u64>>, key: &[u8], id: u64) -> bool {
            let Some(ids) = map.get_mut(key) else {
                return false;
            };
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                map.remove(key);
                return true;
            }
            false
        }
        match index {
            Index::Exact(k) => {
                unlist(&mut self.exact, &k, id);
            }
            Index::Prefix(p) => {
                unlist(&mut self.prefixes, &p, id);
                if let Some(n) = self.prefix_lens.get_mut(&p.len()) {
                    *n -= 1;
                    if *n == 0 {
                        self.prefix_lens.remove(&p.len());
                    }
                }
            }
            Index::Other => self.other.retain(|i| *i != id),
        }
    }

    /// Sends one revision's `changes` to every watcher that wants any of them, each watcher's
    /// share in one message; forgets watchers whose stream is gone.
    pub(crate) fn publish(&mut self, changes: &[&Change], at: Option<Instant>) {
        if self.all.is_empty() {
            return;
        }
        // Each watcher's events, in change order.
        let mut batches: BTreeMap<u64, Vec<WatchEvent>> = BTreeMap::new();
        for change in changes {
            let key = change.key();
            let all = &self.all;
            let mut offer = |id: &u64| {
                if let Some((w, _)) = all.get(id) {
                    if let Some(event) = w.event_for(change) {
                        batches.entry(*id).or_default().push(event);
                    }
                }
            };
            if let Some(ids) = self.exact.get(key) {
                ids.iter().for_each(&mut offer);
            }
            for &len in self.prefix_lens.range(..=key.len()).map(|(len, _)| len) {
                if let Some(ids) = self.prefixes.get(&key[..len]) {
                    ids.iter().for_each(&mut offer);
                }
            }
            for id in &self.other {
                if all.get(id).is_some_and(|(w, _)| w.covers(key)) {
                    offer(id);
                }
            }
        }
        for (id, events) in batches {
            let items = events.into_iter().map(Ok).collect();
            if let Some((w, _)) = self.all.get(&id) {
                if w.tx.send(Envelope { items, at }).is_err() {
                    self.dead.push(id);
                }
            }
        }
        while let Some(id) = self.dead.pop() {
            self.remove(id);
        }
    }

    /// Ends every watch with `Unavailable` (fault injection); returns how many there were.
    pub(crate) fn drop_all(&mut self) -> usize {
        let at = self.deliver_at();
        let n = self.all.len();
        for (_, (w, _)) in self.all.drain() {
            w.fail(
                Error::unavailable("watch stream dropped (injected fault)"),
                at,
            );
        }
        self.exact.clear();
        self.prefixes.clear();
        self.prefix_lens.clear();
        self.other.clear();
        n
    }
}

/// Unregisters its watcher when the stream is dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) store: Weak<Inner>,
    pub(crate) id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(inner) = self.store.upgrade() {
            inner.unregister_watch(self.id);
        }
    }
}

/// The stream behind a [`coord_core::WatchStream`] from a [`crate::MemStore`].
///
/// Yields events in order; an error item ends it (also when the store is dropped). Delayed events (an injected delay) wait on
/// tokio's clock, one after another, so their order is kept. Each item yielded counts in the
/// store's `watch_events` ([`crate::MemStore::stats`]).
pub(crate) struct MemWatchStream {
    rx: UnboundedReceiver<Envelope>,
    /// The rest of a revision being yielded (ready at once, as the contract requires).
    ready: VecDeque<Result<WatchEvent>>,
    /// A revision waiting for its delivery time.
    pending: Option<Vec<Result<WatchEvent>>>,
    sleep: Option<Pin<Box<Sleep>>>,
    done: bool,
    /// The store's counters (kept even when the store is gone, like a `Counting` wrapper's).
    counters: Arc<AtomicCallCounts>,
    _registration: Registration,
}

impl MemWatchStream {
    pub(crate) fn new(
        rx: UnboundedReceiver<Envelope>,
        registration: Registration,
        counters: Arc<AtomicCallCounts>,
    ) -> Self {
        MemWatchStream {
            rx,
            ready: VecDeque::new(),
            pending: None,
            sleep: None,
            done: false,
            counters,
            _registration: registration,
        }
    }

    fn emit(&mut self, item: Result<WatchEvent>) -> Poll<Option<Result<WatchEvent>>> {
        self.counters.bump_watch_events();
        if item.is_err() {
            self.done = true;
        }
        Poll::Ready(Some(item))
    }
}

impl Stream for MemWatchStream {
    type Item = Result<WatchEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(item) = this.ready.pop_front() {
                return this.emit(item);
            }
            if this.pending.is_some() {
                if let Some(sleep) = this.sleep.as_mut() {
                    ready!(sleep.as_mut().poll(cx));
                }
                this.ready
                    .extend(this.pending.take().expect("checked above"));
                continue;
            }
            let Some(env) = ready!(this.rx.poll_recv(cx)) else {
                // Every sender is gone but no error was sent: the store itself was dropped.
                // Say so rather than stop silently.
                return this.emit(Err(Error::unavailable("the store was dropped")));
            };
            match env.at {
                Some(at) if at > Instant::now() => {
                    match this.sleep.as_mut() {
                        Some(sleep) => sleep.as_mut().reset(at),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                    this.pending = Some(env.items);
                }
                _ => this.ready.extend(env.items),
            }
        }
    }
}
