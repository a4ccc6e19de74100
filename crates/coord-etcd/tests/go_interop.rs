//! Interop with etcd's Go `concurrency` package, through Debian's `etcdctl` 3.4: a Go holder
//! and a coord holder exclude each other on one lock, and both agree on one election leader.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coord_core::{Election, Error, Mutex, RangeRequest, Session};
use coord_etcd::{EtcdBackend, EtcdConfig};
use etcd_harness::TestEtcd;
use futures::StreamExt;

/// An etcdctl child, killed on drop.
struct Etcdctl {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Etcdctl {
    fn spawn(endpoints: &[String], args: &[&str]) -> Etcdctl {
        let bin = etcd_harness::etcdctl_binary().expect("etcdctl is installed");
        let mut child = Command::new(bin)
            .env("ETCDCTL_API", "3")
            .env_remove("ETCD_ENDPOINTS")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Etcdctl { child, lines }
    }

    /// The next output line, within `timeout`.
    fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Stops it with SIGINT (etcdctl then releases what it holds) and waits for it.
    fn interrupt(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Etcdctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn setup() -> Option<(TestEtcd, EtcdBackend)> {
    let etcd = etcd_harness::endpoints_for_tests().await?;
    etcd_harness::etcdctl_binary()?;
    let config = if etcd.is_exclusive() {
        EtcdConfig::new(etcd.endpoints())
    } else {
        EtcdConfig::from_env()
            .unwrap()
            .with_endpoints(etcd.endpoints())
    };
    let backend = config.connect().await.expect("connect");
    Some((etcd, backend))
}

fn unique(name: &str) -> String {
    format!("/coord-interop/{name}-{:x}", rand_suffix())
}

fn rand_suffix() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.as_nanos() as u64 ^ (std::process::id() as u64) << 32
}

async fn prefix_count(backend: &EtcdBackend, name: &str) -> i64 {
    use coord_core::Backend;
    backend
        .range(RangeRequest::prefix(format!("{name}/")).with_count_only())
        .await
        .unwrap()
        .count
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_lock_holder_blocks_coord_until_it_stops() {
    let Some((etcd, backend)) = setup().await else {
        return;
    };
    let name = unique("go-holds");
    let go = Etcdctl::spawn(&etcd.endpoints(), &["lock", &name]);
    let go_key = go
        .line(Duration::from_secs(10))
        .expect("etcdctl prints its lock key");
    assert!(
        go_key.starts_with(&format!("{name}/")),
        "Go's key layout: {go_key}"
    );

    let session = Session::new(Arc::new(backend.clone()), 10).await.unwrap();
    let mutex = Mutex::new(&session, &name).unwrap();
    let err = mutex
        .lock_timeout(Duration::from_millis(700))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout),
        "coord waits while Go holds: {err}"
    );
    assert!(matches!(mutex.try_lock().await.unwrap_err(), Error::Locked));

    let waiting = tokio::spawn({
        let mutex = mutex.clone();
        async move { mutex.lock().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "still waiting behind etcdctl");
    let stopped = Instant::now();
    go.interrupt();
    let guard = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("acquires once etcdctl is stopped")
        .unwrap()
        .unwrap();
    eprintln!("acquired {:?} after etcdctl stopped", stopped.elapsed());
    guard.unlock().await.unwrap();
    session.close().await.unwrap();
    assert_eq!(prefix_count(&backend, &name).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn coord_holder_blocks_etcdctl_lock() {
    let Some((etcd, backend)) = setup().await else {
        return;
    };
    let name = unique("rust-holds");
    let session = Session::new(Arc::new(backend.clone()), 10).await.unwrap();
    let guard = Mutex::new(&session, &name).unwrap().lock().await.unwrap();

    // Keys have Go's layout: name/<lease in lowercase hex>, empty value, on the lease.
    let want_key = format!("{name}/{:x}", session.lease());
    assert_eq!(guard.key(), want_key.as_bytes());
    let out = Command::new(etcd_harness::etcdctl_binary().unwrap())
        .env("ETCDCTL_API", "3")
        .env_remove("ETCD_ENDPOINTS")
        .arg(format!("--endpoints={}", etcd.endpoints().join(",")))
        .args(["get", "--prefix", &format!("{name}/"), "-w", "json"])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        json.contains(&format!("\"lease\":{}", session.lease())),
        "{json}"
    );
    assert!(
        json.contains(&format!("\"create_revision\":{}", guard.fencing_token())),
        "{json}"
    );
    // etcdctl prints keys base64-encoded in JSON.
    let b64 = base64_encode(want_key.as_bytes());
    assert!(json.contains(&b64), "key {want_key} ({b64}) in {json}");

    // etcdctl runs its command only once it holds the lock.
    let mut go = Etcdctl::spawn(&etcd.endpoints(), &["lock", &name, "echo", "go-acquired"]);
    assert_eq!(
        go.line(Duration::from_millis(1000)),
        None,
        "etcdctl waits while coord holds"
    );
    assert!(!go.exited());
    guard.unlock().await.unwrap();
    assert_eq!(
        go.line(Duration::from_secs(10)).as_deref(),
        Some("go-acquired"),
        "etcdctl acquires after coord unlocks"
    );
    // After its command, etcdctl unlocks and exits by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !go.exited() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(go.exited(), "etcdctl exits after its command");
    session.close().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while prefix_count(&backend, &name).await != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(prefix_count(&backend, &name).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_elect_leader_is_what_coord_reports() {
    let Some((etcd, backend)) = setup().await else {
        return;
    };
    let name = unique("go-leads");
    let go = Etcdctl::spawn(&etcd.endpoints(), &["elect", &name, "go-proposal"]);
    let line = go
        .line(Duration::from_secs(10))
        .expect("etcdctl prints when elected");
    assert!(
        line.starts_with(&format!("{name}/")),
        "leader key line: {line}"
    );

    let session = Session::new(Arc::new(backend.clone()), 10).await.unwrap();
    let election = Election::new(&session, &name).unwrap();
    let leader = election.leader().await.unwrap();
    assert_eq!(leader.value, b"go-proposal");
    assert_eq!(String::from_utf8_lossy(&leader.key), line);
    let mut observe = election.observe();
    let first = tokio::time::timeout(Duration::from_secs(5), observe.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.leader.unwrap().value, b"go-proposal");

    // coord campaigns behind Go, and takes over when etcdctl resigns.
    let campaign = tokio::spawn({
        let election = election.clone();
        async move { election.campaign("rust-proposal").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!campaign.is_finished(), "Go leads: coord waits");
    go.interrupt();
    let leadership = tokio::time::timeout(Duration::from_secs(10), campaign)
        .await
        .expect("coord is elected after etcdctl resigns")
        .unwrap()
        .unwrap();
    // The observer sees the change (possibly through "no leader").
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let obs = tokio::time::timeout_at(deadline.into(), observe.next())
            .await
            .expect("observer sees the new leader")
            .unwrap()
            .unwrap();
        if let Some(kv) = obs.leader {
            assert_eq!(kv.value, b"rust-proposal");
            assert_eq!(kv.create_revision, leadership.rev());
            break;
        }
    }
    leadership.resign().await.unwrap();
    session.close().await.unwrap();
    assert_eq!(prefix_count(&backend, &name).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn coord_leader_is_what_etcdctl_elect_listen_prints() {
    let Some((etcd, backend)) = setup().await else {
        return;
    };
    let name = unique("rust-leads");
    let session = Session::new(Arc::new(backend.clone()), 10).await.unwrap();
    let election = Election::new(&session, &name).unwrap();
    let leadership = election.campaign("rust-1").await.unwrap();

    let listen = Etcdctl::spawn(&etcd.endpoints(), &["elect", "-l", &name]);
    // etcdctl prints the leader key, then its value.
    let key = listen.line(Duration::from_secs(10)).expect("key line");
    let value = listen.line(Duration::from_secs(5)).expect("value line");
    assert_eq!(key.as_bytes(), leadership.key());
    assert_eq!(value, "rust-1");

    // A proclaim is seen by the Go observer.
    leadership.proclaim("rust-2").await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !seen.iter().any(|l: &String| l == "rust-2") {
        if let Some(l) = listen.line(Duration::from_millis(200)) {
            seen.push(l);
        }
    }
    assert!(
        seen.iter().any(|l| l == "rust-2"),
        "etcdctl saw the proclaim: {seen:?}"
    );
    drop(listen);
    leadership.resign().await.unwrap();
    session.close().await.unwrap();
    assert_eq!(prefix_count(&backend, &name).await, 0);
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
