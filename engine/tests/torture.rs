//! RFC 4475 (SIP torture test messages) and RFC 5118 (IPv6 torture test messages) run through
//! the receive path: `parse`, then `validate_request` / `validate_response`, or
//! `reject_unparsable` when parsing fails.
//!
//! The vectors are read from `<workspace>/../shared/vectors/sip-torture` (or
//! `<workspace>/../../shared/...`, or `$CPM_VECTORS/sip-torture`); they are not part of the
//! repository. Every file must have an entry in [`CASES`], and every entry a file.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use cpm_engine::sip::framing::{Frame, FramingError, StreamFramer};
use cpm_engine::sip::hdr::Contact;
use cpm_engine::sip::uri::{unescape, HostKind, Uri};
use cpm_engine::sip::validate::{
    reject_unparsable, unsupported_proxy_requires, unsupported_requires, validate_request,
    validate_response,
};
use cpm_engine::sip::{parse, HeaderName, Message, Method, StartLine};

/// What the RFC says must become of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Parses and passes validation.
    Accept,
    /// A request answered with this status by parse/validate.
    Reject(u16),
    /// A response dropped by parse/validate.
    Drop,
    /// Passes validation; a later layer (registrar, UAS, proxy) answers with this status. The
    /// case's check asserts the fact that layer decides on.
    Later(u16),
}

/// One vector: file, RFC section, expected outcome, extra assertions on the parsed message.
struct Case {
    file: &'static str,
    section: &'static str,
    expect: Expect,
    check: Option<fn(&Message)>,
}

const fn case(file: &'static str, section: &'static str, expect: Expect) -> Case {
    Case {
        file,
        section,
        expect,
        check: None,
    }
}

const fn checked(
    file: &'static str,
    section: &'static str,
    expect: Expect,
    check: fn(&Message),
) -> Case {
    Case {
        file,
        section,
        expect,
        check: Some(check),
    }
}

use Expect::{Accept, Drop, Later, Reject};

const CASES: &[Case] = &[
    // ---- RFC 4475 §3.1.1 Valid Messages: must parse and validate ----------------------------
    checked(
        "rfc4475/wsinv.dat",
        "4475 §3.1.1.1 short tortuous INVITE",
        Accept,
        check_wsinv,
    ),
    checked(
        "rfc4475/intmeth.dat",
        "4475 §3.1.1.2 wide range of valid characters",
        Accept,
        check_intmeth,
    ),
    checked(
        "rfc4475/esc01.dat",
        "4475 §3.1.1.3 valid % escaping",
        Accept,
        check_esc01,
    ),
    checked(
        "rfc4475/escnull.dat",
        "4475 §3.1.1.4 escaped nulls in URIs",
        Accept,
        check_escnull,
    ),
    checked(
        "rfc4475/esc02.dat",
        "4475 §3.1.1.5 % that is not an escape",
        Accept,
        check_esc02,
    ),
    checked(
        "rfc4475/lwsdisp.dat",
        "4475 §3.1.1.6 no LWS between display name and <",
        Accept,
        check_lwsdisp,
    ),
    checked(
        "rfc4475/longreq.dat",
        "4475 §3.1.1.7 long values in header fields",
        Accept,
        check_longreq,
    ),
    checked(
        "rfc4475/dblreq.dat",
        "4475 §3.1.1.8 extra trailing octets in a datagram",
        Accept,
        check_dblreq,
    ),
    checked(
        "rfc4475/semiuri.dat",
        "4475 §3.1.1.9 ';' in the URI user part",
        Accept,
        check_semiuri,
    ),
    checked(
        "rfc4475/transports.dat",
        "4475 §3.1.1.10 varied and unknown transports",
        Accept,
        check_transports,
    ),
    checked(
        "rfc4475/mpart01.dat",
        "4475 §3.1.1.11 multipart MIME body",
        Accept,
        check_mpart01,
    ),
    checked(
        "rfc4475/unreason.dat",
        "4475 §3.1.1.12 unusual reason phrase",
        Accept,
        check_unreason,
    ),
    checked(
        "rfc4475/noreason.dat",
        "4475 §3.1.1.13 empty reason phrase",
        Accept,
        check_noreason,
    ),
    // ---- RFC 4475 §3.1.2 Invalid Messages ----------------------------------------------------
    // §3.1.2.1 ";;,;,," in Via and ";;;;" in Contact: "should respond with a 400".
    case(
        "rfc4475/badinv01.dat",
        "4475 §3.1.2.1 extraneous header field separators",
        Reject(400),
    ),
    // §3.1.2.2 over UDP a request whose Content-Length exceeds the datagram gets a 400 (RFC 3261 §18.3).
    case(
        "rfc4475/clerr.dat",
        "4475 §3.1.2.2 Content-Length larger than message",
        Reject(400),
    ),
    case(
        "rfc4475/ncl.dat",
        "4475 §3.1.2.3 negative Content-Length",
        Reject(400),
    ),
    // §3.1.2.4 "should respond with a 400 Bad Request due to the CSeq error".
    case(
        "rfc4475/scalar02.dat",
        "4475 §3.1.2.4 request scalar fields too large",
        Reject(400),
    ),
    // §3.1.2.5 a response with an overlarge CSeq is discarded.
    case(
        "rfc4475/scalarlg.dat",
        "4475 §3.1.2.5 response scalar fields too large",
        Drop,
    ),
    case(
        "rfc4475/quotbal.dat",
        "4475 §3.1.2.6 unterminated quoted display name",
        Reject(400),
    ),
    // §3.1.2.7 "reasonable always to reject ... with a 400".
    case(
        "rfc4475/ltgtruri.dat",
        "4475 §3.1.2.7 <> enclosing Request-URI",
        Reject(400),
    ),
    case(
        "rfc4475/lwsruri.dat",
        "4475 §3.1.2.8 LWS inside the Request-URI",
        Reject(400),
    ),
    // §3.1.2.9, §3.1.2.10 "acceptable to reject ... as malformed": we do.
    case(
        "rfc4475/lwsstart.dat",
        "4475 §3.1.2.9 multiple SP in the Request-Line",
        Reject(400),
    ),
    case(
        "rfc4475/trws.dat",
        "4475 §3.1.2.10 SP at the end of the Request-Line",
        Reject(400),
    ),
    // §3.1.2.11 "acceptable ... to reject this request with a 400": we do.
    case(
        "rfc4475/escruri.dat",
        "4475 §3.1.2.11 escaped headers in the Request-URI",
        Reject(400),
    ),
    // §3.1.2.12 an element "could ignore this value altogether if it wasn't going to use the
    // Date header field anyway": this server never reads Date.
    checked(
        "rfc4475/baddate.dat",
        "4475 §3.1.2.12 non-GMT Date (ignored)",
        Accept,
        check_baddate,
    ),
    // §3.1.2.13 "reasonable ... to respond with a 400".
    case(
        "rfc4475/regbadct.dat",
        "4475 §3.1.2.13 name-addr URI not in <>",
        Reject(400),
    ),
    // §3.1.2.14 "reasonable to reject this request with a 400".
    case(
        "rfc4475/badaspec.dat",
        "4475 §3.1.2.14 spaces within addr-spec",
        Reject(400),
    ),
    case(
        "rfc4475/baddn.dat",
        "4475 §3.1.2.15 non-token characters in display name",
        Reject(400),
    ),
    case(
        "rfc4475/badvers.dat",
        "4475 §3.1.2.16 unknown protocol version",
        Reject(505),
    ),
    case(
        "rfc4475/mismatch01.dat",
        "4475 §3.1.2.17 CSeq method mismatch",
        Reject(400),
    ),
    // §3.1.2.18 the mismatch is answered 400 before the unknown method would be 501.
    case(
        "rfc4475/mismatch02.dat",
        "4475 §3.1.2.18 unknown method, CSeq mismatch",
        Reject(400),
    ),
    case(
        "rfc4475/bigcode.dat",
        "4475 §3.1.2.19 overlarge response code",
        Drop,
    ),
    // ---- RFC 4475 §3.2 Transaction-layer semantics -------------------------------------------
    // §3.2.1 "could reject ... with a 400 ... or it could fall back to the RFC 2543-style
    // transaction identifier": we fall back.
    checked(
        "rfc4475/badbranch.dat",
        "4475 §3.2.1 branch is only the magic cookie",
        Accept,
        check_badbranch,
    ),
    // ---- RFC 4475 §3.3 Application-layer semantics -------------------------------------------
    // §3.3.1 "Ideally, it will respond with a 400".
    case(
        "rfc4475/insuf.dat",
        "4475 §3.3.1 missing required header fields",
        Reject(400),
    ),
    case(
        "rfc4475/unkscm.dat",
        "4475 §3.3.2 Request-URI with unknown scheme",
        Reject(416),
    ),
    // §3.3.3 a scheme the element never accepts in a Request-URI is treated as unknown: 416.
    case(
        "rfc4475/novelsc.dat",
        "4475 §3.3.3 known but atypical scheme",
        Reject(416),
    ),
    // §3.3.4 syntactically valid; "a registrar would reject this request with a 400" as To
    // holds no SIP AOR.
    checked(
        "rfc4475/unksm2.dat",
        "4475 §3.3.4 unknown schemes in header fields",
        Later(400),
        check_unksm2,
    ),
    // §3.3.5 420 Bad Extension listing the unsupported tags.
    checked(
        "rfc4475/bext01.dat",
        "4475 §3.3.5 Proxy-Require and Require",
        Later(420),
        check_bext01,
    ),
    // §3.3.6 415 Unsupported Media Type.
    checked(
        "rfc4475/invut.dat",
        "4475 §3.3.6 unknown Content-Type",
        Later(415),
        check_invut,
    ),
    // §3.3.7 the registrar challenges (401) an Authorization it does not understand.
    checked(
        "rfc4475/regaut01.dat",
        "4475 §3.3.7 unknown Authorization scheme",
        Later(401),
        check_regaut01,
    ),
    // §3.3.8 "would respond with a 400".
    case(
        "rfc4475/multi01.dat",
        "4475 §3.3.8 several values in single-value fields",
        Reject(400),
    ),
    // §3.3.9 over UDP: a 400; over a stream the framing error closes the connection.
    case(
        "rfc4475/mcl01.dat",
        "4475 §3.3.9 multiple Content-Length values",
        Reject(400),
    ),
    // §3.3.10 "proxies should drop such responses".
    case(
        "rfc4475/bcast.dat",
        "4475 §3.3.10 200 OK with broadcast Via",
        Drop,
    ),
    // §3.3.11 legal; a proxy answers 483 (an OPTIONS UAS may answer it itself).
    checked(
        "rfc4475/zeromf.dat",
        "4475 §3.3.11 Max-Forwards of zero",
        Later(483),
        check_zeromf,
    ),
    checked(
        "rfc4475/cparam01.dat",
        "4475 §3.3.12 REGISTER with a Contact parameter",
        Accept,
        check_cparam01,
    ),
    checked(
        "rfc4475/cparam02.dat",
        "4475 §3.3.13 REGISTER with a url-parameter",
        Accept,
        check_cparam02,
    ),
    // §3.3.14 "The register should succeed", keeping the escaped header in the binding.
    checked(
        "rfc4475/regescrt.dat",
        "4475 §3.3.14 REGISTER with a URL-escaped header",
        Accept,
        check_regescrt,
    ),
    // §3.3.15 "could respond with a 406 Not Acceptable".
    checked(
        "rfc4475/sdp01.dat",
        "4475 §3.3.15 unacceptable Accept offering",
        Later(406),
        check_sdp01,
    ),
    // ---- RFC 4475 §3.4 Backward compatibility ------------------------------------------------
    checked(
        "rfc4475/inv2543.dat",
        "4475 §3.4.1 INVITE with RFC 2543 syntax",
        Accept,
        check_inv2543,
    ),
    // ---- RFC 5118 §4 ---------------------------------------------------------------------------
    checked(
        "rfc5118/ipv6-good",
        "5118 §4.1 valid IPv6 reference",
        Accept,
        check_ipv6_good,
    ),
    // §4.2 "should respond with a 400 Bad Request".
    case(
        "rfc5118/ipv6-bad",
        "5118 §4.2 IPv6 address without brackets",
        Reject(400),
    ),
    checked(
        "rfc5118/port-ambiguous",
        "5118 §4.3 port inside the brackets",
        Accept,
        check_port_ambiguous,
    ),
    checked(
        "rfc5118/port-unambiguous",
        "5118 §4.4 port after the brackets",
        Accept,
        check_port_unambiguous,
    ),
    // §4.5 a received parameter with or without brackets must both be accepted.
    checked(
        "rfc5118/via-received-param-with-delim",
        "5118 §4.5 received=[IPv6]",
        Accept,
        check_received,
    ),
    checked(
        "rfc5118/via-received-param-no-delim",
        "5118 §4.5 received=IPv6",
        Accept,
        check_received,
    ),
    case("rfc5118/ipv6-in-sdp", "5118 §4.6 IPv6 in SDP", Accept),
    checked(
        "rfc5118/mult-ip-in-header",
        "5118 §4.7 IPv4 and IPv6 in headers",
        Accept,
        check_mult_ip_in_header,
    ),
    case(
        "rfc5118/mult-ip-in-sdp",
        "5118 §4.8 IPv4 and IPv6 in SDP",
        Accept,
    ),
    checked(
        "rfc5118/ipv4-mapped-ipv6",
        "5118 §4.9 IPv4-mapped IPv6",
        Accept,
        check_ipv4_mapped,
    ),
    // §4.10 "an implementation must tolerate both of the above constructs".
    checked(
        "rfc5118/ipv6-bug-abnf-3-colons",
        "5118 §4.10 RFC 3261 ABNF ':::' form",
        Accept,
        check_abnf_colons,
    ),
    checked(
        "rfc5118/ipv6-correct-abnf-2-colons",
        "5118 §4.10 correct '::' form",
        Accept,
        check_abnf_colons,
    ),
];

// ---- per-vector assertions -------------------------------------------------------------------

fn ruri(m: &Message) -> Uri {
    Uri::parse(m.request_uri().expect("request")).expect("Request-URI")
}

fn check_wsinv(m: &Message) {
    assert_eq!(m.max_forwards().unwrap(), Some(68));
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
    assert_eq!(m.vias().unwrap().len(), 3);
    assert_eq!(
        m.from().unwrap().display_name().unwrap(),
        "J Rosenberg \\\""
    );
    assert_eq!(&m.to().unwrap().tag().unwrap()[..], b"1918181833n");
    let contacts = m.contacts().unwrap();
    let c = contacts[0].addr().unwrap();
    assert_eq!(c.display_name().unwrap(), "Quoted string \"\"");
    assert_eq!(&c.params.value("newparam").unwrap()[..], b"newvalue");
    assert_eq!(c.params.get("secondparam"), Some(None));
    assert_eq!(contacts[0].q(), Some(330));
    assert!(ruri(m).as_sip().unwrap().params.has("unknownparam"));
    assert_eq!(
        m.headers.get(&HeaderName::Subject).map(|s| s.len()),
        Some(0)
    );
    let route = &m.routes().unwrap()[0];
    assert_eq!(route.uri.param("unknown-no-value"), Some(None));
    assert_eq!(m.body.len(), 150);
}

fn check_intmeth(m: &Message) {
    let method = m.method().unwrap().as_str().to_owned();
    assert_eq!(method, "!interesting-Method0123456789_*+`.%indeed'~");
    assert_eq!(m.cseq().unwrap().method.as_str(), method);
    let u = ruri(m);
    let sip = u.as_sip().unwrap();
    assert_eq!(
        &sip.user.as_ref().unwrap()[..],
        b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    );
    assert_eq!(
        &sip.password.as_ref().unwrap()[..],
        b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    );
    assert_eq!(m.max_forwards().unwrap(), Some(255));
    let from = m.from().unwrap();
    assert_eq!(
        from.display_name().unwrap(),
        "token1~` token2'+_ token3*%!.-"
    );
    assert_eq!(&from.tag().unwrap()[..], b"_token~1'+`*%!-.");
}

fn check_esc01(m: &Message) {
    let u = ruri(m);
    assert_eq!(
        &unescape(u.as_sip().unwrap().user.as_ref().unwrap())[..],
        b"sips:user@example.com"
    );
    let from = m.from().unwrap();
    assert_eq!(
        &unescape(from.uri.as_sip().unwrap().user.as_ref().unwrap())[..],
        b"I have spaces"
    );
    assert_eq!(m.to().unwrap().uri.aor().unwrap(), "sip:user@example.com");
}

fn check_escnull(m: &Message) {
    let to = m.to().unwrap();
    assert_eq!(
        &unescape(to.uri.as_sip().unwrap().user.as_ref().unwrap())[..],
        b"null-\0-null"
    );
    assert_eq!(m.contacts().unwrap().len(), 2);
}

fn check_esc02(m: &Message) {
    // The method is an unknown token, not REGISTER; two Contact headers, not three.
    assert!(matches!(m.method(), Some(Method::Other(_))));
    assert_eq!(m.to().unwrap().display_name().unwrap(), "%Z%45");
    assert_eq!(m.contacts().unwrap().len(), 2);
}

fn check_lwsdisp(m: &Message) {
    assert_eq!(m.from().unwrap().display_name().unwrap(), "caller");
}

fn check_longreq(m: &Message) {
    let vias = m.vias().unwrap();
    assert_eq!(vias.len(), 34);
    assert_eq!(&vias[0].host[..], b"sip33.example.com");
    assert!(vias[33].branch().unwrap().len() > 200);
    let to = m.to().unwrap();
    assert_eq!(to.uri.as_sip().unwrap().port, Some(6000));
    assert!(to.display_name().unwrap().contains("extremeextreme"));
    assert!(m.from().unwrap().tag().unwrap().len() > 100);
    assert_eq!(m.contacts().unwrap().len(), 1);
}

fn check_dblreq(m: &Message) {
    assert_eq!(m.method(), Some(&Method::Register));
    assert!(m.body.is_empty());
}

fn check_semiuri(m: &Message) {
    let u = ruri(m);
    let sip = u.as_sip().unwrap();
    assert_eq!(
        &unescape(sip.user.as_ref().unwrap())[..],
        b"user;par=u@example.net"
    );
    assert!(sip.params.is_empty());
}

fn check_transports(m: &Message) {
    let t: Vec<_> = m
        .vias()
        .unwrap()
        .iter()
        .map(|v| v.transport.clone())
        .collect();
    assert_eq!(
        t,
        ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"].map(|s| Bytes::from_static(s.as_bytes()))
    );
}

fn check_mpart01(m: &Message) {
    assert_eq!(m.body.len(), 553);
    let ct = m.content_type().unwrap().unwrap();
    assert_eq!(ct.essence(), "multipart/mixed");
    assert_eq!(
        &ct.params.value("boundary").unwrap()[..],
        b"7a9cbec02ceef655"
    );
}

fn check_unreason(m: &Message) {
    let StartLine::Response { code, reason, .. } = &m.start else {
        panic!("response")
    };
    assert_eq!(*code, 200);
    assert!(std::str::from_utf8(reason)
        .unwrap()
        .starts_with("= 2**3 * 5**2 "));
}

fn check_noreason(m: &Message) {
    let StartLine::Response { code, reason, .. } = &m.start else {
        panic!("response")
    };
    assert_eq!((*code, reason.len()), (100, 0));
}

fn check_baddate(m: &Message) {
    assert!(m.headers.get(&HeaderName::Date).unwrap().ends_with(b"EST"));
}

fn check_badbranch(m: &Message) {
    let via = m.top_via().unwrap();
    assert_eq!(&via.branch().unwrap()[..], b"z9hG4bK");
    assert!(!via.is_rfc3261_branch());
}

fn check_unksm2(m: &Message) {
    assert_eq!(m.to().unwrap().uri.scheme(), "isbn");
    assert_eq!(m.to().unwrap().uri.aor(), None);
    assert_eq!(m.from().unwrap().uri.scheme(), "http");
    assert_eq!(m.contacts().unwrap()[0].uri().unwrap().scheme(), "name");
}

fn check_bext01(m: &Message) {
    assert_eq!(
        unsupported_requires(m, &["100rel"]),
        ["nothingSupportsThis", "nothingSupportsThisEither"]
    );
    assert_eq!(
        unsupported_proxy_requires(m, &[]),
        ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    );
}

fn check_invut(m: &Message) {
    assert_eq!(
        m.content_type().unwrap().unwrap().essence(),
        "application/unknownformat"
    );
}

fn check_regaut01(m: &Message) {
    assert!(m
        .headers
        .get(&HeaderName::Authorization)
        .unwrap()
        .starts_with(b"NoOneKnowsThisScheme "));
}

fn check_zeromf(m: &Message) {
    assert_eq!(m.max_forwards().unwrap(), Some(0));
}

fn check_cparam01(m: &Message) {
    let contacts = m.contacts().unwrap();
    let c = contacts[0].addr().unwrap();
    assert!(c.params.has("unknownparam"));
    assert!(!c.uri.as_sip().unwrap().params.has("unknownparam"));
}

fn check_cparam02(m: &Message) {
    let contacts = m.contacts().unwrap();
    let c = contacts[0].addr().unwrap();
    assert!(!c.params.has("unknownparam"));
    assert!(c.uri.as_sip().unwrap().params.has("unknownparam"));
}

fn check_regescrt(m: &Message) {
    let contacts = m.contacts().unwrap();
    let Contact::Addr(c) = &contacts[0] else {
        panic!("address")
    };
    let h: Vec<_> = c.uri.as_sip().unwrap().header_fields().collect();
    assert_eq!(&h[0].0[..], b"Route");
    assert_eq!(&unescape(&h[0].1)[..], b"<sip:sip.example.com>");
}

fn check_sdp01(m: &Message) {
    let accept: Vec<_> = m.headers.values(&HeaderName::Accept).collect();
    assert_eq!(accept, [Bytes::from_static(b"text/nobodyKnowsThis")]);
}

fn check_inv2543(m: &Message) {
    assert_eq!(m.top_via().unwrap().branch(), None);
    assert_eq!(m.from().unwrap().tag(), None);
    assert_eq!(m.max_forwards().unwrap(), None);
    assert!(m.headers.get(&HeaderName::ContentLength).is_none());
    assert!(m.body.starts_with(b"v=0") && m.body.ends_with(b"RTP/AVP 0\r\n"));
}

fn check_ipv6_good(m: &Message) {
    let u = ruri(m);
    assert_eq!(u.as_sip().unwrap().host.kind, HostKind::Ipv6);
    let contacts = m.contacts().unwrap();
    assert_eq!(
        contacts[0].uri().unwrap().as_sip().unwrap().host.kind,
        HostKind::Ipv6
    );
}

fn check_port_ambiguous(m: &Message) {
    let u = ruri(m);
    let sip = u.as_sip().unwrap();
    assert_eq!(
        (&sip.host.raw[..], sip.port),
        (&b"[2001:db8::10:5070]"[..], None)
    );
}

fn check_port_unambiguous(m: &Message) {
    let u = ruri(m);
    let sip = u.as_sip().unwrap();
    assert_eq!(
        (&sip.host.raw[..], sip.port),
        (&b"[2001:db8::10]"[..], Some(5070))
    );
}

fn check_received(m: &Message) {
    let r = m.top_via().unwrap().received().unwrap().clone();
    let r = std::str::from_utf8(&r)
        .unwrap()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    assert_eq!(
        r.parse::<std::net::Ipv6Addr>().unwrap(),
        "2001:db8::9:255".parse::<std::net::Ipv6Addr>().unwrap()
    );
}

fn check_mult_ip_in_header(m: &Message) {
    let vias = m.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(
        (&vias[0].host[..], vias[0].port),
        (&b"[2001:db8::9:1]"[..], Some(6050))
    );
    assert_eq!(&vias[2].received().unwrap()[..], b"192.0.2.200");
}

fn check_ipv4_mapped(m: &Message) {
    let contacts = m.contacts().unwrap();
    let host = &contacts[0].uri().unwrap().as_sip().unwrap().host;
    assert_eq!(host.ip(), Some("::ffff:192.0.2.2".parse().unwrap()));
}

fn check_abnf_colons(m: &Message) {
    let u = ruri(m);
    let host = &u.as_sip().unwrap().host;
    assert_eq!(host.ip(), Some("2001:db8::192.0.2.1".parse().unwrap()));
    assert!(m.to().unwrap().uri.equivalent(&u));
}

// ---- harness ----------------------------------------------------------------------------------

/// What the receive path did with a message.
#[derive(Debug)]
enum Outcome {
    Accepted(Box<Message>),
    Rejected(u16, String),
    Dropped(String),
}

fn receive(raw: Bytes) -> Outcome {
    match parse(raw.clone()) {
        Ok(m) if m.is_request() => match validate_request(&m) {
            Ok(()) => Outcome::Accepted(Box::new(m)),
            Err(r) => Outcome::Rejected(r.status, r.reason),
        },
        Ok(m) => match validate_response(&m) {
            Ok(()) => Outcome::Accepted(Box::new(m)),
            Err(r) => Outcome::Dropped(r.reason),
        },
        Err(e) => match reject_unparsable(&raw, e) {
            Some((_, r)) => Outcome::Rejected(r.status, r.reason),
            None => Outcome::Dropped(e.reason().to_owned()),
        },
    }
}

fn vectors_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut candidates = Vec::new();
    if let Some(v) = std::env::var_os("CPM_VECTORS") {
        candidates.push(PathBuf::from(v).join("sip-torture"));
    }
    candidates.push(workspace.join("../shared/vectors/sip-torture"));
    candidates.push(workspace.join("../../shared/vectors/sip-torture"));
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .unwrap_or_else(|| panic!("torture vectors not found in {candidates:?}"))
}

#[test]
#[ignore = "needs ../shared/vectors"]
fn torture_vectors_have_the_rfc_outcome() {
    let dir = vectors_dir();
    let mut files = Vec::new();
    for sub in ["rfc4475", "rfc5118"] {
        for entry in std::fs::read_dir(dir.join(sub)).expect("vector directory") {
            let name = entry.unwrap().file_name().into_string().expect("file name");
            files.push(format!("{sub}/{name}"));
        }
    }
    files.sort();
    for c in CASES {
        assert!(
            files.iter().any(|f| f == c.file),
            "table entry without a file: {}",
            c.file
        );
    }

    let mut failures = Vec::new();
    for file in &files {
        let Some(c) = CASES.iter().find(|c| c.file == file) else {
            failures.push(format!("{file}: not in the expectation table"));
            continue;
        };
        let raw = Bytes::from(std::fs::read(dir.join(file)).expect("read vector"));
        let outcome = receive(raw);
        let got = match &outcome {
            Outcome::Accepted(_) => "accepted".to_owned(),
            Outcome::Rejected(s, r) => format!("{s} {r}"),
            Outcome::Dropped(r) => format!("dropped ({r})"),
        };
        let ok = match (c.expect, &outcome) {
            (Accept | Later(_), Outcome::Accepted(m)) => {
                if let Some(check) = c.check {
                    if let Err(e) = std::panic::catch_unwind(|| check(m)) {
                        let why = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        failures.push(format!("{file}: check failed: {why}"));
                    }
                }
                true
            }
            (Reject(want), Outcome::Rejected(status, _)) => want == *status,
            (Drop, Outcome::Dropped(_)) => true,
            _ => false,
        };
        println!(
            "{:<46} {:<52} {:<10} {}",
            file,
            c.section,
            format!("{:?}", c.expect),
            got
        );
        if !ok {
            failures.push(format!(
                "{file} ({}): expected {:?}, got {got}",
                c.section, c.expect
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(files.len(), CASES.len());
}

/// Each vector sent over a stream, in 7-byte pieces: the first frame is the message the
/// datagram parser sees, or the framing error RFC 3261 §18.3 implies for its Content-Length.
#[test]
#[ignore = "needs ../shared/vectors"]
fn torture_vectors_over_a_stream() {
    let dir = vectors_dir();
    for c in CASES {
        let raw = std::fs::read(dir.join(c.file)).expect("read vector");
        let mut framer = StreamFramer::new(64 * 1024);
        let mut first = None;
        for piece in raw.chunks(7) {
            framer.extend(piece);
            match framer.next() {
                Ok(Some(Frame::Message(m))) => {
                    first = Some(Ok(m));
                    break;
                }
                Ok(Some(Frame::KeepAlive)) => panic!("{}: no ping in a vector", c.file),
                Ok(None) => {}
                Err(e) => {
                    first = Some(Err(e));
                    break;
                }
            }
        }
        let datagram = parse(Bytes::from(raw.clone()));
        match (c.file, first) {
            // No Content-Length: a stream cannot delimit it.
            ("rfc4475/inv2543.dat", Some(Err(e))) => {
                assert_eq!(e, FramingError::MissingContentLength)
            }
            // Negative or conflicting Content-Length.
            ("rfc4475/ncl.dat" | "rfc4475/mcl01.dat", Some(Err(e))) => {
                assert_eq!(e, FramingError::BadContentLength, "{}", c.file)
            }
            // Content-Length beyond the bytes sent: the framer keeps waiting.
            ("rfc4475/clerr.dat", None) => {}
            (_, Some(Ok(frame))) => {
                assert_eq!(parse(frame).ok(), datagram.ok(), "{}", c.file);
            }
            (file, other) => panic!("{file}: unexpected framing outcome {other:?}"),
        }
    }
}
