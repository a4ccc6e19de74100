//! The harness itself: servers start, keep data across restarts, clusters elect leaders.

use std::time::Duration;

use etcd_harness::{EtcdCluster, EtcdOptions, EtcdServer};

#[tokio::test]
async fn server_restarts_on_same_data_dir_and_dies_on_drop() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    assert!(server.endpoint().starts_with("127.0.0.1:"));
    assert!(server.data_dir().exists());
    let mut client = server.client().await.unwrap();
    client.put("k", "v1", None).await.unwrap();

    server.restart().await.unwrap();
    let mut client = server.client().await.unwrap();
    let resp = client.get("k", None).await.unwrap();
    assert_eq!(resp.kvs()[0].value(), b"v1");

    // Paused: requests hang; resumed: they answer.
    server.pause();
    let slow = tokio::time::timeout(Duration::from_millis(300), client.get("k", None)).await;
    assert!(slow.is_err(), "a paused etcd must not answer");
    server.resume();
    tokio::time::timeout(Duration::from_secs(5), client.get("k", None))
        .await
        .unwrap()
        .unwrap();

    let pid = server.pid().unwrap();
    let dir = server.data_dir().to_path_buf();
    drop(server);
    // Killed and reaped: no process, no zombie, no directory.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!dir.exists());
}

#[tokio::test]
async fn server_serves_tls_with_client_cert_auth() {
    let opts = EtcdOptions::new()
        .with_generated_tls()
        .with_client_cert_auth();
    let Some(server) = EtcdServer::start_or_skip_with(opts).await else {
        return;
    };
    assert!(server.client_url().starts_with("https://"));
    let mut client = server.client().await.unwrap();
    client.put("k", "v", None).await.unwrap();
}

#[tokio::test]
async fn cluster_of_three_elects_and_fails_over() {
    if !etcd_harness::require_etcd_binary() {
        return;
    }
    let cluster = EtcdCluster::start(3).await.unwrap();
    assert_eq!(cluster.endpoints().len(), 3);
    let leader = cluster.leader_index().await.unwrap();
    cluster.member(leader).kill();
    let new_leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    assert_ne!(new_leader, leader);
    cluster.member(leader).start_again().await.unwrap();
    let mut client = cluster.member(leader).client().await.unwrap();
    client.put("k", "v", None).await.unwrap();
}
