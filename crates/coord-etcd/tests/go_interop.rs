//! Interop with etcd's Go `concurrency` package, through Debian's `etcdctl` 3.4: a Go holder
//! and a coord holder exclude each other on one lock, and both agree on one election leader.
//! And with Go's `contrib/recipes`, through a Go program built from `tests/go/recipes` (with
//! Debian's packaged etcd 3.4 sources): queues and priority queues filled by one side and
//! emptied by the other, a Go barrier released by coord, a Go + coord double barrier.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coord_core::{
    Barrier, DoubleBarrier, Election, Error, Mutex, PriorityQueue, Queue, RangeRequest, Session,
};
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

/// The Go recipes program, built once per test process into Cargo's temp dir; `None` (skip)
/// without `go` or the packaged etcd sources, except under `CI=true` (then it panics).
fn go_recipes() -> Option<std::path::PathBuf> {
    static BUILT: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let gopath = "/usr/share/gocode";
            let sources = std::path::Path::new(gopath).join("src/go.etcd.io/etcd/contrib/recipes");
            let have_go = Command::new("go").arg("version").output().is_ok();
            if !have_go || !sources.is_dir() {
                assert!(
                    !etcd_harness::is_ci(),
                    "CI=true: Go interop needs golang-go and golang-etcd-server-dev"
                );
                eprintln!(
                    "skipped: no go or no etcd Go sources at {}",
                    sources.display()
                );
                return None;
            }
            let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-recipes");
            let main = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/recipes/main.go");
            let status = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg(main)
                .env("GO111MODULE", "off")
                .env("GOPATH", gopath)
                .env("GOFLAGS", "")
                .status()
                .expect("run go build");
            assert!(status.success(), "go build of tests/go/recipes failed");
            Some(out)
        })
        .clone()
}

/// A run of the Go recipes program, killed on drop; its stdout lines arrive on a channel.
struct GoRecipe {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl GoRecipe {
    fn spawn(bin: &std::path::Path, endpoints: &[String], name: &str, args: &[&str]) -> GoRecipe {
        let mut child = Command::new(bin)
            .arg(format!("-endpoints={}", endpoints.join(",")))
            .arg(format!("-name={name}"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the Go recipes program");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        GoRecipe { child, lines }
    }

    /// The next line, within `timeout` (waited for off the async runtime's threads).
    async fn line(&self, timeout: Duration) -> Option<String> {
        tokio::task::block_in_place(|| self.lines.recv_timeout(timeout).ok())
    }

    /// The next `n` lines, each within 10 s.
    async fn lines(&self, n: usize) -> Vec<String> {
        let mut all = Vec::new();
        for _ in 0..n {
            all.push(
                self.line(Duration::from_secs(10))
                    .await
                    .expect("a line from Go"),
            );
        }
        all
    }

    /// Waits (up to 10 s) for it to exit; its success.
    async fn success(mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for GoRecipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn texts(values: Vec<Vec<u8>>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| String::from_utf8(v).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn go_queue_and_coord_queue_share_elements_in_order() {
    let Some((etcd, backend)) = setup().await else {
        return;
    };
    let Some(go) = go_recipes() else {
        return;
    };
    let name = unique("queue");
    let values: Vec<String> = (0..10).map(|i| format!("go-{i}")).collect();
    let mut args = vec!["enqueue"];
    args.extend(values.iter().map(String::as_str));
    let producer = GoRecipe::spawn(&go, &etcd.endpoints(), &name, &args);
    assert_eq!(
        producer.line(Duration::from_secs(10)).await.as_deref(),
        Some("enqueued")
    );
    assert!(producer.success().await);

    // Go enqueues, coord dequeues: Go's elements, in Go's order.
    let queue = Queue::new(backend.clone(), &name).unwrap();
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(
            queue
                .dequeue_timeout(Duration::from_secs(10))
                .await
                .unwrap(),
        );
    }
    assert_eq!(texts(got), values);
    assert_eq!(queue.try_dequeue().await.unwrap(), None);

    // coord enqueues, Go dequeues (Go waits first: its watch sees coord's puts).
    let consumer = GoRecipe::spawn(&go, &etcd.endpoints(), &name, &["dequeue", "10"]);
    let ours: Vec<String> = (0..10).map(|i| format!("rust-{i}")).collect();
    for v in &ours {
        queue.enqueue(v).await.unwrap();
    }
    assert_eq!(consumer.lines(10).await, ours);
    assert!(consumer.success().await);
    assert_eq!(prefix_count(&backend, &name).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn go_priority_queue_and_coord_share_priorities() {
    let Some((etcd, backend)) = setup().await else {
        return;
    };
    let Some(go) = go_recipes() else {
        return;
    };
    let name = unique("pqueue");
    let producer = GoRecipe::spawn(
        &go,
        &etcd.endpoints(),
        &name,
        &["penqueue", "go-a:5", "go-b:1", "go-c:5", "go-d:0"],
    );
    assert_eq!(
        producer.line(Duration::from_secs(10)).await.as_deref(),
        Some("enqueued")
    );
    assert!(producer.success().await);
    let queue = PriorityQueue::new(backend.clone(), &name).unwrap();
    // coord's elements of priority 5 continue Go's sequence there.
    queue.enqueue("rust-e", 5).await.unwrap();
    queue.enqueue("rust-f", 1).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            queue
                .dequeue_timeout(Duration::from_secs(10))
                .await
                .unwrap(),
        );
    }
    assert_eq!(texts(got), ["go-d", "go-b", "rust-f"]);
    // Go takes the rest: priority 5, oldest first.
    let consumer = GoRecipe::spawn(&go, &etcd.endpoints(), &name, &["pdequeue", "3"]);
    assert_eq!(consumer.lines(3).await, ["go-a", "go-c", "rust-e"]);
    assert!(consumer.success().await);

    // coord enqueues, Go dequeues by priority.
    for (v, p) in [("r1", 9), ("r2", 2), ("r3", 9), ("r4", 0)] {
        queue.enqueue(v, p).await.unwrap();
    }
    let consumer = GoRecipe::spawn(&go, &etcd.endpoints(), &name, &["pdequeue", "4"]);
    assert_eq!(consumer.lines(4).await, ["r4", "r2", "r1", "r3"]);
    assert!(consumer.success().await);
    assert_eq!(prefix_count(&backend, &name).await, 0);
    // Go's bookkeeping keys (`__name/<priority>`) stay, as in Go; cleaned up here.
    use coord_core::Backend;
    let books = backend
        .delete(coord_core::DeleteRequest::prefix(format!("__{name}/")))
        .await
        .unwrap();
    assert_eq!(
        books.deleted, 5,
        "bookkeeping keys of priorities 0, 1, 2, 5 and 9"
    );
}

/// On an etcd of its own: Go's `Barrier.Wait` only returns after it sees the hold's put, which
/// it misses when anything else is written between the hold and its read.
#[tokio::test(flavor = "multi_thread")]
async fn go_barrier_released_by_coord() {
    let Some(etcd) = etcd_harness::EtcdServer::start_or_skip().await else {
        return;
    };
    let Some(go) = go_recipes() else {
        return;
    };
    let backend = EtcdConfig::new(etcd.endpoints()).connect().await.unwrap();
    let name = unique("barrier");
    let holder = GoRecipe::spawn(&go, &etcd.endpoints(), &name, &["barrier"]);
    assert_eq!(
        holder.line(Duration::from_secs(10)).await.as_deref(),
        Some("held")
    );
    let barrier = Barrier::new(backend.clone(), &name).unwrap();
    assert!(
        barrier.is_held().await.unwrap(),
        "coord sees Go's hold (the key `name`)"
    );
    assert!(!barrier.hold().await.unwrap(), "held already, by Go");
    let waiter = tokio::spawn({
        let barrier = barrier.clone();
        async move { barrier.wait().await }
    });
    assert_eq!(
        holder.line(Duration::from_millis(500)).await,
        None,
        "Go waits"
    );
    assert!(!waiter.is_finished(), "coord waits on Go's barrier");
    assert!(barrier.release().await.unwrap());
    assert_eq!(
        holder.line(Duration::from_secs(10)).await.as_deref(),
        Some("released")
    );
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("coord's waiter is released too")
        .unwrap()
        .unwrap();
    assert!(holder.success().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn go_and_coord_share_a_double_barrier() {
    let Some((etcd, backend)) = setup().await else {
        return;
    };
    let Some(go) = go_recipes() else {
        return;
    };
    // Go first (the oldest, which leaves last), then coord first.
    for go_first in [true, false] {
        let name = unique("dbarrier");
        let session = Session::new(Arc::new(backend.clone()), 10).await.unwrap();
        let barrier = DoubleBarrier::new(&session, &name, 2).unwrap();
        let (go_side, ours) = if go_first {
            let go_side = GoRecipe::spawn(&go, &etcd.endpoints(), &name, &["dbarrier", "2"]);
            // Wait for Go's key before entering.
            let deadline = Instant::now() + Duration::from_secs(10);
            while prefix_count(&backend, &format!("{name}/waiters")).await == 0 {
                assert!(Instant::now() < deadline, "Go's key");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                go_side.line(Duration::from_millis(300)).await,
                None,
                "Go waits for 2"
            );
            let ours = barrier
                .enter_timeout(Duration::from_secs(10))
                .await
                .unwrap();
            (go_side, ours)
        } else {
            let entering = tokio::spawn({
                let barrier = barrier.clone();
                async move { barrier.enter().await }
            });
            let deadline = Instant::now() + Duration::from_secs(10);
            while prefix_count(&backend, &format!("{name}/waiters")).await == 0 {
                assert!(Instant::now() < deadline, "coord's key");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!entering.is_finished(), "coord waits for 2");
            let go_side = GoRecipe::spawn(&go, &etcd.endpoints(), &name, &["dbarrier", "2"]);
            let ours = tokio::time::timeout(Duration::from_secs(10), entering)
                .await
                .expect("coord enters once Go did")
                .unwrap()
                .unwrap();
            (go_side, ours)
        };
        assert_eq!(
            go_side.line(Duration::from_secs(10)).await.as_deref(),
            Some("entered")
        );
        // Go leaves at once, but cannot get out before coord leaves too.
        assert_eq!(
            go_side.line(Duration::from_millis(500)).await,
            None,
            "Go waits for coord"
        );
        tokio::time::timeout(Duration::from_secs(10), ours.leave())
            .await
            .expect("coord leaves")
            .unwrap();
        assert_eq!(
            go_side.line(Duration::from_secs(10)).await.as_deref(),
            Some("left")
        );
        assert!(go_side.success().await);
        session.close().await.unwrap();
        assert_eq!(
            prefix_count(&backend, &name).await,
            0,
            "go_first {go_first}: nothing left"
        );
    }
}
