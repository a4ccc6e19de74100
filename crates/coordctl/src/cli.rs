//! The command line: global options, subcommands, and the parsing of durations.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};

/// Printed at the end of `--help`: what the exit status means.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0        success
  1        error (etcd unreachable, permission denied, ...)
  2        usage error (bad arguments or settings)
  3        --timeout passed while waiting for the lock or the leadership
  4        the lock or the leadership was lost while held (session expired, key deleted)
  5        `leader`: the election has no leader
  CMD's    `lock`/`rwlock`/`semaphore` with a command: the command's own exit code
  126/127  the command could not be run (not executable / not found)
  128+N    interrupted by signal N while connecting or waiting (130 for SIGINT, 129 for
           SIGHUP, 143 for SIGTERM), or the command was killed by signal N

Keys are laid out as etcd's Go `concurrency` package lays them out, so `coordctl lock` and
`etcdctl lock`, `coordctl elect` and `etcdctl elect`, share locks and elections.";

/// Distributed locks and leader elections on etcd, from the shell.
#[derive(Debug, Parser)]
#[command(name = "coordctl", version, after_long_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Connection and timing options, accepted before or after the subcommand.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every subcommand.
#[derive(Debug, Args)]
pub struct Global {
    /// etcd endpoints, comma-separated (host:port, http://… or https://…), or one PostgreSQL
    /// URL (postgres://user:password@host:port/db?sslmode=…).
    #[arg(
        long,
        global = true,
        env = "ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,

    /// Authenticate as USER, or USER:PASSWORD.
    #[arg(long, global = true, env = "ETCD_USER", hide_env_values = true)]
    pub user: Option<String>,

    /// Password for --user (when it does not include one).
    #[arg(long, global = true, env = "ETCD_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,

    /// CA certificate (PEM) to verify the servers with; turns TLS on.
    #[arg(long, global = true, env = "ETCD_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Client certificate (PEM); needs --key; turns TLS on.
    #[arg(long, global = true, env = "ETCD_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// Client private key (PEM) for --cert.
    #[arg(long, global = true, env = "ETCD_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// How long to try to reach the store before giving up (e.g. 2s, 500ms).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_positive_duration)]
    pub dial_timeout: Duration,

    /// Give up waiting for the lock or the leadership after this long (exit code 3). With
    /// `lock`/`rwlock`, 0 tries once without waiting.
    #[arg(long, global = true, value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Session TTL in seconds: how long a lock or leadership outlives a crashed coordctl.
    #[arg(long, global = true, default_value_t = 10)]
    pub ttl: i64,

    /// Serve Prometheus metrics (`coord_*`, labelled with the lock or election name) over HTTP
    /// on HOST:PORT while running, e.g. 127.0.0.1:9464.
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Acquire a named lock (as `etcdctl lock`).
    ///
    /// With a command: run it while holding the lock, with COORD_LOCK_KEY and
    /// COORD_FENCING_TOKEN in its environment, release the lock when it exits and exit with its
    /// exit code. SIGTERM and SIGHUP are passed on to it; a Ctrl-C reaches it directly (it runs
    /// in coordctl's process group). If the lock is lost meanwhile, the command and every
    /// process it started are killed (SIGKILL) at once and coordctl exits with 4. If coordctl
    /// dies, even of SIGKILL, the command is killed (SIGKILL, Linux).
    ///
    /// Without a command: print the lock key (one line) once acquired and hold the lock until
    /// SIGINT, SIGTERM or SIGHUP, then release it and exit 0 (4 if it was lost meanwhile).
    #[command(after_long_help = EXIT_CODES_HELP)]
    Lock(LockArgs),

    /// Take the read (shared) or write (exclusive) side of a named read-write lock.
    ///
    /// Keys are `NAME/read/…` and `NAME/write/…` (Go's `recipes.RWMutex` layout). The command,
    /// output and exit codes are as for `lock`.
    #[command(group(ArgGroup::new("side").required(true).args(["read", "write"])))]
    #[command(after_long_help = EXIT_CODES_HELP)]
    Rwlock(RwlockArgs),

    /// Take permits of a named counting semaphore (as `consul lock -n`): at most --permits
    /// are held at once by everyone using NAME.
    ///
    /// Waits until --weight permits are free for it, first come first served (a later request
    /// never overtakes an earlier one, even a smaller one). Keys are NAME/LEASE-N, valued
    /// WEIGHT/PERMITS; everyone using NAME must give the same --permits (another value is an
    /// error while the name is in use). The command, its environment (COORD_LOCK_KEY is the
    /// permit's key), output and exit codes are as for `lock`.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Semaphore(SemaphoreArgs),

    /// Campaign in a named election (as `etcdctl elect`), or watch its leaders (--listen).
    ///
    /// Campaigning: once elected, print the leader key and the proposal (two lines, as
    /// etcdctl), lead until SIGINT, SIGTERM or SIGHUP, then resign and exit 0 (4 if the
    /// leadership was lost meanwhile).
    ///
    /// --listen: print the key and value of the leader (two lines, as `etcdctl elect -l`), then
    /// the same again at every change of leader or of its value, until SIGINT, SIGTERM or
    /// SIGHUP.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Elect(ElectArgs),

    /// Print the value of the current leader of a named election (exit code 5 when none).
    #[command(after_long_help = EXIT_CODES_HELP)]
    Leader(LeaderArgs),
}

/// `coordctl lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock's name: its keys are NAME/LEASE (the session's lease id in hex).
    pub name: String,
    /// Command (and its arguments) to run while holding the lock; `--` before it is optional.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// `coordctl rwlock`.
#[derive(Debug, Args)]
pub struct RwlockArgs {
    /// Take the shared (read) side.
    #[arg(long, short)]
    pub read: bool,
    /// Take the exclusive (write) side.
    #[arg(long, short)]
    pub write: bool,
    /// The lock's name.
    pub name: String,
    /// Command (and its arguments) to run while holding the lock; `--` before it is optional.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// `coordctl semaphore`.
#[derive(Debug, Args)]
pub struct SemaphoreArgs {
    /// How many permits the semaphore has in all (the same for everyone using NAME).
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u32).range(1..))]
    pub permits: u32,
    /// How many of them to take (1 to --permits).
    #[arg(long, short, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub weight: u32,
    /// The semaphore's name.
    pub name: String,
    /// Command (and its arguments) to run while holding the permits; `--` before it is
    /// optional.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

/// `coordctl elect`.
#[derive(Debug, Args)]
pub struct ElectArgs {
    /// Watch the election's leaders instead of campaigning.
    #[arg(long, short)]
    pub listen: bool,
    /// The election's name: candidate keys are NAME/LEASE (the lease id in hex).
    pub name: String,
    /// The value to lead with (required unless --listen).
    #[arg(required_unless_present = "listen", conflicts_with = "listen")]
    pub proposal: Option<String>,
}

/// `coordctl leader`.
#[derive(Debug, Args)]
pub struct LeaderArgs {
    /// The election's name.
    pub name: String,
    /// Print the leader key on a line before the value (as `etcdctl elect -l` does).
    #[arg(long)]
    pub with_key: bool,
}

/// Parses `1.5s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 2s, 500ms, 1m)"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1e3,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}` (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))
}

/// [`parse_duration`], rejecting zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be more than zero".to_string()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn command_after_name_with_or_without_dashes() {
        let cli =
            Cli::try_parse_from(["coordctl", "lock", "x", "--", "sh", "-c", "exit 3"]).unwrap();
        let Command::Lock(args) = cli.command else {
            panic!("not lock")
        };
        assert_eq!(args.name, "x");
        assert_eq!(args.command, ["sh", "-c", "exit 3"]);

        let cli = Cli::try_parse_from(["coordctl", "--ttl", "5", "lock", "x", "ls", "-l"]).unwrap();
        let Command::Lock(args) = cli.command else {
            panic!("not lock")
        };
        assert_eq!(args.command, ["ls", "-l"]);
        assert_eq!(cli.global.ttl, 5);

        let cli = Cli::try_parse_from(["coordctl", "lock", "--ttl", "3", "x"]).unwrap();
        assert_eq!(cli.global.ttl, 3);
    }

    #[test]
    fn rwlock_needs_exactly_one_side() {
        assert!(Cli::try_parse_from(["coordctl", "rwlock", "x"]).is_err());
        assert!(Cli::try_parse_from(["coordctl", "rwlock", "--read", "--write", "x"]).is_err());
        assert!(Cli::try_parse_from(["coordctl", "rwlock", "--read", "x", "--", "true"]).is_ok());
    }

    #[test]
    fn semaphore_needs_permits_and_takes_a_weight() {
        assert!(Cli::try_parse_from(["coordctl", "semaphore", "x", "--", "true"]).is_err());
        assert!(Cli::try_parse_from(["coordctl", "semaphore", "x", "--permits", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["coordctl", "semaphore", "x", "-n", "2", "--weight", "0"])
                .is_err()
        );
        let cli = Cli::try_parse_from([
            "coordctl",
            "semaphore",
            "x",
            "--permits",
            "3",
            "--weight",
            "2",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
        let Command::Semaphore(args) = cli.command else {
            panic!("not semaphore")
        };
        assert_eq!((args.permits, args.weight), (3, 2));
        assert_eq!(args.command, ["sh", "-c", "exit 3"]);
    }

    #[test]
    fn elect_needs_a_proposal_unless_listening() {
        assert!(Cli::try_parse_from(["coordctl", "elect", "x"]).is_err());
        assert!(Cli::try_parse_from(["coordctl", "elect", "x", "p"]).is_ok());
        assert!(Cli::try_parse_from(["coordctl", "elect", "--listen", "x"]).is_ok());
        assert!(Cli::try_parse_from(["coordctl", "elect", "-l", "x", "p"]).is_err());
    }
}
