//! A small blocking MSRP client (RFC 4975) for end-to-end tests, on `cpm_engine::msrp`: it
//! connects to (or accepts from) a peer, sends messages in chunks with Byte-Range, and reads
//! whole transactions (head, body, end-line flag).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpm_engine::msrp::uri::first_of_path;
use cpm_engine::msrp::write;
use cpm_engine::msrp::{ByteRange, Event, Flag, Head, Kind, Limits, Method, Parser};

/// One transaction read off the connection.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Start line and header fields.
    pub head: Head,
    /// The body, joined.
    pub body: Vec<u8>,
    /// The end-line flag (`None` if the parser rejected the transaction).
    pub flag: Option<Flag>,
}

impl Chunk {
    /// The method of a request, as text (`""` for a response).
    pub fn method(&self) -> String {
        match &self.head.kind {
            Kind::Request(m) => String::from_utf8_lossy(m.as_bytes()).into_owned(),
            Kind::Response { .. } => String::new(),
        }
    }

    /// A header value as text (To-Path, From-Path, Message-ID, Byte-Range, Status).
    pub fn get(&self, name: &str) -> Option<String> {
        let h = &self.head;
        let s = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        match name {
            "To-Path" => Some(s(&h.to_path)),
            "From-Path" => Some(s(&h.from_path)),
            "Message-ID" => h.message_id.as_ref().map(s),
            "Byte-Range" => h.byte_range.map(|r| r.to_string()),
            "Status" => h.status.as_ref().map(|st| st.code.to_string()),
            _ => h.other(name).map(s),
        }
    }
}

/// Where a part of a message goes in the whole (for [`MsrpClient::send_part`]).
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The Message-ID.
    pub message_id: &'a str,
    /// The 0-based position of the part's first byte in the message.
    pub offset: u64,
    /// The size of the whole message.
    pub total: u64,
    /// Its Content-Type.
    pub content_type: &'a str,
    /// Chunks of at most this many bytes.
    pub chunk: usize,
}

/// One MSRP connection of a test client.
pub struct MsrpClient {
    stream: TcpStream,
    parser: Parser,
    /// Our URI (the From-Path of what we send).
    pub local: String,
    /// The peer's path (the To-Path of what we send).
    pub to_path: String,
    next: u64,
    got: Vec<Chunk>,
    partial: Option<Chunk>,
}

impl MsrpClient {
    /// Connects to the first URI of `to_path`, as `local`.
    pub fn connect(to_path: &str, local: &str) -> MsrpClient {
        let uri = first_of_path(&Bytes::from(to_path.to_string())).expect("MSRP path");
        let host = String::from_utf8_lossy(uri.host()).into_owned();
        let stream = TcpStream::connect((host.as_str(), uri.port().expect("port")))
            .unwrap_or_else(|e| panic!("connect to {to_path}: {e}"));
        MsrpClient::over(stream, to_path, local)
    }

    /// Waits for one connection on `listener` (we are passive).
    pub fn accept(listener: &TcpListener, to_path: &str, local: &str) -> MsrpClient {
        let (stream, _) = listener.accept().expect("MSRP accept");
        MsrpClient::over(stream, to_path, local)
    }

    fn over(stream: TcpStream, to_path: &str, local: &str) -> MsrpClient {
        stream.set_nodelay(true).ok();
        MsrpClient {
            stream,
            parser: Parser::new(Limits::default()),
            local: local.to_string(),
            to_path: to_path.to_string(),
            next: 1,
            got: Vec::new(),
            partial: None,
        }
    }

    /// The socket (to stop reading, shut down, or look at it).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn id(&mut self, what: &str) -> Bytes {
        self.next += 1;
        Bytes::from(format!("{what}{:x}{}", std::process::id(), self.next))
    }

    fn head(&mut self, method: Method) -> Head {
        let tid = self.id("t");
        Head::new(
            tid,
            Kind::Request(method),
            Bytes::from(self.to_path.clone()),
            Bytes::from(self.local.clone()),
        )
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("MSRP write");
    }

    /// Sends `body` as one message in chunks of at most `chunk` bytes (Byte-Range on each,
    /// `+` on all but the last). Returns the Message-ID and the transaction ids.
    pub fn send_message(
        &mut self,
        body: &[u8],
        content_type: &str,
        chunk: usize,
        extra: &[(&str, &str)],
    ) -> (String, Vec<String>) {
        let message_id = String::from_utf8_lossy(&self.id("m")).into_owned();
        let part = Part {
            message_id: &message_id,
            offset: 0,
            total: body.len() as u64,
            content_type,
            chunk,
        };
        let tids = self.send_part(&part, body, extra);
        (message_id, tids)
    }

    /// Sends `data`, the bytes of message `part.message_id` from `part.offset` (0-based), in
    /// chunks of at most `part.chunk` bytes, each with its Byte-Range in the whole message of
    /// `part.total` bytes: `$` on the chunk that ends the message, `+` on every other (a part
    /// that stops short leaves the message unfinished, as an interrupted transfer does; RFC
    /// 5547 §8 resumes it from an offset). Returns the transaction ids.
    pub fn send_part(
        &mut self,
        part: &Part<'_>,
        data: &[u8],
        extra: &[(&str, &str)],
    ) -> Vec<String> {
        let message_id = Bytes::from(part.message_id.to_string());
        let mut tids = Vec::new();
        let mut start = 0usize;
        let mut buf = BytesMut::new();
        loop {
            let end = (start + part.chunk.max(1)).min(data.len());
            let mut h = self.head(Method::Send);
            h.message_id = Some(message_id.clone());
            h.byte_range = Some(ByteRange {
                start: part.offset + start as u64 + 1,
                end: Some(part.offset + end as u64),
                total: Some(part.total),
            });
            h.content_type = Some(Bytes::from(part.content_type.to_string()));
            for (n, v) in extra {
                h.other
                    .push((Bytes::from(n.to_string()), Bytes::from(v.to_string())));
            }
            let flag = if part.offset + end as u64 == part.total {
                Flag::Complete
            } else {
                Flag::Continues
            };
            let parts = write::chunk(
                &mut h,
                Bytes::copy_from_slice(&data[start..end]),
                flag,
                &mut buf,
            );
            // One write per chunk: a peer that answers early (481) and closes does not make
            // the rest of the chunk fail.
            let mut whole = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
            for p in parts {
                whole.extend_from_slice(&p);
            }
            self.send_raw(&whole);
            tids.push(String::from_utf8_lossy(&h.tid).into_owned());
            start = end;
            if start >= data.len() {
                break;
            }
        }
        tids
    }

    /// Sends an empty SEND (binds a connection we opened, RFC 4975 §5.4).
    pub fn send_empty(&mut self) -> String {
        let mut h = self.head(Method::Send);
        h.message_id = Some(self.id("m"));
        h.byte_range = Some(ByteRange {
            start: 1,
            end: Some(0),
            total: Some(0),
        });
        self.send_raw(&write::bodyless(&h, &mut BytesMut::new()));
        String::from_utf8_lossy(&h.tid).into_owned()
    }

    /// Answers a request with `code`, per its Failure-Report.
    pub fn respond(&mut self, req: &Head, code: u16) {
        if let Some(r) = write::response(req, code, None) {
            self.send_raw(&write::bodyless(&r, &mut BytesMut::new()));
        }
    }

    /// The next whole transaction within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Chunk> {
        let until = Instant::now() + timeout;
        loop {
            if !self.got.is_empty() {
                return Some(self.got.remove(0));
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).ok();
            let mut buf = vec![0u8; 65536];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => {
                    buf.truncate(n);
                    self.parser.feed(Bytes::from(buf));
                    self.drain();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
    }

    fn drain(&mut self) {
        while let Some(ev) = self.parser.poll() {
            match ev {
                Ok(Event::Head(head)) => {
                    self.partial = Some(Chunk {
                        head: *head,
                        body: Vec::new(),
                        flag: None,
                    })
                }
                Ok(Event::Body(b)) => {
                    if let Some(p) = &mut self.partial {
                        p.body.extend_from_slice(&b);
                    }
                }
                Ok(Event::End(flag)) => {
                    if let Some(mut p) = self.partial.take() {
                        p.flag = Some(flag);
                        self.got.push(p);
                    }
                }
                Ok(Event::Reject(_)) | Err(_) => {
                    if let Some(p) = self.partial.take() {
                        self.got.push(p);
                    }
                }
            }
        }
    }

    /// Whether the peer closes the connection within `timeout` (whatever it sends before).
    pub fn closes_within(&mut self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self
                .recv(until.saturating_duration_since(Instant::now()))
                .is_none()
            {
                return Instant::now() < until;
            }
        }
        false
    }

    /// The next request, answering responses away (returned in `responses`); `auto_ok`
    /// answers a SEND 200 at once.
    pub fn recv_request(
        &mut self,
        timeout: Duration,
        auto_ok: bool,
        responses: &mut Vec<Chunk>,
    ) -> Option<Chunk> {
        let until = Instant::now() + timeout;
        loop {
            let c = self.recv(until.saturating_duration_since(Instant::now()))?;
            if c.head.is_request() {
                if auto_ok && c.head.method() == Some(&Method::Send) {
                    let h = c.head.clone();
                    self.respond(&h, 200);
                }
                return Some(c);
            }
            responses.push(c);
        }
    }

    /// The response to transaction `tid` within `timeout` (requests that arrive meanwhile are
    /// kept for [`MsrpClient::recv`]).
    pub fn await_response(&mut self, tid: &str, timeout: Duration) -> Option<Chunk> {
        let until = Instant::now() + timeout;
        let mut kept = Vec::new();
        let found = loop {
            let Some(c) = self.recv(until.saturating_duration_since(Instant::now())) else {
                break None;
            };
            if !c.head.is_request() && c.head.tid == tid.as_bytes() {
                break Some(c);
            }
            kept.push(c);
        };
        kept.append(&mut self.got);
        self.got = kept;
        found
    }
}
