//! Cutting a byte stream (TCP, TLS) into SIP messages (RFC 3261 §18.3) and keep-alive pings
//! (RFC 5626 §3.5.1).
//!
//! On a stream, Content-Length is mandatory and is the only way to find where a body ends.
//! [`StreamFramer`] buffers what the socket delivered, and hands out each complete message as
//! one [`Bytes`] split off the front of its buffer (no copy). It never reads a socket: the
//! caller feeds it bytes and drains frames until [`StreamFramer::next`] returns `Ok(None)`.
//!
//! ```text
//!   read ──► framer.extend(&chunk) ──► while let Some(frame) = framer.next()? { ... }
//!                                      Frame::Message(bytes) ──► sip::parse(bytes)
//!                                      Frame::KeepAlive      ──► send PONG ("\r\n")
//!   Err(FramingError::TooLarge) ──► answer 513 if possible, close the connection
//! ```

use std::fmt;

use bytes::{Bytes, BytesMut};

use super::message::{is_ws, parse_decimal};

/// The answer to a keep-alive ping: a single CRLF (RFC 5626 §3.5.1).
pub const PONG: &[u8] = b"\r\n";

/// What the stream yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Exactly one message, header section and body, split off the stream buffer.
    Message(Bytes),
    /// A CRLFCRLF ping (RFC 5626 §3.5.1); answer with [`PONG`].
    KeepAlive,
}

/// Why the stream cannot be framed any further; the connection should be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    /// The header section, or header section plus Content-Length, exceeds the maximum
    /// message size (answer 513 Message Too Large, RFC 3261 §21.5.14, then close).
    TooLarge,
    /// A message without Content-Length: on a stream its end cannot be found (§18.3).
    MissingContentLength,
    /// Content-Length is not a decimal number, or several values disagree.
    BadContentLength,
}

impl FramingError {
    /// A reason phrase naming the problem.
    pub fn reason(&self) -> &'static str {
        match self {
            FramingError::TooLarge => "Message Too Large",
            FramingError::MissingContentLength => "Missing Content-Length Header",
            FramingError::BadContentLength => "Bad Content-Length",
        }
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for FramingError {}

/// Frames one stream connection's bytes into messages.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max: usize,
    /// Bytes at the front already searched for the end of the header section.
    scanned: usize,
    /// Length of the message at the front, once its header section has been read.
    pending: Option<usize>,
    /// A framing error is final: the stream has lost its message boundaries.
    failed: Option<FramingError>,
}

impl StreamFramer {
    /// A framer refusing messages longer than `max_message_size` bytes (header + body).
    pub fn new(max_message_size: usize) -> StreamFramer {
        StreamFramer {
            buf: BytesMut::new(),
            max: max_message_size,
            scanned: 0,
            pending: None,
            failed: None,
        }
    }

    /// Appends received bytes (a copy into the stream buffer).
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The stream buffer, to receive into directly (e.g. a `read_buf`) instead of copying
    /// through [`StreamFramer::extend`]. Append only: bytes already there are being framed.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Number of bytes received but not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. After an error every
    /// call returns the same error. (Not an `Iterator`: it can fail, and `None` only means
    /// "not yet".)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.step().inspect_err(|&e| self.failed = Some(e))
    }

    fn step(&mut self) -> Result<Option<Frame>, FramingError> {
        if self.pending.is_none() {
            // Between messages: CRLFCRLF is a ping; a lone CRLF (a pong, or the extra line
            // RFC 3261 §7.5 tells receivers to ignore) is skipped.
            loop {
                match &self.buf[..] {
                    [b'\r', b'\n', b'\r', b'\n', ..] => {
                        let _ = self.buf.split_to(4);
                        return Ok(Some(Frame::KeepAlive));
                    }
                    [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => return Ok(None),
                    [b'\r', b'\n', ..] => {
                        let _ = self.buf.split_to(2);
                        self.scanned = 0;
                    }
                    [b'\n', ..] => {
                        let _ = self.buf.split_to(1);
                        self.scanned = 0;
                    }
                    _ => break,
                }
            }
            let Some(body_start) = self.find_header_end() else {
                if self.buf.len() > self.max {
                    return Err(FramingError::TooLarge);
                }
                return Ok(None);
            };
            let cl = content_length(&self.buf[..body_start])?;
            let total = body_start.checked_add(cl).ok_or(FramingError::TooLarge)?;
            if total > self.max {
                return Err(FramingError::TooLarge);
            }
            self.pending = Some(total);
        }
        match self.pending {
            Some(total) if self.buf.len() >= total => {
                self.pending = None;
                self.scanned = 0;
                Ok(Some(Frame::Message(self.buf.split_to(total).freeze())))
            }
            _ => Ok(None),
        }
    }

    /// Index of the first body byte, searching only bytes not searched before. Accepts CRLF
    /// and bare LF line ends.
    fn find_header_end(&mut self) -> Option<usize> {
        let b = &self.buf[..];
        let mut i = self.scanned;
        while let Some(off) = b[i..].iter().position(|&c| c == b'\n') {
            let nl = i + off;
            match (b.get(nl + 1), b.get(nl + 2)) {
                (Some(b'\n'), _) => return Some(nl + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
                (None, _) | (Some(b'\r'), None) => {
                    // Undecided until more bytes arrive: resume at this line end.
                    self.scanned = nl;
                    return None;
                }
                _ => i = nl + 1,
            }
        }
        self.scanned = b.len();
        None
    }
}

/// The Content-Length (long or compact `l`) of a header section; several lines must agree.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<usize> = None;
    let mut lines = head.split(|&c| c == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        if line.first().is_some_and(|&c| is_ws(c)) {
            continue;
        }
        let name = trim_ws(&line[..colon]);
        if !name.eq_ignore_ascii_case(b"content-length") && !name.eq_ignore_ascii_case(b"l") {
            continue;
        }
        // The value, with any folded continuation lines.
        let mut value = trim_ws(&line[colon + 1..]).to_vec();
        while let Some(next) = lines.peek() {
            if !next.first().is_some_and(|&c| is_ws(c)) {
                break;
            }
            let next = next.strip_suffix(b"\r").unwrap_or(next);
            value.extend_from_slice(trim_ws(next));
            lines.next();
        }
        let n = parse_decimal(&value).ok_or(FramingError::BadContentLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(FramingError::BadContentLength);
        }
        found = Some(n);
    }
    found.ok_or(FramingError::MissingContentLength)
}

fn trim_ws(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|&c| !is_ws(c)).unwrap_or(v.len());
    let e = v.iter().rposition(|&c| !is_ws(c)).map_or(s, |e| e + 1);
    &v[s..e]
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";
    const B: &[u8] = b"SIP/2.0 200 OK\r\nContent-Length:  0\r\n\r\n";
    const C: &[u8] = b"INFO sip:x SIP/2.0\nContent-Length:\n 3\n\nabc";

    fn drain(f: &mut StreamFramer) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(frame) = f.next().unwrap() {
            out.push(frame);
        }
        out
    }

    fn stream() -> (Vec<u8>, Vec<Frame>) {
        let mut s = Vec::new();
        s.extend_from_slice(A);
        s.extend_from_slice(b"\r\n\r\n");
        s.extend_from_slice(B);
        s.extend_from_slice(b"\r\n");
        s.extend_from_slice(C);
        s.extend_from_slice(A);
        let frames = vec![
            Frame::Message(Bytes::from_static(A)),
            Frame::KeepAlive,
            Frame::Message(Bytes::from_static(B)),
            Frame::Message(Bytes::from_static(C)),
            Frame::Message(Bytes::from_static(A)),
        ];
        (s, frames)
    }

    #[test]
    fn several_messages_in_one_read() {
        let (s, want) = stream();
        let mut f = StreamFramer::new(4096);
        f.extend(&s);
        assert_eq!(drain(&mut f), want);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn byte_by_byte() {
        let (s, want) = stream();
        let mut f = StreamFramer::new(4096);
        let mut got = Vec::new();
        for b in &s {
            f.extend(std::slice::from_ref(b));
            got.extend(drain(&mut f));
        }
        assert_eq!(got, want);
    }

    #[test]
    fn random_chunks() {
        let (s, want) = stream();
        let mut seed = 0x2545_f491u32;
        for _ in 0..200 {
            let mut f = StreamFramer::new(4096);
            let mut got = Vec::new();
            let mut pos = 0;
            while pos < s.len() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let n = (1 + seed as usize % 64).min(s.len() - pos);
                f.extend(&s[pos..pos + n]);
                pos += n;
                got.extend(drain(&mut f));
            }
            assert_eq!(got, want);
        }
    }

    #[test]
    fn frames_share_the_buffer() {
        let mut f = StreamFramer::new(4096);
        f.buffer_mut().extend_from_slice(A);
        f.buffer_mut().extend_from_slice(B);
        let base = f.buffer_mut().as_ptr() as usize;
        let Some(Frame::Message(m)) = f.next().unwrap() else {
            panic!()
        };
        assert_eq!(m.as_ptr() as usize, base);
        assert_eq!(f.buffered(), B.len());
    }

    #[test]
    fn waits_for_partial_ping() {
        let mut f = StreamFramer::new(4096);
        f.extend(b"\r\n\r");
        assert_eq!(f.next(), Ok(None));
        f.extend(b"\n");
        assert_eq!(f.next(), Ok(Some(Frame::KeepAlive)));
        assert_eq!(f.next(), Ok(None));
    }

    #[test]
    fn errors_are_final() {
        let mut f = StreamFramer::new(4096);
        f.extend(b"OPTIONS sip:x SIP/2.0\r\nVia: a\r\n\r\n");
        assert_eq!(f.next(), Err(FramingError::MissingContentLength));
        f.extend(B);
        assert_eq!(f.next(), Err(FramingError::MissingContentLength));

        for bad in [
            &b"l: -1"[..],
            b"Content-Length: 5\r\nl: 6",
            b"Content-Length: x",
            b"Content-Length: 9999999999",
        ] {
            let mut f = StreamFramer::new(4096);
            f.extend(b"OPTIONS sip:x SIP/2.0\r\n");
            f.extend(bad);
            f.extend(b"\r\n\r\n");
            assert_eq!(f.next(), Err(FramingError::BadContentLength), "{bad:?}");
        }
    }

    #[test]
    fn too_large() {
        // Header section without end beyond the limit.
        let mut f = StreamFramer::new(64);
        f.extend(&[b'a'; 60]);
        assert_eq!(f.next(), Ok(None));
        f.extend(&[b'a'; 10]);
        assert_eq!(f.next(), Err(FramingError::TooLarge));
        // Content-Length pushing the message beyond the limit, before the body arrives.
        let mut f = StreamFramer::new(64);
        f.extend(b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 100\r\n\r\n");
        assert_eq!(f.next(), Err(FramingError::TooLarge));
        // Exactly at the limit is fine.
        let mut f = StreamFramer::new(A.len());
        f.extend(A);
        assert_eq!(f.next(), Ok(Some(Frame::Message(Bytes::from_static(A)))));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1357_9bdfu32;
        let alphabet = b"\r\n: lContent-Length0123x";
        for _ in 0..2_000 {
            let mut f = StreamFramer::new(256);
            for _ in 0..40 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let chunk: Vec<u8> = (0..seed % 8)
                    .map(|i| alphabet[(seed as usize + i as usize * 7) % alphabet.len()])
                    .collect();
                f.extend(&chunk);
                while let Ok(Some(_)) = f.next() {}
            }
        }
    }
}
