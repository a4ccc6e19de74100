//! A 3-member cluster: requests and watches fail over between members.

use std::time::Duration;

use coord_core::{Backend, KeyRange, PutRequest, RangeRequest, WatchRequest};
use coord_etcd::{EtcdBackend, EtcdConfig};
use etcd_harness::{EtcdCluster, EtcdOptions};

use crate::{assert_quiet, key, next_events, prefix};

async fn put_retrying(b: &EtcdBackend, k: Vec<u8>) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match b.put(PutRequest::new(k.clone(), "v")).await {
            Ok(put) => return put.header_revision,
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("put: {e:?}"),
        }
    }
}

#[tokio::test]
async fn watch_and_writes_survive_each_member_going_down() {
    if !etcd_harness::require_etcd_binary() {
        return;
    }
    let opts = EtcdOptions::new().with_args(["--heartbeat-interval=50", "--election-timeout=400"]);
    let cluster = EtcdCluster::start_with(3, opts).await.unwrap();
    let b = EtcdConfig::new(cluster.endpoints())
        .with_request_timeout(Duration::from_secs(2))
        .with_watch_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let p = prefix("cluster");
    let mut w = b
        .watch(WatchRequest::new(KeyRange::prefix(p.clone())))
        .await
        .unwrap();
    let mut want = Vec::new();
    // Whichever member serves the watch, one of these kills breaks it.
    for i in 0..3 {
        want.push(put_retrying(&b, key(&p, &format!("before-{i}"))).await);
        cluster.member(i).kill();
        want.push(put_retrying(&b, key(&p, &format!("during-{i}"))).await);
        cluster.member(i).start_again().await.unwrap();
    }
    let got: Vec<_> = next_events(&mut w, want.len())
        .await
        .iter()
        .map(|e| e.revision())
        .collect();
    assert_eq!(got, want, "every write once, in order");
    assert_quiet(&mut w, Duration::from_millis(200)).await;
    let count = b
        .range(RangeRequest::prefix(p).with_count_only())
        .await
        .unwrap()
        .count;
    assert_eq!(count, 6);
}
