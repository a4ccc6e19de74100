//! `coordctl`: distributed locks and leader elections on etcd, from the shell.
//!
//! Keys and transactions follow etcd's Go `clientv3/concurrency` package, so `coordctl` shares
//! locks with `etcdctl lock` and elections with `etcdctl elect` (and with Go and Rust services
//! using those packages or `coord`).
//!
//! ```text
//! coordctl lock NAME [-- CMD ARGS...]            # like `etcdctl lock`
//! coordctl rwlock --read|--write NAME [-- CMD...]
//! coordctl semaphore NAME --permits N [--weight K] [-- CMD...]   # like `consul lock -n N`
//! coordctl elect NAME PROPOSAL                   # like `etcdctl elect`
//! coordctl elect --listen NAME                   # like `etcdctl elect -l`
//! coordctl leader NAME                           # the current leader's value
//! ```
//!
//! See `coordctl --help` for the options and the exit codes, and the crate's README.
#![deny(missing_docs)]

mod child;
mod cli;
mod connect;
mod elect;
mod exit;
mod lock;
mod reap;
mod semaphore;
mod signals;

use std::io::Write;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::exit::{Failure, ERROR};
use crate::lock::Side;
use crate::signals::Signals;

fn main() {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("coordctl: cannot start the runtime: {e}");
            std::process::exit(ERROR);
        }
    };
    let code = runtime.block_on(run(cli));
    runtime.shutdown_timeout(Duration::from_millis(200));
    std::process::exit(code);
}

/// Logs to stderr as `RUST_LOG` says; nothing without it, so errors stay one line.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(cli: Cli) -> i32 {
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("coordctl: cannot catch signals: {e}");
            return ERROR;
        }
    };
    let global = &cli.global;
    if let Some(addr) = global.metrics_addr {
        if let Err(e) = serve_metrics(addr) {
            eprintln!("coordctl: cannot serve metrics on {addr}: {e}");
            return ERROR;
        }
    }
    let result = match &cli.command {
        Command::Lock(args) => {
            lock::run(global, &mut signals, Side::Mutex, &args.name, &args.command).await
        }
        Command::Rwlock(args) => {
            let side = if args.read { Side::Read } else { Side::Write };
            lock::run(global, &mut signals, side, &args.name, &args.command).await
        }
        Command::Semaphore(args) => semaphore::run(global, &mut signals, args).await,
        Command::Elect(args) => match &args.proposal {
            Some(proposal) if !args.listen => {
                elect::campaign(global, &mut signals, &args.name, proposal).await
            }
            _ => elect::listen(global, &mut signals, &args.name).await,
        },
        Command::Leader(args) => {
            elect::leader(global, &mut signals, &args.name, args.with_key).await
        }
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("coordctl: {}", failure.message);
            failure.code
        }
    }
}

/// Serves Prometheus text on `addr` (any path) from a recorder installed for the whole
/// process, before any session exists (primitives register their handles when built).
fn serve_metrics(addr: std::net::SocketAddr) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        // Histograms as buckets, so that quantiles can be aggregated across processes.
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            coord_core::telemetry::SECONDS_BUCKETS,
        )
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| e.to_string())?;
    coord_core::telemetry::describe();
    Ok(())
}

/// Writes each of `lines` and a newline to stdout, raw bytes as etcdctl prints them, and
/// flushes, so that a reader of a pipe sees them at once.
pub(crate) fn print_lines(lines: &[&[u8]]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    let mut write = || -> std::io::Result<()> {
        for line in lines {
            out.write_all(line)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    write().map_err(|e| Failure::new(ERROR, format!("cannot write to stdout: {e}")))
}

/// A duration as a person writes it: `2s`, `1.5s`, `250ms`.
pub(crate) fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}
