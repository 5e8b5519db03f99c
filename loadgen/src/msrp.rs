//! The MSRP endpoints of a run (RFC 4975) on a thread of their own: non-blocking TCP on one
//! `mio` poll, framing with the engine's [`Parser`] and [`write`](mod@write) (no second MSRP codec).
//!
//! The SIP side of a session stays in the [`Driver`](crate::driver::Driver); once the SDP says
//! where to connect, the scenario hands the [`Plane`] an [`Open`] and later reads the
//! [`Event`]s it sends back ([`Plane::poll_events`], from a timer). Every connection is
//! *active* (we connect, RFC 4975 §5.4 / RFC 6135): cpmd answers both sides `passive`, and an
//! RFC 4976 relay is always connected to by its clients.
//!
//! A [`Role::Send`] connection binds itself with an empty SEND, then sends `messages` stamped
//! bodies ([`crate::stamp`]) in chunks of `chunk` bytes with Byte-Range, keeping at most
//! [`WINDOW`] chunks unanswered and [`MAX_QUEUED`] bytes queued (bounded memory, TCP pushes
//! back). A [`Role::Receive`] connection binds, answers every SEND 200, and checks every
//! message: contiguous byte ranges, the stamp, the padding, the total; each whole message is
//! an [`Event::Delivered`] with its latency from the stamp.
//!
//! Through an RFC 4976 relay that is not a media anchor (Kamailio's `msrp` module) a client
//! first authenticates: [`Plane::auth`] connects to the relay and sends AUTH with our URI (the
//! connection's own address, so that the relay reaches us on it); the 200's Use-Path followed
//! by our URI is the path to put in the SDP ([`Event::Authed`]). Once the peer's path is known,
//! [`Plane::start`] gives the connection its role.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpm_engine::msrp::write::{self, IdGen};
use cpm_engine::msrp::{ByteRange, Event as Parsed, Flag, Head, Kind, Limits, Method, Parser};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::io::unix_us;
use crate::stamp;

/// Chunks sent and not yet answered, per connection, at most.
pub const WINDOW: usize = 64;

/// Bytes queued for writing, per connection, before no more chunks are made.
pub const MAX_QUEUED: usize = 1 << 20;

/// Bytes read per `read` call.
const READ_SIZE: usize = 64 * 1024;

/// Reads per connection per loop turn (then the others and the commands get their turn).
const READS_PER_TURN: usize = 16;

/// A connection that is not up after this long fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The stamp bytes a receiver keeps of each message (the stamp line fits in them).
const STAMP_BYTES: usize = 64;

const WAKER: Token = Token(usize::MAX);

/// The load one sending connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Messages to send.
    pub messages: u64,
    /// Bytes per message (at least the stamp line).
    pub size: usize,
    /// Bytes per chunk at most (RFC 4975 §7.1.1: a message may be sent in several chunks).
    pub chunk: usize,
}

/// What a connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends the load, counts the 200s.
    Send(Load),
    /// Answers and checks what arrives.
    Receive,
}

/// A connection to open: to the first URI of `to_path`, at `connect`.
#[derive(Debug, Clone)]
pub struct Open {
    /// The caller's key (its session), named in the events.
    pub key: u64,
    /// Where to connect.
    pub connect: SocketAddr,
    /// Our URI (From-Path).
    pub local: Bytes,
    /// The peer's path (To-Path), as the SDP gave it.
    pub to_path: Bytes,
    /// Send or receive.
    pub role: Role,
}

/// What a sending connection achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Messages whose every chunk got a 200.
    pub messages_ok: u64,
    /// Messages sent with at least one chunk answered otherwise (or never).
    pub messages_failed: u64,
    /// Chunks sent.
    pub chunks: u64,
    /// Chunks answered 200.
    pub chunks_ok: u64,
    /// Body bytes answered 200.
    pub bytes_ok: u64,
}

/// What the plane tells the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A sending connection finished its load (every chunk answered, or the connection failed
    /// with `error`).
    Done {
        /// The [`Open::key`].
        key: u64,
        /// Its figures.
        sent: Sent,
        /// Why it ended early, if it did.
        error: Option<String>,
    },
    /// One message of `seq` sent `first_us` (stamp) got the 200 of its last chunk after
    /// `rtt` (first byte queued → last 200): the sender's per-message latency.
    Acked {
        /// The [`Open::key`].
        key: u64,
        /// First chunk queued → last chunk answered.
        rtt: Duration,
    },
    /// A receiving connection got a whole message.
    Delivered {
        /// The [`Open::key`].
        key: u64,
        /// Its stamp's sequence number (`None`: no stamp).
        seq: Option<u64>,
        /// Stamp to last byte, µs (wall clock; `None` without a stamp).
        latency_us: Option<u64>,
        /// Its size.
        bytes: u64,
        /// The sequence number was seen before on this connection.
        duplicate: bool,
        /// Its bytes were not what was sent (gap, overlap, wrong padding, bad total).
        corrupted: bool,
        /// Chunks it came in.
        chunks: u64,
    },
    /// The AUTH of [`Plane::auth`] ended: our whole path (the relay's Use-Path, then our URI)
    /// or why not.
    Authed {
        /// The key.
        key: u64,
        /// The path to announce in SDP, or the error.
        path: Result<Bytes, String>,
    },
    /// A receiving connection ended (closed by the peer, or failed).
    Closed {
        /// The [`Open::key`].
        key: u64,
        /// Why, if not an orderly close.
        error: Option<String>,
    },
}

enum Command {
    Open(Open),
    Auth {
        key: u64,
        relay: SocketAddr,
    },
    Start {
        key: u64,
        to_path: Bytes,
        role: Role,
    },
    Close(u64),
    Shutdown,
}

/// The handle of the MSRP thread: dropping it stops the thread.
pub struct Plane {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<Event>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Plane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Plane")
    }
}

impl Plane {
    /// Starts the thread; `seed` seeds transaction and message ids.
    pub fn spawn(seed: u64) -> io::Result<Plane> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (commands, command_rx) = mpsc::channel();
        let (event_tx, events) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("msrp".into())
            .spawn(move || {
                let mut l = Loop {
                    poll,
                    commands: command_rx,
                    events: event_tx,
                    conns: HashMap::new(),
                    next_token: 0,
                    ids: IdGen::new(seed),
                    buf: BytesMut::new(),
                    read_buf: BytesMut::new(),
                    ready: VecDeque::new(),
                    in_ready: HashSet::new(),
                };
                if let Err(e) = l.run() {
                    tracing::warn!(error = %e, "msrp thread ended");
                }
            })?;
        Ok(Plane {
            commands,
            events,
            waker,
            thread: Some(thread),
        })
    }

    /// Opens a connection.
    pub fn open(&self, open: Open) {
        self.send(Command::Open(open));
    }

    /// Connects to the RFC 4976 relay at `relay` and authenticates there (AUTH, §5.1); an
    /// [`Event::Authed`] tells the path to announce.
    pub fn auth(&self, key: u64, relay: SocketAddr) {
        self.send(Command::Auth { key, relay });
    }

    /// Gives the authenticated connection of `key` its role toward the peer at `to_path`.
    pub fn start(&self, key: u64, to_path: Bytes, role: Role) {
        self.send(Command::Start { key, to_path, role });
    }

    /// Closes the connections of `key` (e.g. at BYE).
    pub fn close(&self, key: u64) {
        self.send(Command::Close(key));
    }

    fn send(&self, c: Command) {
        if self.commands.send(c).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// The events so far, at most `max`.
    pub fn poll_events(&self, max: usize) -> Vec<Event> {
        self.events.try_iter().take(max).collect()
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One message being sent.
struct Outgoing {
    seq: u64,
    body: Bytes,
    offset: usize,
    message_id: Bytes,
    queued_at: Instant,
    unanswered: usize,
    failed: bool,
}

struct Sender {
    load: Load,
    next_seq: u64,
    current: Option<Outgoing>,
    /// Messages fully queued and not fully answered, by sequence number.
    waiting: HashMap<u64, Outgoing>,
    /// tid → sequence number of the message the chunk belongs to.
    unanswered: HashMap<Bytes, u64>,
    sent: Sent,
    bound: bool,
    done: bool,
}

/// One message being received.
#[derive(Default)]
struct Progress {
    next: u64,
    total: Option<u64>,
    stamp: Vec<u8>,
    corrupted: bool,
    chunks: u64,
}

#[derive(Default)]
struct Receiver {
    messages: HashMap<Bytes, Progress>,
    seen: HashSet<u64>,
    /// The message of the chunk being read (its Message-ID) and the chunk's next position.
    current: Option<(Bytes, u64)>,
}

enum State {
    /// Authenticating at a relay (`auth`: the AUTH's transaction id), or waiting for its role.
    /// What the peer SENDs meanwhile is received in `early`: the relay forwards the peer's
    /// SENDs as soon as the peer has our answer, which can be before `start` reaches this
    /// thread; a receiving role goes on from there.
    Idle {
        auth: Option<Bytes>,
        early: Receiver,
    },
    Send(Box<Sender>),
    Receive(Receiver),
}

impl State {
    fn of(role: Role) -> State {
        match role {
            Role::Send(load) => State::Send(Box::new(Sender {
                load,
                next_seq: 0,
                current: None,
                waiting: HashMap::new(),
                unanswered: HashMap::new(),
                sent: Sent::default(),
                bound: false,
                done: false,
            })),
            Role::Receive => State::Receive(Receiver::default()),
        }
    }

    /// Where the peer's SENDs go: a receiving connection, or one still waiting for its role.
    fn receiver(&mut self) -> Option<&mut Receiver> {
        match self {
            State::Receive(r) | State::Idle { early: r, .. } => Some(r),
            State::Send(_) => None,
        }
    }
}

struct Conn {
    key: u64,
    stream: TcpStream,
    connected: bool,
    opened: Instant,
    parser: Parser,
    out: VecDeque<Bytes>,
    queued: usize,
    local: Bytes,
    to_path: Bytes,
    state: State,
}

struct Loop {
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    conns: HashMap<usize, Conn>,
    next_token: usize,
    ids: IdGen,
    buf: BytesMut,
    read_buf: BytesMut,
    ready: VecDeque<usize>,
    /// The connections in `ready`.
    in_ready: HashSet<usize>,
}

impl Loop {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.ready.is_empty() {
                Duration::from_millis(50)
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let mut touched: Vec<usize> = Vec::new();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let t = ev.token().0;
                if (ev.is_readable() || ev.is_read_closed() || ev.is_error())
                    && self.in_ready.insert(t)
                {
                    self.ready.push_back(t);
                }
                touched.push(t);
            }
            // Commands (bounded: what is queued now).
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Open(o)) => self.open(o),
                    Ok(Command::Auth { key, relay }) => self.auth(key, relay),
                    Ok(Command::Start { key, to_path, role }) => self.start(key, to_path, role),
                    Ok(Command::Close(key)) => self.close_key(key),
                    Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            for _ in 0..self.ready.len() {
                let Some(t) = self.ready.pop_front() else {
                    break;
                };
                if self.read(t) {
                    self.ready.push_back(t);
                } else {
                    self.in_ready.remove(&t);
                }
                touched.push(t);
            }
            touched.sort_unstable();
            touched.dedup();
            for t in touched {
                self.progress(t);
            }
            self.expire();
        }
    }

    fn open(&mut self, o: Open) {
        let stream = match TcpStream::connect(o.connect) {
            Ok(s) => s,
            Err(e) => return self.failed_open(&o, format!("connect {}: {e}", o.connect)),
        };
        let token = self.next_token;
        self.next_token += 1;
        let mut conn = Conn {
            key: o.key,
            stream,
            connected: false,
            opened: Instant::now(),
            parser: Parser::new(Limits::default()),
            out: VecDeque::new(),
            queued: 0,
            local: o.local.clone(),
            to_path: o.to_path.clone(),
            state: State::of(o.role),
        };
        if let Err(e) = self.poll.registry().register(
            &mut conn.stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.failed_open(&o, format!("register: {e}"));
        }
        self.bind(&mut conn);
        self.conns.insert(token, conn);
    }

    /// Queues the empty SEND that binds the connection at the peer (RFC 4975 §5.4, §7.1.1).
    fn bind(&mut self, conn: &mut Conn) {
        let mut h = Head::new(
            self.ids.next_id(),
            Kind::Request(Method::Send),
            conn.to_path.clone(),
            conn.local.clone(),
        );
        h.message_id = Some(self.ids.next_id());
        h.byte_range = Some(ByteRange::whole(0));
        let bind = write::bodyless(&h, &mut self.buf);
        if let State::Send(s) = &mut conn.state {
            s.unanswered.insert(h.tid.clone(), u64::MAX);
        }
        conn.push(bind);
    }

    /// Connects to a relay and sends AUTH (RFC 4976 §5.1) with our URI: the connection's own
    /// address, which the relay reaches us on.
    fn auth(&mut self, key: u64, relay: SocketAddr) {
        let fail = |l: &Loop, e: String| {
            let _ = l.events.send(Event::Authed { key, path: Err(e) });
        };
        let mut stream = match TcpStream::connect(relay) {
            Ok(s) => s,
            Err(e) => return fail(self, format!("connect {relay}: {e}")),
        };
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => return fail(self, format!("local address: {e}")),
        };
        let token = self.next_token;
        self.next_token += 1;
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return fail(self, format!("register: {e}"));
        }
        let uri = |a: SocketAddr, sid: &[u8]| {
            Bytes::from(format!(
                "msrp://{a}{}{};tcp",
                if sid.is_empty() { "" } else { "/" },
                String::from_utf8_lossy(sid)
            ))
        };
        let local = uri(local, &self.ids.next_id());
        let h = Head::new(
            self.ids.next_id(),
            Kind::Request(Method::Auth),
            uri(relay, b""),
            local.clone(),
        );
        let mut conn = Conn {
            key,
            stream,
            connected: false,
            opened: Instant::now(),
            parser: Parser::new(Limits::default()),
            out: VecDeque::new(),
            queued: 0,
            local,
            to_path: Bytes::new(),
            state: State::Idle {
                auth: Some(h.tid.clone()),
                early: Receiver::default(),
            },
        };
        conn.push(write::bodyless(&h, &mut self.buf));
        self.conns.insert(token, conn);
    }

    /// Gives the idle connection of `key` its role toward `to_path`; a receiving one goes on
    /// from what it received while idle.
    fn start(&mut self, key: u64, to_path: Bytes, role: Role) {
        let Some(t) = self
            .conns
            .iter()
            .find(|(_, c)| c.key == key && matches!(c.state, State::Idle { auth: None, .. }))
            .map(|(t, _)| *t)
        else {
            let _ = self.events.send(Event::Done {
                key,
                sent: Sent::default(),
                error: Some("no authenticated connection".into()),
            });
            return;
        };
        let Some(mut conn) = self.conns.remove(&t) else {
            return;
        };
        conn.to_path = to_path;
        conn.state = match (
            role,
            std::mem::replace(&mut conn.state, State::of(Role::Receive)),
        ) {
            (Role::Receive, State::Idle { early, .. }) => State::Receive(early),
            (role, _) => State::of(role),
        };
        self.bind(&mut conn);
        self.conns.insert(t, conn);
        self.progress(t);
    }

    fn failed_open(&self, o: &Open, error: String) {
        let ev = match o.role {
            Role::Send(_) => Event::Done {
                key: o.key,
                sent: Sent::default(),
                error: Some(error),
            },
            Role::Receive => Event::Closed {
                key: o.key,
                error: Some(error),
            },
        };
        let _ = self.events.send(ev);
    }

    fn close_key(&mut self, key: u64) {
        let tokens: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.key == key)
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            self.end(t, None);
        }
    }

    /// Reads what is there (up to [`READS_PER_TURN`] reads); true if there may be more.
    fn read(&mut self, t: usize) -> bool {
        let Some(conn) = self.conns.get_mut(&t) else {
            return false;
        };
        let mut error = None;
        let mut more = false;
        let mut eof = false;
        for i in 0..READS_PER_TURN {
            match read_spare(&conn.stream, &mut self.read_buf, READ_SIZE) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) => {
                    conn.connected = true;
                    conn.parser.feed(self.read_buf.split().freeze());
                    if let Err(e) = conn.handle(&mut self.buf, &self.events) {
                        error = Some(e);
                        break;
                    }
                    if i + 1 == READS_PER_TURN {
                        more = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(format!("read: {e}"));
                    break;
                }
            }
        }
        if error.is_some() || eof {
            self.end(t, error.or(eof.then(|| "closed by the peer".to_string())));
            return false;
        }
        more
    }

    /// Makes more chunks if the window allows, writes what is queued, reports a finished load.
    fn progress(&mut self, t: usize) {
        let Some(conn) = self.conns.get_mut(&t) else {
            return;
        };
        conn.fill(&mut self.ids, &mut self.buf);
        if let Err(e) = conn.flush() {
            return self.end(t, Some(e));
        }
        if let State::Send(s) = &mut conn.state {
            if !s.done && s.finished() {
                s.done = true;
                let _ = self.events.send(Event::Done {
                    key: conn.key,
                    sent: s.sent,
                    error: None,
                });
            }
        }
    }

    /// Fails connections that never came up.
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.connected && now.duration_since(c.opened) > CONNECT_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            self.end(t, Some("connect timeout".into()));
        }
    }

    /// Ends a connection; a load not finished is reported with what it achieved.
    fn end(&mut self, t: usize, error: Option<String>) {
        let Some(mut conn) = self.conns.remove(&t) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let ev = match conn.state {
            State::Idle { auth: Some(_), .. } => Event::Authed {
                key: conn.key,
                path: Err(error.unwrap_or_else(|| "closed during AUTH".into())),
            },
            State::Send(s) if s.done => return,
            State::Send(mut s) => {
                s.sent.messages_failed +=
                    (s.waiting.len() + usize::from(s.current.is_some())) as u64;
                Event::Done {
                    key: conn.key,
                    sent: s.sent,
                    error: Some(error.unwrap_or_else(|| "closed before the end".into())),
                }
            }
            State::Receive(_) | State::Idle { auth: None, .. } => Event::Closed {
                key: conn.key,
                error,
            },
        };
        let _ = self.events.send(ev);
    }
}

impl Sender {
    fn finished(&self) -> bool {
        self.bound
            && self.next_seq >= self.load.messages
            && self.current.is_none()
            && self.waiting.is_empty()
    }
}

impl Conn {
    fn push(&mut self, b: Bytes) {
        self.queued += b.len();
        self.out.push_back(b);
    }

    /// Handles the parsed input.
    fn handle(&mut self, buf: &mut BytesMut, events: &mpsc::Sender<Event>) -> Result<(), String> {
        while let Some(ev) = self.parser.poll() {
            let ev = ev.map_err(|e| format!("MSRP parse: {}", e.reason()))?;
            match ev {
                Parsed::Head(h) => self.on_head(h, buf, events)?,
                Parsed::Body(b) => {
                    if let Some(r) = self.state.receiver() {
                        r.on_body(&b);
                    }
                }
                Parsed::End(flag) => {
                    if let Some(r) = self.state.receiver() {
                        r.on_end(self.key, flag, events);
                    }
                }
                Parsed::Reject(rej) => {
                    if rej.request {
                        if let (Some(to), Some(from)) = (rej.to_path, rej.from_path) {
                            let req = Head::new(rej.tid, Kind::Request(Method::Send), to, from);
                            if let Some(r) = write::response(&req, rej.error.status(), None) {
                                let b = write::bodyless(&r, buf);
                                self.push(b);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn on_head(
        &mut self,
        h: Box<Head>,
        buf: &mut BytesMut,
        events: &mpsc::Sender<Event>,
    ) -> Result<(), String> {
        match (&h.kind, &mut self.state) {
            (Kind::Response { code, .. }, State::Send(s)) => {
                let Some(seq) = s.unanswered.remove(&h.tid) else {
                    return Ok(());
                };
                if seq == u64::MAX {
                    if *code != 200 {
                        return Err(format!("binding SEND answered {code}"));
                    }
                    s.bound = true;
                    return Ok(());
                }
                let ok = *code == 200;
                let Some(m) = s
                    .waiting
                    .get_mut(&seq)
                    .or(s.current.as_mut().filter(|c| c.seq == seq))
                else {
                    return Ok(());
                };
                m.unanswered -= 1;
                m.failed |= !ok;
                if ok {
                    s.sent.chunks_ok += 1;
                }
                if m.unanswered == 0 && s.waiting.contains_key(&seq) {
                    if let Some(m) = s.waiting.remove(&seq) {
                        if m.failed {
                            s.sent.messages_failed += 1;
                        } else {
                            s.sent.messages_ok += 1;
                            s.sent.bytes_ok += m.body.len() as u64;
                            let _ = events.send(Event::Acked {
                                key: self.key,
                                rtt: m.queued_at.elapsed(),
                            });
                        }
                    }
                }
            }
            (Kind::Response { code, .. }, State::Idle { auth, .. }) => {
                if auth.as_ref() != Some(&h.tid) {
                    return Ok(());
                }
                *auth = None;
                let path = match (&h.use_path, code) {
                    (Some(p), 200) => {
                        let mut v = BytesMut::from(&p[..]);
                        v.extend_from_slice(b" ");
                        v.extend_from_slice(&self.local);
                        Ok(v.freeze())
                    }
                    (None, 200) => Err("AUTH 200 without Use-Path".to_string()),
                    _ => Err(format!("AUTH answered {code}")),
                };
                let failed = path.is_err();
                let _ = events.send(Event::Authed {
                    key: self.key,
                    path,
                });
                if failed {
                    return Err("AUTH failed".into());
                }
            }
            (Kind::Response { .. }, State::Receive(_)) => {}
            (Kind::Request(Method::Send), _) => {
                if let Some(r) = self.state.receiver() {
                    r.on_head(&h);
                }
                if let Some(resp) = write::response(&h, 200, None) {
                    let b = write::bodyless(&resp, buf);
                    self.push(b);
                }
            }
            // REPORTs need no response (§7.1.2); the failed chunk's response tells the rest.
            (Kind::Request(Method::Report), _) => {
                tracing::debug!(status = ?h.status, "MSRP REPORT");
            }
            (Kind::Request(_), _) => {
                if let Some(resp) = write::response(&h, 501, None) {
                    let b = write::bodyless(&resp, buf);
                    self.push(b);
                }
            }
        }
        Ok(())
    }

    /// Queues chunks while the window and the buffer allow.
    fn fill(&mut self, ids: &mut IdGen, buf: &mut BytesMut) {
        if !self.connected {
            return;
        }
        let State::Send(s) = &mut self.state else {
            return;
        };
        if !s.bound {
            return;
        }
        // Bounded: one chunk per turn of this loop, and at most WINDOW of them unanswered.
        let mut parts: Vec<Bytes> = Vec::new();
        while s.unanswered.len() < WINDOW && self.queued + parts_len(&parts) < MAX_QUEUED {
            if s.current.is_none() {
                if s.next_seq >= s.load.messages {
                    break;
                }
                let seq = s.next_seq;
                s.next_seq += 1;
                s.current = Some(Outgoing {
                    seq,
                    body: stamp::body(unix_us(), seq, s.load.size),
                    offset: 0,
                    message_id: ids.next_id(),
                    queued_at: Instant::now(),
                    unanswered: 0,
                    failed: false,
                });
            }
            let Some(m) = s.current.as_mut() else { break };
            let total = m.body.len();
            let len = s.load.chunk.max(1).min(total - m.offset);
            let mut h = Head::new(
                ids.next_id(),
                Kind::Request(Method::Send),
                self.to_path.clone(),
                self.local.clone(),
            );
            h.message_id = Some(m.message_id.clone());
            h.byte_range = Some(ByteRange {
                start: m.offset as u64 + 1,
                end: Some((m.offset + len) as u64),
                total: Some(total as u64),
            });
            h.content_type = Some(Bytes::from_static(b"text/plain"));
            let last = m.offset + len == total;
            let flag = if last {
                Flag::Complete
            } else {
                Flag::Continues
            };
            let body = m.body.slice(m.offset..m.offset + len);
            parts.extend(write::chunk(&mut h, body, flag, buf));
            m.offset += len;
            m.unanswered += 1;
            s.sent.chunks += 1;
            s.unanswered.insert(h.tid, m.seq);
            if last {
                if let Some(m) = s.current.take() {
                    s.waiting.insert(m.seq, m);
                }
            }
        }
        for p in parts {
            if !p.is_empty() {
                self.push(p);
            }
        }
    }

    /// Writes what is queued (vectored) until the socket would block.
    fn flush(&mut self) -> Result<(), String> {
        if !self.connected {
            // The first writable event means the connect finished (or failed).
            match self.stream.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if let Ok(Some(e)) = self.stream.take_error() {
                        return Err(format!("connect: {e}"));
                    }
                    return Ok(());
                }
                Err(e) => return Err(format!("connect: {e}")),
            }
        }
        // Bounded by the queue: every successful write takes bytes off it.
        while !self.out.is_empty() {
            let slices: Vec<IoSlice<'_>> =
                self.out.iter().take(64).map(|b| IoSlice::new(b)).collect();
            match self.stream.write_vectored(&slices) {
                Ok(0) => return Err("write: zero bytes".into()),
                Ok(mut n) => {
                    self.queued -= n;
                    while n > 0 {
                        let Some(front) = self.out.front_mut() else {
                            break;
                        };
                        if n >= front.len() {
                            n -= front.len();
                            self.out.pop_front();
                        } else {
                            let _ = front.split_to(n);
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        Ok(())
    }
}

fn parts_len(parts: &[Bytes]) -> usize {
    parts.iter().map(Bytes::len).sum()
}

impl Receiver {
    fn on_head(&mut self, h: &Head) {
        let Some(mid) = h.message_id.clone() else {
            self.current = None;
            return;
        };
        let range = h.byte_range.unwrap_or(ByteRange {
            start: 1,
            end: None,
            total: None,
        });
        if !h.has_body {
            // The binding SEND (or another empty one): nothing to check.
            self.current = None;
            return;
        }
        let p = self.messages.entry(mid.clone()).or_default();
        p.chunks += 1;
        if range.start != p.next + 1 {
            p.corrupted = true;
        }
        match (p.total, range.total) {
            (None, t) => p.total = t,
            (Some(a), Some(b)) if a != b => p.corrupted = true,
            _ => {}
        }
        self.current = Some((mid, range.start - 1));
    }

    fn on_body(&mut self, b: &[u8]) {
        let Some((mid, pos)) = self.current.as_mut() else {
            return;
        };
        let Some(p) = self.messages.get_mut(mid) else {
            return;
        };
        let at = *pos as usize;
        // The bytes of the stamp in this slice continue what was kept of it; a slice that
        // starts elsewhere (a gap or an overlap) is wrong, and what it adds after the kept
        // part is kept.
        let head = STAMP_BYTES.saturating_sub(at).min(b.len());
        if head > 0 {
            let kept = p.stamp.len();
            p.corrupted |= kept != at;
            if (at..at + head).contains(&kept) {
                p.stamp.extend_from_slice(&b[kept - at..head]);
            }
        }
        if !only_padding(&b[head..]) {
            p.corrupted = true;
        }
        let at = at + b.len();
        *pos = at as u64;
        p.next = p.next.max(*pos);
    }

    fn on_end(&mut self, key: u64, flag: Flag, events: &mpsc::Sender<Event>) {
        let Some((mid, _)) = self.current.take() else {
            return;
        };
        let whole = match self.messages.get(&mid) {
            Some(p) => flag == Flag::Complete || p.total == Some(p.next),
            None => false,
        };
        if !whole && flag != Flag::Aborted {
            return;
        }
        let Some(mut p) = self.messages.remove(&mid) else {
            return;
        };
        if flag == Flag::Aborted || p.total != Some(p.next) {
            p.corrupted = true;
        }
        let stamp = stamp::read(&p.stamp);
        // After the stamp line, the padding only.
        if let Some(end) = p.stamp.windows(2).position(|w| w == b"\r\n") {
            if p.stamp[end + 2..].iter().any(|&c| c != b'.') {
                p.corrupted = true;
            }
        } else {
            p.corrupted = true;
        }
        let now = unix_us();
        let duplicate = stamp.is_some_and(|(_, seq)| !self.seen.insert(seq));
        let _ = events.send(Event::Delivered {
            key,
            seq: stamp.map(|(_, s)| s),
            latency_us: stamp.map(|(ts, _)| now.saturating_sub(ts)),
            bytes: p.next,
            duplicate,
            corrupted: p.corrupted,
            chunks: p.chunks,
        });
    }
}

/// True if `b` is padding (`.`) only. Folds 64-byte blocks without branching inside one, so
/// that the check runs at memory speed on a file's megabytes.
fn only_padding(b: &[u8]) -> bool {
    b.chunks(64)
        .all(|block| block.iter().fold(0u8, |acc, &c| acc | (c ^ b'.')) == 0)
}

/// Reads from `stream` into the spare capacity of `buf` (at most `max` bytes) without zeroing
/// it first. `reserve` takes the buffer back when the parser has let go of what was read into
/// it, so the same heap block serves read after read; zeroing 64 KiB before each read
/// (`resize`, then `Read::read`) and a fresh 256 KiB buffer whenever one ran short (beyond
/// malloc's mmap threshold: page faults on every page) cost more than small reads themselves.
fn read_spare(stream: &TcpStream, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    // SAFETY: recv writes at most `want` bytes into the spare capacity, memory `buf` owns.
    let n = unsafe { libc::recv(stream.as_raw_fd(), spare.as_mut_ptr().cast(), want, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: recv initialized the first `n` bytes past the length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A tiny relay for the test: accepts two connections and copies bytes both ways after
    /// swapping nothing; the sender's To-Path is the receiver's URI, so a plain pipe works.
    fn pipe(listener: TcpListener) {
        std::thread::spawn(move || {
            let (a, _) = listener.accept().unwrap();
            let (b, _) = listener.accept().unwrap();
            let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
            let (mut a, mut b) = (a, b);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut b2);
            });
            let _ = std::io::copy(&mut b, &mut a2);
        });
    }

    #[test]
    fn a_load_crosses_a_pipe_chunked_checked_and_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        pipe(listener);
        let plane = Plane::spawn(7).unwrap();
        let recv_uri = Bytes::from(format!("msrp://{addr}/recv;tcp"));
        let send_uri = Bytes::from(format!("msrp://{addr}/send;tcp"));
        plane.open(Open {
            key: 2,
            connect: addr,
            local: recv_uri.clone(),
            to_path: send_uri.clone(),
            role: Role::Receive,
        });
        // The pipe pairs connections in accept order.
        std::thread::sleep(Duration::from_millis(100));
        let load = Load {
            messages: 20,
            size: 5000,
            chunk: 1024,
        };
        plane.open(Open {
            key: 1,
            connect: addr,
            local: send_uri,
            to_path: recv_uri,
            role: Role::Send(load),
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut delivered, mut acked, mut done) = (Vec::new(), 0, None);
        while done.is_none() || delivered.len() < 20 {
            assert!(Instant::now() < deadline, "{delivered:?} {done:?}");
            for ev in plane.poll_events(1000) {
                match ev {
                    Event::Delivered { .. } => delivered.push(ev),
                    Event::Acked { key: 1, .. } => acked += 1,
                    Event::Done {
                        key: 1,
                        sent,
                        error,
                    } => done = Some((sent, error)),
                    other => panic!("unexpected {other:?}"),
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let (sent, error) = done.unwrap();
        assert_eq!(error, None);
        assert_eq!(sent.messages_ok, 20);
        assert_eq!(sent.chunks, 20 * 5);
        assert_eq!(sent.chunks_ok, 20 * 5);
        assert_eq!(sent.bytes_ok, 20 * 5000);
        assert_eq!(acked, 20);
        for (i, d) in delivered.iter().enumerate() {
            let Event::Delivered {
                key,
                seq,
                bytes,
                duplicate,
                corrupted,
                chunks,
                ..
            } = d
            else {
                unreachable!()
            };
            assert_eq!(
                (*key, *seq, *bytes, *duplicate, *corrupted, *chunks),
                (2, Some(i as u64), 5000, false, false, 5)
            );
        }
    }

    /// A relay that answers the AUTH and at once forwards a SEND (a whole stamped message):
    /// the peer had our answer before `start` reached the MSRP thread.
    #[test]
    fn sends_forwarded_before_the_role_is_given_are_received() {
        use std::io::{Read as _, Write as _};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = listener.local_addr().unwrap();
        let plane = Plane::spawn(3).unwrap();
        plane.auth(5, relay);
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut parser = Parser::new(Limits::default());
        let mut heads = Vec::new();
        let mut next_head = |s: &mut std::net::TcpStream| loop {
            while let Some(ev) = parser.poll() {
                if let Parsed::Head(h) = ev.unwrap() {
                    heads.push(h.clone());
                    return h;
                }
            }
            let mut b = [0u8; 4096];
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "closed: {:?}", plane.poll_events(100));
            parser.feed(Bytes::copy_from_slice(&b[..n]));
        };
        let auth = next_head(&mut s);
        assert_eq!(auth.kind, Kind::Request(Method::Auth));
        let mut buf = BytesMut::new();
        let mut ok = write::response(&auth, 200, None).unwrap();
        ok.use_path = Some(Bytes::from(format!("msrp://{relay}/r;tcp")));
        let mut out = write::bodyless(&ok, &mut buf).to_vec();
        let send = |tid: &'static [u8], seq: u64| {
            let mut h = Head::new(
                Bytes::from_static(tid),
                Kind::Request(Method::Send),
                auth.from_path.clone(),
                Bytes::from(format!("msrp://{relay}/r;tcp msrp://127.0.0.1:9/a;tcp")),
            );
            h.message_id = Some(Bytes::from(format!("mid-{seq:04}")));
            h.byte_range = Some(ByteRange::whole(100));
            h.content_type = Some(Bytes::from_static(b"text/plain"));
            let mut b = BytesMut::new();
            write::chunk(
                &mut h,
                stamp::body(unix_us(), seq, 100),
                Flag::Complete,
                &mut b,
            )
            .concat()
        };
        out.extend_from_slice(&send(b"send0", 0));
        s.write_all(&out).unwrap();
        // The SEND is answered and delivered though no role was given.
        let r = next_head(&mut s);
        assert!(matches!(r.kind, Kind::Response { code: 200, .. }), "{r:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut events = Vec::new();
        while !events.iter().any(|e| matches!(e, Event::Delivered { .. })) {
            assert!(Instant::now() < deadline, "{events:?}");
            events.extend(plane.poll_events(100));
            std::thread::sleep(Duration::from_millis(5));
        }
        // The role arrives late: the connection binds and goes on receiving, nothing recounted.
        plane.start(
            5,
            Bytes::from_static(b"msrp://127.0.0.1:9/a;tcp"),
            Role::Receive,
        );
        let bind = next_head(&mut s);
        assert_eq!(bind.kind, Kind::Request(Method::Send), "{bind:?}");
        s.write_all(&send(b"send1", 1)).unwrap();
        while events
            .iter()
            .filter(|e| matches!(e, Event::Delivered { .. }))
            .count()
            < 2
        {
            assert!(Instant::now() < deadline, "{events:?}");
            events.extend(plane.poll_events(100));
            std::thread::sleep(Duration::from_millis(5));
        }
        let delivered: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Delivered {
                    key,
                    seq,
                    duplicate,
                    corrupted,
                    ..
                } => Some((*key, *seq, *duplicate, *corrupted)),
                _ => None,
            })
            .collect();
        assert_eq!(
            delivered,
            [(5, Some(0), false, false), (5, Some(1), false, false)]
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::Done { .. } | Event::Closed { .. })),
            "{events:?}"
        );
    }

    #[test]
    fn a_receiver_tells_gaps_and_bad_padding() {
        let (tx, rx) = mpsc::channel();
        let mut r = Receiver::default();
        let body = stamp::body(1, 9, 200);
        let head = |start: u64, end: u64| {
            let mut h = Head::new(
                Bytes::from_static(b"t"),
                Kind::Request(Method::Send),
                Bytes::new(),
                Bytes::new(),
            );
            h.message_id = Some(Bytes::from_static(b"m"));
            h.has_body = true;
            h.byte_range = Some(ByteRange {
                start,
                end: Some(end),
                total: Some(200),
            });
            h
        };
        // Whole and right.
        r.on_head(&head(1, 200));
        r.on_body(&body);
        r.on_end(1, Flag::Complete, &tx);
        // A gap: 1-100 then 150-200.
        r.on_head(&head(1, 100));
        r.on_body(&body[..100]);
        r.on_end(1, Flag::Continues, &tx);
        r.on_head(&head(150, 200));
        r.on_body(&body[149..]);
        r.on_end(1, Flag::Complete, &tx);
        // Wrong padding.
        let mut bad = body.to_vec();
        bad[150] = b'x';
        r.on_head(&head(1, 200));
        r.on_body(&bad);
        r.on_end(1, Flag::Complete, &tx);
        // Right again, in 7-byte pieces across the stamp's 64 bytes (another sequence number).
        let other = stamp::body(1, 10, 200);
        r.on_head(&head(1, 200));
        other.chunks(7).for_each(|piece| r.on_body(piece));
        r.on_end(1, Flag::Complete, &tx);
        // Wrong padding in the last byte, in pieces.
        let mut bad = stamp::body(1, 11, 200).to_vec();
        bad[199] = b'-';
        r.on_head(&head(1, 200));
        bad.chunks(7).for_each(|piece| r.on_body(piece));
        r.on_end(1, Flag::Complete, &tx);
        let got: Vec<(bool, bool)> = rx
            .try_iter()
            .map(|e| match e {
                Event::Delivered {
                    duplicate,
                    corrupted,
                    ..
                } => (duplicate, corrupted),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (false, false),
                (true, true),
                (true, true),
                (false, false),
                (false, true)
            ]
        );
    }
}
