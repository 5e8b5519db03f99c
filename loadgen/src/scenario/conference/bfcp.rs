//! The BFCP floor participants of a `--half-duplex` run (RFC 8855 over TCP, SDP RFC 8856), on
//! a thread of their own: non-blocking TCP on one `mio` poll, messages and framing with the
//! engine's codec ([`cpm_engine::conference::floor::bfcp`]; no second BFCP codec).
//!
//! The scenario hands the [`FloorPlane`] an [`Open`] once a participant's 2xx named the
//! focus's BFCP stream (we are the active party: `a=setup:active`); the connection says Hello,
//! and then sends FloorRequest / FloorRelease when told. What the floor control server
//! answers comes back as [`FloorEvent`]s, read by the scenario from its media tick. The wait
//! from a FloorRequest written to its grant is measured here, on the wire.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpm_engine::conference::floor::bfcp::{Attribute, Framer, Message, Primitive, RequestStatus};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

/// The BFCP m-section a participant offers: client role, active TCP (RFC 8856 §5).
pub const OFFER: &str =
    "m=application 9 TCP/BFCP *\r\na=setup:active\r\na=connection:new\r\na=floorctrl:c-only\r\n";

const WAKER: Token = Token(usize::MAX);

/// The floor of the focus's conference as its SDP answer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The focus's BFCP listener.
    pub addr: SocketAddr,
    /// `a=confid`.
    pub conference_id: u32,
    /// `a=userid`.
    pub user_id: u16,
}

impl Answered {
    /// The BFCP stream of an SDP answer: the `TCP/BFCP` section with a port, its `confid` and
    /// `userid`, at the section's or the session's `c=` address.
    pub fn parse(sdp: &[u8]) -> Option<Answered> {
        let text = std::str::from_utf8(sdp).ok()?;
        let conn = |l: &str| {
            l.strip_prefix("c=IN IP4 ")
                .or_else(|| l.strip_prefix("c=IN IP6 "))
                .and_then(|a| a.trim().parse::<std::net::IpAddr>().ok())
        };
        // The session part ends at the first m= line; the BFCP section runs to the next one.
        let session_ip = text
            .lines()
            .take_while(|l| !l.starts_with("m="))
            .find_map(conn);
        let mut lines = text.lines().skip_while(|l| {
            let mut f = l.strip_prefix("m=application ").unwrap_or("").split(' ');
            !f.nth(1).is_some_and(|p| p.eq_ignore_ascii_case("TCP/BFCP"))
        });
        let port: u16 = lines
            .next()?
            .strip_prefix("m=application ")?
            .split(' ')
            .next()?
            .parse()
            .ok()
            .filter(|&p| p != 0)?;
        let section: Vec<&str> = lines.take_while(|l| !l.starts_with("m=")).collect();
        let attr = |name: &str| {
            section
                .iter()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Some(Answered {
            addr: SocketAddr::new(section.iter().find_map(|l| conn(l)).or(session_ip)?, port),
            conference_id: u32::try_from(attr("a=confid:")?).ok()?,
            user_id: u16::try_from(attr("a=userid:")?).ok()?,
        })
    }
}

/// What the floor control server said to participant `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FloorEvent {
    /// HelloAck: the connection is up.
    Ready(u64),
    /// The floor is ours, `wait` after our FloorRequest went out.
    Granted(u64, Duration),
    /// Our request waits at this queue position.
    Queued(u64, u8),
    /// Our release was confirmed (or our queued request cancelled).
    Released(u64),
    /// The floor was taken back (maximum talk time).
    Revoked(u64),
    /// Our request was denied, or answered with an Error (its code).
    Denied(u64, Option<u8>),
    /// The connection ended (the error, if not an orderly close).
    Closed(u64, Option<String>),
}

enum Command {
    Open(u64, Answered),
    Request(u64),
    Release(u64),
    Close(u64),
    Shutdown,
}

/// The handle of the BFCP thread: dropping it stops the thread.
pub struct FloorPlane {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<FloorEvent>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FloorPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FloorPlane")
    }
}

impl FloorPlane {
    /// Starts the thread.
    pub fn spawn() -> io::Result<FloorPlane> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (commands, command_rx) = mpsc::channel();
        let (event_tx, events) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bfcp".into())
            .spawn(move || {
                let mut l = Loop {
                    poll,
                    commands: command_rx,
                    events: event_tx,
                    conns: HashMap::new(),
                    by_key: HashMap::new(),
                    next_token: 0,
                };
                if let Err(e) = l.run() {
                    tracing::warn!(error = %e, "bfcp thread ended");
                }
            })?;
        Ok(FloorPlane {
            commands,
            events,
            waker,
            thread: Some(thread),
        })
    }

    /// Connects participant `key` to the floor its answer named, and says Hello.
    pub fn open(&self, key: u64, to: Answered) {
        self.send(Command::Open(key, to));
    }

    /// Participant `key` asks for the floor.
    pub fn request(&self, key: u64) {
        self.send(Command::Request(key));
    }

    /// Participant `key` releases the floor (or withdraws its queued request).
    pub fn release(&self, key: u64) {
        self.send(Command::Release(key));
    }

    /// Closes participant `key`'s connection.
    pub fn close(&self, key: u64) {
        self.send(Command::Close(key));
    }

    fn send(&self, c: Command) {
        if self.commands.send(c).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// The events so far.
    pub fn poll_events(&self) -> Vec<FloorEvent> {
        self.events.try_iter().collect()
    }
}

impl Drop for FloorPlane {
    fn drop(&mut self) {
        self.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Conn {
    key: u64,
    stream: TcpStream,
    to: Answered,
    framer: Framer,
    out: Vec<u8>,
    tid: u16,
    /// Our floor request: its id once the server named it, and when it was sent.
    request: Option<(Option<u16>, Instant)>,
}

impl Conn {
    fn queue(&mut self, primitive: Primitive, attrs: Vec<Attribute>) -> u16 {
        self.tid = self.tid.wrapping_add(1).max(1);
        let mut m = Message::new(primitive, self.to.conference_id, self.tid, self.to.user_id);
        m.attrs = attrs;
        if let Ok(b) = m.to_bytes() {
            self.out.extend_from_slice(&b);
        }
        self.tid
    }

    /// Writes what is queued; `Err` when the connection failed.
    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// What one message from the server means.
    fn on_message(&mut self, m: &Message, now: Instant) -> Option<FloorEvent> {
        let key = self.key;
        match m.primitive {
            Primitive::HelloAck => Some(FloorEvent::Ready(key)),
            Primitive::Error => {
                let code = m.attrs.iter().find_map(|a| match a {
                    Attribute::ErrorCode { code, .. } => Some(code.0),
                    _ => None,
                });
                self.request = None;
                Some(FloorEvent::Denied(key, code))
            }
            Primitive::FloorRequestStatus => {
                let (id, status, pos) = request_status(m)?;
                match status {
                    RequestStatus::Granted => {
                        let since = self.request.map_or(now, |(_, t)| t);
                        self.request = Some((Some(id), since));
                        Some(FloorEvent::Granted(
                            key,
                            now.saturating_duration_since(since),
                        ))
                    }
                    RequestStatus::Pending | RequestStatus::Accepted => {
                        if let Some(r) = self.request.as_mut() {
                            r.0 = Some(id);
                        }
                        Some(FloorEvent::Queued(key, pos))
                    }
                    RequestStatus::Released | RequestStatus::Cancelled => {
                        self.request = None;
                        Some(FloorEvent::Released(key))
                    }
                    RequestStatus::Revoked => {
                        self.request = None;
                        Some(FloorEvent::Revoked(key))
                    }
                    RequestStatus::Denied => {
                        self.request = None;
                        Some(FloorEvent::Denied(key, None))
                    }
                }
            }
            _ => None,
        }
    }
}

/// The (floor request id, status, queue position) of a FloorRequestStatus.
fn request_status(m: &Message) -> Option<(u16, RequestStatus, u8)> {
    m.attrs.iter().find_map(|a| match a {
        Attribute::FloorRequestInformation(g) => g.attrs.iter().find_map(|a| match a {
            Attribute::OverallRequestStatus(o) => o.attrs.iter().find_map(|a| match a {
                Attribute::RequestStatus {
                    status,
                    queue_position,
                } => Some((g.id, *status, *queue_position)),
                _ => None,
            }),
            _ => None,
        }),
        _ => None,
    })
}

struct Loop {
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<FloorEvent>,
    conns: HashMap<usize, Conn>,
    by_key: HashMap<u64, usize>,
    next_token: usize,
}

impl Loop {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            match self
                .poll
                .poll(&mut events, Some(Duration::from_millis(100)))
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            let ready: Vec<usize> = events
                .iter()
                .filter(|e| e.token() != WAKER)
                .map(|e| e.token().0)
                .collect();
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Open(key, to)) => self.open(key, to),
                    Ok(Command::Request(key)) => self.with(key, |c| {
                        if c.request.is_none() {
                            c.queue(Primitive::FloorRequest, vec![Attribute::FloorId(1)]);
                            c.request = Some((None, Instant::now()));
                        }
                    }),
                    Ok(Command::Release(key)) => self.with(key, |c| {
                        if let Some((Some(id), _)) = c.request {
                            c.queue(Primitive::FloorRelease, vec![Attribute::FloorRequestId(id)]);
                        }
                    }),
                    Ok(Command::Close(key)) => {
                        if let Some(t) = self.by_key.remove(&key) {
                            if let Some(mut c) = self.conns.remove(&t) {
                                let _ = self.poll.registry().deregister(&mut c.stream);
                            }
                        }
                    }
                    Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            for t in ready {
                self.read(t, now);
            }
        }
    }

    fn with(&mut self, key: u64, f: impl FnOnce(&mut Conn)) {
        let Some(&t) = self.by_key.get(&key) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&t) {
            f(c);
            if let Err(e) = c.flush() {
                self.fail(t, Some(e.to_string()));
            }
        }
    }

    fn open(&mut self, key: u64, to: Answered) {
        // Connecting blocks this thread briefly (the focus is near); the rest is non-blocking.
        let stream = std::net::TcpStream::connect_timeout(&to.addr, Duration::from_secs(5))
            .and_then(|s| {
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok(s)
            });
        let stream = match stream {
            Ok(s) => TcpStream::from_std(s),
            Err(e) => {
                let _ = self
                    .events
                    .send(FloorEvent::Closed(key, Some(e.to_string())));
                return;
            }
        };
        let t = self.next_token;
        self.next_token += 1;
        let mut c = Conn {
            key,
            stream,
            to,
            framer: Framer::default(),
            out: Vec::new(),
            tid: 0,
            request: None,
        };
        if let Err(e) = self.poll.registry().register(
            &mut c.stream,
            Token(t),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            let _ = self
                .events
                .send(FloorEvent::Closed(key, Some(e.to_string())));
            return;
        }
        c.queue(Primitive::Hello, Vec::new());
        self.conns.insert(t, c);
        self.by_key.insert(key, t);
        if let Some(Err(e)) = self.conns.get_mut(&t).map(Conn::flush) {
            self.fail(t, Some(e.to_string()));
        }
    }

    fn read(&mut self, t: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(&t) else {
            return;
        };
        let mut buf = [0u8; 4096];
        let mut closed = None;
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    closed = Some(None);
                    break;
                }
                Ok(n) => c.framer.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    closed = Some(Some(e.to_string()));
                    break;
                }
            }
        }
        while let Some(m) = c.framer.next_message() {
            match m {
                Ok(m) => {
                    if let Some(ev) = c.on_message(&m, now) {
                        let _ = self.events.send(ev);
                    }
                }
                Err((_, e)) => {
                    closed = Some(Some(format!("BFCP from the server: {e}")));
                    break;
                }
            }
        }
        if closed.is_none() {
            if let Err(e) = c.flush() {
                closed = Some(Some(e.to_string()));
            }
        }
        if let Some(error) = closed {
            self.fail(t, error);
        }
    }

    fn fail(&mut self, t: usize, error: Option<String>) {
        if let Some(mut c) = self.conns.remove(&t) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.by_key.remove(&c.key);
            let _ = self.events.send(FloorEvent::Closed(c.key, error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_the_floor() {
        let sdp = "v=0\r\no=cpmd 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                   m=audio 30000 RTP/AVP 0\r\na=label:1\r\nm=application 7000 TCP/BFCP *\r\n\
                   a=setup:passive\r\na=confid:42\r\na=userid:3\r\na=floorid:1 mstrm:1\r\n";
        assert_eq!(
            Answered::parse(sdp.as_bytes()),
            Some(Answered {
                addr: "10.0.0.1:7000".parse().unwrap(),
                conference_id: 42,
                user_id: 3
            })
        );
        let own_c = sdp.replace("a=setup:passive\r\n", "c=IN IP4 10.0.0.9\r\n");
        assert_eq!(
            Answered::parse(own_c.as_bytes()).map(|a| a.addr),
            Some("10.0.0.9:7000".parse().unwrap())
        );
        let declined = sdp.replace("m=application 7000", "m=application 0");
        assert_eq!(Answered::parse(declined.as_bytes()), None);
        let no_ids = sdp.replace("a=confid:42\r\n", "");
        assert_eq!(Answered::parse(no_ids.as_bytes()), None);
    }

    #[test]
    fn statuses_become_events() {
        let to = Answered {
            addr: "127.0.0.1:9".parse().unwrap(),
            conference_id: 1,
            user_id: 2,
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut c = Conn {
            key: 7,
            stream: TcpStream::from_std(s),
            to,
            framer: Framer::default(),
            out: Vec::new(),
            tid: 0,
            request: None,
        };
        let t0 = Instant::now();
        c.request = Some((None, t0));
        let status = |s, q| {
            Message::new(Primitive::FloorRequestStatus, 1, 0, 2).with(
                Attribute::FloorRequestInformation(cpm_engine::conference::floor::bfcp::Group {
                    id: 9,
                    attrs: vec![Attribute::OverallRequestStatus(
                        cpm_engine::conference::floor::bfcp::Group {
                            id: 9,
                            attrs: vec![Attribute::RequestStatus {
                                status: s,
                                queue_position: q,
                            }],
                        },
                    )],
                }),
            )
        };
        assert_eq!(
            c.on_message(&status(RequestStatus::Pending, 2), t0),
            Some(FloorEvent::Queued(7, 2))
        );
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(
            c.on_message(&status(RequestStatus::Granted, 0), later),
            Some(FloorEvent::Granted(7, Duration::from_millis(1500)))
        );
        assert_eq!(c.request.and_then(|r| r.0), Some(9));
        assert_eq!(
            c.on_message(&status(RequestStatus::Revoked, 0), later),
            Some(FloorEvent::Revoked(7))
        );
        assert!(c.request.is_none());
    }
}
