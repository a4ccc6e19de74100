//! `coord`: distributed coordination — leader election, mutex, read-write lock — on etcd or in
//! memory, correct under crashes, pauses and partitions, and wire-compatible with etcd's Go
//! `concurrency` package.
//!
//! ```
//! use coord::{mem::MemStore, Mutex, Session};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> coord::Result<()> {
//! let store = MemStore::new();
//! let session = Session::new(store.clone(), 10).await?;
//! let mutex = Mutex::new(&session, "jobs/nightly")?;
//!
//! let guard = mutex.lock().await?;
//! // Put `guard.fencing_token()` on writes to the resource, or `guard.is_owner()` into a
//! // transaction on the store, so that a write cannot land after the lock is lost.
//! println!("holding {} with token {}", String::from_utf8_lossy(guard.key()), guard.fencing_token());
//! guard.unlock().await?;
//! session.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! | feature | default | what it adds |
//! |---------|---------|--------------|
//! | `mem`   | yes     | [`mem`]: the in-memory backend (`coord-mem`), deterministic under tokio's paused clock, with fault injection |
//! | `etcd`  | no      | [`etcd`]: the etcd v3 backend (`coord-etcd`) |
//! | `postgres` | no   | [`postgres`]: the PostgreSQL backend (`coord-postgres`) |
#![deny(missing_docs)]

pub use coord_core::*;

/// The in-memory backend, for tests and single-process use.
#[cfg(feature = "mem")]
pub mod mem {
    pub use coord_mem::*;
}

/// The etcd backend.
#[cfg(feature = "etcd")]
pub mod etcd {
    pub use coord_etcd::*;
}

/// The PostgreSQL backend.
#[cfg(feature = "postgres")]
pub mod postgres {
    pub use coord_postgres::*;
}

// The README's example is compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
