//! The BFCP plane (RFC 8855 over TCP, RFC 8856 `TCP/BFCP`; decision 0015): one TCP listener
//! shared by every half-duplex conference (`--bfcp-listen`), on a thread of its own with a
//! tokio current-thread runtime, like the MSRP plane.
//!
//! ```text
//!  participant ══TCP══► listener ─ first message's COMMON-HEADER: conference id ─► route
//!      ▲                    │ framed by engine::conference::floor::bfcp::Framer
//!      │                    ▼
//!  ConnWriter (bounded) ◄── ConferenceActor (its worker): FloorControl, FromBfcp::{Opened,
//!                           Frame, Closed} arrive by `send().await` (the mailbox's bound holds)
//! ```
//!
//! A connection names its conference and user by the conference id and user id of its first
//! message (RFC 8855 §8: Hello first); the conference id is the one the conference's SDP
//! answer gave (`a=confid`, allocated here by [`BfcpPlane::open`]), the user id is checked by
//! the conference. A first message naming no running conference is answered with Error 1
//! (Conference does not Exist) and the connection closed; bytes that cannot be framed are
//! answered with the Error their [`BfcpError`] names and the connection closed (a TCP stream
//! cannot be resynchronised, RFC 8855 §6.2). A connection that sends nothing whole in
//! [`BIND_TIMEOUT`] is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use cpm_engine::conference::floor::bfcp::{
    Attribute, BfcpError, ErrorCode, Framer, Header, Message, Primitive,
};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// A new connection must send one whole message this soon.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages queued toward one connection; a peer that lets more pile up is disconnected.
const WRITE_QUEUE: usize = 64;

/// Bytes read at a time.
const READ: usize = 4096;

/// A BFCP connection's id within the plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What a connection tells the conference it names.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum FromBfcp {
    /// A connection whose first message named this conference and `user_id`; the first
    /// message follows as a [`FromBfcp::Frame`].
    Opened {
        /// The connection.
        conn: ConnId,
        /// The user id of its first message (`a=userid`).
        user_id: u16,
        /// Where replies to it go.
        writer: ConnWriter,
    },
    /// One framed message (not yet decoded: the conference answers what does not decode).
    Frame {
        /// The connection.
        conn: ConnId,
        /// The message's bytes.
        frame: Bytes,
    },
    /// The connection is gone.
    Closed {
        /// The connection.
        conn: ConnId,
    },
}

/// The sending half of a connection, held by the conference. Dropping every clone closes the
/// connection.
#[derive(Debug, Clone)]
pub struct ConnWriter {
    tx: mpsc::Sender<Bytes>,
}

impl ConnWriter {
    /// Queues `msg`; `false` when the connection is gone or its queue is full (the peer does
    /// not read: the connection is to be dropped).
    pub fn send(&self, msg: &Message) -> bool {
        match msg.to_bytes() {
            Ok(b) => self.tx.try_send(b).is_ok(),
            Err(e) => {
                tracing::warn!(error = %e, "BFCP message not encodable");
                true
            }
        }
    }
}

/// A conference's place in the plane: its BFCP conference id, routed while this lives.
#[derive(Debug)]
pub struct BfcpRoute {
    id: u32,
    plane: Weak<Plane>,
}

impl BfcpRoute {
    /// The conference id (`a=confid`, RFC 8856 §5).
    pub fn conference_id(&self) -> u32 {
        self.id
    }
}

impl Drop for BfcpRoute {
    fn drop(&mut self) {
        if let Some(p) = self.plane.upgrade() {
            p.routes.lock().remove(&self.id);
        }
    }
}

/// The BFCP plane: its listener thread and the conferences' routes. Cheap to clone.
#[derive(Clone)]
pub struct BfcpPlane {
    inner: Arc<Plane>,
}

struct Plane {
    local: SocketAddr,
    routes: Mutex<HashMap<u32, Recipient<FromBfcp>>>,
    next_conf: AtomicU32,
    next_conn: AtomicU64,
}

impl BfcpPlane {
    /// Binds the listener on `listen` and starts the plane's thread.
    pub fn start(listen: SocketAddr) -> std::io::Result<BfcpPlane> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let inner = Arc::new(Plane {
            local,
            routes: Mutex::new(HashMap::new()),
            next_conf: AtomicU32::new(1),
            next_conn: AtomicU64::new(1),
        });
        let plane = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("cpm-bfcp".into())
            .spawn(move || {
                rt.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => accept_loop(l, plane).await,
                        Err(e) => tracing::error!(error = %e, "BFCP listener"),
                    }
                })
            })?;
        tracing::info!(%local, "BFCP floor control listening");
        Ok(BfcpPlane { inner })
    }

    /// The bound listening address (the port of `m=application <port> TCP/BFCP`).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// A fresh conference id routed to `to` while the returned route lives.
    pub fn open(&self, to: Recipient<FromBfcp>) -> BfcpRoute {
        let mut routes = self.inner.routes.lock();
        let id = loop {
            let id = self.inner.next_conf.fetch_add(1, Relaxed);
            if id != 0 && !routes.contains_key(&id) {
                break id;
            }
        };
        routes.insert(id, to);
        BfcpRoute {
            id,
            plane: Arc::downgrade(&self.inner),
        }
    }

    /// Conferences routed now.
    pub fn route_count(&self) -> usize {
        self.inner.routes.lock().len()
    }
}

async fn accept_loop(listener: TcpListener, plane: Weak<Plane>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, peer, plane.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "BFCP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if plane.strong_count() == 0 {
            return;
        }
    }
}

/// The Error answering a stream that cannot be framed (RFC 8855 §13.1), addressed with
/// what is known of the sender.
fn framing_error(conference_id: u32, user_id: u16, e: &BfcpError) -> Message {
    let (code, details) = e
        .error_code()
        .unwrap_or((ErrorCode::UNABLE_TO_PARSE, Bytes::new()));
    Message::new(Primitive::Error, conference_id, 0, user_id)
        .with(Attribute::ErrorCode { code, details })
        .with(Attribute::ErrorInfo(Bytes::from_static(
            e.reason().as_bytes(),
        )))
}

async fn write_now(stream: &mut TcpStream, msg: &Message) {
    if let Ok(b) = msg.to_bytes() {
        let _ = stream.write_all(&b).await;
    }
}

/// Reads frames until one is whole (or the stream fails/ends).
async fn next_frame(
    stream: &mut TcpStream,
    framer: &mut Framer,
    buf: &mut BytesMut,
) -> Result<Option<Bytes>, BfcpError> {
    loop {
        if let Some(f) = framer.next_frame()? {
            return Ok(Some(f));
        }
        buf.clear();
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => framer.push(buf),
        }
    }
}

/// One connection: bind by the first message, then frames to the conference and its
/// replies back, until either side ends.
async fn serve(mut stream: TcpStream, peer: SocketAddr, plane: Weak<Plane>) {
    let mut framer = Framer::default();
    let mut buf = BytesMut::with_capacity(READ);
    let first =
        tokio::time::timeout(BIND_TIMEOUT, next_frame(&mut stream, &mut framer, &mut buf)).await;
    let first = match first {
        Err(_) | Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "BFCP stream not framed");
            return write_now(&mut stream, &framing_error(0, 0, &e)).await;
        }
        Ok(Ok(Some(f))) => f,
    };
    // The frame was framed, so its header decodes.
    let Ok(h) = Header::decode(&first) else {
        return;
    };
    let Some(plane) = plane.upgrade() else {
        return;
    };
    let route = plane.routes.lock().get(&h.conference_id).cloned();
    let conn = ConnId(plane.next_conn.fetch_add(1, Relaxed));
    drop(plane);
    let Some(to) = route else {
        tracing::debug!(%peer, conference = h.conference_id, "BFCP connection for no conference");
        let reply = Message::new(
            Primitive::Error,
            h.conference_id,
            h.transaction_id,
            h.user_id,
        )
        .with(Attribute::ErrorCode {
            code: ErrorCode::CONFERENCE_DOES_NOT_EXIST,
            details: Bytes::new(),
        })
        .with(Attribute::ErrorInfo(Bytes::from_static(
            b"no such conference",
        )));
        return write_now(&mut stream, &reply).await;
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let opened = FromBfcp::Opened {
        conn,
        user_id: h.user_id,
        writer: ConnWriter { tx },
    };
    if to.send(opened).await.is_err()
        || to
            .send(FromBfcp::Frame { conn, frame: first })
            .await
            .is_err()
    {
        return;
    }
    tracing::debug!(%peer, conference = h.conference_id, user = h.user_id, conn = conn.0, "BFCP connection bound");
    let (mut rd, mut wr) = stream.into_split();
    // The writer ends when the conference drops the connection's writer, the peer is gone,
    // or the reader hands it a last message (the Error to unframeable bytes) or ends; the
    // reader ends when the peer closes, sends what cannot be framed, or the writer ended.
    let (last_tx, mut last_rx) = oneshot::channel::<Bytes>();
    let mut last_tx = Some(last_tx);
    let (done_tx, mut done_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                b = rx.recv() => match b {
                    Some(b) if wr.write_all(&b).await.is_ok() => {}
                    _ => break,
                },
                last = &mut last_rx => {
                    if let Ok(b) = last {
                        let _ = wr.write_all(&b).await;
                    }
                    break;
                }
            }
        }
        let _ = wr.shutdown().await;
        drop(done_tx);
    });
    loop {
        match framer.next_frame() {
            Ok(Some(frame)) => {
                if to.send(FromBfcp::Frame { conn, frame }).await.is_err() {
                    break;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(%peer, error = %e, "BFCP stream not framed");
                if let (Ok(b), Some(tx)) = (
                    framing_error(h.conference_id, h.user_id, &e).to_bytes(),
                    last_tx.take(),
                ) {
                    let _ = tx.send(b);
                }
                break;
            }
        }
        buf.clear();
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => framer.push(&buf),
            },
            _ = &mut done_rx => break,
        }
    }
    let _ = to.send(FromBfcp::Closed { conn }).await;
}
