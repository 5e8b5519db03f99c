//! SIP on the wire, as a test peer writes and reads it: requests built as text (so a test can
//! also write them wrong on purpose), responses built from a received request (RFC 3261 §8.2.6),
//! and stream framing by Content-Length (RFC 3261 §18.3).

use bytes::{Buf, Bytes, BytesMut};
use cpm_engine::sip::{HeaderName, Message};

/// A request under construction: request line, header lines in order, body.
///
/// Content-Length is added when the request is serialized unless a test set one itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    /// The method token.
    pub method: String,
    /// The Request-URI.
    pub uri: String,
    /// Header lines `(name, value)` in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Req {
    /// A request line with no headers.
    pub fn new(method: &str, uri: &str) -> Req {
        Req {
            method: method.into(),
            uri: uri.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Appends a header line.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces every line named `name` (case-insensitive) by one line, kept at the first one's
    /// position, or appends it.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Req {
        let value = value.into();
        match self
            .headers
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(pos) => {
                self.headers[pos].1 = value;
                let mut i = 0;
                self.headers.retain(|(n, _)| {
                    let keep = i == pos || !n.eq_ignore_ascii_case(name);
                    i += 1;
                    keep
                });
            }
            None => self.headers.push((name.into(), value)),
        }
        self
    }

    /// Removes every line named `name` (case-insensitive).
    pub fn remove(mut self, name: &str) -> Req {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// The value of the first line named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets the body and its Content-Type.
    pub fn body(self, content_type: &str, body: impl Into<Vec<u8>>) -> Req {
        let mut r = self.set("Content-Type", content_type);
        r.body = body.into();
        r
    }

    /// The branch parameter of the top Via line.
    pub fn branch(&self) -> Option<String> {
        let via = self.get("Via")?;
        param(via, "branch").map(str::to_string)
    }

    /// The CSeq number.
    pub fn cseq(&self) -> Option<u32> {
        self.get("CSeq")?.split_whitespace().next()?.parse().ok()
    }

    /// The serialized request (CRLF line ends; Content-Length added if absent).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} SIP/2.0\r\n", self.method, self.uri).into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        let has_cl = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("Content-Length") || n == "l");
        if !has_cl {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// The value of `;name=value` in a header value (case-insensitive name), `""` for a flag.
/// For a name-addr, only the parameters after `>` count (not the URI's).
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let tail = match (value.find('<'), value.rfind('>')) {
        (Some(_), Some(gt)) => &value[gt + 1..],
        _ => value,
    };
    tail.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The first value of header `name` (any spelling, compact forms included) as text.
pub fn header(msg: &Message, name: &str) -> Option<String> {
    let name = HeaderName::from_bytes(&Bytes::copy_from_slice(name.as_bytes()));
    msg.headers
        .get(&name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Every value of header `name`, list headers split at commas (RFC 3261 §7.3.1).
pub fn header_values(msg: &Message, name: &str) -> Vec<String> {
    let name = HeaderName::from_bytes(&Bytes::copy_from_slice(name.as_bytes()));
    msg.headers
        .values(&name)
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .collect()
}

/// The reason phrase of a response (empty for a request).
pub fn reason(msg: &Message) -> String {
    match &msg.start {
        cpm_engine::sip::StartLine::Response { reason, .. } => {
            String::from_utf8_lossy(reason).into_owned()
        }
        _ => String::new(),
    }
}

/// A response to `req` (RFC 3261 §8.2.6.2): every Via line in order, From, To with `to_tag`
/// added if it has none, Call-ID, CSeq, and `extra` header lines; no body.
pub fn response_to(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: &str,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    response_with(req, code, reason, to_tag, extra, None)
}

/// [`response_to`] with a body `(content type, bytes)`, e.g. an SDP answer.
pub fn response_with(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: &str,
    extra: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for via in req.headers.get_all(&HeaderName::Via) {
        out.push_str(&format!("Via: {}\r\n", String::from_utf8_lossy(via)));
    }
    for (name, hn) in [("From", HeaderName::From), ("To", HeaderName::To)] {
        if let Some(v) = req.headers.get(&hn) {
            let v = String::from_utf8_lossy(v);
            let with_tag = if hn == HeaderName::To && param(&v, "tag").is_none() {
                format!("{v};tag={to_tag}")
            } else {
                v.into_owned()
            };
            out.push_str(&format!("{name}: {with_tag}\r\n"));
        }
    }
    for (name, hn) in [("Call-ID", HeaderName::CallId), ("CSeq", HeaderName::CSeq)] {
        if let Some(v) = req.headers.get(&hn) {
            out.push_str(&format!("{name}: {}\r\n", String::from_utf8_lossy(v)));
        }
    }
    for (n, v) in extra {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    let body = body.unwrap_or(("", b""));
    if !body.1.is_empty() {
        out.push_str(&format!("Content-Type: {}\r\n", body.0));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.1.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body.1);
    out
}

/// One unit cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A CRLF (RFC 5626 §3.5.1 pong) or CRLFCRLF (ping) outside a message.
    KeepAlive,
    /// One whole message, header and body.
    Message(Bytes),
}

/// Cuts the next frame off the front of a stream buffer; `None` until one is complete.
/// A message's length is its header section plus Content-Length (`0` when absent, RFC 3261
/// §18.3: mandatory on streams). Panics on a Content-Length that is not a number.
pub fn next_frame(buf: &mut BytesMut) -> Option<Frame> {
    if buf.starts_with(b"\r\n") {
        let n = if buf.starts_with(b"\r\n\r\n") { 4 } else { 2 };
        buf.advance(n);
        return Some(Frame::KeepAlive);
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let cl = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| {
            n.trim().eq_ignore_ascii_case("content-length") || n.trim().eq_ignore_ascii_case("l")
        })
        .map(|(_, v)| {
            v.trim()
                .parse::<usize>()
                .expect("numeric Content-Length from cpmd")
        })
        .unwrap_or(0);
    if buf.len() < head_end + cl {
        return None;
    }
    Some(Frame::Message(buf.split_to(head_end + cl).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_request_with_content_length() {
        let r = Req::new("MESSAGE", "sip:bob@localhost")
            .header("Via", "SIP/2.0/UDP 127.0.0.1:5;rport;branch=z9hG4bKx")
            .header("CSeq", "7 MESSAGE")
            .body("text/plain", "hi");
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(text.starts_with("MESSAGE sip:bob@localhost SIP/2.0\r\n"));
        assert!(text.ends_with("Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"));
        assert_eq!(r.branch().as_deref(), Some("z9hG4bKx"));
        assert_eq!(r.cseq(), Some(7));
        let m = cpm_engine::sip::parse(Bytes::from(r.to_bytes())).unwrap();
        assert_eq!(&m.body[..], b"hi");
    }

    #[test]
    fn set_replaces_all_lines() {
        let r = Req::new("OPTIONS", "sip:x")
            .header("A", "1")
            .header("B", "2")
            .header("a", "3")
            .set("A", "9");
        assert_eq!(
            r.headers,
            vec![("A".into(), "9".into()), ("B".into(), "2".into())]
        );
        assert!(r.remove("b").get("B").is_none());
    }

    #[test]
    fn response_echoes_request() {
        let req = Req::new("MESSAGE", "sip:bob@127.0.0.1:9")
            .header("Via", "SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKa")
            .header("Via", "SIP/2.0/UDP 127.0.0.1:2;branch=z9hG4bKb")
            .header("From", "<sip:alice@localhost>;tag=1")
            .header("To", "<sip:bob@localhost>")
            .header("Call-ID", "c1")
            .header("CSeq", "1 MESSAGE");
        let req = cpm_engine::sip::parse(Bytes::from(req.to_bytes())).unwrap();
        let resp =
            cpm_engine::sip::parse(Bytes::from(response_to(&req, 200, "OK", "t9", &[]))).unwrap();
        assert_eq!(resp.status(), Some(200));
        assert_eq!(header_values(&resp, "Via").len(), 2);
        assert_eq!(header(&resp, "To").unwrap(), "<sip:bob@localhost>;tag=t9");
        assert_eq!(header(&resp, "CSeq").unwrap(), "1 MESSAGE");
        let with = response_with(
            &req,
            200,
            "OK",
            "t9",
            &[],
            Some(("application/sdp", b"v=0\r\n")),
        );
        let with = cpm_engine::sip::parse(Bytes::from(with)).unwrap();
        assert_eq!(&with.body[..], b"v=0\r\n");
        assert_eq!(header(&with, "Content-Type").unwrap(), "application/sdp");
        assert_eq!(header(&with, "Content-Length").unwrap(), "5");
    }

    #[test]
    fn frames_stream() {
        let mut b = BytesMut::from(&b"\r\n\r\nSIP/2.0 200 OK\r\nl: 3\r\n\r\nabcSIP/2.0 1"[..]);
        assert_eq!(next_frame(&mut b), Some(Frame::KeepAlive));
        assert_eq!(
            next_frame(&mut b),
            Some(Frame::Message(Bytes::from_static(
                b"SIP/2.0 200 OK\r\nl: 3\r\n\r\nabc"
            )))
        );
        assert_eq!(next_frame(&mut b), None);
        assert_eq!(&b[..], b"SIP/2.0 1");
    }

    #[test]
    fn params() {
        assert_eq!(param("<sip:a@b>;tag=x;lr", "tag"), Some("x"));
        assert_eq!(param("<sip:a@b>;tag=x;lr", "lr"), Some(""));
        assert_eq!(param("<sip:a@b>", "tag"), None);
        assert_eq!(param("<sip:a@b;expires=1>;expires=7", "expires"), Some("7"));
        assert_eq!(param("<sip:a@b;expires=1>", "expires"), None);
        assert_eq!(
            param("SIP/2.0/UDP h;rport=5;branch=z9hG4bKq", "rport"),
            Some("5")
        );
    }
}
