//! How a contender waits for its turn: which keys it watches, and when it reads.
//!
//! A waiter knows the keys ahead of it (from its acquire transaction or a read: all of them, or
//! the newest 16 of a longer queue). That set only shrinks: a key created later is behind it.
//!
//! - **One key ahead** (known completely, right at the acquire: the handoff of a lock with one
//!   waiter): it watches its name's whole prefix (deletes only). A prefix watch delivers each
//!   revision's deletes together and in revision order, so when the key ahead goes, the waiter
//!   knows in the same batch whether its own key went too (an operator's transaction, a lease
//!   shared by both): it then holds its turn with no read, and never when its own key is gone.
//!   The handoff is one delete commit and one event.
//! - **Further back**: it watches one single key, the one just ahead of it. When that key goes,
//!   it reads once (its own key and the keys ahead): nobody left ahead is its turn; else it
//!   watches the new key just ahead. Each key is watched by the one waiter right behind it, so
//!   a release is delivered to one waiter, whatever the length of the queue, and only that
//!   waiter makes a call. Its own key's deletion shows in that read (it then fails, never
//!   holds); its session's end is noticed at once.
//! - Every watch is registered "from now", before the queue is read again (a delete just before
//!   the registration is then seen in the read), long before it matters for a waiter further
//!   back: etcd may serve a watch whose registration raced a write from its 100 ms catch-up
//!   loop for its first moments, which a waiter at the back never notices. Each watch is
//!   cancelled as soon as it is not needed; a holder that waited on the prefix watch keeps it
//!   to report its own key's delete.

use crate::error::Result;
use crate::held::{retry_transient, HeldKey};
use crate::kv::Revision;
use crate::queue::{Ahead, Enqueued, KeyAhead, Queue};
use crate::watcher::{DeleteWatch, Watched};

/// Waits until no key of the queue's `ahead_prefix` older than `held`'s is left. Returns the
/// revision at which that was seen, and the prefix watch it waited on if any (it reports every
/// later delete of the key: for the holder to keep).
///
/// Fails when the key vanishes ([`Error::NotHeld`](crate::Error::NotHeld): deleted while the
/// lease lives) or the session ends while waiting ([`Error::SessionExpired`],
/// [`Error::SessionClosed`]): never reports a turn it does not have.
///
/// [`Error::SessionExpired`]: crate::Error::SessionExpired
/// [`Error::SessionClosed`]: crate::Error::SessionClosed
pub(crate) async fn wait_turn(
    queue: &Queue,
    held: &HeldKey,
    enqueued: Enqueued,
) -> Result<(Revision, Option<DeleteWatch>)> {
    let session = &held.session;
    let reread = || retry_transient(session, || queue.reread(held));
    let (mut after, mut ahead) = match enqueued.ahead {
        Ahead::Unknown => reread().await?,
        known => (enqueued.revision, known),
    };
    if let Ahead::All(keys) = &ahead {
        match keys.as_slice() {
            [] => return Ok((after, None)),
            [one] => {
                if let Some(turn) = wait_as_next(queue, held, one.clone()).await? {
                    return Ok(turn);
                }
                // The prefix watch broke: read again and wait as any waiter.
                (after, ahead) = reread().await?;
            }
            _ => {}
        }
    }
    // The watch of the key just ahead.
    let mut watch: Option<DeleteWatch> = None;
    loop {
        let key = match &ahead {
            Ahead::All(keys) | Ahead::Last(keys) if !keys.is_empty() => keys[0].clone(),
            _ => return Ok((after, None)),
        };
        let current = watch
            .as_mut()
            .filter(|w| w.watched() == &Watched::Key(key.key.clone()));
        let Some(w) = current else {
            watch = Some(open(held, Watched::Key(key.key.clone())).await?);
            // Registered after the last read: is the key still there? (Two single keys, not
            // the whole queue: it is there but for a waiter that gave up.)
            let (at, there) = is_there(queue, held, &key).await?;
            if !there {
                (after, ahead) = reread().await?;
            } else {
                after = at;
            }
            continue;
        };
        tracing::trace!(after, "waiting for the key just ahead");
        if !wait_ahead(held, w, after).await? {
            // The watch broke: watch afresh.
            watch = None;
        }
        (after, ahead) = reread().await?;
    }
}

/// [`Queue::is_there`], retrying transient failures while the session lives.
async fn is_there(queue: &Queue, held: &HeldKey, key: &KeyAhead) -> Result<(Revision, bool)> {
    retry_transient(&held.session, || queue.is_there(held, key)).await
}

/// Waits on the name's prefix watch for `key`, the one key ahead: registers it, reads my key
/// and that one (so nothing between the acquire and the registration is missed), then takes
/// the turn with no read. `None` when the watch broke (the caller reads again).
async fn wait_as_next(
    queue: &Queue,
    held: &HeldKey,
    key: KeyAhead,
) -> Result<Option<(Revision, Option<DeleteWatch>)>> {
    let session = &held.session;
    let mut watch = open(held, Watched::Prefix(queue.watch_prefix.clone())).await?;
    let (after, there) = is_there(queue, held, &key).await?;
    if !there {
        // It was the only key ahead.
        return Ok(Some((after, Some(watch))));
    }
    let key = key.key;
    tracing::trace!(after, "next in line");
    loop {
        let batch = tokio::select! {
            biased;
            batch = watch.next() => batch,
            _ = session.lost() => return Err(session.ended_error()),
        };
        match batch {
            Ok((revision, _)) if revision <= after => {}
            Ok((revision, keys)) => {
                // My own key's delete in any batch up to the last key's means my place is gone.
                if keys.iter().any(|k| **k == *held.key) {
                    return Err(held.gone_error().await);
                }
                if keys.contains(&key) {
                    return Ok(Some((revision, Some(watch))));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "prefix watch broke; reading again");
                return Ok(None);
            }
        }
    }
}

/// Opens a delete watch, retrying transient failures while the session lives.
async fn open(held: &HeldKey, watched: Watched) -> Result<DeleteWatch> {
    let session = &held.session;
    retry_transient(session, || {
        DeleteWatch::open(session, held.name(), watched.clone())
    })
    .await
}

/// Waits until the watched key just ahead is deleted after `after` (`true`), or the watch
/// broke (`false`); fails when the session ends.
async fn wait_ahead(held: &HeldKey, watch: &mut DeleteWatch, after: Revision) -> Result<bool> {
    loop {
        let batch = tokio::select! {
            biased;
            batch = watch.next() => batch,
            _ = held.session.lost() => return Err(held.session.ended_error()),
        };
        match batch {
            Ok((revision, _)) if revision <= after => {}
            Ok(_) => return Ok(true),
            Err(e) => {
                tracing::debug!(error = %e, "key watch broke; reading again");
                return Ok(false);
            }
        }
    }
}
