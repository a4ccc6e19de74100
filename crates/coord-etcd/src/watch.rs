//! Watches: one etcd watch stream per [`WatchStream`], re-opened after a lost connection.
//!
//! How a watch works:
//!
//! - **Open**: a `Watch` stream is opened with one create request, and [`open`] returns only
//!   after etcd's `created` answer arrived (`etcd-client`'s own `watch()` returns once the gRPC
//!   stream is open, which is not the same), so the watcher is registered on the server.
//! - **Delivery**: `created` and progress frames are hidden; each event becomes one
//!   [`WatchEvent`], in order. Every response of etcd holds whole revisions (fragmenting is
//!   off), so after a response the watch knows the next revision it needs: the last event's
//!   revision + 1 (or, before any event, the `created` header revision + 1 for a watch "from
//!   now", or the requested start).
//! - **Resume**: when the stream fails for a transient reason (the connection dropped, the
//!   member stopped, "no leader"), it is re-opened from that next revision: the first attempt at
//!   once, then with doubling backoff. Events already buffered are delivered first; events
//!   below the next revision are dropped, so none is repeated and none missed. If the resume
//!   point was compacted meanwhile, the stream yields [`Error::Compacted`] and ends. If no
//!   attempt succeeds within the configured reconnect timeout, it yields
//!   [`Error::Unavailable`] (with the last failure as source) and ends; with no timeout it
//!   retries for ever.
//! - **Errors that retrying cannot fix** (permission denied, compaction, bad range) end the
//!   stream with that error. The stream never ends silently.
//! - **Cancel**: dropping the stream drops the gRPC stream, which resets it; etcd then removes
//!   the watcher. No task is spawned, so nothing outlives the stream.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use coord_core::{
    Error, EventKind, KeyValue, Result, Revision, WatchEvent, WatchRequest, WatchStream,
};
use etcd_client::{EventType, WatchClient, WatchFilterType, WatchOptions};

use crate::backend::{convert_kv, etcd_range, EtcdRange};
use crate::error::{self, Kind};

/// Settings a watch keeps for re-opening itself.
#[derive(Clone, Debug)]
pub(crate) struct WatchSettings {
    pub(crate) open_timeout: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) reconnect_timeout: Option<Duration>,
}

/// Opens a watch; see the module docs.
pub(crate) async fn open(
    client: WatchClient,
    req: WatchRequest,
    settings: WatchSettings,
) -> Result<WatchStream> {
    let mut state = State {
        client,
        req,
        settings,
        stream: None,
        next_rev: 0,
        pending: VecDeque::new(),
        done: false,
    };
    let start = state.req.start_revision;
    let created_rev = state.create(start).await?;
    state.next_rev = if start > 0 { start } else { created_rev + 1 };
    tracing::debug!(
        key = %String::from_utf8_lossy(state.req.range.start()),
        start_revision = start,
        next_revision = state.next_rev,
        "etcd watch created"
    );
    Ok(Box::pin(futures::stream::unfold(
        state,
        |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        },
    )))
}

struct State {
    client: WatchClient,
    req: WatchRequest,
    settings: WatchSettings,
    stream: Option<etcd_client::WatchStream>,
    /// The first revision not yet received: where a re-opened watch starts.
    next_rev: Revision,
    /// Events received, not yet handed out.
    pending: VecDeque<WatchEvent>,
    done: bool,
}

/// What ended a stream: worth re-opening, or final.
enum Broken {
    Transient(Error),
    Final(Error),
}

fn split(e: Error) -> Broken {
    if e.is_retryable() {
        Broken::Transient(e)
    } else {
        Broken::Final(e)
    }
}

impl State {
    fn options(&self, start: Revision) -> (Vec<u8>, WatchOptions) {
        let mut options = WatchOptions::new().with_start_revision(start);
        // etcd refuses a watch of an empty interval ("mvcc: watcher range is empty"), so an
        // empty range watches its one key `at` with both filters: etcd sends no event, but
        // checks the start revision against compaction as for any watch (checked on 3.4).
        let (key, nothing) = match etcd_range(&self.req.range) {
            EtcdRange::Pair { key, end } => {
                if !end.is_empty() {
                    options = options.with_range(end);
                }
                (key, false)
            }
            EtcdRange::Empty { at } => (at, true),
        };
        let mut filters = Vec::new();
        if self.req.no_put || nothing {
            filters.push(WatchFilterType::NoPut);
        }
        if self.req.no_delete || nothing {
            filters.push(WatchFilterType::NoDelete);
        }
        if !filters.is_empty() {
            options = options.with_filters(filters);
        }
        if self.req.prev_kv {
            options = options.with_prev_key();
        }
        (key, options)
    }

    /// Opens the gRPC stream and waits for `created`. Returns the created header's revision.
    async fn create(&mut self, start: Revision) -> Result<Revision> {
        let (key, options) = self.options(start);
        let timeout = self.settings.open_timeout;
        let mut client = self.client.clone();
        let opened = tokio::time::timeout(timeout, async move {
            let mut stream = client
                .watch(key, Some(options))
                .await
                .map_err(|e| error::from_client(e, 0))?;
            loop {
                let Some(resp) = stream
                    .message()
                    .await
                    .map_err(|e| error::from_client(e, 0))?
                else {
                    return Err(error::described(
                        Kind::Unavailable,
                        "watch stream closed before the watch was created",
                        0,
                    ));
                };
                if !resp.created() {
                    continue;
                }
                if resp.canceled() {
                    return Err(cancel_error(&resp));
                }
                let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                return Ok((stream, rev));
            }
        })
        .await;
        match opened {
            Ok(Ok((stream, rev))) => {
                self.stream = Some(stream);
                Ok(rev)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(error::timeout("watch", timeout)),
        }
    }

    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let broken = match self.receive().await {
                Ok(()) => continue,
                Err(broken) => broken,
            };
            self.stream = None;
            let e = match broken {
                Broken::Final(e) => e,
                Broken::Transient(e) => match self.reconnect(e).await {
                    Ok(()) => continue,
                    Err(e) => e,
                },
            };
            self.done = true;
            tracing::debug!(error = %e, "etcd watch ended");
            return Some(Err(e));
        }
    }

    /// Reads one response into `pending`.
    async fn receive(&mut self) -> std::result::Result<(), Broken> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(Broken::Transient(error::described(
                Kind::Unavailable,
                "watch stream not open",
                0,
            )));
        };
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                return Err(Broken::Transient(error::described(
                    Kind::Unavailable,
                    "watch stream closed by the server",
                    0,
                )))
            }
            Err(e) => return Err(split(error::from_client(e, 0))),
        };
        if resp.canceled() {
            return Err(split(cancel_error(&resp)));
        }
        if resp.created() {
            return Ok(());
        }
        if resp.events().is_empty() {
            // A progress notification: etcd sends it only to synced watchers, so every event
            // up to the header revision was delivered.
            if let Some(header) = resp.header() {
                self.next_rev = self.next_rev.max(header.revision() + 1);
            }
            return Ok(());
        }
        let mut last = self.next_rev - 1;
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let kind = match event.event_type() {
                EventType::Put => EventKind::Put,
                EventType::Delete => EventKind::Delete,
            };
            let kv: KeyValue = convert_kv(kv);
            if kv.mod_revision < self.next_rev {
                // Already delivered before a re-open.
                continue;
            }
            last = last.max(kv.mod_revision);
            self.pending.push_back(WatchEvent {
                kind,
                kv,
                prev_kv: event.prev_kv().map(convert_kv),
            });
        }
        self.next_rev = self.next_rev.max(last + 1);
        Ok(())
    }

    /// Re-opens the watch from `next_rev`, with backoff, until it works, fails for good, or the
    /// reconnect timeout passes.
    async fn reconnect(&mut self, cause: Error) -> Result<()> {
        tracing::warn!(
            error = %cause,
            next_revision = self.next_rev,
            "etcd watch broken, re-opening"
        );
        let started = Instant::now();
        let mut backoff = self.settings.backoff_initial;
        let mut last = cause;
        let mut attempt = 0u32;
        loop {
            if attempt > 0 {
                if let Some(limit) = self.settings.reconnect_timeout {
                    let left = limit.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        return Err(Error::Unavailable {
                            source: format!(
                                "watch could not be re-opened within {limit:?}: {last}"
                            )
                            .into(),
                        });
                    }
                    tokio::time::sleep(backoff.min(left)).await;
                } else {
                    tokio::time::sleep(backoff).await;
                }
                backoff = (backoff * 2).min(self.settings.backoff_max);
            }
            attempt += 1;
            match self.create(self.next_rev).await {
                Ok(_) => {
                    tracing::info!(
                        next_revision = self.next_rev,
                        attempts = attempt,
                        "etcd watch re-opened"
                    );
                    return Ok(());
                }
                Err(e) if e.is_retryable() => {
                    tracing::debug!(error = %e, attempt, "etcd watch re-open failed");
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The error for a watch etcd cancelled.
fn cancel_error(resp: &etcd_client::WatchResponse) -> Error {
    if resp.compact_revision() > 0 {
        return Error::Compacted {
            compact_revision: resp.compact_revision(),
        };
    }
    let reason = resp.cancel_reason();
    let kind = error::classify_message(reason).unwrap_or(if reason.is_empty() {
        Kind::Unavailable
    } else {
        Kind::Other
    });
    let msg = if reason.is_empty() {
        "watch cancelled by the server".to_string()
    } else {
        format!("watch cancelled by the server: {reason}")
    };
    error::described(kind, msg, 0)
}
