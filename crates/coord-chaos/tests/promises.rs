//! Promises checked from outside on a real etcd, with etcd's own tools: a guard's `lost()`
//! after etcd was unreachable, an observer following an operator's `etcdctl txn` and
//! `etcdctl del --prefix`, and a session's watches closing once its names go idle (counted by
//! etcd's own watcher gauge). Each test starts the etcd it uses.

use std::process::Command;
use std::time::{Duration, Instant};

use coord_chaos::support::{connect, keys_under, unique_prefix};
use coord_core::{Election, Error, Mutex, Session};
use etcd_harness::{etcdctl_binary, require_etcd_binary, EtcdServer};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `etcdctl` against `etcd`, with `stdin` fed to it; panics unless it succeeds.
fn etcdctl(etcd: &EtcdServer, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let bin = etcdctl_binary().expect("etcdctl is installed");
    let mut child = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(etcd.endpoint())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Item 2 of issue 9: `lost()` first awaited while etcd is stopped (SIGSTOP) for 3 s, so that
/// its watch registration and its read fail; once etcd is back, an operator's `etcdctl del` of
/// the lock key must make it fire (it used to wait for the session's end only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_on_an_operator_delete_after_etcd_was_unreachable() {
    if !require_etcd_binary() || etcdctl_binary().is_none() {
        return;
    }
    let etcd = EtcdServer::start().await.unwrap();
    let backend = connect(&etcd.endpoints(), Duration::from_secs(1))
        .await
        .unwrap();
    let name = format!("{}job", unique_prefix("lostpause"));
    let s = Session::new(backend.clone(), 30).await.unwrap();
    let other = Session::new(backend.clone(), 30).await.unwrap();
    let guard = Mutex::new(&s, &name).unwrap().lock().await.unwrap();
    let key = String::from_utf8(guard.key().to_vec()).unwrap();

    etcd.pause();
    let watcher = tokio::spawn(async move {
        let e = guard.lost().await;
        (Instant::now(), e, guard)
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.resume();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !watcher.is_finished(),
        "lost() fired while the key was held"
    );
    let deleted = Instant::now();
    etcdctl(&etcd, &["del", &key], "");
    let (fired, e, guard) = tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("lost() fires after the operator's delete")
        .unwrap();
    assert!(matches!(e, Error::NotHeld { .. }), "{e:?}");
    eprintln!(
        "lost() fired {:.1} ms after `etcdctl del` (etcd was stopped 3 s while it was first awaited)",
        (fired - deleted).as_secs_f64() * 1000.0
    );
    let theirs = Mutex::new(&other, &name).unwrap().try_lock().await.unwrap();
    theirs.unlock().await.unwrap();
    drop(guard);
    s.close().await.unwrap();
    other.close().await.unwrap();
}

/// Item 1 of issue 9, with etcd's own tools: three candidates; `etcdctl txn` deletes the leader
/// and the second in line in one transaction: the observer names the third, never the deleted
/// second; `etcdctl del --prefix` then leaves no leader, and the observer says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_follows_etcdctl_txn_and_del_prefix() {
    if !require_etcd_binary() || etcdctl_binary().is_none() {
        return;
    }
    let etcd = EtcdServer::start().await.unwrap();
    let backend = connect(&etcd.endpoints(), Duration::from_secs(2))
        .await
        .unwrap();
    let name = format!("{}leader", unique_prefix("observetxn"));
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(Session::new(backend.clone(), 30).await.unwrap());
    }
    let first = Election::new(&sessions[0], &name)
        .unwrap()
        .campaign("one")
        .await
        .unwrap();
    let mut waiting = Vec::new();
    for (s, value) in sessions[1..].iter().zip(["two", "three"]) {
        let e = Election::new(s, &name).unwrap();
        waiting.push(tokio::spawn(async move { e.campaign(value).await }));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let election = Election::new(&sessions[0], &name).unwrap();
    let mut observer = election.observe();
    let o = observer.next().await.unwrap().unwrap();
    assert_eq!(o.leader.unwrap().value, b"one");

    let keys = [
        first.key().to_vec(),
        Election::new(&sessions[1], &name).unwrap().key().to_vec(),
    ];
    let txn = format!(
        "\ndel {}\ndel {}\n\n\n",
        String::from_utf8_lossy(&keys[0]),
        String::from_utf8_lossy(&keys[1])
    );
    let sent = Instant::now();
    etcdctl(&etcd, &["txn"], &txn);
    let o = tokio::time::timeout(Duration::from_secs(5), observer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let leader = o.leader.expect("a leader after the txn");
    assert_eq!(
        leader.value, b"three",
        "the observer names the third candidate, not the deleted second"
    );
    eprintln!(
        "observer named the third candidate {:.1} ms after `etcdctl txn` was started",
        sent.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(election.leader().await.unwrap().value, b"three");
    let third = waiting.pop().unwrap().await.unwrap().unwrap();
    let second = waiting.pop().unwrap().await.unwrap();
    assert!(matches!(second, Err(Error::NotHeld { .. })), "{second:?}");

    etcdctl(&etcd, &["del", "--prefix", &format!("{name}/")], "");
    let o = tokio::time::timeout(Duration::from_secs(5), observer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(o.leader, None, "no leader after del --prefix");
    assert!(matches!(election.leader().await, Err(Error::NoLeader)));
    drop((first, third));
    for s in sessions {
        s.close().await.unwrap();
    }
}

/// etcd's gauge of open watchers, from its `/metrics`.
async fn etcd_watchers(etcd: &EtcdServer) -> u64 {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", etcd.client_port()))
        .await
        .unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("etcd reports etcd_debugging_mvcc_watcher_total") as u64
}

/// Item 12 of issue 9: one worker session locks 300 distinct names, each after waiting for
/// another holder (as a job runner locking `order/<id>`): while it waits it watches the name,
/// and once it holds nothing it watches none, on etcd's own count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_close_once_names_go_idle() {
    if !require_etcd_binary() {
        return;
    }
    let etcd = EtcdServer::start().await.unwrap();
    let backend = connect(&etcd.endpoints(), Duration::from_secs(2))
        .await
        .unwrap();
    let root = unique_prefix("idlewatches");
    let holder = Session::new(backend.clone(), 30).await.unwrap();
    let worker = Session::new(backend.clone(), 30).await.unwrap();
    let before = etcd_watchers(&etcd).await;
    let mut most = 0;
    for i in 0..300 {
        let name = format!("{root}order/{i}");
        let held = Mutex::new(&holder, &name).unwrap().lock().await.unwrap();
        let waiter = tokio::spawn({
            let m = Mutex::new(&worker, &name).unwrap();
            async move { m.lock().await }
        });
        // Released only once the worker is queued behind it.
        while keys_under(&backend, format!("{name}/").as_bytes())
            .await
            .unwrap()
            .len()
            < 2
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        held.unlock().await.unwrap();
        let guard = waiter.await.unwrap().unwrap();
        most = most.max(worker.watched_names());
        guard.unlock().await.unwrap();
    }
    // etcd removes a cancelled watcher as it processes the cancellation: allow it a moment.
    let mut after_loop = etcd_watchers(&etcd).await;
    for _ in 0..50 {
        if after_loop <= before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after_loop = etcd_watchers(&etcd).await;
    }
    eprintln!(
        "300 contended names: watchers on etcd {before} before, {after_loop} after the loop; \
         the session watched at most {most} names at once"
    );
    assert_eq!(worker.watched_names(), 0);
    assert!(
        after_loop <= before + 2,
        "etcd still has {after_loop} watchers (was {before})"
    );
    worker.close().await.unwrap();
    holder.close().await.unwrap();
}

/// A session made on one tokio runtime and used on another ends (`lost()` fires, `is_lost()`)
/// when the first runtime shuts down and its keep-alive can no longer run, instead of looking
/// alive while its lease runs out; the backend's connection, made on the first runtime too,
/// is made again on the second.
#[test]
fn session_ends_when_its_runtime_shuts_down_on_etcd() {
    let other = tokio::runtime::Runtime::new().unwrap();
    let Some(etcd) = other.block_on(EtcdServer::start_or_skip()) else {
        return;
    };
    let endpoints = etcd.endpoints();
    let first = tokio::runtime::Runtime::new().unwrap();
    let backend = first
        .block_on(connect(&endpoints, Duration::from_secs(2)))
        .unwrap();
    let s = first.block_on(Session::new(backend.clone(), 10)).unwrap();
    let name = format!("{}job", unique_prefix("runtime"));
    let guard = other
        .block_on(Mutex::new(&s, &name).unwrap().lock())
        .unwrap();
    assert!(!s.is_lost());
    drop(first);
    other.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), s.lost())
            .await
            .expect("lost() fires once the session's runtime is gone");
        assert!(s.is_lost());
        let e = tokio::time::timeout(Duration::from_secs(5), guard.lost())
            .await
            .unwrap();
        assert!(matches!(e, Error::SessionExpired { .. }), "{e:?}");
        // The lease outlives the session's end by its TTL; nothing is left once it is revoked,
        // over a connection the backend makes again on this runtime.
        coord_core::Backend::lease_revoke(&backend, s.lease())
            .await
            .unwrap();
        assert!(keys_under(&backend, name.as_bytes())
            .await
            .unwrap()
            .is_empty());
    });
}
