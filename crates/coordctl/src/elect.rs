//! `coordctl elect` and `coordctl leader`.

use coord_core::{Election, ElectionObserver, Error, Session};
use futures::StreamExt;

use crate::cli::Global;
use crate::exit::{Failure, ERROR, LOST, NO_LEADER, OK, TIMEOUT, USAGE};
use crate::signals::Signals;
use crate::{connect, human, print_lines};

/// Runs `body` on a new session and closes the session afterwards, whatever the outcome.
macro_rules! with_session {
    ($global:expr, $signals:expr, |$session:ident| $body:expr) => {{
        let $session = connect::connect_session($global, $signals).await?;
        let result: Result<i32, Failure> = async { $body }.await;
        connect::close(&$session).await;
        result
    }};
}

/// Campaigns with `proposal`, prints the leader key and value when elected, leads until a stop
/// signal, then resigns.
pub async fn campaign(
    global: &Global,
    signals: &mut Signals,
    name: &str,
    proposal: &str,
) -> Result<i32, Failure> {
    if global.timeout.is_some_and(|t| t.is_zero()) {
        return Err(Failure::new(
            USAGE,
            "--timeout 0 (try once) is for lock and rwlock",
        ));
    }
    with_session!(global, signals, |session| lead(
        global, signals, &session, name, proposal
    )
    .await)
}

async fn lead(
    global: &Global,
    signals: &mut Signals,
    session: &Session,
    name: &str,
    proposal: &str,
) -> Result<i32, Failure> {
    let election =
        Election::new(session, name).map_err(|e| Failure::coord(format!("election {name}"), &e))?;
    let campaign = async {
        match global.timeout {
            Some(t) => election.campaign_timeout(proposal, t).await,
            None => election.campaign(proposal).await,
        }
    };
    let leadership = tokio::select! {
        leadership = campaign => match leadership {
            Ok(l) => l,
            Err(Error::Timeout) => return Err(Failure::new(
                TIMEOUT,
                format!(
                    "timed out after {} campaigning in election {name}",
                    human(global.timeout.unwrap_or_default())
                ),
            )),
            Err(e) => return Err(Failure::coord(format!("cannot campaign in election {name}"), &e)),
        },
        stop = signals.recv() => {
            return Err(stop.interrupted(format_args!("campaigning in election {name}")))
        }
    };
    tracing::info!(
        key = %String::from_utf8_lossy(leadership.key()),
        rev = leadership.rev(),
        "elected"
    );
    print_lines(&[leadership.key(), proposal.as_bytes()])?;
    let stop = tokio::select! {
        stop = signals.recv() => stop,
        error = leadership.lost() => return Err(Failure::new(
            LOST,
            format!("leadership of election {name} lost: {error}"),
        )),
    };
    tracing::info!(signal = stop.name(), "resigning");
    match leadership.resign().await {
        Ok(()) => Ok(OK),
        Err(e @ (Error::NotLeader | Error::SessionExpired { .. })) => Err(Failure::new(
            LOST,
            format!(
                "leadership of election {name} was lost: {}",
                crate::exit::one_line(&e)
            ),
        )),
        Err(e) => Err(Failure {
            code: ERROR,
            ..Failure::coord(format!("cannot resign from election {name}"), &e)
        }),
    }
}

/// Prints the leader's key and value at the start and at every change, until a stop signal.
/// Read-only: it needs no session, so it writes nothing (not even a lease).
pub async fn listen(global: &Global, signals: &mut Signals, name: &str) -> Result<i32, Failure> {
    let observer = observer(global, signals, name).await?;
    let mut leaders = observer.observe();
    loop {
        tokio::select! {
            item = leaders.next() => match item {
                // As `etcdctl elect -l`: nothing while there is no leader.
                Some(Ok(observation)) => {
                    if let Some(leader) = observation.leader {
                        print_lines(&[&leader.key, &leader.value])?;
                    }
                }
                Some(Err(e)) => break Err(Failure::coord(format!("observing election {name}"), &e)),
                None => break Err(Failure::new(ERROR, format!("observing election {name}: the stream ended"))),
            },
            _ = signals.recv() => break Ok(OK),
        }
    }
}

/// Prints the current leader's value (and key first with `with_key`). Read-only, no session.
pub async fn leader(
    global: &Global,
    signals: &mut Signals,
    name: &str,
    with_key: bool,
) -> Result<i32, Failure> {
    let observer = observer(global, signals, name).await?;
    let leader = tokio::select! {
        leader = observer.leader() => leader,
        stop = signals.recv() => {
            return Err(stop.interrupted(format_args!("reading the leader of election {name}")))
        }
    };
    match leader {
        Ok(kv) if with_key => print_lines(&[&kv.key, &kv.value]).map(|()| OK),
        Ok(kv) => print_lines(&[&kv.value]).map(|()| OK),
        Err(Error::NoLeader) => Err(Failure::new(
            NO_LEADER,
            format!("election {name} has no leader"),
        )),
        Err(e) => Err(Failure::coord(
            format!("cannot read the leader of election {name}"),
            &e,
        )),
    }
}

async fn observer(
    global: &Global,
    signals: &mut Signals,
    name: &str,
) -> Result<ElectionObserver, Failure> {
    let backend = connect::connect(global, signals).await?;
    ElectionObserver::new(backend, name).map_err(|e| Failure::coord(format!("election {name}"), &e))
}
