//! The lock workload of the throughput and memory tests: what a `coord` mutex sends.

#![allow(dead_code)]

use coord_core::{
    Backend, Compare, CompareOp, DeleteRequest, KeyRange, PutRequest, RangeRequest, Txn,
    WatchRequest, WatchStream,
};
use coord_mem::MemStore;
use futures::{FutureExt, StreamExt};

/// One session: a lease, its lock key, and the delete-only watch on the lock's prefix.
pub struct Session {
    pub store: MemStore,
    pub key: Vec<u8>,
    pub lease: i64,
    pub watch: WatchStream,
    pub events: u64,
}

pub const PREFIX: &str = "bench/lock/";

impl Session {
    pub async fn new(store: &MemStore) -> Session {
        let lease = store.lease_grant(60, None).await.unwrap().id;
        let watch = store
            .watch(WatchRequest::new(KeyRange::prefix(PREFIX)).with_no_put())
            .await
            .unwrap();
        Session {
            store: store.clone(),
            key: format!("{PREFIX}{lease:x}").into_bytes(),
            lease,
            watch,
            events: 0,
        }
    }

    /// Lock (1 txn: put + first-created + last-two-created) then unlock (1 txn: compare +
    /// delete), then take the release event off the watch.
    pub async fn cycle(&mut self) {
        let lock = Txn::new()
            .when([Compare::create_revision(
                self.key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                PutRequest::new(self.key.clone(), "")
                    .with_lease(self.lease)
                    .into(),
                RangeRequest::first_created(PREFIX).into(),
                RangeRequest::last_created(PREFIX, 2).into(),
            ])
            .or_else([
                RangeRequest::key(self.key.clone()).into(),
                RangeRequest::first_created(PREFIX).into(),
                RangeRequest::last_created(PREFIX, 2).into(),
            ]);
        let resp = self.store.txn(lock).await.unwrap();
        let owner = &resp.range(1).unwrap().kvs[0];
        assert_eq!(owner.key, self.key);
        let created = owner.create_revision;
        let unlock = Txn::new()
            .when([Compare::create_revision(
                self.key.clone(),
                CompareOp::Equal,
                created,
            )])
            .and_then([DeleteRequest::key(self.key.clone()).into()]);
        assert!(self.store.txn(unlock).await.unwrap().succeeded);
        while let Some(Some(ev)) = tokio::task::unconstrained(self.watch.next()).now_or_never() {
            ev.unwrap();
            self.events += 1;
        }
    }
}
