//! Whole-message parsing with `ezk-sip-types`, for comparison with `cpm_engine::sip::parse`.
//!
//! The crate parses a start line ([`MessageLine`]) and header lines ([`Line`]) and splits a
//! message head into lines ([`PullParser`]); assembling a message is left to the caller (the
//! `ezk-sip-core` transport does it). This adapter does that assembly the way its transport
//! does: lines must be UTF-8, the start line is parsed eagerly (including the Request-URI as a
//! typed `SipUri`), header values stay raw `BytesStr` slices until read through a typed header,
//! and the body is cut to Content-Length. Leading CRLFs are skipped as in our parser.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};
use bytesstr::BytesStr;
use ezk_sip_types::header::typed::{CSeq, CallID, ContentLength, FromTo, Via};
use ezk_sip_types::msg::{Line, MessageLine, PullParser};
use ezk_sip_types::parse::Parse;
use ezk_sip_types::print::AppendCtx;
use ezk_sip_types::{Headers, Name};

use crate::ProxyKeys;

/// A message assembled from `ezk-sip-types` parts.
#[derive(Debug, Clone)]
pub struct EzkMessage {
    /// Request line or status line.
    pub line: MessageLine,
    /// Header values by name (raw, parsed on access).
    pub headers: Headers,
    /// The body, cut to Content-Length.
    pub body: Bytes,
}

/// Why the adapter gave up; `ezk-sip-types` itself reports nom errors with no stable kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EzkError {
    /// The head has no terminating empty line.
    Incomplete,
    /// A head line is not UTF-8.
    NotUtf8,
    /// The start line did not parse.
    StartLine,
    /// A header line did not parse.
    HeaderLine,
    /// Content-Length asks for more bytes than there are.
    BodyTooShort,
}

/// Parses a complete message held in one buffer.
pub fn parse(buf: Bytes) -> Result<EzkMessage, EzkError> {
    let skip = buf
        .iter()
        .take_while(|&&c| c == b'\r' || c == b'\n')
        .count();
    let buf = buf.slice(skip..);
    let mut lines = PullParser::new(&buf, 0);
    let mut line = None;
    let mut headers = Headers::with_capacity(16);
    for item in &mut lines {
        let raw = item.map_err(|_| EzkError::Incomplete)?;
        let text = std::str::from_utf8(raw).map_err(|_| EzkError::NotUtf8)?;
        if line.is_none() {
            let (_, l) = MessageLine::parse(&buf)(text).map_err(|_| EzkError::StartLine)?;
            line = Some(l);
        } else {
            let (_, h) = Line::parse(&buf, text).map_err(|_| EzkError::HeaderLine)?;
            headers.insert(h.name, h.value);
        }
    }
    let line = line.ok_or(EzkError::StartLine)?;
    let head_end = lines.head_end();
    let rest = buf.slice(head_end.min(buf.len())..);
    let body = match headers.get_named::<ContentLength>() {
        Ok(ContentLength(n)) if n > rest.len() => return Err(EzkError::BodyTooShort),
        Ok(ContentLength(n)) => rest.slice(..n),
        Err(_) => rest,
    };
    Ok(EzkMessage {
        line,
        headers,
        body,
    })
}

impl EzkMessage {
    /// Serializes the message (start line, headers grouped by name in first-seen order, body).
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(64 + self.headers.printed_len() + self.body.len());
        // Writing into a BytesMut cannot fail.
        let _ = write!(
            out,
            "{}\r\n{}\r\n",
            self.line.default_print_ctx(),
            self.headers
        );
        out.extend_from_slice(&self.body);
    }
}

/// Reads [`ProxyKeys`] through `ezk-sip-types`' typed headers; `None` if one is missing or
/// malformed.
pub fn proxy_keys(m: &EzkMessage) -> Option<ProxyKeys> {
    let via = m.headers.get_named::<Via>().ok()?;
    let branch = via.params.get_val("branch")?.clone();
    let call_id = m.headers.get_named::<CallID>().ok()?.0;
    let cseq = m.headers.get_named::<CSeq>().ok()?.cseq;
    let from = m.headers.get::<FromTo>(Name::FROM).ok()?;
    let to = m.headers.get::<FromTo>(Name::TO).ok()?;
    let bytes = |s: &BytesStr| -> Bytes { AsRef::<Bytes>::as_ref(s).clone() };
    Some(ProxyKeys {
        branch: bytes(&branch),
        call_id: bytes(&call_id),
        cseq,
        from_tag: bytes(&from.tag?),
        to_tag: to.tag.as_ref().map(bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_it_cannot_frame() {
        assert_eq!(
            parse(Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\nTo: x")).err(),
            Some(EzkError::Incomplete)
        );
        assert_eq!(
            parse(Bytes::from_static(
                b"SIP/2.0 200 OK\r\nContent-Length: 9\r\n\r\nab"
            ))
            .err(),
            Some(EzkError::BodyTooShort)
        );
        let m = parse(Bytes::from_static(b"SIP/2.0 200 OK\r\nl: 2\r\n\r\nabcd")).unwrap();
        assert_eq!(&m.body[..], b"ab");
    }
}
