//! The connections of the MSRP plane: accepting and matching them to legs, connecting to
//! peers, one reader and one writer per connection, and the transaction timeouts of a leg.
//!
//! The reader of side X parses what X sends and relays each request to side Y through Y's
//! writer queue, a frame at a time as the body arrives; when that queue is full the reader
//! waits, so X is not read any more (TCP then pushes back on X). Responses to our forwarded
//! requests come back through Y's reader, which matches them by transaction id.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpm_engine::media::Side;
use cpm_engine::msrp::uri::first_of_path;
use cpm_engine::msrp::write::{self, IdGen};
use cpm_engine::msrp::{ByteRange, Event, Flag, Head, Kind, Method, Parser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::leg::{route, Conn, Frame, LegState, PendingTx};
use super::{Plane, TapEvent};

/// Bytes read from a socket at a time (and so the largest frame queued).
const READ: usize = 64 * 1024;

/// Accepts connections for ever; each is served by its own task.
pub(super) async fn accept_loop(listener: TcpListener, plane: Arc<Plane>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, plane.clone(), None));
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
    let target = leg.peers.lock()[side.index()]
        .as_ref()
        .and_then(|p| first_of_path(&p.path).ok());
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
            serve(stream, plane, Some((leg, side))).await;
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(?side, error = %e, "MSRP connect failed"),
        Err(_) => tracing::debug!(?side, "MSRP connect timed out"),
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
            let mut expired = Vec::new();
            leg.pending[side.index()].lock().retain(|_, tx| {
                let keep = tx.deadline > now;
                if !keep {
                    expired.push(tx.clone());
                }
                keep
            });
            for tx in expired {
                if let Some(r) = leg.failure_report(&plane, &tx, 408, ids.next_id()) {
                    leg.send_ctrl(tx.origin, r);
                }
            }
        }
    }
}

async fn wait_closed(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(rx) => {
            let _ = rx.wait_for(|c| *c).await;
        }
        None => std::future::pending().await,
    }
}

/// Serves one connection: unbound until its first request names one of our URIs (`bound`
/// given when we connected), then relayed by a [`Reader`] until it closes or the leg does.
async fn serve(stream: TcpStream, plane: Arc<Plane>, bound: Option<(Arc<LegState>, Side)>) {
    plane.metrics.connections.fetch_add(1, Relaxed);
    let (mut rd, wr) = stream.into_split();
    let mut wr = Some(wr);
    let mut parser = Parser::new(plane.settings.limits);
    let mut reader = None;
    let mut closed = None;
    if let Some((leg, side)) = bound {
        if let Some(w) = wr.take() {
            let r = Reader::bind(leg, side, &plane, w);
            r.binding_send().await;
            closed = Some(r.leg.closed.subscribe());
            reader = Some(r);
        }
    }
    let mut buf = BytesMut::new();
    'conn: loop {
        buf.reserve(READ);
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = wait_closed(&mut closed) => break,
        }
        parser.feed(buf.split().freeze());
        while let Some(ev) = parser.poll() {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    // The stream cannot be resynchronised (RFC 4975 §9 start line): close.
                    tracing::debug!(error = %e, "MSRP stream lost");
                    break 'conn;
                }
            };
            if reader.is_none() {
                match bind_incoming(&plane, &ev, &mut wr).await {
                    Some(r) => {
                        closed = Some(r.leg.closed.subscribe());
                        reader = Some(r);
                    }
                    None => break 'conn,
                }
            }
            if let Some(r) = reader.as_mut() {
                r.on_event(ev).await;
            }
        }
    }
    if let Some(r) = reader {
        r.finish().await;
    }
    plane.metrics.connections.fetch_sub(1, Relaxed);
}

/// Matches a new connection by the session-id of the first To-Path URI of its first request
/// (RFC 4976 §6 style), also when that request is malformed (it is then answered on the bound
/// connection); an unknown one is answered 481 and the connection closed.
async fn bind_incoming(
    plane: &Arc<Plane>,
    ev: &Event,
    wr: &mut Option<OwnedWriteHalf>,
) -> Option<Reader> {
    let (to_path, request, answer) = match ev {
        Event::Head(h) => (
            Some(&h.to_path),
            h.is_request(),
            write::response(h, 481, None),
        ),
        Event::Reject(r) => {
            let h = Head::new(
                r.tid.clone(),
                Kind::Request(Method::Send),
                r.to_path.clone().unwrap_or_default(),
                r.from_path.clone().unwrap_or_default(),
            );
            (
                r.to_path.as_ref(),
                r.request,
                write::response(&h, 481, None),
            )
        }
        _ => (None, false, None),
    };
    let found = to_path
        .and_then(|p| first_of_path(p).ok())
        .and_then(|u| route(plane, u.session_id()));
    match found {
        Some((leg, side)) if request && !leg.is_closed() => {
            Some(Reader::bind(leg, side, plane, wr.take()?))
        }
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

/// The writer of one connection: whole messages of ours from `ctrl` between forwarded
/// messages, whose frames are written in order until their `End`.
async fn writer(
    mut wr: OwnedWriteHalf,
    mut data: mpsc::Receiver<Frame>,
    mut ctrl: mpsc::Receiver<Bytes>,
    mut closed: watch::Receiver<bool>,
) {
    loop {
        let mut frame = tokio::select! {
            biased;
            _ = closed.wait_for(|c| *c) => return,
            c = ctrl.recv() => match c {
                Some(b) => Frame::End(b),
                None => return,
            },
            d = data.recv() => match d {
                Some(f) => f,
                None => return,
            },
        };
        loop {
            let (bytes, end) = match frame {
                Frame::Part(b) => (b, false),
                Frame::End(b) => (b, true),
            };
            if wr.write_all(&bytes).await.is_err() {
                return;
            }
            if end {
                break;
            }
            frame = tokio::select! {
                _ = closed.wait_for(|c| *c) => return,
                d = data.recv() => match d {
                    Some(f) => f,
                    None => return,
                },
            };
        }
    }
}

/// What the reader is doing with the current transaction.
enum Cur {
    /// Between transactions, or consuming one that needs nothing more (responses, answered
    /// requests).
    Idle,
    /// Relaying a request to the other side.
    Forward(Box<Fwd>),
}

/// A request being relayed: what came in and the (sub-)chunk going out.
struct Fwd {
    head: Head,
    out: Option<Conn>,
    fail: Option<u16>,
    /// The head we forward (our transaction id, the rewritten paths).
    sub: Head,
    /// Body bytes in the open sub-chunk; `None` when none is open.
    sub_len: Option<u64>,
    /// The message position of the next body byte (from 1).
    next: u64,
    tap: Option<Vec<Bytes>>,
}

/// The reader side of a bound connection: side `side` of `leg`.
struct Reader {
    leg: Arc<LegState>,
    plane: Arc<Plane>,
    side: Side,
    me: Conn,
    ids: IdGen,
    cur: Cur,
    buf: BytesMut,
}

impl Reader {
    /// Binds a connection to `side` of `leg`: starts its writer and makes it the side's
    /// connection (replacing an older one).
    fn bind(leg: Arc<LegState>, side: Side, plane: &Arc<Plane>, wr: OwnedWriteHalf) -> Reader {
        let (data_tx, data_rx) = mpsc::channel(plane.settings.queue);
        let (ctrl_tx, ctrl_rx) = mpsc::channel(plane.settings.queue);
        let id = plane.next_seed();
        tokio::spawn(writer(wr, data_rx, ctrl_rx, leg.closed.subscribe()));
        let me = Conn {
            id,
            data: data_tx,
            ctrl: ctrl_tx,
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
            buf: BytesMut::new(),
        }
    }

    /// The empty SEND the active party sends first so the other end can bind the connection
    /// (RFC 4975 §5.4, §7.1.1 `Byte-Range: 1-0/0`).
    async fn binding_send(&self) {
        let Some(path) = self.leg.peers.lock()[self.side.index()]
            .as_ref()
            .map(|p| p.path.clone())
        else {
            return;
        };
        let mut ids = IdGen::new(self.plane.next_seed());
        let mut h = Head::new(
            ids.next_id(),
            Kind::Request(Method::Send),
            path,
            self.leg.local[self.side.index()].clone(),
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

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Head(h) => self.on_head(h).await,
            Event::Body(b) => {
                if let Cur::Forward(mut f) = std::mem::replace(&mut self.cur, Cur::Idle) {
                    self.body(&mut f, b).await;
                    self.cur = Cur::Forward(f);
                }
            }
            Event::End(flag) => {
                if let Cur::Forward(f) = std::mem::replace(&mut self.cur, Cur::Idle) {
                    self.end(*f, flag).await;
                }
            }
            Event::Reject(r) => {
                tracing::debug!(side = ?self.side, error = %r.error, "MSRP request rejected");
                if let Cur::Forward(mut f) = std::mem::replace(&mut self.cur, Cur::Idle) {
                    self.close_sub(&mut f, Flag::Aborted).await;
                }
                if r.request {
                    let mut h = Head::new(
                        r.tid,
                        Kind::Request(Method::Send),
                        r.to_path.unwrap_or_default(),
                        r.from_path.unwrap_or_default(),
                    );
                    h.failure_report = None;
                    self.respond(&h, r.error.status()).await;
                }
            }
        }
    }

    async fn on_head(&mut self, h: Head) {
        let Kind::Request(method) = &h.kind else {
            // A response to a request we forwarded to this side.
            let tx = self.leg.pending[self.side.index()].lock().remove(&h.tid);
            if let (Some(tx), Some(code)) = (tx, h.code()) {
                if code != 200 {
                    if let Some(r) =
                        self.leg
                            .failure_report(&self.plane, &tx, code, self.ids.next_id())
                    {
                        self.leg.send_ctrl(tx.origin, r);
                    }
                }
            }
            return;
        };
        let ours =
            first_of_path(&h.to_path).is_ok_and(|u| u == self.leg.local_uri[self.side.index()]);
        if !ours {
            return self.respond(&h, 481).await;
        }
        match method {
            Method::Send if !h.has_body => self.respond(&h, 200).await,
            Method::Send | Method::Report => self.start(h).await,
            _ => self.respond(&h, 501).await,
        }
    }

    /// Answers `req` hop by hop with `code` (RFC 4975 §7.2), unless its Failure-Report says
    /// not to.
    async fn respond(&mut self, req: &Head, code: u16) {
        if let Some(r) = write::response(req, code, None) {
            let _ = self.me.ctrl.send(write::bodyless(&r, &mut self.buf)).await;
        }
    }

    /// The other side's connection; when it never connected yet, waits for it a while.
    async fn other_conn(&self) -> Option<Conn> {
        let other = self.side.other();
        if let Some(c) = self.leg.conn(other) {
            return Some(c);
        }
        if self.leg.ever[other.index()].load(Relaxed) {
            return None;
        }
        let mut rx = self.leg.conns[other.index()].subscribe();
        let wait = rx.wait_for(|c| c.is_some());
        let got = match tokio::time::timeout(self.plane.settings.peer_wait, wait).await {
            Ok(Ok(c)) => c.clone(),
            _ => None,
        };
        got
    }

    async fn start(&mut self, head: Head) {
        let other = self.side.other();
        let out = self.other_conn().await;
        let path = self.leg.peers.lock()[other.index()]
            .as_ref()
            .map(|p| p.path.clone());
        let tap =
            (head.method() == Some(&Method::Send) && self.leg.tap.lock().is_some()).then(Vec::new);
        let mut sub = head.clone();
        sub.from_path = self.leg.local[other.index()].clone();
        let mut f = Fwd {
            next: head.range().start,
            head,
            fail: None,
            out: None,
            sub,
            sub_len: None,
            tap,
        };
        match (out, path) {
            (Some(out), Some(path)) => {
                f.sub.to_path = path;
                f.out = Some(out);
                self.open_sub(&mut f).await;
            }
            _ => f.fail = Some(481),
        }
        self.cur = Cur::Forward(Box::new(f));
    }

    /// Writes the head of the next (sub-)chunk: our transaction id, and, when the message is
    /// cut, the Byte-Range of this piece (its end when the original's is known).
    async fn open_sub(&mut self, f: &mut Fwd) {
        let orig = f.head.range();
        let max = self.plane.settings.rechunk.max(1);
        f.sub.tid = self.ids.next_id();
        if f.head.byte_range.is_some() || f.next > 1 {
            f.sub.byte_range = Some(ByteRange {
                start: f.next,
                end: orig.end.map(|e| e.min(f.next + max - 1)),
                total: orig.total,
            });
        }
        write::head(&f.sub, &mut self.buf);
        let head = self.buf.split().freeze();
        f.sub_len = Some(0);
        self.send(f, Frame::Part(head)).await;
    }

    /// Ends the open sub-chunk with `flag` and remembers its transaction.
    async fn close_sub(&mut self, f: &mut Fwd, flag: Flag) {
        if f.sub_len.take().is_none() {
            return;
        }
        write::end_line(&f.sub.tid, flag, f.sub.has_body, &mut self.buf);
        let end = self.buf.split().freeze();
        let fr = f.sub.failure_report();
        if fr != cpm_engine::msrp::FailureReport::No {
            let tx = PendingTx {
                origin: self.side,
                message_id: f.head.message_id.clone(),
                range: f.sub.range(),
                failure_report: fr,
                deadline: Instant::now() + self.plane.settings.tx_timeout,
            };
            self.leg.pending[self.side.other().index()]
                .lock()
                .insert(f.sub.tid.clone(), tx);
        }
        self.send(f, Frame::End(end)).await;
    }

    async fn send(&mut self, f: &mut Fwd, frame: Frame) {
        let Some(out) = &f.out else { return };
        if out.data.send(frame).await.is_err() {
            f.out = None;
            f.fail = Some(481);
        }
    }

    async fn body(&mut self, f: &mut Fwd, mut b: Bytes) {
        let n = b.len() as u64;
        self.leg.counters.bytes[self.side.index()].fetch_add(n, Relaxed);
        if let Some(t) = &mut f.tap {
            t.push(b.clone());
        }
        let max = self.plane.settings.rechunk.max(1);
        while !b.is_empty() && f.out.is_some() {
            if f.sub_len.is_some_and(|l| l >= max) {
                // Re-chunking (RFC 4975 §7.1.1): this piece ends with `+`, the next has its
                // own transaction and Byte-Range.
                self.close_sub(f, Flag::Continues).await;
                self.open_sub(f).await;
                continue;
            }
            let room = max - f.sub_len.unwrap_or(0);
            let piece = b.split_to((room.min(b.len() as u64)) as usize);
            let len = piece.len() as u64;
            f.sub_len = f.sub_len.map(|l| l + len);
            f.next += len;
            self.plane.metrics.bytes_relayed.fetch_add(len, Relaxed);
            self.send(f, Frame::Part(piece)).await;
        }
    }

    async fn end(&mut self, mut f: Fwd, flag: Flag) {
        self.close_sub(&mut f, flag).await;
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
            None => self.respond(&f.head, 200).await,
            Some(code) => {
                tracing::debug!(side = ?from, code, "MSRP request not relayed");
                self.respond(&f.head, code).await;
                if f.head.method() == Some(&Method::Send) {
                    let tx = PendingTx {
                        origin: from,
                        message_id: f.head.message_id.clone(),
                        range: f.head.range(),
                        failure_report: f.head.failure_report(),
                        deadline: Instant::now(),
                    };
                    if let Some(r) =
                        self.leg
                            .failure_report(&self.plane, &tx, code, self.ids.next_id())
                    {
                        let _ = self.me.ctrl.send(r).await;
                    }
                }
            }
        }
    }

    /// The connection ended: a chunk left half forwarded is ended `#`, the side is
    /// disconnected, and what was forwarded to it unanswered fails (481 REPORTs).
    async fn finish(mut self) {
        if let Cur::Forward(mut f) = std::mem::replace(&mut self.cur, Cur::Idle) {
            self.close_sub(&mut f, Flag::Aborted).await;
        }
        let side = self.side.index();
        self.leg.conns[side].send_if_modified(|c| match c {
            Some(conn) if conn.id == self.me.id => {
                *c = None;
                true
            }
            _ => false,
        });
        let lost: Vec<PendingTx> = self.leg.pending[side]
            .lock()
            .drain()
            .map(|(_, tx)| tx)
            .collect();
        if !self.leg.is_closed() {
            for tx in lost {
                if let Some(r) = self
                    .leg
                    .failure_report(&self.plane, &tx, 481, self.ids.next_id())
                {
                    self.leg.send_ctrl(tx.origin, r);
                }
            }
        }
        tracing::debug!(side = ?self.side, "MSRP connection closed");
    }
}
