//! Lease types: a lease holds keys alive until it expires or is revoked.

use crate::kv::LeaseId;

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease id (never `0`).
    pub id: LeaseId,
    /// The TTL the store granted, in seconds.
    pub ttl: i64,
}

/// What the store knows of a live lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    /// The lease id.
    pub id: LeaseId,
    /// Seconds left before it expires (rounded as the store rounds).
    pub ttl: i64,
    /// The TTL it was granted with, in seconds.
    pub granted_ttl: i64,
    /// Keys attached to it, when asked for.
    pub keys: Vec<Vec<u8>>,
}
