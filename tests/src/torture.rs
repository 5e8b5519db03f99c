//! Expected outcomes of the RFC 4475 / RFC 5118 SIP torture messages, one entry per vector file:
//! the RFC section and what must become of the message. The single table shared by the engine's
//! receive-path test (`engine/tests/torture.rs`, which includes this file by path) and the
//! end-to-end test against cpmd (`tests/tests/torture_netns.rs`).
//!
//! Dependency-free on purpose, so that a test of any crate can include it with `#[path]`.

/// What the RFC says must become of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Parses and passes validation.
    Accept,
    /// A request answered with this status by parse/validate.
    Reject(u16),
    /// A response dropped by parse/validate.
    Drop,
    /// Passes validation; a later layer (registrar, UAS, proxy) answers with this status.
    Later(u16),
}

/// One vector: its file (relative to `sip-torture/`), RFC section and expected outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectation {
    /// `rfc4475/<name>.dat` or `rfc5118/<name>`.
    pub file: &'static str,
    /// The RFC section and its title.
    pub section: &'static str,
    /// The expected outcome.
    pub expect: Expect,
}

const fn e(file: &'static str, section: &'static str, expect: Expect) -> Expectation {
    Expectation {
        file,
        section,
        expect,
    }
}

use Expect::{Accept, Drop, Later, Reject};

/// Every vector, in RFC order.
pub const EXPECTATIONS: &[Expectation] = &[
    // ---- RFC 4475 §3.1.1 Valid Messages: must parse and validate ----------------------------
    e(
        "rfc4475/wsinv.dat",
        "4475 §3.1.1.1 short tortuous INVITE",
        Accept,
    ),
    e(
        "rfc4475/intmeth.dat",
        "4475 §3.1.1.2 wide range of valid characters",
        Accept,
    ),
    e(
        "rfc4475/esc01.dat",
        "4475 §3.1.1.3 valid % escaping",
        Accept,
    ),
    e(
        "rfc4475/escnull.dat",
        "4475 §3.1.1.4 escaped nulls in URIs",
        Accept,
    ),
    e(
        "rfc4475/esc02.dat",
        "4475 §3.1.1.5 % that is not an escape",
        Accept,
    ),
    e(
        "rfc4475/lwsdisp.dat",
        "4475 §3.1.1.6 no LWS between display name and <",
        Accept,
    ),
    e(
        "rfc4475/longreq.dat",
        "4475 §3.1.1.7 long values in header fields",
        Accept,
    ),
    e(
        "rfc4475/dblreq.dat",
        "4475 §3.1.1.8 extra trailing octets in a datagram",
        Accept,
    ),
    e(
        "rfc4475/semiuri.dat",
        "4475 §3.1.1.9 ';' in the URI user part",
        Accept,
    ),
    e(
        "rfc4475/transports.dat",
        "4475 §3.1.1.10 varied and unknown transports",
        Accept,
    ),
    e(
        "rfc4475/mpart01.dat",
        "4475 §3.1.1.11 multipart MIME body",
        Accept,
    ),
    e(
        "rfc4475/unreason.dat",
        "4475 §3.1.1.12 unusual reason phrase",
        Accept,
    ),
    e(
        "rfc4475/noreason.dat",
        "4475 §3.1.1.13 empty reason phrase",
        Accept,
    ),
    // ---- RFC 4475 §3.1.2 Invalid Messages ----------------------------------------------------
    // §3.1.2.1 ";;,;,," in Via and ";;;;" in Contact: "should respond with a 400".
    e(
        "rfc4475/badinv01.dat",
        "4475 §3.1.2.1 extraneous header field separators",
        Reject(400),
    ),
    // §3.1.2.2 over UDP a request whose Content-Length exceeds the datagram gets a 400 (RFC 3261 §18.3).
    e(
        "rfc4475/clerr.dat",
        "4475 §3.1.2.2 Content-Length larger than message",
        Reject(400),
    ),
    e(
        "rfc4475/ncl.dat",
        "4475 §3.1.2.3 negative Content-Length",
        Reject(400),
    ),
    // §3.1.2.4 "should respond with a 400 Bad Request due to the CSeq error".
    e(
        "rfc4475/scalar02.dat",
        "4475 §3.1.2.4 request scalar fields too large",
        Reject(400),
    ),
    // §3.1.2.5 a response with an overlarge CSeq is discarded.
    e(
        "rfc4475/scalarlg.dat",
        "4475 §3.1.2.5 response scalar fields too large",
        Drop,
    ),
    e(
        "rfc4475/quotbal.dat",
        "4475 §3.1.2.6 unterminated quoted display name",
        Reject(400),
    ),
    // §3.1.2.7 "reasonable always to reject ... with a 400".
    e(
        "rfc4475/ltgtruri.dat",
        "4475 §3.1.2.7 <> enclosing Request-URI",
        Reject(400),
    ),
    e(
        "rfc4475/lwsruri.dat",
        "4475 §3.1.2.8 LWS inside the Request-URI",
        Reject(400),
    ),
    // §3.1.2.9, §3.1.2.10 "acceptable to reject ... as malformed": we do.
    e(
        "rfc4475/lwsstart.dat",
        "4475 §3.1.2.9 multiple SP in the Request-Line",
        Reject(400),
    ),
    e(
        "rfc4475/trws.dat",
        "4475 §3.1.2.10 SP at the end of the Request-Line",
        Reject(400),
    ),
    // §3.1.2.11 "acceptable ... to reject this request with a 400": we do.
    e(
        "rfc4475/escruri.dat",
        "4475 §3.1.2.11 escaped headers in the Request-URI",
        Reject(400),
    ),
    // §3.1.2.12 an element "could ignore this value altogether if it wasn't going to use the
    // Date header field anyway": this server never reads Date.
    e(
        "rfc4475/baddate.dat",
        "4475 §3.1.2.12 non-GMT Date (ignored)",
        Accept,
    ),
    // §3.1.2.13 "reasonable ... to respond with a 400".
    e(
        "rfc4475/regbadct.dat",
        "4475 §3.1.2.13 name-addr URI not in <>",
        Reject(400),
    ),
    // §3.1.2.14 "reasonable to reject this request with a 400".
    e(
        "rfc4475/badaspec.dat",
        "4475 §3.1.2.14 spaces within addr-spec",
        Reject(400),
    ),
    e(
        "rfc4475/baddn.dat",
        "4475 §3.1.2.15 non-token characters in display name",
        Reject(400),
    ),
    e(
        "rfc4475/badvers.dat",
        "4475 §3.1.2.16 unknown protocol version",
        Reject(505),
    ),
    e(
        "rfc4475/mismatch01.dat",
        "4475 §3.1.2.17 CSeq method mismatch",
        Reject(400),
    ),
    // §3.1.2.18 the mismatch is answered 400 before the unknown method would be 501.
    e(
        "rfc4475/mismatch02.dat",
        "4475 §3.1.2.18 unknown method, CSeq mismatch",
        Reject(400),
    ),
    e(
        "rfc4475/bigcode.dat",
        "4475 §3.1.2.19 overlarge response code",
        Drop,
    ),
    // ---- RFC 4475 §3.2 Transaction-layer semantics -------------------------------------------
    // §3.2.1 "could reject ... with a 400 ... or it could fall back to the RFC 2543-style
    // transaction identifier": we fall back.
    e(
        "rfc4475/badbranch.dat",
        "4475 §3.2.1 branch is only the magic cookie",
        Accept,
    ),
    // ---- RFC 4475 §3.3 Application-layer semantics -------------------------------------------
    // §3.3.1 "Ideally, it will respond with a 400".
    e(
        "rfc4475/insuf.dat",
        "4475 §3.3.1 missing required header fields",
        Reject(400),
    ),
    e(
        "rfc4475/unkscm.dat",
        "4475 §3.3.2 Request-URI with unknown scheme",
        Reject(416),
    ),
    // §3.3.3 a scheme the element never accepts in a Request-URI is treated as unknown: 416.
    e(
        "rfc4475/novelsc.dat",
        "4475 §3.3.3 known but atypical scheme",
        Reject(416),
    ),
    // §3.3.4 syntactically valid; "a registrar would reject this request with a 400" as To
    // holds no SIP AOR.
    e(
        "rfc4475/unksm2.dat",
        "4475 §3.3.4 unknown schemes in header fields",
        Later(400),
    ),
    // §3.3.5 420 Bad Extension listing the unsupported tags.
    e(
        "rfc4475/bext01.dat",
        "4475 §3.3.5 Proxy-Require and Require",
        Later(420),
    ),
    // §3.3.6 415 Unsupported Media Type.
    e(
        "rfc4475/invut.dat",
        "4475 §3.3.6 unknown Content-Type",
        Later(415),
    ),
    // §3.3.7 the registrar challenges (401) an Authorization it does not understand.
    e(
        "rfc4475/regaut01.dat",
        "4475 §3.3.7 unknown Authorization scheme",
        Later(401),
    ),
    // §3.3.8 "would respond with a 400".
    e(
        "rfc4475/multi01.dat",
        "4475 §3.3.8 several values in single-value fields",
        Reject(400),
    ),
    // §3.3.9 over UDP: a 400; over a stream the framing error closes the connection.
    e(
        "rfc4475/mcl01.dat",
        "4475 §3.3.9 multiple Content-Length values",
        Reject(400),
    ),
    // §3.3.10 "proxies should drop such responses".
    e(
        "rfc4475/bcast.dat",
        "4475 §3.3.10 200 OK with broadcast Via",
        Drop,
    ),
    // §3.3.11 legal; a proxy answers 483 (an OPTIONS UAS may answer it itself).
    e(
        "rfc4475/zeromf.dat",
        "4475 §3.3.11 Max-Forwards of zero",
        Later(483),
    ),
    e(
        "rfc4475/cparam01.dat",
        "4475 §3.3.12 REGISTER with a Contact parameter",
        Accept,
    ),
    e(
        "rfc4475/cparam02.dat",
        "4475 §3.3.13 REGISTER with a url-parameter",
        Accept,
    ),
    // §3.3.14 "The register should succeed", keeping the escaped header in the binding.
    e(
        "rfc4475/regescrt.dat",
        "4475 §3.3.14 REGISTER with a URL-escaped header",
        Accept,
    ),
    // §3.3.15 "could respond with a 406 Not Acceptable".
    e(
        "rfc4475/sdp01.dat",
        "4475 §3.3.15 unacceptable Accept offering",
        Later(406),
    ),
    // ---- RFC 4475 §3.4 Backward compatibility ------------------------------------------------
    e(
        "rfc4475/inv2543.dat",
        "4475 §3.4.1 INVITE with RFC 2543 syntax",
        Accept,
    ),
    // ---- RFC 5118 §4 ---------------------------------------------------------------------------
    e(
        "rfc5118/ipv6-good",
        "5118 §4.1 valid IPv6 reference",
        Accept,
    ),
    // §4.2 "should respond with a 400 Bad Request".
    e(
        "rfc5118/ipv6-bad",
        "5118 §4.2 IPv6 address without brackets",
        Reject(400),
    ),
    e(
        "rfc5118/port-ambiguous",
        "5118 §4.3 port inside the brackets",
        Accept,
    ),
    e(
        "rfc5118/port-unambiguous",
        "5118 §4.4 port after the brackets",
        Accept,
    ),
    // §4.5 a received parameter with or without brackets must both be accepted.
    e(
        "rfc5118/via-received-param-with-delim",
        "5118 §4.5 received=[IPv6]",
        Accept,
    ),
    e(
        "rfc5118/via-received-param-no-delim",
        "5118 §4.5 received=IPv6",
        Accept,
    ),
    e("rfc5118/ipv6-in-sdp", "5118 §4.6 IPv6 in SDP", Accept),
    e(
        "rfc5118/mult-ip-in-header",
        "5118 §4.7 IPv4 and IPv6 in headers",
        Accept,
    ),
    e(
        "rfc5118/mult-ip-in-sdp",
        "5118 §4.8 IPv4 and IPv6 in SDP",
        Accept,
    ),
    e(
        "rfc5118/ipv4-mapped-ipv6",
        "5118 §4.9 IPv4-mapped IPv6",
        Accept,
    ),
    // §4.10 "an implementation must tolerate both of the above constructs".
    e(
        "rfc5118/ipv6-bug-abnf-3-colons",
        "5118 §4.10 RFC 3261 ABNF ':::' form",
        Accept,
    ),
    e(
        "rfc5118/ipv6-correct-abnf-2-colons",
        "5118 §4.10 correct '::' form",
        Accept,
    ),
];

/// The expectation for a vector, by file (`rfc4475/wsinv.dat`) or name without the extension
/// (`rfc4475/wsinv`).
pub fn expectation(name: &str) -> Option<Expect> {
    EXPECTATIONS
        .iter()
        .find(|x| x.file == name || x.file.strip_suffix(".dat") == Some(name))
        .map(|x| x.expect)
}
