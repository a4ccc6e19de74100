//! Metrics and trace spans every primitive reports, through the [`metrics`] facade and
//! [`tracing`].
//!
//! coord records to whatever [`metrics`] recorder the application installs (Prometheus,
//! OpenTelemetry, …); with none installed every record is a no-op. Install the recorder before
//! building sessions: each primitive registers its handles once, when it is created, and then
//! only bumps them (no allocation, no lookup per lock).
//!
//! # Metrics
//!
//! Every name starts with `coord_`; durations are in seconds. `primitive` is one of `mutex`,
//! `rwlock_read`, `rwlock_write`, `election`, `semaphore`; `name` appears only when
//! the session opted in (see [`NameLabels`]).
//!
//! | Metric | Type | Labels | What |
//! |---|---|---|---|
//! | `coord_acquisitions_total` | counter | primitive, name | locks taken, leaderships won |
//! | `coord_acquire_wait_seconds` | histogram | primitive, name | from the call to held, per acquisition |
//! | `coord_queue_length` | histogram | primitive, name | contenders seen ahead by the acquire's transaction |
//! | `coord_acquire_timeouts_total` | counter | primitive, name | `*_timeout` calls whose deadline passed |
//! | `coord_acquire_cancellations_total` | counter | primitive, name | acquire futures dropped before they finished |
//! | `coord_acquire_failures_total` | counter | primitive, error, name | acquires that failed with an error (`locked`: `try_*` found it held) |
//! | `coord_held` | gauge | primitive, name | held now (for `election`: 1 while this process leads) |
//! | `coord_hold_seconds` | histogram | primitive, name | from held to released or lost |
//! | `coord_losses_total` | counter | primitive, cause, name | holds lost: `cause` = `lease_expired`, `key_deleted`, `session_closed` |
//! | `coord_election_leader_changes_total` | counter | name | leader changes seen by [`crate::LeaderStream`]s |
//! | `coord_session_keepalive_seconds` | histogram | | one lease renewal's round trip |
//! | `coord_session_keepalive_failures_total` | counter | error | renewals that failed (retried while the lease may live) |
//! | `coord_sessions_lost_total` | counter | | sessions whose lease was lost (not closed) |
//! | `coord_backend_call_seconds` | histogram | op | one backend call (`op` = `txn`, `range`, `put`, `watch`, …) |
//! | `coord_backend_errors_total` | counter | op, error | backend calls that failed |
//!
//! `error` is a fixed set of words, one per [`Error`] variant ([`error_label`]); `op` one per
//! [`crate::Backend`] method. A loss is counted once per hold, when it is noticed: by
//! [`crate::LockGuard::lost`], by a release that finds the key gone, or when the guard is
//! dropped after the session ended.
//!
//! # Label cardinality
//!
//! Lock and election names are user data (a name per job id would make a series per job), so
//! they are **off by default**: every series is per primitive kind. A session opts in with
//! [`SessionBuilder::with_name_labels`](crate::SessionBuilder::with_name_labels):
//! [`NameLabels::Full`] for a small fixed set of names, or [`NameLabels::grouped`] to map each
//! name to a bounded set of groups (e.g. the part before the first `/`).
//!
//! # Spans
//!
//! `coord.acquire`, `coord.release`, `coord.campaign`, `coord.resign` (info) carry `primitive`,
//! `name`, `key`, and once held `token` (the fencing token) and `revision`; `coord.observe`
//! covers an election observer's task; `coord.backend` (debug) covers each backend call.
//!
//! # For new primitives
//!
//! A primitive keeps a [`PrimitiveMetrics`] ([`PrimitiveMetrics::new`] in its constructor) and
//! calls it once per event: [`PrimitiveMetrics::attempt`] when an acquire starts, then
//! [`Attempt::acquired`] (keep the returned [`Hold`] in the guard) or [`Attempt::failed`];
//! [`Attempt::deadline`] runs a `*_timeout` variant; [`Hold::released`] / [`Hold::lost_by`]
//! end the hold (dropping a `Hold` counts as released).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::session::{lock_unpoisoned, Session};

/// Whether metrics carry the primitive's name as a `name` label (see the module docs).
#[derive(Clone, Default)]
pub enum NameLabels {
    /// No `name` label: series per primitive kind only. The default.
    #[default]
    Off,
    /// The name itself (lossy UTF-8). Only for a small, fixed set of names.
    Full,
    /// The group a function maps the name to: keep its range small.
    Grouped(NameGroup),
}

/// A function from a primitive's name to its group label (see [`NameLabels::grouped`]).
pub type NameGroup = Arc<dyn Fn(&[u8]) -> String + Send + Sync>;

impl NameLabels {
    /// Labels each name with `group(name)`, e.g. the part before the first `/`.
    pub fn grouped(group: impl Fn(&[u8]) -> String + Send + Sync + 'static) -> NameLabels {
        NameLabels::Grouped(Arc::new(group))
    }

    fn label(&self, name: &[u8]) -> Option<String> {
        match self {
            NameLabels::Off => None,
            NameLabels::Full => Some(String::from_utf8_lossy(name).into_owned()),
            NameLabels::Grouped(group) => Some(group(name)),
        }
    }
}

impl fmt::Debug for NameLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameLabels::Off => "Off",
            NameLabels::Full => "Full",
            NameLabels::Grouped(_) => "Grouped(..)",
        })
    }
}

/// Why a hold ended without its release: the `cause` label of `coord_losses_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LossCause {
    /// The session's lease expired or was revoked by someone else.
    LeaseExpired,
    /// The key was deleted by someone else (an operator's `etcdctl del`).
    KeyDeleted,
    /// The session was closed (or detached) while holding.
    SessionClosed,
}

impl LossCause {
    /// The cause an error reports, if it reports a loss.
    pub fn of(error: &Error) -> Option<LossCause> {
        match error {
            Error::SessionExpired { .. } | Error::LeaseNotFound { .. } => {
                Some(LossCause::LeaseExpired)
            }
            Error::NotHeld { .. } | Error::NotLeader => Some(LossCause::KeyDeleted),
            Error::SessionClosed => Some(LossCause::SessionClosed),
            _ => None,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            LossCause::LeaseExpired => "lease_expired",
            LossCause::KeyDeleted => "key_deleted",
            LossCause::SessionClosed => "session_closed",
        }
    }

    const ALL: [LossCause; 3] = [
        LossCause::LeaseExpired,
        LossCause::KeyDeleted,
        LossCause::SessionClosed,
    ];
}

/// The `error` label of an error: one fixed word per [`Error`] variant.
pub fn error_label(error: &Error) -> &'static str {
    match error {
        Error::InvalidArgument { .. } => "invalid_argument",
        Error::NotHeld { .. } => "not_held",
        Error::Locked => "locked",
        Error::WouldDeadlock { .. } => "would_deadlock",
        Error::NotLeader => "not_leader",
        Error::NoLeader => "no_leader",
        Error::SessionExpired { .. } => "session_expired",
        Error::SessionClosed => "session_closed",
        Error::LeaseNotFound { .. } => "lease_not_found",
        Error::Compacted { .. } => "compacted",
        Error::PermissionDenied { .. } => "permission_denied",
        Error::Unavailable { .. } => "unavailable",
        Error::Timeout => "timeout",
        Error::Unsupported { .. } => "unsupported",
        Error::Cancelled => "cancelled",
        Error::Backend { .. } => "backend",
        #[allow(unreachable_patterns)]
        _ => "other",
    }
}

/// Registers (describes) every coord metric with the installed recorder: units and help text,
/// which exporters such as Prometheus print. Optional; call it once after installing it.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(ACQUISITIONS, "Locks taken and leaderships won");
    describe_histogram!(WAIT, Unit::Seconds, "Time from an acquire call to held");
    describe_histogram!(QUEUE, "Contenders ahead seen by an acquire");
    describe_counter!(TIMEOUTS, "Acquires whose deadline passed");
    describe_counter!(
        CANCELLATIONS,
        "Acquire futures dropped before they finished"
    );
    describe_counter!(FAILURES, "Acquires that failed with an error");
    describe_gauge!(HELD, "Held now (elections: 1 while this process leads)");
    describe_histogram!(HOLD, Unit::Seconds, "Time from held to released or lost");
    describe_counter!(LOSSES, "Holds lost without their release, by cause");
    describe_counter!(LEADER_CHANGES, "Election leader changes seen by observers");
    describe_histogram!(KEEPALIVE, Unit::Seconds, "Lease renewal round trip");
    describe_counter!(KEEPALIVE_FAILURES, "Lease renewals that failed");
    describe_counter!(SESSIONS_LOST, "Sessions whose lease was lost");
    describe_histogram!(BACKEND_CALL, Unit::Seconds, "One backend call");
    describe_counter!(BACKEND_ERRORS, "Backend calls that failed");
}

/// Bucket bounds (seconds) that suit coord's `_seconds` histograms, for exporters that need
/// them (e.g. `PrometheusBuilder::set_buckets_for_metric`): from 100 µs (a call on coord-mem or
/// a local etcd) to a minute (a long wait for a lock).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

const ACQUISITIONS: &str = "coord_acquisitions_total";
const WAIT: &str = "coord_acquire_wait_seconds";
const QUEUE: &str = "coord_queue_length";
const TIMEOUTS: &str = "coord_acquire_timeouts_total";
const CANCELLATIONS: &str = "coord_acquire_cancellations_total";
const FAILURES: &str = "coord_acquire_failures_total";
const HELD: &str = "coord_held";
const HOLD: &str = "coord_hold_seconds";
const LOSSES: &str = "coord_losses_total";
const LEADER_CHANGES: &str = "coord_election_leader_changes_total";
pub(crate) const KEEPALIVE: &str = "coord_session_keepalive_seconds";
pub(crate) const KEEPALIVE_FAILURES: &str = "coord_session_keepalive_failures_total";
pub(crate) const SESSIONS_LOST: &str = "coord_sessions_lost_total";
pub(crate) const BACKEND_CALL: &str = "coord_backend_call_seconds";
pub(crate) const BACKEND_ERRORS: &str = "coord_backend_errors_total";

/// The metric handles of one primitive (one kind, one name or group): registered once, then
/// only bumped. A cheap `Clone`.
#[derive(Clone)]
pub struct PrimitiveMetrics {
    inner: Arc<Handles>,
}

struct Handles {
    labels: Vec<Label>,
    acquisitions: Counter,
    wait: Histogram,
    queue: Histogram,
    timeouts: Counter,
    cancellations: Counter,
    held: Gauge,
    hold: Histogram,
    losses: [Counter; 3],
}

impl fmt::Debug for PrimitiveMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrimitiveMetrics")
            .field("labels", &self.inner.labels)
            .finish()
    }
}

impl PrimitiveMetrics {
    /// The handles for `primitive` (a short `snake_case` word: `mutex`, `semaphore`, …) named
    /// `name`, labelled as `session` says ([`NameLabels`]). Without name labels, one set of
    /// handles per primitive kind is shared by the session's primitives.
    pub fn new(session: &Session, primitive: &'static str, name: &[u8]) -> PrimitiveMetrics {
        match session.name_labels().label(name) {
            None => {
                let mut cache = lock_unpoisoned(session.metrics_cache());
                cache
                    .entry(primitive)
                    .or_insert_with(|| PrimitiveMetrics::register(primitive, None))
                    .clone()
            }
            Some(label) => PrimitiveMetrics::register(primitive, Some(label)),
        }
    }

    fn register(primitive: &'static str, name: Option<String>) -> PrimitiveMetrics {
        let mut labels = vec![Label::from_static_parts("primitive", primitive)];
        if let Some(name) = name {
            labels.push(Label::new("name", name));
        }
        let with = |key: &'static str, value: &'static str| {
            let mut l = labels.clone();
            l.push(Label::from_static_parts(key, value));
            l
        };
        let losses = LossCause::ALL.map(|c| metrics::counter!(LOSSES, with("cause", c.label())));
        PrimitiveMetrics {
            inner: Arc::new(Handles {
                acquisitions: metrics::counter!(ACQUISITIONS, labels.clone()),
                wait: metrics::histogram!(WAIT, labels.clone()),
                queue: metrics::histogram!(QUEUE, labels.clone()),
                timeouts: metrics::counter!(TIMEOUTS, labels.clone()),
                cancellations: metrics::counter!(CANCELLATIONS, labels.clone()),
                held: metrics::gauge!(HELD, labels.clone()),
                hold: metrics::histogram!(HOLD, labels.clone()),
                losses,
                labels,
            }),
        }
    }

    /// Starts timing an acquire. Record its end on the [`Attempt`]; dropping it unfinished
    /// counts a cancellation.
    pub fn attempt(&self) -> Attempt {
        Attempt {
            metrics: self.clone(),
            started: Instant::now(),
            done: AtomicBool::new(false),
        }
    }

    /// A hold that was not acquired here (e.g. a resumed leadership): counts in `coord_held`
    /// and `coord_hold_seconds`, not as an acquisition.
    pub fn resumed(&self) -> Hold {
        self.inner.held.increment(1.0);
        Hold {
            metrics: self.clone(),
            since: Instant::now(),
            ended: AtomicBool::new(false),
            left_gauge: AtomicBool::new(false),
        }
    }

    fn failure(&self, error: &Error) {
        // Registered on the failure path only: failures are rare, and the error words few.
        let mut labels = self.inner.labels.clone();
        labels.push(Label::from_static_parts("error", error_label(error)));
        metrics::counter!(FAILURES, labels).increment(1);
    }
}

/// One acquire in progress, from [`PrimitiveMetrics::attempt`].
#[derive(Debug)]
pub struct Attempt {
    metrics: PrimitiveMetrics,
    started: Instant,
    done: AtomicBool,
}

impl Attempt {
    /// The acquire succeeded, with `queue_length` contenders seen ahead: counts it, records the
    /// wait, and starts the hold (keep it in the guard).
    pub fn acquired(&self, queue_length: usize) -> Hold {
        let m = &self.metrics.inner;
        if !self.done.swap(true, Ordering::Relaxed) {
            m.acquisitions.increment(1);
            m.wait.record(self.started.elapsed().as_secs_f64());
            m.queue.record(queue_length as f64);
        }
        self.metrics.resumed()
    }

    /// The acquire failed with `error` ([`Error::Timeout`] counts as a timeout).
    pub fn failed(&self, error: &Error) {
        if self.done.swap(true, Ordering::Relaxed) {
            return;
        }
        match error {
            Error::Timeout => self.metrics.inner.timeouts.increment(1),
            e => self.metrics.failure(e),
        }
    }

    /// Records the outcome of `result`: [`Attempt::failed`] on an error; on success the caller
    /// calls [`Attempt::acquired`] itself, where it builds the guard.
    pub fn check<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }

    /// Runs `acquire` (which records through this attempt) with a deadline: when it passes,
    /// `acquire` is dropped, a timeout counted (not a cancellation), and [`Error::Timeout`]
    /// returned.
    pub async fn deadline<T>(
        &self,
        timeout: Duration,
        acquire: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(timeout, acquire).await {
            Ok(result) => result,
            Err(_) => {
                self.failed(&Error::Timeout);
                Err(Error::Timeout)
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done.load(Ordering::Relaxed) {
            self.metrics.inner.cancellations.increment(1);
        }
    }
}

/// A hold in progress (in `coord_held`), from [`Attempt::acquired`]. Ends once: released,
/// lost, or dropped (counted as released).
#[derive(Debug)]
pub struct Hold {
    metrics: PrimitiveMetrics,
    since: Instant,
    ended: AtomicBool,
    /// Out of `coord_held` already ([`Hold::releasing`]).
    left_gauge: AtomicBool,
}

impl Hold {
    /// The release is about to be sent: leaves `coord_held` now, before the next holder can
    /// see the key gone and enter it (so the gauge never shows two holders of a mutex). How
    /// the hold ended is still recorded after ([`Hold::released`], [`Hold::lost`]).
    pub fn releasing(&self) {
        if !self.left_gauge.swap(true, Ordering::Relaxed) {
            self.metrics.inner.held.decrement(1.0);
        }
    }

    /// The hold ended by its release.
    pub fn released(&self) {
        self.end();
    }

    /// The hold was lost for `cause`.
    pub fn lost(&self, cause: LossCause) {
        if self.end() {
            let index = LossCause::ALL.iter().position(|c| *c == cause).unwrap_or(0);
            self.metrics.inner.losses[index].increment(1);
        }
    }

    /// Ends the hold as `error` says: a loss when it reports one ([`LossCause::of`]), else
    /// nothing (the hold goes on, e.g. after a transient failure).
    pub fn lost_by(&self, error: &Error) {
        if let Some(cause) = LossCause::of(error) {
            self.lost(cause);
        }
    }

    /// Whether the hold has ended.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Ends it; `true` the first time.
    fn end(&self) -> bool {
        if self.ended.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.releasing();
        self.metrics
            .inner
            .hold
            .record(self.since.elapsed().as_secs_f64());
        true
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.end();
    }
}

/// The session's metric settings and shared handles.
#[derive(Default)]
pub(crate) struct SessionTelemetry {
    pub name_labels: NameLabels,
    /// Handles per primitive kind, when names are not labels.
    pub cache: std::sync::Mutex<HashMap<&'static str, PrimitiveMetrics>>,
}

/// The counter of leader changes for an election observer.
pub(crate) fn leader_changes(name_labels: &NameLabels, name: &[u8]) -> Counter {
    match name_labels.label(name) {
        None => metrics::counter!(LEADER_CHANGES),
        Some(name) => metrics::counter!(LEADER_CHANGES, "name" => name),
    }
}

/// Which operation a [`span`] covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpanOp {
    /// `coord.acquire`: lock, read, write, try_*, recipes' acquires.
    Acquire,
    /// `coord.release`: unlock.
    Release,
    /// `coord.campaign`.
    Campaign,
    /// `coord.resign`.
    Resign,
}

macro_rules! op_span {
    ($op:literal, $primitive:expr, $name:expr, $key:expr) => {
        // Field values are only formatted when a subscriber wants the span.
        tracing::info_span!(
            $op,
            primitive = $primitive,
            name = %String::from_utf8_lossy($name),
            key = %String::from_utf8_lossy($key),
            token = tracing::field::Empty,
            revision = tracing::field::Empty,
        )
    };
}

/// The span of one primitive operation on `key` of the primitive named `name`: `token` and
/// `revision` are recorded once known ([`record_held`]).
pub fn span(op: SpanOp, primitive: &'static str, name: &[u8], key: &[u8]) -> tracing::Span {
    match op {
        SpanOp::Acquire => op_span!("coord.acquire", primitive, name, key),
        SpanOp::Release => op_span!("coord.release", primitive, name, key),
        SpanOp::Campaign => op_span!("coord.campaign", primitive, name, key),
        SpanOp::Resign => op_span!("coord.resign", primitive, name, key),
    }
}

/// Records what was held on a span from [`span`]: the fencing token and the store revision.
pub fn record_held(span: &tracing::Span, token: i64, revision: i64) {
    span.record("token", token);
    span.record("revision", revision);
}

/// The name of a primitive from its key prefix (`name/`).
pub(crate) fn name_of(prefix: &[u8]) -> &[u8] {
    prefix.strip_suffix(b"/").unwrap_or(prefix)
}
