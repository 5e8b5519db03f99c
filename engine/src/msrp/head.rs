//! The head of an MSRP request or response (RFC 4975 §7, §9): start line and header fields, and
//! the typed values a relay reads (Byte-Range, Failure-Report, Status, ...).

use std::fmt;

use bytes::Bytes;

use crate::sip::message::{memchr, trim, trim_slice};

/// Why input was not accepted, with the status to answer (RFC 4975 §7.4, §10) and whether the
/// stream can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The start line is not `MSRP SP transact-id SP method/status` (§9): the stream is lost.
    BadStartLine,
    /// The transaction id is not `ident` (4 to 32 of alphanum . - + % =, §9): the stream is lost.
    BadTransactionId,
    /// The start line alone is longer than the head limit: the stream is lost.
    StartLineTooLong,
    /// The header section is longer than the configured limit; the transaction is skipped.
    HeadTooLarge,
    /// A header line is not `name: value`.
    BadHeaderLine,
    /// A mandatory header field is missing (named).
    MissingHeader(&'static str),
    /// A header field value is malformed (named).
    BadHeader(&'static str),
    /// The body grew past the configured chunk limit; the rest of the chunk is skipped.
    ChunkTooLarge,
}

impl ParseError {
    /// The MSRP status code to answer a request with (RFC 4975 §7.4: 400 malformed, 413 too
    /// large).
    pub fn status(self) -> u16 {
        match self {
            ParseError::ChunkTooLarge => 413,
            _ => 400,
        }
    }

    /// True if the byte stream cannot be resynchronised: the connection must be closed.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ParseError::BadStartLine | ParseError::BadTransactionId | ParseError::StartLineTooLong
        )
    }

    /// A reason phrase for logs and for the response comment.
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::BadStartLine => "malformed start line",
            ParseError::BadTransactionId => "malformed transaction id",
            ParseError::StartLineTooLong => "start line too long",
            ParseError::HeadTooLarge => "header section too large",
            ParseError::BadHeaderLine => "malformed header line",
            ParseError::MissingHeader(_) => "missing header field",
            ParseError::BadHeader(_) => "malformed header field",
            ParseError::ChunkTooLarge => "chunk too large",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::MissingHeader(h) | ParseError::BadHeader(h) => {
                write!(f, "{}: {h}", self.reason())
            }
            _ => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for ParseError {}

/// An MSRP method (RFC 4975 §9, RFC 4976 for AUTH); methods are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// SEND: carries (a chunk of) a message (RFC 4975 §7.1.1).
    Send,
    /// REPORT: delivery status of a message (RFC 4975 §7.1.2).
    Report,
    /// AUTH: relay authentication (RFC 4976 §5.1).
    Auth,
    /// Any other method (answered 501 by endpoints, §7.3).
    Other(Bytes),
}

impl Method {
    /// The method from its wire form.
    pub fn from_bytes(v: &Bytes) -> Method {
        match &v[..] {
            b"SEND" => Method::Send,
            b"REPORT" => Method::Report,
            b"AUTH" => Method::Auth,
            _ => Method::Other(v.clone()),
        }
    }

    /// The wire form.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Method::Send => b"SEND",
            Method::Report => b"REPORT",
            Method::Auth => b"AUTH",
            Method::Other(m) => m,
        }
    }
}

/// What a start line says (RFC 4975 §9 `req-start` / `resp-start`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A request and its method.
    Request(Method),
    /// A response: status code and optional comment.
    Response {
        /// The three-digit status code.
        code: u16,
        /// The comment after the code, if any.
        comment: Option<Bytes>,
    },
}

/// The continuation flag of an end line (RFC 4975 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// `$`: the last chunk of the message.
    Complete,
    /// `+`: more chunks follow.
    Continues,
    /// `#`: the sender aborted the message.
    Aborted,
}

impl Flag {
    /// The flag of an end-line character.
    pub fn from_byte(c: u8) -> Option<Flag> {
        match c {
            b'$' => Some(Flag::Complete),
            b'+' => Some(Flag::Continues),
            b'#' => Some(Flag::Aborted),
            _ => None,
        }
    }

    /// The end-line character.
    pub fn as_byte(self) -> u8 {
        match self {
            Flag::Complete => b'$',
            Flag::Continues => b'+',
            Flag::Aborted => b'#',
        }
    }
}

/// A Byte-Range value `start-end/total` (RFC 4975 §7.1.1, §9); `*` is `None`. Byte positions
/// count from 1; `1-0/0` is an empty message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    /// The position of the chunk's first byte in the message (from 1).
    pub start: u64,
    /// The position of the chunk's last byte, `None` for `*` (interruptible chunk).
    pub end: Option<u64>,
    /// The size of the whole message, `None` for `*` (unknown).
    pub total: Option<u64>,
}

impl ByteRange {
    /// The range of a whole message of `len` bytes in one chunk (`1-len/len`).
    pub fn whole(len: u64) -> ByteRange {
        ByteRange {
            start: 1,
            end: Some(len),
            total: Some(len),
        }
    }

    /// Parses `start-end/total` (§9); the end is at least `start - 1` and within the total.
    pub fn parse(v: &[u8]) -> Option<ByteRange> {
        let dash = memchr(b'-', v)?;
        let slash = memchr(b'/', v)?;
        if slash < dash {
            return None;
        }
        let start = decimal(&v[..dash])?;
        let end = star_or_decimal(&v[dash + 1..slash])?;
        let total = star_or_decimal(&v[slash + 1..])?;
        if start == 0
            || end.is_some_and(|e| e + 1 < start)
            || matches!((end, total), (Some(e), Some(t)) if e > t)
        {
            return None;
        }
        Some(ByteRange { start, end, total })
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-", self.start)?;
        match self.end {
            Some(e) => write!(f, "{e}/")?,
            None => f.write_str("*/")?,
        }
        match self.total {
            Some(t) => write!(f, "{t}"),
            None => f.write_str("*"),
        }
    }
}

/// The Failure-Report value (RFC 4975 §7.1.1); `yes` is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureReport {
    /// Responses for every transaction and a REPORT on failure (the default).
    #[default]
    Yes,
    /// No 200 responses; failure responses and failure REPORTs only.
    Partial,
    /// No responses and no failure REPORTs at all.
    No,
}

/// The Status header field of a REPORT (RFC 4975 §9): `namespace SP code [SP reason]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The namespace, `000` for the codes of RFC 4975.
    pub namespace: u16,
    /// The status code (200 delivered, 4xx failure).
    pub code: u16,
    /// The reason text, if any.
    pub reason: Option<Bytes>,
}

impl Status {
    /// Parses `000 200 OK` (§9).
    pub fn parse(v: &Bytes) -> Option<Status> {
        let ns = v.get(..3).and_then(three_digits)?;
        if v.get(3) != Some(&b' ') {
            return None;
        }
        let code = v.get(4..7).and_then(three_digits)?;
        let reason = match v.get(7) {
            None => None,
            Some(b' ') => Some(trim(&v.slice(8..))).filter(|r| !r.is_empty()),
            Some(_) => return None,
        };
        Some(Status {
            namespace: ns,
            code,
            reason,
        })
    }
}

/// The head of a request or response: start line and header fields, every value a slice of the
/// received bytes (RFC 4975 §7, §9).
///
/// Paths are kept raw: a relay compares the first To-Path URI with [`super::uri::first_of_path`]
/// and replaces both paths without reading the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The transaction id of the start line (and of the end line).
    pub tid: Bytes,
    /// Request method or response status.
    pub kind: Kind,
    /// The To-Path value.
    pub to_path: Bytes,
    /// The From-Path value.
    pub from_path: Bytes,
    /// Message-ID (mandatory in SEND and REPORT).
    pub message_id: Option<Bytes>,
    /// Byte-Range, if present (absent means the whole message in one chunk, §7.1.1).
    pub byte_range: Option<ByteRange>,
    /// Success-Report (`yes` = true); absent means no.
    pub success_report: Option<bool>,
    /// Failure-Report; absent means yes.
    pub failure_report: Option<FailureReport>,
    /// Status (REPORT requests).
    pub status: Option<Status>,
    /// Content-Type (present when a body is).
    pub content_type: Option<Bytes>,
    /// Use-Path (RFC 4976, AUTH responses).
    pub use_path: Option<Bytes>,
    /// Every other header field (MIME headers, Expires, extensions), name and value, in order.
    pub other: Vec<(Bytes, Bytes)>,
    /// True if a body follows the head (an empty line ended the header section).
    pub has_body: bool,
}

impl Head {
    /// A head with only the start line and the paths; set the other fields as needed.
    pub fn new(tid: Bytes, kind: Kind, to_path: Bytes, from_path: Bytes) -> Head {
        Head {
            tid,
            kind,
            to_path,
            from_path,
            message_id: None,
            byte_range: None,
            success_report: None,
            failure_report: None,
            status: None,
            content_type: None,
            use_path: None,
            other: Vec::new(),
            has_body: false,
        }
    }

    /// True for a request.
    pub fn is_request(&self) -> bool {
        matches!(self.kind, Kind::Request(_))
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&Method> {
        match &self.kind {
            Kind::Request(m) => Some(m),
            Kind::Response { .. } => None,
        }
    }

    /// The status code of a response.
    pub fn code(&self) -> Option<u16> {
        match self.kind {
            Kind::Response { code, .. } => Some(code),
            Kind::Request(_) => None,
        }
    }

    /// The effective Failure-Report: REPORT requests are never answered (§7.1.2); otherwise the
    /// header field, default `yes` (§7.1.1).
    pub fn failure_report(&self) -> FailureReport {
        match self.method() {
            Some(Method::Report) => FailureReport::No,
            _ => self.failure_report.unwrap_or_default(),
        }
    }

    /// The effective Byte-Range: absent means `1-*/*` (§7.1.1).
    pub fn range(&self) -> ByteRange {
        self.byte_range.unwrap_or(ByteRange {
            start: 1,
            end: None,
            total: None,
        })
    }

    /// An extension header field by name (case-insensitive).
    pub fn other(&self, name: &str) -> Option<&Bytes> {
        self.other
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
}

/// Parses the start line `MSRP SP tid SP (method | code [SP comment])` (§9), without CRLF.
pub(crate) fn parse_start_line(line: &Bytes) -> Result<(Bytes, Kind), ParseError> {
    let rest = line
        .strip_prefix(b"MSRP ")
        .ok_or(ParseError::BadStartLine)?;
    let sp = memchr(b' ', rest).ok_or(ParseError::BadStartLine)?;
    let tid = line.slice(5..5 + sp);
    if !is_ident(&tid) {
        return Err(ParseError::BadTransactionId);
    }
    let after = 5 + sp + 1;
    let word_end = memchr(b' ', &line[after..]).map_or(line.len(), |p| after + p);
    let word = line.slice(after..word_end);
    if word.is_empty() {
        return Err(ParseError::BadStartLine);
    }
    let kind = if let Some(code) = three_digits(&word) {
        let comment = (word_end < line.len())
            .then(|| trim(&line.slice(word_end + 1..)))
            .filter(|c| !c.is_empty());
        if !(100..=999).contains(&code) {
            return Err(ParseError::BadStartLine);
        }
        Kind::Response { code, comment }
    } else {
        if word_end != line.len() || !word.iter().all(u8::is_ascii_uppercase) {
            return Err(ParseError::BadStartLine);
        }
        Kind::Request(Method::from_bytes(&word))
    };
    Ok((tid, kind))
}

/// `ident = ALPHANUM 3*31ident-char`, `ident-char = ALPHANUM / "." / "-" / "+" / "%" / "="`.
pub(crate) fn is_ident(v: &[u8]) -> bool {
    (4..=32).contains(&v.len())
        && v[0].is_ascii_alphanumeric()
        && v.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b".-+%=".contains(&c))
}

/// Builds the [`Head`] from the start line's parts and the header lines of `head` (each line
/// ending in CRLF or LF), starting at `lines_start`.
pub(crate) fn parse_headers(
    tid: Bytes,
    kind: Kind,
    head: &Bytes,
    lines_start: usize,
    has_body: bool,
) -> Result<Head, ParseError> {
    let mut h = Head::new(tid, kind, Bytes::new(), Bytes::new());
    h.has_body = has_body;
    let (mut to_seen, mut from_seen) = (false, false);
    let mut i = lines_start;
    while i < head.len() {
        let nl = memchr(b'\n', &head[i..]).map_or(head.len(), |p| i + p);
        let mut e = nl;
        if e > i && head[e - 1] == b'\r' {
            e -= 1;
        }
        let line = &head[i..e];
        let colon = memchr(b':', line).ok_or(ParseError::BadHeaderLine)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-') {
            return Err(ParseError::BadHeaderLine);
        }
        let value = trim_slice(head, i + colon + 1, e);
        match Field::of(name) {
            Some(Field::ToPath) => {
                h.to_path = value;
                to_seen = true;
            }
            Some(Field::FromPath) => {
                h.from_path = value;
                from_seen = true;
            }
            Some(Field::MessageId) => {
                if !is_ident(&value) {
                    return Err(ParseError::BadHeader("Message-ID"));
                }
                h.message_id = Some(value);
            }
            Some(Field::ByteRange) => {
                let r = ByteRange::parse(&value).ok_or(ParseError::BadHeader("Byte-Range"))?;
                h.byte_range = Some(r);
            }
            Some(Field::SuccessReport) => {
                h.success_report = Some(match &value[..] {
                    b"yes" => true,
                    b"no" => false,
                    _ => return Err(ParseError::BadHeader("Success-Report")),
                });
            }
            Some(Field::FailureReport) => {
                h.failure_report = Some(match &value[..] {
                    b"yes" => FailureReport::Yes,
                    b"partial" => FailureReport::Partial,
                    b"no" => FailureReport::No,
                    _ => return Err(ParseError::BadHeader("Failure-Report")),
                });
            }
            Some(Field::Status) => {
                h.status = Some(Status::parse(&value).ok_or(ParseError::BadHeader("Status"))?);
            }
            Some(Field::ContentType) => h.content_type = Some(value),
            Some(Field::UsePath) => h.use_path = Some(value),
            None => h.other.push((head.slice(i..i + colon), value)),
        }
        i = nl + 1;
    }
    if !to_seen || h.to_path.is_empty() {
        return Err(ParseError::MissingHeader("To-Path"));
    }
    if !from_seen || h.from_path.is_empty() {
        return Err(ParseError::MissingHeader("From-Path"));
    }
    match h.method() {
        Some(Method::Send) if h.message_id.is_none() => {
            return Err(ParseError::MissingHeader("Message-ID"))
        }
        Some(Method::Report) if h.message_id.is_none() => {
            return Err(ParseError::MissingHeader("Message-ID"))
        }
        Some(Method::Report) if h.status.is_none() => {
            return Err(ParseError::MissingHeader("Status"))
        }
        _ => {}
    }
    Ok(h)
}

/// The header fields [`Head`] has a place for (RFC 4975 §9, RFC 4976 §6 Use-Path).
#[derive(Clone, Copy)]
enum Field {
    ToPath,
    FromPath,
    MessageId,
    ByteRange,
    SuccessReport,
    FailureReport,
    Status,
    ContentType,
    UsePath,
}

impl Field {
    const NAMES: [(&'static [u8], Field); 9] = [
        (b"to-path", Field::ToPath),
        (b"from-path", Field::FromPath),
        (b"message-id", Field::MessageId),
        (b"byte-range", Field::ByteRange),
        (b"success-report", Field::SuccessReport),
        (b"failure-report", Field::FailureReport),
        (b"status", Field::Status),
        (b"content-type", Field::ContentType),
        (b"use-path", Field::UsePath),
    ];

    /// The field named `name`, in any case (header names are case-insensitive), without
    /// building a lower-case copy: this runs for every header line of every chunk.
    fn of(name: &[u8]) -> Option<Field> {
        Field::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, f)| f)
    }
}

fn three_digits(v: &[u8]) -> Option<u16> {
    if v.len() != 3 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u16, |a, &c| a * 10 + u16::from(c - b'0')))
}

fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |a, &c| a * 10 + u64::from(c - b'0')))
}

fn star_or_decimal(v: &[u8]) -> Option<Option<u64>> {
    if v == b"*" {
        Some(None)
    } else {
        decimal(v).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_range_parses_with_stars() {
        let r = |s: &str| ByteRange::parse(s.as_bytes());
        assert_eq!(
            r("1-25/300"),
            Some(ByteRange {
                start: 1,
                end: Some(25),
                total: Some(300)
            })
        );
        assert_eq!(
            r("26-*/*"),
            Some(ByteRange {
                start: 26,
                end: None,
                total: None
            })
        );
        assert_eq!(
            r("1-*/300"),
            Some(ByteRange {
                start: 1,
                end: None,
                total: Some(300)
            })
        );
        assert_eq!(r("1-0/0"), Some(ByteRange::whole(0)));
        for bad in [
            "0-5/5", "5-3/9", "1-10/5", "1-5", "1/5-6", "a-5/5", "1-5/x", "-5/5", "1--5/5",
        ] {
            assert_eq!(r(bad), None, "{bad}");
        }
        assert_eq!(r("1-25/300").unwrap().to_string(), "1-25/300");
        assert_eq!(r("26-*/*").unwrap().to_string(), "26-*/*");
    }

    #[test]
    fn header_names_in_any_case_and_values_trimmed() {
        let parse = |head: &'static [u8]| {
            let kind = Kind::Request(Method::Send);
            parse_headers(
                Bytes::from_static(b"abcd"),
                kind,
                &Bytes::from_static(head),
                16,
                true,
            )
        };
        let h = parse(
            b"MSRP abcd SEND\r\nTO-PATH:  msrp://a:1/x;tcp \r\nfrom-path:msrp://b:2/y;tcp\r\n\
              Message-id: \tm123\r\nBYTE-range: 1-3/3\r\nx-Other: v \r\n",
        )
        .unwrap();
        assert_eq!(&h.to_path[..], b"msrp://a:1/x;tcp");
        assert_eq!(&h.from_path[..], b"msrp://b:2/y;tcp");
        assert_eq!(h.message_id.as_deref(), Some(&b"m123"[..]));
        assert_eq!(h.byte_range, Some(ByteRange::whole(3)));
        assert_eq!(
            h.other,
            vec![(Bytes::from_static(b"x-Other"), Bytes::from_static(b"v"))]
        );
        // A name that only starts like a known one is another field.
        let h = parse(
            b"MSRP abcd SEND\r\nTo-Path:a\r\nFrom-Path:b\r\nTo-Paths: c\r\nMessage-ID: m123\r\n",
        )
        .unwrap();
        assert_eq!(&h.to_path[..], b"a");
        assert_eq!(
            h.other,
            vec![(Bytes::from_static(b"To-Paths"), Bytes::from_static(b"c"))]
        );
    }

    #[test]
    fn status_parses() {
        let s = Status::parse(&Bytes::from_static(b"000 408 timed out")).unwrap();
        assert_eq!((s.namespace, s.code), (0, 408));
        assert_eq!(s.reason.as_deref(), Some(&b"timed out"[..]));
        assert_eq!(
            Status::parse(&Bytes::from_static(b"000 200"))
                .unwrap()
                .reason,
            None
        );
        assert!(Status::parse(&Bytes::from_static(b"0 200")).is_none());
        assert!(Status::parse(&Bytes::from_static(b"000 20")).is_none());
        assert!(Status::parse(&Bytes::from_static(b"000 200x")).is_none());
    }

    #[test]
    fn start_lines() {
        let p = |s: &'static str| parse_start_line(&Bytes::from_static(s.as_bytes()));
        let (tid, kind) = p("MSRP a786hjs2 SEND").unwrap();
        assert_eq!(&tid[..], b"a786hjs2");
        assert_eq!(kind, Kind::Request(Method::Send));
        let (_, kind) = p("MSRP d93kswow 200 OK").unwrap();
        assert_eq!(
            kind,
            Kind::Response {
                code: 200,
                comment: Some(Bytes::from_static(b"OK"))
            }
        );
        assert_eq!(
            p("MSRP d93kswow 481").unwrap().1,
            Kind::Response {
                code: 481,
                comment: None
            }
        );
        assert_eq!(
            p("MSRP abcd NICKNAME").unwrap().1,
            Kind::Request(Method::Other("NICKNAME".into()))
        );
        assert_eq!(p("msrp a786hjs2 SEND"), Err(ParseError::BadStartLine));
        assert_eq!(p("MSRP a786hjs2 send"), Err(ParseError::BadStartLine));
        assert_eq!(p("MSRP a786hjs2 SEND extra"), Err(ParseError::BadStartLine));
        assert_eq!(p("MSRP a786hjs2 20 OK"), Err(ParseError::BadStartLine));
        assert_eq!(p("MSRP a786hjs2 099"), Err(ParseError::BadStartLine));
        assert_eq!(p("MSRP a786hjs2"), Err(ParseError::BadStartLine));
        assert_eq!(p("MSRP abc SEND"), Err(ParseError::BadTransactionId));
        assert_eq!(p("MSRP -abc1 SEND"), Err(ParseError::BadTransactionId));
        assert_eq!(p("MSRP a_bc1 SEND"), Err(ParseError::BadTransactionId));
        assert_eq!(p("MSRP  SEND"), Err(ParseError::BadTransactionId));
        assert!(ParseError::BadStartLine.is_fatal());
        assert!(!ParseError::ChunkTooLarge.is_fatal());
        assert_eq!(ParseError::ChunkTooLarge.status(), 413);
    }
}
