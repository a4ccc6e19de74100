//! One PostgreSQL server: initdb, start, readiness wait, stop/kill/pause/resume/restart, psql,
//! cleanup on drop.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::bins::{is_ci, postgres_bin_dir, psql_binary};
use crate::command::Running;
use crate::error::HarnessError;
use crate::options::{quote_literal, PgOptions};
use crate::process::{
    children_of, clean_env, free_port, is_gone, is_stopped_or_gone, log_tail, signal, spawn,
    wait_until, RunAs,
};

/// The password user that [`PgServer::url`] names; it owns [`DATABASE`].
const USER: &str = "coord";
/// [`USER`]'s password.
const PASSWORD: &str = "coord";
/// The database of [`PgServer::url`].
const DATABASE: &str = "coord";
/// The superuser (`initdb -U`), trusted on the socket and on loopback.
const SUPERUSER: &str = "postgres";

/// `initdb` of a fresh cluster takes about a second; give a loaded machine room.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// A `psql` run by [`PgServer::psql`] and friends (it waits at most this on a paused server).
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `pg_hba.conf`: the socket (the harness's psql) and the superuser on loopback are trusted;
/// everyone else gives a password, so tests exercise password authentication through
/// [`PgServer::url`].
const PG_HBA: &str = "\
# Written by pg-harness.
# TYPE  DATABASE  USER      ADDRESS       METHOD
local   all       all                     trust
host    all       postgres  127.0.0.1/32  trust
host    all       all       127.0.0.1/32  scram-sha-256
";

/// A running PostgreSQL server on `127.0.0.1`, with its cluster (data dir, socket, log) in a
/// temp dir. It has a superuser `postgres` (no password; [`PgServer::superuser_url`]) and a
/// password user `coord` (password `coord`) owning a database `coord` ([`PgServer::url`]).
/// Dropping it shuts the server down at once (`SIGQUIT`, an immediate shutdown; `SIGKILL`
/// after 5 s), waits for it (no zombie), and removes the directory.
///
/// The postmaster is a direct child of the test process, not daemonized by `pg_ctl`, so that
/// it carries a parent-death signal; when we are root it runs as the `postgres` OS user (see
/// the crate docs). Process control takes `&self`, so a server can be shared between tasks.
#[derive(Debug)]
pub struct PgServer {
    bin_dir: PathBuf,
    run_as: RunAs,
    /// The temp dir's path: the sockets live here, next to `data/` and `postgres.log`.
    root: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    startup_timeout: Duration,
    child: Mutex<Option<Child>>,
    /// The log's length when the current process was spawned: what it wrote comes after.
    log_offset: AtomicU64,
    // Dropped after `drop` killed the server.
    dir: Option<TempDir>,
}

impl PgServer {
    /// Starts a server with default options and waits until it accepts connections.
    pub async fn start() -> Result<PgServer, HarnessError> {
        Self::start_with(PgOptions::new()).await
    }

    /// Runs `initdb` (as the `postgres` OS user when we are root) in a new temp dir, starts
    /// `postgres` on a free loopback port with `options`, waits until it accepts connections
    /// (at most the startup timeout), and creates the `coord` user and database. The port is
    /// picked by binding port 0; when postgres then finds it taken, it is retried on a new one.
    pub async fn start_with(options: PgOptions) -> Result<PgServer, HarnessError> {
        let bin_dir = postgres_bin_dir().ok_or_else(|| {
            HarnessError::new(
                "PostgreSQL binaries not found (set PG_BIN_DIR or install postgresql)",
            )
        })?;
        let run_as = RunAs::detect()?;
        let dir = tempfile::Builder::new()
            .prefix("pg-harness-")
            .tempdir()
            .map_err(|e| HarnessError::new("creating a temp dir").with_source(e))?;
        run_as.chown(dir.path()).map_err(|e| {
            HarnessError::new(format!("handing {} to postgres", dir.path().display()))
                .with_source(e)
        })?;
        let root = dir.path().to_path_buf();
        let data_dir = root.join("data");
        initdb(&bin_dir, run_as, &root, &data_dir).await?;
        configure(&data_dir, &options)?;

        let mut last_err = None;
        for _attempt in 0..5 {
            let port =
                free_port().map_err(|e| HarnessError::new("picking a port").with_source(e))?;
            let server = PgServer {
                bin_dir: bin_dir.clone(),
                run_as,
                root: root.clone(),
                data_dir: data_dir.clone(),
                log_path: root.join("postgres.log"),
                port,
                startup_timeout: options.startup_timeout(),
                child: Mutex::new(None),
                log_offset: AtomicU64::new(0),
                dir: None,
            };
            server.spawn_process()?;
            match server.wait_ready().await {
                Ok(()) => {
                    let mut server = server;
                    if let Err(e) = server.create_user_and_database().await {
                        server.kill();
                        // Keep the log for the reader: the temp dir would delete it.
                        let _ = dir.keep();
                        return Err(e);
                    }
                    server.dir = Some(dir);
                    return Ok(server);
                }
                Err(e) if server.log_says_port_taken() => {
                    server.kill();
                    last_err = Some(e);
                }
                Err(e) => {
                    server.kill();
                    let _ = dir.keep();
                    return Err(e);
                }
            }
        }
        let _ = dir.keep();
        Err(last_err.unwrap_or_else(|| HarnessError::new("could not start postgres")))
    }

    /// [`PgServer::start`], or `None` after a printed notice when the PostgreSQL binaries are
    /// not installed. Under `CI=true` missing binaries panic; a server that does not start
    /// always panics, with its log.
    pub async fn start_or_skip() -> Option<PgServer> {
        Self::start_or_skip_with(PgOptions::new()).await
    }

    /// [`PgServer::start_or_skip`] with options.
    pub async fn start_or_skip_with(options: PgOptions) -> Option<PgServer> {
        if !crate::require_postgres_binaries() {
            debug_assert!(!is_ci());
            return None;
        }
        match Self::start_with(options).await {
            Ok(server) => Some(server),
            Err(e) => panic!("could not start postgres: {e}"),
        }
    }

    /// The URL for the code under test: the password user `coord` on the database `coord`,
    /// `postgres://coord:coord@127.0.0.1:PORT/coord?sslmode=disable` (append
    /// `&application_name=…` and other parameters as needed).
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DATABASE}?sslmode=disable",
            self.port
        )
    }

    /// The superuser's URL, `postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable` (no
    /// password: the superuser is trusted on loopback).
    pub fn superuser_url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{SUPERUSER}?sslmode=disable",
            self.port
        )
    }

    /// The TCP port on `127.0.0.1` (kept across [`PgServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id (the first line of `postmaster.pid`), while it runs (or is
    /// paused).
    pub fn pid(&self) -> Option<u32> {
        let mut guard = self.lock();
        match guard.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => guard.as_ref().map(Child::id),
            _ => None,
        }
    }

    /// Whether the server runs (or is paused).
    pub fn is_running(&self) -> bool {
        let mut guard = self.lock();
        match guard.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                *guard = None;
                false
            }
            None => false,
        }
    }

    /// The data directory (kept across [`PgServer::restart`], [`PgServer::stop`] and
    /// [`PgServer::kill`]).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file postgres's stderr and stdout go to (appended to across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// Runs `sql` as the superuser in the database `coord` through the `psql` binary (over the
    /// server's Unix socket), to look at or change the state from outside the code under test.
    /// Statements run one after the other, each in its own transaction, and the first error
    /// stops the run (and is returned). Returns the rows of every statement, one a line, columns
    /// separated by `|`, without headers or command tags (`psql -X -q -A -t`).
    ///
    /// Blocks the calling thread while psql runs (milliseconds; on a paused server up to 60 s,
    /// then it fails).
    pub fn psql(&self, sql: &str) -> Result<String, HarnessError> {
        self.psql_in(DATABASE, sql)
    }

    /// [`PgServer::psql`] in another database, e.g. `postgres`.
    pub fn psql_in(&self, database: &str, sql: &str) -> Result<String, HarnessError> {
        Running::start(
            "psql",
            self.psql_command(database),
            Some(sql.into()),
            PSQL_TIMEOUT,
        )?
        .wait_blocking()?
        .stdout_if_ok("psql")
    }

    /// Terminates the client connections to the database `coord` (every one, whoever holds
    /// it; not autovacuum workers), or only those whose `application_name` is `LIKE` the
    /// pattern (e.g. `Some("worker-%")`), with `pg_terminate_backend` run by the superuser;
    /// waits (at most 10 s) until they are gone and returns how many there were. Clients see
    /// their connection closed by the server, as after an administrator's
    /// `pg_terminate_backend` or a pooler's recycling.
    ///
    /// Blocks the calling thread while it runs (see [`PgServer::psql`]).
    pub fn terminate_backends(
        &self,
        application_name_like: Option<&str>,
    ) -> Result<u64, HarnessError> {
        let mut filter = format!(
            "backend_type = 'client backend' AND datname = {}",
            quote_literal(DATABASE)
        );
        if let Some(pattern) = application_name_like {
            filter.push_str(&format!(
                " AND application_name LIKE {}",
                quote_literal(pattern)
            ));
        }
        // MATERIALIZED: every selected backend is terminated exactly once, whatever the planner
        // would do with a volatile function in a filter.
        let sql = format!(
            "WITH t AS MATERIALIZED (\
               SELECT pid, pg_terminate_backend(pid) AS ok FROM pg_stat_activity \
               WHERE pid <> pg_backend_pid() AND {filter}) \
             SELECT pid FROM t WHERE ok;"
        );
        let pids: Vec<String> = self
            .psql_in(SUPERUSER, &sql)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if pids.is_empty() {
            return Ok(0);
        }
        let left = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE pid IN ({});",
            pids.join(",")
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.psql_in(SUPERUSER, &left)?.trim() == "0" {
                return Ok(pids.len() as u64);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::new(format!(
                    "backends {} still there 10 s after pg_terminate_backend",
                    pids.join(",")
                ))
                .with_log(&self.log_path));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server with a fast shutdown (`SIGINT` to the postmaster, what
    /// `pg_ctl stop -m fast` sends: open transactions roll back, connections close, a checkpoint
    /// is written) and waits for it; after 30 s it is killed. A paused server is resumed first.
    /// The data dir stays, for [`PgServer::start_again`].
    pub async fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        self.resume();
        signal(pid, Signal::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.kill();
    }

    /// Kills the server like a crash of its machine: `SIGKILL` to the postmaster and to every
    /// backend and auxiliary process (frozen first, so none is forked meanwhile), then waits
    /// until they are gone. Open connections break at once; nothing is flushed that was not
    /// already. The data dir stays: [`PgServer::start_again`] runs crash recovery on it.
    pub fn kill(&self) {
        let Some(mut child) = self.lock().take() else {
            return;
        };
        let pid = child.id();
        if matches!(child.try_wait(), Ok(None)) {
            // Frozen, the postmaster forks no backend between our look at /proc and its death.
            signal(pid, Signal::SIGSTOP);
            wait_until(Duration::from_secs(1), || is_stopped_or_gone(pid));
            let backends = children_of(pid);
            let _ = child.kill();
            let _ = child.wait();
            for &b in &backends {
                signal(b, Signal::SIGKILL);
            }
            wait_until(Duration::from_secs(5), || {
                backends.iter().all(|&b| is_gone(b))
            });
        } else {
            let _ = child.wait();
        }
    }

    /// Freezes the server (`SIGSTOP` to the postmaster, then, once it is stopped and can fork
    /// no more, to every backend and auxiliary process): connections stay open, nothing answers,
    /// neither on existing connections nor on new ones (the kernel still completes TCP
    /// handshakes). Returns once the kernel reports them all stopped (at most a second).
    pub fn pause(&self) {
        let Some(pid) = self.pid() else { return };
        signal(pid, Signal::SIGSTOP);
        wait_until(Duration::from_secs(1), || is_stopped_or_gone(pid));
        let backends = children_of(pid);
        for &b in &backends {
            signal(b, Signal::SIGSTOP);
        }
        wait_until(Duration::from_secs(1), || {
            backends.iter().all(|&b| is_stopped_or_gone(b))
        });
    }

    /// Continues a paused server (`SIGCONT` to its backends and the postmaster).
    pub fn resume(&self) {
        let Some(pid) = self.pid() else { return };
        for b in children_of(pid) {
            signal(b, Signal::SIGCONT);
        }
        signal(pid, Signal::SIGCONT);
    }

    /// Stops the server if it runs (fast shutdown, [`PgServer::stop`]) and starts it again on
    /// the same port and data dir, like `pg_ctl restart -m fast`; returns once it accepts
    /// connections again. Clients must reconnect.
    pub async fn restart(&self) -> Result<(), HarnessError> {
        self.stop().await;
        self.start_again().await
    }

    /// Starts a stopped or killed server again on the same port and data dir (after a kill,
    /// with crash recovery) and waits until it accepts connections.
    pub async fn start_again(&self) -> Result<(), HarnessError> {
        let mut last = None;
        // The old processes' shared memory or port may linger for a moment: retry a few times.
        for _ in 0..10 {
            self.spawn_process()?;
            match self.wait_ready().await {
                Ok(()) => return Ok(()),
                Err(e) if !self.is_running() => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    self.kill();
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::new("could not start postgres again")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn psql_command(&self, database: &str) -> Command {
        let mut cmd = Command::new(psql_binary(&self.bin_dir));
        cmd.arg("-X") // no ~/.psqlrc
            .args(["-q", "-A", "-t"])
            .args(["-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.root)
            .args(["-p", &self.port.to_string()])
            .args(["-U", SUPERUSER])
            .args(["-d", database])
            .args(["-f", "-"]);
        clean_env(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "pg-harness");
        cmd
    }

    fn spawn_process(&self) -> Result<(), HarnessError> {
        let mut guard = self.lock();
        if let Some(child) = guard.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                return Err(HarnessError::new("postgres is already running"));
            }
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| HarnessError::new("opening the postgres log").with_source(e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| HarnessError::new("opening the postgres log").with_source(e))?;
        self.log_offset.store(
            log.metadata().map(|m| m.len()).unwrap_or(0),
            Ordering::Relaxed,
        );
        let mut cmd = Command::new(self.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("port={}", self.port)])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.root.display()))
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log2))
            .stderr(Stdio::from(log));
        clean_env(&mut cmd);
        self.run_as.apply(&mut cmd);
        let child =
            spawn(cmd).map_err(|e| HarnessError::new("spawning postgres").with_source(e))?;
        *guard = Some(child);
        Ok(())
    }

    /// What the current process wrote to the log so far.
    fn log_since_spawn(&self) -> String {
        let offset = self.log_offset.load(Ordering::Relaxed);
        let text = std::fs::read(&self.log_path).unwrap_or_default();
        let start = (offset as usize).min(text.len());
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    fn log_says_port_taken(&self) -> bool {
        let log = self.log_since_spawn();
        log.contains("could not bind") || log.contains("Address already in use")
    }

    /// Waits until the postmaster we spawned reports `ready` in `postmaster.pid` (what
    /// `pg_ctl start -w` waits for: it accepts connections). Fails early when it exits.
    async fn wait_ready(&self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + self.startup_timeout;
        let pid_file = self.data_dir.join("postmaster.pid");
        loop {
            let pid = {
                let mut guard = self.lock();
                match guard.as_mut().map(|c| (c.id(), c.try_wait())) {
                    Some((pid, Ok(None))) => pid,
                    Some((_, Ok(Some(status)))) => {
                        *guard = None;
                        return Err(HarnessError::new(format!(
                            "postgres exited during startup ({status})"
                        ))
                        .with_log(&self.log_path));
                    }
                    _ => {
                        return Err(
                            HarnessError::new("postgres is not running").with_log(&self.log_path)
                        )
                    }
                }
            };
            // Lines: pid, data dir, start time, port, socket dir, listen address, shared
            // memory key, status. A killed server's file says `ready` too: the pid tells ours.
            let contents = std::fs::read_to_string(&pid_file).unwrap_or_default();
            let lines: Vec<&str> = contents.lines().collect();
            if lines.first().map(|l| l.trim()) == Some(pid.to_string().as_str())
                && lines.get(7).map(|l| l.trim()) == Some("ready")
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::new(format!(
                    "postgres not accepting connections within {:?}",
                    self.startup_timeout
                ))
                .with_log(&self.log_path));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Creates the password user and its database, and checks that the URL of
    /// [`PgServer::url`] works (TCP, password) with one `SELECT`.
    async fn create_user_and_database(&self) -> Result<(), HarnessError> {
        let setup = format!(
            "CREATE ROLE {USER} LOGIN PASSWORD {};\nCREATE DATABASE {DATABASE} OWNER {USER};\n",
            quote_literal(PASSWORD)
        );
        Running::start(
            "psql (creating the coord user)",
            self.psql_command(SUPERUSER),
            Some(setup),
            PSQL_TIMEOUT,
        )?
        .wait()
        .await?
        .stdout_if_ok("psql (creating the coord user)")
        .map_err(|e| e.with_log(&self.log_path))?;
        let mut check = Command::new(psql_binary(&self.bin_dir));
        check
            .args(["-X", "-q", "-A", "-t", "-c", "SELECT 1"])
            .arg(self.url());
        clean_env(&mut check);
        check.env("PGCONNECT_TIMEOUT", "10");
        let out = Running::start("psql (checking the URL)", check, None, PSQL_TIMEOUT)?
            .wait()
            .await?
            .stdout_if_ok("psql (connecting with the password URL)")
            .map_err(|e| e.with_log(&self.log_path))?;
        if out.trim() != "1" {
            return Err(HarnessError::new(format!(
                "psql on the password URL answered {out:?} to SELECT 1"
            )));
        }
        Ok(())
    }
}

impl Drop for PgServer {
    /// An immediate shutdown (`SIGQUIT`, `pg_ctl stop -m immediate`: no checkpoint, the data
    /// is thrown away anyway), so that the postmaster reaps its own backends: killed directly,
    /// they would be orphans, left as zombies where nobody reaps them (a container whose
    /// init does not). A server that is not gone within 5 s is killed.
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            self.resume();
            signal(pid, Signal::SIGQUIT);
            wait_until(Duration::from_secs(5), || !self.is_running());
        }
        self.kill();
    }
}

/// `initdb` of a new cluster in `data_dir`, as `run_as`: superuser `postgres`, UTF-8, locale
/// `C` (the same on every machine). `--no-sync` only skips flushing the fresh files at the
/// end (a throw-away cluster); the server itself keeps `fsync` on.
async fn initdb(
    bin_dir: &Path,
    run_as: RunAs,
    root: &Path,
    data_dir: &Path,
) -> Result<(), HarnessError> {
    let mut cmd = Command::new(bin_dir.join("initdb"));
    cmd.arg("-D")
        .arg(data_dir)
        .args(["-U", SUPERUSER])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .args(["--encoding=UTF8", "--locale=C", "--no-sync"])
        // initdb looks for `postgres` from the current directory: one it can read.
        .current_dir(root);
    clean_env(&mut cmd);
    run_as.apply(&mut cmd);
    let done = Running::start("initdb", cmd, None, INITDB_TIMEOUT)?
        .wait()
        .await?;
    if !done.status.success() {
        return Err(HarnessError::new(format!(
            "initdb failed ({}):\n{}{}",
            done.status, done.stdout, done.stderr
        )));
    }
    Ok(())
}

/// Writes `pg_hba.conf` and appends the settings to `postgresql.conf` (both files stay owned
/// by the user initdb ran as: they are rewritten in place).
fn configure(data_dir: &Path, options: &PgOptions) -> Result<(), HarnessError> {
    let write = |name: &str, contents: &str, append: bool| {
        let path = data_dir.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .map_err(|e| HarnessError::new(format!("opening {}", path.display())).with_source(e))?;
        std::io::Write::write_all(&mut file, contents.as_bytes())
            .map_err(|e| HarnessError::new(format!("writing {}", path.display())).with_source(e))
    };
    write("pg_hba.conf", PG_HBA, false)?;
    write("postgresql.conf", &options.conf_lines(), true)
}
