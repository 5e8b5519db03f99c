//! The connections of the MSRP plane: accepting and matching them to legs, connecting to
//! peers, one reader and one writer per connection, and the transaction timeouts of a leg.
//!
//! The reader of side X parses what X sends and relays each request to side Y through Y's
//! writer queue, a frame at a time as the body arrives; when that queue is full the reader
//! waits, so X is not read any more (TCP then pushes back on X). What goes out is decided by
//! `engine::msrp::relay`: the rewritten head ([`relay::forward`]), the pieces of each chunk
//! ([`Rechunker`]), the transactions awaiting Y's responses ([`relay::Transactions`], matched
//! by Y's reader) and the failure REPORTs. When a response or REPORT of ours waits behind a
//! chunk X is slow to send, Y's writer signals X's reader, which ends the chunk early with `+`
//! and goes on in a new one (RFC 4975 §7.1.1).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpm_engine::media::Side;
use cpm_engine::msrp::relay::{self, Outcome, Pending, Piece, Rechunker};
use cpm_engine::msrp::uri::first_of_path;
use cpm_engine::msrp::write::{self, IdGen};
use cpm_engine::msrp::{ByteRange, Event, Flag, Head, Kind, Method, Parser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch, Notify};

use super::endpoint::{SinkConn, SinkState};
use super::leg::{route, tag, Bound, Conn, Frame, LegState};
use super::{Plane, TapEvent};

/// Bytes read from a socket at a time (and so the largest body slice queued).
const READ: usize = 64 * 1024;

/// Body slices up to this size are copied next to their head and end line (one buffer for a
/// whole chat message); longer ones are queued as they were read.
const COPY_MAX: usize = 2048;

/// Staged bytes (see [`Staged`]) are queued once they reach this size.
const STAGE_MAX: usize = 64 * 1024;

/// How long a connection of a closed leg still flushes what was queued toward it, and waits
/// for its peer to close, before it is dropped.
pub(super) const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Accepts connections for ever; each is served by its own task.
pub(super) async fn accept_loop(listener: TcpListener, plane: Arc<Plane>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, plane.clone(), None, None));
            }
            Err(e) => {
                tracing::warn!(error = %e, "MSRP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Opens our connection to `side` (we are the active party, RFC 6135): to the first URI of
/// its path; then serves it.
pub(super) async fn connect(leg: Arc<LegState>, plane: Arc<Plane>, side: Side) {
    let target = Some(leg.side(side))
        .filter(relay::Side::peer_known)
        .and_then(|s| first_of_path(s.peer_path()).ok());
    let stream = match target {
        Some(uri) => {
            let host = String::from_utf8_lossy(uri.host());
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port().unwrap_or(2855);
            let attempt = TcpStream::connect((host.as_str(), port));
            tokio::time::timeout(plane.settings.peer_wait, attempt).await
        }
        None => return leg.connecting[side.index()].store(false, Relaxed),
    };
    leg.connecting[side.index()].store(false, Relaxed);
    match stream {
        Ok(Ok(stream)) if !leg.is_closed() => {
            let _ = stream.set_nodelay(true);
            serve(stream, plane, Some(Prebound::Leg(leg, side)), None).await;
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(?side, error = %e, "MSRP connect failed"),
        Err(_) => tracing::debug!(?side, "MSRP connect timed out"),
    }
}

/// Opens our connection to a large-message sender that is passive (RFC 6135): to the first
/// URI of its path, bound to `sink` with an empty SEND; then serves it as the sink's.
pub(super) async fn connect_sink(sink: Arc<SinkState>, plane: Arc<Plane>) {
    let Ok(uri) = first_of_path(sink.peer_path()) else {
        return;
    };
    let host = String::from_utf8_lossy(uri.host());
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port().unwrap_or(2855);
    let attempt = TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(plane.settings.peer_wait, attempt).await {
        Ok(Ok(stream)) if !sink.is_closed() => {
            let _ = stream.set_nodelay(true);
            serve(stream, plane, Some(Prebound::Sink(sink)), None).await;
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "MSRP connect to a large-message sender failed"),
        Err(_) => tracing::debug!("MSRP connect to a large-message sender timed out"),
    }
}

/// A connection we opened, bound from the start.
pub(super) enum Prebound {
    /// To a side of a relay leg.
    Leg(Arc<LegState>, Side),
    /// To a large-message sink.
    Sink(Arc<SinkState>),
}

/// An accepted connection on its way to the shard of the leg or sink its first request named
/// (see [`serve`]).
pub(super) struct Moved {
    /// The parser that read the first request, with what it holds after it.
    parser: Parser,
    /// The event that named the leg or sink, not handled yet.
    first: Event,
    /// The bind deadline of the connection (`--msrp-bind-timeout`).
    deadline: tokio::time::Instant,
}

/// Moves the accepted connection `rd` + `wr` to shard `home`, where it is served from
/// `moved` on.
fn move_to(
    plane: &Arc<Plane>,
    home: usize,
    rd: OwnedReadHalf,
    wr: Option<OwnedWriteHalf>,
    moved: Moved,
) {
    let stream = wr.map(|w| rd.reunite(w)).and_then(Result::ok);
    // Taken out of this thread's reactor; non-blocking, as `from_std` needs.
    match stream.map(TcpStream::into_std) {
        Some(Ok(std)) => {
            let p = plane.clone();
            plane.spawn_on(home, async move {
                match TcpStream::from_std(std) {
                    Ok(stream) => serve(stream, p, None, Some(moved)).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "MSRP connection not moved");
                        p.metrics.connections.fetch_sub(1, Relaxed);
                    }
                }
            });
        }
        _ => {
            tracing::debug!("MSRP connection not moved: its socket could not be taken");
            plane.metrics.connections.fetch_sub(1, Relaxed);
        }
    }
}

/// Every second, the requests forwarded longer than the transaction timeout ago fail with a
/// 408 REPORT to their sender (RFC 4975 §7.1.2). Ends with the leg.
pub(super) async fn timeouts(leg: Weak<LegState>, plane: Arc<Plane>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ids = IdGen::new(plane.next_seed());
    loop {
        tick.tick().await;
        let Some(leg) = leg.upgrade() else { return };
        if leg.is_closed() {
            return;
        }
        let now = Instant::now();
        for side in [Side::A, Side::B] {
            let ended = leg.pending[side.index()].lock().handle_timeout(now);
            if !ended.is_empty() {
                leg.made_room(side, plane.settings.max_unanswered);
            }
            leg.report(&plane, ended, &mut ids).await;
        }
    }
}

async fn wait_notified(n: &Option<Arc<Notify>>) {
    match n {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Waits until a leg's or sink's `closed` flag is set.
pub(super) async fn until_closed(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

async fn wait_closed(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(rx) => until_closed(rx).await,
        None => std::future::pending().await,
    }
}

/// What a connection is bound to once its first request named one of our sessions.
// One per connection, held in place in its task: the relay's reader is not boxed.
#[allow(clippy::large_enum_variant)]
enum Binding {
    /// A side of a relay leg.
    Relay(Reader),
    /// A large-message sink (cpmd is the endpoint).
    Sink(Box<SinkConn>),
}

/// Serves one connection: unbound until its first request names one of our URIs (`bound`
/// given when we connected), then relayed by a [`Reader`] (or received by a sink) until it
/// closes or its leg (sink) does. An accepted connection whose first request names a leg or
/// sink of another shard is moved there ([`move_to`]) and served on from `moved`.
async fn serve(
    stream: TcpStream,
    plane: Arc<Plane>,
    bound: Option<Prebound>,
    moved: Option<Moved>,
) {
    let (mut parser, mut first, bind_deadline) = match moved {
        Some(m) => (m.parser, Some(m.first), m.deadline),
        None => {
            plane.metrics.connections.fetch_add(1, Relaxed);
            let deadline = tokio::time::Instant::now() + plane.settings.bind_timeout;
            (Parser::new(plane.settings.limits), None, deadline)
        }
    };
    let (mut rd, wr) = stream.into_split();
    let mut wr = Some(wr);
    let mut reader = None;
    let mut closed = None;
    match (bound, wr.take()) {
        (Some(Prebound::Leg(leg, side)), Some(w)) => {
            let r = Reader::bind(leg, side, &plane, w);
            r.binding_send().await;
            closed = Some(r.leg.closed.subscribe());
            reader = Some(Binding::Relay(r));
        }
        (Some(Prebound::Sink(sink)), Some(w)) => {
            let mut s = SinkConn::bind(sink, &plane, w);
            if !s.binding_send().await {
                plane.metrics.connections.fetch_sub(1, Relaxed);
                return;
            }
            closed = Some(s.sink.subscribe());
            reader = Some(Binding::Sink(Box::new(s)));
        }
        (None, w) => wr = w,
        (Some(_), None) => {}
    }
    let mut buf = BytesMut::new();
    // A connection that names no session of ours in time (`bind_deadline`) is closed: an idle
    // or trickling stranger must not hold a socket and a task for ever (`--msrp-bind-timeout`).
    'conn: loop {
        if first.is_none() {
            buf.reserve(READ);
            let interrupt = match &reader {
                Some(Binding::Relay(r)) => r.interrupt_signal(),
                _ => None,
            };
            let unbound = reader.is_none();
            // A relayed side is read only while the other has room for more unanswered requests.
            let room = match &reader {
                Some(Binding::Relay(r)) => Some((r.leg.clone(), r.side.other())),
                _ => None,
            };
            let cap = plane.settings.max_unanswered;
            tokio::select! {
                r = async {
                    if let Some((leg, to)) = &room {
                        leg.room_toward(*to, cap).await;
                    }
                    rd.read_buf(&mut buf).await
                } => match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
                _ = async move {
                    if unbound {
                        tokio::time::sleep_until(bind_deadline).await
                    } else {
                        std::future::pending().await
                    }
                } => {
                    tracing::debug!("MSRP connection closed: no request for one of our sessions in time");
                    break;
                }
                _ = wait_closed(&mut closed) => {
                    if let Some(Binding::Sink(s)) = reader.as_mut() {
                        s.close_write().await;
                    }
                    linger(&mut rd).await;
                    break;
                }
                _ = wait_notified(&interrupt) => {
                    if let Some(Binding::Relay(r)) = reader.as_mut() {
                        r.interrupt();
                        r.drain().await;
                    }
                    continue;
                }
            }
            parser.feed(buf.split().freeze());
        }
        while let Some(ev) = first.take().map(Ok).or_else(|| parser.poll()) {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    // The stream cannot be resynchronised (RFC 4975 §9 start line): close.
                    tracing::debug!(error = %e, "MSRP stream lost");
                    break 'conn;
                }
            };
            if reader.is_none() {
                let found = named(&plane, &ev);
                if let Some(home) = found
                    .as_ref()
                    .map(Bound::home)
                    .filter(|&h| h != super::current_shard())
                {
                    let moved = Moved {
                        parser,
                        first: ev,
                        deadline: bind_deadline,
                    };
                    return move_to(&plane, home, rd, wr, moved);
                }
                match bind_incoming(&plane, found, &ev, &mut wr).await {
                    Some(b) => {
                        closed = Some(match &b {
                            Binding::Relay(r) => r.leg.closed.subscribe(),
                            Binding::Sink(s) => s.sink.subscribe(),
                        });
                        reader = Some(b);
                    }
                    None => break 'conn,
                }
            }
            let open = match reader.as_mut() {
                Some(Binding::Relay(r)) => {
                    if r.awaits_peer(&ev) {
                        r.wait_peer().await;
                    }
                    r.on_event(ev);
                    true
                }
                Some(Binding::Sink(s)) => s.on_event(ev).await,
                None => true,
            };
            if !open {
                break 'conn;
            }
        }
        if let Some(Binding::Relay(r)) = reader.as_mut() {
            r.flush_read();
            r.drain().await;
        }
    }
    match reader {
        Some(Binding::Relay(r)) => r.finish().await,
        Some(Binding::Sink(s)) => (*s).finish(),
        None => {}
    }
    plane.metrics.connections.fetch_sub(1, Relaxed);
}

/// The leg or sink named by the session-id of the first To-Path URI of a new connection's
/// first request (RFC 4976 §6 style), also when that request is malformed.
fn named(plane: &Plane, ev: &Event) -> Option<Bound> {
    let to_path = match ev {
        Event::Head(h) => Some(&h.to_path),
        Event::Reject(r) => r.to_path.as_ref(),
        _ => None,
    };
    to_path
        .and_then(|p| first_of_path(p).ok())
        .and_then(|u| route(plane, u.session_id()))
}

/// Binds a new connection to `found`, what its first request `ev` named ([`named`]); a
/// malformed request is then answered on the bound connection. A request naming nothing of
/// ours is answered 481 and the connection closed.
async fn bind_incoming(
    plane: &Arc<Plane>,
    found: Option<Bound>,
    ev: &Event,
    wr: &mut Option<OwnedWriteHalf>,
) -> Option<Binding> {
    let (request, answer) = match ev {
        Event::Head(h) => (h.is_request(), write::response(h, 481, None)),
        Event::Reject(r) => {
            let h = Head::new(
                r.tid.clone(),
                Kind::Request(Method::Send),
                r.to_path.clone().unwrap_or_default(),
                r.from_path.clone().unwrap_or_default(),
            );
            (r.request, write::response(&h, 481, None))
        }
        _ => (false, None),
    };
    match found {
        Some(Bound::Leg(leg, side)) if request && !leg.is_closed() => {
            Some(Binding::Relay(Reader::bind(leg, side, plane, wr.take()?)))
        }
        Some(Bound::Sink(sink)) if request && !sink.is_closed() => Some(Binding::Sink(Box::new(
            SinkConn::bind(sink, plane, wr.take()?),
        ))),
        _ => {
            tracing::debug!("MSRP connection for no session: 481");
            if let (Some(r), Some(w)) = (answer.filter(|_| request), wr.as_mut()) {
                let _ = w
                    .write_all(&write::bodyless(&r, &mut BytesMut::new()))
                    .await;
            }
            None
        }
    }
}

/// Buffers written by one vectored write at most, and the bytes after which no more are added.
const BATCH_BUFFERS: usize = 64;
const BATCH_BYTES: usize = 256 * 1024;

/// The writer of one connection: whole messages of ours from `ctrl` between forwarded
/// messages, whose frames are written in order until their `End`. One of ours that arrives in
/// the middle of a forwarded message is held and `interrupt` signalled, so that the forwarder
/// ends its chunk early (RFC 4975 §7.1.1) instead of leaving ours behind a stalled chunk.
///
/// Whatever is queued when the writer wakes goes out in one vectored write (up to
/// [`BATCH_BUFFERS`] buffers, [`BATCH_BYTES`] bytes): under load a system call carries many
/// chunks and responses, not one piece each.
struct Writer {
    wr: OwnedWriteHalf,
    data: mpsc::Receiver<Frame>,
    ctrl: mpsc::Receiver<Bytes>,
    interrupt: Arc<Notify>,
    /// The last frame taken was a `Part`: a forwarded message is open.
    mid: bool,
    /// One of ours, waiting for the open forwarded message to end.
    held: Option<Bytes>,
    batch: Vec<Bytes>,
    batch_bytes: usize,
    /// Bytes of the batch written so far.
    sent: usize,
}

impl Writer {
    async fn run(mut self, mut closed: watch::Receiver<bool>) {
        loop {
            self.gather();
            if !self.batch.is_empty() {
                // A write a stalled peer holds up ends when the leg closes (it goes on, bounded,
                // below): the batch remembers how much of it was written.
                let done = tokio::select! {
                    biased;
                    r = self.write_batch() => Some(r),
                    _ = until_closed(&mut closed) => None,
                };
                match done {
                    Some(Ok(())) => continue,
                    Some(Err(_)) => return,
                    None => return self.close().await,
                }
            }
            tokio::select! {
                biased;
                _ = until_closed(&mut closed) => return self.close().await,
                c = self.ctrl.recv(), if self.held.is_none() => match c {
                    Some(b) if self.mid => self.hold(b),
                    Some(b) => self.take(Frame::End(b)),
                    None => return,
                },
                d = self.data.recv() => match d {
                    Some(f) => self.take(f),
                    None => return,
                },
            }
        }
    }

    /// A frame for the batch.
    fn take(&mut self, frame: Frame) {
        let b = match frame {
            Frame::Part(b) => {
                self.mid = true;
                b
            }
            Frame::End(b) => {
                self.mid = false;
                b
            }
        };
        self.batch_bytes += b.len();
        self.batch.push(b);
    }

    /// One of ours arrived in the middle of a forwarded message: it waits for its end, and the
    /// forwarder is asked to end the chunk early.
    fn hold(&mut self, b: Bytes) {
        self.held = Some(b);
        self.interrupt.notify_one();
    }

    /// Adds what is queued to the batch without waiting, in the order owed: ours (held first)
    /// only between forwarded messages, forwarded frames otherwise.
    fn gather(&mut self) {
        while self.batch.len() < BATCH_BUFFERS && self.batch_bytes < BATCH_BYTES {
            if !self.mid {
                if let Some(b) = self.held.take() {
                    self.take(Frame::End(b));
                    continue;
                }
                if let Ok(b) = self.ctrl.try_recv() {
                    self.take(Frame::End(b));
                    continue;
                }
            } else if self.held.is_none() {
                if let Ok(b) = self.ctrl.try_recv() {
                    self.hold(b);
                }
            }
            match self.data.try_recv() {
                Ok(f) => self.take(f),
                Err(_) => break,
            }
        }
    }

    /// Writes the rest of the batch (`sent` bytes of it are out already).
    async fn write_batch(&mut self) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = self.batch.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, self.sent);
        while !rest.is_empty() {
            let n = self.wr.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.sent += n;
            IoSlice::advance_slices(&mut rest, n);
        }
        drop(slices);
        self.batch.clear();
        self.batch_bytes = 0;
        self.sent = 0;
        Ok(())
    }

    /// The leg closed (a BYE): what we accepted, and already answered 200 hop by hop, still
    /// goes out before our FIN, for at most [`CLOSE_LINGER`]: the rest of the batch, then what
    /// is queued, in the order owed, but nothing of ours after a forwarded message left cut off
    /// half way.
    async fn close(mut self) {
        let flush = async {
            loop {
                if !self.batch.is_empty() {
                    self.write_batch().await?;
                }
                self.gather();
                if self.batch.is_empty() {
                    return Ok::<_, std::io::Error>(());
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, flush).await;
        let _ = self.wr.shutdown().await;
    }
}

/// After its leg closed, a connection reads and drops what its peer still sends (the
/// responses to what the writer flushes) until the peer closes too, for at most
/// [`CLOSE_LINGER`]: closing a socket with unread data resets it (RFC 9293 §3.6.1, RFC
/// 2525 §2.17), and a reset destroys what the peer has received but not yet read.
async fn linger(rd: &mut OwnedReadHalf) {
    let mut scratch = vec![0u8; 4096];
    let drain = async {
        while let Ok(n) = rd.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
}

/// What the reader is doing with the current transaction.
enum Cur {
    /// Between transactions, or consuming one that needs nothing more (responses, answered
    /// requests).
    Idle,
    /// Relaying a request to the other side.
    Forward(Box<Fwd>),
}

/// A request being relayed: what came in and what goes out.
struct Fwd {
    head: Box<Head>,
    out: Option<Conn>,
    fail: Option<u16>,
    /// The head we forward ([`relay::forward`]); each outgoing chunk gets its own transaction
    /// id and Byte-Range.
    sub: Head,
    /// Cuts the body into outgoing chunks; `None` for a bodyless request (sent whole at its
    /// end line).
    chunks: Option<Rechunker>,
    /// Some of it went out (an abort then ends it with `#`).
    opened: bool,
    tap: Option<Vec<Bytes>>,
}

impl Fwd {
    /// The connection `lost` (from [`Reader::flush`]) is gone: if it was this request's, the
    /// request fails.
    fn lost(&mut self, lost: Option<u64>) {
        if lost.is_some() && self.out.as_ref().map(|c| c.id) == lost {
            self.out = None;
            self.fail = Some(481);
        }
    }
}

/// What a reader hands a connection's writer: a frame of a forwarded message, or one of ours.
enum Out {
    Data(Frame),
    Ctrl(Bytes),
}

/// What a reader queues toward the writers, without waiting: into a writer's queue while it
/// has room, else kept here in order (everything after a kept one is kept too, so nothing
/// overtakes), and [`Outbox::drain`]ed, waiting for room, before the reader reads again. So
/// the reader's work on an event never waits (the events of one read are handled by plain
/// calls, not by futures moved at each step), and a full queue still stops the reading: a
/// slow receiver slows its sender, and what is kept is bounded by what one read produces.
#[derive(Default)]
struct Outbox {
    kept: VecDeque<(Conn, Out)>,
}

impl Outbox {
    /// Queues `out` toward `to`; `false` when that writer is gone (known at once only when
    /// nothing is kept; else found by [`Outbox::drain`]).
    fn put(&mut self, to: &Conn, out: Out) -> bool {
        if !self.kept.is_empty() {
            self.kept.push_back((to.clone(), out));
            return true;
        }
        let full = match out {
            Out::Data(f) => match to.data.try_send(f) {
                Ok(()) => return true,
                Err(TrySendError::Full(f)) => Out::Data(f),
                Err(TrySendError::Closed(_)) => return false,
            },
            Out::Ctrl(b) => match to.ctrl.try_send(b) {
                Ok(()) => return true,
                Err(TrySendError::Full(b)) => Out::Ctrl(b),
                Err(TrySendError::Closed(_)) => return false,
            },
        };
        self.kept.push_back((to.clone(), full));
        true
    }

    /// Queues what was kept, in order, waiting for room; returns the connections whose
    /// writer turned out to be gone for a forwarded frame (nothing more is queued to them).
    async fn drain(&mut self) -> Vec<u64> {
        let mut lost = Vec::new();
        while let Some((to, out)) = self.kept.pop_front() {
            match out {
                Out::Data(_) if lost.contains(&to.id) => {}
                Out::Data(f) => {
                    if to.data.send(f).await.is_err() {
                        lost.push(to.id);
                    }
                }
                Out::Ctrl(b) => {
                    if to.ctrl.send(b).await.is_err() {
                        tracing::debug!(
                            conn = to.id,
                            "MSRP response or REPORT not sent: connection gone"
                        );
                    }
                }
            }
        }
        lost
    }
}

/// The reader side of a bound connection: side `side` of `leg`.
struct Reader {
    leg: Arc<LegState>,
    plane: Arc<Plane>,
    side: Side,
    me: Conn,
    ids: IdGen,
    cur: Cur,
    /// Toward the other side: heads, end lines and short bodies not queued yet.
    staged: Staged,
    /// Toward this connection: our responses and REPORTs not queued yet.
    answers: BytesMut,
    pieces: Vec<Piece>,
    outbox: Outbox,
    /// Copies of the Message-IDs of requests forwarded (see [`Reader::start`]).
    kept_ids: BytesMut,
}

/// What a reader writes toward the other side's writer while it works through one read:
/// queued as one frame when the read is done (or before a long body slice, or at
/// [`STAGE_MAX`]), so that a read holding many chunks costs one queue operation and one
/// write, not three of each per chunk.
#[derive(Default)]
struct Staged {
    /// The connection the bytes are for.
    to: Option<Conn>,
    bytes: BytesMut,
    /// How many of `bytes` end a forwarded message (up to the last end line): those go as
    /// an `End` frame, the rest, a chunk still open, as a `Part`.
    ended: usize,
}

impl Staged {
    /// The frames to queue: the ended messages, then the open rest; and where they go (the
    /// stage lets go of that connection, so that it holds no writer open).
    fn take(&mut self) -> Option<(Conn, [Option<Frame>; 2])> {
        let to = self.to.take();
        let ended = std::mem::take(&mut self.ended);
        if self.bytes.is_empty() {
            return None;
        }
        let whole = (ended > 0).then(|| Frame::End(self.bytes.split_to(ended).freeze()));
        let open = (!self.bytes.is_empty()).then(|| Frame::Part(self.bytes.split().freeze()));
        Some((to?, [whole, open]))
    }
}

impl Reader {
    /// Binds a connection to `side` of `leg`: starts its writer and makes it the side's
    /// connection (replacing an older one).
    fn bind(leg: Arc<LegState>, side: Side, plane: &Arc<Plane>, wr: OwnedWriteHalf) -> Reader {
        let (data_tx, data_rx) = mpsc::channel(plane.settings.queue);
        let (ctrl_tx, ctrl_rx) = mpsc::channel(plane.settings.queue);
        let interrupt = Arc::new(Notify::new());
        let id = plane.next_seed();
        let writer = Writer {
            wr,
            data: data_rx,
            ctrl: ctrl_rx,
            interrupt: interrupt.clone(),
            mid: false,
            held: None,
            batch: Vec::with_capacity(BATCH_BUFFERS),
            batch_bytes: 0,
            sent: 0,
        };
        tokio::spawn(writer.run(leg.closed.subscribe()));
        let me = Conn {
            id,
            data: data_tx,
            ctrl: ctrl_tx,
            interrupt,
        };
        leg.conns[side.index()].send_replace(Some(me.clone()));
        leg.ever[side.index()].store(true, Relaxed);
        tracing::debug!(?side, "MSRP connection bound");
        Reader {
            leg,
            side,
            me,
            ids: IdGen::new(plane.next_seed()),
            plane: plane.clone(),
            cur: Cur::Idle,
            staged: Staged::default(),
            answers: BytesMut::new(),
            pieces: Vec::new(),
            outbox: Outbox::default(),
            kept_ids: BytesMut::new(),
        }
    }

    /// The empty SEND the active party sends first so the other end can bind the connection
    /// (RFC 4975 §5.4, §7.1.1 `Byte-Range: 1-0/0`).
    async fn binding_send(&self) {
        let side = self.leg.side(self.side);
        if !side.peer_known() {
            return;
        }
        let mut ids = IdGen::new(self.plane.next_seed());
        let mut h = Head::new(
            ids.next_id(),
            Kind::Request(Method::Send),
            side.peer_path().clone(),
            side.local_bytes().clone(),
        );
        h.message_id = Some(ids.next_id());
        h.byte_range = Some(ByteRange {
            start: 1,
            end: Some(0),
            total: Some(0),
        });
        let _ = self
            .me
            .ctrl
            .send(write::bodyless(&h, &mut BytesMut::new()))
            .await;
    }

    /// `ev` starts a request to relay while the other side has not connected yet: call
    /// [`Reader::wait_peer`] before [`Reader::on_event`].
    fn awaits_peer(&self, ev: &Event) -> bool {
        let Event::Head(h) = ev else { return false };
        let relayed = match &h.kind {
            Kind::Request(Method::Send) => h.has_body,
            Kind::Request(Method::Report) => true,
            _ => false,
        };
        let other = self.side.other().index();
        relayed
            && self.leg.conns[other].borrow().is_none()
            && !self.leg.ever[other].load(Relaxed)
            && self.leg.sides.lock()[self.side.index()].accept(h).is_ok()
    }

    /// Waits a while ([`Settings::peer_wait`](super::Settings)) for the other side's first
    /// connection, what was read before having been queued.
    async fn wait_peer(&mut self) {
        self.flush_read();
        self.drain().await;
        let mut rx = self.leg.conns[self.side.other().index()].subscribe();
        let wait = rx.wait_for(|c| c.is_some());
        let _ = tokio::time::timeout(self.plane.settings.peer_wait, wait).await;
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Head(h) => self.on_head(h),
            Event::Body(b) => {
                if let Cur::Forward(mut f) = std::mem::replace(&mut self.cur, Cur::Idle) {
                    self.body(&mut f, b);
                    self.cur = Cur::Forward(f);
                }
            }
            Event::End(flag) => {
                if let Cur::Forward(f) = std::mem::replace(&mut self.cur, Cur::Idle) {
                    self.end(*f, flag);
                }
            }
            Event::Reject(r) => {
                tracing::debug!(side = ?self.side, error = %r.error, "MSRP request rejected");
                if let Cur::Forward(mut f) = std::mem::replace(&mut self.cur, Cur::Idle) {
                    self.abort(&mut f);
                }
                if r.request {
                    let mut h = Head::new(
                        r.tid,
                        Kind::Request(Method::Send),
                        r.to_path.unwrap_or_default(),
                        r.from_path.unwrap_or_default(),
                    );
                    h.failure_report = None;
                    self.respond(&h, r.error.status());
                }
            }
        }
    }

    fn on_head(&mut self, h: Box<Head>) {
        let Kind::Request(method) = &h.kind else {
            // A response to a request we forwarded to this side.
            let ended = self.leg.pending[self.side.index()].lock().on_response(&h);
            if let Some(ended) = ended {
                self.leg
                    .made_room(self.side, self.plane.settings.max_unanswered);
                self.report(vec![ended]);
            }
            return;
        };
        let ours = self.leg.sides.lock()[self.side.index()].accept(&h);
        if let Err(e) = ours {
            return self.respond(&h, e.status());
        }
        match method {
            Method::Send if !h.has_body => self.respond(&h, 200),
            Method::Send | Method::Report => self.start(h),
            _ => self.respond(&h, 501),
        }
    }

    /// Queues the failure REPORTs due for `outcomes` toward their origins.
    fn report(&mut self, outcomes: Vec<Outcome>) {
        for (to, r) in self.leg.reports(&self.plane, outcomes, &mut self.ids) {
            if !self.outbox.put(&to, Out::Ctrl(r)) {
                tracing::debug!(conn = to.id, "MSRP REPORT not sent: connection gone");
            }
        }
    }

    /// Answers `req` hop by hop with `code` (RFC 4975 §7.2), unless its Failure-Report says
    /// not to.
    fn respond(&mut self, req: &Head, code: u16) {
        if let Some(r) = write::response(req, code, None) {
            write::make_room(&mut self.answers);
            write::bodyless_into(&r, &mut self.answers);
            if self.answers.len() >= STAGE_MAX {
                self.flush_read();
            }
        }
    }

    /// Queues what was staged: the bytes toward the other side first, then our answers (a
    /// 200 says its chunk was forwarded). When the other side's writer is gone, what was
    /// forwarded to it and not answered fails (481 REPORTs); its id is returned, for the
    /// request being relayed to fail too ([`Fwd::lost`]).
    fn flush(&mut self) -> Option<u64> {
        let mut lost = None;
        if let Some((to, frames)) = self.staged.take() {
            for frame in frames.into_iter().flatten() {
                if !self.outbox.put(&to, Out::Data(frame)) {
                    self.lose(to.id);
                    lost = Some(to.id);
                    break;
                }
            }
        }
        if !self.answers.is_empty() {
            let answers = Out::Ctrl(self.answers.split().freeze());
            self.outbox.put(&self.me, answers);
        }
        lost
    }

    /// The other side's writer `id` is gone: what was forwarded to it and not answered fails.
    fn lose(&mut self, id: u64) {
        tracing::debug!(
            conn = id,
            "MSRP connection gone with requests forwarded to it"
        );
        let other = self.side.other().index();
        let failed = self.leg.pending[other].lock().fail_all(481);
        self.leg
            .made_room(self.side.other(), self.plane.settings.max_unanswered);
        self.report(failed);
    }

    /// The end of a read: what it produced is queued.
    fn flush_read(&mut self) {
        let lost = self.flush();
        if let Cur::Forward(f) = &mut self.cur {
            f.lost(lost);
        }
    }

    /// Waits until everything queued while handling events is in the writers' queues. A
    /// writer found gone on the way fails what was forwarded to it, and the request being
    /// relayed to it; the REPORTs that makes are queued too.
    async fn drain(&mut self) {
        while !self.outbox.kept.is_empty() {
            for id in self.outbox.drain().await {
                self.lose(id);
                if let Cur::Forward(f) = &mut self.cur {
                    f.lost(Some(id));
                }
            }
        }
    }

    /// Readies the stage for bytes of `f` (toward its connection): `false` when nothing of it
    /// goes out.
    fn stage_for(&mut self, f: &mut Fwd) -> bool {
        let Some(id) = f.out.as_ref().map(|c| c.id) else {
            return false;
        };
        if self.staged.to.as_ref().is_some_and(|c| c.id == id) {
            return true;
        }
        if !self.staged.bytes.is_empty() {
            // Staged for another connection (the other side reconnected): queued first.
            f.lost(self.flush());
        }
        self.staged.to.clone_from(&f.out);
        self.staged.to.is_some()
    }

    fn start(&mut self, head: Box<Head>) {
        let out = self.leg.conn(self.side.other());
        let to = self.leg.side(self.side.other());
        let tap =
            (head.method() == Some(&Method::Send) && self.leg.tap.lock().is_some()).then(Vec::new);
        let chunks = head.has_body.then(|| {
            let mut rc = Rechunker::new(self.plane.settings.rechunk);
            rc.begin(head.range());
            rc
        });
        let mut f = Fwd {
            sub: relay::forward(&head, &to, Bytes::new()),
            head,
            fail: None,
            out: None,
            chunks,
            opened: false,
            tap,
        };
        match out {
            Some(out) if to.peer_known() => f.out = Some(out),
            _ => f.fail = Some(481),
        }
        // The transactions awaiting responses keep the Message-ID: a copy, not a slice of
        // the read buffer, which it would hold whole until the response came.
        if let Some(m) = f.sub.message_id.take() {
            write::make_room(&mut self.kept_ids);
            self.kept_ids.extend_from_slice(&m);
            f.sub.message_id = Some(self.kept_ids.split().freeze());
        }
        self.cur = Cur::Forward(Box::new(f));
    }

    /// Sends the pieces in `self.pieces` (from the [`Rechunker`]): each outgoing chunk has our
    /// transaction id and, unless it is the whole of a chunk that had none, its Byte-Range; it
    /// is tracked once its end line is staged. Heads, end lines and short bodies are staged;
    /// a long body slice is queued as it was read.
    fn emit(&mut self, f: &mut Fwd) {
        let mut pieces = std::mem::take(&mut self.pieces);
        for piece in pieces.drain(..) {
            if !self.stage_for(f) {
                continue;
            }
            write::make_room(&mut self.staged.bytes);
            match piece {
                Piece::Open(range) => {
                    f.sub.tid = self.ids.next_id();
                    f.sub.byte_range =
                        (f.head.byte_range.is_some() || range.start > 1).then_some(range);
                    f.opened = true;
                    write::head(&f.sub, &mut self.staged.bytes);
                }
                Piece::Data(b) => {
                    let n = b.len() as u64;
                    self.plane.metrics.bytes_relayed.fetch_add(n, Relaxed);
                    if b.len() <= COPY_MAX {
                        self.staged.bytes.extend_from_slice(&b);
                    } else {
                        f.lost(self.flush());
                        self.send(f, Frame::Part(b));
                    }
                }
                Piece::Close(flag) => {
                    let staged = &mut self.staged;
                    write::end_line(&f.sub.tid, flag, true, &mut staged.bytes);
                    staged.ended = staged.bytes.len();
                    self.track(f);
                }
            }
            if self.staged.bytes.len() >= STAGE_MAX {
                f.lost(self.flush());
            }
        }
        self.pieces = pieces;
    }

    /// Remembers the request `f.sub` just sent to the other side, awaiting its response.
    fn track(&self, f: &Fwd) {
        if f.out.is_some() {
            self.leg.pending[self.side.other().index()].lock().on_sent(
                &f.sub,
                tag(self.side),
                Instant::now(),
            );
        }
    }

    /// Ends what goes out of `f` with `flag`: the last chunk of a body, or a bodyless request
    /// whole.
    fn close(&mut self, f: &mut Fwd, flag: Flag) {
        if f.out.is_none() {
            return;
        }
        match f.chunks.as_mut() {
            Some(rc) => {
                rc.end(flag, &mut self.pieces);
                self.emit(f);
            }
            None => {
                if !self.stage_for(f) {
                    return;
                }
                f.sub.tid = self.ids.next_id();
                let staged = &mut self.staged;
                write::make_room(&mut staged.bytes);
                write::head(&f.sub, &mut staged.bytes);
                write::end_line(&f.sub.tid, flag, false, &mut staged.bytes);
                staged.ended = staged.bytes.len();
                self.track(f);
            }
        }
    }

    /// The request stops half way (its sender's stream failed): what went out of it ends `#`.
    fn abort(&mut self, f: &mut Fwd) {
        if f.opened {
            self.close(f, Flag::Aborted);
        }
    }

    /// The signal of the other side's writer while a chunk of ours is open toward it.
    fn interrupt_signal(&self) -> Option<Arc<Notify>> {
        match &self.cur {
            Cur::Forward(f) if f.chunks.as_ref().is_some_and(Rechunker::is_open) => {
                f.out.as_ref().map(|c| c.interrupt.clone())
            }
            _ => None,
        }
    }

    /// A message of ours waits behind the open chunk: end it with `+` now (RFC 4975 §7.1.1);
    /// the body goes on in a new chunk when more arrives. Call [`Reader::drain`] after.
    fn interrupt(&mut self) {
        if let Cur::Forward(mut f) = std::mem::replace(&mut self.cur, Cur::Idle) {
            if let Some(rc) = f.chunks.as_mut() {
                rc.interrupt(&mut self.pieces);
                self.emit(&mut f);
                f.lost(self.flush());
            }
            self.cur = Cur::Forward(f);
        }
    }

    /// Queues a frame of `f` toward its connection (nothing staged may precede it).
    fn send(&mut self, f: &mut Fwd, frame: Frame) {
        let Some(out) = &f.out else { return };
        if !self.outbox.put(out, Out::Data(frame)) {
            f.out = None;
            f.fail = Some(481);
        }
    }

    fn body(&mut self, f: &mut Fwd, b: Bytes) {
        let n = b.len() as u64;
        self.leg.counters.bytes[self.side.index()].fetch_add(n, Relaxed);
        if let Some(t) = &mut f.tap {
            t.push(b.clone());
        }
        if f.out.is_none() {
            return;
        }
        if let Some(rc) = f.chunks.as_mut() {
            rc.push(b, &mut self.pieces);
            self.emit(f);
        }
    }

    fn end(&mut self, mut f: Fwd, flag: Flag) {
        self.close(&mut f, flag);
        let from = self.side;
        if f.head.method() == Some(&Method::Send) {
            self.leg.counters.chunks[from.index()].fetch_add(1, Relaxed);
            if flag == Flag::Complete {
                self.leg.counters.messages[from.index()].fetch_add(1, Relaxed);
            }
        }
        if let Some(body) = f.tap.take() {
            let tap = self.leg.tap.lock().clone();
            if let Some(tap) = tap {
                tap.on_send(TapEvent {
                    from,
                    message_id: f.head.message_id.clone(),
                    content_type: f.head.content_type.clone(),
                    byte_range: f.head.range(),
                    flag,
                    body,
                });
            }
        }
        match f.fail {
            None => self.respond(&f.head, 200),
            Some(code) => {
                tracing::debug!(side = ?from, code, "MSRP request not relayed");
                self.respond(&f.head, code);
                if f.head.method() == Some(&Method::Send) {
                    let p = Pending::of(&f.head, tag(from));
                    if let Some((_, r)) =
                        self.leg
                            .failure_report(&self.plane, &p, code, self.ids.next_id())
                    {
                        self.answers.extend_from_slice(&r);
                    }
                }
            }
        }
    }

    /// The connection ended: a chunk left half forwarded is ended `#`, the side is
    /// disconnected, and what was forwarded to it unanswered fails (481 REPORTs).
    async fn finish(mut self) {
        if let Cur::Forward(mut f) = std::mem::replace(&mut self.cur, Cur::Idle) {
            self.abort(&mut f);
        }
        self.flush();
        self.drain().await;
        let side = self.side.index();
        self.leg.conns[side].send_if_modified(|c| match c {
            Some(conn) if conn.id == self.me.id => {
                *c = None;
                true
            }
            _ => false,
        });
        let lost = self.leg.pending[side].lock().fail_all(481);
        self.leg
            .made_room(self.side, self.plane.settings.max_unanswered);
        if !self.leg.is_closed() {
            self.leg.report(&self.plane, lost, &mut self.ids).await;
        }
        tracing::debug!(side = ?self.side, "MSRP connection closed");
    }
}
