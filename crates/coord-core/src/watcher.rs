//! Delete-only watches of one key or one name's prefix, each owned by the one waiter or holder
//! that uses it, and counted per session so that [`Session::watched_names`] can tell how many
//! names a session watches now.
//!
//! A watch is registered "from now" (never from an old revision: etcd serves those from its
//! catch-up loop, every 100 ms) and its owner reads after registering it, so no delete between
//! the read and the registration is missed. Dropping it cancels it at once: a session's watches
//! follow what it waits for or holds, nothing lingers.
//!
//! [`Session::watched_names`]: crate::Session::watched_names

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::kv::{KeyRange, Revision};
use crate::session::{lock_unpoisoned, shrink_if_sparse, Session};
use crate::watch::{next_revision, EventKind, PeekableWatch, WatchRequest};

/// The names a session watches now, with how many of its watches are open on each.
#[derive(Default)]
pub(crate) struct WatchedNames {
    names: StdMutex<HashMap<Vec<u8>, usize>>,
}

impl WatchedNames {
    /// How many names have a watch open now.
    pub(crate) fn len(&self) -> usize {
        lock_unpoisoned(&self.names).len()
    }

    fn enter(self: &Arc<Self>, name: &[u8]) -> Counted {
        *lock_unpoisoned(&self.names)
            .entry(name.to_vec())
            .or_default() += 1;
        Counted {
            names: self.clone(),
            name: name.to_vec(),
        }
    }
}

/// One open watch, counted under its name until dropped.
struct Counted {
    names: Arc<WatchedNames>,
    name: Vec<u8>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut names = lock_unpoisoned(&self.names.names);
        if let Some(n) = names.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                names.remove(&self.name);
                shrink_if_sparse(&mut names);
            }
        }
    }
}

/// What a delete watch watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Watched {
    /// One key.
    Key(Vec<u8>),
    /// Every key of a name (`name/`): its deletes come one revision at a time, so a waiter
    /// learns in one batch that its own key went with the last one ahead of it.
    Prefix(Vec<u8>),
}

/// A delete-only watch, registered from now.
pub(crate) struct DeleteWatch {
    stream: PeekableWatch,
    watched: Watched,
    _counted: Counted,
}

impl std::fmt::Debug for DeleteWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeleteWatch")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl DeleteWatch {
    /// Registers a delete-only watch of `watched` from now, counted under `name` (the name's
    /// prefix). Returns once the store confirmed it: every delete after that is delivered.
    pub(crate) async fn open(session: &Session, name: &[u8], watched: Watched) -> Result<Self> {
        let range = match &watched {
            Watched::Key(key) => KeyRange::key(key.clone()),
            Watched::Prefix(prefix) => KeyRange::prefix(prefix.clone()),
        };
        let req = WatchRequest::new(range).with_no_put();
        let stream = session.backend().watch(req).await?;
        Ok(DeleteWatch {
            stream: stream.peekable(),
            watched,
            _counted: session.watched().enter(name),
        })
    }

    /// What it watches.
    pub(crate) fn watched(&self) -> &Watched {
        &self.watched
    }

    /// The keys deleted in the next revision that deletes any, with that revision: all of
    /// them, in one batch. An error when the watch broke or ended (the caller reads and opens
    /// another).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is taken from the stream before a whole revision is ready.
    pub(crate) async fn next(&mut self) -> Result<(Revision, Vec<Vec<u8>>)> {
        loop {
            match next_revision(&mut self.stream).await {
                Some(Ok((revision, events))) => {
                    let keys: Vec<Vec<u8>> = events
                        .into_iter()
                        .filter(|e| e.kind == EventKind::Delete)
                        .map(|e| e.kv.key)
                        .collect();
                    if !keys.is_empty() {
                        return Ok((revision, keys));
                    }
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(Error::Unavailable {
                        source: "watch ended".into(),
                    })
                }
            }
        }
    }
}
