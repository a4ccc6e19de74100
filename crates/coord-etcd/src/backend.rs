//! [`EtcdBackend`]: [`coord_core::Backend`] on etcd v3, one RPC per call.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use coord_core::{
    Backend, BackendLimits, Capabilities, Compare, CompareOp, CompareTarget, DeleteRequest,
    DeleteResponse, Error, KeyRange, KeyValue, LeaseGrant, LeaseId, LeaseTimeToLive, PutRequest,
    PutResponse, RangeRequest, RangeResponse, Result, Revision, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchRequest, WatchStream,
};
use etcd_client::{
    CompactionOptions, DeleteOptions, GetOptions, LeaseClient, LeaseGrantOptions,
    LeaseTimeToLiveOptions, PutOptions,
};
use futures::StreamExt;
use tower::util::BoxCloneSyncService;

use crate::config::EtcdConfig;
use crate::error::{self, EtcdError, Kind};
use crate::keep_alive::{self, GrpcOpener, KeepAlives};
use crate::transport::Transport;
use crate::watch::{self, WatchSettings};

/// [`coord_core::Backend`] on etcd v3 (through `etcd-client`).
///
/// Cheap to clone: clones share the transport (one HTTP/2 connection to one member at a
/// time, failed over to the other endpoints; see the crate docs). Every unary call is one RPC bounded
/// by the request timeout; a call that gets no answer in time fails with
/// [`Error::Unavailable`]. Failures map into [`Error`] by meaning (see the crate docs), with
/// etcd's error kept as the source.
///
/// `lease_keep_alive` renews over **one** `LeaseKeepAlive` stream shared by every lease of the
/// backend (and its clones), as etcd's Go client does: a renewal is one message each way, and
/// 1,000 sessions hold one stream on etcd, not 1,000. The stream is opened by the first
/// renewal, re-opened by the next renewal after it failed (those waiting on it get
/// [`Error::Unavailable`]), and closed after two minutes without renewals or when the last
/// clone of the backend is dropped.
#[derive(Clone)]
pub struct EtcdBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: EtcdConfig,
    transport: Transport,
    kv: etcd_client::KvClient,
    watch: etcd_client::WatchClient,
    lease: LeaseClient,
    keep_alives: KeepAlives,
}

impl fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl EtcdBackend {
    /// A builder: [`EtcdConfig`] with defaults and no endpoints yet.
    pub fn builder() -> EtcdConfig {
        EtcdConfig::default()
    }

    /// Connects with `config`; see [`EtcdConfig::connect`].
    pub async fn connect(config: EtcdConfig) -> Result<EtcdBackend> {
        if config.endpoints().is_empty() {
            return Err(Error::invalid("no etcd endpoints given"));
        }
        let transport = Transport::new(config.transport_settings()?)?;
        let channel = etcd_client::Channel::Custom(BoxCloneSyncService::new(transport.clone()));
        let deadline = config.connect_timeout();
        let endpoints = config.endpoints().to_vec();
        let started = Instant::now();
        let unreachable = |last: Option<Error>| Error::Unavailable {
            source: Box::new(EtcdError::Unreachable {
                endpoints: endpoints.join(","),
                after: deadline,
                last,
            }),
        };
        let client = match tokio::time::timeout(
            deadline,
            etcd_client::Client::from_channel(channel, Some(config.connect_options())),
        )
        .await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(error::from_client(e, 0)),
            Err(_) => return Err(unreachable(None)),
        };
        // The transport connects lazily (only authenticating, when a user is set, sends): a request
        // proves a server is there. `Status` needs no permission. Transient failures (refused
        // connection, a TLS alert racing the first request) are retried until the deadline.
        let mut last = None;
        loop {
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                tracing::debug!(?endpoints, ?deadline, "connecting to etcd timed out");
                return Err(unreachable(last));
            }
            let mut maintenance = client.maintenance_client();
            match tokio::time::timeout(left, maintenance.status()).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => {
                    let e = error::from_client(e, 0);
                    if !e.is_retryable() {
                        tracing::debug!(?endpoints, error = %e, "connecting to etcd failed");
                        return Err(e);
                    }
                    last = Some(e);
                    let pause =
                        Duration::from_millis(100).min(deadline.saturating_sub(started.elapsed()));
                    tokio::time::sleep(pause).await;
                }
                Err(_) => return Err(unreachable(last)),
            }
        }
        let max = config.max_response_bytes();
        tracing::debug!(?endpoints, user = ?config.user(), tls = config.uses_tls(), "connected to etcd");
        Ok(EtcdBackend {
            inner: Arc::new(Inner {
                transport: transport.clone(),
                kv: client.kv_client().max_decoding_message_size(max),
                watch: client.watch_client().max_decoding_message_size(max),
                lease: client.lease_client(),
                keep_alives: KeepAlives::new(
                    Arc::new(GrpcOpener { transport }),
                    keep_alive::Settings {
                        request_timeout: config.request_timeout(),
                        idle: keep_alive::IDLE,
                    },
                ),
                config,
            }),
        })
    }

    /// The settings this backend was connected with.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    /// Runs one RPC under the request timeout and maps its error. An attempt that could not
    /// even connect (so the server never saw it) is made again, with a short backoff, while
    /// the deadline allows; like Go's client waiting for a ready connection, a call to a
    /// cluster that is down therefore fails after the request timeout, not at once.
    async fn call<T, F, Fut>(&self, op: &'static str, lease: LeaseId, mut rpc: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let after = self.inner.config.request_timeout();
        let deadline = Instant::now() + after;
        let endpoint_choice = self.inner.transport.generation();
        let attempts = async {
            let mut pause = Duration::from_millis(10);
            loop {
                match rpc().await {
                    Err(e) if error::never_sent(&e) && Instant::now() + pause < deadline => {
                        tracing::trace!(op, error = %e, "etcd connection not ready, retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(200));
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(after, attempts).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                // A member cut off from the others answers "no leader" until it is back:
                // the next requests go to another member.
                if error::is_no_leader(&e) {
                    self.inner.transport.demote(endpoint_choice);
                }
                let e = error::from_client(e, lease);
                tracing::debug!(op, error = %e, "etcd request failed");
                Err(e)
            }
            Err(_) => {
                // A member that accepts requests but answers none (stopped, overloaded): the
                // next requests go to another member.
                self.inner.transport.demote(endpoint_choice);
                tracing::debug!(op, ?after, "etcd request timed out");
                Err(error::timeout(op, after))
            }
        }
    }

    fn watch_settings(&self) -> WatchSettings {
        let config = &self.inner.config;
        let (backoff_initial, backoff_max) = config.watch_backoff();
        WatchSettings {
            open_timeout: config.request_timeout(),
            backoff_initial,
            backoff_max,
            reconnect_timeout: config.watch_reconnect_timeout(),
        }
    }

    /// Fills in the compaction point of a [`Error::Compacted`] mapped from an error message
    /// (etcd's message does not carry it): a watch of `range` from revision 1 is cancelled with
    /// it. When that fails, `requested + 1` (a lower bound) stands in.
    async fn with_compact_revision(
        &self,
        e: Error,
        range: Option<&KeyRange>,
        requested: Revision,
    ) -> Error {
        let Error::Compacted {
            compact_revision: 0,
        } = e
        else {
            return e;
        };
        let range = range.cloned().unwrap_or_else(|| KeyRange::key(vec![0]));
        let probe = async {
            let req = WatchRequest::new(range).with_start_revision(1);
            let mut stream = watch::open(self.inner.watch.clone(), req, self.watch_settings())
                .await
                .ok()?;
            match stream.next().await {
                Some(Err(Error::Compacted { compact_revision })) => Some(compact_revision),
                _ => None,
            }
        };
        let limit = self
            .inner
            .config
            .request_timeout()
            .min(Duration::from_secs(2));
        let compact_revision = tokio::time::timeout(limit, probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(requested.saturating_add(1).max(1));
        Error::Compacted { compact_revision }
    }
}

/// A [`KeyRange`] in etcd's terms.
///
/// etcd names keys by a `(key, range_end)` pair with sentinels: an empty `range_end` is the
/// single key `key`, `range_end == [0]` is "every key from `key` on", `key == range_end == [0]`
/// is every key, and an empty `key` is refused ("key is not provided"). coord-core's ranges are
/// literal, so the sentinels are made here and nowhere else.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EtcdRange {
    /// The keys of etcd's `(key, range_end)`.
    Pair {
        /// etcd's `key`, never empty.
        key: Vec<u8>,
        /// etcd's `range_end`, sentinels included.
        end: Vec<u8>,
    },
    /// No key at all (a literal range whose end is at or before its start). etcd has no pair
    /// for it that every RPC takes: `key == range_end` (any key but `[0]`) reads and deletes
    /// nothing, but a watch refuses it ("mvcc: watcher range is empty"). See [`etcd_range`].
    Empty {
        /// A non-empty key other than `[0]`, where the empty range starts (so etcd's
        /// permission check looks at the key the caller named).
        at: Vec<u8>,
    },
}

impl EtcdRange {
    /// `(key, range_end)` for a range or delete request. An empty range is `(at, at)`: etcd
    /// (checked on 3.4) reads it as the empty interval `[at, at)`, finds nothing, deletes
    /// nothing without raising the revision, answers a transaction with its header revision,
    /// and its duplicate-key check does not see it next to a put of `at` in one transaction.
    pub(crate) fn into_pair(self) -> (Vec<u8>, Vec<u8>) {
        match self {
            EtcdRange::Pair { key, end } => (key, end),
            EtcdRange::Empty { at } => (at.clone(), at),
        }
    }
}

/// How `range` goes to etcd.
///
/// - `Key(k)`: `(k, [])`.
/// - `Prefix(p)`: `(p, end)` with [`prefix_end`](coord_core::prefix_end) of `p`, or `[0]`
///   where it has none (empty or `0xff` prefix); the empty prefix is `([0], [0])`.
/// - `FromKey(s)`: `(s, [0])`; from the empty key, `([0], [0])`.
/// - `Range { start, end }`: etcd refuses an empty key, and a store holds none, so an empty
///   `start` is `[0]` (the first key there can be). Then `(start, end)` when `end` is above
///   `start` (it then is neither empty nor `[0]`); otherwise the range is empty, and an empty
///   `end` or `[0]` must not reach etcd, where they mean one key or every key from `start`.
///   An empty range goes to etcd as [`EtcdRange::Empty`]: answering it locally would lose the
///   header revision a read or a transaction answers with.
pub(crate) fn etcd_range(range: &KeyRange) -> EtcdRange {
    if let KeyRange::Key(k) = range {
        return EtcdRange::Pair {
            key: k.clone(),
            end: Vec::new(),
        };
    }
    let key = match range.start() {
        [] => vec![0],
        start => start.to_vec(),
    };
    match range.end_bound() {
        None => EtcdRange::Pair { key, end: vec![0] },
        Some(end) if end > key => EtcdRange::Pair { key, end },
        Some(_) if key == [0] => EtcdRange::Empty { at: vec![0, 0] },
        Some(_) => EtcdRange::Empty { at: key },
    }
}

pub(crate) fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn convert_kv_owned(kv: etcd_client::KeyValue) -> KeyValue {
    let (create_revision, mod_revision, version, lease) = (
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        kv.lease(),
    );
    let (key, value) = kv.into_key_value();
    KeyValue {
        key,
        value,
        create_revision,
        mod_revision,
        version,
        lease,
    }
}

fn get_options(req: &RangeRequest) -> (Vec<u8>, GetOptions) {
    let (key, end) = etcd_range(&req.range).into_pair();
    let mut options = GetOptions::new();
    if !end.is_empty() {
        options = options.with_range(end);
    }
    if let Some((target, order)) = req.sort {
        let target = match target {
            SortTarget::Key => etcd_client::SortTarget::Key,
            SortTarget::Create => etcd_client::SortTarget::Create,
            SortTarget::Mod => etcd_client::SortTarget::Mod,
        };
        let order = match order {
            SortOrder::Ascend => etcd_client::SortOrder::Ascend,
            SortOrder::Descend => etcd_client::SortOrder::Descend,
        };
        options = options.with_sort(target, order);
    }
    if req.limit > 0 {
        options = options.with_limit(req.limit);
    }
    if req.max_create_revision > 0 {
        options = options.with_max_create_revision(req.max_create_revision);
    }
    if req.max_mod_revision > 0 {
        options = options.with_max_mod_revision(req.max_mod_revision);
    }
    if req.revision > 0 {
        options = options.with_revision(req.revision);
    }
    if req.keys_only {
        options = options.with_keys_only();
    }
    if req.count_only {
        options = options.with_count_only();
    }
    // etcd serves a transaction serializably only when every operation of it is a
    // serializable range.
    if req.serializable {
        options = options.with_serializable();
    }
    (key, options)
}

fn put_options(req: &PutRequest) -> PutOptions {
    let mut options = PutOptions::new();
    if req.lease != 0 {
        options = options.with_lease(req.lease);
    }
    if req.prev_kv {
        options = options.with_prev_key();
    }
    options
}

fn delete_options(req: &DeleteRequest) -> (Vec<u8>, DeleteOptions) {
    let (key, end) = etcd_range(&req.range).into_pair();
    let mut options = DeleteOptions::new();
    if !end.is_empty() {
        options = options.with_range(end);
    }
    if req.prev_kv {
        options = options.with_prev_key();
    }
    (key, options)
}

fn compare(c: &Compare) -> etcd_client::Compare {
    let op = match c.op {
        CompareOp::Equal => etcd_client::CompareOp::Equal,
        CompareOp::NotEqual => etcd_client::CompareOp::NotEqual,
        CompareOp::Greater => etcd_client::CompareOp::Greater,
        CompareOp::Less => etcd_client::CompareOp::Less,
    };
    let key = c.key.clone();
    match &c.target {
        CompareTarget::CreateRevision(r) => etcd_client::Compare::create_revision(key, op, *r),
        CompareTarget::ModRevision(r) => etcd_client::Compare::mod_revision(key, op, *r),
        CompareTarget::Version(v) => etcd_client::Compare::version(key, op, *v),
        CompareTarget::Value(v) => etcd_client::Compare::value(key, op, v.clone()),
        CompareTarget::Lease(l) => etcd_client::Compare::lease(key, op, *l),
    }
}

fn txn_op(op: &TxnOp) -> etcd_client::TxnOp {
    match op {
        TxnOp::Range(r) => {
            let (key, options) = get_options(r);
            etcd_client::TxnOp::get(key, Some(options))
        }
        TxnOp::Put(p) => {
            etcd_client::TxnOp::put(p.key.clone(), p.value.clone(), Some(put_options(p)))
        }
        TxnOp::Delete(d) => {
            let (key, options) = delete_options(d);
            etcd_client::TxnOp::delete(key, Some(options))
        }
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map(|h| h.revision()).unwrap_or(0)
}

#[async_trait]
impl Backend for EtcdBackend {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let ops = || txn.success.iter().chain(txn.failure.iter());
        // Which lease a "lease not found" is about: the first one a put names.
        let lease = ops()
            .find_map(|op| match op {
                TxnOp::Put(p) if p.lease != 0 => Some(p.lease),
                _ => None,
            })
            .unwrap_or(0);
        // etcd 3.4 serves a transaction with no operation at all from the member's own state,
        // without a linearizable read (it counts as "serializable"), so on a lagging follower
        // its compares would see the past. One count-only range makes it linearizable; its
        // answer is dropped below.
        let compares_only = txn.success.is_empty() && txn.failure.is_empty();
        let success = if compares_only {
            let key = txn.compares.first().map_or(&b"\0"[..], |c| &c.key[..]);
            vec![etcd_client::TxnOp::get(
                key,
                Some(GetOptions::new().with_count_only()),
            )]
        } else {
            txn.success.iter().map(txn_op).collect()
        };
        let etcd_txn = etcd_client::Txn::new()
            .when(txn.compares.iter().map(compare).collect::<Vec<_>>())
            .and_then(success)
            .or_else(txn.failure.iter().map(txn_op).collect::<Vec<_>>());
        let resp = match self
            .call("txn", lease, || {
                let (mut kv, etcd_txn) = (self.inner.kv.clone(), etcd_txn.clone());
                async move { kv.txn(etcd_txn).await }
            })
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                let past = ops().find_map(|op| match op {
                    TxnOp::Range(r) if r.revision > 0 => Some((r.range.clone(), r.revision)),
                    _ => None,
                });
                let (range, rev) = match &past {
                    Some((range, rev)) => (Some(range), *rev),
                    None => (None, 0),
                };
                return Err(self.with_compact_revision(e, range, rev).await);
            }
        };
        let header_revision = header_revision(resp.header());
        let responses = if compares_only {
            Vec::new()
        } else {
            resp.op_responses()
        };
        let responses = responses
            .into_iter()
            .map(|r| match r {
                etcd_client::TxnOpResponse::Get(mut g) => Ok(TxnOpResponse::Range(RangeResponse {
                    header_revision,
                    count: g.count(),
                    more: g.more(),
                    kvs: g.take_kvs().into_iter().map(convert_kv_owned).collect(),
                })),
                etcd_client::TxnOpResponse::Put(mut p) => Ok(TxnOpResponse::Put(PutResponse {
                    header_revision,
                    prev_kv: p.take_prev_key().map(convert_kv_owned),
                })),
                etcd_client::TxnOpResponse::Delete(mut d) => {
                    Ok(TxnOpResponse::Delete(DeleteResponse {
                        header_revision,
                        deleted: d.deleted(),
                        prev_kvs: d
                            .take_prev_kvs()
                            .into_iter()
                            .map(convert_kv_owned)
                            .collect(),
                    }))
                }
                etcd_client::TxnOpResponse::Txn(_) => Err(Error::Backend {
                    source: "etcd answered a nested transaction that was never sent".into(),
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TxnResponse {
            succeeded: resp.succeeded(),
            header_revision,
            responses,
        })
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let (key, options) = get_options(&req);
        let rpc = || {
            let (mut kv, key, options) = (self.inner.kv.clone(), key.clone(), options.clone());
            async move { kv.get(key, Some(options)).await }
        };
        let mut resp = match self.call("range", 0, rpc).await {
            Ok(resp) => resp,
            Err(e) => {
                return Err(self
                    .with_compact_revision(e, Some(&req.range), req.revision)
                    .await)
            }
        };
        Ok(RangeResponse {
            header_revision: header_revision(resp.header()),
            count: resp.count(),
            more: resp.more(),
            kvs: resp.take_kvs().into_iter().map(convert_kv_owned).collect(),
        })
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        let options = put_options(&req);
        let rpc = || {
            let mut kv = self.inner.kv.clone();
            let (key, value, options) = (req.key.clone(), req.value.clone(), options.clone());
            async move { kv.put(key, value, Some(options)).await }
        };
        let mut resp = self.call("put", req.lease, rpc).await?;
        Ok(PutResponse {
            header_revision: header_revision(resp.header()),
            prev_kv: resp.take_prev_key().map(convert_kv_owned),
        })
    }

    async fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse> {
        let (key, options) = delete_options(&req);
        let rpc = || {
            let (mut kv, key, options) = (self.inner.kv.clone(), key.clone(), options.clone());
            async move { kv.delete(key, Some(options)).await }
        };
        let mut resp = self.call("delete", 0, rpc).await?;
        Ok(DeleteResponse {
            header_revision: header_revision(resp.header()),
            deleted: resp.deleted(),
            prev_kvs: resp
                .take_prev_kvs()
                .into_iter()
                .map(convert_kv_owned)
                .collect(),
        })
    }

    async fn lease_grant(&self, ttl: i64, id: Option<LeaseId>) -> Result<LeaseGrant> {
        let limits = self.limits();
        if ttl < limits.min_ttl || ttl > limits.max_ttl {
            return Err(Error::invalid(format!(
                "lease TTL {ttl} s is outside [{}, {}]",
                limits.min_ttl, limits.max_ttl
            )));
        }
        let mut options = LeaseGrantOptions::new();
        if let Some(id) = id {
            options = options.with_id(id);
        }
        let rpc = || {
            let (mut lease, options) = (self.inner.lease.clone(), options.clone());
            async move { lease.grant(ttl, Some(options)).await }
        };
        let resp = self.call("lease_grant", id.unwrap_or(0), rpc).await?;
        if !resp.error().is_empty() {
            let kind = error::classify_message(resp.error()).unwrap_or(Kind::Other);
            return Err(error::described(kind, resp.error(), resp.id()));
        }
        Ok(LeaseGrant {
            id: resp.id(),
            ttl: resp.ttl(),
        })
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<()> {
        let rpc = || {
            let mut lease = self.inner.lease.clone();
            async move { lease.revoke(id).await }
        };
        self.call("lease_revoke", id, rpc).await?;
        Ok(())
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        let result = self.inner.keep_alives.renew(id).await;
        if let Err(e) = &result {
            tracing::debug!(lease = id, error = %e, "etcd lease keep-alive failed");
        }
        result
    }

    async fn lease_time_to_live(&self, id: LeaseId, with_keys: bool) -> Result<LeaseTimeToLive> {
        let mut options = LeaseTimeToLiveOptions::new();
        if with_keys {
            options = options.with_keys();
        }
        let rpc = || {
            let (mut lease, options) = (self.inner.lease.clone(), options.clone());
            async move { lease.time_to_live(id, Some(options)).await }
        };
        let resp = self.call("lease_time_to_live", id, rpc).await?;
        // etcd answers an unknown lease with TTL -1 rather than an error.
        if resp.ttl() < 0 {
            return Err(Error::LeaseNotFound { lease: id });
        }
        Ok(LeaseTimeToLive {
            id: resp.id(),
            ttl: resp.ttl(),
            granted_ttl: resp.granted_ttl(),
            keys: resp.keys().to_vec(),
        })
    }

    async fn lease_list(&self) -> Result<Vec<LeaseId>> {
        // etcd 3.4 answers LeaseLeases from the member's own state, which on a follower can lag
        // behind grants and revokes already acknowledged. A linearizable read first makes the
        // member catch up to the leader's commit index.
        let barrier = || {
            let mut kv = self.inner.kv.clone();
            async move {
                kv.get(vec![0u8], Some(GetOptions::new().with_count_only()))
                    .await
            }
        };
        self.call("lease_list", 0, barrier).await?;
        let rpc = || {
            let mut lease = self.inner.lease.clone();
            async move { lease.leases().await }
        };
        let resp = self.call("lease_list", 0, rpc).await?;
        Ok(resp.leases().iter().map(|l| l.id()).collect())
    }

    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        watch::open(self.inner.watch.clone(), req, self.watch_settings()).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let rpc = || {
            let mut kv = self.inner.kv.clone();
            async move { kv.compact(revision, Some(CompactionOptions::new())).await }
        };
        match self.call("compact", 0, rpc).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.with_compact_revision(e, None, revision).await),
        }
    }

    /// Every optional capability: etcd's whole API.
    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    fn limits(&self) -> BackendLimits {
        self.inner.config.limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &[u8], end: &[u8]) -> EtcdRange {
        EtcdRange::Pair {
            key: key.to_vec(),
            end: end.to_vec(),
        }
    }

    fn empty(at: &[u8]) -> EtcdRange {
        EtcdRange::Empty { at: at.to_vec() }
    }

    fn range(start: &[u8], end: &[u8]) -> KeyRange {
        KeyRange::Range {
            start: start.to_vec(),
            end: end.to_vec(),
        }
    }

    /// etcd's sentinels come only from the forms that mean them; a literal range never turns
    /// into one.
    #[test]
    fn ranges_in_etcd_terms() {
        let cases = [
            (KeyRange::key("k"), pair(b"k", b"")),
            (KeyRange::prefix("a/"), pair(b"a/", b"a0")),
            (KeyRange::prefix(""), pair(b"\0", b"\0")),
            (
                KeyRange::prefix(b"\xff\xff".to_vec()),
                pair(b"\xff\xff", b"\0"),
            ),
            (KeyRange::prefix(b"\0".to_vec()), pair(b"\0", b"\x01")),
            (KeyRange::FromKey(b"k".to_vec()), pair(b"k", b"\0")),
            (KeyRange::FromKey(Vec::new()), pair(b"\0", b"\0")),
            (range(b"a", b"b"), pair(b"a", b"b")),
            (range(b"", b"b"), pair(b"\0", b"b")),
            (range(b"", b"\0\0"), pair(b"\0", b"\0\0")),
            // Empty: an end at or before the start, the empty end and [0] among them.
            (range(b"a", b""), empty(b"a")),
            (range(b"a", b"\0"), empty(b"a")),
            (range(b"b", b"a"), empty(b"b")),
            (range(b"a", b"a"), empty(b"a")),
            (range(b"", b""), empty(b"\0\0")),
            (range(b"", b"\0"), empty(b"\0\0")),
            (range(b"\0", b"\0"), empty(b"\0\0")),
        ];
        for (range, expected) in cases {
            assert_eq!(etcd_range(&range), expected, "{range:?}");
        }
        assert_eq!(
            etcd_range(&range(b"b", b"a")).into_pair(),
            (b"b".to_vec(), b"b".to_vec())
        );
    }
}
