//! A small TCP proxy that injects network faults between a client and its store (etcd or
//! PostgreSQL).
//!
//! It listens on `127.0.0.1:0` and forwards every connection to one upstream address. Its
//! [`Mode`] can be switched at any time, and applies to open connections at once:
//!
//! | mode | what the client sees |
//! | --- | --- |
//! | [`Mode::Pass`] | a plain connection |
//! | [`Mode::Blackhole`] | connections stay open (new ones are accepted) but no byte moves either way: a partition. Bytes already sent wait, as TCP would retransmit them, and flow again when the mode changes back |
//! | [`Mode::Delay`] | every byte arrives `d` later, each way (latency, not a bandwidth cap) |
//! | [`Mode::Reset`] | every open connection is closed at once, and new ones are closed as soon as they are accepted |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use coord_chaos::proxy::{Mode, Proxy};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // An echo server stands in for etcd.
//! let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = upstream.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((mut s, _)) = upstream.accept().await {
//!         tokio::spawn(async move {
//!             let (mut r, mut w) = s.split();
//!             let _ = tokio::io::copy(&mut r, &mut w).await;
//!         });
//!     }
//! });
//! let proxy = Proxy::start(addr).await?;
//! let mut conn = tokio::net::TcpStream::connect(proxy.addr()).await?;
//! conn.write_all(b"ping").await?;
//! let mut buf = [0u8; 4];
//! conn.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"ping");
//!
//! proxy.set_mode(Mode::Blackhole);
//! conn.write_all(b"lost?").await?;
//! let mut buf = [0u8; 5];
//! assert!(tokio::time::timeout(Duration::from_millis(100), conn.read_exact(&mut buf)).await.is_err());
//! proxy.set_mode(Mode::Pass); // the partition heals: the bytes arrive
//! conn.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"lost?");
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Keep connections open, forward nothing.
    Blackhole,
    /// Forward everything this much later, each way.
    Delay(Duration),
    /// Close every connection, and every new one at once.
    Reset,
}

/// Counters of what went through the proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Bytes forwarded to the upstream.
    pub bytes_up: u64,
    /// Bytes forwarded to clients.
    pub bytes_down: u64,
    /// Connections closed by [`Mode::Reset`] or [`Proxy::reset_connections`].
    pub reset: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    reset: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped to close every connection open at that moment.
    epoch: watch::Sender<u64>,
    shutdown: CancellationToken,
    counters: Counters,
}

/// A running proxy; dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream`, in [`Mode::Pass`].
    pub async fn start(upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            mode: watch::channel(Mode::Pass).0,
            epoch: watch::channel(0).0,
            shutdown: CancellationToken::new(),
            counters: Counters::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Proxy {
            addr,
            shared,
            accept,
        })
    }

    /// Like [`Proxy::start`], with the upstream as `host:port` (an etcd endpoint string,
    /// optionally with `http://`, or a PostgreSQL server's, see
    /// [`Store::address`](crate::support::Store::address)).
    pub async fn to_endpoint(endpoint: &str) -> io::Result<Proxy> {
        let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let upstream = tokio::net::lookup_host(hostport)
            .await?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| io::Error::other(format!("no IPv4 address for {endpoint}")))?;
        Proxy::start(upstream).await
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy as an endpoint, `127.0.0.1:PORT` (for etcd as is; for PostgreSQL, see
    /// [`pg::via`](crate::pg::via)).
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }

    /// Switches the mode; open connections follow at once.
    pub fn set_mode(&self, mode: Mode) {
        tracing::debug!(proxy = %self.addr, ?mode, "proxy mode");
        if mode == Mode::Reset {
            self.reset_connections();
        }
        self.shared.mode.send_replace(mode);
    }

    /// Closes every connection open now, leaving the mode as it is (clients may reconnect).
    pub fn reset_connections(&self) {
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    /// What went through so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
            reset: c.reset.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve(shared.clone(), stream));
            }
            Err(e) => {
                tracing::debug!(error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Waits until bytes may move; `Some(delay)` then, `None` when the connection must close.
async fn flowing(mode: &mut watch::Receiver<Mode>) -> Option<Duration> {
    loop {
        match *mode.borrow_and_update() {
            Mode::Pass => return Some(Duration::ZERO),
            Mode::Delay(d) => return Some(d),
            Mode::Reset => return None,
            Mode::Blackhole => {}
        }
        if mode.changed().await.is_err() {
            return None;
        }
    }
}

struct OpenGuard<'a>(&'a Counters);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(shared: Arc<Shared>, client: TcpStream) {
    let mut epoch = shared.epoch.subscribe();
    let start_epoch = *epoch.borrow_and_update();
    let mut mode = shared.mode.subscribe();
    // A connection accepted in a blackhole waits, connected to nothing, until traffic may flow.
    let until_flowing = async {
        tokio::select! {
            f = flowing(&mut mode) => f.is_some(),
            _ = epoch.changed() => false,
            _ = shared.shutdown.cancelled() => false,
        }
    };
    if !until_flowing.await {
        shared.counters.reset.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let upstream = match TcpStream::connect(shared.upstream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "proxy: upstream refused");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    shared.counters.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(&shared.counters);

    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let up = pipe(
        client_read,
        upstream_write,
        shared.mode.subscribe(),
        &shared.counters.bytes_up,
    );
    let down = pipe(
        upstream_read,
        client_write,
        shared.mode.subscribe(),
        &shared.counters.bytes_down,
    );
    let both = async {
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        while !(up_done && down_done) {
            tokio::select! {
                clean = &mut up, if !up_done => { if !clean { return; } up_done = true; }
                clean = &mut down, if !down_done => { if !clean { return; } down_done = true; }
            }
        }
    };
    tokio::select! {
        _ = both => {}
        _ = epoch.wait_for(|e| *e != start_epoch) => {
            shared.counters.reset.fetch_add(1, Ordering::Relaxed);
        }
        _ = shared.shutdown.cancelled() => {}
    }
    // Dropping the halves closes both sockets.
}

/// Copies one direction. Returns `true` on a clean end of stream (propagated as a half-close),
/// `false` on an error or a reset (the whole connection then closes).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    bytes: &AtomicU64,
) -> bool {
    // Chunks carry the time they may be delivered: latency without a bandwidth cap.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let mut read_mode = mode.clone();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if flowing(&mut read_mode).await.is_none() {
                return false;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) => return true,
                Ok(n) => n,
                Err(_) => return false,
            };
            // The latency in force when the bytes arrived.
            let delay = match *read_mode.borrow() {
                Mode::Delay(d) => d,
                _ => Duration::ZERO,
            };
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return false;
            }
        }
    };
    let mut write_mode = mode;
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if flowing(&mut write_mode).await.is_none() {
                return false;
            }
            if to.write_all(&chunk).await.is_err() {
                return false;
            }
            bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        to.shutdown().await.is_ok()
    };
    let (read_clean, write_clean) = tokio::join!(reader, writer);
    read_clean && write_clean
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(conn: &mut TcpStream, msg: &[u8], within: Duration) -> io::Result<()> {
        conn.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(within, conn.read_exact(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no echo"))??;
        assert_eq!(buf, msg);
        Ok(())
    }

    #[tokio::test]
    async fn pass_blackhole_and_back() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        roundtrip(&mut c, b"one", Duration::from_secs(5))
            .await
            .unwrap();
        proxy.set_mode(Mode::Blackhole);
        let err = roundtrip(&mut c, b"two", Duration::from_millis(200)).await;
        assert!(err.is_err(), "nothing passes a blackhole");
        // A new connection is accepted but goes nowhere either.
        let mut c2 = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(roundtrip(&mut c2, b"new", Duration::from_millis(200))
            .await
            .is_err());
        proxy.set_mode(Mode::Pass);
        let mut buf = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"two", "held bytes flow once the partition heals");
        tokio::time::timeout(Duration::from_secs(5), c2.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"new");
        assert_eq!(proxy.stats().accepted, 2);
        assert_eq!(proxy.stats().open, 2);
    }

    #[tokio::test]
    async fn delay_adds_latency_each_way() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        roundtrip(&mut c, b"warm", Duration::from_secs(5))
            .await
            .unwrap();
        proxy.set_mode(Mode::Delay(Duration::from_millis(150)));
        let started = std::time::Instant::now();
        roundtrip(&mut c, b"slow", Duration::from_secs(5))
            .await
            .unwrap();
        let rtt = started.elapsed();
        assert!(
            rtt >= Duration::from_millis(300),
            "two delayed legs: {rtt:?}"
        );
        proxy.set_mode(Mode::Pass);
        roundtrip(&mut c, b"fast", Duration::from_secs(5))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn reset_closes_connections_and_refuses_new_ones_until_pass() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        roundtrip(&mut c, b"hi", Duration::from_secs(5))
            .await
            .unwrap();
        proxy.set_mode(Mode::Reset);
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("the closed connection answers at once");
        assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
        let mut c2 = TcpStream::connect(proxy.addr()).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), c2.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "closed on accept: {read:?}");
        proxy.set_mode(Mode::Pass);
        let mut c3 = TcpStream::connect(proxy.addr()).await.unwrap();
        roundtrip(&mut c3, b"back", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(proxy.stats().reset >= 2);
    }

    #[tokio::test]
    async fn reset_connections_keeps_the_mode() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        roundtrip(&mut c, b"hi", Duration::from_secs(5))
            .await
            .unwrap();
        proxy.reset_connections();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)));
        assert_eq!(proxy.mode(), Mode::Pass);
        let mut c2 = TcpStream::connect(proxy.addr()).await.unwrap();
        roundtrip(&mut c2, b"again", Duration::from_secs(5))
            .await
            .unwrap();
    }
}
