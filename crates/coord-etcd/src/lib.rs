//! coord-etcd: the [`coord_core::Backend`] traits on etcd v3, the production backend of `coord`.
//!
//! ```no_run
//! use coord_core::{Backend, PutRequest, RangeRequest};
//! use coord_etcd::EtcdBackend;
//!
//! # async fn demo() -> coord_core::Result<()> {
//! // Or `EtcdConfig::from_env()?` (ETCD_ENDPOINTS, ETCD_USER, ETCD_PASSWORD, ETCD_CACERT, …).
//! let etcd = EtcdBackend::builder()
//!     .with_endpoints(["127.0.0.1:2379"])
//!     .connect()
//!     .await?;
//! let put = etcd.put(PutRequest::new("/app/config", "v1")).await?;
//! let got = etcd.range(RangeRequest::key("/app/config")).await?;
//! assert_eq!(got.kvs[0].mod_revision, put.header_revision);
//! # Ok(()) }
//! ```
//!
//! | piece | file | what it does |
//! | --- | --- | --- |
//! | [`EtcdBackend`] | `backend.rs` | one RPC per call, each under the request timeout |
//! | [`EtcdConfig`] | `config.rs` | endpoints, TLS, user, timeouts; `Debug` hides secrets |
//! | error mapping | `error.rs` | etcd status/messages → [`coord_core::Error`] by meaning |
//! | watches | `watch.rs` | returns once registered, re-opens after a lost connection |
//! | lease keep-alive | `keep_alive.rs` | every lease's renewals over one stream per backend |
//! | transport | `transport.rs` | HTTP/2 over TCP or TLS under `etcd-client`, failover, keep-alive |
//!
//! # Error mapping
//!
//! | etcd says | becomes |
//! | --- | --- |
//! | gRPC `Unavailable`, `DeadlineExceeded`, transport errors, "no leader", "request timed out", no answer within the request timeout | [`coord_core::Error::Unavailable`] |
//! | `PermissionDenied`, `Unauthenticated`, "permission denied", "authentication failed", "invalid auth token" | [`coord_core::Error::PermissionDenied`] |
//! | "requested lease not found", keep-alive TTL 0, time-to-live TTL -1 | [`coord_core::Error::LeaseNotFound`] |
//! | "required revision has been compacted", watch cancelled with a compact revision | [`coord_core::Error::Compacted`] |
//! | "future revision", "request is too large", "duplicate key given in txn request", "key is not provided", "too large lease TTL", `InvalidArgument`/`OutOfRange` | [`coord_core::Error::InvalidArgument`] |
//! | anything else ("database space exceeded", …) | [`coord_core::Error::Backend`] |
//!
//! The compaction point is not part of etcd's error message: for a compacted read the backend
//! learns it by opening a watch from revision 1 (etcd cancels it naming the point), else
//! reports the requested revision + 1, a lower bound. etcd's compaction keeps the revision
//! compacted at: `compact(r)` makes reads and watches *below* `r` fail.
//!
//! # Transport
//!
//! Requests go through this crate's own HTTP/2 transport (the `h2` crate under `etcd-client`),
//! to one member at a time over one connection (TCP, then TLS with ALPN `h2` when configured;
//! a new connection counts only once the member answered a PING). One member sees a client's
//! requests in order, so what etcd does not serve linearizably (a watch "from now", the lease
//! list) never lags behind the client's own acknowledged writes. Requests move to the next
//! endpoint when the member cannot be reached (a request that could not be sent is sent there
//! at once), when its connection ends, when it answers "no leader" (cut off from the majority),
//! and when a request gets no answer within the request timeout (stopped or overloaded). HTTP/2
//! keep-alive pings run while streams are open ([`EtcdConfig::with_keep_alive`]); an unanswered
//! one closes the connection, and its watches re-open on a new one. A unary request leaves in
//! one write (hyper's client, under tonic's channel, needed three), which is most of why an
//! uncontended lock + unlock runs at Go's rate (BENCHMARKS.md).
//!
//! # Watches
//!
//! - [`Backend::watch`](coord_core::Backend::watch) returns once etcd confirmed the watcher
//!   (its `created` answer), so with start revision `0` every later change is delivered.
//! - The stream hides etcd's `created` and progress frames and yields one event per change, in
//!   revision order.
//! - A start revision below etcd's compaction point gives [`coord_core::Error::Compacted`] as
//!   the stream's first (and last) item: etcd 3.4 confirms the watch first and cancels it
//!   afterwards, so `watch()` itself returns `Ok`.
//! - When the connection drops or the member goes away, the watch is re-opened from the
//!   revision after the last one received (on any endpoint): no event is lost or repeated.
//!   The first attempt is immediate, then the backoff of
//!   [`EtcdConfig::with_watch_backoff`] applies. If the resume point was compacted meanwhile,
//!   the stream yields `Compacted`. If it cannot re-open within
//!   [`EtcdConfig::with_watch_reconnect_timeout`] (60 s by default; `None` retries for ever),
//!   it yields [`coord_core::Error::Unavailable`]. After an error item the stream ends; it
//!   never ends without one.
//! - Permission errors and other failures a retry cannot fix end the stream at once.
//! - Dropping the stream resets its gRPC stream, and etcd removes the watcher; no task runs
//!   in the background.
//!
//! # Lease keep-alive
//!
//! - [`Backend::lease_keep_alive`](coord_core::Backend::lease_keep_alive) renews over one
//!   `LeaseKeepAlive` gRPC stream per backend (clones share it), whatever the lease, as etcd's
//!   Go client does: 1,000 idle sessions on one backend hold one stream on etcd. A task owns
//!   the stream; each answer (lease, TTL) goes to the oldest renewal waiting for that lease.
//! - A renewal fails with [`coord_core::Error::LeaseNotFound`] when etcd answers TTL 0, and
//!   with [`coord_core::Error::Unavailable`] when no answer comes within the request timeout
//!   or the stream fails (lost connection, "no leader"); every renewal waiting on a failed
//!   stream gets that error, and the next renewal opens a new stream (on another endpoint when
//!   the member did not answer or had no leader).
//! - A cancelled renewal is harmless: its answer is discarded, the others still match.
//! - The stream and its task start with the first renewal and end after two minutes without
//!   one, or when the last clone of the backend is dropped.
#![deny(missing_docs)]

mod backend;
mod config;
mod error;
mod keep_alive;
mod transport;
mod watch;

pub use backend::EtcdBackend;
pub use config::EtcdConfig;
