//! Distributed counting semaphore: N permits, weighted acquires, first come first served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::held::HeldKey;
use crate::kv::{PutRequest, Revision};
use crate::names::name_prefix;
use crate::semaphore_queue::{encode, wait_permits, window, View};
use crate::session::Session;
use crate::telemetry::{self, Attempt, PrimitiveMetrics, SpanOp};
use crate::txn::{Compare, CompareOp, Txn, TxnOp};
use tracing::Instrument;

/// Makes semaphore keys unique within a process; the lease id makes them unique across sessions.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// What holds a semaphore key, for messages.
const WHAT: &str = "semaphore permit";

/// The `primitive` label of a semaphore's metrics and spans.
const METRIC: &str = "semaphore";

/// A named counting semaphore shared by every session that uses the same name on the same
/// store: at most `permits` permits are held at once, in total.
///
/// # Layout and order
///
/// Each acquire writes one key, `name/<lease hex>-<n>`, on its session's lease, whose value is
/// `<permits asked>/<capacity>` in ASCII (e.g. `2/3`). Contenders are served in the order of
/// their keys' create revisions, first come first served and without barging: an acquire is
/// granted when the permits of every key ahead of it (holders and waiters) plus its own are at
/// most the capacity, so a request for 3 at the head of the queue is not overtaken by later
/// requests for 1. Keys go with their release, a cancelled acquire, or the session's end (a
/// crashed holder's permits come back when its lease expires).
///
/// # Capacity
///
/// The capacity is stored in every contender's key, not in a key of its own: it cannot be
/// torn from the permits it governs, and it goes with the last holder or waiter, leaving
/// nothing behind. All users of a name must agree on it: an acquire that finds a key ahead
/// of it written with another capacity fails with [`Error::CapacityMismatch`] (and removes
/// its key), so holders of one name never count with two capacities. Once nobody holds or
/// waits, the name may be used with another capacity.
///
/// # One session, several permits
///
/// A session may hold several permits of one name (each acquire is a key of its own, counted
/// like anyone else's). A task that holds permits and asks for more than are left waits for
/// its own release, for ever: release first, or ask for all at once.
///
/// # Waiting
///
/// A waiter watches the name's prefix for deletes (one watch per waiter, cancelled when it is
/// granted or gives up) and counts the releases of the keys ahead of it, with no read; every
/// release is delivered to every waiter of the name. The acquire reads the name's oldest
/// `permits` keys; a waiter further back reads again when one of those goes.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use coord::{mem::MemStore, Error, Semaphore, Session};
///
/// let store = MemStore::new();
/// let (a, b) = (Session::new(store.clone(), 10).await?, Session::new(store, 10).await?);
/// let pool_a = Semaphore::new(&a, "db-connections", 3)?;
/// let pool_b = Semaphore::new(&b, "db-connections", 3)?;
///
/// let two = pool_a.acquire(2).await?;
/// let one = pool_b.acquire(1).await?;
/// // All 3 permits are taken: another one would have to wait.
/// assert!(matches!(pool_b.try_acquire(1).await, Err(Error::Locked)));
/// assert!(two.fencing_token() < one.fencing_token());
///
/// two.release().await?;
/// let more = pool_b.acquire(2).await?;
/// (one.release().await?, more.release().await?);
/// // Users of one name must agree on its capacity.
/// let held = pool_a.acquire(1).await?;
/// let other = Semaphore::new(&b, "db-connections", 5)?;
/// assert!(matches!(other.acquire(1).await, Err(Error::CapacityMismatch { .. })));
/// held.release().await?;
/// # a.close().await?; b.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Semaphore {
    session: Session,
    metrics: PrimitiveMetrics,
    prefix: Vec<u8>,
    capacity: u32,
}

impl Semaphore {
    /// A semaphore named `name` (see the crate docs for what names may be) with `permits`
    /// permits in all. [`Error::InvalidArgument`] for a bad name or `permits == 0`.
    pub fn new(session: &Session, name: impl AsRef<[u8]>, permits: u32) -> Result<Semaphore> {
        let prefix = name_prefix(name.as_ref())?;
        if permits == 0 {
            return Err(Error::invalid("a semaphore needs at least one permit"));
        }
        Ok(Semaphore {
            session: session.clone(),
            metrics: PrimitiveMetrics::new(session, METRIC, name.as_ref()),
            prefix,
            capacity: permits,
        })
    }

    /// How many permits the semaphore has in all (its capacity).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Waits until `permits` permits are free for this acquire, in arrival order.
    ///
    /// Fails with [`Error::InvalidArgument`] unless `1 <= permits <= capacity` (nothing is
    /// written), [`Error::CapacityMismatch`] when holders or waiters ahead use the name with
    /// another capacity, [`Error::SessionExpired`] if the session ends while waiting (never
    /// returns a permit it does not hold), [`Error::SessionClosed`] after `close`,
    /// [`Error::NotHeld`] if its key is deleted while it waits, or a backend error. On any
    /// failure its key is removed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future removes its key in the background (also when its
    /// write was in flight; the lease TTL is the backstop), so nobody waits behind an
    /// abandoned attempt. Wrap it in [`tokio::time::timeout`] or use
    /// [`Semaphore::acquire_timeout`] for a deadline.
    pub async fn acquire(&self, permits: u32) -> Result<SemaphorePermit> {
        let attempt = self.metrics.attempt();
        self.acquire_with(&attempt, permits, true).await
    }

    /// [`Semaphore::acquire`] with a deadline: [`Error::Timeout`] when it passes, leaving no
    /// key.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Semaphore::acquire`].
    pub async fn acquire_timeout(
        &self,
        permits: u32,
        timeout: Duration,
    ) -> Result<SemaphorePermit> {
        let attempt = self.metrics.attempt();
        attempt
            .deadline(timeout, self.acquire_with(&attempt, permits, true))
            .await
    }

    /// Takes `permits` permits if they are free now and nobody waits ahead, else fails at once
    /// with [`Error::Locked`] (after removing its key). Other errors as [`Semaphore::acquire`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Semaphore::acquire`].
    pub async fn try_acquire(&self, permits: u32) -> Result<SemaphorePermit> {
        let attempt = self.metrics.attempt();
        self.acquire_with(&attempt, permits, false).await
    }

    async fn acquire_with(
        &self,
        attempt: &Attempt,
        permits: u32,
        wait: bool,
    ) -> Result<SemaphorePermit> {
        if permits == 0 || permits > self.capacity {
            return attempt.check(Err(Error::invalid(format!(
                "asked for {permits} permit(s) of a semaphore of {}: ask for 1 to {}",
                self.capacity, self.capacity
            ))));
        }
        attempt.check(self.session.check_usable())?;
        let mut key = self.prefix.clone();
        key.extend_from_slice(
            format!(
                "{:x}-{}",
                self.session.lease(),
                NEXT_KEY.fetch_add(1, Ordering::Relaxed)
            )
            .as_bytes(),
        );
        let span = telemetry::span(
            SpanOp::Acquire,
            METRIC,
            telemetry::name_of(&self.prefix),
            &key,
        );
        let mut held = HeldKey::new(self.session.clone(), key, self.prefix.clone(), WHAT, None);
        let granted = async {
            let (revision, view) = self.enqueue(&mut held, permits).await?;
            match view {
                Ok(view) if view.grants(permits, self.capacity) => Ok((revision, 0)),
                Ok(view) if wait => {
                    let ahead = view.ahead_len();
                    wait_permits(&held, &self.prefix, permits, self.capacity)
                        .await
                        .map(|revision| (revision, ahead))
                }
                Ok(_) => Err(Error::Locked),
                Err(e) => Err(e),
            }
        }
        .instrument(span.clone())
        .await;
        match attempt.check(granted) {
            Ok((revision, ahead)) => {
                telemetry::record_held(&span, held.rev, revision);
                let held = held.with_hold(attempt.acquired(ahead));
                Ok(SemaphorePermit::new(held, revision, permits, self.capacity))
            }
            Err(e) => {
                // The error stands even if this cleanup fails: it is retried in the background.
                let _ = held.release().await;
                Err(e)
            }
        }
    }

    /// Writes the key and reads the keys ahead, in one transaction. The view is an error when
    /// a key ahead is not compatible (the key is written then, and must be removed).
    async fn enqueue(&self, held: &mut HeldKey, permits: u32) -> Result<(Revision, Result<View>)> {
        let key = held.key.to_vec();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::Put(
                    PutRequest::new(key, encode(permits, self.capacity))
                        .with_lease(self.session.lease()),
                ),
                TxnOp::Range(window(&self.prefix, self.capacity)),
            ]);
        self.session
            .backend()
            .limits()
            .check_txn(&txn, "writing the semaphore key")?;
        let resp = held
            .write_txn(txn)
            .await
            .map_err(|e| self.session.lease_error(e))?;
        if !resp.succeeded {
            return Err(Error::Backend {
                source: "unique semaphore key already exists".into(),
            });
        }
        held.rev = resp.header_revision;
        let view = View::from_window(&resp.range(1)?.kvs, held, self.capacity);
        Ok((resp.header_revision, view))
    }
}

/// Proof that permits of a [`Semaphore`] were held when they were granted. Release them with
/// [`SemaphorePermit::release`].
///
/// Three ways permits are released, from best to last resort:
/// 1. [`SemaphorePermit::release`]: deletes the key and reports the outcome.
/// 2. Dropping the guard: deletes the key in the background, on the runtime the session was
///    created on, retrying while the session lives.
/// 3. The session's lease TTL: if the process dies or the store is unreachable, the store
///    deletes the key when the lease expires.
///
/// A guard does not keep its permits by itself: the session does, and
/// [`SemaphorePermit::lost`] tells when it no longer can.
#[must_use = "dropping the permit releases it"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct SemaphorePermit {
    held: HeldKey,
    revision: Revision,
    permits: u32,
    capacity: u32,
}

impl SemaphorePermit {
    fn new(held: HeldKey, revision: Revision, permits: u32, capacity: u32) -> Self {
        tracing::debug!(
            key = %String::from_utf8_lossy(&held.key),
            token = held.rev,
            permits,
            capacity,
            "semaphore permits acquired"
        );
        SemaphorePermit {
            held,
            revision,
            permits,
            capacity,
        }
    }

    /// How many permits this guard holds.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// The semaphore's capacity (its permits in all).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The key of this acquire: `name/<lease hex>-<n>`.
    pub fn key(&self) -> &[u8] {
        &self.held.key
    }

    /// The fencing token: the key's create revision. Tokens rise in arrival order, which is
    /// also the order of the grants.
    pub fn fencing_token(&self) -> Revision {
        self.held.rev
    }

    /// The store revision at which the permits were seen free.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// A compare that holds only while this guard still owns its key; put it in your own
    /// transactions so that a write cannot land after the permits were lost.
    pub fn is_owner(&self) -> Compare {
        self.held.is_current()
    }

    /// The session holding the permits.
    pub fn session(&self) -> &Session {
        &self.held.session
    }

    /// Resolves when the permits are lost: the session ended ([`Error::SessionExpired`],
    /// [`Error::SessionClosed`]) or the key was deleted by someone else ([`Error::NotHeld`]).
    /// Transient store failures are retried, never taken as "still held"; only an error that
    /// retrying cannot fix is returned instead.
    ///
    /// The first call watches the key and reads it once; every later call only waits, so it
    /// is cheap in a `select!` loop.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it mid-setup leaves the next call to finish it.
    pub async fn lost(&self) -> Error {
        self.held.lost().await
    }

    /// Releases the permits: deletes the key if it is still this guard's.
    ///
    /// [`Error::NotHeld`] (or [`Error::SessionExpired`]) when they had already been lost. On
    /// a backend error the release is retried in the background and the error returned.
    pub async fn release(self) -> Result<()> {
        self.held.release().await
    }
}
