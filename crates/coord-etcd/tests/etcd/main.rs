//! coord-etcd against real etcd processes started by `etcd-harness` (or the etcd named by
//! `ETCD_ENDPOINTS` for the tests that do not need to control the process).

mod auth;
mod cluster;
mod errors;
mod keep_alive;
mod kv;
mod lease;
mod tls;
mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use coord_core::{Result, WatchEvent, WatchStream};
use coord_etcd::{EtcdBackend, EtcdConfig};
use futures::StreamExt;

#[test]
fn backend_and_streams_are_send_sync_static() {
    fn bounds<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    fn send_static<T: Send + 'static>() {}
    bounds::<EtcdBackend>();
    bounds::<EtcdConfig>();
    send_static::<WatchStream>();
    fn _as_dyn(b: EtcdBackend) -> coord_core::DynBackend {
        std::sync::Arc::new(b)
    }
}

/// A key prefix no other test uses (tests may share an external etcd).
pub fn prefix(name: &str) -> Vec<u8> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "/coord-etcd-test/{name}/{}-{nanos}-{}/",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
    .into_bytes()
}

/// `prefix + suffix`.
pub fn key(prefix: &[u8], suffix: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(suffix.as_bytes());
    k
}

/// Settings for `endpoints`: from the environment (credentials, TLS) when they are external.
pub fn config(etcd: &etcd_harness::TestEtcd) -> EtcdConfig {
    let base = if etcd.is_exclusive() {
        EtcdConfig::new(etcd.endpoints())
    } else {
        EtcdConfig::from_env()
            .expect("ETCD_* settings")
            .with_endpoints(etcd.endpoints())
    };
    base.with_request_timeout(Duration::from_secs(5))
        .with_connect_timeout(Duration::from_secs(5))
}

/// A backend on `etcd`.
pub async fn connect(etcd: &etcd_harness::TestEtcd) -> EtcdBackend {
    config(etcd).connect().await.expect("connect to etcd")
}

/// A backend on a spawned server.
pub async fn connect_server(server: &etcd_harness::EtcdServer) -> EtcdBackend {
    EtcdConfig::new(server.endpoints())
        .with_request_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to etcd")
}

/// The next item of a watch, failing the test after 5 s.
pub async fn next_item(stream: &mut WatchStream) -> Result<WatchEvent> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("watch event within 5 s")
        .expect("watch stream ended")
}

/// The next `n` events, which must all be `Ok`.
pub async fn next_events(stream: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_item(stream).await.expect("watch event"));
    }
    out
}

/// Asserts the stream yields nothing for `for_`.
pub async fn assert_quiet(stream: &mut WatchStream, for_: Duration) {
    if let Ok(item) = tokio::time::timeout(for_, stream.next()).await {
        panic!("expected no watch item, got {item:?}");
    }
}
