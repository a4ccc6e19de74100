//! Lease keep-alive over one multiplexed stream per backend: counted on etcd's own `/metrics`.

use std::time::Duration;

use coord_core::{Backend, Error};
use etcd_harness::EtcdServer;
use futures::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::connect_server;

/// What etcd's `/metrics` says about gRPC streams.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Streams {
    /// Bidirectional streams open now (started minus handled): watches and keep-alives.
    open: f64,
    /// `LeaseKeepAlive` streams ever started.
    keep_alive_started: f64,
    /// `LeaseKeepAlive` requests ever received.
    keep_alive_requests: f64,
}

async fn streams(server: &EtcdServer) -> Streams {
    let mut conn = TcpStream::connect(server.endpoint()).await.unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).await.unwrap();
    let mut s = Streams::default();
    let (mut started, mut handled) = (0.0, 0.0);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (metric, labels) = series.split_once('{').unwrap_or((series, ""));
        let bidi = labels.contains("grpc_type=\"bidi_stream\"");
        let keep_alive = labels.contains("grpc_method=\"LeaseKeepAlive\"");
        match metric {
            "grpc_server_started_total" if bidi => {
                started += value;
                if keep_alive {
                    s.keep_alive_started += value;
                }
            }
            "grpc_server_handled_total" if bidi => handled += value,
            "grpc_server_msg_received_total" if keep_alive => s.keep_alive_requests += value,
            _ => {}
        }
    }
    s.open = started - handled;
    s
}

/// Waits (5 s at most) until etcd counts `open` bidirectional streams.
async fn wait_for_open_streams(server: &EtcdServer, open: f64) -> Streams {
    let mut last = streams(server).await;
    for _ in 0..100 {
        if last.open == open {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = streams(server).await;
    }
    panic!("expected {open} open streams on etcd, have {last:?}");
}

#[tokio::test]
async fn many_leases_renew_concurrently_over_one_stream_which_ends_with_the_backend() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let b = connect_server(&server).await;
    let leases = join_all((0..200).map(|i| b.lease_grant(20 + i % 3, None))).await;
    let leases: Vec<_> = leases.into_iter().map(|g| g.unwrap()).collect();
    let before = wait_for_open_streams(&server, 0.0).await;

    for _ in 0..3 {
        let renewed = join_all(leases.iter().map(|l| b.lease_keep_alive(l.id))).await;
        for (lease, ttl) in leases.iter().zip(renewed) {
            // Each answer reaches the caller of its lease: TTLs differ between leases.
            let ttl = ttl.unwrap();
            assert!(
                ttl == lease.ttl || ttl == lease.ttl - 1,
                "{ttl} for {lease:?}"
            );
        }
    }
    let during = streams(&server).await;
    assert_eq!(during.open, before.open + 1.0, "{during:?}");
    assert_eq!(during.keep_alive_started, before.keep_alive_started + 1.0);
    assert_eq!(
        during.keep_alive_requests,
        before.keep_alive_requests + 600.0
    );

    // A clone shares the stream; dropping the last clone closes it.
    let clone = b.clone();
    drop(b);
    clone.lease_keep_alive(leases[0].id).await.unwrap();
    assert_eq!(
        streams(&server).await.keep_alive_started,
        during.keep_alive_started
    );
    drop(clone);
    wait_for_open_streams(&server, before.open).await;
}

#[tokio::test]
async fn a_revoked_lease_is_not_found_while_the_others_keep_renewing() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let b = connect_server(&server).await;
    let leases: Vec<_> = join_all((0..10).map(|_| b.lease_grant(30, None)))
        .await
        .into_iter()
        .map(|g| g.unwrap().id)
        .collect();
    for r in join_all(leases.iter().map(|&id| b.lease_keep_alive(id))).await {
        r.unwrap();
    }
    let revoked = leases[3];
    b.lease_revoke(revoked).await.unwrap();
    for _ in 0..3 {
        let results = join_all(leases.iter().map(|&id| b.lease_keep_alive(id))).await;
        for (&id, r) in leases.iter().zip(results) {
            if id == revoked {
                assert!(
                    matches!(r, Err(Error::LeaseNotFound { lease }) if lease == id),
                    "{r:?}"
                );
            } else {
                assert!(r.unwrap() >= 29);
            }
        }
    }
    let s = streams(&server).await;
    assert_eq!((s.open, s.keep_alive_started), (1.0, 1.0), "{s:?}");
}

#[tokio::test]
async fn cancelled_renewals_do_not_break_the_next_ones() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let b = connect_server(&server).await;
    let short = b.lease_grant(20, None).await.unwrap().id;
    let long = b.lease_grant(40, None).await.unwrap().id;
    b.lease_keep_alive(short).await.unwrap();
    // Renewals given up at every stage: queued, sent, answered but not yet read.
    for i in 0..60u64 {
        let cancelled = b.lease_keep_alive(if i % 2 == 0 { short } else { long });
        let _ = tokio::time::timeout(Duration::from_micros(i * 25), cancelled).await;
        let (s, l) = tokio::join!(b.lease_keep_alive(short), b.lease_keep_alive(long));
        let (s, l) = (s.unwrap(), l.unwrap());
        assert!((19..=20).contains(&s) && (39..=40).contains(&l), "{s} {l}");
    }
    let s = streams(&server).await;
    assert_eq!((s.open, s.keep_alive_started), (1.0, 1.0), "{s:?}");
}

#[tokio::test]
async fn renewals_resume_after_etcd_restarts() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    let b = connect_server(&server).await;
    let leases: Vec<_> = join_all((0..5).map(|_| b.lease_grant(30, None)))
        .await
        .into_iter()
        .map(|g| g.unwrap().id)
        .collect();
    for r in join_all(leases.iter().map(|&id| b.lease_keep_alive(id))).await {
        r.unwrap();
    }
    server.restart().await.unwrap();
    // The old stream died with the connection; a renewal that saw that fails retryably, and a
    // later one goes over a new stream.
    for &id in &leases {
        let mut tries = 0;
        let ttl = loop {
            match b.lease_keep_alive(id).await {
                Ok(ttl) => break ttl,
                Err(e) if e.is_retryable() && tries < 40 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("renewal after restart: {e}"),
            }
        };
        assert!(ttl > 0);
    }
    let s = streams(&server).await;
    assert_eq!(s.open, 1.0, "{s:?}");
}
