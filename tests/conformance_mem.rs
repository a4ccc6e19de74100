//! The backend conformance suite (`coord_core::conformance`) against coord-mem: every scenario
//! as its own test, on a fresh `MemStore` each, reached three ways — the concrete store behind
//! `Arc<dyn Backend>`, the same wrapped again in `Arc` (the forwarding impl of `Backend for
//! Arc<T>`), and in `Box` — plus every scenario at once on one shared store, as tests share a
//! real etcd.
#![cfg(feature = "mem")]

use std::sync::Arc;

use coord::mem::MemStore;
use coord::{Backend, DynBackend};

/// The concrete `MemStore`, type-erased once.
mod mem {
    use super::*;

    coord_core::conformance_tests!(|| async { Arc::new(MemStore::new()) as DynBackend });
}

/// The required level only: a store that declares no optional capability and refuses every
/// request that needs one. Every primitive's scenario passes on it; the capability scenarios
/// and checks are left out.
mod mem_required_level {
    use super::*;

    coord_core::conformance_tests!(|| async {
        Arc::new(
            MemStore::builder()
                .capabilities(coord::Capabilities::none())
                .build(),
        ) as DynBackend
    });
}

/// Through `impl Backend for Arc<T>`: every call forwarded by the blanket impl first.
mod mem_through_arc {
    use super::*;

    coord_core::conformance_tests!(|| async {
        let inner: DynBackend = Arc::new(MemStore::new());
        Arc::new(inner) as DynBackend
    });
}

/// Through `impl Backend for Box<T>`. A subset: the forwarding is the same code as for `Arc`.
mod mem_through_box {
    use super::*;

    coord_core::conformance_tests!(
        || async {
            let inner: Box<dyn Backend> = Box::new(MemStore::new());
            Arc::new(inner) as DynBackend
        };
        storage_revision_per_write,
        storage_txn_compares,
        storage_watch_replay,
        storage_lease_lifecycle,
        mutex_exclusion,
        election_observe_leaders,
    );
}

/// Every scenario at once on one store: namespaces keep them apart, the exclusive ones
/// (compaction, exact revision counts, the whole lease list) wait for their turn, and no
/// scenario's leak check sees another's keys or leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_scenarios_on_one_shared_store() {
    let store = MemStore::new();
    coord_core::conformance::run_all(Arc::new(store.clone())).await;
    assert_eq!(store.key_count(), 0, "keys left on the shared store");
    assert_eq!(store.lease_count(), 0, "leases left on the shared store");
}

#[test]
fn scenario_list_is_complete() {
    assert!(
        coord_core::conformance::SCENARIOS.len() >= 30,
        "{:?}",
        coord_core::conformance::SCENARIOS
    );
    let mut names = coord_core::conformance::SCENARIOS.to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        coord_core::conformance::SCENARIOS.len(),
        "duplicate scenario names"
    );
}
