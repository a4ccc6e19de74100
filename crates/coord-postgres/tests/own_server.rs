//! Tests on a PostgreSQL of their own: TLS with a self-signed certificate, and a restart.

use std::time::Duration;

use coord_core::{
    Backend, Error, KeyRange, Mutex, PutRequest, RangeRequest, Session, WatchRequest,
};
use coord_postgres::PostgresConfig;
use futures::StreamExt;

mod common;

/// `sslmode=require` encrypts (the server's certificate unchecked, as libpq does without a
/// CA); `verify-full` with the CA connects; with a CA that did not sign the server's
/// certificate it is refused, for good (no retry until the timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_when_the_url_asks() {
    let signed =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (signed.cert.pem(), signed.key_pair.serialize_pem());
    let Some(server) = common::OwnServer::start(Some((&cert, &key))).await else {
        return;
    };
    let app = "coord-tls-test";
    let config = |query: &str| {
        PostgresConfig::new(format!("{}?{query}", server.url()))
            .with_application_name(app)
            .with_connect_timeout(Duration::from_secs(5))
    };
    let uses_tls = |store: coord_postgres::PostgresBackend| async move {
        // A call first, so that a pooled connection exists.
        store.put(PutRequest::new("k", "v")).await.unwrap();
        let (client, conn) = tokio_postgres::connect(&server_url(&store), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1",
                &[&app],
            )
            .await
            .unwrap();
        !rows.is_empty() && rows.iter().all(|r| r.get::<_, bool>(0))
    };
    fn server_url(store: &coord_postgres::PostgresBackend) -> String {
        // The same server, plain TCP, no password: the URL as configured, minus its query.
        let url = store.config().url();
        url.split('?').next().unwrap().to_string()
    }

    let require = config("sslmode=require").connect().await.unwrap();
    assert!(
        uses_tls(require.clone()).await,
        "sslmode=require: connections use TLS"
    );
    drop(require);

    let full = config("sslmode=verify-full")
        .with_ca_cert_pem(cert.clone())
        .connect()
        .await
        .unwrap();
    assert!(
        uses_tls(full.clone()).await,
        "sslmode=verify-full: connections use TLS"
    );
    drop(full);

    let plain = config("sslmode=disable").connect().await.unwrap();
    assert!(
        !uses_tls(plain.clone()).await,
        "sslmode=disable: plain connections"
    );
    drop(plain);

    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let started = std::time::Instant::now();
    let refused = config("sslmode=verify-full")
        .with_ca_cert_pem(other.cert.pem())
        .connect()
        .await
        .unwrap_err();
    assert!(
        !refused.is_retryable() && started.elapsed() < Duration::from_secs(4),
        "a certificate that does not verify is refused at once: {refused:?}"
    );
    assert!(matches!(
        config("sslmode=verify-full").connect().await,
        Err(Error::InvalidArgument { .. })
    ));
}

/// `coord_postgres::connect(url)`: a backend with the defaults (schema `coord`, the default
/// pool) that works. On a server of its own, so that the default schema it creates is nobody
/// else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_defaults() {
    let Some(server) = common::OwnServer::start(None).await else {
        return;
    };
    let store = coord_postgres::connect(&server.url()).await.unwrap();
    assert_eq!(store.config().schema(), PostgresConfig::DEFAULT_SCHEMA);
    assert_eq!(
        store.config().pool_size(),
        PostgresConfig::new("").pool_size()
    );
    let put = store.put(PutRequest::new("connect/k", "v")).await.unwrap();
    let got = store.range(RangeRequest::key("connect/k")).await.unwrap();
    assert_eq!(got.kvs.len(), 1);
    assert_eq!(
        (got.kvs[0].value.as_slice(), got.kvs[0].mod_revision),
        (&b"v"[..], put.header_revision)
    );
}

/// Fencing tokens keep rising across `pg_ctl restart -m fast` (the revision is durable); the
/// session survives the restart, and a watch opened before it sees every change after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rise_and_watches_resume_across_a_restart() {
    let Some(server) = common::OwnServer::start(None).await else {
        return;
    };
    let store = PostgresConfig::new(server.url())
        .with_request_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let session = Session::new(store.clone(), 15).await.unwrap();
    let mutex = Mutex::new(&session, "restart/lock").unwrap();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("restart/w/")))
        .await
        .unwrap();
    let guard = mutex.lock().await.unwrap();
    let before = guard.fencing_token();
    guard.unlock().await.unwrap();
    let r1 = store
        .put(PutRequest::new("restart/w/1", "a"))
        .await
        .unwrap()
        .header_revision;

    server.restart().await;

    // The first calls may fail retryably while the pool finds its connections gone.
    let mut r2 = None;
    for _ in 0..50 {
        match store.put(PutRequest::new("restart/w/2", "b")).await {
            Ok(r) => {
                r2 = Some(r.header_revision);
                break;
            }
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let r2 = r2.expect("a put after the restart");
    let guard = mutex.lock().await.unwrap();
    assert!(
        guard.fencing_token() > before && r2 > r1,
        "tokens after the restart: {} after {before}",
        guard.fencing_token()
    );
    guard.unlock().await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a watch event after the restart")
            .expect("the watch goes on")
            .expect("no error");
        got.push(e.revision());
    }
    assert_eq!(got, vec![r1, r2], "the watch across the restart");
    assert!(
        !session.is_lost(),
        "the session survived a restart shorter than its TTL"
    );
    session.close().await.unwrap();
}

/// After an outage long enough for the watch hub's reconnect backoff to grow (2.5 s down), a
/// watch resumes soon after the server is back: an event written as soon as the server answers
/// arrives within half a second, as an event does when a waiter's lock is released after a
/// restart (the hub retries as often as calls do; it waited up to a second between attempts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_soon_after_a_long_outage() {
    let Some(server) = common::OwnServer::start(None).await else {
        return;
    };
    let store = PostgresConfig::new(server.url())
        .with_request_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let mut watch = store
        .watch(WatchRequest::new(KeyRange::prefix("outage/")))
        .await
        .unwrap();
    let r0 = store
        .put(PutRequest::new("outage/0", "a"))
        .await
        .unwrap()
        .header_revision;
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event before the outage")
        .expect("the watch goes on")
        .expect("no error");
    assert_eq!(first.revision(), r0);

    server.stop().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.start_again().await;
    let (r1, written) = loop {
        match store.put(PutRequest::new("outage/1", "b")).await {
            Ok(r) => break (r.header_revision, std::time::Instant::now()),
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event after the outage")
        .expect("the watch goes on")
        .expect("no error");
    let delay = written.elapsed();
    assert_eq!(
        event.revision(),
        r1,
        "the next event is the write after the outage"
    );
    eprintln!("watch resumed: event {delay:?} after the first write after a 2.5 s outage");
    assert!(
        delay < Duration::from_millis(500),
        "the watch resumed {delay:?} after the server was back"
    );
}
