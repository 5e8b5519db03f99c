//! Benchmarks and comparison harnesses of cpm-engine.
//!
//! The criterion benches live in `benches/` (`cargo bench -p cpm-perf --bench sip`). This
//! library holds what they share with the tests and the fuzz seeds: typical messages
//! ([`INVITE`], [`MESSAGE`]), the header reads of a proxy for both parsers, and an adapter
//! ([`ezk`]) that assembles a whole message with the third-party `ezk-sip-types` crate, which
//! only ships the pieces (line splitter, start line and header line parsers).

pub mod ezk;

use bytes::Bytes;
use cpm_engine::sip::Message;

/// A typical INVITE with an SDP offer, as a UA sends it to its proxy (895 bytes).
pub const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bK74bf9a2c1e8d\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
Call-ID: 3848276298220188511@atlanta.example.com\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, INFO, UPDATE, REFER, NOTIFY\r\n\
Supported: replaces, timer, 100rel\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
Accept: application/sdp\r\n\
User-Agent: cpm-perf/0.1 (criterion)\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 267\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 96 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// A typical pager-mode MESSAGE (RFC 3428) with a short text body (391 bytes).
pub const MESSAGE: &[u8] = b"MESSAGE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.10:5060;rport;branch=z9hG4bK5a1c7e90d3\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@atlanta.example.com>;tag=49583\r\n\
To: <sip:bob@biloxi.example.com>\r\n\
Call-ID: asd88asd77a@192.0.2.10\r\n\
CSeq: 1 MESSAGE\r\n\
User-Agent: cpm-perf/0.1 (criterion)\r\n\
Content-Type: text/plain\r\n\
Content-Length: 45\r\n\
\r\n\
Hello Bob, are we still on for lunch at noon?";

/// An MSRP stream (RFC 4975 §7.1.1): a SEND in two chunks, its 200, and a REPORT.
pub const MSRP_STREAM: &[u8] = b"MSRP a786hjs2 SEND\r\n\
To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n\
From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n\
Message-ID: 87652491\r\n\
Byte-Range: 1-5/10\r\n\
Content-Type: text/plain\r\n\
\r\n\
Hello\r\n\
-------a786hjs2+\r\n\
MSRP a786hjs3 SEND\r\n\
To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n\
From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n\
Message-ID: 87652491\r\n\
Byte-Range: 6-10/10\r\n\
Success-Report: yes\r\n\
Content-Type: text/plain\r\n\
\r\n\
 Bob!\r\n\
-------a786hjs3$\r\n\
MSRP a786hjs2 200 OK\r\n\
To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n\
From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n\
-------a786hjs2$\r\n\
MSRP dkei38sd REPORT\r\n\
To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp\r\n\
From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp\r\n\
Message-ID: 87652491\r\n\
Byte-Range: 1-10/10\r\n\
Status: 000 200 OK\r\n\
-------dkei38sd$\r\n";

/// A CPIM message (RFC 3862) asking for IMDNs (RFC 5438 §6).
pub const CPIM: &[u8] = b"From: Alice <sip:alice@atlanta.example.com>\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
DateTime: 2026-11-26T12:00:00Z\r\n\
NS: imdn <urn:ietf:params:imdn>\r\n\
imdn.Message-ID: 34jk324j\r\n\
imdn.Disposition-Notification: positive-delivery, display\r\n\
\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 12\r\n\
\r\n\
Hello world!";

/// An IMDN document (RFC 5438 §7.2.1.1): a delivery notification.
pub const IMDN: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\r\n\
<message-id>34jk324j</message-id>\r\n\
<datetime>2026-11-26T12:00:00Z</datetime>\r\n\
<recipient-uri>sip:bob@biloxi.example.com</recipient-uri>\r\n\
<original-recipient-uri>sip:bob@biloxi.example.com</original-recipient-uri>\r\n\
<delivery-notification><status><delivered/></status></delivery-notification>\r\n\
</imdn>";

/// Every message const, with a name (for bench ids and fuzz seed files).
pub const MESSAGES: &[(&str, &[u8])] = &[("invite", INVITE), ("message", MESSAGE)];

/// Every seed for the fuzz targets: the SIP messages and the MSRP, CPIM and IMDN examples.
pub const SEEDS: &[(&str, &[u8])] = &[
    ("invite", INVITE),
    ("message", MESSAGE),
    ("msrp", MSRP_STREAM),
    ("cpim", CPIM),
    ("imdn", IMDN),
];

/// What a stateless proxy reads from a request before forwarding it: the transaction key and
/// the dialog identifiers (RFC 3261 §16.3, §17.2.3, §12.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyKeys {
    /// Branch of the topmost Via.
    pub branch: Bytes,
    /// Call-ID.
    pub call_id: Bytes,
    /// CSeq sequence number.
    pub cseq: u32,
    /// From tag.
    pub from_tag: Bytes,
    /// To tag, absent outside a dialog.
    pub to_tag: Option<Bytes>,
}

/// Reads [`ProxyKeys`] with our parser's typed accessors (`sip::hdr`); `None` if one is
/// missing or malformed. From and To are parsed whole (URI included), as ezk's `FromTo` does.
pub fn proxy_keys(m: &Message) -> Option<ProxyKeys> {
    let via = m.top_via().ok()?;
    Some(ProxyKeys {
        branch: via.branch()?.clone(),
        call_id: m.call_id()?.clone(),
        cseq: m.cseq().ok()?.seq,
        from_tag: m.from().ok()?.tag()?.clone(),
        to_tag: m.to().ok()?.tag().cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use cpm_engine::sip::HeaderName;

    #[test]
    fn consts_are_the_advertised_size_and_frame_exactly() {
        for (name, raw, lo, hi) in [("invite", INVITE, 850, 950), ("message", MESSAGE, 350, 450)] {
            assert!((lo..hi).contains(&raw.len()), "{name}: {} bytes", raw.len());
            let m = cpm_engine::sip::parse(Bytes::from_static(raw)).unwrap();
            let cl: usize = std::str::from_utf8(m.headers.get(&HeaderName::ContentLength).unwrap())
                .unwrap()
                .parse()
                .unwrap();
            // Content-Length covers the whole rest of the buffer: nothing is cut off.
            assert_eq!(m.body.len(), cl, "{name}");
            assert!(raw.ends_with(&m.body), "{name}");
        }
    }

    #[test]
    fn both_parsers_read_the_same_proxy_keys() {
        for (name, raw) in MESSAGES {
            let ours = proxy_keys(&cpm_engine::sip::parse(Bytes::from_static(raw)).unwrap());
            let theirs = ezk::proxy_keys(&ezk::parse(Bytes::from_static(raw)).unwrap());
            assert_eq!(ours, theirs, "{name}");
            assert!(ours.is_some(), "{name}");
        }
        let k = proxy_keys(&cpm_engine::sip::parse(Bytes::from_static(INVITE)).unwrap()).unwrap();
        assert_eq!(&k.branch[..], b"z9hG4bK74bf9a2c1e8d");
        assert_eq!(&k.from_tag[..], b"9fxced76sl");
        assert_eq!(k.to_tag, None);
        assert_eq!(k.cseq, 1);
    }

    #[test]
    fn both_serializers_round_trip() {
        for (name, raw) in MESSAGES {
            let ours = cpm_engine::sip::parse(Bytes::from_static(raw)).unwrap();
            assert_eq!(
                &ours.to_bytes()[..],
                *raw,
                "{name}: ours prints what it read"
            );
            let theirs = ezk::parse(Bytes::from_static(raw)).unwrap();
            let mut out = BytesMut::new();
            theirs.write_to(&mut out);
            let again = ezk::parse(out.freeze()).unwrap();
            assert_eq!(ezk::proxy_keys(&again), ezk::proxy_keys(&theirs), "{name}");
            assert_eq!(again.body, theirs.body, "{name}");
        }
    }
}
