//! OPTIONS answered by cpmd itself (RFC 3261 §11.2).

use cpm_tests::check::lists;
use cpm_tests::wire::param;
use cpm_tests::{assert_echoes, assert_status, header, over_udp_and_tcp, Cpmd, Transport, Ua};

over_udp_and_tcp!(options_is_answered_with_capabilities);

/// 200 with Allow (at least OPTIONS, REGISTER, MESSAGE), Accept and Supported.
fn options_is_answered_with_capabilities(t: Transport) {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::new(t, cpmd.sip_addr());
    let req = ua
        .req("OPTIONS", "sip:localhost")
        .header("Accept", "application/sdp");
    let resp = ua.request(&req);
    assert_status(&resp, 200);
    assert_echoes(&req, &resp);
    for m in ["OPTIONS", "REGISTER", "MESSAGE"] {
        assert!(lists(&resp, "Allow", m), "Allow lacks {m}:\n{resp}");
    }
    assert!(header(&resp, "Accept").is_some(), "no Accept in:\n{resp}");
    assert!(
        resp.headers.iter().any(|h| h.name.as_str() == "Supported"),
        "no Supported in:\n{resp}"
    );
}

/// RFC 3581 §4: the server fills `rport` with the source port and adds `received`.
#[test]
fn rport_is_filled_in_over_udp() {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::udp(cpmd.sip_addr());
    let req = ua.req("OPTIONS", "sip:localhost");
    let resp = ua.request(&req);
    assert_status(&resp, 200);
    let via = header(&resp, "Via").unwrap();
    let port = ua.local_addr().port().to_string();
    assert_eq!(param(&via, "rport"), Some(port.as_str()), "rport in {via}");
    assert_eq!(
        param(&via, "received"),
        Some("127.0.0.1"),
        "received in {via}"
    );
}

/// OPTIONS addressed to the server's IP:port (the other default domain) is answered too.
#[test]
fn options_to_listen_address() {
    let cpmd = Cpmd::spawn(&[]);
    let mut ua = Ua::udp(cpmd.sip_addr());
    let req = ua.req("OPTIONS", &format!("sip:{}", cpmd.sip_addr()));
    assert_status(&ua.request(&req), 200);
}
