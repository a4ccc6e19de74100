//! Watches: replay from the change log, then live through one shared hub per backend.
//!
//! The log table is the truth; NOTIFY brings each revision's changes when they fit. Each
//! backend has one **hub**: a task with its own connection that LISTENs on the schema's
//! channel. Every write NOTIFYs its revision with its changes (`notify()` in `functions.sql`),
//! or the revision alone when they do not fit NOTIFY's 8,000 bytes. A notification that
//! carries the changes of the revision right after the last one handed out is handed to the
//! registered watches as is, with no read: the waiter of a released lock hears of it one
//! message after the commit. Anything else (a revision alone, a gap before it, a payload that
//! cannot be read, the fallback timer, a reconnect) reads `log WHERE revision > last` once,
//! in revision order. Revisions are gap-free and committed in order (see `schema.sql`), so
//! handing out "the next revision" or "everything after the last" misses nothing and repeats
//! nothing, whichever way each revision came.
//!
//! Opening a watch: read the current revision (start `0`) or replay `[start, now]` of the
//! watch's range from the log on a pooled connection, then register with the hub under its
//! lock. If the hub has already passed the replayed revision, replay the difference first and
//! try again; so the watch gets every revision from its start exactly once, replayed or live.
//!
//! A lost listening connection is reconnected (attempts at most 200 ms apart), LISTENs again and
//! catches up from the last revision read, so watches go on with no event lost, at most about
//! 200 ms after the server is back. If the revisions missed were compacted meanwhile, the
//! watches that needed them end with [`Error::Compacted`]; if the listener cannot reconnect
//! within the configured time, every watch ends with [`Error::Unavailable`]. A watch never
//! ends silently. Dropping a stream unregisters it.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use coord_core::{
    CallKind, Error, EventKind, KeyRange, KeyValue, Result, Revision, WatchEvent, WatchRequest,
    WatchStream,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, Client, Row};
use tokio_util::sync::CancellationToken;

use crate::backend::Inner;
use crate::config::PostgresConfig;
use crate::error::{self, PgError};
use crate::schema::Sql;
use crate::tls::Tls;

/// Most revisions the hub reads in one query, so a hub far behind catches up in bounded
/// steps (a revision is never split: revisions are gap-free, so a revision window is whole).
const HUB_BATCH: i64 = 1_000;

/// Longest pause between two reconnect attempts of the hub: as calls retry (see
/// `Inner::query`), so that watches resume within about this after the server is back (a
/// waiter blocked across a restart hears of the release that soon). An attempt on a server
/// that is down is one refused TCP connect.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// One revision's events for one watch, or the error that ends it.
type Message = Result<Vec<WatchEvent>>;

/// One registered watch.
struct Watcher {
    range: KeyRange,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    /// Events below this revision are not for this watch (it replayed them, or starts later).
    next: Revision,
    tx: UnboundedSender<Message>,
}

struct State {
    /// Every revision up to this one has been handed to every registered watch. `None` until
    /// the hub's first read.
    last: Option<Revision>,
    watchers: HashMap<u64, Watcher>,
    next_id: u64,
    /// Whether the hub task runs (it is started by the first watch).
    started: bool,
    /// The backend was dropped: no new watch.
    closed: bool,
}

/// The shared poller of one backend. See the module docs.
pub(crate) struct Hub {
    state: Mutex<State>,
    pg: tokio_postgres::Config,
    tls: Tls,
    sql: Arc<Sql>,
    poll_interval: Duration,
    request_timeout: Duration,
    connect_timeout: Duration,
    reconnect_timeout: Option<Duration>,
    shutdown: CancellationToken,
}

/// What registering found.
enum Registered {
    /// Registered under this id.
    Yes(u64),
    /// The hub has passed the watch's next revision: replay up to (at least) this one first.
    Behind(Revision),
}

impl Hub {
    pub(crate) fn new(
        pg: tokio_postgres::Config,
        tls: Tls,
        sql: Arc<Sql>,
        config: &PostgresConfig,
        shutdown: CancellationToken,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            state: Mutex::new(State {
                last: None,
                watchers: HashMap::new(),
                next_id: 0,
                started: false,
                closed: false,
            }),
            pg,
            tls,
            sql,
            poll_interval: config.poll_interval,
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
            reconnect_timeout: config.watch_reconnect_timeout,
            shutdown,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The highest compact revision that takes nothing from this process's watches: the
    /// revision after the last one the hub handed out (`None`: no watch, no limit).
    pub(crate) fn compaction_cap(&self) -> Option<Revision> {
        let state = self.lock();
        if state.watchers.is_empty() {
            return None;
        }
        match state.last {
            // Every registered watch has had everything up to `last`.
            Some(last) => Some(last + 1),
            // Not positioned yet: the hub's first read starts at the earliest `next`.
            None => state.watchers.values().map(|w| w.next).min(),
        }
    }

    /// Starts the hub task once (from a watch, inside the runtime).
    fn ensure_started(self: &Arc<Self>) {
        let mut state = self.lock();
        if !state.started && !state.closed {
            state.started = true;
            tokio::spawn(run(self.clone()));
        }
    }

    fn register(
        &self,
        req: &WatchRequest,
        next: Revision,
        replayed: &mut Vec<Vec<WatchEvent>>,
        tx: &UnboundedSender<Message>,
    ) -> Result<Registered> {
        let mut state = self.lock();
        if state.closed {
            return Err(Error::unavailable("the PostgreSQL backend was dropped"));
        }
        if let Some(last) = state.last {
            if last >= next {
                return Ok(Registered::Behind(last));
            }
        }
        // Under the lock, so no live revision can be handed out between these and the
        // registration: the replayed revisions come first, then the hub's.
        for events in replayed.drain(..) {
            let _ = tx.send(Ok(events));
        }
        state.next_id += 1;
        let id = state.next_id;
        state.watchers.insert(
            id,
            Watcher {
                range: req.range.clone(),
                no_put: req.no_put,
                no_delete: req.no_delete,
                prev_kv: req.prev_kv,
                next,
                tx: tx.clone(),
            },
        );
        Ok(Registered::Yes(id))
    }

    fn unregister(&self, id: u64) {
        let mut state = self.lock();
        state.watchers.remove(&id);
        if state.watchers.capacity() > 64 && state.watchers.len() < state.watchers.capacity() / 4 {
            let len = state.watchers.len();
            state.watchers.shrink_to(len * 2);
        }
    }

    /// Hands out a notification's changes when they are the next revision: `true` when the
    /// notification needs nothing more (handed out now, or its revision was already), `false`
    /// when the log must be read (a gap before it, no changes in it, the hub not positioned).
    /// So revisions are handed out in order, with no gap and none twice, whatever arrives.
    fn take_note(&self, note: Note) -> bool {
        let mut state = self.lock();
        let Some(last) = state.last else {
            return false;
        };
        if note.revision > 0 && note.revision <= last {
            return true;
        }
        match note.changes {
            Some(changes) if note.revision == last + 1 => {
                deliver(&mut state, &changes);
                state.last = Some(note.revision);
                true
            }
            _ => false,
        }
    }

    /// Ends every watch with `error` (each gets its own copy).
    fn fail_all(&self, error: impl Fn() -> Error) {
        let mut state = self.lock();
        for (_, w) in state.watchers.drain() {
            let _ = w.tx.send(Err(error()));
        }
    }
}

/// One log row, as read by `changes()`.
struct Change {
    revision: Revision,
    idx: i32,
    key: Vec<u8>,
    deleted: bool,
    /// The key after a put.
    kv: Option<KeyValue>,
    /// The key before the change.
    prev: Option<KeyValue>,
}

impl Change {
    fn event(&self, with_prev: bool) -> WatchEvent {
        let prev_kv = if with_prev { self.prev.clone() } else { None };
        match (&self.kv, self.deleted) {
            (Some(kv), false) => WatchEvent {
                kind: EventKind::Put,
                kv: kv.clone(),
                prev_kv,
            },
            _ => WatchEvent {
                kind: EventKind::Delete,
                // A delete carries the key and its revision only, as etcd's tombstones do.
                kv: KeyValue {
                    key: self.key.clone(),
                    mod_revision: self.revision,
                    ..KeyValue::default()
                },
                prev_kv,
            },
        }
    }
}

/// What one `changes()` read returned: the current and compact revisions of its snapshot, and
/// its log rows in revision order.
struct Changes {
    current: Revision,
    compact: Revision,
    rows: Vec<Change>,
}

/// The change in the columns of `row` from `b` on (revision, idx, key, deleted, value,
/// create_revision, version, lease, then the prev_* columns), as `changes()` and the hub's
/// statement return them.
fn change_at(row: &Row, b: usize) -> Change {
    let revision: i64 = row.get(b);
    let key: Vec<u8> = row.get(b + 2);
    let deleted: bool = row.get(b + 3);
    let kv = (!deleted).then(|| KeyValue {
        key: key.clone(),
        value: row.get::<_, Option<Vec<u8>>>(b + 4).unwrap_or_default(),
        create_revision: row.get::<_, Option<i64>>(b + 5).unwrap_or(revision),
        mod_revision: revision,
        version: row.get::<_, Option<i64>>(b + 6).unwrap_or(1),
        lease: row.get::<_, Option<i64>>(b + 7).unwrap_or(0),
    });
    let prev = row
        .get::<_, Option<i64>>(b + 9)
        .map(|create_revision| KeyValue {
            key: key.clone(),
            value: row.get::<_, Option<Vec<u8>>>(b + 8).unwrap_or_default(),
            create_revision,
            mod_revision: row.get::<_, Option<i64>>(b + 10).unwrap_or(0),
            version: row.get::<_, Option<i64>>(b + 11).unwrap_or(0),
            lease: row.get::<_, Option<i64>>(b + 12).unwrap_or(0),
        });
    Change {
        revision,
        idx: row.get(b + 1),
        key,
        deleted,
        kv,
        prev,
    }
}

/// The rows of `changes()`: a header (kind 0), then changes (kind 1).
fn parse_changes(rows: Vec<Row>) -> Result<Changes> {
    let mut header = None;
    let mut changes = Vec::with_capacity(rows.len().saturating_sub(1));
    for row in rows {
        if row.get::<_, i16>(0) == 0 {
            header = Some((row.get::<_, i64>(1), row.get::<_, i64>(6)));
        } else {
            changes.push(change_at(&row, 1));
        }
    }
    let (current, compact) =
        header.ok_or_else(|| error::protocol("change log read without its header row"))?;
    Ok(Changes::sorted(current, compact, changes))
}

/// The rows of the hub's statement: current and compact revision on each, then a change
/// (NULL when the window had none).
fn parse_hub_changes(rows: Vec<Row>) -> Result<Changes> {
    let first = rows
        .first()
        .ok_or_else(|| error::protocol("change log read without a row"))?;
    let (current, compact) = (first.get::<_, i64>(0), first.get::<_, i64>(1));
    let changes = rows
        .iter()
        .filter(|row| row.get::<_, Option<i64>>(2).is_some())
        .map(|row| change_at(row, 2))
        .collect();
    Ok(Changes::sorted(current, compact, changes))
}

impl Changes {
    fn sorted(current: Revision, compact: Revision, mut rows: Vec<Change>) -> Changes {
        rows.sort_unstable_by_key(|c| (c.revision, c.idx));
        Changes {
            current,
            compact,
            rows,
        }
    }
}

/// The events `w` wants of one revision's changes.
fn events_for(w: &Watcher, changes: &[Change]) -> Vec<WatchEvent> {
    changes
        .iter()
        .filter(|c| c.revision >= w.next)
        .filter(|c| if c.deleted { !w.no_delete } else { !w.no_put })
        .filter(|c| w.range.contains(&c.key))
        .map(|c| c.event(w.prev_kv))
        .collect()
}

/// `Backend::watch`: replays what the watch needs from the log, then registers it with the
/// hub (see the module docs).
pub(crate) async fn open(inner: &Inner, req: WatchRequest) -> Result<WatchStream> {
    if matches!(&req.range, KeyRange::Key(k) if k.is_empty()) {
        return Err(Error::invalid("key is not provided"));
    }
    if req.start_revision < 0 {
        return Err(Error::invalid(format!(
            "negative watch start revision {}",
            req.start_revision
        )));
    }
    let hub = &inner.hub;
    hub.ensure_started();
    let (tx, rx) = unbounded_channel();
    let mut replayed: Vec<Vec<WatchEvent>> = Vec::new();
    let mut next = if req.start_revision == 0 {
        // "From now": every change after the revision the store is at while we register.
        inner.current_revision().await? + 1
    } else {
        req.start_revision
    };
    // Replays the first time only when the watch starts in the past; afterwards only what
    // the hub passed while we were replaying.
    let mut replay = req.start_revision != 0;
    let start = req.range.start().to_vec();
    let end = req.range.end_bound();
    loop {
        if replay {
            let rows = inner
                .query(
                    CallKind::Watch,
                    0,
                    true,
                    &inner.sql.changes,
                    &[&(next - 1), &i64::MAX, &start, &end],
                )
                .await?;
            let changes = parse_changes(rows)?;
            if next < changes.compact {
                return Err(Error::Compacted {
                    compact_revision: changes.compact,
                });
            }
            let probe = Watcher {
                range: req.range.clone(),
                no_put: req.no_put,
                no_delete: req.no_delete,
                prev_kv: req.prev_kv,
                next,
                tx: tx.clone(),
            };
            for revision in changes.rows.chunk_by(|a, b| a.revision == b.revision) {
                let events = events_for(&probe, revision);
                if !events.is_empty() {
                    replayed.push(events);
                }
            }
            next = next.max(changes.current + 1);
        }
        match hub.register(&req, next, &mut replayed, &tx)? {
            Registered::Yes(id) => {
                return Ok(Box::pin(PgWatchStream {
                    rx,
                    ready: VecDeque::new(),
                    done: false,
                    registration: Registration {
                        hub: hub.clone(),
                        id,
                    },
                }))
            }
            Registered::Behind(last) => {
                tracing::trace!(next, last, "watch registration behind the hub, replaying");
                replay = true;
            }
        }
    }
}

/// The hub task: (re)connect, LISTEN, catch up, then read on every wake-up, until the
/// backend is dropped.
async fn run(hub: Arc<Hub>) {
    let mut down_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(20);
    let mut last_error: Option<String> = None;
    loop {
        if hub.shutdown.is_cancelled() {
            break;
        }
        match connect(&hub).await {
            Ok((client, notes)) => {
                backoff = Duration::from_millis(20);
                let outcome = serve(&hub, &client, notes, &mut down_since).await;
                if hub.shutdown.is_cancelled() {
                    break;
                }
                if let Err(e) = outcome {
                    tracing::debug!(error = %e, "watch hub lost its connection, reconnecting");
                    last_error = Some(e.to_string());
                }
                down_since.get_or_insert_with(Instant::now);
            }
            Err(e) => {
                tracing::debug!(error = %e, "watch hub cannot connect");
                last_error = Some(e.to_string());
                down_since.get_or_insert_with(Instant::now);
            }
        }
        if let (Some(since), Some(limit)) = (down_since, hub.reconnect_timeout) {
            if since.elapsed() >= limit {
                let why = last_error.clone().unwrap_or_default();
                hub.fail_all(|| {
                    Error::unavailable(format!(
                        "the watch connection to PostgreSQL was lost for {limit:?}: {why}"
                    ))
                });
                // Later watches start over: their registration waits for the next read.
                let mut state = hub.lock();
                if state.watchers.is_empty() {
                    down_since = None;
                    state.last = None;
                }
            }
        }
        tokio::select! {
            _ = hub.shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_RECONNECT_PAUSE);
    }
    let mut state = hub.lock();
    state.closed = true;
    for (_, w) in state.watchers.drain() {
        let _ = w.tx.send(Err(Error::unavailable(
            "the PostgreSQL backend was dropped",
        )));
    }
}

/// One notification of the listening connection: the revision it names (`0` when
/// unreadable) and, when the payload carried them, that revision's changes.
struct Note {
    revision: Revision,
    changes: Option<Vec<Change>>,
}

/// Notifications of the listening connection, the channel closing when the connection ends.
type Notes = UnboundedReceiver<Note>;

/// Opens the listening connection and LISTENs.
async fn connect(hub: &Hub) -> Result<(Client, Notes)> {
    let (tx, rx) = unbounded_channel();
    let connecting = async {
        let client = match &hub.tls {
            Tls::Plain => {
                let (client, conn) = hub
                    .pg
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| error::from_client(e, 0))?;
                drive(conn, tx);
                client
            }
            Tls::Rustls(tls) => {
                let (client, conn) = hub
                    .pg
                    .connect(tls.clone())
                    .await
                    .map_err(|e| error::from_client(e, 0))?;
                drive(conn, tx);
                client
            }
        };
        client
            .batch_execute(&hub.sql.listen)
            .await
            .map_err(|e| error::from_client(e, 0))?;
        Ok(client)
    };
    let client = tokio::time::timeout(hub.connect_timeout, connecting)
        .await
        .map_err(|_| error::timeout("LISTEN", hub.connect_timeout))??;
    Ok((client, rx))
}

/// Polls the connection (which also carries the client's queries) and forwards
/// notifications; dropping `tx` when the connection ends tells the hub.
fn drive<S, T>(mut conn: tokio_postgres::Connection<S, T>, tx: UnboundedSender<Note>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(parse_note(n.payload())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "watch connection ended");
                    return;
                }
            }
        }
    });
}

/// Serves one connection: catch up, then read on each notification or timer tick.
async fn serve(
    hub: &Hub,
    client: &Client,
    mut notes: Notes,
    down_since: &mut Option<Instant>,
) -> Result<()> {
    let statement = tokio::time::timeout(hub.request_timeout, client.prepare(&hub.sql.hub_changes))
        .await
        .map_err(|_| error::timeout("watch", hub.request_timeout))?
        .map_err(|e| error::from_client(e, 0))?;
    poll(hub, client, &statement).await?;
    *down_since = None;
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return Ok(()),
            note = notes.recv() => {
                let Some(note) = note else {
                    return Err(Error::unavailable(PgError::Other("the watch connection closed".into())));
                };
                // Every notification already here, in order: a revision that follows the last
                // one handed out and carries its changes is handed out as is; anything else
                // (a gap, a revision without its changes) is read from the log, which also
                // covers the notifications after it.
                let mut batch = vec![note];
                while let Ok(more) = notes.try_recv() {
                    batch.push(more);
                }
                for note in batch {
                    if !hub.take_note(note) {
                        poll(hub, client, &statement).await?;
                    }
                }
            }
            _ = tokio::time::sleep(hub.poll_interval) => {
                poll(hub, client, &statement).await?;
            }
        }
    }
}

/// Reads the log after the last revision handed out, in batches, until current, and hands
/// each revision to the watches that want it.
async fn poll(hub: &Hub, client: &Client, statement: &tokio_postgres::Statement) -> Result<()> {
    loop {
        let after = {
            let state = hub.lock();
            match state.last {
                Some(last) => Some(last),
                // First read: from the earliest revision a registered watch still needs.
                None => state.watchers.values().map(|w| w.next - 1).min(),
            }
        };
        let (from, upto) = match after {
            Some(a) => (a, a.saturating_add(HUB_BATCH)),
            // No watch yet: only learn where the store is.
            None => (i64::MAX, i64::MAX),
        };
        let rows = tokio::time::timeout(
            hub.request_timeout,
            client.query(statement, &[&from, &upto]),
        )
        .await
        .map_err(|_| error::timeout("watch", hub.request_timeout))?
        .map_err(|e| error::from_client(e, 0))?;
        let changes = parse_hub_changes(rows)?;
        let mut state = hub.lock();
        let Some(after) = after else {
            // Positioned at the store's revision, unless a watch registered meanwhile needs
            // earlier ones (then the next read starts there).
            let min_next = state.watchers.values().map(|w| w.next - 1).min();
            state.last = Some(min_next.map_or(changes.current, |n| n.min(changes.current)));
            return Ok(());
        };
        if state.last.is_some_and(|last| last != after) {
            // Reset meanwhile (every watch failed): start over.
            return Ok(());
        }
        if changes.compact > after + 1 {
            // Revisions (after, compact) are gone: the watches that needed them end.
            let compact = changes.compact;
            state.watchers.retain(|_, w| {
                if w.next < compact {
                    let _ = w.tx.send(Err(Error::Compacted {
                        compact_revision: compact,
                    }));
                    false
                } else {
                    true
                }
            });
        }
        for revision in changes.rows.chunk_by(|a, b| a.revision == b.revision) {
            deliver(&mut state, revision);
        }
        let reached = changes.current.min(upto).max(after);
        state.last = Some(reached);
        if changes.current <= reached {
            return Ok(());
        }
    }
}

/// Hands one revision's changes to every watch that wants some of them; forgets the watches
/// whose stream was dropped.
fn deliver(state: &mut State, revision: &[Change]) {
    let mut dead = Vec::new();
    for (id, w) in &state.watchers {
        let events = events_for(w, revision);
        if !events.is_empty() && w.tx.send(Ok(events)).is_err() {
            dead.push(*id);
        }
    }
    for id in dead {
        state.watchers.remove(&id);
    }
}

/// A notification's payload (see `notify()` in `functions.sql`): the revision, then its
/// changes when they fit. A payload that cannot be read is revision `0` (read the log).
fn parse_note(payload: &str) -> Note {
    let mut parts = payload.split(' ');
    let revision = parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
    let rows: Option<Vec<Change>> = parts.map(|row| parse_change(revision, row)).collect();
    let changes = rows.filter(|rows| !rows.is_empty() && revision > 0);
    Note {
        revision,
        changes: changes.map(|mut rows| {
            rows.sort_unstable_by_key(|c| c.idx);
            rows
        }),
    }
}

/// One change of a payload: 12 fields joined by `,` (bytea in hex, NULL as `-`).
fn parse_change(revision: Revision, row: &str) -> Option<Change> {
    fn hex(field: &str) -> Option<Option<Vec<u8>>> {
        if field == "-" {
            return Some(None);
        }
        if field.len() % 2 != 0 {
            return None;
        }
        (0..field.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(field.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
            .map(Some)
    }
    fn num(field: &str) -> Option<Option<i64>> {
        if field == "-" {
            Some(None)
        } else {
            field.parse().ok().map(Some)
        }
    }
    let f: Vec<&str> = row.split(',').collect();
    let [idx, kind, key, value, create, version, lease, p_value, p_create, p_mod, p_version, p_lease] =
        f[..]
    else {
        return None;
    };
    let deleted = match kind {
        "p" => false,
        "d" => true,
        _ => return None,
    };
    let key = hex(key)??;
    let (value, create, version, lease) = (hex(value)?, num(create)?, num(version)?, num(lease)?);
    let kv = (!deleted).then(|| KeyValue {
        key: key.clone(),
        value: value.unwrap_or_default(),
        create_revision: create.unwrap_or(revision),
        mod_revision: revision,
        version: version.unwrap_or(1),
        lease: lease.unwrap_or(0),
    });
    let prev = match num(p_create)? {
        Some(create_revision) => Some(KeyValue {
            key: key.clone(),
            value: hex(p_value)?.unwrap_or_default(),
            create_revision,
            mod_revision: num(p_mod)?.unwrap_or(0),
            version: num(p_version)?.unwrap_or(0),
            lease: num(p_lease)?.unwrap_or(0),
        }),
        None => None,
    };
    Some(Change {
        revision,
        idx: idx.parse().ok()?,
        key,
        deleted,
        kv,
        prev,
    })
}

/// Unregisters its watch when the stream is dropped.
struct Registration {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

/// The stream behind a [`WatchStream`] of a [`PostgresBackend`](crate::PostgresBackend):
/// one revision at a time, all its events ready once the first is yielded.
struct PgWatchStream {
    rx: UnboundedReceiver<Message>,
    ready: VecDeque<WatchEvent>,
    done: bool,
    #[allow(dead_code)] // Held for its drop.
    registration: Registration,
}

impl Stream for PgWatchStream {
    type Item = Result<WatchEvent>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(events))) => this.ready.extend(events),
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    // The hub is gone without a word (cannot happen: it sends one); say so
                    // rather than stop silently.
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::unavailable(
                        "the PostgreSQL watch hub stopped",
                    ))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_with_changes_is_read_back() {
        // Revision 7: a put of "k" = "v" over an older "k", then a delete of "ab".
        let note = parse_note("7 1,d,6162,-,-,-,-,78,3,5,2,0 0,p,6b,76,4,2,9,,4,4,1,9");
        assert_eq!(note.revision, 7);
        let changes = note.changes.expect("changes");
        assert_eq!(changes.len(), 2);
        let put = changes[0].event(true);
        assert_eq!(put.kind, EventKind::Put);
        assert_eq!(
            (put.kv.key.as_slice(), put.kv.value.as_slice()),
            (&b"k"[..], &b"v"[..])
        );
        assert_eq!(
            (
                put.kv.create_revision,
                put.kv.mod_revision,
                put.kv.version,
                put.kv.lease
            ),
            (4, 7, 2, 9)
        );
        let prev = put.prev_kv.expect("prev_kv");
        assert_eq!(
            (prev.value.len(), prev.mod_revision, prev.version),
            (0, 4, 1)
        );
        let delete = changes[1].event(true);
        assert_eq!(delete.kind, EventKind::Delete);
        assert_eq!(
            (delete.kv.key.as_slice(), delete.kv.mod_revision),
            (&b"ab"[..], 7)
        );
        assert_eq!(delete.prev_kv.expect("prev_kv").value, b"x");
        assert!(changes[1].event(false).prev_kv.is_none());
    }

    #[test]
    fn a_payload_without_changes_or_unreadable_means_read_the_log() {
        let note = parse_note("12");
        assert_eq!((note.revision, note.changes.is_none()), (12, true));
        for bad in [
            "",
            "x",
            "12 0,p,6b",
            "12 0,q,6b,76,4,2,9,-,-,-,-,-",
            "12 0,p,6,76,4,2,9,-,-,-,-,-",
            "12 0,p,zz,76,4,2,9,-,-,-,-,-",
        ] {
            let note = parse_note(bad);
            assert!(note.changes.is_none(), "{bad:?}");
        }
        assert_eq!(parse_note("x").revision, 0);
    }
}
