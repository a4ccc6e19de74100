//! The harness itself, on real servers: connect with the password URL, pause, restart, kill,
//! terminate backends, and leave nothing behind.

use std::path::Path;
use std::time::{Duration, Instant};

use pg_harness::{PgOptions, PgServer};
use tokio_postgres::{Client, NoTls};

async fn connect(url: &str) -> Client {
    let (client, connection) =
        tokio::time::timeout(Duration::from_secs(10), tokio_postgres::connect(url, NoTls))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(connection);
    client
}

async fn one(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// `(state, ppid)` of a process from `/proc`, `None` when it is gone.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| matches!(stat(p), Some((_, ppid)) if ppid == pid))
        .collect()
}

/// Gone, or a zombie waiting for a reaper (it holds nothing any more).
fn is_gone(pid: u32) -> bool {
    matches!(stat(pid), None | Some(('Z' | 'X', _)))
}

fn wait_gone(pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !pids.iter().all(|&p| is_gone(p)) {
        assert!(
            Instant::now() < deadline,
            "processes still running: {:?}",
            pids.iter().filter(|&&p| !is_gone(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn handles_are_shared_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<PgServer>();
    send_sync::<pg_harness::TestPostgres>();
    send_sync::<pg_harness::HarnessError>();
}

#[tokio::test]
async fn password_url_superuser_url_and_psql() {
    let Some(server) = PgServer::start_or_skip().await else {
        return;
    };
    let port = server.port();
    assert_eq!(
        server.url(),
        format!("postgres://coord:coord@127.0.0.1:{port}/coord?sslmode=disable")
    );
    let client = connect(&server.url()).await;
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "coord");
    assert_eq!(row.get::<_, String>(1), "coord");
    client
        .batch_execute("CREATE TABLE t (k int PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
        .await
        .unwrap();

    // The password is checked (SCRAM on loopback).
    let wrong = server.url().replace("coord:coord@", "coord:nope@");
    let err = tokio_postgres::connect(&wrong, NoTls).await.err().unwrap();
    assert_eq!(
        err.as_db_error().map(|e| e.code()),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "{err:?}"
    );

    let admin = connect(&server.superuser_url()).await;
    let su: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(su);
    let fsync: String = admin.query_one("SHOW fsync", &[]).await.unwrap().get(0);
    assert_eq!(fsync, "on");
    let max: String = admin
        .query_one("SHOW max_connections", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(max, "200");

    // psql looks from outside, as the superuser, in the database `coord`.
    assert_eq!(
        server
            .psql("SELECT k, k * 10 FROM t ORDER BY k; SELECT current_user;")
            .unwrap(),
        "1|10\n2|20\npostgres\n"
    );
    assert_eq!(
        server
            .psql_in("postgres", "SELECT current_database();")
            .unwrap(),
        "postgres\n"
    );
    let err = server.psql("SELECT * FROM missing;").unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test]
async fn settings_apply() {
    let options = PgOptions::new()
        .with_setting("max_connections", 42)
        .with_setting("application_name", "it's set")
        .with_startup_timeout(Duration::from_secs(60));
    let Some(server) = PgServer::start_or_skip_with(options).await else {
        return;
    };
    assert_eq!(server.psql("SHOW max_connections;").unwrap(), "42\n");
}

#[tokio::test]
async fn pause_freezes_existing_and_new_connections() {
    let Some(server) = PgServer::start_or_skip().await else {
        return;
    };
    let client = connect(&server.url()).await;
    assert_eq!(one(&client, "SELECT 1::int8").await, 1);

    server.pause();
    assert!(server.is_running());
    let slow =
        tokio::time::timeout(Duration::from_millis(500), client.simple_query("SELECT 2")).await;
    assert!(
        slow.is_err(),
        "a paused server must not answer an open connection"
    );
    let fresh = tokio::time::timeout(
        Duration::from_millis(500),
        tokio_postgres::connect(&server.url(), NoTls),
    )
    .await;
    assert!(
        fresh.is_err(),
        "a paused server must not accept a new connection"
    );

    server.resume();
    let answer = tokio::time::timeout(Duration::from_secs(5), one(&client, "SELECT 3::int8"))
        .await
        .expect("the resumed server answers");
    assert_eq!(answer, 3);
    let again = connect(&server.url()).await;
    assert_eq!(one(&again, "SELECT 4::int8").await, 4);
}

#[tokio::test]
async fn restart_keeps_data_and_port() {
    let Some(server) = PgServer::start_or_skip().await else {
        return;
    };
    let port = server.port();
    let pid = server.pid().unwrap();
    let client = connect(&server.url()).await;
    client
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (7);")
        .await
        .unwrap();

    server.restart().await.unwrap();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid().unwrap(), pid);
    // The old connection is gone; a new one sees the data.
    assert!(client.simple_query("SELECT 1").await.is_err());
    let client = connect(&server.url()).await;
    assert_eq!(one(&client, "SELECT sum(v)::int8 FROM t").await, 7);

    // A restart of a paused server works too (stop resumes it first).
    server.pause();
    server.restart().await.unwrap();
    let client = connect(&server.url()).await;
    assert_eq!(one(&client, "SELECT sum(v)::int8 FROM t").await, 7);

    // stop, then start_again.
    server.stop().await;
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    server.start_again().await.unwrap();
    let client = connect(&server.url()).await;
    assert_eq!(one(&client, "SELECT sum(v)::int8 FROM t").await, 7);
}

#[tokio::test]
async fn terminate_backends_by_application_name() {
    let Some(server) = PgServer::start_or_skip().await else {
        return;
    };
    let victim = connect(&format!("{}&application_name=victim-1", server.url())).await;
    let bystander = connect(&format!("{}&application_name=bystander", server.url())).await;
    assert_eq!(one(&victim, "SELECT 1::int8").await, 1);
    assert_eq!(one(&bystander, "SELECT 1::int8").await, 1);

    assert_eq!(server.terminate_backends(Some("victim%")).unwrap(), 1);
    assert!(victim.simple_query("SELECT 1").await.is_err());
    assert!(victim.is_closed());
    assert_eq!(one(&bystander, "SELECT 2::int8").await, 2);
    assert_eq!(server.terminate_backends(Some("victim%")).unwrap(), 0);

    // Without a pattern: every connection to `coord`.
    let other = connect(&server.url()).await;
    assert_eq!(server.terminate_backends(None).unwrap(), 2);
    assert!(bystander.simple_query("SELECT 1").await.is_err());
    assert!(other.simple_query("SELECT 1").await.is_err());
}

#[tokio::test]
async fn kill_then_start_again_recovers_committed_data() {
    let Some(server) = PgServer::start_or_skip().await else {
        return;
    };
    let client = connect(&server.url()).await;
    client
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (5);")
        .await
        .unwrap();
    let pid = server.pid().unwrap();
    let backends = children_of(pid);
    assert!(backends.len() >= 3, "postmaster children: {backends:?}");

    server.kill();
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);
    // The postmaster and every backend died at once.
    wait_gone(&[pid], Duration::from_secs(1));
    wait_gone(&backends, Duration::from_secs(1));
    assert!(client.simple_query("SELECT 1").await.is_err());

    server.start_again().await.unwrap();
    let client = connect(&server.url()).await;
    assert_eq!(one(&client, "SELECT sum(v)::int8 FROM t").await, 5);
    assert!(server
        .log_tail(200)
        .contains("database system was interrupted"));
}

#[tokio::test]
async fn drop_leaves_no_process_and_no_directory() {
    let Some(server) = PgServer::start_or_skip().await else {
        return;
    };
    let _client = connect(&server.url()).await;
    let pid = server.pid().unwrap();
    let mut processes = children_of(pid);
    processes.push(pid);
    let dir = server.data_dir().parent().unwrap().to_path_buf();
    assert!(server.log_path().starts_with(&dir));
    assert!(dir.join("data").join("PG_VERSION").exists());
    drop(server);
    // Gone, not even zombies: the postmaster reaped its backends, and we reaped it.
    for p in processes {
        assert_eq!(stat(p), None, "process {p} is left");
    }
    assert!(!dir.exists());
}

/// Run by [`postgres_dies_with_the_test_process`] in a child test process: starts a server,
/// prints its pids and directory, and aborts (no destructor runs).
#[tokio::test]
async fn abort_child() {
    if std::env::var_os("PG_HARNESS_ABORT_CHILD").is_none() {
        return;
    }
    let server = PgServer::start().await.unwrap();
    let _client = connect(&server.url()).await;
    let pid = server.pid().unwrap();
    let mut pids = children_of(pid);
    pids.insert(0, pid);
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("PIDS {}", pids.join(","));
    println!("DIR {}", server.data_dir().parent().unwrap().display());
    std::process::abort();
}

#[test]
fn postgres_dies_with_the_test_process() {
    if !pg_harness::require_postgres_binaries() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "abort_child", "--nocapture", "--test-threads=1"])
        .env("PG_HARNESS_ABORT_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the child must abort: {stdout}");
    let field = |name: &str| {
        stdout
            .lines()
            // The test harness prints `test abort_child ... ` on the same line.
            .find_map(|l| l.split_once(name).map(|(_, rest)| rest))
            .unwrap_or_else(|| {
                panic!(
                    "no {name} in the child's output:\n{stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .trim()
            .to_string()
    };
    let pids: Vec<u32> = field("PIDS ")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let dir = field("DIR ");
    assert!(pids.len() >= 4, "postmaster and backends: {pids:?}");
    // The postmaster gets SIGKILL with its parent; its backends follow as they see it gone.
    wait_gone(&pids, Duration::from_secs(10));
    // No destructor ran: the directory is left, and ours to remove.
    assert!(Path::new(&dir).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn postgres_for_tests_gives_a_working_url() {
    let Some(pg) = pg_harness::postgres_for_tests().await else {
        return;
    };
    let external = std::env::var("POSTGRES_URL").is_ok_and(|u| !u.trim().is_empty());
    assert_eq!(pg.is_exclusive(), !external);
    assert_eq!(pg.server().is_some(), !external);
    let client = connect(&pg.url()).await;
    assert_eq!(one(&client, "SELECT 1::int8").await, 1);
}
