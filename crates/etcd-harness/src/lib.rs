//! Starts real `etcd` processes for tests: single servers, 3-member clusters, TLS with generated
//! certificates, and process control (stop, kill, pause, resume, restart on the same data dir).
//!
//! Every process listens on free ports of `127.0.0.1` only, keeps its data in a temporary
//! directory and its log (etcd's stderr) in a file next to it, and is killed when its handle is
//! dropped, or at the latest when the test process exits (it is started with a parent-death
//! signal).
//!
//! ```no_run
//! # async fn demo() {
//! // Uses `ETCD_ENDPOINTS` when set, else starts an etcd of its own; `None` (after a printed
//! // notice) when no etcd binary is installed, and a panic instead under `CI=true`.
//! let Some(etcd) = etcd_harness::endpoints_for_tests().await else { return };
//! println!("etcd at {:?}", etcd.endpoints());
//! # }
//! ```
#![deny(missing_docs)]

mod cluster;
mod error;
mod process;
mod server;
mod tls;

pub use cluster::EtcdCluster;
pub use error::HarnessError;
pub use process::{etcd_binary, etcdctl_binary, is_ci};
pub use server::{EtcdOptions, EtcdServer};
pub use tls::TlsFiles;

/// An etcd for a test: an external one named by `ETCD_ENDPOINTS`, or one this harness started.
#[derive(Debug)]
pub enum TestEtcd {
    /// The endpoints of `ETCD_ENDPOINTS` (comma-separated); the store may be shared with others.
    External {
        /// The endpoints, as given.
        endpoints: Vec<String>,
    },
    /// A server started for this test alone.
    Spawned(Box<EtcdServer>),
}

impl TestEtcd {
    /// The client endpoints (`host:port`, or URLs as given in `ETCD_ENDPOINTS`).
    pub fn endpoints(&self) -> Vec<String> {
        match self {
            TestEtcd::External { endpoints } => endpoints.clone(),
            TestEtcd::Spawned(server) => server.endpoints(),
        }
    }

    /// The spawned server, if this harness started one.
    pub fn server(&self) -> Option<&EtcdServer> {
        match self {
            TestEtcd::External { .. } => None,
            TestEtcd::Spawned(server) => Some(server),
        }
    }

    /// Whether the test has the store to itself (a spawned server): revisions then move only by
    /// its own writes, and it may compact.
    pub fn is_exclusive(&self) -> bool {
        matches!(self, TestEtcd::Spawned(_))
    }
}

/// The etcd a test should use: the endpoints of `ETCD_ENDPOINTS` when it is set and not empty,
/// else a server started for this test.
///
/// Returns `None`, after printing a notice to stderr, when no `etcd` binary is installed, so the
/// test can skip; under `CI=true` it panics instead, so CI never skips silently. It also panics
/// when the server does not start (with the path and tail of its log).
pub async fn endpoints_for_tests() -> Option<TestEtcd> {
    if let Ok(eps) = std::env::var("ETCD_ENDPOINTS") {
        let endpoints: Vec<String> = eps
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        if !endpoints.is_empty() {
            return Some(TestEtcd::External { endpoints });
        }
    }
    EtcdServer::start_or_skip()
        .await
        .map(|server| TestEtcd::Spawned(Box::new(server)))
}

/// Whether this test can spawn etcd: `true` when the binary is found. When it is not, prints a
/// notice and returns `false`, or panics under `CI=true`.
pub fn require_etcd_binary() -> bool {
    match etcd_binary() {
        Some(_) => true,
        None if is_ci() => panic!(
            "etcd binary not found (looked at $ETCD_BIN, $PATH, /usr/bin, /usr/local/bin) and \
             CI=true: install etcd (e.g. `apt-get install etcd-server`) so these tests run"
        ),
        None => {
            eprintln!(
                "NOTICE: etcd binary not found (set ETCD_BIN or install etcd); skipping this test"
            );
            false
        }
    }
}
