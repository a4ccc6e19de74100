//! The whole conformance suite on a 3-member etcd cluster, every scenario at once, with the
//! client spread over all members' endpoints.

use std::sync::Arc;
use std::time::Duration;

use coord_core::DynBackend;
use coord_etcd::EtcdConfig;
use etcd_harness::{EtcdCluster, EtcdOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_a_three_member_cluster() {
    if !etcd_harness::require_etcd_binary() {
        return;
    }
    let opts = EtcdOptions::new().with_args(["--heartbeat-interval=50", "--election-timeout=500"]);
    let cluster = EtcdCluster::start_with(3, opts)
        .await
        .expect("start a 3-member cluster");
    cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .expect("the cluster elects a raft leader");
    let backend = EtcdConfig::new(cluster.endpoints())
        .with_request_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the cluster");
    coord_core::conformance::run_all(Arc::new(backend) as DynBackend).await;
}
