//! Is a parsed message acceptable? (RFC 3261 §8.2.1-§8.2.3, §16.3, §18.3; expected outcomes of
//! RFC 4475 §3.)
//!
//! [`crate::sip::parse`] only splits a message; this module decides whether the server may
//! process it, and if not, which status to answer with and a reason phrase naming the
//! problem. The checks stop at the first failure, in this order: SIP version (505),
//! Request-URI syntax (400) and scheme (416), mandatory headers present and single (400), each
//! header the server relies on well-formed (400), CSeq method (400), body framing (400).
//!
//! Decisions, each allowed by RFC 4475:
//! - Max-Forwards may be absent (RFC 2543 senders, RFC 4475 §3.4.1); Max-Forwards 0 → 483 is
//!   the server's call, made where it knows whether it forwards.
//! - Extra whitespace in the Request-Line (§3.1.2.9, §3.1.2.10), spaces inside `<...>`
//!   (§3.1.2.14) and headers in the Request-URI (§3.1.2.11) are rejected, not repaired.
//! - Headers the server does not read (Date, §3.1.2.12) are not checked.
//! - A branch that is only the magic cookie (§3.2.1) is accepted; the transaction layer then
//!   matches the request the RFC 2543 way ([`crate::sip::hdr::Via::is_rfc3261_branch`]).
//! - A response with a Via naming the broadcast address 255.255.255.255 is dropped (§3.3.10).

use std::fmt;

use bytes::Bytes;

use super::hdr::HeaderError;
use super::message::{content_length, parse_head, trim, ParseError};
use super::uri::Uri;
use super::{HeaderName, Message, Method, StartLine};

/// Why a message is refused: the status to answer a request with, and a reason phrase.
/// For a response the status is informational: a bad response is dropped, never answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The status code (400, 416, 505, ...).
    pub status: u16,
    /// A reason phrase naming the problem, e.g. "Missing Call-ID Header".
    pub reason: String,
}

impl Rejection {
    /// A rejection with this status and reason.
    pub fn new(status: u16, reason: impl Into<String>) -> Rejection {
        Rejection {
            status,
            reason: reason.into(),
        }
    }

    fn bad_request(reason: impl Into<String>) -> Rejection {
        Rejection::new(400, reason)
    }
}

impl From<HeaderError> for Rejection {
    fn from(e: HeaderError) -> Rejection {
        Rejection::bad_request(e.reason())
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for Rejection {}

/// Headers a message may carry at most once (RFC 3261 §7.3.1: only list headers repeat).
const SINGLE: [(HeaderName, &str); 7] = [
    (HeaderName::To, "To"),
    (HeaderName::From, "From"),
    (HeaderName::CallId, "Call-ID"),
    (HeaderName::CSeq, "CSeq"),
    (HeaderName::MaxForwards, "Max-Forwards"),
    (HeaderName::ContentLength, "Content-Length"),
    (HeaderName::ContentType, "Content-Type"),
];

/// Headers every request and response carries (RFC 3261 §8.1.1; Max-Forwards excepted).
const MANDATORY: [(HeaderName, &str); 5] = [
    (HeaderName::To, "To"),
    (HeaderName::From, "From"),
    (HeaderName::CallId, "Call-ID"),
    (HeaderName::CSeq, "CSeq"),
    (HeaderName::Via, "Via"),
];

/// Checks a request before the server processes it (RFC 3261 §8.2.1-§8.2.3, §16.3 step 1).
pub fn validate_request(m: &Message) -> Result<(), Rejection> {
    let StartLine::Request {
        method,
        uri,
        version,
    } = &m.start
    else {
        return Err(Rejection::bad_request("Not a Request"));
    };
    if !version.eq_ignore_ascii_case(b"SIP/2.0") {
        return Err(if trim(version).eq_ignore_ascii_case(b"SIP/2.0") {
            Rejection::bad_request("Malformed Request-Line")
        } else {
            Rejection::new(505, "Version Not Supported")
        });
    }
    check_request_uri(uri)?;
    check_common_headers(m)?;
    let cseq = m.cseq()?;
    if &cseq.method != method {
        return Err(Rejection::bad_request("CSeq Method Mismatch"));
    }
    m.max_forwards()?;
    m.contacts()?;
    m.routes()?;
    m.record_routes()?;
    let content_type = m.content_type()?;
    check_body(m, content_type.is_some())
}

/// Checks a response before the transaction layer sees it; an `Err` means drop it (RFC 3261
/// §18.1.2: a response with a bad Via, CSeq, Call-ID, From or To cannot be matched).
pub fn validate_response(m: &Message) -> Result<(), Rejection> {
    let StartLine::Response { version, .. } = &m.start else {
        return Err(Rejection::bad_request("Not a Response"));
    };
    if !version.eq_ignore_ascii_case(b"SIP/2.0") {
        return Err(Rejection::new(505, "Version Not Supported"));
    }
    check_common_headers(m)?;
    m.cseq()?;
    // RFC 4475 §3.3.10: following a Via towards the limited broadcast address would make the
    // server an amplifier; such a response is dropped.
    let broadcast = |v: &[u8]| v == b"255.255.255.255";
    for via in m.vias()? {
        if broadcast(&via.host) || via.received().is_some_and(|r| broadcast(r)) {
            return Err(Rejection::bad_request("Broadcast Via"));
        }
    }
    Ok(())
}

/// For a message that [`crate::sip::parse`] refused: if it is a request whose start line and
/// headers still parse and only its body cannot be delimited (RFC 3261 §18.3: Content-Length
/// larger than the datagram, negative, or conflicting, RFC 4475 §3.1.2.2, §3.1.2.3, §3.3.9),
/// the head to build the 400 from and the rejection. `None`: drop the bytes.
pub fn reject_unparsable(buf: &Bytes, err: ParseError) -> Option<(Message, Rejection)> {
    if !matches!(
        err,
        ParseError::BadContentLength | ParseError::ContentLengthExceedsMessage
    ) {
        return None;
    }
    let head = parse_head(buf.clone()).ok()?;
    if !head.is_request() {
        return None;
    }
    Some((head, Rejection::bad_request(err.reason())))
}

/// The Require option tags the server does not support, for a 420 with Unsupported (RFC 3261
/// §8.2.2.3). Empty for CANCEL and ACK, where Require must be ignored.
pub fn unsupported_requires(m: &Message, supported: &[&str]) -> Vec<String> {
    if matches!(m.method(), Some(Method::Cancel | Method::Ack)) {
        return Vec::new();
    }
    unsupported(m, HeaderName::Require, supported)
}

/// The Proxy-Require option tags not supported, for a proxy's 420 (RFC 3261 §16.3 step 5).
/// Empty for CANCEL and ACK.
pub fn unsupported_proxy_requires(m: &Message, supported: &[&str]) -> Vec<String> {
    if matches!(m.method(), Some(Method::Cancel | Method::Ack)) {
        return Vec::new();
    }
    unsupported(m, HeaderName::ProxyRequire, supported)
}

fn unsupported(m: &Message, name: HeaderName, supported: &[&str]) -> Vec<String> {
    m.headers
        .values(&name)
        .filter(|tag| {
            !supported
                .iter()
                .any(|s| tag.eq_ignore_ascii_case(s.as_bytes()))
        })
        .map(|tag| String::from_utf8_lossy(&tag).into_owned())
        .collect()
}

/// Request-URI syntax (400) and scheme (416, RFC 3261 §8.2.2.1). Headers are not allowed in a
/// Request-URI (RFC 3261 §19.1.1 table 1).
fn check_request_uri(raw: &Bytes) -> Result<(), Rejection> {
    const BAD: &str = "Malformed Request-URI";
    match Uri::parse(raw) {
        Ok(Uri::Sip(u)) if u.headers.is_some() => Err(Rejection::bad_request(BAD)),
        Ok(Uri::Sip(_) | Uri::Tel(_)) => Ok(()),
        Ok(Uri::Other(_)) => Err(Rejection::new(416, "Unsupported URI Scheme")),
        Err(_) => Err(Rejection::bad_request(BAD)),
    }
}

/// Presence and count of the mandatory and single-valued headers, then the syntax of To,
/// From, Call-ID and every Via.
fn check_common_headers(m: &Message) -> Result<(), Rejection> {
    for (name, label) in &MANDATORY {
        if m.headers.get(name).is_none() {
            return Err(HeaderError::Missing(label).into());
        }
    }
    for (name, label) in &SINGLE {
        if m.headers.count(name) > 1 {
            return Err(Rejection::bad_request(format!("Multiple {label} Headers")));
        }
    }
    m.to()?;
    m.from()?;
    if !m.call_id().is_some_and(|c| is_call_id(c)) {
        return Err(HeaderError::Malformed("Call-ID").into());
    }
    // An empty `Via:` line holds no value at all (found by fuzzing): as malformed as a bad one.
    if m.vias()?.is_empty() {
        return Err(HeaderError::Malformed("Via").into());
    }
    Ok(())
}

/// A non-empty body needs a Content-Type (RFC 3261 §7.4.1), and a Content-Length that
/// matches it (§18.3; [`crate::sip::parse`] cuts the body to it, so a mismatch means the
/// message was built wrongly). Stray line ends after the header section of a datagram
/// without Content-Length do not count as a body.
fn check_body(m: &Message, has_content_type: bool) -> Result<(), Rejection> {
    let blank = m.body.iter().all(|&c| c == b'\r' || c == b'\n');
    if !blank && !has_content_type {
        return Err(HeaderError::Missing("Content-Type").into());
    }
    match content_length(&m.headers) {
        Ok(Some(n)) if n != m.body.len() => Err(Rejection::bad_request("Content-Length Mismatch")),
        Ok(_) => Ok(()),
        Err(e) => Err(Rejection::bad_request(e.reason())),
    }
}

/// `callid = word [ "@" word ]` (RFC 3261 §25.1).
fn is_call_id(v: &[u8]) -> bool {
    fn is_word(w: &[u8]) -> bool {
        !w.is_empty()
            && w.iter()
                .all(|&c| c.is_ascii_alphanumeric() || b"-.!%*_+`'~()<>:\\\"/[]?{}".contains(&c))
    }
    match v.iter().position(|&c| c == b'@') {
        Some(at) => is_word(&v[..at]) && is_word(&v[at + 1..]),
        None => is_word(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;

    const OPTIONS: &str = "OPTIONS sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\r\n\
Max-Forwards: 70\r\n\
To: <sip:bob@example.com>\r\n\
From: <sip:alice@example.com>;tag=1\r\n\
Call-ID: abc@host\r\n\
CSeq: 1 OPTIONS\r\n\
Content-Length: 0\r\n\r\n";

    fn check(raw: &str) -> Result<(), Rejection> {
        validate_request(&parse(Bytes::from(raw.to_owned())).unwrap())
    }

    fn edit(from: &str, to: &str) -> String {
        assert!(OPTIONS.contains(from), "{from}");
        OPTIONS.replacen(from, to, 1)
    }

    fn rejected(raw: &str) -> (u16, String) {
        let r = check(raw).unwrap_err();
        (r.status, r.reason)
    }

    #[test]
    fn accepts_a_plain_request() {
        assert_eq!(check(OPTIONS), Ok(()));
        // Max-Forwards is optional (RFC 2543 senders).
        assert_eq!(check(&edit("Max-Forwards: 70\r\n", "")), Ok(()));
        assert_eq!(
            check(&edit("sip:bob@example.com SIP", "tel:+12015550123 SIP")),
            Ok(())
        );
        assert_eq!(check(&edit("Max-Forwards: 70", "Max-Forwards: 0")), Ok(()));
    }

    /// Regression input from the `sip_parse` fuzz target: an empty Via line.
    #[test]
    fn empty_via_is_malformed() {
        let raw = edit(
            "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\r\n",
            "Via:\r\n",
        );
        assert_eq!(rejected(&raw), (400, "Malformed Via Header".into()));
        let raw = edit(
            "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\r\n",
            "Via: , \r\n",
        );
        assert_eq!(rejected(&raw), (400, "Malformed Via Header".into()));
    }

    #[test]
    fn version_and_request_uri() {
        assert_eq!(
            rejected(&edit("SIP/2.0\r\n", "SIP/7.0\r\n")),
            (505, "Version Not Supported".into())
        );
        assert_eq!(
            rejected(&edit("SIP/2.0\r\n", "SIP/2.0  \r\n")),
            (400, "Malformed Request-Line".into())
        );
        for bad in [
            "<sip:bob@example.com>",
            "sip:bob@example.com; lr",
            " sip:bob@example.com",
            "sip:bob@example.com?Route=%3Csip:x%3E",
            "sip:bob@ex%mple.com",
        ] {
            assert_eq!(
                rejected(&edit("sip:bob@example.com SIP", &format!("{bad} SIP"))),
                (400, "Malformed Request-URI".into()),
                "{bad}"
            );
        }
        assert_eq!(
            rejected(&edit(
                "sip:bob@example.com SIP",
                "nobodyKnowsThisScheme:x SIP"
            )),
            (416, "Unsupported URI Scheme".into())
        );
    }

    #[test]
    fn mandatory_and_single_headers() {
        assert_eq!(
            rejected(&edit("Call-ID: abc@host\r\n", "")).1,
            "Missing Call-ID Header"
        );
        assert_eq!(
            rejected(&edit("To: <sip:bob@example.com>\r\n", "")).1,
            "Missing To Header"
        );
        assert_eq!(
            rejected(&edit(
                "Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw\r\n",
                ""
            ))
            .1,
            "Missing Via Header"
        );
        assert_eq!(
            rejected(&edit(
                "CSeq: 1 OPTIONS\r\n",
                "CSeq: 1 OPTIONS\r\nCSeq: 2 OPTIONS\r\n"
            ))
            .1,
            "Multiple CSeq Headers"
        );
        assert_eq!(
            rejected(&edit("Call-ID: abc@host", "Call-ID: a b")).1,
            "Malformed Call-ID Header"
        );
        assert_eq!(
            rejected(&edit("Call-ID: abc@host", "Call-ID: a@b@c")).1,
            "Malformed Call-ID Header"
        );
        assert_eq!(
            rejected(&edit("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")),
            (400, "CSeq Method Mismatch".into())
        );
        assert_eq!(
            rejected(&edit("CSeq: 1 OPTIONS", "CSeq: 99999999999 OPTIONS")).1,
            "Malformed CSeq Header"
        );
        assert_eq!(
            rejected(&edit("Max-Forwards: 70", "Max-Forwards: 300")).1,
            "Malformed Max-Forwards Header"
        );
        assert_eq!(
            rejected(&edit(
                "From: <sip:alice@example.com>;tag=1",
                "From: Alice, A <sip:alice@example.com>"
            ))
            .1,
            "Malformed From Header"
        );
        assert_eq!(
            rejected(&edit(";branch=z9hG4bKkdjuw", ";;,;,,")).1,
            "Malformed Via Header"
        );
        assert_eq!(
            rejected(&edit(
                "Content-Length: 0\r\n",
                "Contact: \"Joe\" <sip:joe@example.org>;;;;\r\nContent-Length: 0\r\n"
            ))
            .1,
            "Malformed Contact Header"
        );
    }

    #[test]
    fn body_rules() {
        let with_body = edit("Content-Length: 0\r\n\r\n", "Content-Length: 4\r\n\r\nabcd");
        assert_eq!(rejected(&with_body).1, "Missing Content-Type Header");
        let stray_crlf = edit("Content-Length: 0\r\n\r\n", "\r\n\r\n");
        assert_eq!(check(&stray_crlf), Ok(()));
        let typed = with_body.replace(
            "Content-Length: 4",
            "Content-Type: text/plain\r\nContent-Length: 4",
        );
        assert_eq!(check(&typed), Ok(()));
        let mut m = parse(Bytes::from(typed)).unwrap();
        m.body = Bytes::from_static(b"ab");
        assert_eq!(
            validate_request(&m).unwrap_err().reason,
            "Content-Length Mismatch"
        );
    }

    #[test]
    fn responses() {
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>;tag=2\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
        let v = |s: &str| validate_response(&parse(Bytes::from(s.to_owned())).unwrap());
        assert_eq!(v(ok), Ok(()));
        assert!(v(&ok.replace("CSeq: 1 INVITE", "CSeq: 9292394834772304023312 OPTIONS")).is_err());
        assert!(v(&ok.replace("Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n", "")).is_err());
        assert!(v(&ok.replace("SIP/2.0 200", "SIP/3.0 200")).is_err());
        let bcast = ok.replace(
            "Via: SIP/2.0/UDP h;",
            "Via: SIP/2.0/UDP h;branch=z9hG4bK0\r\nVia: SIP/2.0/UDP 255.255.255.255;",
        );
        assert_eq!(v(&bcast).unwrap_err().reason, "Broadcast Via");
        assert!(validate_response(&parse(Bytes::from(OPTIONS)).unwrap()).is_err());
        assert!(validate_request(&parse(Bytes::from(ok)).unwrap()).is_err());
    }

    #[test]
    fn unparsable_requests_get_a_400() {
        let raw = Bytes::from(edit("Content-Length: 0", "Content-Length: 9999"));
        let err = parse(raw.clone()).unwrap_err();
        let (head, rej) = reject_unparsable(&raw, err).unwrap();
        assert_eq!(rej.status, 400);
        assert_eq!(head.call_id().unwrap(), &Bytes::from_static(b"abc@host"));
        let resp = Bytes::from_static(b"SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\n");
        assert!(reject_unparsable(&resp, parse(resp.clone()).unwrap_err()).is_none());
        let junk = Bytes::from_static(b"junk");
        assert!(reject_unparsable(&junk, ParseError::BadStartLine).is_none());
    }

    #[test]
    fn unsupported_option_tags() {
        let m = parse(Bytes::from(edit(
            "Content-Length: 0",
            "Require: 100rel, Foo\r\nProxy-Require: bar\r\nContent-Length: 0",
        )))
        .unwrap();
        assert_eq!(
            unsupported_requires(&m, &["100rel", "timer"]),
            vec!["Foo".to_owned()]
        );
        assert!(unsupported_requires(&m, &["100REL", "foo"]).is_empty());
        assert_eq!(unsupported_proxy_requires(&m, &[]), vec!["bar".to_owned()]);
        let cancel = parse(Bytes::from(
            edit("Content-Length: 0", "Require: foo\r\nContent-Length: 0")
                .replace("OPTIONS sip", "CANCEL sip")
                .replace("1 OPTIONS", "1 CANCEL"),
        ))
        .unwrap();
        assert!(unsupported_requires(&cancel, &[]).is_empty());
    }
}
