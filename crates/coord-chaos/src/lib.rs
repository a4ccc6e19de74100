//! coord-chaos: the fault-tolerance and safety suite of `coord`, and the tools it is built from.
//!
//! | module | what |
//! | --- | --- |
//! | [`history`] | records every acquire and release (token, wall-clock interval) and checks the lock's rules: tokens rise, no overlap |
//! | [`proxy`] | a TCP proxy between a client and etcd: pass, blackhole, delay, reset, switchable at runtime |
//! | [`worker`] | the `chaos-worker` process (a lock holder that can be `SIGKILL`ed or `SIGSTOP`ped) and its protocol |
//! | [`lossy`] | a backend wrapper that applies a transaction and then loses its reply |
//! | [`support`] | helpers: connecting, unique prefixes, leak checks |
//!
//! The fault tests themselves are in `tests/`: each spawns the etcd it breaks (through
//! `etcd-harness`), or uses `ETCD_ENDPOINTS` when it breaks only clients. Under `CI=true` none
//! of them skips. See `RELIABILITY.md` at the repository root for what they measured.
#![deny(missing_docs)]

pub mod history;
pub mod lossy;
pub mod proxy;
pub mod support;
pub mod worker;
