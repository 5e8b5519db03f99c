//! Which header fields cross the B2BUA (decision 0008). Each leg has its own dialog, so the
//! fields that make up a dialog or a hop (Via, Route, Record-Route, From, To, Call-ID, CSeq,
//! Contact, Max-Forwards), credentials meant for us, and the body framing are rebuilt; option
//! tags are cut to those the session relays end to end (`timer`: no PRACK, so no `100rel`);
//! every other field, extensions included, is copied as received.

use bytes::Bytes;

use crate::sip::{HeaderName, Message, StartLine};

/// Option tags the B2BUA relays end to end (RFC 4028 session timers).
pub(crate) const RELAYED_OPTION_TAGS: &[&str] = &["timer"];

/// Fields never copied from one leg to the other.
fn is_rebuilt(name: &HeaderName) -> bool {
    match name {
        HeaderName::Via
        | HeaderName::Route
        | HeaderName::RecordRoute
        | HeaderName::From
        | HeaderName::To
        | HeaderName::CallId
        | HeaderName::CSeq
        | HeaderName::Contact
        | HeaderName::MaxForwards
        | HeaderName::ContentLength
        | HeaderName::ContentType
        | HeaderName::ContentEncoding
        | HeaderName::Authorization
        | HeaderName::ProxyAuthorization
        | HeaderName::WwwAuthenticate
        | HeaderName::ProxyAuthenticate
        | HeaderName::AuthenticationInfo
        | HeaderName::ProxyRequire
        | HeaderName::Path
        | HeaderName::ServiceRoute
        | HeaderName::Timestamp
        | HeaderName::Supported
        | HeaderName::Require => true,
        // Reliable provisional responses (RFC 3262) are not relayed.
        HeaderName::Other(n) => n.eq_ignore_ascii_case(b"RSeq") || n.eq_ignore_ascii_case(b"RAck"),
        _ => false,
    }
}

/// Copies the end-to-end fields of `from` into `to`, then Supported and Require cut to
/// [`RELAYED_OPTION_TAGS`] (`3xx` responses also keep their Contacts). Call before setting the
/// body, which (re)writes Content-Length last.
pub(crate) fn copy_end_to_end(from: &Message, to: &mut Message) {
    let cl = to.headers.remove_first(&HeaderName::ContentLength);
    for h in from.headers.iter().filter(|h| !is_rebuilt(&h.name)) {
        to.headers.push(h.name.clone(), h.value.clone());
    }
    for name in [HeaderName::Supported, HeaderName::Require] {
        let tags: Vec<Bytes> = from
            .headers
            .values(&name)
            .filter(|t| {
                RELAYED_OPTION_TAGS
                    .iter()
                    .any(|k| t.eq_ignore_ascii_case(k.as_bytes()))
            })
            .collect();
        if !tags.is_empty() {
            to.headers.push(name, join(&tags));
        }
    }
    if from.status().is_some_and(|c| (300..400).contains(&c)) {
        for c in from.headers.get_all(&HeaderName::Contact) {
            to.headers.push(HeaderName::Contact, c.clone());
        }
    }
    if let Some(cl) = cl {
        to.headers.push(HeaderName::ContentLength, cl);
    }
}

/// Sets `to`'s body to `from`'s, with its Content-Type (non-SDP bodies cross unchanged).
pub(crate) fn copy_body(from: &Message, to: &mut Message) {
    if let Some(ct) = from.headers.get(&HeaderName::ContentType) {
        to.headers.set(HeaderName::ContentType, ct.clone());
    }
    to.set_body(from.body.clone(), None);
}

/// Whether `msg` carries an SDP body (RFC 3264 offer or answer).
pub(crate) fn has_sdp(msg: &Message) -> bool {
    !msg.body.is_empty()
        && msg
            .content_type()
            .ok()
            .flatten()
            .is_some_and(|ct| ct.is("application/sdp"))
}

/// Option tags of `msg`'s Require that the session does not relay (answer 420, RFC 3261
/// §8.2.2.3).
pub(crate) fn unsupported_requires(msg: &Message) -> Vec<Bytes> {
    msg.headers
        .values(&HeaderName::Require)
        .filter(|t| {
            !RELAYED_OPTION_TAGS
                .iter()
                .any(|k| t.eq_ignore_ascii_case(k.as_bytes()))
        })
        .collect()
}

/// `a, b, c`.
pub(crate) fn join(items: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(items.iter().map(|i| i.len() + 2).sum());
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(t);
    }
    Bytes::from(out)
}

/// Replaces the reason phrase of a response.
pub(crate) fn set_reason(resp: &mut Message, reason: Bytes) {
    if let StartLine::Response { reason: r, .. } = &mut resp.start {
        *r = reason;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;

    #[test]
    fn copies_end_to_end_fields_only() {
        let from = parse(Bytes::from_static(
            b"SIP/2.0 302 Moved\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:b@y>\r\nRecord-Route: <sip:p;lr>\r\nSupported: 100rel, timer, replaces\r\nRequire: 100rel\r\nRSeq: 1\r\nSession-Expires: 1800\r\nX-Thing: kept\r\nRetry-After: 5\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
        ))
        .unwrap();
        let mut to = parse(Bytes::from_static(
            b"SIP/2.0 302 Moved\r\nCall-ID: mine\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        copy_end_to_end(&from, &mut to);
        let names: Vec<String> = to
            .headers
            .iter()
            .map(|h| h.name.as_str().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "Call-ID",
                "Session-Expires",
                "X-Thing",
                "Retry-After",
                "Supported",
                "Contact",
                "Content-Length"
            ]
        );
        assert_eq!(
            &to.headers.get(&HeaderName::Supported).unwrap()[..],
            b"timer"
        );
        assert_eq!(&to.headers.get(&HeaderName::CallId).unwrap()[..], b"mine");
        assert!(to.body.is_empty());
        copy_body(&from, &mut to);
        assert_eq!(&to.body[..], b"hi");
        assert_eq!(
            &to.headers.get(&HeaderName::ContentType).unwrap()[..],
            b"text/plain"
        );
        assert!(!has_sdp(&to));
        assert_eq!(
            unsupported_requires(&from),
            vec![Bytes::from_static(b"100rel")]
        );
    }
}
