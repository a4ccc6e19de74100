//! Keys of the recipes laid out as etcd's Go `contrib/recipes` writes them: unique keys named
//! by the clock (`prefix/<unix nanos>`), created only when absent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::kv::{LeaseId, PutRequest};
use crate::txn::{Compare, CompareOp, Txn, TxnOp};

/// The last suffix handed out in this process: suffixes strictly rise, so two keys of one
/// process never collide, even within one clock tick or when the clock steps back.
static LAST_NANOS: AtomicU64 = AtomicU64::new(0);

/// `prefix` followed by the time in nanoseconds since the Unix epoch, in decimal: Go's
/// `fmt.Sprintf("%s/%v", prefix, time.Now().UnixNano())` (here `prefix` ends with the `/`).
/// Unique in this process; across processes the create-if-absent write
/// ([`create_txn`]) catches a collision, and the caller takes a new key.
pub(crate) fn unique_key(prefix: &[u8]) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos()
        .min(u128::from(u64::MAX)) as u64;
    let mut last = LAST_NANOS.load(Ordering::Relaxed);
    let nanos = loop {
        let next = now.max(last + 1);
        match LAST_NANOS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    let mut key = prefix.to_vec();
    key.extend_from_slice(nanos.to_string().as_bytes());
    key
}

/// Writes `key` with `value` on `lease` (`0`: none) only if it does not exist (Go's
/// `putNewKV`); `extra` operations run in the same transaction when it does.
pub(crate) fn create_txn(
    key: &[u8],
    value: &[u8],
    lease: LeaseId,
    extra: impl IntoIterator<Item = TxnOp>,
) -> Txn {
    Txn::new()
        .when([Compare::create_revision(key.to_vec(), CompareOp::Equal, 0)])
        .and_then(
            std::iter::once(TxnOp::Put(
                PutRequest::new(key.to_vec(), value.to_vec()).with_lease(lease),
            ))
            .chain(extra),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_keys_rise_and_are_decimal_nanos() {
        let a = unique_key(b"q/");
        let b = unique_key(b"q/");
        let num = |k: &[u8]| -> u64 { std::str::from_utf8(&k[2..]).unwrap().parse().unwrap() };
        assert!(a.starts_with(b"q/") && b.starts_with(b"q/"));
        assert!(num(&b) > num(&a));
        // Nanoseconds since the epoch: after 2020.
        assert!(num(&a) > 1_577_836_800_000_000_000);
    }
}
