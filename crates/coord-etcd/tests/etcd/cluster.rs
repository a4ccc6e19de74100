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

/// Three members that elect a new leader within about half a second.
async fn fast_cluster() -> Option<EtcdCluster> {
    if !etcd_harness::require_etcd_binary() {
        return None;
    }
    let opts = EtcdOptions::new().with_args(["--heartbeat-interval=50", "--election-timeout=400"]);
    Some(EtcdCluster::start_with(3, opts).await.unwrap())
}

#[tokio::test]
async fn watch_and_writes_survive_each_member_going_down() {
    let Some(cluster) = fast_cluster().await else {
        return;
    };
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

/// Requests go to one member at a time. When it stops answering (paused: its connections stay
/// open, nothing comes back), the first request times out and the next ones go to another
/// member, without waiting for the HTTP/2 keep-alive (30 s here) to notice.
#[tokio::test]
async fn a_stopped_member_is_left_after_one_request_timeout() {
    let Some(cluster) = fast_cluster().await else {
        return;
    };
    let b = EtcdConfig::new(cluster.endpoints())
        .with_request_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let p = prefix("stopped-member");
    put_retrying(&b, key(&p, "before")).await;
    // The first endpoint is the one in use.
    cluster.member(0).pause();
    let started = std::time::Instant::now();
    put_retrying(&b, key(&p, "during")).await;
    let failed_over = started.elapsed();
    // The member stays in use no longer: every later request answers at once.
    for i in 0..10 {
        let t = std::time::Instant::now();
        b.put(PutRequest::new(key(&p, &format!("after-{i}")), "v"))
            .await
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    eprintln!("MEASURED stopped member: requests moved on {failed_over:?} after the pause");
    assert!(failed_over < Duration::from_secs(4), "{failed_over:?}");
    cluster.member(0).resume();
    let count = b
        .range(RangeRequest::prefix(p).with_count_only())
        .await
        .unwrap()
        .count;
    assert_eq!(count, 12);
}
