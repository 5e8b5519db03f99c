//! `message/cpim` (RFC 3862): the envelope pager-mode and MSRP instant messages travel in.
//!
//! A CPIM message is a block of message headers (RFC 3862 §3), a blank line, then an
//! encapsulated MIME object: its MIME headers (Content-Type, Content-ID, ...), a blank line and
//! the content. [`CpimMessage::parse`] keeps every value as a [`Bytes`] slice of the input (a
//! folded line, which RFC 3862 forbids but some clients send, is rebuilt into a new buffer) and
//! the content as a slice: nothing is copied. [`CpimBuilder`] writes one (the IMDNs the server
//! generates itself).
//!
//! Leniency, each a choice made for interworking with deployed RCS/CPM clients:
//! - bare LF line ends are accepted like CRLF;
//! - header names and NS prefixes match case-insensitively (RFC 3862 §3.1 says they are
//!   case-sensitive, but clients write `imdn.message-id` and `Content-type`);
//! - an NS declaration applies to the whole header block, wherever it stands in it (RFC 3862
//!   §3.4 puts it before use; some clients put it after);
//! - a From/To/cc value may be a bare URI without angle brackets.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::sip::message::{is_ws, memchr, parse_decimal, trim};

/// The namespace of the headers RFC 3862 defines (From, To, cc, DateTime, Subject, NS,
/// Require), used for unprefixed header names (RFC 3862 §3.4).
pub const CPIM_HEADERS_NS: &str = "urn:ietf:params:cpim-headers:";

/// The MIME type of a CPIM message (RFC 3862 §2).
pub const CPIM_CONTENT_TYPE: &str = "message/cpim";

/// Why a CPIM message was rejected (a peer's mistake; answer 400 or 415).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CpimError {
    /// The message headers are not closed by a blank line (RFC 3862 §2).
    MissingHeaderEnd,
    /// The encapsulated MIME headers are not closed by a blank line (RFC 3862 §2).
    MissingContentEnd,
    /// A header line has no name or no colon (RFC 3862 §3.1).
    MalformedHeader,
    /// A message header is not valid UTF-8 (RFC 3862 §3.2).
    NotUtf8,
    /// No From header (RFC 3862 §4.1: exactly one is required).
    MissingFrom,
    /// More than one From header (RFC 3862 §4.1).
    DuplicateFrom,
    /// No To header (RFC 3862 §4.2: at least one is required).
    MissingTo,
    /// A From, To or cc value is not `[Formal-name] <URI>` (RFC 3862 §4.1).
    MalformedAddress,
    /// An NS value is not `[prefix] <URI>` (RFC 3862 §4.6).
    MalformedNs,
    /// The encapsulated MIME object has no Content-Type (RFC 3862 §2, RFC 2045 §5).
    MissingContentType,
    /// The inner Content-Length is not a number.
    BadContentLength,
    /// The inner Content-Length is larger than the content present.
    Truncated,
}

impl CpimError {
    /// The reason phrase (for a log line or a 400 reason).
    pub fn reason(&self) -> &'static str {
        match self {
            CpimError::MissingHeaderEnd => "CPIM headers not terminated by a blank line",
            CpimError::MissingContentEnd => "CPIM content headers not terminated by a blank line",
            CpimError::MalformedHeader => "malformed CPIM header line",
            CpimError::NotUtf8 => "CPIM header is not UTF-8",
            CpimError::MissingFrom => "CPIM From header missing",
            CpimError::DuplicateFrom => "more than one CPIM From header",
            CpimError::MissingTo => "CPIM To header missing",
            CpimError::MalformedAddress => "malformed CPIM address",
            CpimError::MalformedNs => "malformed CPIM NS header",
            CpimError::MissingContentType => "CPIM content has no Content-Type",
            CpimError::BadContentLength => "bad CPIM content Content-Length",
            CpimError::Truncated => "CPIM content shorter than its Content-Length",
        }
    }
}

impl fmt::Display for CpimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for CpimError {}

/// A From, To or cc value: `[Formal-name] <URI>` (RFC 3862 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The formal name as written (quotes removed, escapes kept), if any.
    pub display: Option<Bytes>,
    /// The URI between the angle brackets.
    pub uri: Bytes,
}

impl NameAddr {
    /// Parses `[Formal-name] <URI>`, or a bare URI (leniency).
    pub fn parse(v: &Bytes) -> Result<NameAddr, CpimError> {
        let v = trim(v);
        // The '<' that opens the URI, after a quoted formal name if any ("a<b" <sip:x>).
        let name_end = if v.first() == Some(&b'"') {
            closing_quote(&v).ok_or(CpimError::MalformedAddress)? + 1
        } else {
            0
        };
        let Some(lt) = v
            .get(name_end..)
            .and_then(|rest| memchr(b'<', rest))
            .map(|i| i + name_end)
        else {
            // A bare URI: one token with a scheme.
            if v.is_empty() || v.iter().any(|&c| is_ws(c)) || memchr(b':', &v).is_none() {
                return Err(CpimError::MalformedAddress);
            }
            return Ok(NameAddr {
                display: None,
                uri: v,
            });
        };
        let gt =
            memchr(b'>', v.get(lt..).unwrap_or_default()).ok_or(CpimError::MalformedAddress)?;
        let uri = trim(&v.slice(lt + 1..lt + gt));
        if uri.is_empty()
            || v.get(lt + gt + 1..)
                .is_some_and(|rest| !rest.iter().all(|&c| is_ws(c)))
        {
            return Err(CpimError::MalformedAddress);
        }
        let name = trim(&v.slice(..lt));
        let display = if name.is_empty() {
            None
        } else if name.len() >= 2 && name.first() == Some(&b'"') && name.last() == Some(&b'"') {
            Some(name.slice(1..name.len() - 1))
        } else {
            Some(name)
        };
        Ok(NameAddr { display, uri })
    }

    /// The URI as text (CPIM headers are checked UTF-8 at parse).
    pub fn uri_str(&self) -> &str {
        std::str::from_utf8(&self.uri).unwrap_or_default()
    }

    /// The formal name as text, if any.
    pub fn display_str(&self) -> Option<&str> {
        self.display
            .as_deref()
            .and_then(|d| std::str::from_utf8(d).ok())
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.display_str() {
            write!(f, "\"{d}\" ")?;
        }
        write!(f, "<{}>", self.uri_str())
    }
}

/// The index of the quote closing the quoted string that starts `v` (backslash escapes skipped).
fn closing_quote(v: &[u8]) -> Option<usize> {
    let mut i = 1;
    while let Some(&c) = v.get(i) {
        match c {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// One CPIM message header (RFC 3862 §3.1), its prefix resolved to a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpimHeader {
    /// The name prefix before the `.` (e.g. `imdn`), if any.
    pub prefix: Option<Bytes>,
    /// The name without its prefix (e.g. `Message-ID`).
    pub name: Bytes,
    /// The namespace URI the prefix resolves to ([`CPIM_HEADERS_NS`] when unprefixed); `None`
    /// when the prefix was never declared by an NS header.
    pub ns: Option<Bytes>,
    /// The header parameters between the colon and the value (e.g. `;lang=fr`), RFC 3862 §3.1.
    pub params: Bytes,
    /// The value, trimmed.
    pub value: Bytes,
}

impl CpimHeader {
    /// The `lang` parameter (RFC 3862 §3.2), if any.
    pub fn lang(&self) -> Option<&str> {
        let p = std::str::from_utf8(&self.params).ok()?;
        p.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.trim().eq_ignore_ascii_case("lang").then(|| v.trim())
        })
    }

    /// The value as text (message headers are checked UTF-8 at parse).
    pub fn value_str(&self) -> &str {
        std::str::from_utf8(&self.value).unwrap_or_default()
    }

    fn is(&self, ns: &str, name: &str) -> bool {
        self.ns
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(ns.as_bytes()))
            && self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Whether a Content-Type value names `message/cpim` (parameters ignored, case-insensitive).
pub fn is_cpim(content_type: &[u8]) -> bool {
    let mime = content_type
        .split(|&c| c == b';')
        .next()
        .unwrap_or_default();
    mime.trim_ascii()
        .eq_ignore_ascii_case(CPIM_CONTENT_TYPE.as_bytes())
}

/// The CPIM envelope a SIP request carries (RFC 3862 over RFC 3428): `None` when its
/// Content-Type is not `message/cpim`, else the parsed body or why it does not parse.
pub fn of_sip(msg: &crate::sip::Message) -> Option<Result<CpimMessage, CpimError>> {
    let ct = msg.headers.get(&crate::sip::HeaderName::ContentType)?;
    is_cpim(ct).then(|| CpimMessage::parse(msg.body.clone()))
}

/// The content a store keeps of a body of type `content_type`: a CPIM message's inner type
/// and content (no copy), anything else as it is (`default` when the type is missing).
pub fn unwrap_content(content_type: Option<&[u8]>, body: Bytes, default: &str) -> (String, Bytes) {
    let outer = content_type
        .map(|c| String::from_utf8_lossy(c).trim().to_string())
        .unwrap_or_else(|| default.to_string());
    if is_cpim(outer.as_bytes()) {
        if let Ok(m) = CpimMessage::parse(body.clone()) {
            let inner = String::from_utf8_lossy(m.content_type()).trim().to_string();
            return (inner, m.body().clone());
        }
    }
    (outer, body)
}

/// A parsed `message/cpim` body (RFC 3862 §2): message headers, MIME headers, content.
#[derive(Debug, Clone)]
pub struct CpimMessage {
    headers: Vec<CpimHeader>,
    from: NameAddr,
    to: Vec<NameAddr>,
    cc: Vec<NameAddr>,
    content_headers: Vec<(Bytes, Bytes)>,
    body: Bytes,
}

impl CpimMessage {
    /// Parses a CPIM body. Values and content are slices of `buf`; never panics on input.
    pub fn parse(buf: Bytes) -> Result<CpimMessage, CpimError> {
        let (raw, pos) = header_block(&buf, 0).ok_or(CpimError::MissingHeaderEnd)?;
        let mut headers = Vec::with_capacity(raw.len());
        for (name, rest) in raw {
            if std::str::from_utf8(&name).is_err() || std::str::from_utf8(&rest).is_err() {
                return Err(CpimError::NotUtf8);
            }
            let (params, value) = split_params(&rest);
            let (prefix, name) = match memchr(b'.', &name) {
                Some(dot) => (Some(name.slice(..dot)), name.slice(dot + 1..)),
                None => (None, name),
            };
            if name.is_empty() || prefix.as_ref().is_some_and(Bytes::is_empty) {
                return Err(CpimError::MalformedHeader);
            }
            headers.push(CpimHeader {
                prefix,
                name,
                ns: None,
                params,
                value,
            });
        }
        resolve_namespaces(&mut headers)?;

        let mut from = None;
        let mut to = Vec::new();
        let mut cc = Vec::new();
        for h in headers.iter().filter(|h| h.prefix.is_none()) {
            if h.name.eq_ignore_ascii_case(b"From") {
                if from.replace(NameAddr::parse(&h.value)?).is_some() {
                    return Err(CpimError::DuplicateFrom);
                }
            } else if h.name.eq_ignore_ascii_case(b"To") {
                to.push(NameAddr::parse(&h.value)?);
            } else if h.name.eq_ignore_ascii_case(b"cc") {
                cc.push(NameAddr::parse(&h.value)?);
            }
        }
        let from = from.ok_or(CpimError::MissingFrom)?;
        if to.is_empty() {
            return Err(CpimError::MissingTo);
        }

        let (content, body_start) = header_block(&buf, pos).ok_or(CpimError::MissingContentEnd)?;
        let content_headers: Vec<(Bytes, Bytes)> =
            content.into_iter().map(|(n, v)| (n, trim(&v))).collect();
        let find = |name: &str| {
            content_headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| v)
        };
        if find("Content-Type").is_none_or(Bytes::is_empty) {
            return Err(CpimError::MissingContentType);
        }
        let mut body = buf.slice(body_start.min(buf.len())..);
        if let Some(cl) = find("Content-Length") {
            let n = parse_decimal(cl).ok_or(CpimError::BadContentLength)?;
            if n > body.len() {
                return Err(CpimError::Truncated);
            }
            body.truncate(n);
        }
        Ok(CpimMessage {
            headers,
            from,
            to,
            cc,
            content_headers,
            body,
        })
    }

    /// Every message header, in order.
    pub fn headers(&self) -> &[CpimHeader] {
        &self.headers
    }

    /// The sender (RFC 3862 §4.1).
    pub fn from(&self) -> &NameAddr {
        &self.from
    }

    /// The recipients (RFC 3862 §4.2), at least one.
    pub fn to(&self) -> &[NameAddr] {
        &self.to
    }

    /// The courtesy recipients (RFC 3862 §4.3).
    pub fn cc(&self) -> &[NameAddr] {
        &self.cc
    }

    /// The DateTime value (RFC 3862 §4.4, RFC 3339 text), if present.
    pub fn datetime(&self) -> Option<&str> {
        self.header(CPIM_HEADERS_NS, "DateTime")
    }

    /// The Subject values with their `lang` (RFC 3862 §4.5).
    pub fn subjects(&self) -> impl Iterator<Item = (Option<&str>, &str)> + '_ {
        self.headers_ns(CPIM_HEADERS_NS, "Subject")
            .map(|h| (h.lang(), h.value_str()))
    }

    /// The header names listed in Require (RFC 3862 §4.7), each as written (`prefix.Name`).
    pub fn require(&self) -> impl Iterator<Item = &str> + '_ {
        self.headers_ns(CPIM_HEADERS_NS, "Require")
            .flat_map(|h| h.value_str().split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The first value of header `name` in namespace `ns` (e.g. `urn:ietf:params:imdn`,
    /// `Message-ID`), whatever prefix the sender chose.
    pub fn header(&self, ns: &str, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.is(ns, name))
            .map(CpimHeader::value_str)
    }

    /// Every header `name` in namespace `ns`, in order.
    pub fn headers_ns<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a CpimHeader> + 'a {
        self.headers.iter().filter(move |h| h.is(ns, name))
    }

    /// The first value of header `name` in namespace `ns` (the brief's name for [`Self::header`]).
    pub fn header_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.header(ns, name)
    }

    /// The encapsulated MIME headers, in order (names as written, values trimmed).
    pub fn content_headers(&self) -> &[(Bytes, Bytes)] {
        &self.content_headers
    }

    /// The first encapsulated MIME header `name` (case-insensitive, RFC 2045).
    pub fn content_header(&self, name: &str) -> Option<&Bytes> {
        self.content_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The inner Content-Type, parameters included (present: parse checks it).
    pub fn content_type(&self) -> &Bytes {
        static EMPTY: Bytes = Bytes::from_static(b"");
        self.content_header("Content-Type").unwrap_or(&EMPTY)
    }

    /// Whether the inner media type (parameters ignored) is `mime` (case-insensitive).
    pub fn content_type_is(&self, mime: &str) -> bool {
        let ct = self.content_type();
        let end = memchr(b';', ct).unwrap_or(ct.len());
        trim(&ct.slice(..end)).eq_ignore_ascii_case(mime.as_bytes())
    }

    /// The content, a slice of the parsed buffer (cut to the inner Content-Length if any).
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// Reads a header block starting at `pos`: (name, raw value after the colon) per header and the
/// offset after the blank line. `None` if no blank line ends it; a line without a colon or with
/// an empty name gives one empty-named entry, which callers reject.
fn header_block(buf: &Bytes, mut pos: usize) -> Option<(Vec<(Bytes, Bytes)>, usize)> {
    // (name, value start, value end, folded)
    let mut out: Vec<(Bytes, usize, usize, bool)> = Vec::new();
    loop {
        let rest = buf.get(pos..)?;
        let nl = memchr(b'\n', rest)?;
        let mut end = pos + nl;
        if end > pos && buf.get(end - 1) == Some(&b'\r') {
            end -= 1;
        }
        let next = pos + nl + 1;
        if end == pos {
            let headers = out
                .into_iter()
                .map(|(n, s, e, folded)| (n, value_of(buf, s, e, folded)))
                .collect();
            return Some((headers, next));
        }
        let first = buf.get(pos).copied().unwrap_or(b'\n');
        match out.last_mut() {
            Some(last) if is_ws(first) => {
                last.2 = end;
                last.3 = true;
            }
            _ => {
                let line = buf.slice(pos..end);
                let (name, s) = match memchr(b':', &line) {
                    Some(c) if c > 0 && !line.slice(..c).iter().any(|&b| is_ws(b)) => {
                        (line.slice(..c), pos + c + 1)
                    }
                    _ => (Bytes::new(), end),
                };
                out.push((name, s, end, false));
            }
        }
        pos = next;
    }
}

/// A header value from its bounds; a folded one is rebuilt with each line break + indent
/// replaced by one SP (a copy, only for folded lines).
fn value_of(buf: &Bytes, s: usize, e: usize, folded: bool) -> Bytes {
    let Some(raw) = buf.get(s..e) else {
        return Bytes::new();
    };
    if !folded {
        return buf.slice(s..e);
    }
    let mut out = BytesMut::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        if c == b'\r' || c == b'\n' {
            while raw
                .get(i)
                .is_some_and(|&c| c == b'\r' || c == b'\n' || is_ws(c))
            {
                i += 1;
            }
            out.put_u8(b' ');
            continue;
        }
        out.put_u8(c);
        i += 1;
    }
    out.freeze()
}

/// Splits the raw text after a CPIM header's colon into (parameters, value): `;lang=fr text`
/// gives (`;lang=fr`, `text`) per RFC 3862 §3.1 `Header-name ":" *(";" Parameter) SP Value`.
fn split_params(rest: &Bytes) -> (Bytes, Bytes) {
    if rest.first() == Some(&b';') {
        let end = rest.iter().position(|&c| is_ws(c)).unwrap_or(rest.len());
        return (rest.slice(..end), trim(&rest.slice(end..)));
    }
    (Bytes::new(), trim(rest))
}

/// Resolves every header's prefix through the NS declarations (RFC 3862 §3.4, §4.6).
fn resolve_namespaces(headers: &mut [CpimHeader]) -> Result<(), CpimError> {
    let mut decls: Vec<(Option<Bytes>, Bytes)> = Vec::new();
    for h in headers.iter() {
        if h.prefix.is_none() && h.name.eq_ignore_ascii_case(b"NS") {
            decls.push(parse_ns(&h.value)?);
        }
    }
    let default = decls
        .iter()
        .find(|(p, _)| p.is_none())
        .map(|(_, u)| u.clone())
        .unwrap_or_else(|| Bytes::from_static(CPIM_HEADERS_NS.as_bytes()));
    for h in headers.iter_mut() {
        h.ns = match &h.prefix {
            // The RFC 3862 headers themselves always live in the CPIM namespace.
            None if is_core(&h.name) => Some(Bytes::from_static(CPIM_HEADERS_NS.as_bytes())),
            None => Some(default.clone()),
            Some(p) => decls
                .iter()
                .find(|(dp, _)| dp.as_ref().is_some_and(|dp| dp.eq_ignore_ascii_case(p)))
                .map(|(_, u)| u.clone()),
        };
    }
    Ok(())
}

fn is_core(name: &[u8]) -> bool {
    ["From", "To", "cc", "DateTime", "Subject", "NS", "Require"]
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c.as_bytes()))
}

/// `NS: [prefix] <URI>` (RFC 3862 §4.6).
fn parse_ns(v: &Bytes) -> Result<(Option<Bytes>, Bytes), CpimError> {
    let lt = memchr(b'<', v).ok_or(CpimError::MalformedNs)?;
    let gt = memchr(b'>', v).ok_or(CpimError::MalformedNs)?;
    if gt < lt || gt + 1 != v.len() {
        return Err(CpimError::MalformedNs);
    }
    let uri = trim(&v.slice(lt + 1..gt));
    let prefix = trim(&v.slice(..lt));
    if uri.is_empty() || prefix.iter().any(|&c| is_ws(c) || c == b'.') {
        return Err(CpimError::MalformedNs);
    }
    Ok(((!prefix.is_empty()).then_some(prefix), uri))
}

/// Writes a CPIM message (RFC 3862 §2), e.g. the IMDNs the server generates (RFC 5438 §7.1).
///
/// Values are written as given, except that CR and LF are replaced by SP so that no value can
/// inject a header line.
#[derive(Debug, Clone, Default)]
pub struct CpimBuilder {
    head: BytesMut,
    content: BytesMut,
}

impl CpimBuilder {
    /// A message from `from` to `to`, both written as `<URI>`.
    pub fn new(from_uri: &str, to_uri: &str) -> CpimBuilder {
        let mut b = CpimBuilder::default();
        b.raw_header("From", &format!("<{from_uri}>"));
        b.raw_header("To", &format!("<{to_uri}>"));
        b
    }

    /// Adds a message header `name` (with its prefix, e.g. `imdn.Message-ID`).
    pub fn header(mut self, name: &str, value: &str) -> CpimBuilder {
        self.raw_header(name, value);
        self
    }

    /// Adds `NS: prefix <urn>` (RFC 3862 §4.6).
    pub fn ns(self, prefix: &str, urn: &str) -> CpimBuilder {
        self.header("NS", &format!("{prefix} <{urn}>"))
    }

    /// Adds an encapsulated MIME header (Content-Disposition, Content-ID, ...).
    pub fn content_header(mut self, name: &str, value: &str) -> CpimBuilder {
        put_line(&mut self.content, name, value);
        self
    }

    /// Finishes with the content and its type; writes the inner Content-Length.
    pub fn build(self, content_type: &str, body: &[u8]) -> Bytes {
        let mut out =
            BytesMut::with_capacity(self.head.len() + self.content.len() + body.len() + 64);
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"\r\n");
        put_line(&mut out, "Content-Type", content_type);
        out.extend_from_slice(&self.content);
        put_line(&mut out, "Content-Length", &body.len().to_string());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out.freeze()
    }

    fn raw_header(&mut self, name: &str, value: &str) {
        put_line(&mut self.head, name, value);
    }
}

fn put_line(out: &mut BytesMut, name: &str, value: &str) {
    let clean = |s: &str, out: &mut BytesMut| {
        for &c in s.as_bytes() {
            out.put_u8(if c == b'\r' || c == b'\n' { b' ' } else { c });
        }
    };
    clean(name, out);
    out.extend_from_slice(b": ");
    clean(value, out);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
