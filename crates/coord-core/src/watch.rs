//! Watch types: the ordered stream of changes to a key or a prefix.

use std::pin::Pin;

use futures::Stream;

use crate::kv::{KeyRange, KeyValue, Revision};

/// What to watch and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchRequest {
    /// Which keys.
    pub range: KeyRange,
    /// First revision to report; `0` means "changes after the watch is registered".
    pub start_revision: Revision,
    /// Leave put events out.
    pub no_put: bool,
    /// Leave delete events out.
    pub no_delete: bool,
    /// Include each event's previous key-value.
    pub prev_kv: bool,
}

impl WatchRequest {
    /// Every change to `range` from now on.
    pub fn new(range: KeyRange) -> Self {
        WatchRequest {
            range,
            start_revision: 0,
            no_put: false,
            no_delete: false,
            prev_kv: false,
        }
    }

    /// Start at `revision` (replaying history since then).
    pub fn with_start_revision(mut self, revision: Revision) -> Self {
        self.start_revision = revision;
        self
    }

    /// Deletes only.
    pub fn with_no_put(mut self) -> Self {
        self.no_put = true;
        self
    }

    /// Puts only.
    pub fn with_no_delete(mut self) -> Self {
        self.no_delete = true;
        self
    }

    /// Include previous key-values.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }
}

/// Put or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted (explicitly, or by its lease's end).
    Delete,
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change. For a delete: the key, empty value, and `mod_revision` set to
    /// the revision of the delete.
    pub kv: KeyValue,
    /// The key before the change, when asked for and present.
    pub prev_kv: Option<KeyValue>,
}

impl WatchEvent {
    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A watch: events in revision order, none missed, none repeated. It ends with an error item
/// ([`crate::Error::Compacted`], [`crate::Error::Unavailable`], …) when the watch breaks; the
/// watch is cancelled when the stream is dropped.
pub type WatchStream = Pin<Box<dyn Stream<Item = crate::Result<WatchEvent>> + Send + 'static>>;

/// A watch stream that can hand out one revision's events at a time.
pub(crate) type PeekableWatch = futures::stream::Peekable<WatchStream>;

/// The next revision's events, all of them: a backend delivers the events of one revision
/// together (see the [`Backend`](crate::Backend) contract), so once the first is yielded the
/// rest are ready, and a reader that took only the first would act on a state that never
/// existed (e.g. a leader deleted in the same revision as the one before it). `None` when the
/// stream ended; an error item is returned on its own, after the revision before it.
///
/// # Cancel safety
///
/// Cancel safe: only the first await can be pending, and nothing is taken before it resolves.
pub(crate) async fn next_revision(
    stream: &mut PeekableWatch,
) -> Option<crate::Result<(Revision, Vec<WatchEvent>)>> {
    use futures::{FutureExt, StreamExt};
    let first = match stream.next().await? {
        Ok(event) => event,
        Err(e) => return Some(Err(e)),
    };
    let revision = first.revision();
    let mut events = vec![first];
    while let Some(Some(Ok(event))) = Pin::new(&mut *stream)
        .next_if(|item| matches!(item, Ok(e) if e.revision() == revision))
        .now_or_never()
    {
        events.push(event);
    }
    Some(Ok((revision, events)))
}
