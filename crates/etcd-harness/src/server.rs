//! One etcd process: start, health wait, stop/kill/pause/resume/restart, cleanup on drop.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::error::HarnessError;
use crate::process::{etcd_binary, free_ports, is_ci, log_tail, spawn};
use crate::tls::TlsFiles;

/// How long [`EtcdServer::start`] waits for a healthy server unless told otherwise.
const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How etcd processes are started: TLS, extra flags, startup deadline.
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    tls: Option<TlsFiles>,
    generate_tls: bool,
    client_cert_auth: bool,
    args: Vec<String>,
    startup_timeout: Option<Duration>,
}

impl EtcdOptions {
    /// Plain HTTP on the client port, no extra flags, a 20 s startup deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve clients over TLS with these certificates (server cert, key and CA).
    pub fn with_tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Serve clients over TLS with certificates generated into the server's temp dir (see
    /// [`EtcdServer::tls`] for their paths).
    pub fn with_generated_tls(mut self) -> Self {
        self.generate_tls = true;
        self
    }

    /// Require clients to present a certificate signed by the CA (`--client-cert-auth`).
    pub fn with_client_cert_auth(mut self) -> Self {
        self.client_cert_auth = true;
        self
    }

    /// Adds one command-line flag, e.g. `--auto-compaction-retention=1`.
    pub fn with_arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds command-line flags.
    pub fn with_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--quota-backend-bytes`.
    pub fn with_quota_backend_bytes(self, bytes: u64) -> Self {
        self.with_arg(format!("--quota-backend-bytes={bytes}"))
    }

    /// `--auto-compaction-retention` (hours, or revisions with
    /// `--auto-compaction-mode=revision` as an extra arg).
    pub fn with_auto_compaction_retention(self, retention: impl std::fmt::Display) -> Self {
        self.with_arg(format!("--auto-compaction-retention={retention}"))
    }

    /// How long to wait for the server to answer after it was spawned.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = Some(timeout);
        self
    }

    pub(crate) fn startup_timeout(&self) -> Duration {
        self.startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT)
    }

    pub(crate) fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    pub(crate) fn generates_tls(&self) -> bool {
        self.generate_tls
    }

    pub(crate) fn requires_client_cert(&self) -> bool {
        self.client_cert_auth
    }

    pub(crate) fn extra_args(&self) -> &[String] {
        &self.args
    }
}

/// What a member needs to be (re)started.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub(crate) name: String,
    pub(crate) data_dir: PathBuf,
    pub(crate) log_path: PathBuf,
    pub(crate) client_port: u16,
    pub(crate) peer_port: u16,
    pub(crate) initial_cluster: String,
    pub(crate) cluster_token: String,
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) client_cert_auth: bool,
    pub(crate) args: Vec<String>,
}

impl Spec {
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn command(&self, binary: &Path) -> Command {
        let client_url = format!("{}://127.0.0.1:{}", self.scheme(), self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token={}", self.cluster_token));
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca_cert.display()));
            if self.client_cert_auth {
                cmd.arg("--client-cert-auth");
            }
        }
        cmd.args(&self.args);
        // etcd reads every ETCD_* variable as a flag: keep the test's own (ETCD_ENDPOINTS, …) out.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(key);
            }
        }
        cmd
    }
}

fn unique_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "harness-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running etcd process on `127.0.0.1`, with its data in a temp dir. Dropping it kills the
/// process (`SIGKILL`, then wait: no zombie) and removes the directory.
///
/// Process control takes `&self`, so a server can be shared between tasks.
#[derive(Debug)]
pub struct EtcdServer {
    spec: Spec,
    binary: PathBuf,
    startup_timeout: Duration,
    child: Mutex<Option<Child>>,
    member_id: AtomicU64,
    // Dropped after `drop` killed the process.
    dir: Option<TempDir>,
}

impl EtcdServer {
    /// Starts a single-member etcd with default options and waits until it serves requests.
    pub async fn start() -> Result<EtcdServer, HarnessError> {
        Self::start_with(EtcdOptions::new()).await
    }

    /// Starts a single-member etcd with `options` and waits until it serves requests (at most
    /// the startup timeout). Free ports are picked by binding port 0; when etcd then finds one
    /// taken, it is retried on new ports.
    pub async fn start_with(options: EtcdOptions) -> Result<EtcdServer, HarnessError> {
        let binary = etcd_binary().ok_or_else(|| {
            HarnessError::new("etcd binary not found (set ETCD_BIN or put etcd on PATH)")
        })?;
        let dir = tempfile::Builder::new()
            .prefix("etcd-harness-")
            .tempdir()
            .map_err(|e| HarnessError::new("creating a temp dir").with_source(e))?;
        let tls = match (&options.tls, options.generate_tls) {
            (Some(files), _) => Some(files.clone()),
            (None, true) => Some(TlsFiles::generate(&dir.path().join("tls"))?),
            (None, false) => None,
        };
        let mut last_err = None;
        for _attempt in 0..5 {
            let ports =
                free_ports(2).map_err(|e| HarnessError::new("picking ports").with_source(e))?;
            let name = "etcd0".to_string();
            let spec = Spec {
                initial_cluster: format!("{name}=http://127.0.0.1:{}", ports[1]),
                name,
                data_dir: dir.path().join("data"),
                log_path: dir.path().join("etcd.log"),
                client_port: ports[0],
                peer_port: ports[1],
                cluster_token: unique_token(),
                tls: tls.clone(),
                client_cert_auth: options.client_cert_auth,
                args: options.args.clone(),
            };
            let server = EtcdServer::new(spec, binary.clone(), options.startup_timeout(), None);
            server.spawn_process()?;
            match server.wait_healthy().await {
                Ok(()) => {
                    let mut server = server;
                    server.dir = Some(dir);
                    return Ok(server);
                }
                Err(e) if server.log_says_address_in_use() => {
                    server.kill();
                    let _ = std::fs::remove_dir_all(&server.spec.data_dir);
                    last_err = Some(e);
                }
                Err(e) => {
                    server.kill();
                    // Keep the log for the reader: the temp dir would delete it.
                    let _ = dir.keep();
                    return Err(e);
                }
            }
        }
        let _ = dir.keep();
        Err(last_err.unwrap_or_else(|| HarnessError::new("could not start etcd")))
    }

    /// [`EtcdServer::start`], or `None` after a printed notice when no etcd binary is
    /// installed. Under `CI=true` a missing binary panics; a server that does not start always
    /// panics, with its log.
    pub async fn start_or_skip() -> Option<EtcdServer> {
        Self::start_or_skip_with(EtcdOptions::new()).await
    }

    /// [`EtcdServer::start_or_skip`] with options.
    pub async fn start_or_skip_with(options: EtcdOptions) -> Option<EtcdServer> {
        if !crate::require_etcd_binary() {
            debug_assert!(!is_ci());
            return None;
        }
        match Self::start_with(options).await {
            Ok(server) => Some(server),
            Err(e) => panic!("could not start etcd: {e}"),
        }
    }

    pub(crate) fn new(
        spec: Spec,
        binary: PathBuf,
        startup_timeout: Duration,
        dir: Option<TempDir>,
    ) -> Self {
        EtcdServer {
            spec,
            binary,
            startup_timeout,
            child: Mutex::new(None),
            member_id: AtomicU64::new(0),
            dir,
        }
    }

    /// The member's name (`etcd0` for a single server, `m0`… in a cluster).
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The client endpoint, `127.0.0.1:PORT` (no scheme; see [`EtcdServer::client_url`]).
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.spec.client_port)
    }

    /// The client endpoints (one).
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    /// The client URL with its scheme: `http://127.0.0.1:PORT` or `https://…` with TLS.
    pub fn client_url(&self) -> String {
        format!("{}://{}", self.spec.scheme(), self.endpoint())
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.spec.client_port
    }

    /// The data directory (kept across [`EtcdServer::restart`]).
    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }

    /// The file etcd's stderr and stdout go to (appended to across restarts).
    pub fn log_path(&self) -> &Path {
        &self.spec.log_path
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.spec.log_path, lines)
    }

    /// The certificates, when the server serves TLS.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.spec.tls.as_ref()
    }

    /// The process id, while the process runs (or is paused).
    pub fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(Child::id)
    }

    /// Whether the process runs (or is paused).
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

    /// The raft member id (known once the server was healthy).
    pub fn member_id(&self) -> u64 {
        self.member_id.load(Ordering::Relaxed)
    }

    /// A connected `etcd-client` for setup work in tests (TLS and client cert as configured).
    pub async fn client(&self) -> Result<Client, HarnessError> {
        self.client_with(None).await
    }

    /// Like [`EtcdServer::client`], authenticating as `user` with `password`.
    pub async fn client_as(&self, user: &str, password: &str) -> Result<Client, HarnessError> {
        self.client_with(Some((user, password))).await
    }

    async fn client_with(&self, user: Option<(&str, &str)>) -> Result<Client, HarnessError> {
        let mut options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        if let Some((user, password)) = user {
            options = options.with_user(user, password);
        }
        if let Some(tls) = &self.spec.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        let connect = Client::connect([self.client_url()], Some(options));
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(HarnessError::new("connecting to etcd").with_source(e)),
            Err(_) => Err(HarnessError::new("connecting to etcd timed out")),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn spawn_process(&self) -> Result<(), HarnessError> {
        let mut guard = self.lock();
        if let Some(child) = guard.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                return Err(HarnessError::new(format!(
                    "{} is already running",
                    self.name()
                )));
            }
        }
        std::fs::create_dir_all(self.spec.log_path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| HarnessError::new("creating the log dir").with_source(e))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log_path)
            .map_err(|e| HarnessError::new("opening the etcd log").with_source(e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| HarnessError::new("opening the etcd log").with_source(e))?;
        let mut cmd = self.spec.command(&self.binary);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log2))
            .stderr(Stdio::from(log));
        let child = spawn(cmd).map_err(|e| {
            HarnessError::new(format!("spawning {}", self.binary.display())).with_source(e)
        })?;
        *guard = Some(child);
        Ok(())
    }

    fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.lock();
        match guard.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => {
                *guard = None;
                Some(status)
            }
            _ => None,
        }
    }

    fn log_says_address_in_use(&self) -> bool {
        std::fs::read_to_string(&self.spec.log_path)
            .map(|s| s.contains("address already in use"))
            .unwrap_or(false)
    }

    /// Waits until the member answers `Status` with a leader and a read (a permission error
    /// counts as an answer). Fails early when the process exits.
    pub(crate) async fn wait_healthy(&self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + self.startup_timeout;
        let mut client: Option<Client> = None;
        let mut last = String::from("no answer yet");
        loop {
            if let Some(status) = self.exited() {
                return Err(HarnessError::new(format!(
                    "etcd {} exited during startup ({status})",
                    self.name()
                ))
                .with_log(&self.spec.log_path));
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::new(format!(
                    "etcd {} not healthy within {:?} (last: {last})",
                    self.name(),
                    self.startup_timeout
                ))
                .with_log(&self.spec.log_path));
            }
            if client.is_none() {
                match self.client().await {
                    Ok(c) => client = Some(c),
                    Err(e) => last = e.to_string(),
                }
            }
            if let Some(c) = client.as_mut() {
                match probe(c, self.spec.peer_port).await {
                    Ok(member_id) => {
                        self.member_id.store(member_id, Ordering::Relaxed);
                        return Ok(());
                    }
                    Err(e) => last = e,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process gracefully (`SIGTERM`, then `SIGKILL` after 10 s) and waits for it.
    /// The data dir stays, for [`EtcdServer::restart`].
    pub async fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        let pid = Pid::from_raw(pid as i32);
        let _ = kill(pid, Signal::SIGTERM);
        // A paused process handles SIGTERM only once continued.
        let _ = kill(pid, Signal::SIGCONT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited().is_some() || self.pid().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
    }

    /// Kills the process (`SIGKILL`) and reaps it. The data dir stays.
    pub fn kill(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (`SIGSTOP`): connections stay open, nothing answers. Returns once
    /// the kernel reports the process stopped (a signal is delivered asynchronously), or after
    /// a second at most.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
        let Some(pid) = self.pid() else { return };
        let deadline = Instant::now() + Duration::from_secs(1);
        while !is_stopped(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Continues a paused process (`SIGCONT`).
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// Stops the process if it runs, starts it again on the same ports and data dir, and waits
    /// until it is healthy (in a cluster: until it has a leader again).
    pub async fn restart(&self) -> Result<(), HarnessError> {
        self.stop().await;
        self.start_again().await
    }

    /// Starts a stopped or killed process again on the same ports and data dir.
    pub async fn start_again(&self) -> Result<(), HarnessError> {
        let mut last = None;
        // The old process's port may linger for a moment: retry a few times.
        for _ in 0..10 {
            self.spawn_process()?;
            match self.wait_healthy().await {
                Ok(()) => return Ok(()),
                Err(e) if self.exited().is_some() || self.pid().is_none() => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    self.kill();
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::new("could not restart etcd")))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn tls_options(tls: &TlsFiles) -> Result<TlsOptions, HarnessError> {
    let read = |p: &Path| {
        std::fs::read(p)
            .map_err(|e| HarnessError::new(format!("reading {}", p.display())).with_source(e))
    };
    Ok(TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read(&tls.ca_cert)?))
        .identity(Identity::from_pem(
            read(&tls.client_cert)?,
            read(&tls.client_key)?,
        )))
}

/// One health probe: `Status` with a leader, then a read. Returns the member id.
/// Asks the server on the client port whether it is up, has a leader and serves reads, and
/// whether it is *this* member (`peer_port`): while our process starts, another test's etcd
/// that took the same client port first could answer instead (ours then exits with "address in
/// use" and is started again on other ports).
async fn probe(client: &mut Client, peer_port: u16) -> Result<u64, String> {
    let step = Duration::from_millis(1000);
    let status = match tokio::time::timeout(step, client.status()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("status timed out".into()),
    };
    if status.leader() == 0 {
        return Err("no leader yet".into());
    }
    let member_id = status.header().map(|h| h.member_id()).unwrap_or(0);
    match tokio::time::timeout(step, client.member_list()).await {
        Ok(Ok(list)) => {
            let peer = format!(":{peer_port}");
            let ours = list
                .members()
                .iter()
                .any(|m| m.id() == member_id && m.peer_urls().iter().any(|u| u.ends_with(&peer)));
            if !ours {
                return Err(format!(
                    "member {member_id:x} on the client port is not the one with peer port \
                     {peer_port}: another etcd holds the port"
                ));
            }
        }
        // With auth on, the member list may be refused: the server answered, it is up.
        Ok(Err(etcd_client::Error::GRpcStatus(s)))
            if matches!(
                s.code(),
                tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
            ) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("member list timed out".into()),
    }
    match tokio::time::timeout(step, client.get("health", None)).await {
        Ok(Ok(_)) => Ok(member_id),
        // With auth on, an anonymous read is refused: the server answered, it is up.
        Ok(Err(etcd_client::Error::GRpcStatus(s)))
            if matches!(
                s.code(),
                tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
            ) =>
        {
            Ok(member_id)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("read timed out".into()),
    }
}

/// Whether `/proc` shows the process stopped by a signal (state `T`).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        // The state follows the command name, which is in parentheses and may hold spaces.
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('T'))
        })
        .unwrap_or(false)
}
