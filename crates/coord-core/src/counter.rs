//! A shared 64-bit counter in one key (Curator's `SharedCount` / `DistributedAtomicLong`).

use crate::backend::DynBackend;
use crate::error::{Error, Result};
use crate::into_backend::IntoBackend;
use crate::kv::{DeleteRequest, KeyValue, PutRequest, RangeRequest, Revision};
use crate::names::MAX_NAME_LEN;
use crate::txn::{Compare, CompareOp, Txn, TxnOp};

/// How many times [`Counter::add`] and [`Counter::compare_and_set`] retry after losing to a
/// concurrent writer before giving up with [`Error::Conflict`].
pub const DEFAULT_MAX_ATTEMPTS: u32 = 1000;

/// A signed 64-bit counter shared by every client that uses the same name on the same store.
///
/// # Layout
///
/// One key, the name itself (not under `name/`, so a counter and a mutex of one name never
/// meet), holding the value as **8 bytes, big-endian two's complement** — the encoding of
/// Curator's `DistributedAtomicLong` (Java's `long` as bytes). A fixed width needs no
/// parsing, orders like the number for non-negative values and lets a JVM peer share the
/// value; `etcdctl get` shows bytes rather than digits, which is the price. A missing key
/// reads as `0`. A key holding anything but 8 bytes is not a counter: every operation answers
/// [`Error::InvalidArgument`] and leaves it alone.
///
/// # Persistence
///
/// The key is on no lease: the counter outlives every client and session, as a count must.
/// [`Counter::delete`] removes it.
///
/// # Atomicity
///
/// [`Counter::add`] and [`Counter::compare_and_set`] read the key, then write it in one
/// transaction guarded by the key's mod revision; a transaction that loses to another writer
/// reads the new value in the same round trip and tries again, at most
/// [`Counter::with_max_attempts`] times ([`DEFAULT_MAX_ATTEMPTS`]), then fails with
/// [`Error::Conflict`]. Concurrent adds from any number of clients therefore sum exactly.
/// An add that would leave the `i64` range fails with [`Error::Overflow`], writing nothing:
/// the counter never wraps.
///
/// # Cancel safety
///
/// Every method is cancel safe in the sense of a single transaction: a dropped future has
/// written its update completely or not at all (the write may land if the transaction was
/// already sent).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> coord::Result<()> {
/// use coord::{mem::MemStore, Counter, DynBackend};
///
/// let store: DynBackend = std::sync::Arc::new(MemStore::new());
/// let visits = Counter::new(&store, "stats/visits")?;
/// assert_eq!(visits.get().await?, 0); // no key yet reads as 0
/// assert_eq!(visits.add(5).await?, 5);
/// assert!(visits.compare_and_set(5, 10).await?);
/// assert!(!visits.compare_and_set(5, 11).await?); // it is 10 now
/// assert!(matches!(visits.add(i64::MAX).await, Err(coord::Error::Overflow { .. })));
/// assert!(visits.delete().await?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Counter {
    backend: DynBackend,
    key: Vec<u8>,
    max_attempts: u32,
}

impl Counter {
    /// The counter named `name` on `backend` (a backend or a `&Session`). Names are non-empty
    /// bytes of at most [`MAX_NAME_LEN`] bytes; the key is the name itself.
    pub fn new(backend: impl IntoBackend, name: impl AsRef<[u8]>) -> Result<Counter> {
        let name = name.as_ref();
        if name.is_empty() {
            return Err(Error::invalid("counter name must not be empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(Error::invalid(format!(
                "counter name is {} bytes, longer than {MAX_NAME_LEN}",
                name.len()
            )));
        }
        Ok(Counter {
            backend: backend.into_backend(),
            key: name.to_vec(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        })
    }

    /// Retries at most `attempts` times (at least 1) before [`Error::Conflict`].
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The key holding the value.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The current value (`0` when the key does not exist).
    pub async fn get(&self) -> Result<i64> {
        Ok(self.read().await?.value)
    }

    /// Sets the value, whatever it was.
    pub async fn set(&self, value: i64) -> Result<()> {
        self.backend
            .put(PutRequest::new(self.key.clone(), encode(value)))
            .await?;
        Ok(())
    }

    /// Adds `delta` atomically and returns the new value. [`Error::Overflow`] when the sum
    /// leaves the `i64` range (nothing written); [`Error::Conflict`] after too many lost races.
    pub async fn add(&self, delta: i64) -> Result<i64> {
        let mut current = self.read().await?;
        for _ in 0..self.max_attempts {
            let new = current.value.checked_add(delta).ok_or(Error::Overflow {
                value: current.value,
                delta,
            })?;
            match self.swap(&current, new).await? {
                None => return Ok(new),
                Some(now) => current = now,
            }
        }
        Err(Error::Conflict {
            attempts: self.max_attempts,
        })
    }

    /// Sets the value to `new` if it is `expected` (a missing key counts as `0`); returns
    /// whether it did. `false` means the value was not `expected` when read; a concurrent
    /// change between the read and the write makes it read again, not fail.
    pub async fn compare_and_set(&self, expected: i64, new: i64) -> Result<bool> {
        let mut current = self.read().await?;
        for _ in 0..self.max_attempts {
            if current.value != expected {
                return Ok(false);
            }
            match self.swap(&current, new).await? {
                None => return Ok(true),
                Some(now) => current = now,
            }
        }
        Err(Error::Conflict {
            attempts: self.max_attempts,
        })
    }

    /// Deletes the key; returns whether it existed. The counter reads `0` afterwards.
    pub async fn delete(&self) -> Result<bool> {
        let resp = self
            .backend
            .delete(DeleteRequest::key(self.key.clone()))
            .await?;
        Ok(resp.deleted > 0)
    }

    async fn read(&self) -> Result<Current> {
        let resp = self
            .backend
            .range(RangeRequest::key(self.key.clone()))
            .await?;
        self.current(resp.kvs.first())
    }

    /// Writes `new` if the key is still as `seen`; otherwise returns it as it is now (read by
    /// the failed transaction itself).
    async fn swap(&self, seen: &Current, new: i64) -> Result<Option<Current>> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.key.clone(),
                CompareOp::Equal,
                seen.mod_revision,
            )])
            .and_then([TxnOp::Put(PutRequest::new(self.key.clone(), encode(new)))])
            .or_else([TxnOp::Range(RangeRequest::key(self.key.clone()))]);
        let resp = self.backend.txn(txn).await?;
        if resp.succeeded {
            return Ok(None);
        }
        tracing::trace!(key = %String::from_utf8_lossy(&self.key), "counter update lost a race; retrying");
        let now = self.current(resp.range(0)?.kvs.first())?;
        Ok(Some(now))
    }

    fn current(&self, kv: Option<&KeyValue>) -> Result<Current> {
        match kv {
            None => Ok(Current {
                value: 0,
                mod_revision: 0,
            }),
            Some(kv) => Ok(Current {
                value: decode(&kv.value).ok_or_else(|| {
                    Error::invalid(format!(
                        "key {:?} holds {} bytes, not an 8-byte counter value",
                        String::from_utf8_lossy(&self.key),
                        kv.value.len()
                    ))
                })?,
                mod_revision: kv.mod_revision,
            }),
        }
    }
}

/// The value as read, with the mod revision that guards the write (`0`: no key).
struct Current {
    value: i64,
    mod_revision: Revision,
}

/// The stored form of a value: 8 bytes, big-endian.
pub fn encode(value: i64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

/// The value of a stored form; `None` unless it is exactly 8 bytes.
pub fn decode(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_eight_bytes_big_endian() {
        assert_eq!(encode(1), vec![0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(encode(-1), vec![0xff; 8]);
        assert_eq!(decode(&encode(i64::MIN)), Some(i64::MIN));
        assert_eq!(decode(b"12"), None);
    }
}
