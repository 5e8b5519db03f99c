//! A scripted SIP user agent over real sockets on 127.0.0.1: sends requests written as text,
//! waits for their final responses (retransmitting over UDP, RFC 3261 §17.1.2.2), registers with
//! digest authentication, and acts as a registered contact that answers forwarded requests.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpm_engine::sip::digest::{self, Challenge};
use cpm_engine::sip::{HeaderName, Message};

use crate::util::token;
use crate::wire::{self, header, next_frame, Frame, Req};

/// How long [`Ua::request`] waits for a final response (under Timer F's 32 s, RFC 3261 §17.1.2.2).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// RFC 3261 T1, the first retransmission interval over UDP.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2, the cap of the retransmission interval.
const T2: Duration = Duration::from_secs(4);

/// A SIP transport (RFC 3261 §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams, one message each.
    Udp,
    /// A stream framed by Content-Length.
    Tcp,
}

impl Transport {
    /// The token in a Via header (`UDP`, `TCP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

#[derive(Debug)]
enum Conn {
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        buf: BytesMut,
        closed: bool,
    },
}

/// A received message and where it came from.
#[derive(Debug, Clone)]
pub struct Received {
    /// The parsed message.
    pub msg: Message,
    /// The sender (the server, over TCP).
    pub from: SocketAddr,
}

/// A test user agent bound to 127.0.0.1 on an ephemeral port, talking to one server.
#[derive(Debug)]
pub struct Ua {
    conn: Conn,
    transport: Transport,
    server: SocketAddr,
    local: SocketAddr,
    user: String,
    domain: String,
    password: Option<String>,
    algorithm: Option<String>,
    tag: String,
    reg_call_id: String,
    cseq: u32,
    inbox: VecDeque<Received>,
}

impl Ua {
    /// A UDP agent on an ephemeral port of 127.0.0.1 (user `alice@localhost`).
    pub fn udp(server: SocketAddr) -> Ua {
        Ua::new(Transport::Udp, server)
    }

    /// A TCP agent connected to `server` from 127.0.0.1 (user `alice@localhost`).
    pub fn tcp(server: SocketAddr) -> Ua {
        Ua::new(Transport::Tcp, server)
    }

    /// An agent on the given transport.
    pub fn new(transport: Transport, server: SocketAddr) -> Ua {
        let (conn, local) = match transport {
            Transport::Udp => {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind UDP 127.0.0.1:0");
                let local = s.local_addr().expect("local addr");
                (Conn::Udp(s), local)
            }
            Transport::Tcp => {
                let s = TcpStream::connect_timeout(&server, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("TCP connect to cpmd {server}: {e}"));
                s.set_nodelay(true).expect("nodelay");
                let local = s.local_addr().expect("local addr");
                (
                    Conn::Tcp {
                        stream: s,
                        buf: BytesMut::new(),
                        closed: false,
                    },
                    local,
                )
            }
        };
        Ua {
            conn,
            transport,
            server,
            local,
            user: "alice".into(),
            domain: "localhost".into(),
            password: None,
            algorithm: None,
            tag: token(),
            reg_call_id: format!("{}@127.0.0.1", token()),
            cseq: 0,
            inbox: VecDeque::new(),
        }
    }

    /// Sets the user part of the address of record.
    pub fn user(mut self, user: &str) -> Ua {
        self.user = user.into();
        self
    }

    /// Sets the domain of the address of record (default `localhost`).
    pub fn domain(mut self, domain: &str) -> Ua {
        self.domain = domain.into();
        self
    }

    /// The password used to answer digest challenges.
    pub fn password(mut self, password: &str) -> Ua {
        self.password = Some(password.into());
        self
    }

    /// Answers only challenges with this algorithm (e.g. `MD5`); default: SHA-256 if offered,
    /// else the first computable one.
    pub fn digest_algorithm(mut self, algorithm: &str) -> Ua {
        self.algorithm = Some(algorithm.into());
        self
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The local address (the TCP connection's, for TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// `sip:user@domain`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }

    /// The URI this agent is reached at: `sip:user@127.0.0.1:port` (`;transport=tcp` on TCP,
    /// where the server must reuse this agent's connection, RFC 3261 §18.2.2).
    pub fn contact_uri(&self) -> String {
        match self.transport {
            Transport::Udp => format!("sip:{}@{}", self.user, self.local),
            Transport::Tcp => format!("sip:{}@{};transport=tcp", self.user, self.local),
        }
    }

    /// The tag of this agent: in the From of its requests and the To of its responses.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The next CSeq number of this agent.
    fn next_cseq(&mut self) -> u32 {
        self.cseq += 1;
        self.cseq
    }

    /// A Via line value for this agent with `rport` (RFC 3581) and a fresh RFC 3261 branch.
    pub fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {};rport;branch=z9hG4bK{}",
            self.transport.via_token(),
            self.local,
            token()
        )
    }

    /// A request from this agent: Via, Max-Forwards 70, From (with this agent's tag), To (the
    /// Request-URI), a fresh Call-ID, CSeq; Content-Length is added when sent.
    pub fn req(&mut self, method: &str, uri: &str) -> Req {
        let cseq = self.next_cseq();
        Req::new(method, uri)
            .header("Via", self.via())
            .header("Max-Forwards", "70")
            .header("From", format!("<{}>;tag={}", self.aor(), self.tag))
            .header("To", format!("<{uri}>"))
            .header("Call-ID", format!("{}@127.0.0.1", token()))
            .header("CSeq", format!("{cseq} {method}"))
    }

    /// A REGISTER for this agent's AOR (RFC 3261 §10.2): Request-URI `sip:domain`, To = From =
    /// the AOR, the agent's registration Call-ID, `Contact: <contact_uri>` and, when given,
    /// `Expires`. Remove or replace Contact for fetches, several contacts or `*`.
    pub fn register_req(&mut self, expires: Option<u32>) -> Req {
        let uri = format!("sip:{}", self.domain);
        let aor = self.aor();
        let call_id = self.reg_call_id.clone();
        let contact = format!("<{}>", self.contact_uri());
        let mut r = self
            .req("REGISTER", &uri)
            .set("To", format!("<{aor}>"))
            .set("Call-ID", call_id)
            .header("Contact", contact);
        if let Some(e) = expires {
            r = r.header("Expires", e.to_string());
        }
        r
    }

    /// Registers this agent's contact for `expires` seconds (0 removes it), answering a digest
    /// challenge when a password is set; returns the final response.
    pub fn register(&mut self, expires: u32) -> Message {
        let r = self.register_req(Some(expires));
        self.request_auth(r)
    }

    /// Sends `req` and returns its final response; if that is a 401/407 and this agent has a
    /// password, sends it again once with credentials (RFC 3261 §22.2) and returns that answer.
    pub fn request_auth(&mut self, req: Req) -> Message {
        let resp = self.request(&req);
        match resp.status() {
            Some(401 | 407) if self.password.is_some() => {
                let again = self.authorize(&req, &resp);
                self.request(&again)
            }
            _ => resp,
        }
    }

    /// `req` again with a new branch and CSeq and the credentials answering `challenge_resp`.
    pub fn authorize(&mut self, req: &Req, challenge_resp: &Message) -> Req {
        let password = self.password.clone().expect("authorize needs a password");
        let (chal_name, cred_name) = if challenge_resp.status() == Some(407) {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let challenges = challenges(challenge_resp);
        let chosen = match &self.algorithm {
            Some(a) => challenges
                .iter()
                .find(|c| c.algorithm.as_str().eq_ignore_ascii_case(a)),
            None => challenges
                .iter()
                .find(|c| c.algorithm.as_str() == "SHA-256")
                .or_else(|| challenges.iter().find(|c| c.algorithm.is_supported())),
        };
        let chosen = chosen.unwrap_or_else(|| {
            panic!(
                "no usable {chal_name} (wanted {:?}) in:\n{challenge_resp}",
                self.algorithm
            )
        });
        let creds = digest::respond(
            chosen,
            &self.user,
            &password,
            &req.method,
            &req.uri,
            &token(),
            1,
        )
        .unwrap_or_else(|e| panic!("cannot answer {chal_name}: {}", e.reason()));
        let cseq = self.next_cseq();
        req.clone()
            .set("Via", self.via())
            .set("CSeq", format!("{cseq} {}", req.method))
            .set(cred_name, creds.to_string())
    }

    /// Sends raw bytes to the server.
    pub fn send(&mut self, bytes: &[u8]) {
        let server = self.server;
        self.send_to(bytes, server);
    }

    /// Sends raw bytes to `dest` (UDP) or on the connection (TCP, `dest` ignored).
    fn send_to(&mut self, bytes: &[u8], dest: SocketAddr) {
        match &mut self.conn {
            Conn::Udp(s) => {
                s.send_to(bytes, dest)
                    .unwrap_or_else(|e| panic!("UDP send to {dest}: {e}"));
            }
            Conn::Tcp { stream, .. } => {
                stream
                    .write_all(bytes)
                    .unwrap_or_else(|e| panic!("TCP send: {e}"));
            }
        }
    }

    /// Sends a built request.
    pub fn send_req(&mut self, req: &Req) {
        self.send(&req.to_bytes());
    }

    /// The next raw message: a datagram (UDP) or one Content-Length frame (TCP; keep-alives
    /// skipped). `None` on timeout or when the connection was closed.
    pub fn recv_raw(&mut self, timeout: Duration) -> Option<(Bytes, SocketAddr)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_frame(left)? {
                (Frame::Message(m), from) => return Some((m, from)),
                (Frame::KeepAlive, _) => continue,
            }
        }
    }

    /// The next frame: a datagram (UDP; a datagram of only CRLFs is a keep-alive), or one
    /// frame of the TCP stream. `None` on timeout or when the connection was closed.
    pub fn recv_frame(&mut self, timeout: Duration) -> Option<(Frame, SocketAddr)> {
        let deadline = Instant::now() + timeout;
        let server = self.server;
        match &mut self.conn {
            Conn::Udp(s) => {
                let mut buf = vec![0u8; 65536];
                loop {
                    let left = deadline
                        .checked_duration_since(Instant::now())
                        .filter(|d| !d.is_zero())?;
                    s.set_read_timeout(Some(left)).expect("set_read_timeout");
                    match s.recv_from(&mut buf) {
                        Ok((n, from)) if buf[..n].iter().all(|&c| c == b'\r' || c == b'\n') => {
                            return Some((Frame::KeepAlive, from))
                        }
                        Ok((n, from)) => {
                            return Some((Frame::Message(Bytes::copy_from_slice(&buf[..n])), from))
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            return None
                        }
                        // ICMP port unreachable from an earlier send: not for us to judge here.
                        Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                        Err(e) => panic!("UDP recv: {e}"),
                    }
                }
            }
            Conn::Tcp {
                stream,
                buf,
                closed,
            } => loop {
                if let Some(frame) = next_frame(buf) {
                    return Some((frame, server));
                }
                if *closed {
                    return None;
                }
                let left = deadline
                    .checked_duration_since(Instant::now())
                    .filter(|d| !d.is_zero())?;
                stream
                    .set_read_timeout(Some(left))
                    .expect("set_read_timeout");
                let mut chunk = [0u8; 65536];
                match stream.read(&mut chunk) {
                    Ok(0) => *closed = true,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return None
                    }
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => *closed = true,
                    Err(e) => panic!("TCP recv: {e}"),
                }
            },
        }
    }

    /// Whether the server closed this agent's TCP connection (always false on UDP).
    pub fn is_closed(&self) -> bool {
        matches!(self.conn, Conn::Tcp { closed: true, .. })
    }

    /// The next message, queued or received; panics if the server sent something unparsable.
    pub fn recv_from(&mut self, timeout: Duration) -> Option<Received> {
        if let Some(r) = self.inbox.pop_front() {
            return Some(r);
        }
        let (raw, from) = self.recv_raw(timeout)?;
        let msg = cpm_engine::sip::parse(raw.clone()).unwrap_or_else(|e| {
            panic!(
                "unparsable message from {from} ({e}):\n{}",
                String::from_utf8_lossy(&raw)
            )
        });
        Some(Received { msg, from })
    }

    /// The next message, queued or received.
    pub fn recv(&mut self, timeout: Duration) -> Option<Message> {
        self.recv_from(timeout).map(|r| r.msg)
    }

    /// The next request (responses received meanwhile are dropped, noted on stderr).
    pub fn recv_request(&mut self, timeout: Duration) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.recv_from(left)?;
            if r.msg.is_request() {
                return Some(r);
            }
            eprintln!(
                "[ua {}] dropping unexpected response:\n{}",
                self.local, r.msg
            );
        }
    }

    /// Asserts that nothing arrives for `dur`.
    pub fn expect_silence(&mut self, dur: Duration, what: &str) {
        if let Some(m) = self.recv(dur) {
            panic!("expected no message ({what}), got:\n{m}");
        }
    }

    /// Sends `req` and waits up to `timeout` for its final response (matched by top Via branch
    /// and CSeq method), skipping 1xx; retransmits over UDP at T1, 2·T1, ... capped at T2
    /// (RFC 3261 §17.1.2.2; for INVITE, §17.1.1.2: only until a provisional response).
    /// Requests received meanwhile are queued for [`Ua::recv_request`].
    pub fn try_request(&mut self, req: &Req, timeout: Duration) -> Option<Message> {
        self.send_req(req);
        self.wait_final(req, timeout, self.transport == Transport::Udp)
    }

    /// Waits for the final response to `req`, already sent, without retransmitting it.
    pub fn await_final(&mut self, req: &Req, timeout: Duration) -> Option<Message> {
        self.wait_final(req, timeout, false)
    }

    fn wait_final(
        &mut self,
        req: &Req,
        timeout: Duration,
        mut retransmit: bool,
    ) -> Option<Message> {
        let bytes = req.to_bytes();
        let branch = req.branch();
        let deadline = Instant::now() + timeout;
        let mut interval = T1;
        let mut next_retransmit = Instant::now() + interval;
        let mut queued = Vec::new();
        let result = loop {
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            let wake = if retransmit {
                next_retransmit.min(deadline)
            } else {
                deadline
            };
            let Some((raw, from)) = self.recv_raw(wake.saturating_duration_since(now)) else {
                if self.is_closed() {
                    break None;
                }
                if retransmit && Instant::now() >= next_retransmit {
                    self.send(&bytes);
                    interval = (interval * 2).min(T2);
                    next_retransmit = Instant::now() + interval;
                }
                continue;
            };
            let msg = cpm_engine::sip::parse(raw.clone()).unwrap_or_else(|e| {
                panic!(
                    "unparsable message from {from} ({e}):\n{}",
                    String::from_utf8_lossy(&raw)
                )
            });
            if msg.is_request() {
                queued.push(Received { msg, from });
                continue;
            }
            if !matches_request(&msg, branch.as_deref(), &req.method) {
                eprintln!("[ua {}] dropping unrelated response:\n{msg}", self.local);
                continue;
            }
            match msg.status() {
                Some(s) if s >= 200 => break Some(msg),
                _ => {
                    if req.method == "INVITE" {
                        retransmit = false;
                    }
                }
            }
        };
        self.inbox.extend(queued);
        result
    }

    /// The next response to `req` (already sent; matched by top Via branch and CSeq method)
    /// whose status `want` accepts, from the queue or the wire within `timeout`. Responses to
    /// `req` that `want` refuses are dropped (e.g. 100 Trying); every other message received
    /// meanwhile, request or response, is queued for [`Ua::recv`] and later waits. No
    /// retransmission.
    pub fn await_response(
        &mut self,
        req: &Req,
        timeout: Duration,
        want: impl Fn(u16) -> bool,
    ) -> Option<Message> {
        let branch = req.branch();
        let is_it = |m: &Message| {
            m.status().is_some() && matches_request(m, branch.as_deref(), &req.method)
        };
        if let Some(pos) = self
            .inbox
            .iter()
            .position(|r| is_it(&r.msg) && r.msg.status().is_some_and(&want))
        {
            return self.inbox.remove(pos).map(|r| r.msg);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())?;
            let (raw, from) = self.recv_raw(left)?;
            let msg = cpm_engine::sip::parse(raw.clone()).unwrap_or_else(|e| {
                panic!(
                    "unparsable message from {from} ({e}):\n{}",
                    String::from_utf8_lossy(&raw)
                )
            });
            if is_it(&msg) {
                if msg.status().is_some_and(&want) {
                    return Some(msg);
                }
                continue;
            }
            self.inbox.push_back(Received { msg, from });
        }
    }

    /// The CANCEL of `invite` (RFC 3261 §9.1): its Request-URI, top Via (same branch),
    /// Max-Forwards, From, To, Call-ID, and CSeq number with method CANCEL.
    pub fn cancel_req(&self, invite: &Req) -> Req {
        let num = invite.cseq().expect("INVITE has CSeq");
        let mut cancel = Req::new("CANCEL", &invite.uri);
        for name in ["Via", "Max-Forwards", "From", "To", "Call-ID"] {
            cancel = cancel.header(name, invite.get(name).expect("INVITE header").to_string());
        }
        cancel.header("CSeq", format!("{num} CANCEL"))
    }

    /// [`Ua::try_request`] with [`RESPONSE_TIMEOUT`]; panics when no final response comes.
    pub fn request(&mut self, req: &Req) -> Message {
        self.try_request(req, RESPONSE_TIMEOUT).unwrap_or_else(|| {
            let why = if self.is_closed() {
                "cpmd closed the connection without a final response".to_string()
            } else {
                format!("no final response within {RESPONSE_TIMEOUT:?}")
            };
            panic!(
                "{why} over {:?} to:\n{}",
                self.transport,
                abbreviated(&req.to_bytes())
            )
        })
    }

    /// The ACK for a non-2xx final response to `invite` (RFC 3261 §17.1.1.3: same branch,
    /// the response's To, CSeq method ACK).
    pub fn ack(&mut self, invite: &Req, resp: &Message) {
        let to = header(resp, "To").expect("response has To");
        let num = invite.cseq().expect("INVITE has CSeq");
        let mut ack = Req::new("ACK", &invite.uri);
        for name in ["Via", "Max-Forwards", "From", "Call-ID"] {
            ack = ack.header(name, invite.get(name).expect("INVITE header").to_string());
        }
        ack = ack.header("To", to).header("CSeq", format!("{num} ACK"));
        self.send_req(&ack);
    }

    /// Answers a received request with `code reason` (no body), sent where RFC 3261 §18.2.2 says:
    /// on the connection for TCP; for UDP to the top Via's `received`/`rport` or sent-by.
    pub fn reply(&mut self, req: &Received, code: u16, reason: &str) {
        self.reply_with(req, code, reason, &[], None);
    }

    /// [`Ua::reply`] with extra header lines (e.g. Contact) and a body `(content type, bytes)`.
    pub fn reply_with(
        &mut self,
        req: &Received,
        code: u16,
        reason: &str,
        extra: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) {
        let bytes = wire::response_with(&req.msg, code, reason, &self.tag, extra, body);
        let dest = match self.transport {
            Transport::Tcp => self.server,
            Transport::Udp => response_destination(&req.msg).unwrap_or(req.from),
        };
        self.send_to(&bytes, dest);
    }
}

/// A message as text for a failure message, cut after 2000 bytes.
pub fn abbreviated(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]).into_owned();
    if bytes.len() > 2000 {
        format!("{text}... ({} bytes in all)", bytes.len())
    } else {
        text
    }
}

/// Whether `resp` answers the request with top branch `branch` and method `method`.
fn matches_request(resp: &Message, branch: Option<&str>, method: &str) -> bool {
    let Ok(via) = resp.top_via() else {
        return false;
    };
    let same_branch = match (via.branch(), branch) {
        (Some(b), Some(want)) => &b[..] == want.as_bytes(),
        _ => false,
    };
    let cseq_method = header(resp, "CSeq")
        .and_then(|c| c.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default();
    same_branch && cseq_method == method
}

/// Where a UDP response to `req` goes (RFC 3261 §18.2.2, RFC 3581 §4): host from `received`
/// or sent-by, port from `rport` or sent-by (5060 when absent).
pub fn response_destination(req: &Message) -> Option<SocketAddr> {
    let via = req.top_via().ok()?;
    let host = via
        .received()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .unwrap_or_else(|| String::from_utf8_lossy(&via.host).into_owned());
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or(5060),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    (host.as_str(), port).to_socket_addrs().ok()?.next()
}

/// The digest challenges (WWW-Authenticate, or Proxy-Authenticate for a 407) of a response.
pub fn challenges(resp: &Message) -> Vec<Challenge> {
    let name = if resp.status() == Some(407) {
        HeaderName::ProxyAuthenticate
    } else {
        HeaderName::WwwAuthenticate
    };
    resp.headers
        .get_all(&name)
        .filter_map(|v| Challenge::parse(v).ok())
        .collect()
}
