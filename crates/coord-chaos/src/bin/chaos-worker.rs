//! `chaos-worker`: a `coord` lock holder in its own process, for tests where a holder must die
//! (`SIGKILL`) or freeze (`SIGSTOP`). See `coord_chaos::worker` for the protocol.
//!
//! ```text
//! chaos-worker --endpoints 127.0.0.1:2379 --name NAME --ttl 2 [--request-timeout-ms 1000]
//! chaos-worker --endpoints postgres://user:pw@127.0.0.1:5432/db --schema SCHEMA --name NAME …
//! ```
//!
//! On PostgreSQL its connections are named `chaos-worker` (`application_name`).

use std::time::Duration;

use coord_chaos::history::now;
use coord_chaos::support::{hex, variant, Store};
use coord_chaos::worker::WorkerEvent;
use coord_core::{LockGuard, Mutex, PutRequest, Session, Txn, TxnOp};
use tokio::io::{AsyncBufReadExt, BufReader};

struct Args {
    store: Store,
    name: String,
    ttl: i64,
    request_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut endpoints = Vec::new();
    let mut schema = None;
    let mut name = None;
    let mut ttl = 2;
    let mut request_timeout = Duration::from_secs(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoints" => endpoints = value()?.split(',').map(String::from).collect(),
            "--schema" => schema = Some(value()?),
            "--name" => name = Some(value()?),
            "--ttl" => ttl = value()?.parse().map_err(|e| format!("--ttl: {e}"))?,
            "--request-timeout-ms" => {
                request_timeout = Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|e| format!("--request-timeout-ms: {e}"))?,
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        store: Store::from_endpoints(endpoints, schema).map_err(|e| e.to_string())?,
        name: name.ok_or("--name is required")?,
        ttl,
        request_timeout,
    })
}

fn emit(event: WorkerEvent) {
    // stdout is line-buffered: each event reaches the test as soon as it is printed.
    println!("{event}");
}

fn fail(op: &str, error: &str) {
    emit(WorkerEvent::Failed {
        op: op.into(),
        error: error.into(),
    });
}

async fn fenced_write(guard: &LockGuard, session: &Session, key: &str) {
    let token = guard.fencing_token();
    let txn = Txn::new()
        .when([guard.is_owner()])
        .and_then([TxnOp::Put(PutRequest::new(key, token.to_string()))]);
    match session.backend().txn(txn).await {
        Ok(resp) => emit(WorkerEvent::Write {
            token,
            accepted: resp.succeeded,
            at: now(),
        }),
        Err(e) => fail("write", variant(&e)),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos-worker: {e}");
            std::process::exit(2);
        }
    };
    let backend = match args
        .store
        .connect(args.request_timeout, "chaos-worker")
        .await
    {
        Ok(b) => b,
        Err(e) => return fail("connect", variant(&e)),
    };
    let session = match Session::new(backend, args.ttl).await {
        Ok(s) => s,
        Err(e) => return fail("session", variant(&e)),
    };
    emit(WorkerEvent::Ready {
        lease: session.lease(),
    });
    let mutex = match Mutex::new(&session, &args.name) {
        Ok(m) => m,
        Err(e) => return fail("mutex", variant(&e)),
    };
    let mut guard = match mutex.lock().await {
        Ok(g) => Some(g),
        Err(e) => {
            fail("lock", variant(&e));
            let _ = session.close().await;
            return;
        }
    };
    let g = guard.as_ref().expect("just locked");
    emit(WorkerEvent::Acquired {
        token: g.fencing_token(),
        at: now(),
        key_hex: hex(g.key()),
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut lost_reported = false;
    loop {
        let watch_lost = async {
            match guard.as_ref() {
                Some(g) if !lost_reported => g.lost().await,
                _ => std::future::pending().await,
            }
        };
        let line = tokio::select! {
            e = watch_lost => {
                emit(WorkerEvent::Lost { error: variant(&e).into(), at: now() });
                lost_reported = true;
                continue;
            }
            line = lines.next_line() => line,
        };
        let Ok(Some(line)) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match (words.as_slice(), guard.as_ref()) {
            (["write", key], Some(g)) => fenced_write(g, &session, key).await,
            (["sleep-write", ms, key], Some(g)) => {
                let ms: u64 = ms.parse().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                fenced_write(g, &session, key).await;
            }
            (["unlock"], Some(_)) => {
                emit(WorkerEvent::Releasing { at: now() });
                let result = match guard.take().expect("checked").unlock().await {
                    Ok(()) => "ok",
                    Err(e) => variant(&e),
                };
                emit(WorkerEvent::Released {
                    result: result.into(),
                });
            }
            (["exit"], _) => break,
            (_, None) => fail(&line, "NotHeld"),
            _ => fail(&line, "UnknownCommand"),
        }
    }
    drop(guard);
    let _ = session.close().await;
}
