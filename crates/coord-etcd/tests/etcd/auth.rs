//! etcd auth: a user limited to `/app/` works inside it and is refused outside, quickly.

use std::time::{Duration, Instant};

use coord_core::{
    Backend, DeleteRequest, Error, KeyRange, PutRequest, RangeRequest, Txn, TxnOp, WatchRequest,
};
use coord_etcd::EtcdConfig;
use etcd_client::Permission;
use etcd_harness::EtcdServer;

use crate::next_item;

const ROOT_PASSWORD: &str = "root-pw-f00";
const APP_PASSWORD: &str = "app-pw-b4r-secret";

async fn enable_auth(server: &EtcdServer) {
    let mut c = server.client().await.unwrap();
    c.user_add("root", ROOT_PASSWORD, None).await.unwrap();
    c.role_add("root").await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("app-rw").await.unwrap();
    c.role_grant_permission("app-rw", Permission::read_write("/app/").with_prefix())
        .await
        .unwrap();
    c.user_add("app", APP_PASSWORD, None).await.unwrap();
    c.user_grant_role("app", "app-rw").await.unwrap();
    c.auth_enable().await.unwrap();
}

#[tokio::test]
async fn app_user_is_confined_to_its_prefix() {
    let Some(server) = EtcdServer::start_or_skip().await else {
        return;
    };
    enable_auth(&server).await;
    let app = EtcdConfig::new(server.endpoints())
        .with_user("app", APP_PASSWORD)
        .with_request_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let debug = format!("{app:?} {app:#?} {:?}", app.config());
    assert!(!debug.contains(APP_PASSWORD), "{debug}");
    assert!(debug.contains("app"));

    // Inside /app/: everything works.
    let mut w = app
        .watch(WatchRequest::new(KeyRange::prefix("/app/")))
        .await
        .unwrap();
    let put = app.put(PutRequest::new("/app/a", "1")).await.unwrap();
    assert_eq!(
        next_item(&mut w).await.unwrap().revision(),
        put.header_revision
    );
    assert_eq!(
        app.range(RangeRequest::prefix("/app/")).await.unwrap().kvs[0].value,
        b"1"
    );
    let t = app
        .txn(
            Txn::new()
                .when([coord_core::Compare::version(
                    "/app/a",
                    coord_core::CompareOp::Equal,
                    1,
                )])
                .and_then([TxnOp::Put(PutRequest::new("/app/b", "2"))]),
        )
        .await
        .unwrap();
    assert!(t.succeeded);
    // An empty range inside /app/: etcd gets it at its start key, which the user may use.
    let empty = KeyRange::Range {
        start: b"/app/b".to_vec(),
        end: b"/app/a".to_vec(),
    };
    let read = app.range(RangeRequest::new(empty.clone())).await.unwrap();
    assert_eq!((read.count, read.header_revision), (0, t.header_revision));
    let del = app.delete(DeleteRequest::new(empty.clone())).await.unwrap();
    assert_eq!(del.deleted, 0);
    drop(app.watch(WatchRequest::new(empty)).await.unwrap());
    // Leases: the keep-alive stream this crate opens itself carries the user's token too.
    let lease = app.lease_grant(30, None).await.unwrap();
    app.put(PutRequest::new("/app/leased", "1").with_lease(lease.id))
        .await
        .unwrap();
    assert!(app.lease_keep_alive(lease.id).await.unwrap() >= 29);
    app.lease_revoke(lease.id).await.unwrap();
    assert!(matches!(
        app.lease_keep_alive(lease.id).await,
        Err(Error::LeaseNotFound { .. })
    ));

    // Outside: PermissionDenied, at once, for every kind of call.
    let started = Instant::now();
    let denied = [
        app.put(PutRequest::new("/other/a", "1")).await.map(drop),
        app.range(RangeRequest::key("/other/a")).await.map(drop),
        app.txn(Txn::new().and_then([TxnOp::Range(RangeRequest::key("/other/a"))]))
            .await
            .map(drop),
        app.txn(Txn::new().and_then([
            TxnOp::Put(PutRequest::new("/app/c", "3")),
            TxnOp::Put(PutRequest::new("/other/c", "3")),
        ]))
        .await
        .map(drop),
        app.watch(WatchRequest::new(KeyRange::prefix("/other/")))
            .await
            .map(drop),
        app.delete(DeleteRequest::prefix("/")).await.map(drop),
    ];
    for (i, result) in denied.into_iter().enumerate() {
        let e = result.expect_err("outside /app/");
        assert!(
            matches!(e, Error::PermissionDenied { .. }),
            "call {i}: {e:?}"
        );
        assert!(!e.is_retryable());
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    // The half-denied txn wrote nothing.
    assert!(app
        .range(RangeRequest::key("/app/c"))
        .await
        .unwrap()
        .kvs
        .is_empty());

    // Wrong password: PermissionDenied at connect, quickly.
    let started = Instant::now();
    let e = EtcdConfig::new(server.endpoints())
        .with_user("app", "wrong")
        .connect()
        .await
        .expect_err("bad password");
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!format!("{e:?} {e}").contains(APP_PASSWORD));

    // The root user sees everything.
    let root = EtcdConfig::new(server.endpoints())
        .with_user("root", ROOT_PASSWORD)
        .connect()
        .await
        .unwrap();
    root.put(PutRequest::new("/other/a", "root")).await.unwrap();
    assert_eq!(
        root.range(RangeRequest::prefix("/app/"))
            .await
            .unwrap()
            .count,
        2
    );
}
