//! Benchmarks of `coord` on etcd and on coord-mem, compared in the same run with two anchors:
//! etcd's Go `concurrency` package and `etcd-client`'s server-side lock.
//!
//! - `coord-bench` (binary): runs scenarios, prints one JSON line per scenario with the
//!   anchors' fields (`scenario`, `ops`, `seconds`, `ops_per_s`, `p50_ms`, `p99_ms`) and an
//!   `extra` object (calls per operation, violations, …). See `coord-bench --help`.
//! - `coord-bench-report` (binary): turns the raw results of `scripts/bench.sh` into
//!   `BENCHMARKS.md` and a latency plot.
//!
//! The library holds what both binaries and the tests share.
#![deny(missing_docs)]

pub mod alloc;
pub mod crash;
pub mod etcd_metrics;
mod metrics;
mod postgres;
mod recipes_queue;
pub mod recipes_semaphore;
mod recipes_stm;
pub mod report;
mod report_metrics;
mod report_postgres;
mod report_recipes;
mod report_scale;
mod report_semaphore;
mod report_stm;
mod scale;
pub mod scenarios;
pub mod stats;
pub mod timeline;
mod write_floor;
