//! Lease keep-alive: every renewal of a backend goes over **one** `LeaseKeepAlive` gRPC stream,
//! whatever the lease, as etcd's Go client (its lessor) does.
//!
//! etcd's keep-alive stream takes renewal requests naming a lease and answers each with the
//! lease and the TTL now left (0: no such lease). It serves one stream's requests in order, so
//! the answers of one lease come back in the order of its requests. So:
//!
//! - **Dispatcher**: a task owns the stream. [`KeepAlives::renew`] hands it `(lease, reply)`;
//!   it sends the request and queues `reply` behind the lease's earlier ones; an answer goes to
//!   the oldest reply waiting for its lease. A caller that gave up (cancelled, timed out) just
//!   drops its reply's receiver: the answer meant for it is discarded, the others still line up.
//! - **Bounded**: a renewal waits at most the request timeout (then [`Error::Unavailable`]).
//!   The dispatcher keeps a reply only while its request is unanswered, and when the oldest
//!   request has waited the request timeout, the stream is taken for stuck: every waiting caller
//!   gets `Unavailable`, the endpoint is demoted (as for a unary request that timed out) and the
//!   stream dropped.
//! - **Failure**: when the stream fails or ends, every waiting caller gets the failure (a lost
//!   connection or "no leader" is `Unavailable`, so retryable; "no leader" also demotes the
//!   endpoint), and the next renewal opens a new stream, on whichever endpoint the transport
//!   has pinned by then.
//! - **Lifetime**: the stream is opened by the first renewal. After [`IDLE`] without renewals,
//!   the dispatcher drops it and ends (the next renewal starts a new one); dropping the last
//!   clone of the backend ends it at once. No lock is held across an await.
//!
//! Why not `etcd-client`'s `LeaseClient::keep_alive`: its `LeaseKeeper` is bound to the one
//! lease it was opened for, so it costs one stream per lease (1,000 sessions held 1,000 streams
//! on etcd). `etcd-client` has no multiplexed API, so the stream is opened here, on the same
//! transport, with the two small messages of etcd's `rpc.proto` it needs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coord_core::{Error, LeaseId, Result};
use futures::channel::mpsc as link_mpsc;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

use crate::error::{self, Kind};
use crate::transport::Transport;

/// How long the stream (and its dispatcher task) stays without renewals before it is closed.
pub(crate) const IDLE: Duration = Duration::from_secs(120);

/// Renewals queued for the dispatcher before callers wait for room.
const QUEUE: usize = 1024;

/// The settings of [`KeepAlives`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// The longest a renewal waits for its answer.
    pub(crate) request_timeout: Duration,
    /// See [`IDLE`].
    pub(crate) idle: Duration,
}

/// One etcd answer: the lease and the TTL it now has left (0: no such lease).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) lease: LeaseId,
    pub(crate) ttl: i64,
}

/// One open keep-alive stream.
pub(crate) struct Link {
    /// Renewal requests to send, by lease.
    pub(crate) requests: link_mpsc::UnboundedSender<LeaseId>,
    /// etcd's answers; an error or the end means the stream is gone.
    pub(crate) answers: BoxStream<'static, std::result::Result<Answer, Status>>,
    /// The transport's endpoint choice when the stream was opened, for [`Opener::demote`].
    pub(crate) generation: u64,
}

/// Opens keep-alive streams: [`GrpcOpener`] on the transport (unit tests use a fake).
pub(crate) trait Opener: Send + Sync + 'static {
    /// A new stream; it connects when its answers are first polled (the first request is
    /// then already queued, and etcd answers the stream's headers with the first answer).
    fn open(&self) -> Link;

    /// The stream opened under `generation` failed in a way that blames the member (no
    /// leader, no answer in time): requests move to the next endpoint.
    fn demote(&self, generation: u64);
}

/// The lease renewals of one backend, over one stream; see the module docs.
pub(crate) struct KeepAlives {
    opener: Arc<dyn Opener>,
    settings: Settings,
    /// The running dispatcher's queue. Dropping it (with the backend) ends the dispatcher.
    dispatcher: Mutex<Option<mpsc::Sender<Renewal>>>,
}

/// A renewal asked for: the lease and where its answer goes.
struct Renewal {
    lease: LeaseId,
    reply: oneshot::Sender<Result<i64>>,
}

impl KeepAlives {
    pub(crate) fn new(opener: Arc<dyn Opener>, settings: Settings) -> KeepAlives {
        KeepAlives {
            opener,
            settings,
            dispatcher: Mutex::new(None),
        }
    }

    /// Renews `lease` once; returns the TTL left. [`Error::LeaseNotFound`] when the lease is
    /// gone; [`Error::Unavailable`] when no answer came within the request timeout or the
    /// stream failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a renewal dropped before its request left is never sent; one dropped after
    /// has its answer discarded, and other renewals (of this lease or others) are unaffected.
    pub(crate) async fn renew(&self, lease: LeaseId) -> Result<i64> {
        let after = self.settings.request_timeout;
        match tokio::time::timeout(after, self.ask(lease)).await {
            Ok(result) => result,
            Err(_) => Err(error::timeout("lease_keep_alive", after)),
        }
    }

    async fn ask(&self, lease: LeaseId) -> Result<i64> {
        let (reply, answer) = oneshot::channel();
        let mut renewal = Renewal { lease, reply };
        // A dispatcher that closed its queue (idle) between the look-up and the send hands
        // the renewal back; a new dispatcher then takes it. It does not close before serving
        // it, so a second try is enough; the third is a guard.
        for _ in 0..3 {
            let dispatcher = self.dispatcher();
            match dispatcher.send(renewal).await {
                Ok(()) => return answer.await.unwrap_or_else(|_| Err(dispatcher_gone(lease))),
                Err(mpsc::error::SendError(back)) => renewal = back,
            }
        }
        Err(dispatcher_gone(lease))
    }

    /// The running dispatcher's queue, or a new dispatcher's.
    fn dispatcher(&self) -> mpsc::Sender<Renewal> {
        let mut slot = self.dispatcher.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(queue) = slot.as_ref().filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let (queue, renewals) = mpsc::channel(QUEUE);
        let dispatcher = Dispatcher::new(self.opener.clone(), self.settings);
        tokio::spawn(dispatcher.run(renewals));
        *slot = Some(queue.clone());
        queue
    }
}

fn dispatcher_gone(lease: LeaseId) -> Error {
    error::described(Kind::Unavailable, "the keep-alive dispatcher ended", lease)
}

/// The task that owns the stream; see the module docs.
struct Dispatcher {
    opener: Arc<dyn Opener>,
    settings: Settings,
    link: Option<Link>,
    /// Callers waiting for an answer, by lease, oldest first. A lease is here only while a
    /// request for it is unanswered.
    waiters: HashMap<LeaseId, VecDeque<oneshot::Sender<Result<i64>>>>,
    /// When each unanswered request was sent, oldest first (etcd answers in order, so each
    /// answer retires the oldest).
    sent: VecDeque<Instant>,
    /// The last renewal asked for or answered.
    last_used: Instant,
}

impl Dispatcher {
    fn new(opener: Arc<dyn Opener>, settings: Settings) -> Dispatcher {
        Dispatcher {
            opener,
            settings,
            link: None,
            waiters: HashMap::new(),
            sent: VecDeque::new(),
            last_used: Instant::now(),
        }
    }

    async fn run(mut self, mut renewals: mpsc::Receiver<Renewal>) {
        // Closed for idleness: the renewals already queued are served, then the task ends.
        let mut closing = false;
        // The queue still gives renewals.
        let mut open = true;
        loop {
            if !open && self.sent.is_empty() {
                return;
            }
            let wake = match self.sent.front() {
                Some(&oldest) => oldest + self.settings.request_timeout,
                None => self.last_used + self.settings.idle,
            };
            let timer_armed = !closing || !self.sent.is_empty();
            tokio::select! {
                biased;
                answer = next_answer(&mut self.link), if self.link.is_some() => {
                    self.on_answer(answer);
                }
                renewal = renewals.recv(), if open => match renewal {
                    Some(renewal) => self.forward(renewal),
                    None if closing => open = false,
                    // Every handle is gone with the backend: nobody waits for anything.
                    None => return,
                },
                () = tokio::time::sleep_until(wake), if timer_armed => {
                    if self.sent.is_empty() {
                        tracing::debug!("etcd keep-alive stream idle, closing it");
                        self.link = None;
                        renewals.close();
                        closing = true;
                    } else {
                        self.stuck();
                    }
                }
            }
        }
    }

    /// Sends a renewal's request (opening the stream first if needed) and queues its reply.
    fn forward(&mut self, renewal: Renewal) {
        self.last_used = Instant::now();
        let Renewal { lease, reply } = renewal;
        if reply.is_closed() {
            return; // Its caller gave up before it was sent.
        }
        let sent = match &self.link {
            Some(link) => link.requests.unbounded_send(lease).is_ok(),
            None => false,
        };
        if !sent {
            if self.link.is_some() {
                // The stream's sending side is gone: it failed, and its answers will not come.
                self.fail_all(closed_error);
            }
            let link = self.opener.open();
            if link.requests.unbounded_send(lease).is_err() {
                let _ = reply.send(Err(closed_error(lease)));
                return;
            }
            self.link = Some(link);
        }
        self.waiters.entry(lease).or_default().push_back(reply);
        self.sent.push_back(Instant::now());
    }

    fn on_answer(&mut self, answer: Option<std::result::Result<Answer, Status>>) {
        match answer {
            Some(Ok(Answer { lease, ttl })) => {
                self.last_used = Instant::now();
                self.sent.pop_front();
                let Some(queue) = self.waiters.get_mut(&lease) else {
                    tracing::debug!(lease, "etcd keep-alive answer for no request; ignored");
                    return;
                };
                let reply = queue.pop_front();
                if queue.is_empty() {
                    self.waiters.remove(&lease);
                    shrink_if_sparse(&mut self.waiters);
                }
                let result = if ttl > 0 {
                    Ok(ttl)
                } else {
                    Err(Error::LeaseNotFound { lease })
                };
                // A caller that gave up dropped its receiver: the answer is discarded.
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Some(Err(status)) => {
                tracing::debug!(error = %status, waiting = self.sent.len(), "etcd keep-alive stream failed");
                if status.message().contains("no leader") {
                    self.demote();
                }
                self.fail_all(|lease| {
                    error::from_client(etcd_client::Error::GRpcStatus(status.clone()), lease)
                });
            }
            None => {
                tracing::debug!(waiting = self.sent.len(), "etcd keep-alive stream ended");
                self.fail_all(closed_error);
            }
        }
    }

    /// The oldest request got no answer within the request timeout: the member does not serve.
    fn stuck(&mut self) {
        let after = self.settings.request_timeout;
        tracing::debug!(
            ?after,
            waiting = self.sent.len(),
            "etcd keep-alive stream answered nothing in time"
        );
        self.demote();
        self.fail_all(|_| error::timeout("lease_keep_alive", after));
    }

    fn demote(&self) {
        if let Some(link) = &self.link {
            self.opener.demote(link.generation);
        }
    }

    /// Drops the stream and fails every waiting caller.
    fn fail_all(&mut self, error: impl Fn(LeaseId) -> Error) {
        self.link = None;
        self.sent.clear();
        self.sent.shrink_to(QUEUE);
        for (lease, queue) in self.waiters.drain() {
            for reply in queue {
                let _ = reply.send(Err(error(lease)));
            }
        }
        shrink_if_sparse(&mut self.waiters);
    }
}

async fn next_answer(link: &mut Option<Link>) -> Option<std::result::Result<Answer, Status>> {
    match link {
        Some(link) => link.answers.next().await,
        None => std::future::pending().await,
    }
}

fn closed_error(lease: LeaseId) -> Error {
    error::described(Kind::Unavailable, "keep-alive stream closed", lease)
}

/// Gives back a map's spare room once it is mostly empty (a burst of leases must not keep its
/// memory for ever).
fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

/// `LeaseKeepAliveRequest` of etcd's `rpc.proto`.
#[derive(Clone, PartialEq, prost::Message)]
struct LeaseKeepAliveRequest {
    #[prost(int64, tag = "1")]
    id: i64,
}

/// `LeaseKeepAliveResponse` of etcd's `rpc.proto`, without its header (field 1; skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct LeaseKeepAliveResponse {
    #[prost(int64, tag = "2")]
    id: i64,
    #[prost(int64, tag = "3")]
    ttl: i64,
}

/// Opens `/etcdserverpb.Lease/LeaseKeepAlive` streams on the backend's transport, with the
/// metadata `etcd-client` gives its own requests: `hasleader` (a member cut off from the
/// others ends the stream with "no leader" rather than hold it) and the auth token.
pub(crate) struct GrpcOpener {
    pub(crate) transport: Transport,
}

impl Opener for GrpcOpener {
    fn open(&self) -> Link {
        let (requests, outgoing) = link_mpsc::unbounded::<LeaseId>();
        let transport = self.transport.clone();
        let generation = transport.generation();
        let call = async move {
            let mut request = tonic::Request::new(outgoing.map(|id| LeaseKeepAliveRequest { id }));
            let metadata = request.metadata_mut();
            metadata.insert(
                "hasleader",
                tonic::metadata::MetadataValue::from_static("true"),
            );
            // etcd-client's token, as its last request carried it (it refreshes it itself).
            let token = transport.auth_token();
            if let Some(token) = token.as_ref().and_then(|t| t.to_str().ok()?.parse().ok()) {
                metadata.insert("token", token);
            }
            let mut grpc = tonic::client::Grpc::new(transport);
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let path = http::uri::PathAndQuery::from_static("/etcdserverpb.Lease/LeaseKeepAlive");
            let codec =
                tonic_prost::ProstCodec::<LeaseKeepAliveRequest, LeaseKeepAliveResponse>::default();
            let response = grpc.streaming(request, path, codec).await?;
            Ok::<_, Status>(response.into_inner().map_ok(|r| Answer {
                lease: r.id,
                ttl: r.ttl,
            }))
        };
        Link {
            requests,
            answers: futures::stream::once(call).try_flatten().boxed(),
            generation,
        }
    }

    fn demote(&self, generation: u64) {
        self.transport.demote(generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The test's end of one fake stream: the requests sent on it, and where to put answers.
    struct FakeEnd {
        requests: link_mpsc::UnboundedReceiver<LeaseId>,
        answers: link_mpsc::UnboundedSender<std::result::Result<Answer, Status>>,
    }

    impl FakeEnd {
        async fn request(&mut self) -> LeaseId {
            self.requests.next().await.expect("a request")
        }

        fn answer(&self, lease: LeaseId, ttl: i64) {
            self.answers
                .unbounded_send(Ok(Answer { lease, ttl }))
                .unwrap();
        }
    }

    /// Streams whose other end the test holds.
    struct Fake {
        opened: mpsc::UnboundedSender<FakeEnd>,
        demoted: AtomicU64,
    }

    impl Opener for Fake {
        fn open(&self) -> Link {
            let (requests, requests_rx) = link_mpsc::unbounded();
            let (answers_tx, answers) = link_mpsc::unbounded();
            let _ = self.opened.send(FakeEnd {
                requests: requests_rx,
                answers: answers_tx,
            });
            Link {
                requests,
                answers: answers.boxed(),
                generation: 7,
            }
        }

        fn demote(&self, generation: u64) {
            assert_eq!(generation, 7);
            self.demoted.fetch_add(1, Ordering::SeqCst);
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn keep_alives() -> (Arc<KeepAlives>, Arc<Fake>, mpsc::UnboundedReceiver<FakeEnd>) {
        let (opened, ends) = mpsc::unbounded_channel();
        let fake = Arc::new(Fake {
            opened,
            demoted: AtomicU64::new(0),
        });
        let settings = Settings {
            request_timeout: TIMEOUT,
            idle: IDLE,
        };
        (
            Arc::new(KeepAlives::new(fake.clone(), settings)),
            fake,
            ends,
        )
    }

    fn spawn_renew(k: &Arc<KeepAlives>, lease: LeaseId) -> tokio::task::JoinHandle<Result<i64>> {
        let k = k.clone();
        tokio::spawn(async move { k.renew(lease).await })
    }

    fn is_unavailable<T: std::fmt::Debug>(r: &Result<T>) -> bool {
        matches!(r, Err(Error::Unavailable { .. }))
    }

    #[tokio::test]
    async fn answers_go_to_the_lease_they_name_in_request_order() {
        let (k, _fake, mut ends) = keep_alives();
        let a1 = spawn_renew(&k, 1);
        let mut end = ends.recv().await.unwrap();
        assert_eq!(end.request().await, 1);
        let b = spawn_renew(&k, 2);
        assert_eq!(end.request().await, 2);
        let a2 = spawn_renew(&k, 1);
        assert_eq!(end.request().await, 1);
        // Lease 2 first, then lease 1's two answers, which go to its callers in order.
        end.answer(2, 20);
        assert_eq!(b.await.unwrap().unwrap(), 20);
        end.answer(1, 11);
        end.answer(1, 10);
        assert_eq!(a1.await.unwrap().unwrap(), 11);
        assert_eq!(a2.await.unwrap().unwrap(), 10);
        // One stream for all of it.
        assert!(ends.try_recv().is_err());
    }

    #[tokio::test]
    async fn ttl_zero_is_lease_not_found() {
        let (k, _fake, mut ends) = keep_alives();
        let gone = spawn_renew(&k, 5);
        let mut end = ends.recv().await.unwrap();
        end.request().await;
        end.answer(5, 0);
        assert!(matches!(
            gone.await.unwrap(),
            Err(Error::LeaseNotFound { lease: 5 })
        ));
        // The stream goes on serving other leases.
        let other = spawn_renew(&k, 6);
        assert_eq!(end.request().await, 6);
        end.answer(6, 9);
        assert_eq!(other.await.unwrap().unwrap(), 9);
    }

    #[tokio::test]
    async fn a_cancelled_renewal_does_not_take_the_next_ones_answer() {
        let (k, _fake, mut ends) = keep_alives();
        let cancelled = spawn_renew(&k, 1);
        let mut end = ends.recv().await.unwrap();
        assert_eq!(end.request().await, 1);
        cancelled.abort();
        assert!(cancelled.await.unwrap_err().is_cancelled());
        let next = spawn_renew(&k, 1);
        assert_eq!(end.request().await, 1);
        // The first answer was the cancelled call's: discarded.
        end.answer(1, 3);
        end.answer(1, 4);
        assert_eq!(next.await.unwrap().unwrap(), 4);
    }

    #[tokio::test]
    async fn a_failed_stream_fails_every_waiting_caller_and_the_next_call_reopens() {
        let (k, fake, mut ends) = keep_alives();
        let a = spawn_renew(&k, 1);
        let mut end = ends.recv().await.unwrap();
        end.request().await;
        let b = spawn_renew(&k, 2);
        end.request().await;
        end.answers
            .unbounded_send(Err(Status::unavailable("etcdserver: no leader")))
            .unwrap();
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert!(is_unavailable(&a) && is_unavailable(&b), "{a:?} {b:?}");
        assert!(a.unwrap_err().is_retryable());
        assert_eq!(fake.demoted.load(Ordering::SeqCst), 1, "no leader demotes");
        // The dropped stream closed its request side.
        assert!(end.requests.next().await.is_none());

        let c = spawn_renew(&k, 1);
        let mut second = ends.recv().await.expect("a new stream");
        assert_eq!(second.request().await, 1);
        second.answer(1, 8);
        assert_eq!(c.await.unwrap().unwrap(), 8);

        // A stream that just ends fails its waiting callers too.
        let d = spawn_renew(&k, 3);
        second.request().await;
        drop(second.answers);
        assert!(is_unavailable(&d.await.unwrap()));
    }

    #[tokio::test(start_paused = true)]
    async fn no_answer_within_the_request_timeout_is_unavailable_and_drops_the_stream() {
        let (k, fake, mut ends) = keep_alives();
        let started = Instant::now();
        let a = spawn_renew(&k, 1);
        let mut end = ends.recv().await.unwrap();
        end.request().await;
        let result = a.await.unwrap();
        assert!(is_unavailable(&result), "{result:?}");
        assert!(started.elapsed() >= TIMEOUT);
        // The dispatcher took the stream for stuck: demoted, and dropped.
        assert!(end.requests.next().await.is_none());
        assert_eq!(fake.demoted.load(Ordering::SeqCst), 1);
        // A late answer of the old stream reaches nobody; a new call opens a new stream.
        let _ = end.answers.unbounded_send(Ok(Answer { lease: 1, ttl: 5 }));
        let b = spawn_renew(&k, 1);
        let mut second = ends.recv().await.unwrap();
        second.request().await;
        second.answer(1, 6);
        assert_eq!(b.await.unwrap().unwrap(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_and_its_task_end_and_a_later_call_starts_them_again() {
        let (k, _fake, mut ends) = keep_alives();
        let a = spawn_renew(&k, 1);
        let mut end = ends.recv().await.unwrap();
        end.request().await;
        end.answer(1, 10);
        a.await.unwrap().unwrap();
        tokio::time::sleep(IDLE + Duration::from_secs(1)).await;
        // Stream dropped (its request side ended), dispatcher gone (its queue closed).
        assert!(end.requests.next().await.is_none());
        let queue = k.dispatcher.lock().unwrap().clone().unwrap();
        assert!(queue.is_closed());

        let b = spawn_renew(&k, 1);
        let mut second = ends.recv().await.unwrap();
        second.request().await;
        second.answer(1, 10);
        assert_eq!(b.await.unwrap().unwrap(), 10);
    }

    #[tokio::test]
    async fn dropping_the_handle_ends_the_task_and_the_stream() {
        let (k, _fake, mut ends) = keep_alives();
        let a = spawn_renew(&k, 1);
        let mut end = ends.recv().await.unwrap();
        end.request().await;
        end.answer(1, 10);
        a.await.unwrap().unwrap();
        drop(k);
        assert!(end.requests.next().await.is_none());
    }

    #[tokio::test]
    async fn a_caller_that_gave_up_before_sending_sends_nothing() {
        let (k, _fake, mut ends) = keep_alives();
        let a = spawn_renew(&k, 1);
        let mut end = ends.recv().await.unwrap();
        end.request().await;
        // A renewal of lease 2 whose caller gave up while it was queued is not sent: the
        // stream sees lease 3 next.
        let (reply, answer) = oneshot::channel();
        drop(answer);
        k.dispatcher()
            .send(Renewal { lease: 2, reply })
            .await
            .unwrap_or_else(|_| panic!("queue closed"));
        let c = spawn_renew(&k, 3);
        assert_eq!(end.request().await, 3);
        end.answer(1, 10);
        end.answer(3, 30);
        assert_eq!(a.await.unwrap().unwrap(), 10);
        assert_eq!(c.await.unwrap().unwrap(), 30);
    }
}
