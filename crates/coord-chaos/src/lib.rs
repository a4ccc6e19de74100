//! coord-chaos: the fault-tolerance and safety suite of `coord`, and the tools it is built from.
//!
//! | module | what |
//! | --- | --- |
//! | [`history`] | records every acquire and release (token, wall-clock interval) and checks the lock's rules: tokens rise, no overlap |
//! | [`proxy`] | a TCP proxy between a client and its store (etcd or PostgreSQL): pass, blackhole, delay, reset, switchable at runtime |
//! | [`worker`] | the `chaos-worker` process (a lock holder that can be `SIGKILL`ed or `SIGSTOP`ped) and its protocol |
//! | [`lossy`] | a backend wrapper that applies a transaction and then loses its reply |
//! | [`support`] | helpers: connecting to either store ([`support::Store`]), unique prefixes, leak checks |
//! | [`pg`] | PostgreSQL helpers: a schema per test, cutting a client's connections, URLs through the proxy |
//!
//! The fault tests themselves are in `tests/`: each spawns the etcd or PostgreSQL it breaks
//! (through `etcd-harness` and `pg-harness`), or uses `ETCD_ENDPOINTS` / `POSTGRES_URL` when it
//! breaks only clients. Under `CI=true` none of them skips. See `RELIABILITY.md` at the
//! repository root for what they measured.
#![deny(missing_docs)]

pub mod history;
pub mod lossy;
pub mod pg;
pub mod proxy;
pub mod support;
pub mod worker;
