//! The backend conformance suite (feature `conformance`): one public async fn per scenario,
//! which every backend's tests run.
//!
//! Each scenario takes the backend as a [`DynBackend`], works under its own random namespace
//! (`conformance/<scenario>/<random hex>/`, through [`Prefixed`](crate::Prefixed)), and ends
//! with a leak check: no key left in its namespace, none of the leases it created alive (it
//! gives background releases a bounded moment to land). A scenario panics when something is
//! wrong, and the message names the scenario, the line of the check and what differed.
//!
//! The scenarios check the storage contract of [`Backend`](crate::Backend) and the behaviour of
//! every primitive on top of it (see [`SCENARIOS`] and each function's documentation). They
//! need no fault injection and no paused clock: a lease's loss is made with
//! [`Backend::lease_revoke`](crate::Backend::lease_revoke), and only
//! [`storage_lease_expiry`] waits for a real expiry (about the store's minimum TTL). So they
//! run unchanged on a real etcd.
//!
//! # Running them
//!
//! In a backend's integration tests, [`conformance_tests!`](crate::conformance_tests)
//! generates one `#[tokio::test]` per scenario, so a failure names its scenario:
//!
//! ```ignore
//! // tests/conformance.rs of a backend crate
//! use std::sync::Arc;
//! use coord_core::DynBackend;
//!
//! coord_core::conformance_tests!(|| async { Arc::new(my_backend::Store::new()) as DynBackend });
//! ```
//!
//! The expression is called once per test and must return a future whose output implements
//! [`TestBackend`]: a [`DynBackend`], an `Option` of one (`None` skips the test, printing a
//! notice: for "no etcd installed"), or a `(backend, guard)` pair whose guard (e.g. the
//! handle of a spawned etcd) lives until the test ends. The tests use tokio's multi-threaded
//! runtime, so the calling crate needs `tokio` with `macros` and `rt-multi-thread`.
//! `conformance_tests!(make; scenario_a, scenario_b)` generates only the named ones.
//!
//! [`run_all`] runs every scenario concurrently on one backend and reports all failures at
//! once.
//!
//! # Sharing a store
//!
//! On a real etcd, scenarios of one test process share the store. They stay apart by
//! namespace and by only ever checking their own keys and leases. Three kinds of check are
//! global: compaction (it cuts every reader's history), exact revision arithmetic and the
//! whole lease list. The scenarios that make them ([`storage_revision_per_write`],
//! [`storage_compaction`], [`election_observe_after_compaction`], [`session_invalid_ttl`])
//! take a process-wide exclusive turn; the others run alongside each other. Another process
//! writing to the same etcd at the same moment can still upset those four.

mod barriers;
mod counter;
mod election;
mod lease;
mod mutex;
mod queues;
mod rwlock;
mod semaphore;
mod session;
mod stm;
mod storage;
pub(crate) mod support;
mod watch;

use std::future::Future;
use std::pin::Pin;

pub use barriers::{
    barrier_hold_wait_release, barrier_wait_after_release, double_barrier_crash,
    double_barrier_enter_leave, double_barrier_large_count,
};
pub use counter::{counter_compare_and_set, counter_concurrent_adds};
pub use election::{
    election_cancelled_campaign, election_failover_on_close, election_lost_on_key_delete,
    election_name_prefix_of_key, election_not_leader_after_loss, election_observe_after_compaction,
    election_observe_leaders, election_observe_one_revision, election_proclaim_observed,
    election_proposal_size_limit, election_recampaign_proclaims, election_resume,
    election_tokens_rise,
};
pub use lease::{storage_lease_expiry, storage_lease_lifecycle, storage_lease_unknown};
pub use mutex::{
    mutex_cancelled_waiter, mutex_dropped_guard_releases, mutex_exclusion,
    mutex_guard_lost_on_revoke, mutex_is_owner_fencing, mutex_lost_on_key_delete,
    mutex_names_apart, mutex_released_on_session_close, mutex_same_session_relock,
    mutex_try_lock_one_wins, mutex_try_lock_same_session, mutex_unlock_after_key_gone,
    mutex_waiter_ahead_expires, mutex_waiter_key_deleted, mutex_waiter_session_closed,
    mutex_waiter_session_revoked, mutex_watches_bounded,
};
pub use queues::{
    priority_queue_order, priority_queue_producers_consumers, queue_cancelled_consumer,
    queue_consumer_crashes, queue_fifo_single_producer, queue_producers_consumers,
    recipes_reject_bad_input,
};
pub use rwlock::{
    rwlock_cancelled_writer, rwlock_contention, rwlock_fifo_fairness, rwlock_reader_expires,
    rwlock_readers_share, rwlock_same_session_conflicts, rwlock_try_variants,
    rwlock_writer_excludes,
};
pub use semaphore::{
    semaphore_bad_input, semaphore_cancelled_waiter, semaphore_capacity_mismatch,
    semaphore_exclusion, semaphore_fifo_no_barging, semaphore_session_loss_frees_permits,
    semaphore_timeout_leaves_nothing, semaphore_tokens_rise, semaphore_try_acquire,
};
pub use session::{
    primitives_reject_bad_input, session_close, session_existing_lease, session_invalid_ttl,
    session_lost_on_revoke, session_one_per_lease, session_resumed_lease_renewed,
    session_unknown_lease,
};
pub use stm::{
    stm_commit_and_abort, stm_isolation_reads, stm_isolation_writes, stm_transfers_keep_sum,
};
pub use storage::{
    storage_compaction, storage_key_metadata, storage_key_range_forms, storage_past_revision_reads,
    storage_prefixed_isolation, storage_range_revision_filters, storage_range_sort_limit,
    storage_revision_per_write, storage_txn_compares, storage_txn_sees_own_writes,
};
pub use watch::{storage_watch_filters, storage_watch_from_now, storage_watch_replay};

use crate::backend::DynBackend;

/// Calls `$callback! { $($args)* ; <every scenario name> }`. The one list of scenarios.
#[doc(hidden)]
#[macro_export]
macro_rules! __coord_conformance_scenarios {
    ($callback:path { $($args:tt)* }) => {
        $callback! {
            $($args)* ;
            storage_revision_per_write,
            storage_key_metadata,
            storage_range_sort_limit,
            storage_range_revision_filters,
            storage_past_revision_reads,
            storage_compaction,
            storage_txn_compares,
            storage_txn_sees_own_writes,
            storage_prefixed_isolation,
            storage_key_range_forms,
            storage_watch_replay,
            storage_watch_from_now,
            storage_watch_filters,
            storage_lease_lifecycle,
            storage_lease_unknown,
            storage_lease_expiry,
            session_invalid_ttl,
            session_unknown_lease,
            session_existing_lease,
            session_close,
            session_lost_on_revoke,
            session_one_per_lease,
            session_resumed_lease_renewed,
            primitives_reject_bad_input,
            mutex_exclusion,
            mutex_try_lock_one_wins,
            mutex_try_lock_same_session,
            mutex_unlock_after_key_gone,
            mutex_waiter_session_revoked,
            mutex_waiter_ahead_expires,
            mutex_same_session_relock,
            mutex_cancelled_waiter,
            mutex_released_on_session_close,
            mutex_waiter_session_closed,
            mutex_guard_lost_on_revoke,
            mutex_is_owner_fencing,
            mutex_dropped_guard_releases,
            mutex_names_apart,
            mutex_lost_on_key_delete,
            mutex_waiter_key_deleted,
            mutex_watches_bounded,
            rwlock_readers_share,
            rwlock_writer_excludes,
            rwlock_fifo_fairness,
            rwlock_contention,
            rwlock_try_variants,
            rwlock_cancelled_writer,
            rwlock_reader_expires,
            rwlock_same_session_conflicts,
            semaphore_exclusion,
            semaphore_fifo_no_barging,
            semaphore_try_acquire,
            semaphore_timeout_leaves_nothing,
            semaphore_cancelled_waiter,
            semaphore_session_loss_frees_permits,
            semaphore_capacity_mismatch,
            semaphore_bad_input,
            semaphore_tokens_rise,
            election_observe_leaders,
            election_failover_on_close,
            election_recampaign_proclaims,
            election_resume,
            election_name_prefix_of_key,
            election_observe_after_compaction,
            election_proclaim_observed,
            election_not_leader_after_loss,
            election_tokens_rise,
            election_cancelled_campaign,
            election_observe_one_revision,
            election_proposal_size_limit,
            election_lost_on_key_delete,
            counter_concurrent_adds,
            counter_compare_and_set,
            stm_transfers_keep_sum,
            stm_isolation_reads,
            stm_isolation_writes,
            stm_commit_and_abort,
            barrier_hold_wait_release,
            barrier_wait_after_release,
            double_barrier_enter_leave,
            double_barrier_crash,
            double_barrier_large_count,
            queue_producers_consumers,
            queue_fifo_single_producer,
            queue_cancelled_consumer,
            queue_consumer_crashes,
            priority_queue_order,
            priority_queue_producers_consumers,
            recipes_reject_bad_input
        }
    };
}

/// Generates one `#[tokio::test]` per conformance scenario, each running it against a
/// backend made by `$make_backend` (see the [module docs](crate::conformance)).
///
/// ```ignore
/// coord_core::conformance_tests!(|| async { std::sync::Arc::new(MyStore::new()) as coord_core::DynBackend });
/// // Only some scenarios:
/// coord_core::conformance_tests!(make_backend; storage_watch_replay, mutex_exclusion);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make_backend:expr $(,)?) => {
        $crate::__coord_conformance_scenarios!($crate::__coord_conformance_tests { ($make_backend) });
    };
    ($make_backend:expr ; $($scenario:ident),+ $(,)?) => {
        $crate::__coord_conformance_tests! { ($make_backend) ; $($scenario),+ }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __coord_conformance_tests {
    (($make_backend:expr) ; $($scenario:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                let fixture = ($make_backend)().await;
                if let Some(backend) = $crate::conformance::TestBackend::backend(&fixture) {
                    $crate::conformance::$scenario(backend).await;
                } else {
                    eprintln!(
                        "conformance scenario `{}` skipped: no backend to run it on",
                        stringify!($scenario)
                    );
                }
                drop(fixture);
            }
        )+
    };
}

macro_rules! scenario_list {
    (; $($name:ident),+) => {
        /// The name of every scenario, in the order [`run_all`] starts them.
        pub const SCENARIOS: &[&str] = &[$(stringify!($name)),+];

        /// Every scenario as `(name, fn)`.
        fn all() -> Vec<(&'static str, fn(DynBackend) -> ScenarioFuture)> {
            vec![$((stringify!($name), |b| Box::pin($name(b)) as ScenarioFuture)),+]
        }
    };
}

type ScenarioFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

__coord_conformance_scenarios!(scenario_list {});

/// What a test's backend factory may return: something holding the backend under test.
///
/// Implemented for a [`DynBackend`]; for `Option<T>` (`None`: skip the test, e.g. when no
/// etcd is installed); and for a pair `(T, G)` whose second half is kept alive until the test
/// ends (e.g. the handle of an etcd started for it).
pub trait TestBackend {
    /// The backend to run scenarios on, or `None` to skip them.
    fn backend(&self) -> Option<DynBackend>;
}

impl TestBackend for DynBackend {
    fn backend(&self) -> Option<DynBackend> {
        Some(self.clone())
    }
}

impl<T: TestBackend> TestBackend for Option<T> {
    fn backend(&self) -> Option<DynBackend> {
        self.as_ref().and_then(TestBackend::backend)
    }
}

impl<T: TestBackend, G> TestBackend for (T, G) {
    fn backend(&self) -> Option<DynBackend> {
        self.0.backend()
    }
}

/// Runs every scenario against `backend`, all at once (each in its own task, as tests of one
/// process would on a shared etcd), and panics listing every scenario that failed with its
/// message.
pub async fn run_all(backend: DynBackend) {
    let tasks: Vec<_> = all()
        .into_iter()
        .map(|(name, scenario)| (name, tokio::spawn(scenario(backend.clone()))))
        .collect();
    let mut failures = Vec::new();
    for (name, task) in tasks {
        if let Err(e) = task.await {
            let message = if e.is_panic() {
                let payload = e.into_panic();
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "<non-string panic>".into())
            } else {
                e.to_string()
            };
            failures.push(format!("{name}: {message}"));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} conformance scenarios failed:\n{}",
            failures.len(),
            SCENARIOS.len(),
            failures.join("\n")
        );
    }
}
