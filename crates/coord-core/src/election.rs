//! Leader election, wire-compatible with etcd's Go `concurrency.Election`.

use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use tracing::Instrument;

use crate::backend::{Backend, DynBackend};

use crate::error::{Error, Result};
use crate::held::HeldKey;
use crate::kv::{KeyValue, PutRequest, RangeRequest, Revision};
use crate::names::{name_prefix, session_key};
use crate::observe::LeaderStream;
use crate::queue::Queue;
use crate::session::Session;
use crate::telemetry::{self, Attempt, NameLabels, PrimitiveMetrics, SpanOp};
use crate::txn::{Compare, CompareOp, Txn, TxnOp};
use crate::wait::wait_turn;

/// A named election: at most one leader at a time among the sessions campaigning on it.
///
/// Layout (Go's): each candidate writes `name/<lease id in hex>` with its proposal as value, on
/// its session's lease; the key with the smallest create revision is the leader, the others
/// wait in create-revision order. Within one session, campaigns on one name take turns
/// in-process, since they share the session's key.
#[derive(Debug, Clone)]
pub struct Election {
    session: Session,
    queue: Queue,
    key: Vec<u8>,
    metrics: PrimitiveMetrics,
}

/// The `primitive` label of an election's metrics and spans.
const METRIC: &str = "election";

impl Election {
    /// An election named `name` (see the crate docs for what names may be).
    pub fn new(session: &Session, name: impl AsRef<[u8]>) -> Result<Election> {
        let prefix = name_prefix(name.as_ref())?;
        Ok(Election {
            session: session.clone(),
            key: session_key(&prefix, session.lease()),
            metrics: PrimitiveMetrics::new(session, METRIC, name.as_ref()),
            queue: Queue::same_prefix(prefix),
        })
    }

    /// The key prefix of the election: `name/`.
    pub fn prefix(&self) -> &[u8] {
        &self.queue.watch_prefix
    }

    /// The key this session campaigns with: `name/<lease hex>`.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Campaigns with `value` and waits until elected.
    ///
    /// If this session already has a candidacy on the name (e.g. after a restart with the same
    /// lease) it is taken over and its value replaced by `value`. Fails with
    /// [`Error::SessionExpired`] if the session ends while waiting, or [`Error::NotHeld`] if the
    /// candidacy's key is deleted while it waits: never reports a leadership it does not have.
    /// A proposal the store could not take in one request is [`Error::InvalidArgument`] before
    /// anything is sent.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future withdraws the candidacy in the background (the lease TTL
    /// is the backstop), so later candidates are not held up.
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership> {
        let attempt = self.metrics.attempt();
        self.campaign_with(value.into(), &attempt).await
    }

    async fn campaign_with(&self, value: Vec<u8>, attempt: &Attempt) -> Result<Leadership> {
        let name = telemetry::name_of(&self.queue.watch_prefix);
        let span = telemetry::span(SpanOp::Campaign, METRIC, name, &self.key);
        let elected = self.campaign_inner(value).instrument(span.clone()).await;
        let (leadership, ahead) = attempt.check(elected)?;
        telemetry::record_held(&span, leadership.rev(), leadership.revision);
        let Leadership { held, revision } = leadership;
        let held = held.with_hold(attempt.acquired(ahead));
        Ok(Leadership { held, revision })
    }

    /// Campaigns; the leadership and how many candidates were ahead at first.
    async fn campaign_inner(&self, value: Vec<u8>) -> Result<(Leadership, usize)> {
        self.queue
            .check_size(&self.session, &self.key, &value, "leadership")?;
        let turn = self.session.turn(&self.key, true).await?;
        let (held, enqueued) = self
            .queue
            .join(
                &self.session,
                self.key.clone(),
                &value,
                "leadership",
                turn.into(),
                true,
            )
            .await?;
        let adopted_stale = matches!(&enqueued.adopted, Some(kv) if kv.value != value);
        let ahead = enqueued.position;
        let (revision, watch) = wait_turn(&self.queue, &held, enqueued).await?;
        if let Some(watch) = watch {
            held.keep_watching(watch);
        }
        let leadership = Leadership { held, revision };
        if adopted_stale {
            leadership.proclaim(value).await?;
        }
        tracing::debug!(
            key = %String::from_utf8_lossy(leadership.key()),
            rev = leadership.rev(),
            "elected"
        );
        Ok((leadership, ahead))
    }

    /// [`Election::campaign`] with a deadline: [`Error::Timeout`] when it passes, withdrawing the
    /// candidacy.
    pub async fn campaign_timeout(
        &self,
        value: impl Into<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Leadership> {
        let attempt = self.metrics.attempt();
        let campaign = self.campaign_with(value.into(), &attempt);
        attempt.deadline(timeout, campaign).await
    }

    /// The current leader's key-value (key, proposal, create revision = its term's token), or
    /// [`Error::NoLeader`].
    pub async fn leader(&self) -> Result<KeyValue> {
        self.observer().leader().await
    }

    /// A stream of leaders: the current one (or `None`), then every change. See
    /// [`LeaderStream`].
    pub fn observe(&self) -> LeaderStream {
        self.observer().observe()
    }

    fn observer(&self) -> ElectionObserver {
        let prefix = self.queue.watch_prefix.clone();
        ElectionObserver {
            backend: self.session.backend().clone(),
            leader_changes: telemetry::leader_changes(
                self.session.name_labels(),
                telemetry::name_of(&prefix),
            ),
            prefix,
        }
    }

    /// Takes back a leadership this session already holds, from its key and create revision
    /// (e.g. kept by a process that restarted with the same lease). [`Error::NotLeader`] unless
    /// that key exists with that revision on this session's lease and leads the election.
    /// [`Error::Locked`] when this same session still has a live [`Leadership`] or a pending
    /// campaign on the name (use that one; resuming would make a second handle to one key).
    pub async fn resume(&self, key: impl Into<Vec<u8>>, rev: Revision) -> Result<Leadership> {
        let key = key.into();
        self.session.check_usable()?;
        if key != self.key {
            return Err(Error::NotLeader);
        }
        let resp = self
            .session
            .backend()
            .range(RangeRequest::first_created(self.queue.watch_prefix.clone()))
            .await?;
        match resp.kvs.first() {
            Some(kv)
                if kv.key == key
                    && kv.create_revision == rev
                    && kv.lease == self.session.lease() => {}
            _ => return Err(Error::NotLeader),
        }
        // Not waiting for the turn: that would wait for ever behind this session's own
        // leadership of the name.
        let turn = self.session.turn(&self.key, false).await?;
        let held = HeldKey::new(
            self.session.clone(),
            key,
            self.queue.watch_prefix.clone(),
            "leadership",
            Some(turn.into()),
        )
        .existing(rev)
        .with_hold(self.metrics.resumed());
        Ok(Leadership {
            held,
            revision: resp.header_revision,
        })
    }
}

/// Read-only access to an election, without a session (and so without a lease): for tools and
/// clients that only watch who leads.
#[derive(Debug, Clone)]
pub struct ElectionObserver {
    backend: DynBackend,
    prefix: Vec<u8>,
    /// `coord_election_leader_changes_total`, bumped by its streams.
    leader_changes: Counter,
}

impl ElectionObserver {
    /// An observer of the election named `name` on `backend`.
    pub fn new(backend: impl Backend, name: impl AsRef<[u8]>) -> Result<ElectionObserver> {
        Ok(ElectionObserver {
            backend: Arc::new(backend),
            prefix: name_prefix(name.as_ref())?,
            leader_changes: telemetry::leader_changes(&NameLabels::Off, name.as_ref()),
        })
    }

    /// The current leader's key-value, or [`Error::NoLeader`].
    pub async fn leader(&self) -> Result<KeyValue> {
        let resp = self
            .backend
            .range(RangeRequest::first_created(self.prefix.clone()))
            .await?;
        resp.kvs.into_iter().next().ok_or(Error::NoLeader)
    }

    /// A stream of leaders: the current one (or `None`), then every change.
    pub fn observe(&self) -> LeaderStream {
        LeaderStream::start(
            self.backend.clone(),
            self.prefix.clone(),
            self.leader_changes.clone(),
        )
    }
}

/// This session leads the election. End it with [`Leadership::resign`].
///
/// Dropping it without `resign` withdraws the key in the background on the session's runtime;
/// the lease TTL is the backstop. [`Leadership::lost`] tells when leadership ended without a
/// resign (session lost, key deleted).
#[must_use = "dropping the leadership resigns it"]
#[clippy::has_significant_drop]
#[derive(Debug)]
pub struct Leadership {
    held: HeldKey,
    revision: Revision,
}

impl Leadership {
    /// The leader key: `name/<lease hex>`.
    pub fn key(&self) -> &[u8] {
        &self.held.key
    }

    /// The leader key's create revision: the term's identity and fencing token. It strictly
    /// rises from leader to leader.
    pub fn rev(&self) -> Revision {
        self.held.rev
    }

    /// Same as [`Leadership::rev`], by its fencing name.
    pub fn fencing_token(&self) -> Revision {
        self.held.rev
    }

    /// The store revision at which the leadership was seen.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// A compare that holds only while this leadership lasts; put it in your own transactions.
    pub fn is_leader(&self) -> Compare {
        self.held.is_current()
    }

    /// The session holding the leadership.
    pub fn session(&self) -> &Session {
        &self.held.session
    }

    /// Replaces the leader's value, without giving up leadership. [`Error::NotLeader`] when
    /// the leadership was lost.
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        let value = value.into();
        let session = &self.held.session;
        session.check_usable()?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.held.key.to_vec(),
                CompareOp::Equal,
                self.held.rev,
            )])
            .and_then([TxnOp::Put(
                PutRequest::new(self.held.key.to_vec(), value).with_lease(session.lease()),
            )]);
        session.backend().limits().check_txn(&txn, "proclaiming")?;
        let resp = session
            .backend()
            .txn(txn)
            .await
            .map_err(|e| session.lease_error(e))?;
        if resp.succeeded {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// Resolves when the leadership is lost without a resign: the session ended
    /// ([`Error::SessionExpired`], [`Error::SessionClosed`]) or the key was deleted
    /// ([`Error::NotHeld`]). As [`LockGuard::lost`](crate::LockGuard::lost): transient failures
    /// are retried, and every call after the first only waits.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it mid-setup leaves the next call to finish it.
    pub async fn lost(&self) -> Error {
        self.held.lost().await
    }

    /// Gives up leadership: deletes the leader key if it is still this term's, so the next
    /// candidate is elected. [`Error::NotLeader`] when the key had already been deleted, or
    /// [`Error::SessionExpired`] when the session's lease ended.
    pub async fn resign(self) -> Result<()> {
        let name = telemetry::name_of(self.held.name());
        let span = telemetry::span(SpanOp::Resign, METRIC, name, &self.held.key);
        telemetry::record_held(&span, self.held.rev, self.revision);
        match self.held.release().instrument(span).await {
            Err(Error::NotHeld { .. }) => Err(Error::NotLeader),
            other => other,
        }
    }
}
