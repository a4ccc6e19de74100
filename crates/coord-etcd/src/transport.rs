//! The gRPC transport under `etcd-client`: HTTP/2 (the `h2` crate) over TCP or TLS, to one
//! endpoint at a time, failed over to the others.
//!
//! Why not tonic's own channel: hyper's HTTP/2 client sends a request's body from a task of
//! its own once the new stream is open, so every unary call goes out as two TCP writes (HEADERS,
//! then DATA) with a task spawned and woken in between, and etcd reads it in two. Here a unary
//! call's body is ready when the call is made, so its HEADERS and DATA (with END_STREAM) are
//! queued together and leave in one write, from the connection's task. On a local etcd that is
//! about 7% more lock + unlock cycles per second (BENCHMARKS.md).
//!
//! What it does, as tonic's channel did for us:
//! - **One member at a time**, as etcd's Go client did before 3.4 ("pinned" endpoint): requests
//!   go to one endpoint, over a connection made when first needed (TCP, TLS with ALPN `h2`,
//!   HTTP/2 handshake and one PING answered, all within the connect timeout; concurrent
//!   requests share one connect). One member sees a client's requests in order, so what is not
//!   linearizable in etcd (a watch "from now", the lease list) never lags behind the client's
//!   own acknowledged writes, as it could on another member.
//! - **Fail over** to the next endpoint when the member cannot be reached (the request is sent
//!   there instead: it never left), when its connection ends, and when the backend reports that
//!   it answered "no leader" or did not answer within the request timeout ([`Transport::demote`]).
//!   An endpoint that could not be reached is passed over for a second while others can be.
//! - **Reconnect**: a connection that ended (error, GOAWAY, unanswered keep-alive) is made
//!   again by the next request for its endpoint.
//! - **Keep-alive**: a PING every interval while streams are open (etcd punishes pings on an
//!   idle connection); no answer within the timeout closes the connection, failing its streams.
//! - **Errors** are `tonic::Status`es with gRPC codes: `Unavailable` for anything that went
//!   wrong on the way (the texts name the stage: "tcp connect error", "tls handshake error",
//!   "h2 protocol error"), so the backend's error mapping classifies them by meaning.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use coord_core::{Error, Result};
use futures::future::{poll_fn, BoxFuture, FutureExt, Shared as SharedFuture};
use http_body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tonic::body::Body;
use tonic::Status;

/// Per-stream receive window: large enough that a big range answer is not throttled by
/// WINDOW_UPDATE round trips (h2's default is 64 KiB).
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Per-connection receive window.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// TLS settings, already loaded.
pub(crate) struct TlsSettings {
    /// PEM of the CA to trust; none trusts no server.
    pub ca_cert: Option<Vec<u8>>,
    /// PEM of the client certificate chain and its private key.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to check the server certificate against, instead of the endpoint's host.
    pub domain_name: Option<String>,
}

/// What [`Transport::new`] needs.
pub(crate) struct TransportSettings {
    pub endpoints: Vec<String>,
    pub tls: Option<TlsSettings>,
    pub connect_timeout: Duration,
    pub keep_alive: Option<(Duration, Duration)>,
}

/// The `tower::Service` etcd-client sends its requests through. Clones share the connection.
#[derive(Clone)]
pub(crate) struct Transport {
    shared: Arc<Shared>,
}

struct Shared {
    targets: Vec<Target>,
    tls: Option<(tokio_rustls::TlsConnector, Option<ServerName<'static>>)>,
    connect_timeout: Duration,
    keep_alive: Option<(Duration, Duration)>,
    /// The endpoint requests go to, and how many times that changed.
    pinned: Mutex<Pinned>,
    /// The auth token `etcd-client` last sent (it authenticates and refreshes the token
    /// itself), for the streams this crate opens on its own (lease keep-alive).
    auth_token: Mutex<Option<http::HeaderValue>>,
}

#[derive(Clone, Copy)]
struct Pinned {
    index: usize,
    generation: u64,
}

/// One endpoint and its connection.
struct Target {
    host: String,
    port: u16,
    /// `host:port`, for the requests' `:authority` and for messages.
    authority: String,
    tls: bool,
    conn: Mutex<Option<Conn>>,
    /// The connect under way, if any: concurrent requests wait for the same one.
    connecting: Mutex<Option<ConnectAttempt>>,
    /// When connecting last failed.
    failed_at: Mutex<Option<Instant>>,
}

/// The gRPC metadata (HTTP/2 header) etcd reads its auth token from.
const AUTH_TOKEN: &str = "token";

/// How long an endpoint that could not be reached is passed over while others can be.
const SKIP_FAILED: Duration = Duration::from_secs(1);

/// A connect running in a task of its own, awaited by every request that needs it. Why a task:
/// a request's future may be parked for long while it waits (a watch re-opening inside a
/// stream its consumer polls only now and then); a connect driven by that future would stall
/// with it, and every other request for the endpoint behind it (seen: 30 s without answers after
/// an etcd restart).
type ConnectAttempt = SharedFuture<BoxFuture<'static, std::result::Result<Conn, Status>>>;

/// Ends a connect attempt when dropped, after it stored its connection, if any; however the
/// task ends: a runtime shutting down drops it mid-connect, and a finished attempt left in place
/// would answer every later request with its error.
struct ClearAttempt {
    shared: Arc<Shared>,
    index: usize,
}

impl Drop for ClearAttempt {
    fn drop(&mut self) {
        *lock(&self.shared.targets[self.index].connecting) = None;
    }
}

/// Sets a connection's `closed` flag when dropped.
struct MarkClosed(Arc<AtomicBool>);

impl Drop for MarkClosed {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A live (or just failed) HTTP/2 connection.
#[derive(Clone)]
struct Conn {
    send: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    /// Streams open on it: keep-alive pings only while there are some.
    open_streams: Arc<AtomicUsize>,
}

/// Something a TLS or plain connection is.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl Transport {
    /// Checks the endpoints and TLS settings; connects on the first request.
    pub(crate) fn new(settings: TransportSettings) -> Result<Transport> {
        let tls = match settings.tls {
            Some(tls) => Some(tls_connector(tls)?),
            None => None,
        };
        let targets = settings
            .endpoints
            .iter()
            .map(|e| parse_endpoint(e, tls.is_some()))
            .collect::<Result<Vec<_>>>()?;
        if targets.iter().any(|t| t.tls) && tls.is_none() {
            return Err(Error::invalid(
                "an https:// endpoint needs TLS settings (a CA certificate)",
            ));
        }
        Ok(Transport {
            shared: Arc::new(Shared {
                targets,
                tls,
                connect_timeout: settings.connect_timeout,
                keep_alive: settings.keep_alive,
                pinned: Mutex::new(Pinned {
                    index: 0,
                    generation: 0,
                }),
                auth_token: Mutex::new(None),
            }),
        })
    }
}

impl Transport {
    /// Which endpoint choice a request made now goes by; pass it to [`Transport::demote`].
    pub(crate) fn generation(&self) -> u64 {
        lock(&self.shared.pinned).generation
    }

    /// Moves requests to the next endpoint, unless they moved since `generation` (then whoever
    /// moved them saw something newer): the member answered "no leader", or nothing in time.
    pub(crate) fn demote(&self, generation: u64) {
        let shared = &self.shared;
        let pinned = *lock(&shared.pinned);
        if pinned.generation == generation && shared.targets.len() > 1 {
            let from = &shared.targets[pinned.index].authority;
            tracing::debug!(endpoint = %from, "etcd endpoint demoted");
            shared.repin(pinned, (pinned.index + 1) % shared.targets.len());
        }
    }

    /// The auth token of the last request that carried one (none without etcd auth).
    pub(crate) fn auth_token(&self) -> Option<http::HeaderValue> {
        lock(&self.shared.auth_token).clone()
    }
}

impl tower::Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per connection, awaited inside `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared
                .send(request)
                .await
                .map_err(|status| Box::new(status) as tower::BoxError)
        })
    }
}

impl Shared {
    async fn send(
        self: &Arc<Self>,
        request: http::Request<Body>,
    ) -> std::result::Result<http::Response<Body>, Status> {
        let (head, mut body) = request.into_parts();
        if let Some(token) = head.headers.get(AUTH_TOKEN) {
            let mut known = lock(&self.auth_token);
            if known.as_ref() != Some(token) {
                *known = Some(token.clone());
            }
        }
        let n = self.targets.len();
        let pinned = *lock(&self.pinned);
        // The pinned endpoint, then the others in turn; those that failed lately go last.
        let mut order: Vec<usize> = (0..n).map(|i| (pinned.index + i) % n).collect();
        order.sort_by_key(|&i| i != pinned.index && self.targets[i].failed_lately());
        let mut last = None;
        let mut handed = None;
        for index in order {
            let conn = match self.connection(index).await {
                Ok(conn) => conn,
                Err(status) => {
                    last = Some(status);
                    continue;
                }
            };
            let sent = match conn.send.clone().ready().await {
                Ok(mut send) => {
                    let request = self.head(index, &head)?;
                    send.send_request(request, false)
                }
                Err(e) => Err(e),
            };
            match sent {
                Ok((response, stream)) => {
                    if index != pinned.index {
                        self.repin(pinned, index);
                    }
                    handed = Some((conn, response, stream));
                    break;
                }
                // The connection is gone and the request never left: next endpoint.
                Err(e) => {
                    conn.closed.store(true, Ordering::Release);
                    last = Some(h2_status(e));
                }
            }
        }
        let Some((conn, response, stream)) = handed else {
            return Err(last.unwrap_or_else(|| Status::unavailable("no etcd endpoint")));
        };
        let open = OpenStream::new(&conn.open_streams);
        send_body(&mut body, stream).await?;
        let response = response.await.map_err(h2_status)?;
        Ok(response.map(|recv| {
            Body::new(ResponseBody {
                recv,
                data_done: false,
                _open: open,
            })
        }))
    }

    /// Pins `index`, unless the pin moved since `seen`.
    fn repin(&self, seen: Pinned, index: usize) {
        let mut pinned = lock(&self.pinned);
        if pinned.generation == seen.generation {
            tracing::debug!(endpoint = %self.targets[index].authority, "etcd endpoint pinned");
            *pinned = Pinned {
                index,
                generation: seen.generation + 1,
            };
        }
    }

    /// The request head with the connection's scheme and authority (h2 needs both).
    fn head(
        &self,
        index: usize,
        head: &http::request::Parts,
    ) -> std::result::Result<http::Request<()>, Status> {
        let target = &self.targets[index];
        let path = head
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let uri = http::Uri::builder()
            .scheme(if target.tls { "https" } else { "http" })
            .authority(target.authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(|e| Status::internal(format!("bad request uri: {e}")))?;
        let mut request = http::Request::new(());
        *request.method_mut() = head.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = head.headers.clone();
        Ok(request)
    }

    /// The live connection to endpoint `index`, or a new one.
    async fn connection(self: &Arc<Self>, index: usize) -> std::result::Result<Conn, Status> {
        let target = &self.targets[index];
        if let Some(conn) = target.live() {
            return Ok(conn);
        }
        let attempt = {
            let mut connecting = lock(&target.connecting);
            // Checked again under the lock: an attempt stores its connection before it clears
            // itself, so no second connect starts just after one succeeded.
            if let Some(conn) = target.live() {
                return Ok(conn);
            }
            connecting
                .get_or_insert_with(|| {
                    let shared = self.clone();
                    // Spawned when first polled, with the lock released: a runtime shutting
                    // down drops the task (and its guard, which takes the lock) at once.
                    async move {
                        let clear = ClearAttempt {
                            shared: shared.clone(),
                            index,
                        };
                        let task = tokio::spawn(async move {
                            let _clear = clear;
                            shared.connect_and_keep(index).await
                        });
                        task.await.unwrap_or_else(|e| {
                            Err(Status::unavailable(format!("tcp connect error: {e}")))
                        })
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        attempt.await
    }

    /// Connects to endpoint `index` within the connect timeout and records the outcome.
    async fn connect_and_keep(&self, index: usize) -> std::result::Result<Conn, Status> {
        let target = &self.targets[index];
        let result = match tokio::time::timeout(self.connect_timeout, self.connect(index)).await {
            Ok(result) => result,
            Err(_) => Err(Status::unavailable(format!(
                "tcp connect error: {}: no connection within {:?}",
                target.authority, self.connect_timeout
            ))),
        };
        match &result {
            Ok(conn) => *lock(&target.conn) = Some(conn.clone()),
            Err(status) => tracing::debug!(
                endpoint = %target.authority,
                error = %status.message(),
                "etcd connect failed"
            ),
        }
        *lock(&target.failed_at) = result.is_err().then(Instant::now);
        result
    }

    async fn connect(&self, index: usize) -> std::result::Result<Conn, Status> {
        let target = &self.targets[index];
        let failed = |stage: &str, e: &dyn std::fmt::Display| {
            Status::unavailable(format!("{stage} error: {}: {e}", target.authority))
        };
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| failed("tcp connect", &e))?;
        tcp.set_nodelay(true)
            .map_err(|e| failed("tcp connect", &e))?;
        let io: Box<dyn Io> = match (&self.tls, target.tls) {
            (Some((connector, domain)), true) => {
                let name = match domain {
                    Some(name) => name.clone(),
                    None => ServerName::try_from(target.host.clone())
                        .map_err(|e| failed("tls handshake", &e))?,
                };
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| failed("tls handshake", &e))?;
                if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(failed(
                        "tls handshake",
                        &"the server did not agree to HTTP/2",
                    ));
                }
                Box::new(stream)
            }
            _ => Box::new(tcp),
        };
        let (send, mut connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| failed("h2 handshake", &e))?;
        let conn = Conn {
            send,
            closed: Arc::new(AtomicBool::new(false)),
            open_streams: Arc::new(AtomicUsize::new(0)),
        };
        // Marked closed however the task ends: also when its runtime shuts down and drops it,
        // so that the next request (on another runtime) connects again instead of sending into
        // a connection nobody drives.
        let closed = MarkClosed(conn.closed.clone());
        let open_streams = conn.open_streams.clone();
        let keep_alive = self.keep_alive;
        let mut pings = connection
            .ping_pong()
            .ok_or_else(|| failed("h2 handshake", &"no PING handle"))?;
        let (answered_tx, answered_rx) = tokio::sync::oneshot::channel();
        let mut answered_tx = Some(answered_tx);
        let authority = target.authority.clone();
        tokio::spawn(async move {
            let ended = tokio::select! {
                r = &mut connection => r.map_err(|e| e.to_string()),
                e = async {
                    // A member that accepts connections but is stopped answers nothing: one
                    // PING answered proves it serves. (The connect timeout bounds the wait;
                    // a connect given up drops the receiver.)
                    let answered = ping(&mut pings).await;
                    let failed = answered.as_ref().err().cloned();
                    let tx = answered_tx.take().expect("answered once");
                    if tx.send(answered).is_err() {
                        return "connect gave up".to_string();
                    }
                    if let Some(e) = failed {
                        return e;
                    }
                    match keep_alive {
                        Some((interval, timeout)) => {
                            keep_pinging(pings, interval, timeout, &open_streams).await
                        }
                        None => std::future::pending().await,
                    }
                } => Err(e),
            };
            drop(closed);
            // Ended before the PING was answered (a TLS alert, a reset): that is the connect's
            // error, with its reason.
            if let Some(tx) = answered_tx.take() {
                let _ = tx.send(Err(match &ended {
                    Err(e) => e.clone(),
                    Ok(()) => "the connection closed".to_string(),
                }));
            }
            match ended {
                Ok(()) => tracing::debug!(endpoint = %authority, "etcd connection closed"),
                Err(e) => {
                    tracing::debug!(endpoint = %authority, error = %e, "etcd connection lost")
                }
            }
            // Dropping the connection fails the streams still open on it.
        });
        match answered_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(failed("h2 handshake", &e)),
            Err(_) => return Err(failed("h2 handshake", &"the connection closed")),
        }
        tracing::debug!(endpoint = %target.authority, tls = target.tls, "connected to etcd");
        Ok(conn)
    }
}

/// Sends a PING and waits for its answer.
async fn ping(pings: &mut h2::PingPong) -> std::result::Result<(), String> {
    pings
        .send_ping(h2::Ping::opaque())
        .map_err(|e| format!("ping failed: {e}"))?;
    poll_fn(|cx| pings.poll_pong(cx))
        .await
        .map(|_| ())
        .map_err(|e| format!("ping failed: {e}"))
}

impl Target {
    fn live(&self) -> Option<Conn> {
        lock(&self.conn)
            .as_ref()
            .filter(|c| !c.closed.load(Ordering::Acquire))
            .cloned()
    }

    fn failed_lately(&self) -> bool {
        lock(&self.failed_at).is_some_and(|at| at.elapsed() < SKIP_FAILED)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Pings every `interval` while streams are open; returns why the connection must go.
async fn keep_pinging(
    mut pings: h2::PingPong,
    interval: Duration,
    timeout: Duration,
    open_streams: &AtomicUsize,
) -> String {
    loop {
        tokio::time::sleep(interval).await;
        if open_streams.load(Ordering::Relaxed) == 0 {
            continue;
        }
        match tokio::time::timeout(timeout, ping(&mut pings)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return format!("keep-alive {e}"),
            Err(_) => return format!("keep-alive ping not answered within {timeout:?}"),
        }
    }
}

/// Queues what the body has ready now (for a unary call: all of it, ending the stream, so
/// HEADERS and DATA leave in one write); a body that is still streaming (watch, lease
/// keep-alive) is sent on by a task of its own.
async fn send_body(
    body: &mut Body,
    mut stream: h2::SendStream<Bytes>,
) -> std::result::Result<(), Status> {
    let mut held: Option<Bytes> = None;
    loop {
        let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                // gRPC request bodies have no trailers.
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if let Some(previous) = held.replace(data) {
                    stream.send_data(previous, false).map_err(h2_status)?;
                }
            }
            Poll::Ready(Some(Err(status))) => {
                stream.send_reset(h2::Reason::CANCEL);
                return Err(status);
            }
            Poll::Ready(None) => {
                let last = held.take().unwrap_or_default();
                return stream.send_data(last, true).map_err(h2_status);
            }
            Poll::Pending => {
                if let Some(previous) = held.take() {
                    stream.send_data(previous, false).map_err(h2_status)?;
                }
                let rest = std::mem::replace(body, Body::empty());
                tokio::spawn(send_streaming_body(rest, stream));
                return Ok(());
            }
        }
    }
}

/// Sends a streaming request body, message by message, as it comes; a message waits for the
/// peer's flow-control window.
async fn send_streaming_body(mut body: Body, mut stream: h2::SendStream<Bytes>) {
    loop {
        let frame = tokio::select! {
            frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
            // The call was dropped or the server reset the stream: stop sending.
            _ = poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        let data = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
            Some(Err(_)) => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
        };
        stream.reserve_capacity(data.len());
        while stream.capacity() < data.len() {
            match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                _ => return,
            }
        }
        if stream.send_data(data, false).is_err() {
            return;
        }
    }
}

/// A response body: the DATA frames, then the trailers (where gRPC puts its status).
struct ResponseBody {
    recv: h2::RecvStream,
    data_done: bool,
    _open: OpenStream,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Status>>> {
        if !self.data_done {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    // Read: the peer may send that much more.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(h2_status(e)))),
                Poll::Ready(None) => self.data_done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(h2_status(e)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// Counts a stream as open from the request until its response body is dropped.
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        OpenStream(count.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An HTTP/2 failure as a gRPC status: the request may or may not have been applied, the
/// connection or stream is gone — `Unavailable`, as gRPC's own clients report it.
fn h2_status(e: h2::Error) -> Status {
    Status::unavailable(format!("h2 protocol error: {e}"))
}

fn parse_endpoint(endpoint: &str, tls_configured: bool) -> Result<Target> {
    let (tls, rest) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        if tls_configured {
            return Err(Error::invalid(format!(
                "endpoint {endpoint}: TLS is configured, so an http:// endpoint cannot be used"
            )));
        }
        (false, rest)
    } else {
        (tls_configured, endpoint)
    };
    let authority: http::uri::Authority = rest
        .trim_end_matches('/')
        .parse()
        .map_err(|e| Error::invalid(format!("endpoint {endpoint:?}: {e}")))?;
    let port = authority
        .port_u16()
        .ok_or_else(|| Error::invalid(format!("endpoint {endpoint:?} has no port")))?;
    // `[::1]:2379` connects to `::1`.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(Target {
        host,
        port,
        authority: authority.to_string(),
        tls,
        conn: Mutex::new(None),
        connecting: Mutex::new(None),
        failed_at: Mutex::new(None),
    })
}

fn tls_connector(
    tls: TlsSettings,
) -> Result<(tokio_rustls::TlsConnector, Option<ServerName<'static>>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::invalid(format!("TLS settings: {e}")))?;
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &tls.ca_cert {
        let certs = pem_certs(ca, "CA certificate")?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(Error::invalid(
                "the CA certificate PEM holds no usable certificate",
            ));
        }
    }
    let builder = builder.with_root_certificates(roots);
    let mut config = match tls.client_cert {
        Some((cert, key)) => {
            let chain = pem_certs(&cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_slice(&key)
                .map_err(|e| Error::invalid(format!("the client key PEM: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::invalid(format!("the client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let domain = tls
        .domain_name
        .map(|name| {
            ServerName::try_from(name.clone())
                .map_err(|e| Error::invalid(format!("TLS domain name {name:?}: {e}")))
        })
        .transpose()?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), domain))
}

fn pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("the {what} PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::invalid(format!(
            "the {what} PEM holds no certificate"
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_and_without_scheme() {
        let t = parse_endpoint("127.0.0.1:2379", false).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("127.0.0.1", 2379, false));
        let t = parse_endpoint("https://etcd.example:2379/", false).unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority.as_str(), t.tls),
            ("etcd.example", "etcd.example:2379", true)
        );
        let t = parse_endpoint("[::1]:2379", true).unwrap();
        assert_eq!((t.host.as_str(), t.tls), ("::1", true));
        assert!(parse_endpoint("http://127.0.0.1:2379", true).is_err());
        assert!(parse_endpoint("127.0.0.1", false).is_err());
        assert!(parse_endpoint("not a host:x", false).is_err());
    }

    #[test]
    fn bad_pem_is_invalid_argument() {
        let bad = TlsSettings {
            ca_cert: Some(b"not a pem".to_vec()),
            client_cert: None,
            domain_name: None,
        };
        assert!(matches!(
            tls_connector(bad),
            Err(Error::InvalidArgument { .. })
        ));
    }
}
