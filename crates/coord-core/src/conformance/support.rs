//! The machinery every scenario shares: its own namespace, failures that name the scenario and
//! the line, bounded waits, and the leak check that ends each scenario.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use crate::backend::DynBackend;
use crate::error::{Error, Result};
use crate::kv::{DeleteRequest, KeyValue, LeaseId, RangeRequest};
use crate::lease::LeaseGrant;
use crate::prefixed::Prefixed;
use crate::session::{lock_unpoisoned, Session};

/// How long something that should happen "now" (a handoff, a background delete, an event) may
/// take before the scenario fails. Generous: on a loaded CI machine with a real etcd, a handoff
/// takes milliseconds, so this only bounds how long a broken backend hangs the test.
pub(crate) const PROMPT: Duration = Duration::from_secs(5);

/// How long a contender that must keep waiting is watched before the scenario concludes that
/// it does. A wrong wake-up on any backend shows within a few milliseconds.
pub(crate) const SETTLE: Duration = Duration::from_millis(150);

/// Session TTL of the scenarios, in seconds: long enough that keep-alives never race expiry on
/// a loaded machine, short enough that a session leaked by a failed run dies soon.
pub(crate) const SESSION_TTL: i64 = 5;

/// Where and why a scenario failed.
#[derive(Debug)]
pub(crate) struct Failure {
    location: &'static Location<'static>,
    message: String,
}

impl Failure {
    /// A failure at the caller's line.
    #[track_caller]
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Failure {
            location: Location::caller(),
            message: message.into(),
        }
    }

    fn at(location: &'static Location<'static>, message: impl Into<String>) -> Self {
        Failure {
            location,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.location, self.message)
    }
}

impl From<Error> for Failure {
    /// An error the scenario did not expect; with `?`, the location is the `?`'s.
    #[track_caller]
    fn from(e: Error) -> Self {
        Failure::new(format!("unexpected error: {e} ({e:?})"))
    }
}

impl From<JoinError> for Failure {
    #[track_caller]
    fn from(e: JoinError) -> Self {
        if e.is_panic() {
            let payload = e.into_panic();
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "<non-string panic>".into());
            Failure::new(format!("a task of the scenario panicked: {text}"))
        } else {
            Failure::new(format!("a task of the scenario was cancelled: {e}"))
        }
    }
}

/// What a scenario body returns.
pub(crate) type Outcome<T = ()> = std::result::Result<T, Failure>;

/// Fails the scenario unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::conformance::support::Failure::new(format!($($fmt)+)));
        }
    };
}

/// Fails the scenario unless `left == right`, showing both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    return Err($crate::conformance::support::Failure::new(format!(
                        "{}: expected {:?}, got {:?}",
                        format_args!($($fmt)+),
                        right,
                        left
                    )));
                }
            }
        }
    };
}

pub(crate) use {ensure, ensure_eq};

/// Expects an error that `expected` accepts; returns it. `Ok` or another error fails the
/// scenario at the caller's line.
#[track_caller]
pub(crate) fn expect_err<T: fmt::Debug>(
    result: Result<T>,
    expected: impl FnOnce(&Error) -> bool,
    what: impl fmt::Display,
) -> Outcome<Error> {
    match result {
        Err(e) if expected(&e) => Ok(e),
        Err(e) => Err(Failure::new(format!("{what}: wrong error: {e} ({e:?})"))),
        Ok(v) => Err(Failure::new(format!(
            "{what}: expected an error, got Ok({v:?})"
        ))),
    }
}

/// Fails at the caller's line unless `fut` completes within `limit`.
#[track_caller]
pub(crate) fn within<F: Future>(
    limit: Duration,
    what: impl fmt::Display,
    fut: F,
) -> impl Future<Output = Outcome<F::Output>> {
    let location = Location::caller();
    let what = what.to_string();
    async move {
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| Failure::at(location, format!("{what}: not done after {limit:?}")))
    }
}

/// Waits for a spawned task that should finish promptly; its panic fails the scenario.
#[track_caller]
pub(crate) fn join<T>(
    what: impl fmt::Display,
    handle: JoinHandle<T>,
) -> impl Future<Output = Outcome<T>> {
    let location = Location::caller();
    let what = what.to_string();
    async move {
        match tokio::time::timeout(PROMPT, handle).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::at(
                location,
                format!("{what}: {}", Failure::from(e).message),
            )),
            Err(_) => Err(Failure::at(
                location,
                format!("{what}: not done after {PROMPT:?}"),
            )),
        }
    }
}

/// Checks that a spawned task is still waiting [`SETTLE`] from now (a contender that must not
/// get the lock yet).
#[track_caller]
pub(crate) fn still_waiting<'a, T: fmt::Debug + Send + 'static>(
    what: impl fmt::Display,
    handle: &'a mut JoinHandle<T>,
) -> impl Future<Output = Outcome> + 'a {
    let location = Location::caller();
    let what = what.to_string();
    async move {
        match tokio::time::timeout(SETTLE, handle).await {
            Err(_) => Ok(()),
            Ok(result) => Err(Failure::at(
                location,
                format!("{what}: finished while it had to keep waiting: {result:?}"),
            )),
        }
    }
}

/// Polls `check` until it returns `true`, failing at the caller's line after [`PROMPT`].
#[track_caller]
pub(crate) fn eventually<F, Fut>(
    what: impl fmt::Display,
    mut check: F,
) -> impl Future<Output = Outcome>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Outcome<bool>>,
{
    let location = Location::caller();
    let what = what.to_string();
    async move {
        let deadline = Instant::now() + PROMPT;
        let mut pause = Duration::from_millis(2);
        loop {
            if check().await? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Failure::at(
                    location,
                    format!("{what}: still not so after {PROMPT:?}"),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

/// The next item of a stream, within [`PROMPT`].
#[track_caller]
pub(crate) fn next_item<'a, S>(
    what: impl fmt::Display,
    stream: &'a mut S,
) -> impl Future<Output = Outcome<S::Item>> + 'a
where
    S: Stream + Unpin,
{
    let location = Location::caller();
    let what = what.to_string();
    async move {
        match tokio::time::timeout(PROMPT, stream.next()).await {
            Ok(Some(item)) => Ok(item),
            Ok(None) => Err(Failure::at(location, format!("{what}: the stream ended"))),
            Err(_) => Err(Failure::at(
                location,
                format!("{what}: nothing arrived within {PROMPT:?}"),
            )),
        }
    }
}

/// Lossy text of a key, for messages.
pub(crate) fn text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// Keys of a list of key-values, as text, for comparisons with readable failures.
pub(crate) fn keys_of(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| text(&kv.key)).collect()
}

/// Whether a scenario can share the store with others, or must have it to itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Runs alongside other scenarios.
    Shared,
    /// Runs alone in this process: it compacts the store (which would cut other scenarios'
    /// history) or counts revisions exactly.
    Exclusive,
}

/// Scenarios of this process share a store when it is a real etcd; the few that must have it
/// to themselves take this lock exclusively, the rest shared.
static TURNS: RwLock<()> = RwLock::const_new(());

#[allow(dead_code)] // The guards are held for their drop.
enum TurnGuard {
    Shared(RwLockReadGuard<'static, ()>),
    Exclusive(RwLockWriteGuard<'static, ()>),
}

/// One running scenario: its name, its namespace on the store, and what it created.
pub(crate) struct Ctx {
    /// The scenario's name.
    pub(crate) name: &'static str,
    /// The backend as given, un-namespaced.
    pub(crate) raw: DynBackend,
    /// The scenario's namespace on `raw`: `conformance/<name>/<random hex>/`.
    pub(crate) prefix: Vec<u8>,
    /// `raw` under `prefix`: what the scenario works on.
    pub(crate) store: DynBackend,
    leases: StdMutex<Vec<LeaseId>>,
    sessions: StdMutex<Vec<Session>>,
    _turn: TurnGuard,
}

impl Ctx {
    /// Starts a scenario on `backend` under a fresh random namespace.
    pub(crate) async fn start(name: &'static str, backend: DynBackend, turn: Turn) -> Ctx {
        let _turn = match turn {
            Turn::Shared => TurnGuard::Shared(TURNS.read().await),
            Turn::Exclusive => TurnGuard::Exclusive(TURNS.write().await),
        };
        let prefix = format!("conformance/{name}/{:016x}/", rand::random::<u64>()).into_bytes();
        let store: DynBackend = std::sync::Arc::new(Prefixed::new(backend.clone(), prefix.clone()));
        Ctx {
            name,
            raw: backend,
            prefix,
            store,
            leases: StdMutex::new(Vec::new()),
            sessions: StdMutex::new(Vec::new()),
            _turn,
        }
    }

    /// Remembers a lease the scenario created, for the leak check.
    pub(crate) fn track_lease(&self, id: LeaseId) {
        lock_unpoisoned(&self.leases).push(id);
    }

    /// Grants a raw lease (tracked); the scenario must revoke it.
    pub(crate) async fn grant(&self, ttl: i64) -> Outcome<LeaseGrant> {
        let grant = self.store.lease_grant(ttl, None).await?;
        self.track_lease(grant.id);
        Ok(grant)
    }

    /// A new session on the scenario's namespace with the default TTL (tracked).
    pub(crate) async fn session(&self) -> Outcome<Session> {
        self.session_ttl(SESSION_TTL).await
    }

    /// A new session with `ttl` seconds (tracked).
    pub(crate) async fn session_ttl(&self, ttl: i64) -> Outcome<Session> {
        let session = Session::new(self.store.clone(), ttl).await?;
        self.track_session(&session);
        Ok(session)
    }

    /// `n` new sessions.
    pub(crate) async fn sessions(&self, n: usize) -> Outcome<Vec<Session>> {
        let mut all = Vec::with_capacity(n);
        for _ in 0..n {
            all.push(self.session().await?);
        }
        Ok(all)
    }

    /// Remembers a session built by the scenario itself, to close it at the end and check its
    /// lease is gone.
    pub(crate) fn track_session(&self, session: &Session) {
        self.track_lease(session.lease());
        lock_unpoisoned(&self.sessions).push(session.clone());
    }

    /// Every key under `under` in the namespace, oldest first.
    pub(crate) async fn keys(&self, under: &[u8]) -> Outcome<Vec<KeyValue>> {
        let read = RangeRequest::prefix(under.to_vec())
            .with_sort(crate::kv::SortTarget::Create, crate::kv::SortOrder::Ascend);
        Ok(self.store.range(read).await?.kvs)
    }

    /// Waits until exactly `n` keys exist under `under` (a contender has written its key).
    #[track_caller]
    pub(crate) fn wait_keys<'a>(
        &'a self,
        under: &'a [u8],
        n: usize,
    ) -> impl Future<Output = Outcome> + 'a {
        let what = format!("{} key(s) under {:?}", n, text(under));
        let check = eventually(what, move || async move {
            Ok(self.keys(under).await?.len() == n)
        });
        check
    }

    /// Ends the scenario: reports its failure, or checks that it left no key in its namespace
    /// and none of its leases alive. Cleans up either way. Panics with the scenario's name.
    pub(crate) async fn finish(self, outcome: Outcome) {
        let mut problems = Vec::new();
        if let Err(f) = outcome {
            problems.push(f.to_string());
        } else if let Err(f) = self.keys_left().await {
            // Checked before the sessions are closed, so that a lock or candidate key left
            // behind by a primitive shows here instead of vanishing with its lease.
            problems.push(f.to_string());
        }
        let sessions = std::mem::take(&mut *lock_unpoisoned(&self.sessions));
        for session in sessions {
            match tokio::time::timeout(PROMPT, session.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problems.push(format!("closing a session failed: {e} ({e:?})")),
                Err(_) => problems.push(format!("closing a session hung for {PROMPT:?}")),
            }
        }
        if problems.is_empty() {
            if let Err(f) = self.leases_left().await {
                problems.push(f.to_string());
            }
        }
        if !problems.is_empty() {
            self.clean_up().await;
            panic!(
                "conformance scenario `{}` failed (namespace {:?}):\n  {}",
                self.name,
                text(&self.prefix),
                problems.join("\n  ")
            );
        }
    }

    async fn keys_left(&self) -> Outcome {
        let deadline = Instant::now() + PROMPT;
        loop {
            let left = self
                .raw
                .range(RangeRequest::prefix(self.prefix.clone()))
                .await?;
            if left.kvs.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Failure::new(format!(
                    "leak check: {} key(s) left in the namespace {PROMPT:?} after the end: {:?}",
                    left.kvs.len(),
                    left.kvs
                        .iter()
                        .map(|kv| (text(&kv.key[self.prefix.len()..]), kv.lease))
                        .collect::<Vec<_>>()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn leases_left(&self) -> Outcome {
        let mine = lock_unpoisoned(&self.leases).clone();
        let deadline = Instant::now() + PROMPT;
        loop {
            let mut left = Vec::new();
            for id in &mine {
                if self.lease_alive(*id).await? {
                    left.push(format!("{id:x}"));
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Failure::new(format!(
                    "leak check: lease(s) of the scenario still alive {PROMPT:?} after the end: {left:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether the store still has lease `id` (by its time-to-live: every backend has that;
    /// listing leases is a capability).
    pub(crate) async fn lease_alive(&self, id: LeaseId) -> Outcome<bool> {
        match self.raw.lease_time_to_live(id, false).await {
            Ok(_) => Ok(true),
            Err(Error::LeaseNotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the backend declares `capability` (for checks of a scenario that only some
    /// backends can make).
    pub(crate) fn has(&self, capability: crate::backend::Capability) -> bool {
        self.raw.capabilities().has(capability)
    }

    /// Best effort, after a failure: revoke the scenario's leases and delete its keys, so a
    /// shared store is not littered.
    async fn clean_up(&self) {
        let mine = lock_unpoisoned(&self.leases).clone();
        for id in mine {
            let _ = tokio::time::timeout(PROMPT, self.raw.lease_revoke(id)).await;
        }
        let _ = tokio::time::timeout(
            PROMPT,
            self.raw.delete(DeleteRequest::prefix(self.prefix.clone())),
        )
        .await;
    }
}

/// Declares a scenario: a public async fn that runs `body` under its own namespace and ends
/// with the leak check. With `needs [Capability, …]`, it runs only on backends that declare
/// those capabilities (elsewhere it prints why and returns).
macro_rules! scenario {
    ($(#[$doc:meta])* $name:ident, $turn:ident, $body:path) => {
        scenario!($(#[$doc])* $name, $turn, $body, needs []);
    };
    ($(#[$doc:meta])* $name:ident, $turn:ident, $body:path, needs [$($cap:ident),*]) => {
        $(#[$doc])*
        ///
        /// Panics, naming the scenario and the line, when the backend or a primitive breaks the
        /// contract, or when the scenario leaves a key or a lease behind.
        pub async fn $name(backend: $crate::backend::DynBackend) {
            let needs: &[$crate::backend::Capability] = &[$($crate::backend::Capability::$cap),*];
            if !$crate::conformance::support::declares(&backend, stringify!($name), needs) {
                return;
            }
            let ctx = $crate::conformance::support::Ctx::start(
                stringify!($name),
                backend,
                $crate::conformance::support::Turn::$turn,
            )
            .await;
            let outcome = $body(&ctx).await;
            ctx.finish(outcome).await
        }
    };
}

/// Whether `backend` declares every capability `scenario` needs; prints why not.
pub(crate) fn declares(
    backend: &DynBackend,
    scenario: &str,
    needs: &[crate::backend::Capability],
) -> bool {
    let has = backend.capabilities();
    let missing: Vec<_> = needs.iter().filter(|c| !has.has(**c)).collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!(
        "conformance scenario `{scenario}` not run: the backend does not declare {missing:?}"
    );
    false
}

pub(crate) use scenario;

/// Checks that a holder's `lost()` (called through `lost`) stays pending while it holds and is
/// cheap enough for a `select!` loop: with `set_up`, its first call (a holder taken at once)
/// makes at most a watch and a read; then 100 more calls make no call at all. `counting`
/// counts the calls of the holder's session.
pub(crate) async fn lost_is_pending_and_cheap<F, Fut>(
    counting: &crate::counting::Counting<DynBackend>,
    lost: F,
    set_up: bool,
) -> Outcome
where
    F: Fn() -> Fut,
    Fut: Future<Output = Error>,
{
    if set_up {
        let before = counting.counts();
        ensure!(
            tokio::time::timeout(SETTLE, lost()).await.is_err(),
            "lost() resolved while held"
        );
        let calls = counting.counts().since(&before);
        ensure!(
            calls.calls() <= 2,
            "setting lost() up costs at most a watch and a read: {calls}"
        );
    }
    let before = counting.counts();
    for _ in 0..100 {
        ensure!(
            futures::FutureExt::now_or_never(lost()).is_none(),
            "lost() resolved while held"
        );
    }
    ensure_eq!(
        counting.counts().since(&before).calls(),
        0,
        "backend calls of 100 more lost() calls"
    );
    Ok(())
}
