//! Error mapping, request and connect timeouts.

use std::time::{Duration, Instant};

use coord_core::{Backend, Error, PutRequest, RangeRequest, Txn, TxnOp};
use coord_etcd::EtcdConfig;
use etcd_harness::EtcdServer;

use crate::{connect, key, prefix};

#[tokio::test]
async fn etcd_errors_map_by_meaning() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    let b = connect(&etcd).await;
    let p = prefix("errors");
    let unknown = 0x0bad_0000_0000_0000 + i64::from(std::process::id());

    let e = b
        .put(PutRequest::new(key(&p, "k"), "v").with_lease(unknown))
        .await;
    assert!(
        matches!(e, Err(Error::LeaseNotFound { lease }) if lease == unknown),
        "{e:?}"
    );
    let e = b
        .txn(Txn::new().and_then([TxnOp::Put(
            PutRequest::new(key(&p, "k"), "v").with_lease(unknown),
        )]))
        .await;
    assert!(
        matches!(e, Err(Error::LeaseNotFound { lease }) if lease == unknown),
        "{e:?}"
    );
    assert!(matches!(
        b.lease_keep_alive(unknown).await,
        Err(Error::LeaseNotFound { .. })
    ));
    assert!(matches!(
        b.lease_revoke(unknown).await,
        Err(Error::LeaseNotFound { .. })
    ));

    let now = b
        .range(RangeRequest::key("x"))
        .await
        .unwrap()
        .header_revision;
    let e = b
        .range(RangeRequest::key("x").with_revision(now + 1000))
        .await;
    assert!(
        matches!(&e, Err(Error::InvalidArgument { reason }) if reason.contains("future revision")),
        "{e:?}"
    );

    // Over etcd's 1.5 MiB request limit, and over gRPC's message limit.
    for size in [1_600_000, 3 * 1024 * 1024] {
        let started = Instant::now();
        let e = b
            .put(PutRequest::new(key(&p, "big"), vec![b'x'; size]))
            .await;
        assert!(
            matches!(e, Err(Error::InvalidArgument { .. })),
            "{size}: {e:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    let dup = key(&p, "dup");
    let e = b
        .txn(Txn::new().and_then([
            TxnOp::Put(PutRequest::new(dup.clone(), "1")),
            TxnOp::Put(PutRequest::new(dup.clone(), "2")),
        ]))
        .await;
    assert!(
        matches!(&e, Err(Error::InvalidArgument { reason }) if reason.contains("duplicate key")),
        "{e:?}"
    );

    let e = b.put(PutRequest::new(Vec::new(), "v")).await;
    assert!(matches!(e, Err(Error::InvalidArgument { .. })), "{e:?}");
    let e = b.range(RangeRequest::key(Vec::new())).await;
    assert!(matches!(e, Err(Error::InvalidArgument { .. })), "{e:?}");
    // Nothing above may have been retried into a write.
    assert!(b
        .range(RangeRequest::prefix(p))
        .await
        .unwrap()
        .kvs
        .is_empty());
}

#[tokio::test]
async fn paused_etcd_fails_requests_within_the_request_timeout() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let b = EtcdConfig::new(server.endpoints())
        .with_request_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    b.put(PutRequest::new("k", "v")).await.unwrap();
    let lease = b.lease_grant(30, None).await.unwrap().id;
    b.lease_keep_alive(lease).await.unwrap();

    server.pause();
    for op in ["range", "put", "txn", "keep_alive", "watch"] {
        let started = Instant::now();
        let result = match op {
            "range" => b.range(RangeRequest::key("k")).await.map(drop),
            "put" => b.put(PutRequest::new("k", "v2")).await.map(drop),
            "txn" => b.txn(Txn::new()).await.map(drop),
            "keep_alive" => b.lease_keep_alive(lease).await.map(drop),
            _ => b
                .watch(coord_core::WatchRequest::new(coord_core::KeyRange::key(
                    "k",
                )))
                .await
                .map(drop),
        };
        let took = started.elapsed();
        let e = result.expect_err(op);
        assert!(matches!(e, Error::Unavailable { .. }), "{op}: {e:?}");
        assert!(e.is_retryable());
        assert!(took < Duration::from_millis(1500), "{op} took {took:?}");
    }
    server.resume();
    // Back to normal, keep-alive included (its stream is re-opened).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match b.lease_keep_alive(lease).await {
            Ok(ttl) => {
                assert!(ttl > 0);
                break;
            }
            Err(e) if e.is_retryable() && Instant::now() < deadline => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        b.range(RangeRequest::key("k")).await.unwrap().kvs[0].key,
        b"k"
    );
}

#[tokio::test]
async fn connecting_to_a_dead_port_is_unavailable_within_the_connect_timeout() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let e = EtcdConfig::new([format!("127.0.0.1:{port}")])
        .with_connect_timeout(Duration::from_millis(800))
        .connect()
        .await
        .expect_err("nothing listens there");
    let took = started.elapsed();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let source = std::error::Error::source(&e)
        .expect("source kept")
        .to_string();
    assert!(
        source.contains(&port.to_string()) || source.contains("connect"),
        "{source}"
    );

    // A paused server: the TCP connect works, nothing answers.
    if let Some(server) = EtcdServer::start_or_skip().await {
        server.pause();
        let started = Instant::now();
        let e = EtcdConfig::new(server.endpoints())
            .with_connect_timeout(Duration::from_millis(800))
            .connect()
            .await
            .expect_err("a paused server does not answer");
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        assert!(started.elapsed() < Duration::from_millis(1500));
        server.resume();
    }

    let e = EtcdConfig::new(Vec::<String>::new()).connect().await;
    assert!(matches!(e, Err(Error::InvalidArgument { .. })));
}

#[tokio::test]
async fn debug_never_shows_the_password() {
    let config = EtcdConfig::new(["127.0.0.1:2379"]).with_user("app", "s3cret-pass");
    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains("s3cret-pass"), "{debug}");
    assert!(debug.contains("app"));
}

/// An endpoint that cannot be reached is passed over for the next without failing a single
/// call, also when it is the first one listed.
#[tokio::test]
async fn an_unreachable_endpoint_among_live_ones_fails_no_call() {
    let Some(etcd) = etcd_harness::endpoints_for_tests().await else {
        return;
    };
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    let live = etcd.endpoints()[0].clone();
    let b = crate::config(&etcd)
        .with_endpoints([dead.clone(), live, dead])
        .with_request_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let p = prefix("spread");
    let started = Instant::now();
    for i in 0..30 {
        b.put(PutRequest::new(key(&p, &i.to_string()), "v"))
            .await
            .unwrap();
    }
    let count = b
        .range(RangeRequest::prefix(p).with_count_only())
        .await
        .unwrap()
        .count;
    assert_eq!(count, 30);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
