//! The SIP message model (RFC 3261 §7), its parser and its serializer.
//!
//! [`parse`] is deliberately lenient about *structure* and strict about nothing else: it splits
//! the start line, the header lines and the body, and keeps every part as a slice of the received
//! buffer. Whether the message is *acceptable* (version, URI syntax, mandatory headers, CSeq
//! agreement, ...) is decided by [`crate::sip::validate`], so that a request with a bad
//! Request-URI can still be answered with a precise 400 instead of being dropped.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::name::HeaderName;

/// A SIP request method (RFC 3261 §7.1, case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// INVITE (RFC 3261)
    Invite,
    /// ACK (RFC 3261)
    Ack,
    /// BYE (RFC 3261)
    Bye,
    /// CANCEL (RFC 3261)
    Cancel,
    /// REGISTER (RFC 3261)
    Register,
    /// OPTIONS (RFC 3261)
    Options,
    /// MESSAGE (RFC 3428)
    Message,
    /// INFO (RFC 6086)
    Info,
    /// PRACK (RFC 3262)
    Prack,
    /// UPDATE (RFC 3311)
    Update,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// PUBLISH (RFC 3903)
    Publish,
    /// REFER (RFC 3515)
    Refer,
    /// An extension method, as received.
    Other(Bytes),
}

impl Method {
    /// Recognises a method token; unknown tokens become [`Method::Other`].
    pub fn from_bytes(raw: &Bytes) -> Method {
        match &raw[..] {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"MESSAGE" => Method::Message,
            b"INFO" => Method::Info,
            b"PRACK" => Method::Prack,
            b"UPDATE" => Method::Update,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"PUBLISH" => Method::Publish,
            b"REFER" => Method::Refer,
            _ => Method::Other(raw.clone()),
        }
    }

    /// The methods this enum names, in declaration order: index `i` is what
    /// [`Method::known_index`] returns (counters keep one slot per known method).
    pub const KNOWN: [&'static str; 14] = [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "REGISTER",
        "OPTIONS",
        "MESSAGE",
        "INFO",
        "PRACK",
        "UPDATE",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "REFER",
    ];

    /// The position of a known method in [`Method::KNOWN`]; `None` for an extension method.
    pub fn known_index(&self) -> Option<usize> {
        Some(match self {
            Method::Invite => 0,
            Method::Ack => 1,
            Method::Bye => 2,
            Method::Cancel => 3,
            Method::Register => 4,
            Method::Options => 5,
            Method::Message => 6,
            Method::Info => 7,
            Method::Prack => 8,
            Method::Update => 9,
            Method::Subscribe => 10,
            Method::Notify => 11,
            Method::Publish => 12,
            Method::Refer => 13,
            Method::Other(_) => return None,
        })
    }

    /// The name of a known method as a static string; `None` for an extension method.
    pub fn known_str(&self) -> Option<&'static str> {
        self.known_index().map(|i| Method::KNOWN[i])
    }

    /// The method as text.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Other(raw) => std::str::from_utf8(raw).unwrap_or("?"),
            known => known.known_str().unwrap_or("?"),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `Method SP Request-URI SP SIP-Version`
    Request {
        /// The method.
        method: Method,
        /// The Request-URI exactly as received (validated by [`crate::sip::validate`]).
        uri: Bytes,
        /// The version token, e.g. `SIP/2.0`.
        version: Bytes,
    },
    /// `SIP-Version SP Status-Code SP Reason-Phrase`
    Response {
        /// The version token, e.g. `SIP/2.0`.
        version: Bytes,
        /// The status code, 100..=699.
        code: u16,
        /// The reason phrase (may be empty).
        reason: Bytes,
    },
}

/// One header line: its name and its value with surrounding whitespace removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub name: HeaderName,
    /// The value: a slice of the received buffer, or a rebuilt buffer if the line was folded.
    pub value: Bytes,
}

/// The header lines of a message, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// All header lines in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no header lines.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of the first line with this name.
    pub fn get(&self, name: &HeaderName) -> Option<&Bytes> {
        self.0.iter().find(|h| &h.name == name).map(|h| &h.value)
    }

    /// Every line with this name, whole.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.0
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| &h.value)
    }

    /// Every value of this header: lines in order, and for list headers
    /// ([`HeaderName::is_list`]) each comma-separated element of a line (RFC 3261 §7.3.1).
    /// Commas inside quoted strings and `<...>` do not split. Elements are slices, not copies.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = Bytes> + 'a {
        let list = name.is_list();
        self.get_all(name)
            .flat_map(move |v| ListElems::new(v.clone(), list))
    }

    /// Number of lines with this name.
    pub fn count(&self, name: &HeaderName) -> usize {
        self.0.iter().filter(|h| &h.name == name).count()
    }

    /// Appends a line.
    pub fn push(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    /// Inserts a line before every other (as a proxy adds its Via).
    pub fn push_front(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        self.0.insert(
            0,
            Header {
                name,
                value: value.into(),
            },
        );
    }

    /// Removes every line with this name; returns how many were removed.
    pub fn remove(&mut self, name: &HeaderName) -> usize {
        let before = self.0.len();
        self.0.retain(|h| &h.name != name);
        before - self.0.len()
    }

    /// Replaces every line with this name by one line with this value, kept at the position of
    /// the first removed line (or appended).
    pub fn set(&mut self, name: HeaderName, value: impl Into<Bytes>) {
        let value = value.into();
        match self.0.iter().position(|h| h.name == name) {
            Some(pos) => {
                self.0[pos].value = value;
                let mut i = 0;
                self.0.retain(|h| {
                    let keep = h.name != name || i == pos;
                    i += 1;
                    keep
                });
            }
            None => self.push(name, value),
        }
    }

    /// Replaces the value of the first line with this name; returns false if there is none.
    pub fn replace_first(&mut self, name: &HeaderName, value: impl Into<Bytes>) -> bool {
        match self.0.iter_mut().find(|h| &h.name == name) {
            Some(h) => {
                h.value = value.into();
                true
            }
            None => false,
        }
    }

    /// Removes the first *value* of a list header (RFC 3261 §7.3.1): the first element of the
    /// first line, or the whole line when it holds one element. A proxy removes its own Via
    /// from a response this way (§16.7 step 3).
    pub fn remove_first_value(&mut self, name: &HeaderName) -> Option<Bytes> {
        let pos = self.0.iter().position(|h| &h.name == name)?;
        let mut elems = split_list(&self.0[pos].value);
        if elems.len() <= 1 {
            return Some(self.0.remove(pos).value);
        }
        let first = elems.remove(0);
        let mut rest = BytesMut::with_capacity(self.0[pos].value.len());
        for (i, e) in elems.iter().enumerate() {
            if i > 0 {
                rest.put_slice(b", ");
            }
            rest.put_slice(e);
        }
        self.0[pos].value = rest.freeze();
        Some(first)
    }

    /// Removes the first line with this name and returns its value.
    pub fn remove_first(&mut self, name: &HeaderName) -> Option<Bytes> {
        let pos = self.0.iter().position(|h| &h.name == name)?;
        Some(self.0.remove(pos).value)
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Splits a list header value at top-level commas (outside quotes and angle brackets).
pub(crate) fn split_list(v: &Bytes) -> Vec<Bytes> {
    ListElems::new(v.clone(), true).collect()
}

/// The elements of one header line, found lazily: reading the first (a proxy's top Via) scans
/// only up to the first top-level comma. With `list` false the whole value is one element.
struct ListElems {
    v: Bytes,
    start: usize,
    list: bool,
    done: bool,
}

impl ListElems {
    fn new(v: Bytes, list: bool) -> ListElems {
        ListElems {
            v,
            start: 0,
            list,
            done: false,
        }
    }
}

impl Iterator for ListElems {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if !self.list {
            // Not a list: the value as it is, even empty (it was trimmed when parsed).
            return (!std::mem::replace(&mut self.done, true)).then(|| self.v.clone());
        }
        while !self.done {
            let rest = self.v.get(self.start..)?;
            // After a top-level comma no quote or bracket is open, so a fresh scan is exact.
            let end = match Unquoted::new(rest, b',', true).next() {
                Some(i) => self.start + i,
                None => {
                    self.done = true;
                    self.v.len()
                }
            };
            let (mut s, mut e) = (self.start, end);
            self.start = end + 1;
            while s < e && is_ws(self.v[s]) {
                s += 1;
            }
            while e > s && is_ws(self.v[e - 1]) {
                e -= 1;
            }
            if s < e {
                return Some(self.v.slice(s..e));
            }
        }
        None
    }
}

/// The indices of the `byte`s in a header value that stand outside quoted strings
/// (RFC 3261 §25.1 `quoted-string`, `\` escaping the next byte) and, with `angles`, outside
/// `<...>` (a bracketed URI, §20.10). Lenient: an unterminated quote runs to the end.
pub(crate) struct Unquoted<'a> {
    v: &'a [u8],
    byte: u8,
    angles: bool,
    i: usize,
    in_quote: bool,
    in_angle: bool,
}

impl<'a> Unquoted<'a> {
    /// Scans `v` from its start for `byte`.
    pub(crate) fn new(v: &'a [u8], byte: u8, angles: bool) -> Self {
        Unquoted {
            v,
            byte,
            angles,
            i: 0,
            in_quote: false,
            in_angle: false,
        }
    }

    /// Whether the scan so far ended inside a quoted string (at the end: one was left open).
    pub(crate) fn in_quote(&self) -> bool {
        self.in_quote
    }
}

impl Iterator for Unquoted<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let (byte, angles) = (self.byte, self.angles);
        loop {
            let rest = self.v.get(self.i..)?;
            // Jump to the next byte that changes the state or is the one sought.
            let skip = if self.in_quote {
                rest.iter().position(|&c| c == b'"' || c == b'\\')
            } else {
                rest.iter()
                    .position(|&c| c == byte || c == b'"' || (angles && (c == b'<' || c == b'>')))
            };
            let Some((i, &c)) = skip.and_then(|k| Some((self.i + k, rest.get(k)?))) else {
                self.i = self.v.len();
                return None;
            };
            self.i = i + 1;
            if self.in_quote {
                match c {
                    b'\\' => self.i += 1,
                    _ => self.in_quote = false,
                }
            } else {
                match c {
                    b'"' => self.in_quote = true,
                    b'<' if angles => self.in_angle = true,
                    b'>' if angles => self.in_angle = false,
                    _ if !self.in_angle => return Some(i),
                    _ => {}
                }
            }
        }
    }
}

/// A parsed SIP message: start line, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request line or status line.
    pub start: StartLine,
    /// Header lines in order.
    pub headers: Headers,
    /// The body (empty if none).
    pub body: Bytes,
}

impl Message {
    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request, `None` for a response.
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response, `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The raw Request-URI of a request.
    pub fn request_uri(&self) -> Option<&Bytes> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The Call-ID value.
    pub fn call_id(&self) -> Option<&Bytes> {
        self.headers.get(&HeaderName::CallId)
    }

    /// Replaces the body, and sets Content-Length (and Content-Type when given) to match.
    pub fn set_body(&mut self, body: Bytes, content_type: Option<&str>) {
        if let Some(ct) = content_type {
            self.headers.set(
                HeaderName::ContentType,
                Bytes::copy_from_slice(ct.as_bytes()),
            );
        }
        self.headers.set(
            HeaderName::ContentLength,
            Bytes::from(body.len().to_string()),
        );
        self.body = body;
    }

    /// Writes the message as it stands (headers in order, long header names).
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len_hint());
        match &self.start {
            StartLine::Request {
                method,
                uri,
                version,
            } => {
                out.put_slice(method.as_str().as_bytes());
                out.put_u8(b' ');
                out.put_slice(uri);
                out.put_u8(b' ');
                out.put_slice(version);
            }
            StartLine::Response {
                version,
                code,
                reason,
            } => {
                out.put_slice(version);
                out.put_u8(b' ');
                let mut d = [0u8; 3];
                let c = (*code).min(999);
                d[0] = b'0' + (c / 100) as u8;
                d[1] = b'0' + (c / 10 % 10) as u8;
                d[2] = b'0' + (c % 10) as u8;
                out.put_slice(&d);
                out.put_u8(b' ');
                out.put_slice(reason);
            }
        }
        out.put_slice(b"\r\n");
        for h in &self.headers {
            out.put_slice(h.name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(&h.value);
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        out.put_slice(&self.body);
    }

    /// The serialized message.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.write_to(&mut out);
        out.freeze()
    }

    fn encoded_len_hint(&self) -> usize {
        64 + self
            .headers
            .iter()
            .map(|h| h.name.as_str().len() + h.value.len() + 4)
            .sum::<usize>()
            + self.body.len()
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Why bytes could not be split into a SIP message at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// No empty line ends the header section.
    Incomplete,
    /// The first line is neither a request line nor a status line.
    BadStartLine,
    /// A status line whose code is not three digits in 100..=699.
    BadStatusCode,
    /// A header line without a colon, or with a name that is not a token.
    BadHeaderLine,
    /// Content-Length is not a number, or several disagree.
    BadContentLength,
    /// Content-Length says more bytes than the datagram holds.
    ContentLengthExceedsMessage,
}

impl ParseError {
    /// A reason phrase naming the problem, for a 400 response or a log line.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Incomplete => "Incomplete Message",
            ParseError::BadStartLine => "Malformed Start Line",
            ParseError::BadStatusCode => "Malformed Status Code",
            ParseError::BadHeaderLine => "Malformed Header Line",
            ParseError::BadContentLength => "Bad Content-Length",
            ParseError::ContentLengthExceedsMessage => "Content-Length Exceeds Message",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ParseError {}

pub(crate) fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// RFC 3261 §25.1 `token` characters.
pub(crate) fn is_token_char(c: u8) -> bool {
    TOKEN_CHARS[c as usize]
}

/// Lookup table for [`is_token_char`] (the parser checks every header name byte).
static TOKEN_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        c += 1;
    }
    t
};

/// Finds the end of the header section: returns (index of the first byte of the blank line,
/// index of the first body byte). Accepts CRLF and bare LF line ends.
#[allow(dead_code)] // `parse` finds the end in its line pass; kept for other crate modules.
pub(crate) fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(off) = memchr(b'\n', &buf[i..]) {
        let nl = i + off;
        // The next line starts at nl+1; is it empty?
        let next = nl + 1;
        if next < buf.len() && buf[next] == b'\n' {
            return Some((next, next + 1));
        }
        if next + 1 < buf.len() && buf[next] == b'\r' && buf[next + 1] == b'\n' {
            return Some((next, next + 2));
        }
        i = next;
    }
    None
}

/// The first index of `needle` in `hay`. Tests eight bytes per step (the classic
/// "has zero byte" bit trick), since the parser runs it over every line of every message.
pub(crate) fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut i = 0;
    for chunk in hay.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        if x.wrapping_sub(LO) & !x & HI != 0 {
            break;
        }
        i += 8;
    }
    hay[i..].iter().position(|&c| c == needle).map(|p| i + p)
}

/// Parses a complete message held in one buffer (a UDP datagram, or one frame cut by
/// [`crate::sip::framing`]).
///
/// Content-Length (RFC 3261 §18.3): when present, the body is exactly that many bytes and extra
/// bytes are discarded; when it asks for more bytes than there are, the message is rejected.
/// When absent, the body is the rest of the buffer.
pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
    let (start, headers, body_start) = parse_head_parts(&buf)?;
    let available = buf.len() - body_start.min(buf.len());
    let body = match content_length(&headers)? {
        Some(n) if n > available => return Err(ParseError::ContentLengthExceedsMessage),
        Some(0) => Bytes::new(),
        Some(n) => buf.slice(body_start..body_start + n),
        None if available == 0 => Bytes::new(),
        None => buf.slice(body_start..),
    };
    Ok(Message {
        start,
        headers,
        body,
    })
}

/// Parses the start line and the headers only, with an empty body and Content-Length not
/// checked. For answering a request whose body cannot be delimited (a bad or too large
/// Content-Length, RFC 3261 §18.3) with a 400 instead of dropping it; see
/// [`crate::sip::validate::reject_unparsable`].
pub fn parse_head(buf: Bytes) -> Result<Message, ParseError> {
    let (start, headers, _) = parse_head_parts(&buf)?;
    Ok(Message {
        start,
        headers,
        body: Bytes::new(),
    })
}

/// Start line, headers, and the index of the first body byte.
fn parse_head_parts(buf: &Bytes) -> Result<(StartLine, Headers, usize), ParseError> {
    // Leading CRLFs are keep-alives or junk between messages (RFC 3261 §7.5).
    let mut skip = 0;
    while skip < buf.len() && (buf[skip] == b'\r' || buf[skip] == b'\n') {
        skip += 1;
    }
    // One pass over the lines finds both the header lines and the empty line ending them.
    let mut lines = LineIter { buf, pos: skip };
    let first = lines.next().ok_or(ParseError::Incomplete)?;
    let mut line_ends: Vec<(usize, usize)> = Vec::with_capacity(24);
    let mut body_start = None;
    for (s, e) in lines.by_ref() {
        if s == e {
            body_start = Some(lines.pos);
            break;
        }
        line_ends.push((s, e));
    }
    let body_start = match body_start {
        Some(b) => b,
        // A message without body may end right after the last header's line end.
        None if buf.ends_with(b"\n") => buf.len(),
        None => return Err(ParseError::Incomplete),
    };
    let head = buf;
    let start = parse_start_line(&head.slice(first.0..first.1))?;

    let mut headers: Vec<Header> = Vec::with_capacity(16);
    // (name, value start, value end, folded)
    let mut cur: Option<(HeaderName, usize, usize, bool)> = None;
    for (s, e) in line_ends {
        let line = &head[s..e];
        if is_ws(line[0]) {
            // Continuation of the previous header value (line folding, RFC 3261 §7.3.1).
            match cur.as_mut() {
                Some(c) => {
                    c.2 = e;
                    c.3 = true;
                }
                None => return Err(ParseError::BadHeaderLine),
            }
            continue;
        }
        if let Some(c) = cur.take() {
            headers.push(finish_header(head, c));
        }
        let colon = memchr(b':', line).ok_or(ParseError::BadHeaderLine)?;
        let mut ne = colon;
        while ne > 0 && is_ws(line[ne - 1]) {
            ne -= 1;
        }
        if ne == 0 || !line[..ne].iter().all(|&c| is_token_char(c)) {
            return Err(ParseError::BadHeaderLine);
        }
        let name = HeaderName::known(&line[..ne])
            .unwrap_or_else(|| HeaderName::Other(head.slice(s..s + ne)));
        cur = Some((name, s + colon + 1, e, false));
    }
    if let Some(c) = cur.take() {
        headers.push(finish_header(head, c));
    }

    Ok((start, Headers(headers), body_start))
}

/// The declared Content-Length, if any; several lines must agree.
pub(crate) fn content_length(headers: &Headers) -> Result<Option<usize>, ParseError> {
    let mut found: Option<usize> = None;
    for v in headers.get_all(&HeaderName::ContentLength) {
        let n = parse_decimal(v).ok_or(ParseError::BadContentLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(ParseError::BadContentLength);
        }
        found = Some(n);
    }
    Ok(found)
}

/// Parses an unsigned decimal of at most 9 digits (no sign, no spaces).
pub(crate) fn parse_decimal(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0usize, |a, &c| a * 10 + (c - b'0') as usize))
}

fn finish_header(head: &Bytes, (name, s, e, folded): (HeaderName, usize, usize, bool)) -> Header {
    let value = if folded {
        // Replace every CRLF + leading whitespace by one SP; the result is a new buffer.
        let mut out = BytesMut::with_capacity(e - s);
        let mut i = s;
        while i < e {
            let c = head[i];
            if c == b'\r' || c == b'\n' {
                while i < e && (head[i] == b'\r' || head[i] == b'\n' || is_ws(head[i])) {
                    i += 1;
                }
                out.put_u8(b' ');
                continue;
            }
            out.put_u8(c);
            i += 1;
        }
        trim(&out.freeze())
    } else {
        trim_slice(head, s, e)
    };
    Header { name, value }
}

/// Removes leading and trailing SP/HTAB.
pub(crate) fn trim(v: &Bytes) -> Bytes {
    trim_slice(v, 0, v.len())
}

/// `v[from..to]` without leading and trailing SP/HTAB, as one slice of `v`: trimmed before
/// slicing, so a header value costs one reference-count increment.
pub(crate) fn trim_slice(v: &Bytes, from: usize, to: usize) -> Bytes {
    let (s, e) = trim_bounds(&v[from..to]);
    v.slice(from + s..from + e)
}

/// The bounds of `v` without leading and trailing SP/HTAB.
fn trim_bounds(v: &[u8]) -> (usize, usize) {
    let mut s = 0;
    let mut e = v.len();
    while s < e && is_ws(v[s]) {
        s += 1;
    }
    while e > s && is_ws(v[e - 1]) {
        e -= 1;
    }
    (s, e)
}

fn parse_start_line(line: &Bytes) -> Result<StartLine, ParseError> {
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // SIP-Version SP Status-Code SP Reason-Phrase
        let sp = memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
        let version = line.slice(..sp);
        let rest = &line[sp + 1..];
        if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
            return Err(ParseError::BadStatusCode);
        }
        if rest.len() > 3 && rest[3] != b' ' {
            return Err(ParseError::BadStatusCode);
        }
        let code = parse_decimal(&rest[..3]).ok_or(ParseError::BadStatusCode)? as u16;
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStatusCode);
        }
        let reason = if rest.len() > 4 {
            line.slice(sp + 5..)
        } else {
            Bytes::new()
        };
        return Ok(StartLine::Response {
            version,
            code,
            reason,
        });
    }
    // Method SP Request-URI SP SIP-Version. Split at the first space and at the space before
    // the last word, so that a Request-URI containing whitespace (RFC 4475 §3.1.2.8, §3.1.2.9)
    // or a line ending in whitespace (§3.1.2.10, kept in `version`) still yields a request
    // that validation answers with a 400 instead of being dropped.
    let first = memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    let mut end = line.len();
    while end > 0 && is_ws(line[end - 1]) {
        end -= 1;
    }
    let last = line[..end]
        .iter()
        .rposition(|&c| c == b' ')
        .ok_or(ParseError::BadStartLine)?;
    if first == 0 || last <= first {
        return Err(ParseError::BadStartLine);
    }
    let method_raw = line.slice(..first);
    if !method_raw.iter().all(|&c| is_token_char(c)) {
        return Err(ParseError::BadStartLine);
    }
    let version = line.slice(last + 1..);
    if version.len() < 4 || !version[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(ParseError::BadStartLine);
    }
    Ok(StartLine::Request {
        method: Method::from_bytes(&method_raw),
        uri: line.slice(first + 1..last),
        version,
    })
}

/// Iterates over lines (start, end) of a buffer, ends excluding CR LF.
struct LineIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Iterator for LineIter<'_> {
    type Item = (usize, usize);
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let s = self.pos;
        let (e, next) = match memchr(b'\n', &self.buf[s..]) {
            Some(off) => (s + off, s + off + 1),
            None => (self.buf.len(), self.buf.len()),
        };
        self.pos = next;
        let e = if e > s && self.buf[e - 1] == b'\r' {
            e - 1
        } else {
            e
        };
        Some((s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    #[test]
    fn parses_request_zero_copy() {
        let buf = Bytes::from_static(INVITE);
        let m = parse(buf.clone()).unwrap();
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(&m.request_uri().unwrap()[..], b"sip:bob@biloxi.com");
        let cid = m.call_id().unwrap();
        assert_eq!(&cid[..], b"a84b4c76e66710@pc33.atlanta.com");
        // The value points into the received buffer.
        let base = buf.as_ptr() as usize;
        let p = cid.as_ptr() as usize;
        assert!(p >= base && p < base + buf.len());
        assert_eq!(&m.body[..], b"v=0\n");
    }

    #[test]
    fn known_methods_index_their_names() {
        for (i, name) in Method::KNOWN.iter().enumerate() {
            let m = Method::from_bytes(&Bytes::from_static(name.as_bytes()));
            assert_eq!(m.known_index(), Some(i), "{name}");
            assert_eq!(m.as_str(), *name);
        }
        let other = Method::from_bytes(&Bytes::from_static(b"FOO"));
        assert_eq!((other.known_index(), other.as_str()), (None, "FOO"));
    }

    #[test]
    fn round_trips() {
        let m = parse(Bytes::from_static(INVITE)).unwrap();
        let printed = m.to_bytes();
        let again = parse(printed.clone()).unwrap();
        assert_eq!(m, again);
        assert_eq!(printed, again.to_bytes());
    }

    #[test]
    fn folding_and_compact_and_lists() {
        let raw = b"OPTIONS sip:x@y SIP/2.0\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1,\r\n SIP/2.0/TCP b;branch=z9hG4bK2\r\nSubject: one\r\n\ttwo\r\nl: 0\r\n\r\n";
        let m = parse(Bytes::from_static(raw)).unwrap();
        let vias: Vec<_> = m.headers.values(&HeaderName::Via).collect();
        assert_eq!(vias.len(), 2);
        assert_eq!(&vias[1][..], b"SIP/2.0/TCP b;branch=z9hG4bK2");
        assert_eq!(
            &m.headers.get(&HeaderName::Subject).unwrap()[..],
            b"one two"
        );
    }

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        let v = Bytes::from_static(b"\"A, B\" <sip:a@b;x=1,2>;q=0.5, <sip:c@d>");
        let parts = split_list(&v);
        assert_eq!(parts.len(), 2);
        assert_eq!(&parts[1][..], b"<sip:c@d>");
    }

    #[test]
    fn unquoted_skips_quotes_escapes_and_brackets() {
        let v = br#"a;"x;\";y";<sip:b;c>;d"#;
        let all: Vec<_> = Unquoted::new(v, b';', false).collect();
        assert_eq!(all, [1, 10, 17, 20]);
        let outside: Vec<_> = Unquoted::new(v, b';', true).collect();
        assert_eq!(outside, [1, 10, 20]);
        let mut open = Unquoted::new(b"x \"a;b", b';', false);
        assert_eq!(open.next(), None);
        assert!(open.in_quote());
    }

    #[test]
    fn response_and_content_length_rules() {
        let m = parse(Bytes::from_static(
            b"SIP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nabcdef",
        ))
        .unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(&m.body[..], b"ab");
        assert_eq!(
            parse(Bytes::from_static(
                b"SIP/2.0 200 OK\r\nContent-Length: 20\r\n\r\nab"
            )),
            Err(ParseError::ContentLengthExceedsMessage)
        );
        assert_eq!(
            parse(Bytes::from_static(b"SIP/2.0 2000 OK\r\n\r\n")),
            Err(ParseError::BadStatusCode)
        );
        assert_eq!(
            parse(Bytes::from_static(b"garbage")),
            Err(ParseError::Incomplete)
        );
        assert_eq!(
            parse(Bytes::from_static(
                b"INVITE sip:a SIP/2.0\r\nNoColon\r\n\r\n"
            )),
            Err(ParseError::BadHeaderLine)
        );
        let m = parse(Bytes::from_static(b"SIP/2.0 100 \r\n\r\n")).unwrap();
        assert_eq!(m.status(), Some(100));
    }

    #[test]
    fn request_line_whitespace_stays_parseable() {
        // RFC 4475 §3.1.2.9 / §3.1.2.10: parsed, so that validation can answer 400.
        let m = parse(Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0  \r\nCall-ID: x\r\n\r\n",
        ))
        .unwrap();
        let StartLine::Request { uri, version, .. } = &m.start else {
            panic!("request")
        };
        assert_eq!(
            (&uri[..], &version[..]),
            (&b"sip:a@b"[..], &b"SIP/2.0  "[..])
        );
        let m = parse(Bytes::from_static(b"INVITE  sip:a@b  SIP/2.0\r\n\r\n")).unwrap();
        assert_eq!(&m.request_uri().unwrap()[..], b" sip:a@b ");
        assert!(parse(Bytes::from_static(b"\r\n\r\n")).is_err());
        assert!(parse(Bytes::from_static(b"OPTIONS\r\n\r\n")).is_err());
    }

    #[test]
    fn parse_head_ignores_the_body() {
        let raw = Bytes::from_static(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -5\r\n\r\nxyz");
        assert_eq!(parse(raw.clone()), Err(ParseError::BadContentLength));
        let head = parse_head(raw).unwrap();
        assert!(head.body.is_empty());
        assert_eq!(head.headers.len(), 1);
    }

    #[test]
    fn memchr_matches_position() {
        let mut seed = 0x1234_5678u32;
        for len in 0..80 {
            let hay: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    b"ab\n:\x80\xff\x00"[seed as usize % 7]
                })
                .collect();
            for needle in [b'\n', b':', 0x80, 0xff, 0, b'z'] {
                assert_eq!(memchr(needle, &hay), hay.iter().position(|&c| c == needle));
            }
        }
    }

    #[test]
    fn headers_editing() {
        let mut m = parse(Bytes::from_static(INVITE)).unwrap();
        m.headers
            .push_front(HeaderName::Via, "SIP/2.0/UDP proxy;branch=z9hG4bKp");
        assert_eq!(m.headers.count(&HeaderName::Via), 2);
        m.headers.set(HeaderName::MaxForwards, "69");
        assert_eq!(&m.headers.get(&HeaderName::MaxForwards).unwrap()[..], b"69");
        m.set_body(Bytes::from_static(b"hello"), Some("text/plain"));
        let again = parse(m.to_bytes()).unwrap();
        assert_eq!(&again.body[..], b"hello");
        assert_eq!(again.headers.count(&HeaderName::Via), 2);
    }

    #[test]
    fn remove_first_value_of_a_list_line() {
        let mut m = parse(Bytes::from_static(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP c\r\n\r\n",
        ))
        .unwrap();
        let top = m.headers.remove_first_value(&HeaderName::Via).unwrap();
        assert_eq!(&top[..], b"SIP/2.0/UDP a;branch=z9hG4bK1");
        let rest: Vec<_> = m.headers.values(&HeaderName::Via).collect();
        assert_eq!(rest.len(), 2);
        assert_eq!(&rest[0][..], b"SIP/2.0/UDP b;branch=z9hG4bK2");
        m.headers.remove_first_value(&HeaderName::Via);
        m.headers.remove_first_value(&HeaderName::Via);
        assert_eq!(m.headers.count(&HeaderName::Via), 0);
        assert!(m.headers.remove_first_value(&HeaderName::Via).is_none());
    }
}
