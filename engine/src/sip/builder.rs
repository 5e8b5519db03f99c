//! Messages built from other messages: responses (RFC 3261 §8.2.6), the ACK for a non-2xx final
//! response (§17.1.1.3) and CANCEL (§9.1); the Via stamping a server transport does on receipt
//! (§18.2.1, RFC 3581 §4); and the unique tokens a new request needs (branch, tag).
//!
//! Header values are copied as `Bytes` handles (reference-counted views of the received buffer),
//! never as text; only a value that changes (a To with a new tag, a stamped Via) is rebuilt.

use std::net::{IpAddr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};

use super::hdr::via::MAGIC_COOKIE;
use super::hdr::{Params, Via};
use super::message::{is_ws, split_list, trim, Unquoted};
use super::{HeaderName, Headers, Message, Method, StartLine};
use crate::hash::{fnv1a_extend, FNV1A_OFFSET};

const SIP_2_0: Bytes = Bytes::from_static(b"SIP/2.0");

/// A response to `req` (RFC 3261 §8.2.6.2): every Via in order, From, To, Call-ID and CSeq
/// copied, `Content-Length: 0`. A `100` also copies Timestamp (§8.2.6.1).
pub fn response_to(req: &Message, code: u16, reason: &str) -> Message {
    response_to_with_tag(req, code, reason, None)
}

/// A response the server generates itself, acting as a UAS (RFC 3261 §8.2.6.2): like
/// [`response_to`], with a To tag above 100 when the request had none. The tag is derived from
/// the request (its Call-ID, From tag and top Via branch), so a retransmitted request that is
/// answered again, statelessly or not, gets the same tag, as Kamailio's `sl` does; the
/// client's random branch gives it the uniqueness of §19.3.
pub fn local_response(req: &Message, code: u16, reason: &str) -> Message {
    // Each value is followed by 0xff (never a byte of a header value) as a separator.
    let mut h = FNV1A_OFFSET;
    for name in [HeaderName::CallId, HeaderName::From, HeaderName::Via] {
        if let Some(v) = req.headers.get(&name) {
            h = fnv1a_extend(fnv1a_extend(h, v), &[0xff]);
        }
    }
    let tag = format!("{h:016x}");
    response_to_with_tag(req, code, reason, Some(&tag))
}

/// Like [`response_to`], and for a status above 100 adds `;tag=<to_tag>` to To when To has no
/// tag yet (§8.2.6.2); an existing tag is never touched.
pub fn response_to_with_tag(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
) -> Message {
    let mut headers = Headers::new();
    for via in req.headers.get_all(&HeaderName::Via) {
        headers.push(HeaderName::Via, via.clone());
    }
    copy_first(req, &mut headers, HeaderName::From);
    if let Some(to) = req.headers.get(&HeaderName::To) {
        let to = match to_tag {
            Some(tag) if code > 100 && tag_of(to).is_none() => with_tag(to, tag),
            _ => to.clone(),
        };
        headers.push(HeaderName::To, to);
    }
    copy_first(req, &mut headers, HeaderName::CallId);
    copy_first(req, &mut headers, HeaderName::CSeq);
    if code == 100 {
        copy_first(req, &mut headers, HeaderName::Timestamp);
    }
    headers.push(HeaderName::ContentLength, Bytes::from_static(b"0"));
    Message {
        start: StartLine::Response {
            version: SIP_2_0,
            code,
            reason: Bytes::copy_from_slice(reason.as_bytes()),
        },
        headers,
        body: Bytes::new(),
    }
}

/// The ACK a client INVITE transaction sends for a 300-699 response (RFC 3261 §17.1.1.3): the
/// INVITE's Request-URI, Call-ID, From and Route headers, its top Via only, the CSeq number with
/// method ACK, and the To of the response (with the UAS's tag).
///
/// `invite` is the request this transaction sent; if it were a response, the Request-URI would
/// be left empty.
pub fn ack_for_non_2xx(invite: &Message, resp: &Message) -> Message {
    let to = resp
        .headers
        .get(&HeaderName::To)
        .or_else(|| invite.headers.get(&HeaderName::To));
    request_from(invite, Method::Ack, to.cloned())
}

/// The CANCEL for a pending request (RFC 3261 §9.1): the same Request-URI, Call-ID, To, From
/// and Route headers, the request's top Via only, and the CSeq number with method CANCEL.
pub fn cancel_for(invite: &Message) -> Message {
    request_from(
        invite,
        Method::Cancel,
        invite.headers.get(&HeaderName::To).cloned(),
    )
}

/// The shared shape of ACK and CANCEL: they follow the request they refer to hop by hop.
fn request_from(orig: &Message, method: Method, to: Option<Bytes>) -> Message {
    let mut headers = Headers::new();
    if let Some(via) = orig.headers.values(&HeaderName::Via).next() {
        headers.push(HeaderName::Via, via);
    }
    for route in orig.headers.get_all(&HeaderName::Route) {
        headers.push(HeaderName::Route, route.clone());
    }
    headers.push(HeaderName::MaxForwards, Bytes::from_static(b"70"));
    copy_first(orig, &mut headers, HeaderName::From);
    if let Some(to) = to {
        headers.push(HeaderName::To, to);
    }
    copy_first(orig, &mut headers, HeaderName::CallId);
    if let Some(cseq) = orig.headers.get(&HeaderName::CSeq) {
        headers.push(HeaderName::CSeq, cseq_with_method(cseq, &method));
    }
    headers.push(HeaderName::ContentLength, Bytes::from_static(b"0"));
    Message {
        start: StartLine::Request {
            method,
            uri: orig.request_uri().cloned().unwrap_or_default(),
            version: SIP_2_0,
        },
        headers,
        body: Bytes::new(),
    }
}

fn copy_first(from: &Message, to: &mut Headers, name: HeaderName) {
    if let Some(v) = from.headers.get(&name) {
        to.push(name, v.clone());
    }
}

/// `<number of the given CSeq> <method>`.
fn cseq_with_method(cseq: &Bytes, method: &Method) -> Bytes {
    let cseq = trim(cseq);
    let end = cseq.iter().position(|&c| is_ws(c)).unwrap_or(cseq.len());
    let mut out = BytesMut::with_capacity(end + 1 + method.as_str().len());
    out.put_slice(&cseq[..end]);
    out.put_u8(b' ');
    out.put_slice(method.as_str().as_bytes());
    out.freeze()
}

fn with_tag(value: &Bytes, tag: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(value.len() + 5 + tag.len());
    out.put_slice(value);
    out.put_slice(b";tag=");
    out.put_slice(tag.as_bytes());
    out.freeze()
}

/// The header parameters of a name-addr or addr-spec value (From, To, Contact, ...): those after
/// the closing `>`, or, without `<>`, after the addr-spec, whose first `;` starts them
/// (RFC 3261 §20.10). URI parameters inside `<>` and quoted display names are skipped.
pub fn header_params(value: &Bytes) -> Params {
    match params_start(value) {
        Some(i) => Params::parse(&value.slice(i.min(value.len())..)),
        None => Params::default(),
    }
}

/// The `tag` header parameter of a From or To value (RFC 3261 §19.3).
pub fn tag_of(value: &Bytes) -> Option<Bytes> {
    header_params(value).value("tag").cloned()
}

fn params_start(v: &[u8]) -> Option<usize> {
    let mut scan = Unquoted::new(v, b'<', false);
    if let Some(lt) = scan.next() {
        let close = v[lt..].iter().position(|&c| c == b'>')? + lt;
        return Some(close + 1);
    }
    if scan.in_quote() {
        return None;
    }
    // addr-spec form: a URI with `;` must be in `<>`, so the first `;` starts the header params.
    v.iter().position(|&c| c == b';')
}

/// Stamps the top Via of a received request as a server transport must (RFC 3261 §18.2.1):
/// `received=<source ip>` when sent-by is not that address, and with RFC 3581 `rport` the source
/// port too (then `received` is always added). Returns false if the top Via cannot be parsed.
pub fn stamp_received(req: &mut Message, source: SocketAddr) -> bool {
    let Some(line) = req.headers.get(&HeaderName::Via).cloned() else {
        return false;
    };
    let elems = split_list(&line);
    let Some(first) = elems.first() else {
        return false;
    };
    let Ok(mut via) = Via::parse(first) else {
        return false;
    };
    let wants_rport = via.params.has("rport");
    if !wants_rport && host_ip(&via.host) == Some(source.ip()) {
        return true;
    }
    via.params
        .set("received", Some(Bytes::from(source.ip().to_string())));
    if wants_rport {
        via.params
            .set("rport", Some(Bytes::from(source.port().to_string())));
    }
    // The rest of a comma-separated Via line stays as received.
    let top = via.to_string_value();
    let mut out = BytesMut::with_capacity(line.len() + 40);
    out.put_slice(top.as_bytes());
    for e in elems.iter().skip(1) {
        out.put_slice(b", ");
        out.put_slice(e);
    }
    req.headers.replace_first(&HeaderName::Via, out.freeze());
    true
}

/// The address a Via host names, if it is an IP literal (IPv6 in brackets).
pub(crate) fn host_ip(host: &[u8]) -> Option<IpAddr> {
    let h = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host);
    std::str::from_utf8(h).ok()?.parse().ok()
}

/// A deterministic source of branch ids and tags, seeded by the caller (the engine reads no RNG).
///
/// It is a SplitMix64 sequence: for one seed, the 2^64 outputs are all distinct, so branches from
/// one generator never repeat; give each worker its own random seed (RFC 3261 §8.1.1.7 asks for
/// branches unique across space and time).
#[derive(Debug, Clone)]
pub struct BranchGen {
    state: u64,
}

impl BranchGen {
    /// A generator starting from `seed` (take it from the OS RNG in the driver).
    pub fn new(seed: u64) -> BranchGen {
        BranchGen { state: seed }
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A new branch: the magic cookie `z9hG4bK` and 16 hex digits (RFC 3261 §8.1.1.7).
    pub fn next_branch(&mut self) -> Bytes {
        let mut out = BytesMut::with_capacity(MAGIC_COOKIE.len() + 16);
        out.put_slice(MAGIC_COOKIE.as_bytes());
        put_hex(&mut out, self.next_u64());
        out.freeze()
    }

    /// A new From/To tag: 16 hex digits (RFC 3261 §19.3 asks for 32 random bits at least).
    pub fn next_tag(&mut self) -> Bytes {
        let mut out = BytesMut::with_capacity(16);
        put_hex(&mut out, self.next_u64());
        out.freeze()
    }
}

fn put_hex(out: &mut BytesMut, v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.put_u8(HEX[((v >> (shift * 4)) & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_response_tags_deterministically() {
        let req = crate::sip::parse(Bytes::from_static(
            b"OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=f\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
        ))
        .unwrap();
        let a = local_response(&req, 404, "Not Found");
        let b = local_response(&req, 404, "Not Found");
        let ta = tag_of(a.headers.get(&HeaderName::To).unwrap()).unwrap();
        assert_eq!(
            Some(ta.clone()),
            tag_of(b.headers.get(&HeaderName::To).unwrap())
        );
        assert_eq!(ta.len(), 16);
        let trying = local_response(&req, 100, "Trying");
        assert!(tag_of(trying.headers.get(&HeaderName::To).unwrap()).is_none());
    }
    use crate::sip::parse;
    use std::collections::HashSet;

    const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP proxy.example:5070;branch=z9hG4bKp1, SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKa\r\n\
Via: SIP/2.0/TCP client.atlanta.com;branch=z9hG4bKc\r\n\
Route: <sip:p1.example;lr>\r\n\
Route: <sip:p2.example;lr>\r\n\
Max-Forwards: 69\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Timestamp: 54\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    fn invite() -> Message {
        parse(Bytes::from_static(INVITE)).unwrap()
    }

    fn get(m: &Message, h: HeaderName) -> &[u8] {
        m.headers.get(&h).map(|v| &v[..]).unwrap_or(b"")
    }

    #[test]
    fn response_copies_the_mandatory_headers() {
        let req = invite();
        let r = response_to_with_tag(&req, 486, "Busy Here", Some("xyz"));
        assert_eq!(r.status(), Some(486));
        let vias: Vec<_> = r.headers.get_all(&HeaderName::Via).cloned().collect();
        let req_vias: Vec<_> = req.headers.get_all(&HeaderName::Via).cloned().collect();
        assert_eq!(vias, req_vias);
        assert_eq!(r.vias().unwrap().len(), 3);
        assert_eq!(get(&r, HeaderName::From), get(&req, HeaderName::From));
        assert_eq!(get(&r, HeaderName::To), b"Bob <sip:bob@biloxi.com>;tag=xyz");
        assert_eq!(
            get(&r, HeaderName::CallId),
            b"a84b4c76e66710@pc33.atlanta.com"
        );
        assert_eq!(get(&r, HeaderName::CSeq), b"314159 INVITE");
        assert_eq!(get(&r, HeaderName::ContentLength), b"0");
        assert!(r.headers.get(&HeaderName::Route).is_none());
        assert!(r.headers.get(&HeaderName::Timestamp).is_none());
        assert!(r.body.is_empty());
        // It prints and parses back as the same response.
        assert_eq!(parse(r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn trying_keeps_to_untagged_and_copies_timestamp() {
        let r = response_to_with_tag(&invite(), 100, "Trying", Some("xyz"));
        assert_eq!(get(&r, HeaderName::To), b"Bob <sip:bob@biloxi.com>");
        assert_eq!(get(&r, HeaderName::Timestamp), b"54");
    }

    #[test]
    fn an_existing_to_tag_is_kept() {
        let mut req = invite();
        for (to, has) in [
            ("<sip:bob@b>;tag=abc", true),
            ("sip:bob@b;tag=abc", true),
            ("\"Bob <x>;tag=no\" <sip:bob@b>", false),
            ("<sip:bob@b;tag=uri-param>", false),
            ("\"B;tag=q\" <sip:bob@b> ; TAG = abc", true),
            ("sip:bob@b", false),
        ] {
            req.headers
                .set(HeaderName::To, Bytes::copy_from_slice(to.as_bytes()));
            let r = response_to_with_tag(&req, 200, "OK", Some("new"));
            let got = get(&r, HeaderName::To).to_vec();
            if has {
                assert_eq!(got, to.as_bytes(), "{to}");
            } else {
                assert_eq!(got, format!("{to};tag=new").as_bytes(), "{to}");
                assert_eq!(&tag_of(&Bytes::from(got)).unwrap()[..], b"new");
            }
        }
        assert_eq!(
            tag_of(&Bytes::from_static(b"\"unterminated <sip:a@b>;tag=1")),
            None
        );
    }

    #[test]
    fn ack_for_non_2xx_follows_17_1_1_3() {
        let req = invite();
        let resp = response_to_with_tag(&req, 486, "Busy Here", Some("uas1"));
        let ack = ack_for_non_2xx(&req, &resp);
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(&ack.request_uri().unwrap()[..], b"sip:bob@biloxi.com");
        let vias: Vec<_> = ack.headers.values(&HeaderName::Via).collect();
        assert_eq!(
            vias,
            vec![Bytes::from_static(
                b"SIP/2.0/UDP proxy.example:5070;branch=z9hG4bKp1"
            )]
        );
        let routes: Vec<_> = ack.headers.get_all(&HeaderName::Route).cloned().collect();
        assert_eq!(
            routes,
            vec![
                Bytes::from_static(b"<sip:p1.example;lr>"),
                Bytes::from_static(b"<sip:p2.example;lr>")
            ]
        );
        assert_eq!(
            get(&ack, HeaderName::To),
            b"Bob <sip:bob@biloxi.com>;tag=uas1"
        );
        assert_eq!(get(&ack, HeaderName::From), get(&req, HeaderName::From));
        assert_eq!(get(&ack, HeaderName::CallId), get(&req, HeaderName::CallId));
        assert_eq!(get(&ack, HeaderName::CSeq), b"314159 ACK");
        assert_eq!(get(&ack, HeaderName::ContentLength), b"0");
        assert!(ack.headers.get(&HeaderName::ContentType).is_none());
        assert!(ack.body.is_empty());
        assert_eq!(parse(ack.to_bytes()).unwrap(), ack);
    }

    #[test]
    fn cancel_follows_9_1() {
        let req = invite();
        let c = cancel_for(&req);
        assert_eq!(c.method(), Some(&Method::Cancel));
        assert_eq!(c.request_uri(), req.request_uri());
        assert_eq!(c.headers.values(&HeaderName::Via).count(), 1);
        assert_eq!(
            c.top_via().unwrap().branch(),
            req.top_via().unwrap().branch()
        );
        assert_eq!(get(&c, HeaderName::To), b"Bob <sip:bob@biloxi.com>");
        assert_eq!(get(&c, HeaderName::CSeq), b"314159 CANCEL");
        assert_eq!(c.headers.count(&HeaderName::Route), 2);
        assert!(c.body.is_empty());
    }

    #[test]
    fn branches_are_unique_and_seeded() {
        let mut g = BranchGen::new(7);
        let set: HashSet<Bytes> = (0..10_000).map(|_| g.next_branch()).collect();
        assert_eq!(set.len(), 10_000);
        assert!(set
            .iter()
            .all(|b| b.starts_with(b"z9hG4bK") && b.len() == 23));
        assert_eq!(
            BranchGen::new(7).next_branch(),
            BranchGen::new(7).next_branch()
        );
        assert_ne!(
            BranchGen::new(7).next_branch(),
            BranchGen::new(8).next_branch()
        );
        let tag = BranchGen::new(1).next_tag();
        assert_eq!(tag.len(), 16);
        assert!(tag.iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn stamping_the_top_via() {
        let src: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        // A host name: received added; the second value of the line is kept.
        let mut req = invite();
        assert!(stamp_received(&mut req, src));
        let vias = req.vias().unwrap();
        assert_eq!(vias.len(), 3);
        assert_eq!(&vias[0].received().unwrap()[..], b"192.0.2.7");
        assert_eq!(vias[0].rport(), None);
        assert_eq!(&vias[1].host[..], b"pc33.atlanta.com");
        assert_eq!(vias[1].received(), None);

        // rport: received and rport are both set even though the host matches.
        let mut req = invite();
        req.headers.replace_first(
            &HeaderName::Via,
            "SIP/2.0/UDP 192.0.2.7:5060;rport;branch=z9hG4bKr",
        );
        assert!(stamp_received(&mut req, src));
        let v = req.top_via().unwrap();
        assert_eq!(v.rport(), Some(Some(40000)));
        assert_eq!(&v.received().unwrap()[..], b"192.0.2.7");
        assert_eq!(&v.branch().unwrap()[..], b"z9hG4bKr");

        // The host is the source address and no rport: untouched.
        let mut req = invite();
        req.headers.replace_first(
            &HeaderName::Via,
            "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKr",
        );
        let before = req.clone();
        assert!(stamp_received(
            &mut req,
            "[2001:db8::1]:5060".parse().unwrap()
        ));
        assert_eq!(req, before);

        let mut bad = invite();
        bad.headers.remove(&HeaderName::Via);
        assert!(!stamp_received(&mut bad, src));
    }
}
