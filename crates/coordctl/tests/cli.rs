//! End-to-end: the built `coordctl` binary against a real etcd (the one `ETCD_ENDPOINTS` names,
//! or one the harness starts), and against `etcdctl lock`/`etcdctl elect` on the same names.
//!
//! Every test uses its own random names, waits with deadlines (no long fixed sleeps), and kills
//! every process it started, by pid, even when it fails (see [`Proc`]'s `Drop`).

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coord_core::{Backend, RangeRequest};
use coord_etcd::{EtcdBackend, EtcdConfig};
use etcd_harness::TestEtcd;
use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::unistd::Pid;

/// How long any single expected event may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(5);

/// A name no other test (or run) uses.
fn unique(label: &str) -> String {
    format!("coordctl-test/{label}-{:08x}", rand::random::<u32>())
}

/// The etcd of this test, or `None` when there is none and skipping is allowed (never under
/// `CI=true`: the harness panics then).
async fn etcd() -> Option<TestEtcd> {
    etcd_harness::endpoints_for_tests().await
}

/// `etcdctl`, or `None` (after a notice) when it is not installed and skipping is allowed.
fn etcdctl_binary() -> Option<std::path::PathBuf> {
    match etcd_harness::etcdctl_binary() {
        Some(path) => Some(path),
        None if etcd_harness::is_ci() => panic!("etcdctl not found and CI=true"),
        None => {
            eprintln!("NOTICE: etcdctl not found; skipping this test");
            None
        }
    }
}

/// `coordctl` with the test's endpoints.
fn coordctl(etcd: &TestEtcd) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordctl"));
    cmd.arg("--endpoints").arg(etcd.endpoints().join(","));
    if etcd.is_exclusive() {
        // Settings meant for an external etcd must not leak into the one started here.
        for var in [
            "ETCD_USER",
            "ETCD_PASSWORD",
            "ETCD_CACERT",
            "ETCD_CERT",
            "ETCD_KEY",
        ] {
            cmd.env_remove(var);
        }
    }
    cmd
}

/// `etcdctl` (API v3) with the test's endpoints.
fn etcdctl(bin: &std::path::Path, etcd: &TestEtcd) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(etcd.endpoints().join(","));
    cmd
}

/// A client for checking the store's state.
async fn backend(etcd: &TestEtcd) -> EtcdBackend {
    let config = if etcd.is_exclusive() {
        EtcdConfig::new(etcd.endpoints())
    } else {
        EtcdConfig::from_env()
            .expect("ETCD_* settings")
            .with_endpoints(etcd.endpoints())
    };
    config.connect().await.expect("connect to the test etcd")
}

/// The keys under `name/`.
async fn keys(backend: &EtcdBackend, name: &str) -> Vec<String> {
    let resp = backend
        .range(RangeRequest::prefix(format!("{name}/")))
        .await
        .expect("range");
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

/// Polls `check` until it holds or `PATIENCE` passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process whose stdout lines arrive on a channel and whose stderr is collected. It is
/// killed (SIGKILL, by pid) and reaped when dropped, so no test leaves a process behind.
struct Proc {
    what: String,
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(what: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Every process starts with SIGHUP at its default, however the tests were started:
        // under `nohup` (or a CI runner that ignores it) the child would inherit the ignore,
        // which coordctl rightly keeps, and the SIGHUP tests would wait for nothing.
        // SAFETY: `signal` is async-signal-safe, and nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                signal(Signal::SIGHUP, SigHandler::SigDfl)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc {
            what: what.to_string(),
            child,
            lines,
            stderr,
            status: None,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next stdout line, within `PATIENCE`.
    fn line(&self) -> String {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(e) => panic!(
                "{}: no output line within {PATIENCE:?} ({e:?}); stderr: {}",
                self.what,
                self.stderr()
            ),
        }
    }

    /// Asserts that no stdout line comes within `quiet`.
    fn silent_for(&self, quiet: Duration) {
        match self.lines.recv_timeout(quiet) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(line) => panic!("{}: printed {line:?} but should still wait", self.what),
            Err(RecvTimeoutError::Disconnected) => panic!(
                "{}: exited but should still wait; stderr: {}",
                self.what,
                self.stderr()
            ),
        }
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("signal {}: {e}", self.what));
    }

    /// Waits (within `PATIENCE`) for the exit status.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                // Let the reader threads drain what is left.
                std::thread::sleep(Duration::from_millis(20));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {PATIENCE:?}; stderr: {}",
                self.what,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit code.
    fn code(&mut self) -> i32 {
        let status = self.wait();
        status
            .code()
            .unwrap_or_else(|| panic!("{} died of a signal: {status:?}", self.what))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Asserts that stderr is exactly one line (and shows it, with `--nocapture`).
fn one_line(stderr: &str) {
    eprintln!("stderr: {}", stderr.trim_end());
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected one line on stderr, got: {stderr:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_runs_the_command_with_key_and_token_and_exits_with_its_code() {
    let Some(etcd) = etcd().await else { return };
    let name = unique("cmd");
    let mut cmd = coordctl(&etcd);
    cmd.args(["lock", &name, "--", "sh", "-c"])
        .arg(r#"printf '%s %s\n' "$COORD_LOCK_KEY" "$COORD_FENCING_TOKEN"; exit 7"#);
    let started = Instant::now();
    let mut run = Proc::spawn("coordctl lock -- sh", cmd);
    let line = run.line();
    assert_eq!(run.code(), 7, "stderr: {}", run.stderr());
    eprintln!("lock + command + release: {:?}", started.elapsed());
    let (key, token) = line.split_once(' ').expect("key and token");
    let lease = key
        .strip_prefix(&format!("{name}/"))
        .unwrap_or_else(|| panic!("key {key} is not under {name}/"));
    assert!(
        !lease.is_empty() && lease.chars().all(|c| c.is_ascii_hexdigit()),
        "the key ends in the lease id in hex, as Go's: {key}"
    );
    let token: i64 = token.parse().expect("numeric fencing token");
    assert!(token > 0);
    assert!(run.stderr().is_empty(), "stderr: {}", run.stderr());
    // Released, and the session's lease revoked.
    let backend = backend(&etcd).await;
    assert!(keys(&backend, &name).await.is_empty());
    let lease = i64::from_str_radix(lease, 16).unwrap();
    assert!(backend.lease_time_to_live(lease, false).await.is_err());

    // A command that cannot be found: 127, and nothing left behind.
    let mut cmd = coordctl(&etcd);
    cmd.args(["lock", &name, "--", "/nonexistent/command"]);
    let mut run = Proc::spawn("coordctl lock -- /nonexistent", cmd);
    assert_eq!(run.code(), 127);
    one_line(&run.stderr());
    assert!(keys(&backend, &name).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_holder_makes_coordctl_wait_until_it_is_interrupted() {
    let Some(etcd) = etcd().await else { return };
    let Some(etcdctl_bin) = etcdctl_binary() else {
        return;
    };
    let name = unique("etcdctl-first");
    let mut cmd = etcdctl(&etcdctl_bin, &etcd);
    cmd.args(["lock", &name]);
    let holder = Proc::spawn("etcdctl lock", cmd);
    let key = holder.line();
    assert!(
        key.starts_with(&format!("{name}/")),
        "etcdctl printed {key}"
    );

    let mut cmd = coordctl(&etcd);
    cmd.args([
        "lock",
        &name,
        "--",
        "sh",
        "-c",
        "echo acquired $COORD_LOCK_KEY",
    ]);
    let mut waiter = Proc::spawn("coordctl lock (waiting)", cmd);
    waiter.silent_for(Duration::from_millis(500));

    let released = Instant::now();
    holder.signal(Signal::SIGINT); // etcdctl deletes its key on SIGINT
    let line = waiter.line();
    eprintln!(
        "etcdctl released -> coordctl acquired: {:?}",
        released.elapsed()
    );
    assert!(line.starts_with(&format!("acquired {name}/")), "{line}");
    assert_ne!(line, format!("acquired {key}"));
    assert_eq!(waiter.code(), 0, "stderr: {}", waiter.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordctl_lock_holder_makes_etcdctl_wait_until_it_is_interrupted() {
    let Some(etcd) = etcd().await else { return };
    let Some(etcdctl_bin) = etcdctl_binary() else {
        return;
    };
    let name = unique("coordctl-first");
    let mut cmd = coordctl(&etcd);
    cmd.args(["lock", &name]);
    let mut holder = Proc::spawn("coordctl lock", cmd);
    let key = holder.line();
    assert!(
        key.starts_with(&format!("{name}/")),
        "coordctl printed {key}"
    );

    let mut cmd = etcdctl(&etcdctl_bin, &etcd);
    cmd.args(["lock", &name]);
    let waiter = Proc::spawn("etcdctl lock (waiting)", cmd);
    waiter.silent_for(Duration::from_millis(500));

    let released = Instant::now();
    holder.signal(Signal::SIGINT);
    assert_eq!(holder.code(), 0, "stderr: {}", holder.stderr());
    let etcd_key = waiter.line();
    eprintln!(
        "coordctl released -> etcdctl acquired: {:?}",
        released.elapsed()
    );
    assert!(etcd_key.starts_with(&format!("{name}/")) && etcd_key != key);
    assert!(holder.stderr().is_empty(), "stderr: {}", holder.stderr());
    waiter.signal(Signal::SIGINT);
    let backend = backend(&etcd).await;
    eventually("etcdctl released", || async {
        keys(&backend, &name).await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holder_releases_within_its_ttl() {
    let Some(etcd) = etcd().await else { return };
    let name = unique("killed");
    let ttl = 2;
    let mut cmd = coordctl(&etcd);
    cmd.args(["--ttl", &ttl.to_string(), "lock", &name]);
    let mut holder = Proc::spawn("coordctl lock (to be killed)", cmd);
    holder.line();

    let mut cmd = coordctl(&etcd);
    cmd.args(["lock", &name, "--", "echo", "acquired"]);
    let mut waiter = Proc::spawn("coordctl lock (waiting)", cmd);
    waiter.silent_for(Duration::from_millis(300));

    holder.signal(Signal::SIGKILL);
    let killed = Instant::now();
    holder.wait();
    assert_eq!(waiter.line(), "acquired");
    let took = killed.elapsed();
    eprintln!("holder SIGKILLed with TTL {ttl}s -> next holder acquired: {took:?}");
    assert!(
        took <= Duration::from_secs(ttl + 1),
        "the lock of a killed holder outlived its TTL: {took:?}"
    );
    assert_eq!(waiter.code(), 0, "stderr: {}", waiter.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_gives_exit_code_3_and_leaves_no_key() {
    let Some(etcd) = etcd().await else { return };
    let name = unique("timeout");
    let mut cmd = coordctl(&etcd);
    cmd.args(["lock", &name]);
    let mut holder = Proc::spawn("coordctl lock", cmd);
    let key = holder.line();

    for timeout in ["400ms", "0"] {
        let mut cmd = coordctl(&etcd);
        cmd.args(["--timeout", timeout, "lock", &name, "--", "echo", "ran"]);
        let started = Instant::now();
        let mut waiter = Proc::spawn("coordctl --timeout lock", cmd);
        assert_eq!(waiter.code(), 3, "--timeout {timeout}: {}", waiter.stderr());
        eprintln!("--timeout {timeout}: exit 3 after {:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(3));
        one_line(&waiter.stderr());
        assert!(waiter.lines.try_recv().is_err(), "the command must not run");
    }
    let backend = backend(&etcd).await;
    assert_eq!(keys(&backend, &name).await, [key]);
    holder.signal(Signal::SIGTERM);
    assert_eq!(holder.code(), 0);
    assert!(keys(&backend, &name).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupting_a_wait_exits_130_and_withdraws_the_key() {
    let Some(etcd) = etcd().await else { return };
    let name = unique("interrupt");
    let mut cmd = coordctl(&etcd);
    cmd.args(["lock", &name]);
    let holder = Proc::spawn("coordctl lock", cmd);
    let key = holder.line();

    let backend = backend(&etcd).await;
    let mut cmd = coordctl(&etcd);
    cmd.args(["lock", &name]);
    let mut waiter = Proc::spawn("coordctl lock (waiting)", cmd);
    eventually("the waiter queued", || async {
        keys(&backend, &name).await.len() == 2
    })
    .await;
    waiter.signal(Signal::SIGINT);
    assert_eq!(waiter.code(), 130);
    one_line(&waiter.stderr());
    assert_eq!(keys(&backend, &name).await, [key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_lock_kills_the_command_and_what_it_started() {
    let Some(etcd) = etcd().await else { return };
    let name = unique("lost");
    let mut cmd = coordctl(&etcd);
    // The shell forks `sleep` and prints its pid: killing only the shell would leave it.
    cmd.args(["lock", &name, "--", "sh", "-c"])
        .arg(r#"echo "$COORD_LOCK_KEY"; sleep 30 & echo $!; wait"#);
    let mut run = Proc::spawn("coordctl lock -- sh", cmd);
    let key = run.line();
    let grandchild: i32 = run.line().parse().expect("pid");
    let lease = i64::from_str_radix(key.rsplit('/').next().unwrap(), 16).unwrap();

    let backend = backend(&etcd).await;
    let revoked = Instant::now();
    backend.lease_revoke(lease).await.expect("revoke");
    assert_eq!(run.code(), 4, "stderr: {}", run.stderr());
    eprintln!(
        "lease revoked -> coordctl exited 4: {:?}",
        revoked.elapsed()
    );
    one_line(&run.stderr());
    assert!(run.stderr().contains("lost"), "{}", run.stderr());
    let gone = !std::path::Path::new(&format!("/proc/{grandchild}")).exists();
    if !gone {
        // Never leave it behind, even when the assertion fails.
        let _ = kill(Pid::from_raw(grandchild), Signal::SIGKILL);
    }
    assert!(gone, "the command's child {grandchild} outlived the lock");
}

/// Whether `pid` is a live process: a zombie (dead, not yet reaped by whoever adopted it) is
/// not.
fn running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// Waits up to `within` for `pid` to end; kills it (never leaving it behind) if it did not.
fn ended_within(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while running(pid) {
        if Instant::now() >= deadline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A process the test did not start itself (a command under coordctl), killed when the test
/// ends, even when it fails, if it still runs.
struct Stray(i32);

impl Drop for Stray {
    fn drop(&mut self) {
        if running(self.0) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

/// Reported: after a SIGKILL of coordctl its command ran on, while the lock, gone with
/// coordctl's lease, could be taken by the next holder. The command gets a parent-death signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_coordctl_takes_its_command_with_it() {
    let Some(etcd) = etcd().await else { return };
    let name = unique("pdeathsig");
    let mut cmd = coordctl(&etcd);
    // `exec`: the pid printed is the pid of `sleep`, coordctl's own child.
    cmd.args(["--ttl", "2", "lock", &name, "--", "sh", "-c"])
        .arg("echo $$; exec sleep 60");
    let mut run = Proc::spawn("coordctl lock -- sleep 60", cmd);
    let command: i32 = run.line().parse().expect("the command's pid");
    let _stray = Stray(command);
    assert!(running(command));

    run.signal(Signal::SIGKILL);
    run.wait();
    let killed = Instant::now();
    let ended = ended_within(command, Duration::from_secs(2));
    eprintln!(
        "coordctl SIGKILLed -> its command ended: {ended} after {:?}",
        killed.elapsed()
    );
    assert!(ended, "the command {command} outlived a SIGKILLed coordctl");
}

/// Reported: SIGHUP (a closed terminal or ssh session) killed coordctl and left its command
/// running under a lock held on until the TTL. It is now what SIGTERM is: passed on to the
/// command, waited for, the lock released at once, exit 128 + 1; and while waiting, 129 with
/// the key withdrawn; when holding without a command, a release and exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_handled_as_sigterm_and_releases_the_lock_at_once() {
    let Some(etcd) = etcd().await else { return };
    let backend = backend(&etcd).await;
    let name = unique("sighup");
    for (signal, code) in [(Signal::SIGTERM, 143), (Signal::SIGHUP, 129)] {
        // A TTL far longer than the test waits: only a release lets the next holder in.
        let mut cmd = coordctl(&etcd);
        cmd.args(["--ttl", "60", "lock", &name, "--", "sh", "-c"])
            .arg("echo $$; exec sleep 60");
        let mut run = Proc::spawn("coordctl lock -- sleep 60", cmd);
        let command: i32 = run.line().parse().expect("the command's pid");
        let _stray = Stray(command);
        run.signal(signal);
        let signalled = Instant::now();
        assert_eq!(run.code(), code, "{signal}: stderr: {}", run.stderr());
        assert!(
            ended_within(command, Duration::ZERO),
            "{signal}: the command still runs"
        );
        let mut cmd = coordctl(&etcd);
        cmd.args(["--timeout", "0", "lock", &name, "--", "true"]);
        let mut next = Proc::spawn("coordctl --timeout 0 lock", cmd);
        assert_eq!(next.code(), 0, "{signal}: not released: {}", next.stderr());
        eprintln!(
            "{signal} -> exit {code}, lock taken by the next: {:?}",
            signalled.elapsed()
        );
    }

    let mut cmd = coordctl(&etcd);
    cmd.args(["--ttl", "60", "lock", &name]);
    let mut holder = Proc::spawn("coordctl lock", cmd);
    let key = holder.line();
    let mut cmd = coordctl(&etcd);
    cmd.args(["lock", &name]);
    let mut waiter = Proc::spawn("coordctl lock (waiting)", cmd);
    eventually("the waiter queued", || async {
        keys(&backend, &name).await.len() == 2
    })
    .await;
    waiter.signal(Signal::SIGHUP);
    assert_eq!(waiter.code(), 129, "stderr: {}", waiter.stderr());
    one_line(&waiter.stderr());
    assert_eq!(keys(&backend, &name).await, [key]);
    holder.signal(Signal::SIGHUP);
    assert_eq!(holder.code(), 0, "stderr: {}", holder.stderr());
    assert!(keys(&backend, &name).await.is_empty());
}

/// `cmd` run by `nohup`, which starts it with SIGHUP ignored.
fn under_nohup(cmd: &Command) -> Command {
    let mut nohup = Command::new("nohup");
    nohup.arg(cmd.get_program()).args(cmd.get_args());
    for (var, value) in cmd.get_envs() {
        match value {
            Some(value) => nohup.env(var, value),
            None => nohup.env_remove(var),
        };
    }
    nohup
}

/// Catching SIGHUP must not undo `nohup`: coordctl and its command keep ignoring it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_nohup_sighup_stays_ignored() {
    let Some(etcd) = etcd().await else { return };
    let name = unique("nohup");
    let mut cmd = coordctl(&etcd);
    cmd.args(["lock", &name, "--", "sh", "-c"])
        .arg("echo $$; exec sleep 60");
    let mut run = Proc::spawn("nohup coordctl lock -- sleep 60", under_nohup(&cmd));
    let command: i32 = run.line().parse().expect("the command's pid");
    let _stray = Stray(command);
    run.signal(Signal::SIGHUP);
    kill(Pid::from_raw(command), Signal::SIGHUP).expect("SIGHUP the command");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        run.child.try_wait().expect("try_wait").is_none(),
        "coordctl stopped on SIGHUP under nohup; stderr: {}",
        run.stderr()
    );
    assert!(
        running(command),
        "the command stopped on SIGHUP under nohup"
    );
    run.signal(Signal::SIGTERM);
    assert_eq!(run.code(), 143, "stderr: {}", run.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordctl_leader_is_what_etcdctl_elect_listen_prints() {
    let Some(etcd) = etcd().await else { return };
    let Some(etcdctl_bin) = etcdctl_binary() else {
        return;
    };
    let name = unique("elect");
    let mut cmd = coordctl(&etcd);
    cmd.args(["elect", &name, "coord-proposal"]);
    let mut leader = Proc::spawn("coordctl elect", cmd);
    let key = leader.line();
    assert_eq!(leader.line(), "coord-proposal");
    assert!(key.starts_with(&format!("{name}/")), "{key}");

    // A second candidate, from etcdctl, waits behind it.
    let mut cmd = etcdctl(&etcdctl_bin, &etcd);
    cmd.args(["elect", &name, "etcd-proposal"]);
    let follower = Proc::spawn("etcdctl elect", cmd);

    let mut cmd = etcdctl(&etcdctl_bin, &etcd);
    cmd.args(["elect", "-l", &name]);
    let observer = Proc::spawn("etcdctl elect -l", cmd);
    assert_eq!(observer.line(), key);
    assert_eq!(observer.line(), "coord-proposal");
    follower.silent_for(Duration::from_millis(200));

    // coordctl resigns on SIGTERM: etcdctl's candidate takes over.
    leader.signal(Signal::SIGTERM);
    assert_eq!(leader.code(), 0, "stderr: {}", leader.stderr());
    let next = follower.line();
    assert_eq!(follower.line(), "etcd-proposal");
    assert_eq!(observer.line(), next);
    assert_eq!(observer.line(), "etcd-proposal");
    follower.signal(Signal::SIGINT);
    observer.signal(Signal::SIGINT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_leader_is_what_coordctl_leader_and_listen_print() {
    let Some(etcd) = etcd().await else { return };
    let Some(etcdctl_bin) = etcdctl_binary() else {
        return;
    };
    let name = unique("leader");
    let leader_value = |with_key: bool| {
        let mut cmd = coordctl(&etcd);
        cmd.arg("leader").arg(&name);
        if with_key {
            cmd.arg("--with-key");
        }
        let out = cmd.output().expect("run coordctl leader");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = leader_value(false);
    assert_eq!((code, out.as_str()), (Some(5), ""), "no leader yet");
    one_line(&err);

    let mut cmd = coordctl(&etcd);
    cmd.args(["elect", "--listen", &name]);
    let mut listener = Proc::spawn("coordctl elect --listen", cmd);
    listener.silent_for(Duration::from_millis(200)); // as etcdctl: nothing without a leader

    let mut cmd = etcdctl(&etcdctl_bin, &etcd);
    cmd.args(["elect", &name, "from-etcdctl"]);
    let etcd_leader = Proc::spawn("etcdctl elect", cmd);
    let key = etcd_leader.line();
    assert_eq!(etcd_leader.line(), "from-etcdctl");

    assert_eq!(listener.line(), key);
    assert_eq!(listener.line(), "from-etcdctl");
    assert_eq!(
        leader_value(false),
        (Some(0), "from-etcdctl\n".into(), "".into())
    );
    assert_eq!(
        leader_value(true),
        (Some(0), format!("{key}\nfrom-etcdctl\n"), "".into())
    );

    // etcdctl resigns on SIGINT: no leader any more.
    etcd_leader.signal(Signal::SIGINT);
    let deadline = Instant::now() + PATIENCE;
    while leader_value(false).0 != Some(5) {
        assert!(
            Instant::now() < deadline,
            "etcdctl's leadership did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    listener.signal(Signal::SIGINT);
    assert_eq!(listener.code(), 0, "stderr: {}", listener.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwlock_readers_share_and_a_writer_waits_for_them() {
    let Some(etcd) = etcd().await else { return };
    let name = unique("rw");
    let reader = |n: &str| {
        let mut cmd = coordctl(&etcd);
        cmd.args(["rwlock", "--read", &name]);
        Proc::spawn(n, cmd)
    };
    let mut r1 = reader("reader 1");
    let mut r2 = reader("reader 2");
    assert!(r1.line().starts_with(&format!("{name}/read/")));
    assert!(r2.line().starts_with(&format!("{name}/read/")));

    let mut cmd = coordctl(&etcd);
    cmd.args([
        "--timeout",
        "300ms",
        "rwlock",
        "--write",
        &name,
        "--",
        "true",
    ]);
    assert_eq!(Proc::spawn("writer (timeout)", cmd).code(), 3);

    let mut cmd = coordctl(&etcd);
    cmd.args(["rwlock", "--write", &name, "--", "sh", "-c"])
        .arg(r#"echo "$COORD_LOCK_KEY""#);
    let mut writer = Proc::spawn("writer", cmd);
    writer.silent_for(Duration::from_millis(300));
    r1.signal(Signal::SIGINT);
    assert_eq!(r1.code(), 0);
    writer.silent_for(Duration::from_millis(200));
    r2.signal(Signal::SIGINT);
    assert_eq!(r2.code(), 0);
    assert!(writer.line().starts_with(&format!("{name}/write/")));
    assert_eq!(writer.code(), 0, "stderr: {}", writer.stderr());
}

/// Three `coordctl semaphore --permits 2` processes running a command that logs its start and
/// end: never more than two inside at once (by the log's order), all three ran, and no key is
/// left. A fourth asking with another capacity meanwhile fails (exit 1) and leaves no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_runs_at_most_permits_commands_at_once() {
    let Some(etcd) = etcd().await else { return };
    let name = unique("sem");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = format!(
        r#"echo "start $COORD_FENCING_TOKEN" >> {log}; sleep 0.5; echo "end $COORD_FENCING_TOKEN" >> {log}"#,
        log = log.display()
    );
    let mut runs: Vec<Proc> = (0..3)
        .map(|i| {
            let mut cmd = coordctl(&etcd);
            cmd.args([
                "semaphore",
                &name,
                "--permits",
                "2",
                "--",
                "sh",
                "-c",
                &script,
            ]);
            Proc::spawn(&format!("coordctl semaphore #{i}"), cmd)
        })
        .collect();
    let backend = backend(&etcd).await;
    eventually("the three have written their keys", || async {
        keys(&backend, &name).await.len() == 3
    })
    .await;
    let mut other = coordctl(&etcd);
    other.args(["semaphore", &name, "--permits", "3", "--", "true"]);
    let (code, _, stderr) = output(other);
    assert!(
        code == Some(1) && stderr.contains("capacity"),
        "another capacity while the name is in use: {code:?} {stderr}"
    );
    for run in &mut runs {
        assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    }
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 6, "three starts and three ends: {lines:?}");
    let (mut inside, mut most) = (0, 0);
    for line in &lines {
        if line.starts_with("start") {
            inside += 1;
            most = most.max(inside);
        } else {
            inside -= 1;
        }
    }
    assert!(most <= 2, "more than two commands at once: {lines:?}");
    let mut tokens: Vec<&str> = lines.iter().map(|l| l.split_once(' ').unwrap().1).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 3, "three distinct permits: {lines:?}");
    eventually("no semaphore key is left", || async {
        keys(&backend, &name).await.is_empty()
    })
    .await;
}

#[test]
fn an_unreachable_endpoint_fails_with_one_line_within_the_dial_timeout() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for command in [&["lock", "x"][..], &["elect", "x", "p"], &["leader", "x"]] {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_coordctl"))
            .args(["--endpoints", &format!("127.0.0.1:{port}")])
            .args(["--dial-timeout", "1s"])
            .args(command)
            .output()
            .expect("run coordctl");
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "{command:?}: exit {:?} after {took:?}: {stderr}",
            out.status.code()
        );
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        one_line(&stderr);
        assert!(
            stderr.starts_with("coordctl: cannot connect to etcd"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
        assert!(took < Duration::from_millis(1800), "took {took:?}");
    }
}

/// Reported: `leader` and `elect --listen` let SIGINT wait for the dial timeout (then exit 1).
/// Every subcommand stops connecting at a stop signal, with 128 + N.
#[test]
fn a_stop_signal_interrupts_connecting_at_once() {
    // Never answers: the kernel completes connections into the listen backlog, and nothing
    // reads or writes them, so every connect waits for its --dial-timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = silent.local_addr().unwrap().to_string();
    let cases: [(&[&str], Signal, i32); 8] = [
        (&["leader", "x"], Signal::SIGINT, 130),
        (&["elect", "--listen", "x"], Signal::SIGINT, 130),
        (&["elect", "x", "p"], Signal::SIGINT, 130),
        (&["lock", "x"], Signal::SIGINT, 130),
        (&["lock", "x", "--", "true"], Signal::SIGINT, 130),
        (&["rwlock", "--read", "x"], Signal::SIGINT, 130),
        (&["leader", "x"], Signal::SIGTERM, 143),
        (&["elect", "--listen", "x"], Signal::SIGHUP, 129),
    ];
    for (args, signal, code) in cases {
        let mut cmd = coordctl_on(std::slice::from_ref(&endpoint));
        cmd.args(["--dial-timeout", "30s"]).args(args);
        let mut run = Proc::spawn(&format!("coordctl {}", args.join(" ")), cmd);
        std::thread::sleep(Duration::from_millis(300));
        run.signal(signal);
        let signalled = Instant::now();
        let status = run.wait();
        let took = signalled.elapsed();
        eprintln!("{args:?}: {signal} -> {status:?} after {took:?}");
        assert_eq!(status.code(), Some(code), "{args:?}: {}", run.stderr());
        assert!(took < Duration::from_secs(1), "{args:?}: took {took:?}");
        one_line(&run.stderr());
        assert!(
            run.stderr().contains("while connecting"),
            "{}",
            run.stderr()
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_coordctl"))
            .args(args)
            .output()
            .expect("run coordctl")
    };
    assert_eq!(run(&["lock"]).status.code(), Some(2));
    assert_eq!(run(&["rwlock", "x"]).status.code(), Some(2));
    assert_eq!(
        run(&["--timeout", "soon", "lock", "x"]).status.code(),
        Some(2)
    );
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit codes:"));
}

/// `coordctl` on a server of its own (TLS, auth), with no ETCD_* settings from outside.
fn coordctl_on(endpoints: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordctl"));
    for var in [
        "ETCD_ENDPOINTS",
        "ETCD_USER",
        "ETCD_PASSWORD",
        "ETCD_CACERT",
        "ETCD_CERT",
        "ETCD_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd.arg("--endpoints").arg(endpoints.join(","));
    cmd
}

fn output(mut cmd: Command) -> (Option<i32>, String, String) {
    let out = cmd.output().expect("run coordctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_from_flags_or_environment() {
    let options = etcd_harness::EtcdOptions::new()
        .with_generated_tls()
        .with_client_cert_auth();
    let Some(server) = etcd_harness::EtcdServer::start_or_skip_with(options).await else {
        return;
    };
    let files = server.tls().expect("TLS files").clone();
    let name = unique("tls");

    let mut cmd = coordctl_on(&server.endpoints());
    cmd.arg("--cacert")
        .arg(&files.ca_cert)
        .arg("--cert")
        .arg(&files.client_cert)
        .arg("--key")
        .arg(&files.client_key)
        .args(["lock", &name, "--", "sh", "-c", "echo $COORD_LOCK_KEY"]);
    let (code, out, err) = output(cmd);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with(&format!("{name}/")), "{out}");

    let mut cmd = coordctl_on(&[server.client_url()]);
    cmd.env("ETCD_CACERT", &files.ca_cert)
        .env("ETCD_CERT", &files.client_cert)
        .env("ETCD_KEY", &files.client_key)
        .args(["lock", &name, "--", "true"]);
    let (code, _, err) = output(cmd);
    assert_eq!(code, Some(0), "{err}");

    // No client certificate: refused, in one line, with TLS's reason (seen once in a few runs
    // instead: "operation was canceled", Unavailable, from coord-etcd's connect probe).
    let mut cmd = coordctl_on(&server.endpoints());
    cmd.arg("--cacert").arg(&files.ca_cert).args([
        "--dial-timeout",
        "2s",
        "lock",
        &name,
        "--",
        "true",
    ]);
    let (code, _, err) = output(cmd);
    assert_eq!(code, Some(1), "{err}");
    one_line(&err);
    assert!(
        err.contains("BadCertificate") || err.contains("could not reach etcd"),
        "{err}"
    );

    // A certificate without its key is a usage error.
    let mut cmd = coordctl_on(&server.endpoints());
    cmd.arg("--cert")
        .arg(&files.client_cert)
        .args(["lock", &name, "--", "true"]);
    let (code, _, err) = output(cmd);
    assert_eq!(code, Some(2), "{err}");
    one_line(&err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_user_and_password_from_flags_or_environment() {
    let Some(server) = etcd_harness::EtcdServer::start_or_skip().await else {
        return;
    };
    let password = "coordctl-pw-7d1";
    {
        let mut client = server.client().await.expect("client");
        client.user_add("root", password, None).await.unwrap();
        client.role_add("root").await.unwrap();
        client.user_grant_role("root", "root").await.unwrap();
        client.auth_enable().await.unwrap();
    }
    let name = unique("auth");

    let mut cmd = coordctl_on(&server.endpoints());
    cmd.args([
        "--user",
        &format!("root:{password}"),
        "lock",
        &name,
        "--",
        "true",
    ]);
    let (code, _, err) = output(cmd);
    assert_eq!(code, Some(0), "{err}");

    let mut cmd = coordctl_on(&server.endpoints());
    cmd.env("ETCD_USER", "root")
        .env("ETCD_PASSWORD", password)
        .args(["elect", "--timeout", "2s", &name, "p"]);
    let mut leader = Proc::spawn("coordctl elect (auth)", cmd);
    leader.line();
    assert_eq!(leader.line(), "p");
    leader.signal(Signal::SIGINT);
    assert_eq!(leader.code(), 0, "{}", leader.stderr());

    let mut cmd = coordctl_on(&server.endpoints());
    cmd.args(["--user", "root:wrong", "leader", &name]);
    let (code, _, err) = output(cmd);
    assert_eq!(code, Some(1), "{err}");
    one_line(&err);
    assert!(
        !err.contains("wrong"),
        "the password must not be shown: {err}"
    );

    let mut cmd = coordctl_on(&server.endpoints());
    cmd.args(["leader", &name]);
    let (code, _, err) = output(cmd);
    assert_eq!(code, Some(1), "no credentials: {err}");
    one_line(&err);
}

/// `coordctl` on a PostgreSQL URL, or `None` when there is no PostgreSQL and skipping is allowed.
async fn postgres() -> Option<pg_harness::TestPostgres> {
    pg_harness::postgres_for_tests().await
}

fn coordctl_pg(pg: &pg_harness::TestPostgres) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordctl"));
    cmd.arg("--endpoints").arg(pg.url());
    cmd
}

/// Two coordctl processes on one PostgreSQL exclude each other: their commands never overlap,
/// the second's fencing token is higher, and nothing is left in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordctl_processes_exclude_each_other_on_postgres() {
    let Some(pg) = postgres().await else { return };
    let name = unique("pg-lock");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = format!(
        r#"echo "start $COORD_FENCING_TOKEN" >> {log}; sleep 0.4; echo "end $COORD_FENCING_TOKEN" >> {log}"#,
        log = log.display()
    );
    let mut runs: Vec<Proc> = (0..2)
        .map(|i| {
            let mut cmd = coordctl_pg(&pg);
            cmd.args(["lock", &name, "--", "sh", "-c", &script]);
            Proc::spawn(&format!("coordctl lock #{i} on PostgreSQL"), cmd)
        })
        .collect();
    for run in &mut runs {
        assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
    }
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let tokens: Vec<i64> = lines
        .iter()
        .map(|l| l.split_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(
        lines[0].starts_with("start")
            && lines[1].starts_with("end")
            && lines[2].starts_with("start")
            && lines[3].starts_with("end")
            && tokens[0] == tokens[1]
            && tokens[2] == tokens[3]
            && tokens[2] > tokens[0],
        "the commands overlapped or tokens did not rise: {lines:?}"
    );
    let backend = coord_postgres::PostgresConfig::new(pg.url())
        .connect()
        .await
        .unwrap();
    let left = backend
        .range(RangeRequest::prefix(format!("{name}/")))
        .await
        .unwrap();
    assert!(left.kvs.is_empty(), "keys left: {:?}", left.kvs);
}

/// An election on PostgreSQL: `coordctl elect` leads, `coordctl leader` prints it, and a second
/// candidate takes over when the first resigns on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_and_leader_on_postgres() {
    let Some(pg) = postgres().await else { return };
    let name = unique("pg-elect");
    let mut cmd = coordctl_pg(&pg);
    cmd.args(["elect", &name, "first"]);
    let mut leader = Proc::spawn("coordctl elect first", cmd);
    assert!(leader.line().starts_with(&format!("{name}/")));
    assert_eq!(leader.line(), "first");
    let mut cmd = coordctl_pg(&pg);
    cmd.args(["elect", &name, "second"]);
    let mut follower = Proc::spawn("coordctl elect second", cmd);
    follower.silent_for(Duration::from_millis(300));
    let mut cmd = coordctl_pg(&pg);
    cmd.args(["leader", &name]);
    let mut shown = Proc::spawn("coordctl leader", cmd);
    assert_eq!(shown.line(), "first");
    assert_eq!(shown.code(), 0);
    leader.signal(Signal::SIGTERM);
    assert_eq!(leader.code(), 0, "stderr: {}", leader.stderr());
    assert!(follower.line().starts_with(&format!("{name}/")));
    assert_eq!(follower.line(), "second");
    follower.signal(Signal::SIGTERM);
    assert_eq!(follower.code(), 0, "stderr: {}", follower.stderr());
}

/// Mixing a PostgreSQL URL with etcd endpoints, or etcd-only flags with a URL, is a usage error.
#[test]
fn postgres_url_misuse_is_a_usage_error() {
    for args in [
        vec![
            "--endpoints",
            "postgres://u@127.0.0.1:1/db,127.0.0.1:2379",
            "leader",
            "x",
        ],
        vec![
            "--endpoints",
            "postgres://u@127.0.0.1:1/db",
            "--user",
            "a:b",
            "leader",
            "x",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_coordctl"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

/// The Prometheus text served at `addr`, fetched over plain HTTP/1.0.
fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::Write;
    let mut conn = std::net::TcpStream::connect(addr).expect("connect to --metrics-addr");
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("read the scrape");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
}

/// The value of the series `name` whose labels include every `label="value"` of `labels`.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(id, _)| {
            id.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| id.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse().expect("a number"))
}

/// A loopback address nothing listens on now.
fn free_addr() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_addr_serves_the_held_gauge_while_the_lock_is_held() {
    let Some(etcd) = etcd().await else { return };
    let name = unique("metrics");
    let addr = free_addr();
    let mut cmd = coordctl(&etcd);
    cmd.arg("--metrics-addr").arg(addr.to_string()).args([
        "lock",
        &name,
        "--",
        "sh",
        "-c",
        "echo held; sleep 30",
    ]);
    let mut run = Proc::spawn("coordctl --metrics-addr lock -- sleep", cmd);
    assert_eq!(run.line(), "held");

    let text = scrape(addr);
    let lock = [("primitive", "mutex"), ("name", name.as_str())];
    assert_eq!(series(&text, "coord_held", &lock), Some(1.0), "{text}");
    assert_eq!(
        series(&text, "coord_acquisitions_total", &lock),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(&text, "coord_acquire_wait_seconds_count", &lock),
        Some(1.0),
        "{text}"
    );
    assert!(
        series(&text, "coord_backend_call_seconds_count", &[("op", "txn")]) >= Some(1.0),
        "the lock's txn: {text}"
    );

    // Released on SIGTERM: nothing is left held.
    run.signal(Signal::SIGTERM);
    run.wait();
    let backend = backend(&etcd).await;
    assert!(keys(&backend, &name).await.is_empty());
}

#[test]
fn an_unusable_metrics_addr_is_one_line_of_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_coordctl"))
        .args(["--endpoints", "127.0.0.1:1", "--metrics-addr"])
        .arg(taken.local_addr().unwrap().to_string())
        .args(["leader", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    one_line(&String::from_utf8_lossy(&out.stderr));
}
