//! SIP over TCP (RFC 3261 §18.3): a listener per worker (`SO_REUSEPORT`), and per connection a
//! reader task (stream framing, idle timeout, size limit) and a writer task fed by a bounded
//! queue. Connections are registered by peer address so that responses and requests to a
//! client registered over TCP reuse its connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_engine::sip::framing::{Frame, FramingError, StreamFramer};
use parking_lot::Mutex;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::limits::TcpSlot;
use super::{Inbound, Router, SendError, SourceLimits, Transport};
use crate::metrics::{Drop, WorkerMetrics};

/// Messages queued for one connection before the peer counts as too slow.
const WRITE_QUEUE: usize = 1024;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// A handle on one open connection: send bytes to its writer task.
#[derive(Debug, Clone)]
pub struct TcpConn {
    /// Unique id of the connection.
    pub id: u64,
    /// The peer's address.
    pub peer: SocketAddr,
    tx: mpsc::Sender<Bytes>,
}

impl TcpConn {
    /// Queues bytes for the writer; a full queue means the peer does not read.
    pub fn send(&self, payload: Bytes) -> Result<(), SendError> {
        self.tx.try_send(payload).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => SendError::NoConnection,
        })
    }
}

/// Open connections by peer address, shared by the workers (touched on connect, close and
/// when sending to a peer; never per byte).
#[derive(Debug, Clone, Default)]
pub struct TcpRegistry {
    conns: Arc<Mutex<HashMap<SocketAddr, TcpConn>>>,
}

impl TcpRegistry {
    /// The connection to a peer, if open.
    pub fn get(&self, peer: &SocketAddr) -> Option<TcpConn> {
        self.conns.lock().get(peer).cloned()
    }

    fn insert(&self, conn: TcpConn) {
        self.conns.lock().insert(conn.peer, conn);
    }

    fn remove(&self, conn: &TcpConn) {
        let mut map = self.conns.lock();
        if map.get(&conn.peer).is_some_and(|c| c.id == conn.id) {
            map.remove(&conn.peer);
        }
    }

    /// Number of open connections.
    pub fn len(&self) -> usize {
        self.conns.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Limits applied to every connection.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    /// Largest message (headers and body) accepted.
    pub max_message_size: usize,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// The per-source limits: connections per IP, request rate, incomplete-message timeout.
    pub sources: Arc<SourceLimits>,
}

/// Binds a TCP listener with `SO_REUSEPORT` (one per worker, same address). With `exclusive`,
/// the flag is set only after binding, so the bind fails if any other socket holds the port
/// (the first listener of a port the server picked itself: see `udp::bind_reuseport`).
pub fn bind_reuseport(addr: SocketAddr, exclusive: bool) -> std::io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if !exclusive {
        sock.set_reuse_port(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    if exclusive {
        sock.set_reuse_port(true)?;
    }
    sock.listen(1024)?;
    Ok(sock.into())
}

/// Accepts connections and serves each on the current worker until the listener fails.
pub async fn accept_loop(
    listener: TcpListener,
    registry: TcpRegistry,
    router: Router,
    metrics: Arc<WorkerMetrics>,
    limits: TcpLimits,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = limits.sources.tcp_open(peer.ip()) else {
                    metrics.dropped(Drop::TcpPerIp);
                    tracing::debug!(%peer, "TCP connection over the per-source limit closed");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                actix_rt::spawn(serve(
                    stream,
                    peer,
                    registry.clone(),
                    Some(router.clone()),
                    metrics.clone(),
                    limits.clone(),
                    slot,
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Opens a connection to `dest` (RFC 3261 §18.1.1: a request to a TCP target without an open
/// connection), then queues `payload` on it. Responses arriving on it are routed as usual; a
/// connection that cannot be opened is reported through `on_failure`.
pub fn connect_and_send(
    registry: TcpRegistry,
    dest: SocketAddr,
    payload: Bytes,
    metrics: Arc<WorkerMetrics>,
    on_failure: Option<super::OnLateFailure>,
) {
    actix_rt::spawn(async move {
        let stream =
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(dest)).await {
                Ok(Ok(s)) => s,
                failed => {
                    match failed {
                        Ok(Err(e)) => tracing::debug!(%dest, error = %e, "TCP connect failed"),
                        _ => tracing::debug!(%dest, "TCP connect timed out"),
                    }
                    if let Some(report) = on_failure {
                        report();
                    }
                    return;
                }
            };
        let _ = stream.set_nodelay(true);
        // The worker set its limits when it started its I/O, before it could send anything.
        let Some(limits) = LOCAL.with(|l| l.borrow().as_ref().map(|(_, lim)| lim.clone())) else {
            if let Some(report) = on_failure {
                report();
            }
            return;
        };
        let (conn, fut) = connection(stream, dest, registry, None, metrics, limits);
        let _ = conn.send(payload);
        drop(conn);
        fut.await;
    });
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    registry: TcpRegistry,
    router: Option<Router>,
    metrics: Arc<WorkerMetrics>,
    limits: TcpLimits,
    slot: TcpSlot,
) {
    let (conn, fut) = connection(stream, peer, registry, router, metrics, limits);
    drop(conn);
    fut.await;
    drop(slot);
}

thread_local! {
    /// The router and limits of the current worker, for connections it opens itself.
    static LOCAL: std::cell::RefCell<Option<(Router, TcpLimits)>> = const { std::cell::RefCell::new(None) };
}

/// Remembers the router and limits on this worker thread (set once when the worker starts).
pub fn set_local(router: Router, limits: TcpLimits) {
    LOCAL.with(|l| *l.borrow_mut() = Some((router, limits)));
}

fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    registry: TcpRegistry,
    router: Option<Router>,
    metrics: Arc<WorkerMetrics>,
    limits: TcpLimits,
) -> (TcpConn, impl std::future::Future<Output = ()>) {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let conn = TcpConn {
        id: NEXT_CONN_ID.fetch_add(1, Relaxed),
        peer,
        tx,
    };
    registry.insert(conn.clone());
    metrics.tcp_connections.fetch_add(1, Relaxed);
    let router = router.or_else(|| LOCAL.with(|l| l.borrow().as_ref().map(|(r, _)| r.clone())));
    let conn2 = conn.clone();
    let peer_for_log = peer;
    let fut = async move {
        let (rd, wr) = stream.into_split();
        let mut writer = actix_rt::spawn(write_loop(wr, rx));
        if let Some(router) = router {
            read_loop(rd, &conn2, &router, &metrics, limits).await;
        }
        registry.remove(&conn2);
        // Let the writer flush what is queued (a last error response), then close.
        drop(conn2);
        if tokio::time::timeout(Duration::from_secs(1), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
        metrics.tcp_connections.fetch_sub(1, Relaxed);
        tracing::debug!(peer = %peer_for_log, "TCP connection closed");
    };
    (conn, fut)
}

async fn write_loop(mut wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(b) = rx.recv().await {
        if wr.write_all(&b).await.is_err() {
            return;
        }
    }
}

async fn read_loop(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    conn: &TcpConn,
    router: &Router,
    metrics: &Arc<WorkerMetrics>,
    limits: TcpLimits,
) {
    let mut framer = StreamFramer::new(limits.max_message_size);
    let limited = limits.sources.config().rate.is_some();
    let message_timeout = limits.sources.config().tcp_message_timeout;
    // When the first byte of the message being read arrived (None between messages).
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        // Read straight into the framer's buffer: frames are split off it without a copy.
        let buf = framer.buffer_mut();
        buf.reserve(16 * 1024);
        let deadline = match partial_since {
            Some(t) => (t + message_timeout).min(tokio::time::Instant::now() + limits.idle_timeout),
            None => tokio::time::Instant::now() + limits.idle_timeout,
        };
        match tokio::time::timeout_at(deadline, rd.read_buf(buf)).await {
            Err(_) if partial_since.is_some_and(|t| t + message_timeout <= deadline) => {
                metrics.dropped(Drop::IncompleteTimeout);
                tracing::debug!(peer = %conn.peer, "TCP message incomplete in time; closing");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %conn.peer, "TCP idle timeout");
                return;
            }
            Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(_)) => {}
        }
        loop {
            match framer.next() {
                Ok(Some(Frame::Message(bytes))) => {
                    let size = bytes.len();
                    let received = Instant::now();
                    if limited
                        && !super::limits::is_response(&bytes)
                        && !limits.sources.allow_request(conn.peer.ip(), received)
                    {
                        metrics.dropped(Drop::RateLimited);
                        continue;
                    }
                    match cpm_engine::sip::parse(bytes) {
                        Ok(msg) => {
                            let inbound = Inbound {
                                msg,
                                source: conn.peer,
                                transport: Transport::Tcp(conn.clone()),
                                size,
                                reject: None,
                                received,
                            };
                            // Refused by overload control: the 503 goes back on the connection.
                            if let Some(resp) = router.route(inbound, metrics) {
                                let _ = conn.send(resp.to_bytes());
                            }
                        }
                        Err(e) => {
                            metrics.dropped(Drop::Unparsable);
                            tracing::debug!(peer = %conn.peer, error = %e, "unparsable message on TCP");
                        }
                    }
                }
                Ok(Some(Frame::KeepAlive)) => {
                    // RFC 5626 §3.5.1: answer a CRLFCRLF ping with a CRLF pong.
                    let _ = conn.send(Bytes::from_static(b"\r\n"));
                }
                Ok(None) => {
                    // Between messages, or part of one: its clock starts with its first byte.
                    partial_since = match (framer.buffered(), partial_since) {
                        (0, _) => None,
                        (_, Some(t)) => Some(t),
                        (_, None) => Some(tokio::time::Instant::now()),
                    };
                    break;
                }
                Err(FramingError::TooLarge) => {
                    // RFC 3261 §21.4.11: answer 513 when the head can still be read, then close
                    // (the rest of the oversized message cannot be skipped reliably).
                    let head =
                        cpm_engine::sip::message::parse_head(framer.buffer_mut().split().freeze());
                    match head {
                        Ok(req)
                            if req.is_request()
                                && req.method() != Some(&cpm_engine::sip::Method::Ack) =>
                        {
                            let resp = cpm_engine::sip::builder::local_response(
                                &req,
                                513,
                                "Message Too Large",
                            );
                            metrics.response_sent(513);
                            let _ = conn.send(resp.to_bytes());
                        }
                        _ => metrics.dropped(Drop::TooLarge),
                    }
                    tracing::debug!(peer = %conn.peer, "message too large on TCP; closing");
                    return;
                }
                Err(e) => {
                    metrics.dropped(Drop::Unparsable);
                    tracing::debug!(peer = %conn.peer, error = ?e, "TCP framing error; closing");
                    return;
                }
            }
        }
    }
}
