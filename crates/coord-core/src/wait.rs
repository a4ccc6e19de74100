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
//!   it reads once (its own key and the keys ahead; serializable, as recent as the delete at
//!   least: see [`Queue::reread_since`]): nobody left ahead is its turn; else it
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
//! - **A held-back event**: when etcd put a watch in its catch-up group (a write raced the
//!   registration), its events come up to 100 ms late. While a watch is that young, a waiter
//!   whose wait runs twice as long as expected (its position times the session's recent
//!   handoff time) checks with a read of two single keys, then again after twice the time, and
//!   so on: a held-back event costs a few milliseconds, not a hundred, and a wait that goes as
//!   expected reads nothing more.

use std::time::Duration;

use tokio::time::Instant;

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
    let started = Instant::now();
    let reread = || retry_transient(session, || queue.reread(held));
    let mut position = enqueued.position;
    let (mut after, mut ahead) = match enqueued.ahead {
        Ahead::Unknown => reread().await?,
        known => (enqueued.revision, known),
    };
    if let Ahead::All(keys) = &ahead {
        position = position.max(keys.len());
        match keys.as_slice() {
            [] => return Ok((after, None)),
            [one] => {
                if let Some((turn, on_time)) = wait_as_next(queue, held, one.clone()).await? {
                    if on_time {
                        session.record_handoffs(started.elapsed(), 1);
                    }
                    return Ok(turn);
                }
                // The prefix watch broke: read again and wait as any waiter.
                (after, ahead) = reread().await?;
            }
            _ => {}
        }
    }
    // The watch of the key just ahead, and when to check it by reading.
    let mut watch: Option<(DeleteWatch, Fallback)> = None;
    // Whether every wake-up came from a watch event (the wait then tells the handoff time).
    let mut on_time = true;
    loop {
        let key = match &ahead {
            Ahead::All(keys) | Ahead::Last(keys) if !keys.is_empty() => keys[0].clone(),
            _ => {
                if on_time {
                    session.record_handoffs(started.elapsed(), enqueued.position);
                }
                return Ok((after, None));
            }
        };
        let current = watch
            .as_mut()
            .filter(|(w, _)| w.watched() == &Watched::Key(key.key.clone()));
        let Some((w, fallback)) = current else {
            let w = open(held, Watched::Key(key.key.clone())).await?;
            watch = Some((w, Fallback::new(held, position)));
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
        let mut deleted_at = 0;
        match wait_ahead(held, w, fallback.due(), after).await? {
            Woke::Deleted(revision) => deleted_at = revision,
            Woke::Broken => watch = None,
            Woke::Check => {
                fallback.checked();
                let (at, there) = is_there(queue, held, &key).await?;
                if there {
                    after = at;
                    continue;
                }
                tracing::debug!("a watch event was held back; found by reading");
                on_time = false;
            }
        }
        // Only the waiter right behind a key watches it: it moved up by one (or more).
        position = position.saturating_sub(1);
        (after, ahead) = if deleted_at > 0 {
            retry_transient(session, || queue.reread_since(held, deleted_at)).await?
        } else {
            reread().await?
        };
    }
}

/// Why a waiter further back woke up.
enum Woke {
    /// The key just ahead was deleted, at this revision.
    Deleted(Revision),
    /// The watch broke: watch afresh.
    Broken,
    /// Time to check by reading (a young watch may hold an event back).
    Check,
}

/// How long etcd may hold a new watch's events back (its catch-up loop runs every 100 ms).
const CATCH_UP: Duration = Duration::from_millis(150);
/// The earliest fallback check after a registration.
const FIRST_CHECK: Duration = Duration::from_millis(2);

/// When a waiter on a young watch checks by reading (see the module docs).
struct Fallback {
    registered: Instant,
    next: Instant,
    interval: Duration,
}

impl Fallback {
    /// For a watch registered now, by a waiter `position` handoffs from its turn.
    fn new(held: &HeldKey, position: usize) -> Fallback {
        let expected = held.session.handoff_time() * position.max(1) as u32;
        let interval = (expected * 2).max(FIRST_CHECK);
        let now = Instant::now();
        Fallback {
            registered: now,
            next: now + interval,
            interval,
        }
    }

    /// The next check, while the watch is young.
    fn due(&self) -> Option<Instant> {
        (self.next < self.registered + CATCH_UP).then_some(self.next)
    }

    fn checked(&mut self) {
        self.interval *= 2;
        self.next = Instant::now() + self.interval;
    }
}

/// Sleeps until `at`, or for ever.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// [`Queue::is_there`], retrying transient failures while the session lives.
async fn is_there(queue: &Queue, held: &HeldKey, key: &KeyAhead) -> Result<(Revision, bool)> {
    retry_transient(&held.session, || queue.is_there(held, key)).await
}

/// The turn, the watch to keep, and whether it came on time (by the watch, not by a check).
type NextTurn = ((Revision, Option<DeleteWatch>), bool);

/// Waits on the name's prefix watch for `key`, the one key ahead: registers it, reads my key
/// and that one (so nothing between the acquire and the registration is missed), then takes
/// the turn with no read. `None` when the watch broke (the caller reads again).
async fn wait_as_next(queue: &Queue, held: &HeldKey, key: KeyAhead) -> Result<Option<NextTurn>> {
    let session = &held.session;
    let mut watch = open(held, Watched::Prefix(queue.watch_prefix.clone())).await?;
    let mut fallback = Fallback::new(held, 1);
    let (mut after, there) = is_there(queue, held, &key).await?;
    if !there {
        // It was the only key ahead.
        return Ok(Some(((after, Some(watch)), false)));
    }
    tracing::trace!(after, "next in line");
    loop {
        let batch = tokio::select! {
            biased;
            batch = watch.next() => batch,
            _ = session.lost() => return Err(session.ended_error()),
            _ = until(fallback.due()) => {
                fallback.checked();
                let (at, there) = is_there(queue, held, &key).await?;
                if !there {
                    tracing::debug!("a watch event was held back; found by reading");
                    return Ok(Some(((at, Some(watch)), false)));
                }
                after = at;
                continue;
            }
        };
        match batch {
            Ok((revision, _)) if revision <= after => {}
            Ok((revision, keys)) => {
                // My own key's delete in any batch up to the last key's means my place is gone.
                if keys.iter().any(|k| **k == *held.key) {
                    return Err(held.gone_error().await);
                }
                if keys.contains(&key.key) {
                    return Ok(Some(((revision, Some(watch)), true)));
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

/// Waits until the watched key just ahead is deleted after `after`, the watch breaks, or the
/// fallback check is `due`; fails when the session ends.
async fn wait_ahead(
    held: &HeldKey,
    watch: &mut DeleteWatch,
    due: Option<Instant>,
    after: Revision,
) -> Result<Woke> {
    loop {
        let batch = tokio::select! {
            biased;
            batch = watch.next() => batch,
            _ = held.session.lost() => return Err(held.session.ended_error()),
            _ = until(due) => return Ok(Woke::Check),
        };
        match batch {
            Ok((revision, _)) if revision <= after => {}
            Ok((revision, _)) => return Ok(Woke::Deleted(revision)),
            Err(e) => {
                tracing::debug!(error = %e, "key watch broke; reading again");
                return Ok(Woke::Broken);
            }
        }
    }
}
