//! Fuzz `cpm_engine::sip::parse` with arbitrary bytes (`cargo fuzz run sip_parse`).
//!
//! Network input must never panic (COMMON rules). On a successful parse the target also checks
//! what holds by construction of the parser and serializer:
//! - printing then parsing gives the same message, and printing is idempotent;
//! - the body is exactly Content-Length bytes when Content-Length is a plain number;
//! - request/response accessors agree;
//! - `top_via` is the first of `vias`, and a parsed Via prints back to the same Via;
//! - a parsed CSeq prints back to the same CSeq;
//! - every parsed URI (Request-URI, From, To, Contact, Route, Record-Route) is equivalent to
//!   itself (RFC 3261 §19.1.4), and its address-of-record is canonical: it parses, and gives
//!   itself back (the registrar's binding key must be stable).
//!
//! - a request that `validate_request` accepts has everything validation promises: a SIP or
//!   tel Request-URI, To, From, Call-ID, every Via and a CSeq naming the request's method;
//! - a refused parse that `reject_unparsable` still answers is a request, answered with 400.
//!
//! Every other typed accessor is called for its no-panic guarantee only.

#![no_main]

use bytes::Bytes;
use cpm_engine::sip::hdr::{CSeq, NameAddr, Via};
use cpm_engine::sip::uri::Uri;
use cpm_engine::sip::validate::{reject_unparsable, validate_request, validate_response};
use cpm_engine::sip::{self, HeaderName, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    let m = match sip::parse(buf.clone()) {
        Ok(m) => m,
        Err(e) => {
            if let Some((head, rejection)) = reject_unparsable(&buf, e) {
                assert!(head.is_request(), "answering a refused response");
                assert_eq!(rejection.status, 400);
            }
            return;
        }
    };
    round_trip(&m);
    body_matches_content_length(&m);
    start_line_accessors(&m);
    vias(&m);
    typed_headers(&m);
    validation(&m);
});

fn round_trip(m: &Message) {
    let printed = m.to_bytes();
    let again = match sip::parse(printed.clone()) {
        Ok(again) => again,
        Err(e) => panic!("printed message does not parse ({e}):\n{printed:?}"),
    };
    assert_eq!(&again, m, "reparsed message differs; printed:\n{printed:?}");
    assert_eq!(again.to_bytes(), printed, "printing is not idempotent");
    let _ = m.to_string();
}

fn body_matches_content_length(m: &Message) {
    let Some(cl) = m.headers.get(&HeaderName::ContentLength) else {
        return;
    };
    if !cl.is_empty() && cl.len() <= 9 && cl.iter().all(u8::is_ascii_digit) {
        let n = cl
            .iter()
            .fold(0usize, |a, &c| a * 10 + usize::from(c - b'0'));
        assert_eq!(m.body.len(), n, "body is not Content-Length bytes");
    }
}

fn start_line_accessors(m: &Message) {
    assert_eq!(m.is_request(), m.method().is_some());
    assert_eq!(m.is_request(), m.request_uri().is_some());
    assert_eq!(m.is_request(), m.status().is_none());
    if let Some(code) = m.status() {
        assert!((100..=699).contains(&code));
    }
    if let Some(method) = m.method() {
        assert!(!method.as_str().is_empty());
    }
    let _ = m.call_id();
}

fn vias(m: &Message) {
    let top = m.top_via();
    match m.vias() {
        Ok(all) => match all.first() {
            Some(first) => assert_eq!(top.as_ref().ok(), Some(first), "top_via is not vias[0]"),
            None => assert!(top.is_err(), "top_via without any Via value"),
        },
        Err(_) => {
            let _ = top;
        }
    }
    for raw in m.headers.values(&HeaderName::Via) {
        let Ok(via) = Via::parse(&raw) else { continue };
        let _ = (
            via.branch(),
            via.is_rfc3261_branch(),
            via.received(),
            via.rport(),
        );
        if std::str::from_utf8(&raw).is_ok() {
            let printed = Bytes::from(via.to_string_value());
            match Via::parse(&printed) {
                Ok(again) => assert_eq!(again, via, "Via {raw:?} printed as {printed:?}"),
                Err(e) => panic!("Via {raw:?} printed as {printed:?} does not parse: {e}"),
            }
        }
    }
}

fn typed_headers(m: &Message) {
    if let Ok(cseq) = m.cseq() {
        let printed = Bytes::from(cseq.to_string());
        assert_eq!(
            CSeq::parse(&printed).as_ref(),
            Ok(&cseq),
            "CSeq printed as {printed:?}"
        );
    }
    if let Some(Ok(uri)) = m.request_uri().map(Uri::parse) {
        uri_properties(&uri);
    }
    let mut addrs: Vec<NameAddr> = [m.from(), m.to()].into_iter().flatten().collect();
    addrs.extend(m.routes().into_iter().flatten());
    addrs.extend(m.record_routes().into_iter().flatten());
    addrs.extend(m.referred_by().ok().flatten());
    for a in &addrs {
        uri_properties(&a.uri);
        let _ = (a.tag(), a.display_name(), a.to_string());
    }
    for c in m.contacts().into_iter().flatten() {
        if let Some(uri) = c.uri() {
            uri_properties(uri);
        }
        let _ = (
            c.expires(),
            c.q(),
            c.instance(),
            c.reg_id(),
            c.feature_params().count(),
        );
    }
    let _ = (
        m.max_forwards(),
        m.expires(),
        m.min_expires(),
        m.content_type(),
    );
    let _ = (
        m.require(),
        m.proxy_require(),
        m.supported(),
        m.unsupported(),
    );
    let _ = (
        m.event(),
        m.refer_to(),
        m.accept_contacts(),
        m.reject_contacts(),
    );
}

fn uri_properties(uri: &Uri) {
    assert!(uri.equivalent(uri), "URI not equivalent to itself: {uri:?}");
    let Some(aor) = uri.aor() else { return };
    match Uri::parse(&Bytes::from(aor.clone())) {
        Ok(again) => assert_eq!(again.aor(), Some(aor), "AOR not canonical: {uri:?}"),
        Err(e) => panic!("AOR {aor:?} of {uri:?} does not parse: {e}"),
    }
}

fn validation(m: &Message) {
    if !m.is_request() {
        let _ = validate_response(m);
        return;
    }
    if validate_request(m).is_err() {
        return;
    }
    let uri = m.request_uri().map(Uri::parse);
    assert!(
        matches!(uri, Some(Ok(Uri::Sip(_) | Uri::Tel(_)))),
        "accepted Request-URI {uri:?}"
    );
    assert!(m.to().is_ok() && m.from().is_ok() && m.call_id().is_some());
    assert!(
        matches!(m.vias(), Ok(v) if !v.is_empty()),
        "accepted without a valid Via"
    );
    let cseq = m.cseq().expect("accepted without a valid CSeq");
    assert_eq!(
        Some(&cseq.method),
        m.method(),
        "accepted with a CSeq method mismatch"
    );
}
