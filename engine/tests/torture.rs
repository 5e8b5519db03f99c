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

// The expectation table is shared with the end-to-end test against cpmd.
#[path = "../../tests/src/torture.rs"]
#[allow(dead_code)]
mod expectations;

use expectations::Expect::{Accept, Drop, Later, Reject};
use expectations::{Expectation, EXPECTATIONS};

/// Every vector and its expected outcome ([`expectations::EXPECTATIONS`]).
const CASES: &[Expectation] = EXPECTATIONS;

/// Extra assertions on the parsed message of a vector that must be accepted.
type Check = fn(&Message);

/// The vectors with extra assertions, by file.
const CHECKS: &[(&str, Check)] = &[
    ("rfc4475/wsinv.dat", check_wsinv),
    ("rfc4475/intmeth.dat", check_intmeth),
    ("rfc4475/esc01.dat", check_esc01),
    ("rfc4475/escnull.dat", check_escnull),
    ("rfc4475/esc02.dat", check_esc02),
    ("rfc4475/lwsdisp.dat", check_lwsdisp),
    ("rfc4475/longreq.dat", check_longreq),
    ("rfc4475/dblreq.dat", check_dblreq),
    ("rfc4475/semiuri.dat", check_semiuri),
    ("rfc4475/transports.dat", check_transports),
    ("rfc4475/mpart01.dat", check_mpart01),
    ("rfc4475/unreason.dat", check_unreason),
    ("rfc4475/noreason.dat", check_noreason),
    ("rfc4475/baddate.dat", check_baddate),
    ("rfc4475/badbranch.dat", check_badbranch),
    ("rfc4475/unksm2.dat", check_unksm2),
    ("rfc4475/bext01.dat", check_bext01),
    ("rfc4475/invut.dat", check_invut),
    ("rfc4475/regaut01.dat", check_regaut01),
    ("rfc4475/zeromf.dat", check_zeromf),
    ("rfc4475/cparam01.dat", check_cparam01),
    ("rfc4475/cparam02.dat", check_cparam02),
    ("rfc4475/regescrt.dat", check_regescrt),
    ("rfc4475/sdp01.dat", check_sdp01),
    ("rfc4475/inv2543.dat", check_inv2543),
    ("rfc5118/ipv6-good", check_ipv6_good),
    ("rfc5118/port-ambiguous", check_port_ambiguous),
    ("rfc5118/port-unambiguous", check_port_unambiguous),
    ("rfc5118/via-received-param-with-delim", check_received),
    ("rfc5118/via-received-param-no-delim", check_received),
    ("rfc5118/mult-ip-in-header", check_mult_ip_in_header),
    ("rfc5118/ipv4-mapped-ipv6", check_ipv4_mapped),
    ("rfc5118/ipv6-bug-abnf-3-colons", check_abnf_colons),
    ("rfc5118/ipv6-correct-abnf-2-colons", check_abnf_colons),
];

/// The extra assertions for a vector, if it has any.
fn check_for(file: &str) -> Option<Check> {
    CHECKS.iter().find(|(f, _)| *f == file).map(|(_, c)| *c)
}

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

    for (file, _) in CHECKS {
        assert!(
            CASES.iter().any(|c| c.file == *file),
            "check without a table entry: {file}"
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
                if let Some(check) = check_for(c.file) {
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
