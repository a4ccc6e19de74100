//! How a contender waits for its turn: which keys it watches, and when it reads.
//!
//! A waiter knows the keys ahead of it (from its acquire transaction or a read: all of them, or
//! the newest 16 of a longer queue). That set only shrinks: a key created later is behind it.
//!
//! - **Next in line** (exactly one key ahead, known completely): it watches its name's whole
//!   prefix (deletes only). A prefix watch delivers each revision's deletes together and in
//!   revision order, so when the last key ahead goes, the waiter knows in the same batch whether
//!   its own key went too (an operator's transaction, a lease shared by both): it then holds its
//!   turn with no read, and never when its own key is gone. This is the handoff: one delete
//!   commit and one event.
//! - **Further back**: it watches two single keys: its own (so that its deletion is reported
//!   at once) and the one *two* ahead of it. When that one goes, the key just ahead usually
//!   holds: the waiter opens its prefix watch, reads once (while that key holds, off the
//!   handoff's path) and is next in line. A key ahead that gives up out of turn shows in that
//!   read.
//! - Every watch is registered "from now" and followed by a read (so a delete just before the
//!   registration is not missed), and cancelled as soon as it is not needed.
//!
//! So a release is delivered to at most two waiters: the next in line (its prefix watch) and
//! the one behind it (its watch two ahead), whatever the length of the queue; and it makes
//! only that second one read. Waiters further back receive nothing and make no call.

use crate::error::Result;
use crate::held::{retry_transient, HeldKey};
use crate::kv::Revision;
use crate::queue::{Ahead, Enqueued, Queue};
use crate::watcher::{DeleteWatch, Watched};

/// What a waiter does with what it knows.
enum Plan {
    /// Nobody is ahead: its turn.
    Turn,
    /// One key ahead, known completely: wait for it on the prefix watch.
    Next(Vec<u8>),
    /// Further back: wait for this key (two ahead, or the oldest of two known).
    Behind(Vec<u8>),
}

fn plan(ahead: &Ahead) -> Plan {
    match ahead {
        Ahead::All(keys) if keys.is_empty() => Plan::Turn,
        Ahead::All(keys) if keys.len() == 1 => Plan::Next(keys[0].clone()),
        Ahead::All(keys) | Ahead::Last(keys) => {
            Plan::Behind(keys.get(1).unwrap_or(&keys[0]).clone())
        }
        Ahead::Unknown => unreachable!("a read always knows who is ahead"),
    }
}

/// The watches a waiter further back keeps: its own key and the key it waits for.
struct Behind {
    own: DeleteWatch,
    target: DeleteWatch,
}

/// Waits until no key of the queue's `ahead_prefix` older than `held`'s is left. Returns the
/// revision at which that was seen, and the prefix watch it waited on when it was next in line
/// (for the holder to keep, to report its key's loss).
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
    // The prefix watch, once next in line (or about to be).
    let mut next: Option<DeleteWatch> = None;
    // The watches further back.
    let mut behind: Option<Behind> = None;
    loop {
        match plan(&ahead) {
            Plan::Turn => return Ok((after, next)),
            Plan::Next(key) => {
                behind = None;
                let Some(watch) = next.as_mut() else {
                    next = Some(open(held, Watched::Prefix(queue.watch_prefix.clone())).await?);
                    // Registered after the last read: read again, so nothing falls between.
                    (after, ahead) = reread().await?;
                    continue;
                };
                tracing::trace!(after, "next in line");
                match wait_next(held, watch, key, after).await? {
                    Some(revision) => {
                        after = revision;
                        ahead = Ahead::All(Vec::new());
                    }
                    None => {
                        next = None;
                        (after, ahead) = reread().await?;
                    }
                }
            }
            Plan::Behind(target) => {
                // A prefix watch opened on a guess that turned out wrong: every release would
                // reach it. Let it go.
                next = None;
                let watching = match &behind {
                    Some(b) => b.target.watched() == &Watched::Key(target.clone()),
                    None => false,
                };
                if !watching {
                    let had = behind.take();
                    behind = Some(open_behind(held, had, target).await?);
                    (after, ahead) = reread().await?;
                    continue;
                }
                let b = behind.as_mut().expect("checked above");
                tracing::trace!(after, "waiting further back");
                match wait_behind(held, b, after).await? {
                    Some(_) => {
                        // The key two ahead went: the one just ahead (if still there) holds
                        // now. Open the prefix watch before the read that confirms it.
                        next = Some(open(held, Watched::Prefix(queue.watch_prefix.clone())).await?);
                    }
                    None => behind = None,
                }
                (after, ahead) = reread().await?;
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

/// The watches of a waiter further back, for `target`: its own key's watch is kept when it has
/// one, the two are registered concurrently otherwise.
async fn open_behind(held: &HeldKey, had: Option<Behind>, target: Vec<u8>) -> Result<Behind> {
    match had {
        Some(b) => Ok(Behind {
            own: b.own,
            target: open(held, Watched::Key(target)).await?,
        }),
        None => {
            let (own, target) = futures::future::try_join(
                open(held, Watched::Key(held.key.to_vec())),
                open(held, Watched::Key(target)),
            )
            .await?;
            Ok(Behind { own, target })
        }
    }
}

/// Waits on the prefix watch until `key` (the last one ahead) is deleted after `after`; returns
/// that revision, or `None` when the watch broke (read again). My own key's delete in any batch
/// up to and including that one means my place is gone.
async fn wait_next(
    held: &HeldKey,
    watch: &mut DeleteWatch,
    key: Vec<u8>,
    after: Revision,
) -> Result<Option<Revision>> {
    loop {
        let batch = tokio::select! {
            biased;
            batch = watch.next() => batch,
            _ = held.session.lost() => return Err(held.session.ended_error()),
        };
        match batch {
            Ok((revision, _)) if revision <= after => {}
            Ok((revision, keys)) => {
                if keys.iter().any(|k| **k == *held.key) {
                    return Err(held.gone_error().await);
                }
                if keys.contains(&key) {
                    return Ok(Some(revision));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "prefix watch broke; reading again");
                return Ok(None);
            }
        }
    }
}

/// Waits further back until the target key is deleted after `after` (returns its revision), or
/// a watch broke (`None`: read again); fails when my own key is deleted.
async fn wait_behind(held: &HeldKey, b: &mut Behind, after: Revision) -> Result<Option<Revision>> {
    loop {
        let (own, batch) = tokio::select! {
            biased;
            batch = b.own.next() => (true, batch),
            batch = b.target.next() => (false, batch),
            _ = held.session.lost() => return Err(held.session.ended_error()),
        };
        match batch {
            Ok((revision, _)) if revision <= after => {}
            Ok(_) if own => return Err(held.gone_error().await),
            Ok((revision, _)) => return Ok(Some(revision)),
            Err(e) => {
                tracing::debug!(error = %e, "key watch broke; reading again");
                return Ok(None);
            }
        }
    }
}
