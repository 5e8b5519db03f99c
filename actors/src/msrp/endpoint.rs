//! cpmd as an MSRP endpoint, for large message mode (OMA CPM / RCS: one message in a session
//! of its own, RFC 4975): a [`MsrpSink`] receives the messages of a session whose recipient is
//! offline, and [`deliver`] sends a held message to a device over a connection cpmd opens.
//!
//! ```text
//!  sender ══TCP══► listener ─ session-id ─► sink connection: chunks ─ Assembler ─► complete
//!                                              ─► on_message(msg, reply) ─► storage commit
//!                                              ◄─ reply(200 / error) ◄──────────┘
//!                                           200 to the `$` chunk (+ Success REPORT)
//!  cpmd ══TCP══► device (a=setup:active): SEND chunks ─► the 200 to the last one ─► Ok
//! ```
//!
//! The joining of chunks and the limits are `cpm_engine::msrp::assemble`'s; this module moves
//! bytes and waits for the storage's answer.
//!
//! A sink opened with [`open_chat`] is also a sender (a conference's focus is the MSRP
//! endpoint of each participant's chat session, decision 0014): messages handed to
//! [`MsrpSink::send`] wait in a bounded queue and go out as SEND chunks over the same
//! connection, between the responses to what the participant sends. A full queue drops the
//! copy (counted, `cpm_msrp_chat_dropped_total`): a participant that stops reading never holds
//! up the others.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpm_engine::msrp::assemble::{Assembler, ChunkOutcome, Complete};
use cpm_engine::msrp::relay;
use cpm_engine::msrp::uri::{first_of_path, parse_path};
use cpm_engine::msrp::write::{self, IdGen};
use cpm_engine::msrp::{ByteRange, Event, Flag, Head, Kind, Method, Parser, Status, Uri};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::conn::{until_closed, CLOSE_LINGER};
use super::Plane;

/// How long a complete message waits for its storage answer before the sender gets an error.
const REPLY_WAIT: Duration = Duration::from_secs(30);

/// Where the answer to a complete message goes: the MSRP status of its last chunk (200 once
/// stored; an error status otherwise).
pub type Reply = oneshot::Sender<u16>;

/// What a sink does with each complete message (called on the MSRP plane's thread: it must not
/// block; it answers through the [`Reply`]).
pub type OnMessage = Box<dyn Fn(Complete, Reply) + Send + Sync>;

pub(crate) struct SinkState {
    /// Our URI and the sender's path (its SDP `a=path`).
    side: relay::Side,
    max: u64,
    /// Whose messages these are ([`super::MsrpPlane::receiving`] counts them by it).
    owner: Bytes,
    on_message: OnMessage,
    closed: watch::Sender<bool>,
    last_activity: Mutex<Instant>,
    /// What a chat sink sends (`None`: a receive-only large-message sink).
    outbox: Option<Outbox>,
    /// The plane's shard that runs the sink's connection.
    pub(super) home: usize,
}

/// The bounded queue of a chat sink's outgoing messages; the writer of its connection holds
/// the receiver (one connection at a time).
struct Outbox {
    tx: mpsc::Sender<ChatMessage>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<ChatMessage>>>,
    dropped: AtomicU64,
}

/// A message a chat sink sends to its peer (a fan-out copy).
#[derive(Debug, Clone)]
pub struct ChatMessage {
    /// Its Message-ID (fresh per copy).
    pub message_id: Bytes,
    /// Its Content-Type.
    pub content_type: Bytes,
    /// Its body (shared by the copies: no copy per recipient).
    pub body: Bytes,
}

impl SinkState {
    pub(super) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// The sender's path (where cpmd connects when it is the active party).
    pub(super) fn peer_path(&self) -> &Bytes {
        self.side.peer_path()
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    fn touch(&self) {
        *self.last_activity.lock() = Instant::now();
    }
}

/// The session actor's (here: the message controller's) handle of a sink. Dropping it closes
/// the sink: its connection is closed, an unfinished message is dropped, and its session-id is
/// routed nowhere.
pub struct MsrpSink {
    state: Arc<SinkState>,
    plane: Arc<Plane>,
}

impl MsrpSink {
    /// Our URI (the `a=path` of the SDP answer).
    pub fn local_uri(&self) -> &Bytes {
        self.state.side.local_bytes()
    }

    /// How long nothing arrived on the sink.
    pub fn idle_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(*self.state.last_activity.lock())
    }

    /// Queues `msg` for the peer (a chat sink); `false` when it was dropped: the queue is full
    /// (counted) or this sink only receives.
    pub fn send(&self, msg: ChatMessage) -> bool {
        let Some(out) = &self.state.outbox else {
            return false;
        };
        match out.tx.try_send(msg) {
            Ok(()) => true,
            Err(_) => {
                out.dropped.fetch_add(1, Relaxed);
                self.plane.metrics.chat_dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Copies dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.state
            .outbox
            .as_ref()
            .map_or(0, |o| o.dropped.load(Relaxed))
    }

    /// Connects to the sender's path (cpmd is `a=setup:active`, RFC 6135): the connection is
    /// bound with an empty SEND (RFC 4975 §5.4) and the messages arrive over it.
    pub fn connect(&self) {
        let (state, plane) = (self.state.clone(), self.plane.clone());
        let home = state.home;
        self.plane
            .spawn_on(home, super::conn::connect_sink(state, plane));
    }
}

impl Drop for MsrpSink {
    fn drop(&mut self) {
        self.plane
            .routes
            .lock()
            .remove(self.state.side.local().session_id());
        self.state.closed.send_replace(true);
        self.plane.metrics.sinks.fetch_sub(1, Relaxed);
    }
}

/// Opens a sink at our URI `local` for a sender at `peer_path`; messages over `max` bytes are
/// refused (413).
pub(super) fn open_sink(
    plane: &Arc<Plane>,
    local: &Bytes,
    peer_path: &Bytes,
    max: u64,
    owner: Bytes,
    on_message: OnMessage,
) -> Result<MsrpSink, String> {
    open(plane, local, peer_path, max, owner, on_message, None)
}

/// Opens a chat sink: a sink (as [`open_sink`]) that also sends the messages given to
/// [`MsrpSink::send`], at most `queue` of them waiting.
pub(super) fn open_chat(
    plane: &Arc<Plane>,
    local: &Bytes,
    peer_path: &Bytes,
    max: u64,
    queue: usize,
    on_message: OnMessage,
) -> Result<MsrpSink, String> {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let outbox = Outbox {
        tx,
        rx: Arc::new(tokio::sync::Mutex::new(rx)),
        dropped: AtomicU64::new(0),
    };
    open(
        plane,
        local,
        peer_path,
        max,
        local.clone(),
        on_message,
        Some(outbox),
    )
}

fn open(
    plane: &Arc<Plane>,
    local: &Bytes,
    peer_path: &Bytes,
    max: u64,
    owner: Bytes,
    on_message: OnMessage,
    outbox: Option<Outbox>,
) -> Result<MsrpSink, String> {
    let local = Uri::parse(local).map_err(|e| e.reason().to_string())?;
    let path = parse_path(peer_path).map_err(|e| e.reason().to_string())?;
    let sid = local.session_id().clone();
    let state = Arc::new(SinkState {
        side: relay::Side::new(local, &path),
        max,
        owner,
        on_message,
        closed: watch::channel(false).0,
        last_activity: Mutex::new(Instant::now()),
        outbox,
        home: plane.next_home(),
    });
    plane
        .routes
        .lock()
        .insert(sid, super::Route::Sink(Arc::downgrade(&state)));
    plane.metrics.sinks.fetch_add(1, Relaxed);
    Ok(MsrpSink {
        state,
        plane: plane.clone(),
    })
}

/// What the sink's connection is doing with the current transaction.
enum Cur {
    Idle,
    /// A SEND chunk being joined.
    Joining(Box<Head>),
}

/// A message of `owner` being received: counted in the plane while it lives (from its first
/// chunk until its storage answer, its abort or the connection's end).
struct Receiving {
    plane: Arc<Plane>,
    owner: Bytes,
}

impl Receiving {
    fn new(plane: &Arc<Plane>, owner: &Bytes) -> Receiving {
        *plane.receiving.lock().entry(owner.clone()).or_insert(0) += 1;
        Receiving {
            plane: plane.clone(),
            owner: owner.clone(),
        }
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        let mut map = self.plane.receiving.lock();
        if let Some(n) = map.get_mut(&self.owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.owner);
            }
        }
    }
}

/// The reader of a connection bound to a sink.
pub(super) struct SinkConn {
    pub(super) sink: Arc<SinkState>,
    plane: Arc<Plane>,
    wr: Out,
    asm: Assembler,
    cur: Cur,
    buf: BytesMut,
    ids: IdGen,
    /// Set while a message is unfinished or waits for its storage answer.
    receiving: Option<Receiving>,
}

impl SinkConn {
    pub(super) fn bind(sink: Arc<SinkState>, plane: &Arc<Plane>, wr: OwnedWriteHalf) -> SinkConn {
        tracing::debug!("MSRP connection bound to a sink");
        sink.touch();
        let wr = match &sink.outbox {
            Some(out) => {
                let (tx, rx) = mpsc::channel(plane.settings.queue);
                tokio::spawn(chat_writer(
                    wr,
                    rx,
                    out.rx.clone(),
                    sink.clone(),
                    plane.clone(),
                ));
                Out::Queue(tx)
            }
            None => Out::Direct(wr),
        };
        SinkConn {
            asm: Assembler::new(sink.max),
            sink,
            plane: plane.clone(),
            wr,
            cur: Cur::Idle,
            buf: BytesMut::new(),
            ids: IdGen::new(plane.next_seed()),
            receiving: None,
        }
    }

    /// The empty SEND that binds a connection we opened (RFC 4975 §5.4); `false` if it
    /// could not be written.
    pub(super) async fn binding_send(&mut self) -> bool {
        let side = &self.sink.side;
        let mut h = Head::new(
            self.ids.next_id(),
            Kind::Request(Method::Send),
            side.peer_path().clone(),
            side.local_bytes().clone(),
        );
        h.message_id = Some(self.ids.next_id());
        h.byte_range = Some(ByteRange {
            start: 1,
            end: Some(0),
            total: Some(0),
        });
        let out = write::bodyless(&h, &mut self.buf);
        self.wr.write(out).await
    }

    /// One parser event; `false` when the connection is to be closed (it cannot be written).
    pub(super) async fn on_event(&mut self, ev: Event) -> bool {
        let open = self.handle(ev).await;
        // A message is being received while one is unfinished (the pager messages for its
        // owner wait for it, to keep the order).
        match (self.asm.pending() > 0, self.receiving.is_some()) {
            (true, false) => self.receiving = Some(Receiving::new(&self.plane, &self.sink.owner)),
            (false, true) => self.receiving = None,
            _ => {}
        }
        open
    }

    async fn handle(&mut self, ev: Event) -> bool {
        self.sink.touch();
        match ev {
            Event::Head(h) => self.on_head(h).await,
            Event::Body(b) => {
                if matches!(self.cur, Cur::Joining(_)) {
                    self.asm.on_body(&b);
                }
                true
            }
            Event::End(flag) => match std::mem::replace(&mut self.cur, Cur::Idle) {
                Cur::Joining(h) => self.on_end(*h, flag).await,
                Cur::Idle => true,
            },
            Event::Reject(r) => {
                tracing::debug!(error = %r.error, "MSRP request to the sink rejected");
                if let Cur::Joining(_) = std::mem::replace(&mut self.cur, Cur::Idle) {
                    self.asm.on_reject();
                }
                if !r.request {
                    return true;
                }
                let mut h = Head::new(
                    r.tid,
                    Kind::Request(Method::Send),
                    r.to_path.unwrap_or_default(),
                    r.from_path.unwrap_or_default(),
                );
                h.failure_report = None;
                self.respond(&h, r.error.status()).await
            }
        }
    }

    async fn on_head(&mut self, h: Box<Head>) -> bool {
        let Kind::Request(method) = &h.kind else {
            return true; // a response to our REPORT: nothing to do
        };
        if let Err(e) = self.sink.side.accept(&h) {
            return self.respond(&h, e.status()).await;
        }
        match method {
            Method::Send if h.has_body => {
                self.asm.on_head(&h);
                self.cur = Cur::Joining(h);
                true
            }
            Method::Send => self.respond(&h, 200).await,
            Method::Report => true,
            _ => self.respond(&h, 501).await,
        }
    }

    async fn on_end(&mut self, h: Head, flag: Flag) -> bool {
        match self.asm.on_end(flag) {
            ChunkOutcome::Accepted | ChunkOutcome::Aborted => self.respond(&h, 200).await,
            ChunkOutcome::Refused(code) => {
                tracing::debug!(code, "large message refused");
                self.respond(&h, code).await
            }
            ChunkOutcome::Complete(msg) => {
                let (size, report) = (msg.body.len() as u64, msg.success_report);
                let message_id = msg.message_id.clone();
                let (tx, rx) = oneshot::channel();
                (self.sink.on_message)(msg, tx);
                // RFC 4975 §7.1.1: the 200 to the last chunk says the message was taken; it
                // follows the storage commit.
                let code = match tokio::time::timeout(REPLY_WAIT, rx).await {
                    Ok(Ok(code)) => code,
                    Ok(Err(_)) => 500,
                    Err(_) => 408,
                };
                // No longer receiving before the sender hears so: a pager message it sends
                // after our 200 must not wait behind this one.
                self.receiving = None;
                if !self.respond(&h, code).await {
                    return false;
                }
                if code == 200 && report {
                    return self.success_report(&h, message_id, size).await;
                }
                true
            }
        }
    }

    /// The success REPORT of a stored message (RFC 4975 §7.1.2: Status 000 200, its whole
    /// Byte-Range).
    async fn success_report(&mut self, req: &Head, message_id: Bytes, size: u64) -> bool {
        let to = first_of_path(&req.from_path)
            .map(|u| u.to_bytes())
            .unwrap_or_else(|_| req.from_path.clone());
        let mut r = Head::new(
            self.ids.next_id(),
            Kind::Request(Method::Report),
            to,
            self.sink.side.local_bytes().clone(),
        );
        r.message_id = Some(message_id);
        r.byte_range = Some(ByteRange::whole(size));
        r.status = Some(Status {
            namespace: 0,
            code: 200,
            reason: Some(Bytes::from_static(b"OK")),
        });
        let out = write::bodyless(&r, &mut self.buf);
        self.wr.write(out).await
    }

    async fn respond(&mut self, req: &Head, code: u16) -> bool {
        match write::response(req, code, None) {
            Some(r) => {
                let out = write::bodyless(&r, &mut self.buf);
                self.wr.write(out).await
            }
            None => true,
        }
    }

    /// The sink closed: our FIN goes out now, before the reader lingers for the peer's
    /// (a chat sink's writer task ends with the sink and sends it then).
    pub(super) async fn close_write(&mut self) {
        if let Out::Direct(w) = &mut self.wr {
            let _ = w.shutdown().await;
        }
    }

    /// The connection ended: an unfinished message is dropped with the assembler.
    pub(super) fn finish(self) {
        if self.asm.pending() > 0 {
            tracing::debug!(
                pending = self.asm.pending(),
                "MSRP sink connection closed mid-message: not stored"
            );
        }
    }
}

/// Where a sink connection's responses and REPORTs go: the socket, or (a chat sink) the
/// writer task that also sends the chat's messages.
enum Out {
    Direct(OwnedWriteHalf),
    Queue(mpsc::Sender<Bytes>),
}

impl Out {
    /// `false` when the connection cannot be written any more.
    async fn write(&mut self, b: Bytes) -> bool {
        match self {
            Out::Direct(w) => w.write_all(&b).await.is_ok(),
            Out::Queue(q) => q.send(b).await.is_ok(),
        }
    }
}

/// The writer of a chat sink's connection: the reader's responses and REPORTs (`ctrl`), and
/// the queued chat messages as SEND chunks (each at most the re-chunking size, so a response
/// waits at most one chunk). Ends with the reader or a write error; when the sink closes,
/// what is queued still goes out before our FIN, as a relay leg's writer does (bounded by
/// [`CLOSE_LINGER`]).
async fn chat_writer(
    mut wr: OwnedWriteHalf,
    mut ctrl: mpsc::Receiver<Bytes>,
    outbox: Arc<tokio::sync::Mutex<mpsc::Receiver<ChatMessage>>>,
    sink: Arc<SinkState>,
    plane: Arc<Plane>,
) {
    let mut closed = sink.subscribe();
    // One connection sends at a time; a later one waits for the earlier one's end.
    let mut queue = tokio::select! {
        q = outbox.lock_owned() => q,
        _ = until_closed(&mut closed) => return,
    };
    let mut out = ChatOut {
        ids: IdGen::new(plane.next_seed()),
        buf: BytesMut::new(),
        peer: sink.peer_path().clone(),
        local: sink.side.local_bytes().clone(),
        step: plane.settings.rechunk,
    };
    enum Next {
        Closed,
        Ours(Option<Bytes>),
        Chat(Option<ChatMessage>),
    }
    loop {
        let next = tokio::select! {
            biased;
            _ = until_closed(&mut closed) => Next::Closed,
            c = ctrl.recv() => Next::Ours(c),
            m = queue.recv() => Next::Chat(m),
        };
        let written = match next {
            Next::Ours(Some(b)) => wr.write_all(&b).await,
            Next::Chat(Some(m)) => out.send(&mut wr, m, &mut ctrl).await,
            Next::Ours(None) | Next::Chat(None) => return,
            Next::Closed => {
                let flush = async {
                    while let Ok(b) = ctrl.try_recv() {
                        wr.write_all(&b).await?;
                    }
                    while let Ok(m) = queue.try_recv() {
                        out.send(&mut wr, m, &mut ctrl).await?;
                    }
                    Ok::<_, std::io::Error>(())
                };
                let _ = tokio::time::timeout(CLOSE_LINGER, flush).await;
                let _ = wr.shutdown().await;
                return;
            }
        };
        if written.is_err() {
            return;
        }
    }
}

/// What a chat sink's writer needs to send a message as SEND chunks.
struct ChatOut {
    ids: IdGen,
    buf: BytesMut,
    peer: Bytes,
    local: Bytes,
    step: u64,
}

impl ChatOut {
    /// Writes `msg` chunk by chunk, with the responses queued meanwhile between the chunks.
    async fn send(
        &mut self,
        wr: &mut OwnedWriteHalf,
        msg: ChatMessage,
        ctrl: &mut mpsc::Receiver<Bytes>,
    ) -> std::io::Result<()> {
        let out = Outgoing {
            local: self.local.clone(),
            peer_path: self.peer.clone(),
            message_id: msg.message_id,
            content_type: msg.content_type,
            body: msg.body,
        };
        for (chunk, _) in chunks(&out, self.step, &mut self.ids, &mut self.buf) {
            for p in chunk {
                wr.write_all(&p).await?;
            }
            while let Ok(b) = ctrl.try_recv() {
                wr.write_all(&b).await?;
            }
        }
        Ok(())
    }
}

/// The SEND chunks of `msg` (RFC 4975 §5.1: bodies of at most `step` bytes, each with its
/// Byte-Range, `+` but the last), as the byte slices to write and its transaction id. The body
/// goes out as slices of the message, without a copy.
fn chunks(
    msg: &Outgoing,
    step: u64,
    ids: &mut IdGen,
    buf: &mut BytesMut,
) -> Vec<([Bytes; 3], Bytes)> {
    let total = msg.body.len() as u64;
    let step = step.max(1) as usize;
    let mut out = Vec::new();
    let mut start = 0usize;
    loop {
        let end = (start + step).min(msg.body.len());
        let mut h = Head::new(
            ids.next_id(),
            Kind::Request(Method::Send),
            msg.peer_path.clone(),
            msg.local.clone(),
        );
        h.message_id = Some(msg.message_id.clone());
        h.byte_range = Some(ByteRange {
            start: start as u64 + 1,
            end: Some(end as u64),
            total: Some(total),
        });
        h.content_type = Some(msg.content_type.clone());
        let flag = if end == msg.body.len() {
            Flag::Complete
        } else {
            Flag::Continues
        };
        let parts = write::chunk(&mut h, msg.body.slice(start..end), flag, buf);
        out.push((parts, h.tid));
        start = end;
        if start >= msg.body.len() {
            return out;
        }
    }
}

/// A message cpmd sends as an endpoint.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Our URI (the `a=path` of our SDP).
    pub local: Bytes,
    /// The device's `a=path`.
    pub peer_path: Bytes,
    /// The Message-ID.
    pub message_id: Bytes,
    /// The Content-Type.
    pub content_type: Bytes,
    /// The body.
    pub body: Bytes,
}

/// Delivers `msg` over a connection cpmd opens to the first URI of the device's path (cpmd
/// is `a=setup:active`, RFC 6135): SEND chunks of at most the plane's re-chunking size, then
/// waits for the response to the last one. `Err` is the status that ended it: the device's
/// error, 408 for no answer in the transaction timeout, 480 for a device that could not be
/// reached or closed the connection.
pub(super) async fn deliver(plane: Arc<Plane>, msg: Outgoing) -> Result<(), u16> {
    let uri = first_of_path(&msg.peer_path).map_err(|_| 400u16)?;
    let host = String::from_utf8_lossy(uri.host());
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port().unwrap_or(2855);
    let stream = match tokio::time::timeout(
        plane.settings.peer_wait,
        TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => return Err(480),
    };
    let _ = stream.set_nodelay(true);
    plane.metrics.connections.fetch_add(1, Relaxed);
    let r = send_chunks(&plane, stream, &msg).await;
    plane.metrics.connections.fetch_sub(1, Relaxed);
    r
}

async fn send_chunks(plane: &Plane, stream: TcpStream, msg: &Outgoing) -> Result<(), u16> {
    let (mut rd, mut wr) = stream.into_split();
    let mut ids = IdGen::new(plane.next_seed());
    let mut buf = BytesMut::new();
    let mut tids = Vec::new();
    for (parts, tid) in chunks(msg, plane.settings.rechunk, &mut ids, &mut buf) {
        for p in parts {
            wr.write_all(&p).await.map_err(|_| 480u16)?;
        }
        tids.push(tid);
    }
    let last = tids.last().cloned().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + plane.settings.tx_timeout;
    let mut parser = Parser::new(plane.settings.limits);
    let mut rbuf = BytesMut::new();
    loop {
        rbuf.reserve(16 * 1024);
        match tokio::time::timeout_at(deadline, rd.read_buf(&mut rbuf)).await {
            Err(_) => return Err(408),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(480),
            Ok(Ok(_)) => {}
        }
        parser.feed(rbuf.split().freeze());
        while let Some(ev) = parser.poll() {
            let Ok(ev) = ev else { return Err(480) };
            let Event::Head(h) = ev else { continue };
            match h.code() {
                Some(200) if h.tid == last => {
                    let _ = wr.shutdown().await;
                    return Ok(());
                }
                Some(200) => {}
                Some(code) if tids.contains(&h.tid) => return Err(code),
                Some(_) => {}
                // The device's own requests (a binding SEND): answered, otherwise ignored.
                None if h.method() == Some(&Method::Send) => {
                    if let Some(r) = write::response(&h, 200, None) {
                        let out = write::bodyless(&r, &mut buf);
                        wr.write_all(&out).await.map_err(|_| 480u16)?;
                    }
                }
                None => {}
            }
        }
    }
}
